"""`seal blame`: the version whose update changed an answer is named, with what it trained on."""

import json

from typer.testing import CliRunner

from seal.blame import blame
from seal.cli import app

from conftest import TAUGHT_ANSWER, TAUGHT_QUESTION


def test_blame_names_the_version_that_changed_the_answer_and_the_self_edits_that_hold_it(taught_store):
    store, edits = taught_store
    steps = blame(store, TAUGHT_QUESTION, max_new_tokens=8)
    assert [(s.version, s.changed) for s in steps] == [("v0", False), ("v1", True)]
    assert "harbour" in steps[1].answer and "harbour" not in steps[0].answer
    assert TAUGHT_ANSWER in edits[1].text and steps[1].sources == ["/docs/beacon.md"]
    assert steps[1].evidence == [edits[1].text]  # not the unrelated pair, nor the rejected one
    shown = CliRunner().invoke(app, ["blame", TAUGHT_QUESTION, "--max-new-tokens", "8", "--json"])
    assert [v["changed"] for v in json.loads(shown.stdout)["versions"]] == [False, True]


def test_blame_of_an_empty_question_is_a_one_line_error(home):
    result = CliRunner().invoke(app, ["blame", "  "])
    assert result.exit_code == 1 and result.stderr.strip() == "error: the question is empty"
