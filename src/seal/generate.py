"""Stage 2: self-edit generation. The model writes its own training data from each passage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.documents import Passage, sentences
from seal.errors import SealError
from seal.prompts import STRATEGIES, Strategy, custom_messages, open_book_messages, self_edit_messages


@dataclass
class Candidate:
    """One proposed training sequence. kind: passage (the source itself), line, or qa (question/answer)."""

    passage_index: int
    sample: int
    kind: str
    text: str
    question: str = ""
    answer: str = ""


@dataclass
class GenerationConfig:
    strategy: str = "implications"
    samples: int = 3
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    template: str | None = None  # path of a user prompt template with {title} and {passage}


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
    if config.strategy not in STRATEGIES:
        raise SealError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
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
