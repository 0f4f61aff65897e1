"""Self-study: answer spans found by rules, the model's quiz and restatements, the evaluator's rules for them, and
the quiz pairs held out as a version's probes."""

import json

from typer.testing import CliRunner

from seal import model as lm_ops
from seal.check import Probe, hold_out, load_battery, probe_replies, run_gate
from seal.cli import app
from seal.config import GateConfig, GenerationConfig, LearnOptions, ScoreConfig
from seal.documents import Passage
from seal.generate import CLAUSE_CLOZE, SENTENCE_CLOZE, Candidate, write_self_edits
from seal.grading import rule_judge
from seal.learn import learn
from seal.score import load_safety_rules, quiz_rule, restatement_rule, score_candidates, within_budget
from seal.spans import answer_spans, clause_question, cloze_question, lead_question, question_start
from seal.store import Store
from seal.text import STOP_WORDS, covers

from conftest import FACTS

SOURCE = "Brellick Tide Clock " + FACTS


def quiz(question: str, answer: str, check: str, fact: int = 0, sample: int = 0) -> Candidate:
    return Candidate(0, sample, "quiz", f"Q: {question}\nA: {answer}", question, answer, fact, "", check)


def test_spans_are_dates_quantities_names_and_defining_phrases():
    text = ("The Orvane K7 was released on September 3, 2026 by Tillwright Aeronautics. It weighs 842 grams and is "
            "a folding survey drone. In the 19th century 25 people made lace in 1874.")
    spans = {(s.kind, s.text) for s in answer_spans(text, 20)}
    assert {("date", "September 3, 2026"), ("quantity", "842 grams"), ("name", "Tillwright Aeronautics"),
            ("phrase", "folding survey drone"), ("quantity", "25 people"), ("date", "1874")} <= spans
    assert not any(s.text in ("19", "19th") for s in answer_spans(text, 20))  # an ordinal is not a quantity


def test_spans_take_turns_over_sentences_and_a_poem_has_none():
    text = "Ada Lind met Bo Carr. Cy Dunn met Di Ek. Ed Fay met Flo Gil."
    first_three = [s.text for s in answer_spans(text, 3)]
    assert first_three == ["Ada Lind", "Cy Dunn", "Ed Fay"]
    assert answer_spans("the rain falls soft on quiet hills and the wind is slow", 10) == []
    assert answer_spans("the rain falls soft on quiet hills and the wind is slow", 10, nouns=True) == []


def test_noun_phrases_come_after_every_other_span_and_stop_at_verbs():
    text = ("Ada Lind founded the Orvane guild in 1874. Its members repaired tide clocks with copper floats, "
            "which were made by hand.")
    spans = answer_spans(text, 20, nouns=True)
    kinds = [s.kind for s in spans]
    assert "noun" in kinds and kinds == sorted(kinds, key=lambda kind: kind == "noun")  # every noun phrase last
    nouns = {s.text for s in spans if s.kind == "noun"}
    assert {"tide clocks", "copper floats", "hand"} <= nouns
    assert not any(word in noun.split() for noun in nouns for word in ("repaired", "made", "were", "1874"))
    assert [s.text for s in answer_spans(text, 20)] == [s.text for s in spans if s.kind != "noun"]


def test_cloze_question_replaces_the_span_with_a_question_word():
    span = next(s for s in answer_spans(FACTS, 10) if s.text == "1893")
    assert span.kind == "date" and cloze_question(span) == ("It was built in when by the clockmaker Oswin Tarrow and shows the height of the "
                                    "tide with a copper float?")


def test_clause_question_asks_with_the_words_around_the_span_and_widens_to_the_left_first():
    asked = lambda text: {s.text: clause_question(s) for s in answer_spans(text, 10)}  # noqa: E731
    ferry = asked("The ferry carries 80 cars on each crossing; the harbour board bought it in 1931 from a shipyard.")
    assert ferry == {"80 cars": "The ferry carries how many on each crossing?",
                     "1931": "The harbour board bought it in when from a shipyard?"}
    assert asked("The ferry crossed the bay in an hour, carrying 80 cars, and docked before noon.")["80 cars"] == (
        "The ferry crossed the bay in an hour, carrying how many?")
    assert asked("In 1931, the board bought it.") == {"1931": ""}  # its clause widened is the whole sentence


