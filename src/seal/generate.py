"""Stage 2: self-edit generation. The model writes its own training data from each passage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.config import GenerationConfig
from seal.documents import Passage, sentences
from seal.errors import SealError
from seal.prompts import (STRATEGIES, Strategy, custom_messages, open_book_messages,
                          question_messages, restatement_messages, self_edit_messages)
from seal.spans import clause_question, cloze_question, question_start, quiz_spans


@dataclass
class Candidate:
    """One proposed training sequence. kind: passage (the source itself), line, qa (a question-answer pair the
    model wrote whole), quiz (a question the model wrote for an answer span of the source), cloze (a rule-made
    question of such a span; its `sample` says which wording) or restatement (one sentence of the source in other
    words)."""

    passage_index: int
    sample: int
    kind: str
    text: str
    question: str = ""
    answer: str = ""
    fact: int = -1  # quiz: which answer span of the passage the pair is about
    source: str = ""  # quiz and restatement: the sentence of the passage it comes from
    check: str = ""  # quiz: the model's own answer to the question with the passage in view (round trip)


SENTENCE_CLOZE, CLAUSE_CLOZE = -1, 1  # a cloze pair's `sample`: the span's sentence asked, or only its clause

# Self-study strategies: the model studies the passage in small, checkable steps instead of one free-form text.
# quiz: a question for each answer span; paraphrase: each sentence restated; study: passage + both, within a budget.
SELF_STUDY = ("study", "quiz", "paraphrase")
# Other wordings of one fact are sampled cooler than SEAL's free-form self-edits (1.0): they must stay on the fact.
STUDY_TEMPERATURE = 0.8


BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s*")
PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure|certainly|the (?:facts|passage)|implications)\b.*:$", re.I)
QA_PAIR = re.compile(r"Q(?:uestion)?\s*\d*\s*[:.]\s*(.+?)\s*\n\s*A(?:nswer)?\s*\d*\s*[:.]\s*(.+?)\s*(?=\n|$)", re.I)
TERMINAL = (".", "!", "?", '"', "'", ")")


def parse_lines(completion: str) -> list[str]:
    """One sequence per sentence of each line, bullets and preambles dropped, a final cut-off sentence dropped.

    SEAL keeps whole lines; splitting them into sentences lets the evaluator keep the good sentence of a line
    whose other sentence a small model made up.
    """
    lines = [BULLET.sub("", line).strip() for line in completion.splitlines()]
    pieces = [s for line in lines if line and not PREAMBLE.match(line) for s in sentences(line)]
    if pieces and not pieces[-1].endswith(TERMINAL):
        pieces.pop()
    return pieces


def parse_qa(completion: str) -> list[tuple[str, str]]:
    return [(q.strip(), a.strip()) for q, a in QA_PAIR.findall(completion + "\n") if q.strip() and a.strip()]


def resolve_strategy(config: GenerationConfig) -> tuple[Strategy | None, str | None]:
    if config.template:
        path = Path(config.template).expanduser()
        if not path.is_file():
            raise SealError(f"prompt template {config.template} does not exist")
        try:
            template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SealError(f"cannot read prompt template {config.template}: {err}") from err
        if "{passage}" not in template:
            raise SealError(f"prompt template {config.template} has no {{passage}} placeholder")
        return None, template
    if config.strategy in SELF_STUDY:
        return None, None
    if config.strategy not in STRATEGIES:
        raise SealError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(SELF_STUDY + tuple(STRATEGIES))}")
    return STRATEGIES[config.strategy], None


def candidates_from(completion: str, passage_index: int, sample: int, parse_as: str) -> list[Candidate]:
    if parse_as == "qa":
        return [Candidate(passage_index, sample, "qa", f"Q: {q}\nA: {a}", question=q, answer=a)
                for q, a in parse_qa(completion)]
    return [Candidate(passage_index, sample, "line", line) for line in parse_lines(completion)]


def write_self_edits(lm: lm_ops.LM, passages: list[Passage], config: GenerationConfig) -> tuple[list[Candidate], list[str]]:
    """Sample `config.samples` self-edits per passage in one batch; returns candidates and raw completions.

    The passage itself is always a candidate (SEAL trains on it too), ahead of the model's own lines.
    """
    strategy, template = resolve_strategy(config)
    if config.strategy in SELF_STUDY and not template:
        return write_self_study(lm, passages, config), []
    prompts: list[str] = []
    for passage in passages:
        messages = (custom_messages(template, passage.title, passage.text) if template
                    else self_edit_messages(strategy, passage.title, passage.text))
        prompts.extend([lm.chat_prompt(messages)] * config.samples)
    completions = lm_ops.generate(lm, prompts, config.max_new_tokens, config.temperature, config.top_p,
                                  seed=config.seed, batch_size=max(config.samples, 8))
    parse_as = strategy.parse_as if strategy else "lines"
    candidates = [Candidate(i, -1, "passage", f"{p.title}\n{p.text}") for i, p in enumerate(passages)]
    generated: list[Candidate] = []
    for index, completion in enumerate(completions):
        generated.extend(candidates_from(completion, index // config.samples, index % config.samples, parse_as))
    if parse_as == "qa":
        generated = answer_open_book(lm, passages, generated)
    return candidates + generated, completions


def answer_open_book(lm: lm_ops.LM, passages: list[Passage], pairs: list[Candidate]) -> list[Candidate]:
    """Re-answer each distinct question the model wrote, now with its passage in the prompt.

    A small model writes usable questions but pairs them with invented answers; with the passage in view it
    mostly copies the right sentence. Both steps are the model's own work; the evaluator then checks grounding.
    """
    unique = list({(c.passage_index, c.question.lower()): c for c in pairs}.values())
    prompts = [lm.chat_prompt(open_book_messages(passages[c.passage_index].title, passages[c.passage_index].text,
                                                 c.question)) for c in unique]
    answers = lm_ops.generate(lm, prompts, max_new_tokens=40, batch_size=16)
    return [Candidate(c.passage_index, c.sample, "qa", f"Q: {c.question}\nA: {a}", question=c.question, answer=a)
            for c, a in zip(unique, answers) if a]


def write_self_study(lm: lm_ops.LM, passages: list[Passage], config: GenerationConfig) -> list[Candidate]:
    """The passage, then the model's quiz pairs and/or restatements of it (the evaluator decides what is kept)."""
    candidates = [Candidate(i, -1, "passage", f"{p.title}\n{p.text}") for i, p in enumerate(passages)]
    if config.samples == 0:
        return candidates
    if config.strategy in ("quiz", "study"):
        candidates += write_quiz(lm, passages, config)
    if config.strategy in ("paraphrase", "study"):
        candidates += write_restatements(lm, passages, config)
    return candidates


