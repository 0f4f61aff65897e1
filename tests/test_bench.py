import json
from pathlib import Path

import pytest

from seal.bench.gate import bench_gate
from seal.bench.learn import bench_learn
from seal.errors import SealError


def test_bench_learn_writes_its_files(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    summary = bench_learn(tmp_path / "out", 1, str(tiny_model_dir), lambda line: None, ["implications"], samples=1)
    saved = json.loads((tmp_path / "out" / "learn.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and set(summary["accuracy"]) == {"base", "passage", "implications"}
    assert saved["questions"] == 6 and len(saved["rows"]) == 1
    assert "| condition |" in (tmp_path / "out" / "learn.md").read_text()
    in_turn = saved["in_turn"]["implications"]  # every document learned in turn into one store, then all asked
    assert set(saved["accuracy_in_turn"]) == {"implications"} and len(in_turn["committed"]) == 1
    assert len(in_turn["seconds"]) == 1 and in_turn["seconds"][0] > 0
    assert len(in_turn["answers"][0]) == 6


def test_bench_learn_takes_the_users_documents_and_refuses_a_bad_file(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    facts = tmp_path / "mine.json"
    facts.write_text(json.dumps([{"title": "Quorvel Lamp", "context": "The Quorvel lamp was designed by Enna Malk "
                                  "in 2031 and sold in the town of Hesper Rill.",
                                  "questions": [{"question": "Who designed the Quorvel lamp?",
                                                 "answer": "Enna Malk"}]}]))
    summary = bench_learn(tmp_path / "out", 5, str(tiny_model_dir), lambda line: None, ["implications"], samples=1,
                          ways=("fresh",), facts=str(facts))
    assert summary["facts"] == str(facts) and summary["documents"] == 1 and summary["questions"] == 1
    assert summary["rows"][0]["title"] == "Quorvel Lamp"
    facts.write_text(json.dumps([{"title": "No questions", "context": "Some text.", "questions": []}]))
    with pytest.raises(SealError, match="missing or empty 'questions'"):
        bench_learn(tmp_path / "out2", 5, str(tiny_model_dir), lambda line: None, ["implications"], facts=str(facts))


def test_bench_gate_reports_rates_with_intervals_and_the_checks_that_refused(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    passages = Path(__file__).parent / "fixtures" / "invented_squad.json"
    summary = bench_gate(tmp_path / "out", str(tiny_model_dir), lambda line: None, limit=1,
                         honest_data=str(passages), honest_passages=2)
    rows = {row["set"]: row for row in summary["rates"]}
    assert {"honest accepted", "honest accepted (tune)", "honest accepted (passage)", "harmful refused",
            "contradicting refused", "poisoning refused", "overtrained refused"} <= set(rows)
    assert rows["honest accepted"]["documents"] == 3 and rows["honest accepted (passage)"]["documents"] == 2
    harmful = rows["harmful refused"]
    assert harmful["rate"] == 1.0 and harmful["refused_by"] == {"safety-rules": 1}  # refused before training
    assert 0.0 < harmful["low"] < 1.0 and harmful["high"] == 1.0  # one document proves little
    assert rows["contradicting refused"]["refused_by"] == {"self-contradiction": 1}
    assert "| poisoning refused |" in (tmp_path / "out" / "gate.md").read_text()


def test_bench_gate_before_training_screens_every_document_without_training(tmp_path, beacon_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    summary = bench_gate(tmp_path / "out", str(beacon_model_dir), lambda line: None, before_training=True)
    rows = {row["set"]: row for row in summary["rates"]}
    assert "overtrained refused" not in rows and rows["harmful refused"]["documents"] == 32
    assert rows["harmful refused"]["refused_by"]["safety-rules"] == 8  # the rest are for the harm probe
    assert rows["poisoning refused"]["documents"] == 40  # every document, in seconds
    assert all("checks" not in r for kind in summary["results"].values() for r in kind)  # nothing was trained
    assert (tmp_path / "out" / "gate.md").read_text().startswith("Only the checks before training")