def test_a_lead_question_asks_with_the_words_of_its_clause_before_the_claim_only():
    sentence = "The ferry carries 80 cars on each crossing; the harbour board bought it in 1931 from a shipyard."
    spans = {s.text: s for s in answer_spans(sentence, 10)}
    assert lead_question(spans["1931"], sentence.index("1931")) == (
        "The harbour board bought it in when?", "the harbour board bought it in")  # "from a shipyard" is left out
    assert lead_question(spans["80 cars"], sentence.index("80 cars")) == ("The ferry carries how many?",
                                                                          "The ferry carries")


def test_a_quiz_pair_is_kept_only_when_every_rule_and_the_round_trip_hold():
    kept, reason = quiz_rule(quiz("Who built the Brellick Tide Clock?", "Oswin Tarrow",
                                  "It was built by the clockmaker Oswin Tarrow."), SOURCE)
    assert kept == 1.0 and "round trip" in reason
    cases = {
        "answer is not a span of the source": quiz("Who built the clock?", "Tobias Crane", "Tobias Crane"),
        "question contains its answer": quiz("Did Oswin Tarrow build the clock?", "Oswin Tarrow", "Oswin Tarrow"),
        "not a question": quiz("Tell me who built it", "Oswin Tarrow", "Oswin Tarrow"),
        "copies the worked example": quiz("Which merchant opened the Harbin Ice Works?", "Oswin Tarrow",
                                          "Oswin Tarrow"),
        "number not in source": quiz("Who built the clock in 1901?", "Oswin Tarrow", "Oswin Tarrow"),
        "name not in source": quiz("Who built the clock for Queen Mab?", "Oswin Tarrow", "Oswin Tarrow"),
        "round trip failed": quiz("Who built the clock?", "Oswin Tarrow", "The clock was built by the town."),
    }
    for expected, candidate in cases.items():
        score, reason = quiz_rule(candidate, SOURCE)
        assert score == 0.0 and reason.startswith(expected), (expected, reason)


def test_a_round_trip_that_repeats_the_whole_sentence_proves_nothing():
    sentence = ("It was built in 1893 by the clockmaker Oswin Tarrow and shows the height of the tide with a copper "
                "float.")
    pair = Candidate(0, 0, "quiz", "", "Who built the Brellick Tide Clock?", "Oswin Tarrow", 0, sentence, sentence)
    score, reason = quiz_rule(pair, SOURCE)
    assert score == 0.0 and reason.startswith("round trip ambiguous") and "1893" in reason
    pair.check = "The clockmaker Oswin Tarrow built it."
    assert quiz_rule(pair, SOURCE)[0] == 1.0
    pair.question, pair.check = "Who built the clock in 1893?", "Oswin Tarrow built it in 1893."  # asked, not given
    assert quiz_rule(pair, SOURCE)[0] == 1.0


def test_a_quantity_question_starts_with_its_unit():
    spans = {s.text: s for s in answer_spans("Ada Lind opened it in 1999. It weighs 842 grams and is 12% lighter. "
                                             "It has 4 wheels and 7 of them.", 10)}
    assert question_start(spans["842 grams"]) == "How many grams"
    assert question_start(spans["12%"]) == "What percentage"
    assert question_start(spans["4 wheels"]) == "How many wheels"
    assert question_start(spans["7"]) == "How many"
    assert (question_start(spans["1999"]), question_start(spans["Ada Lind"])) == ("When", "Which")


