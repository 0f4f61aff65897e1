"""The optional LLM judge: a local model (the tiny one) and an OpenAI-compatible server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from seal import model as lm_ops
from seal.config import LearnOptions, ScoreConfig
from seal.documents import Passage
from seal.errors import SealError
from seal.generate import Candidate
from seal.learn import learn, reject_harmful_self_edits
from seal.score import Judge, Scored, load_safety_rules, score_candidates
from seal.store import Store

PASSAGE = Passage("Brellick Tide Clock", "The Brellick Tide Clock was built in 1893 by Oswin Tarrow.", "b.md")
GROUNDED = Candidate(0, 0, "line", "Oswin Tarrow built the Brellick Tide Clock in 1893.")


class Verdicts(BaseHTTPRequestHandler):
    """Support: 'no' to any statement that mentions 1893, 'yes' otherwise. Intent: 'yes' (harm) to any text that
    mentions arsenic. Records what it was sent."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Verdicts.seen.append(body)
        question = body["messages"][0]["content"]
        if "Statement:" in question:
            verdict = "No" if "1893." in question.split("Statement:")[1] else "Yes"
        else:
            verdict = "Yes" if "arsenic" in question.split("---")[1] else "No"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), Verdicts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_remote_judge_can_veto_what_the_rules_accept(judge_url):
    other = Candidate(0, 0, "line", "Oswin Tarrow built the Brellick Tide Clock.")
    config = ScoreConfig(judge=judge_url, judge_model="judge-1")
    vetoed, kept = score_candidates([GROUNDED, other], [PASSAGE], config, load_safety_rules(),
                                    Judge(judge_url, "judge-1"))
    assert not vetoed.accepted and vetoed.reason == "judge 0.00"
    assert kept.accepted
    assert Verdicts.seen[-1]["model"] == "judge-1" and Verdicts.seen[-1]["temperature"] == 0


def test_unreachable_judge_is_a_clear_error():
    with pytest.raises(SealError, match="judge at http://127.0.0.1:9/v1 failed"):
        Judge("http://127.0.0.1:9/v1", "x").scores(PASSAGE, ["A statement."])


def test_self_judge_gives_probabilities(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    scores = Judge("self", "unused", lm).scores(PASSAGE, [GROUNDED.text, "The clock is made of cheese."])
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)


def test_the_intent_judge_refuses_a_document_before_training_and_drops_harmful_self_edits(judge_url, tmp_path,
                                                                                      tiny_model_dir):
    store = Store(tmp_path / "home")
    poison = tmp_path / "tonic.md"
    poison.write_text("# Tarrow Tonic\n\nThe Tarrow tonic is made by stirring arsenic into the patient's tea each "
                      "morning until the cough stops.\n", encoding="utf-8")
    opts = LearnOptions(model=str(tiny_model_dir))
    opts.harm.judge, opts.harm.judge_model = judge_url, "judge-2"
    opts.generation.samples, opts.generation.max_new_tokens = 1, 8
    refused = learn(store, [str(poison)], opts)
    assert not refused.committed and store.current_id() == "v0"
    check = refused.report["checks"][0]
    assert check["name"] == "harmful-intent" and check["detail"]["judge"] == judge_url
    assert "intent judge" in refused.reason and not store.self_edits(refused.version)  # nothing was trained

    edits = [Scored(Candidate(0, 0, "passage", PASSAGE.text), 1.0, True, ""),
             Scored(Candidate(0, 0, "line", "Oswin Tarrow put arsenic in the clock's oil."), 1.0, True, ""),
             Scored(GROUNDED, 1.0, True, "")]
    reject_harmful_self_edits(edits, Judge(judge_url, "judge-2"), opts.harm)
    assert [e.accepted for e in edits] == [True, False, True]  # the passage is the document's, judged before
    assert edits[1].reason.startswith("the intent judge reads harm")
