"""`seal blame`: the version whose update changed an answer is named, with what it trained on."""

import json

from typer.testing import CliRunner

from seal import model as lm_ops
from seal.blame import blame
from seal.cli import app
from seal.config import UpdateConfig
from seal.store import SelfEditRecord, Store, Version, now
from seal.update import attach_trainable_adapter, sequence_text, train

QUESTION = "Where does the Zorvex beacon stand?"
ANSWER = "Kelmore harbour"


def test_blame_names_the_version_that_changed_the_answer_and_the_self_edits_that_hold_it(home, tiny_model_dir):
    store = Store(home)
    lm = lm_ops.load(str(tiny_model_dir))
    attach_trainable_adapter(lm, UpdateConfig())
    taught = sequence_text(lm, "qa", "", QUESTION, ANSWER)
    train(lm, [taught], UpdateConfig(lr=1e-2, epochs=30))  # the tiny model then answers with 'harbour'
    adapter = store.stage_adapter(lambda folder: lm.model.save_pretrained(str(folder)))
    edits = [SelfEditRecord(0, 0, "qa", "Q: When was it lit?\nA: 1890", "When was it lit?", "1890", 1.0, True, "",
                            "trained"),
             SelfEditRecord(0, 1, "qa", f"Q: {QUESTION}\nA: {ANSWER}", QUESTION, ANSWER, 1.0, True, "", taught.text),
             SelfEditRecord(0, 2, "qa", f"Q: Who keeps it?\nA: {ANSWER}", "Who keeps it?", ANSWER, 0.0, False,
                            "round trip failed", "")]
    sources = [{"source": "/docs/beacon.md", "title": "Zorvex beacon", "sha256": "0" * 64}]
    store.record(Version("", "v0", "committed", now(), str(tiny_model_dir), sources, adapter, 2, 1,
                         {"config": {"update": {"lineage": "replay"}}}, {}, ""), edits, [], make_current=True)

    steps = blame(store, QUESTION, max_new_tokens=8)
    assert [(s.version, s.changed) for s in steps] == [("v0", False), ("v1", True)]
    assert "harbour" in steps[1].answer and "harbour" not in steps[0].answer
    assert steps[1].sources == ["/docs/beacon.md"]
    assert steps[1].evidence == [edits[1].text]  # not the unrelated pair, nor the rejected one
    shown = CliRunner().invoke(app, ["blame", QUESTION, "--max-new-tokens", "8", "--json"])
    assert [v["changed"] for v in json.loads(shown.stdout)["versions"]] == [False, True]


def test_blame_of_an_empty_question_is_a_one_line_error(home):
    result = CliRunner().invoke(app, ["blame", "  "])
    assert result.exit_code == 1 and result.stderr.strip() == "error: the question is empty"