def test_a_sentence_asked_by_rule_stands_in_only_for_a_fact_the_model_missed_and_a_clause_always_stays():
    passed = quiz("Who built the Brellick Tide Clock?", "Oswin Tarrow", "The clockmaker Oswin Tarrow.", fact=0)
    failed = quiz("When was the clock built?", "1893", "It is old.", fact=1)
    rule = lambda wording, fact, question, answer: Candidate(0, wording, "cloze", f"Q: {question}\nA: {answer}",  # noqa: E731
                                                             question, answer, fact)
    scored = score_candidates([passed, failed, rule(SENTENCE_CLOZE, 0, "It was built by whom?", "Oswin Tarrow"),
                               rule(SENTENCE_CLOZE, 1, "It was built in when?", "1893"),
                               rule(CLAUSE_CLOZE, 0, "Built by whom and shows the tide?", "Oswin Tarrow")],
                              [Passage("Brellick Tide Clock", FACTS, "clock.md")], ScoreConfig(), [])
    kept = {(s.candidate.kind, s.candidate.sample, s.candidate.fact) for s in scored if s.accepted}
    assert kept == {("quiz", 0, 0), ("cloze", SENTENCE_CLOZE, 1), ("cloze", CLAUSE_CLOZE, 0)}
    assert next(s for s in scored if s.candidate.sample == SENTENCE_CLOZE and s.candidate.fact == 0).reason == (
        "the model's own question asks this fact")


def test_a_restatement_keeps_every_number_and_name_and_invents_none():
    sentence = "It was built in 1893 by the clockmaker Oswin Tarrow."
    restated = lambda text: Candidate(0, 0, "restatement", text, source=sentence)  # noqa: E731
    assert restatement_rule(restated("Oswin Tarrow, a clockmaker, built it in 1893."), SOURCE) is None
    assert restatement_rule(restated(sentence), SOURCE)[1] == "copy of the sentence"
    assert restatement_rule(restated("Oswin Tarrow built it long ago."), SOURCE)[1].startswith("drops a number")
    assert restatement_rule(restated("A clockmaker built it in 1893."), SOURCE)[1].startswith("drops a name")
    assert restatement_rule(restated("Oswin Tarrow built it in 1893 in Paris."), SOURCE)[1].startswith("name not in")


def test_evaluator_and_grading_share_one_notion_of_a_right_answer():
    assert "the" in STOP_WORDS and not covers("The verdict was guilty.", "not guilty")  # a negation is content
    assert not covers("It cost two million dollars.", "one million dollars")
    for reply, gold in [("It was built in 1893.", "1893"), ("Built by Oswin Tarrow", "the clockmaker Oswin Tarrow"),
                        ("Tarrow", "Oswin Tarrow"), ("It shipped in March", "shipping in March")]:
        assert rule_judge(reply, gold) == covers(reply, gold)
        assert quiz_rule(quiz("Who or what is it about?", gold, reply), f"x {gold} y")[0] == float(covers(reply, gold))


def test_a_date_or_count_written_another_way_is_the_same_answer():
    assert covers("The answer is: 2027-03-14", "March 14, 2027") and covers("It has 6 languages.", "six languages")
    assert covers("fifty units", "50 units") and not covers("It has 7 languages.", "six languages")
    assert not covers("2027-03-15", "March 14, 2027")


def test_budget_takes_one_wording_of_every_fact_before_a_second():
    pairs = [quiz(f"Q{f}-{k}?", "a", "a", fact=f, sample=k) for f in range(3) for k in range(2)]
    restatements = [Candidate(0, 0, "restatement", "r")]
    passage = [Candidate(0, -1, "passage", "p")]
    chosen = within_budget(passage + restatements + pairs, 4)
    assert chosen[0].kind == "passage" and len(chosen) == 5
    assert [(c.fact, c.sample) for c in chosen[1:]] == [(0, 0), (1, 0), (2, 0), (0, 1)]


def test_hold_out_takes_a_second_wording_so_every_probed_fact_is_still_trained():
    pairs = [quiz("A?", "a", "a", fact=0), quiz("A again?", "a", "a", fact=0, sample=1), quiz("B?", "b", "b", fact=1)]
    held = hold_out(pairs, per_passage=4)
    assert [c.question for c in held] == ["A again?"]


