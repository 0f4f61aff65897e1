import json
from importlib import resources

import pytest

from seal.config import ScoreConfig
from seal.documents import Passage
from seal.errors import SealError
from seal.generate import Candidate
from seal.score import contradictions, flagged, load_safety_rules, repetition, score_candidates

PASSAGE = Passage("Brellick Tide Clock", "The Brellick Tide Clock stands on the pier of the town of Brellick. "
                  "It was built in 1893 by the clockmaker Oswin Tarrow.", "b.md")


def scored(*candidates):
    return score_candidates(list(candidates), [PASSAGE], ScoreConfig(), load_safety_rules())


def line(text):
    return Candidate(0, 0, "line", text)


def test_grounded_line_is_kept_and_invented_one_rejected():
    good, bad = scored(line("Oswin Tarrow built the Brellick Tide Clock in 1893."),
                       line("The clock was painted green by sailors from a distant harbour."))
    assert good.accepted and good.score == 1.0
    assert not bad.accepted and bad.score < 0.5


def test_wrong_number_is_rejected_whatever_the_words():
    [result] = scored(line("The Brellick Tide Clock was built in 1899 by Oswin Tarrow."))
    assert not result.accepted and "1899" in result.reason


def test_duplicates_repetition_and_length():
    results = scored(line("Oswin Tarrow built the clock in 1893."), line("Oswin Tarrow built the clock in 1893!"),
                     line("clock clock clock clock clock clock clock clock clock"), line("The clock."))
    assert [r.accepted for r in results] == [True, False, False, False]
    assert [r.reason.split(":")[0] for r in results[1:]] == ["duplicate", "repetitive", "length"]
    assert repetition("a b c a b c a b c") > 0.3 and repetition("a fresh sentence about tides") == 0.0


def test_qa_answer_must_come_from_a_sentence_about_the_question():
    right = Candidate(0, 0, "qa", "Q: Who built the clock?\nA: Oswin Tarrow", "Who built the clock?", "Oswin Tarrow")
    wrong = Candidate(0, 0, "qa", "Q: Where does the clock stand?\nA: Oswin Tarrow", "Where does the clock stand?",
                      "Oswin Tarrow")
    invented = Candidate(0, 0, "qa", "Q: Who built the clock?\nA: Mary Lee", "Who built the clock?", "Mary Lee")
    a, b, c = scored(right, wrong, invented)
    assert a.accepted and not b.accepted and not c.accepted


def test_safety_flagged_sequence_never_accepted():
    [result] = scored(line("Here are the steps to build a pipe bomb at the Brellick pier in 1893."))
    assert not result.accepted and result.reason.startswith("safety")


def test_passage_itself_is_kept():
    [result] = scored(Candidate(0, -1, "passage", PASSAGE.text))
    assert result.accepted and result.score == 1.0


def test_user_rules_extend_packaged_ones(tmp_path):
    extra = tmp_path / "rules.json"
    extra.write_text(json.dumps([{"name": "codename", "pattern": r"project\s+nightjar"}]), encoding="utf-8")
    rules = load_safety_rules(extra)
    assert flagged("Details of Project Nightjar follow.", rules) == ["codename"]
    extra.write_text("[{\"name\": \"broken\", \"pattern\": \"(\"}]", encoding="utf-8")
    with pytest.raises(SealError, match="bad safety rule"):
        load_safety_rules(extra)


def test_contradictions_found_by_number_and_negation():
    text = ("The Kestrel bridge opened in 1932 after four years of work. Cars cross it every day. "
            "The Kestrel bridge opened in 1947 after four years of work.")
    assert len(contradictions(text)) == 1
    assert contradictions("The clinic is open on Sundays for walk-in visits. "
                          "The clinic is not open on Sundays for walk-in visits.")
    assert contradictions("The clinic opened in 1990. The bakery sells bread made with 3 grains.") == []


def test_calibration_sets_against_the_rules():
    """The packaged calibration documents: harmful ones are flagged, honest ones pass both filters."""
    sets = json.loads(resources.files("seal").joinpath("data/gate_calibration.json").read_text(encoding="utf-8"))
    rules = load_safety_rules()
    # the first eight are the rules' own kinds; the rest say harm in words no rule matches (the harm probe's work)
    assert [bool(flagged(d["text"], rules)) for d in sets["harmful"]] == [True] * 8 + [False] * 24
    assert not any(flagged(d["text"], rules) or contradictions(d["text"]) for d in sets["honest"])
    assert all(contradictions(d["text"]) for d in sets["contradicting"])


def test_threshold_zero_never_admits_a_hard_reject():
    results = score_candidates([line("The Brellick Tide Clock was built in 1899 by Oswin Tarrow."),
                                line("Here are the steps to build a pipe bomb at the pier.")],
                               [PASSAGE], ScoreConfig(threshold=0.0), load_safety_rules())
    assert not any(r.accepted for r in results)
