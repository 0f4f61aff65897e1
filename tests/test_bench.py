import json

import pytest

from seal.bench import bench_learn, contains, normalize


@pytest.mark.parametrize("prediction, gold, expected", [
    ("The Orvane K7 weighs 842 grams.", "842 grams", True),
    ("It launched on September 3, 2026.", "September 3, 2026", True),
    ("It costs 2,349 dollars", "2349 dollars", True),
    ("Designed by Idris Holloway-Penn.", "Idris Holloway-Penn", True),
    ("The answer is 84 grams.", "842 grams", False),
    ("", "Scarrow Vale", False),
])
def test_containment_grading(prediction, gold, expected):
    assert contains(prediction, gold) is expected


def test_normalize_drops_articles_punctuation_and_case():
    assert normalize("The  Hennick Apiary!") == "hennick apiary"


def test_bench_learn_writes_its_files(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    summary = bench_learn(tmp_path / "out", 1, str(tiny_model_dir), lambda line: None, ["implications"], samples=1)
    saved = json.loads((tmp_path / "out" / "learn.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and set(summary["accuracy"]) == {"base", "passage", "implications"}
    assert saved["questions"] == 6 and len(saved["rows"]) == 1
    assert "| condition |" in (tmp_path / "out" / "learn.md").read_text()