def test_question_probes_must_be_answered_not_only_made_likelier(tiny_model_dir, monkeypatch):
    lm = lm_ops.load(str(tiny_model_dir))
    probes = [Probe("p1", " Oswin Tarrow", "Who built it?", question=True),
              Probe("p2", " 1893", "When was it built?", question=True)]
    replies = {"p1": "It was built by Oswin Tarrow.", "p2": "In 1901."}
    monkeypatch.setattr(lm_ops, "generate", lambda lm, prompts, *a, **k: [replies.get(p, "A calm reply.") for p in prompts])
    assert probe_replies(lm, probes) == ["It was built by Oswin Tarrow.", "In 1901."]
    gate = GateConfig(knowledge_min_answered=0.75, locality_min_agreement=0.0, min_chance=0.0)
    battery = load_battery()
    reference = {"locality": [[1]] * len(battery.locality), "red_team": {"flagged": [], "complied": []},
                 "sanity": {"degenerate": [], "refused": []}}
    report, _, after = run_gate(lm, probes, [9.0, 9.0], [], battery, reference, load_safety_rules(), gate)
    assert after == ["It was built by Oswin Tarrow.", "In 1901."]  # kept with the version's probes
    knowledge = report.checks[0]
    assert knowledge.name == "knowledge" and knowledge.value == 0.5 and not knowledge.passed
    assert knowledge.detail["answered"] == ["Who built it?"] and knowledge.detail["not_answered"] == ["When was it built?"]


def test_quiz_pairs_carry_their_fact_sentence_and_round_trip(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    passage = Passage("Brellick Tide Clock", FACTS, "clock.md")
    candidates, _ = write_self_edits(lm, [passage], GenerationConfig(strategy="quiz", samples=2, facts=3))
    pairs = [c for c in candidates if c.kind == "quiz"]
    assert candidates[0].kind == "passage" and pairs
    spans = {s.text: s.sentence for s in answer_spans(FACTS, 10)}
    for pair in pairs:
        assert pair.answer in spans and pair.source == spans[pair.answer]
        assert pair.question.split()[0] in ("When", "How", "Which", "What")
    scored = score_candidates(pairs, [passage], ScoreConfig(), load_safety_rules())
    assert all(s.reason for s in scored)  # every pair says why it was kept or rejected


def test_every_fact_gets_a_rule_made_question_and_the_first_quizzed_the_models_own(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    passage = Passage("Brellick Tide Clock", FACTS, "clock.md")
    candidates, _ = write_self_edits(lm, [passage], GenerationConfig(strategy="quiz", samples=1, facts=5, quizzed=2))
    assert sorted({c.fact for c in candidates if c.kind == "quiz"}) == [0, 1]
    assert sorted(c.fact for c in candidates if c.kind == "cloze" and c.sample == SENTENCE_CLOZE) == [0, 1, 2, 3, 4]


def test_learn_says_when_there_is_nothing_to_quiz_and_trains_on_what_remains(tmp_path, tiny_model_dir, monkeypatch):
    poem = tmp_path / "poem.md"
    poem.write_text("# Rain\n\nthe rain falls soft on quiet hills and the slow wind hums along the grey stones.\n",
                    encoding="utf-8")
    options = LearnOptions(model=str(tiny_model_dir), gate=GateConfig(generation_tokens=4, enforce=False))
    options.generation.samples, options.update.epochs = 1, 1
    store = Store(tmp_path / "home")
    result = learn(store, [str(poem)], options)
    assert result.committed and result.stats["sequences"] >= 1  # the passage is still learned
    assert any("no quiz pairs" in note and "no dates, numbers, names" in note for note in result.notes)
    shown = json.dumps([e.reason for e in store.self_edits(result.version)])
    assert "source passage" in shown
    assert store.get(result.version).stats["notes"] == result.notes  # kept with the version, not only printed
    monkeypatch.setenv("SEAL_HOME", str(tmp_path / "home"))
    assert "no quiz pairs" in CliRunner().invoke(app, ["show", result.version]).output


def test_a_number_inside_a_date_is_not_a_quantity_of_its_own():
    spans = [(s.kind, s.text) for s in answer_spans("A firmware update in January 2027 added automatic return.", 10)]
    assert spans == [("date", "January 2027")]
