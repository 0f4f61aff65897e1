"""The optional LLM judge: a local model (the tiny one) and an OpenAI-compatible server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from seal import model as lm_ops
from seal.documents import Passage
from seal.errors import SealError
from seal.generate import Candidate
from seal.score import Judge, ScoreConfig, load_safety_rules, score_candidates

PASSAGE = Passage("Brellick Tide Clock", "The Brellick Tide Clock was built in 1893 by Oswin Tarrow.", "b.md")
GROUNDED = Candidate(0, 0, "line", "Oswin Tarrow built the Brellick Tide Clock in 1893.")


class Verdicts(BaseHTTPRequestHandler):
    """Answers 'no' to any statement that mentions 1893, 'yes' otherwise; records what it was sent."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Verdicts.seen.append(body)
        verdict = "No" if "1893." in body["messages"][0]["content"].split("Statement:")[1] else "Yes"
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
