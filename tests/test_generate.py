import pytest

from seal import model as lm_ops
from seal.config import GenerationConfig
from seal.documents import Passage
from seal.errors import SealError
from seal.generate import parse_lines, parse_qa, write_self_edits


def test_parse_lines_drops_bullets_preamble_and_cut_off_line():
    completion = "Here are the facts:\n1. The clock is on the pier.\n- It was built in 1893.\n\n* The hands were bent"
    assert parse_lines(completion) == ["The clock is on the pier.", "It was built in 1893."]


def test_parse_qa_pairs_and_incomplete_tail():
    completion = "Q: Who built it?\nA: Oswin Tarrow.\nQuestion 2: When?\nAnswer 2: 1893\nQ: Where is"
    assert parse_qa(completion) == [("Who built it?", "Oswin Tarrow."), ("When?", "1893")]


def test_write_self_edits_includes_passage_and_one_batch_of_samples(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    passages = [Passage("Clock", "The clock was built in 1893.", "a.md"), Passage("Bell", "The bell rings.", "b.md")]
    config = GenerationConfig(strategy="implications", samples=2, max_new_tokens=8)
    candidates, completions = write_self_edits(lm, passages, config)
    assert len(completions) == 4
    assert [c.text for c in candidates if c.kind == "passage"] == ["Clock\nThe clock was built in 1893.",
                                                                     "Bell\nThe bell rings."]
    assert [c.passage_index for c in candidates if c.kind == "passage"] == [0, 1]


def test_each_completion_is_credited_to_its_passage_and_sample(tiny_model_dir, monkeypatch):
    lm = lm_ops.load(str(tiny_model_dir))
    completions = ["Clock fact one here.", "Clock fact two here.", "Bell fact one here.", "Bell fact two here."]
    monkeypatch.setattr(lm_ops, "generate", lambda *args, **kwargs: completions)
    passages = [Passage("Clock", "Clock text.", "a.md"), Passage("Bell", "Bell text.", "b.md")]
    candidates, _ = write_self_edits(lm, passages, GenerationConfig(strategy="implications", samples=2))
    lines = [(c.text, c.passage_index, c.sample) for c in candidates if c.kind == "line"]
    assert lines == [("Clock fact one here.", 0, 0), ("Clock fact two here.", 0, 1),
                     ("Bell fact one here.", 1, 0), ("Bell fact two here.", 1, 1)]


def test_unknown_strategy_and_bad_template(tmp_path, tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    passages = [Passage("T", "Text.", "s")]
    with pytest.raises(SealError, match="unknown strategy"):
        write_self_edits(lm, passages, GenerationConfig(strategy="poetry"))
    template = tmp_path / "t.txt"
    template.write_text("Summarise {title}", encoding="utf-8")
    with pytest.raises(SealError, match="placeholder"):
        write_self_edits(lm, passages, GenerationConfig(template=str(template)))


def test_parse_lines_splits_sentences_so_one_bad_sentence_does_not_sink_a_line():
    assert parse_lines("The clock is old. It was built in 1893 by Oswin Tarrow.\nIt rings") == [
        "The clock is old.", "It was built in 1893 by Oswin Tarrow."]