def _sampled(lm: lm_ops.LM, prompts: list[str], copies: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    """`copies` completions per prompt: the greedy one first, then samples (different wordings of the same thing)."""
    outputs = [lm_ops.generate(lm, prompts, max_new_tokens, batch_size=32)]
    if copies > 1:
        repeated = [p for p in prompts for _ in range(copies - 1)]
        sampled = lm_ops.generate(lm, repeated, max_new_tokens, temperature=STUDY_TEMPERATURE, top_p=0.95, seed=seed,
                                  batch_size=32)
        outputs += [sampled[k::copies - 1] for k in range(copies - 1)]
    return [list(texts) for texts in zip(*outputs)]


def write_quiz(lm: lm_ops.LM, passages: list[Passage], config: GenerationConfig) -> list[Candidate]:
    """Answer-aware questions: for each of the first `quizzed` answer spans found by rules, the model writes `samples`
    questions whose answer is that span; then, reading the span's sentence, it answers each of its own questions (the
    round trip the evaluator checks). Every span up to `facts`, noun phrases last, also gets its rule-made questions:
    its sentence asked (kept only where none of the model's questions passed) and, in a long sentence, its clause."""
    every = [(i, f, span) for i, p in enumerate(passages) for f, span in enumerate(quiz_spans(p.title, p.text,
                                                                                              config.facts))]
    spans = [(i, f, span) for i, f, span in every if f < config.quizzed]
    # The reply starts with the question's first words, chosen by the span; the model writes the rest.
    starts = [question_start(span) for _, _, span in spans]
    prompts = [lm.chat_prompt(question_messages(passages[i].title, span.sentence, span.text)) + start
               for (i, _, span), start in zip(spans, starts)]
    questions = _sampled(lm, prompts, config.samples, 24, config.seed)
    pairs = []
    for (i, fact, span), start, texts in zip(spans, starts, questions):
        distinct = list(dict.fromkeys(f"{start} {t.splitlines()[0].strip()}" for t in texts if t.strip()))
        pairs += [Candidate(i, k, "quiz", f"Q: {q}\nA: {span.text}", q, span.text, fact, span.sentence)
                  for k, q in enumerate(distinct)]
    # The round trip reads the sentence the span comes from: with a whole passage in view the 135M model loses its
    # way (on 9 development documents it kept 24 of 206 pairs reading passages, 43 reading sentences).
    checks = lm_ops.generate(lm, [lm.chat_prompt(open_book_messages(passages[c.passage_index].title, c.source,
                                                                    c.question)) for c in pairs],
                             max_new_tokens=32, batch_size=32)
    for pair, check in zip(pairs, checks):
        pair.check = check
    asked = [(i, fact, span, SENTENCE_CLOZE, cloze_question(span)) for i, fact, span in every]
    asked += [(i, fact, span, CLAUSE_CLOZE, question) for i, fact, span in every if (question := clause_question(span))]
    rule_made = [Candidate(i, wording, "cloze", f"Q: {question}\nA: {span.text}", question, span.text, fact,
                           span.sentence) for i, fact, span, wording, question in asked]
    return pairs + rule_made


def write_restatements(lm: lm_ops.LM, passages: list[Passage], config: GenerationConfig) -> list[Candidate]:
    """Each sentence of each passage restated in other words, `samples - 1` times (at least once)."""
    units = [(i, s) for i, p in enumerate(passages) for s in sentences(p.text) if len(s.split()) >= 5]
    prompts = [lm.chat_prompt(restatement_messages(passages[i].title, s)) for i, s in units]
    longest = max((len(lm.tokenizer(s)["input_ids"]) for _, s in units), default=0)
    # Sampled, not greedy: a greedy restatement of a short sentence is mostly a copy of it.
    per_unit = max(1, config.samples - 1)
    texts = lm_ops.generate(lm, [p for p in prompts for _ in range(per_unit)], int(longest * 1.5) + 8,
                            temperature=STUDY_TEMPERATURE, top_p=0.95, seed=config.seed + 1, batch_size=16)
    return [Candidate(i, k, "restatement", text, source=sentence) for u, (i, sentence) in enumerate(units)
            for k, text in enumerate(dict.fromkeys(texts[u * per_unit : (u + 1) * per_unit])) if text]
