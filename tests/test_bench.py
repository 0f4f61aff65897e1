import json

from seal.bench import bench_learn


def test_bench_learn_writes_its_files(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    summary = bench_learn(tmp_path / "out", 1, str(tiny_model_dir), lambda line: None, ["implications"], samples=1)
    saved = json.loads((tmp_path / "out" / "learn.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and set(summary["accuracy"]) == {"base", "passage", "implications"}
    assert saved["questions"] == 6 and len(saved["rows"]) == 1
    assert "| condition |" in (tmp_path / "out" / "learn.md").read_text()
    in_turn = saved["in_turn"]["implications"]  # every document learned in turn into one store, then all asked
    assert set(saved["accuracy_in_turn"]) == {"implications"} and len(in_turn["committed"]) == 1
    assert len(in_turn["answers"][0]) == 6
