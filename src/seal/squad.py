"""Passages with questions in SQuAD's format: loading, selecting, asking them closed-book and grading the answers.

The knowledge benchmark, the reward trials of `seal train-policy` and the gate benchmark all read passages this way.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.errors import SealError
from seal.grading import RemoteJudge, grade
from seal.model import LM
from seal.prompts import answer_messages, open_book_messages


@dataclass
class Item:
    """One passage with its questions; `id` is its index in the data file, stable across runs."""

    id: int
    title: str
    context: str
    questions: list[tuple[str, str]]


def _entry_error(path: str, index: int, entry: object, problem: str) -> SealError:
    title = entry.get("title") if isinstance(entry, dict) else None
    name = f"entry {index}" + (f" ({title!r})" if isinstance(title, str) else "")
    return SealError(f"{path}: {name} {problem}")


def _from_official(data: dict, path: str) -> list[dict]:
    """SQuAD v1.1's official layout ({data: [{title, paragraphs: [{context, qas}]}]}) in SEAL's flat one.

    Only the first gold answer of each question is kept (SEAL's format has one).
    """
    flat = []
    for number, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise SealError(f"{path}: article {number} of 'data' needs a 'paragraphs' list")
        for paragraph in article["paragraphs"]:
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise SealError(f"{path}: article {number} ({article.get('title')!r}) has a paragraph without 'qas'")
            questions = [{"question": qa.get("question"), "answer": (qa.get("answers") or [{}])[0].get("text")}
                         if isinstance(qa, dict) else {} for qa in paragraph["qas"]]
            flat.append({"title": article.get("title", "").replace("_", " "), "context": paragraph.get("context"),
                         "questions": questions})
    return flat


def load_items(path: str) -> list[Item]:
    """Passages in SEAL's format ([{title, context, questions: [{question, answer}]}]) or SQuAD v1.1's JSON."""
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SealError(f"data file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SealError(f"{path} is not valid JSON: {err}") from err
    if isinstance(raw, dict) and isinstance(raw.get("data"), list):
        raw = _from_official(raw, path)
    if not isinstance(raw, list) or not raw:
        raise SealError(f"{path}: expected a non-empty list of {{title, context, questions}} or SQuAD's JSON")
    items = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise _entry_error(path, index, entry, "is not an object")
        for key, kind in (("title", str), ("context", str), ("questions", list)):
            if not isinstance(entry.get(key), kind) or not entry[key]:
                raise _entry_error(path, index, entry, f"has a missing or empty {key!r}")
        questions = []
        for number, qa in enumerate(entry["questions"]):
            if not isinstance(qa, dict) or not all(isinstance(qa.get(k), str) and qa[k].strip()
                                                   for k in ("question", "answer")):
                raise _entry_error(path, index, entry, f"question {number} needs a non-empty question and answer")
            questions.append((qa["question"].strip(), qa["answer"].strip()))
        items.append(Item(index, entry["title"].strip(), entry["context"].strip(), questions))
    return items


def select(items: list[Item], count: int, seed: int) -> list[Item]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:count]]


def load_external(path: str, items: list[Item], samples: int) -> dict[int, list[str]]:
    """Completions per passage from a file in SEAL's format with a `completions` list, matched by context."""
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SealError(f"cannot read external self-edits {path}: {err}") from err
    if not isinstance(raw, list):
        raise SealError(f"{path}: expected a list of {{title, context, completions}}")
    by_context = {}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("context"), str):
            raise _entry_error(path, index, entry, "has no 'context'")
        completions = entry.get("completions")
        if not isinstance(completions, list) or not all(isinstance(c, str) and c.strip() for c in completions):
            raise _entry_error(path, index, entry, "needs a 'completions' list of non-empty strings")
        if len(completions) < samples:
            raise _entry_error(path, index, entry, f"has {len(completions)} completions; --samples asks for {samples}")
        by_context[entry["context"].strip()] = completions
    missing = [item.title for item in items if item.context not in by_context]
    if missing:
        raise SealError(f"{path} has no completions for {len(missing)} selected passages, e.g. {missing[0]!r}")
    return {item.id: by_context[item.context] for item in items}


def context_sha256(item: Item) -> str:
    return hashlib.sha256(item.context.encode()).hexdigest()


def question_prompts(lm: LM, items: list[Item], open_book: bool = False) -> list[str]:
    """Every question of every item as the model is asked it: closed-book (the title as the topic) unless
    `open_book`."""
    return [lm.chat_prompt(open_book_messages(item.title, item.context, question) if open_book
                           else answer_messages(question, topic=item.title))
            for item in items for question, _ in item.questions]


def graded(items: list[Item], replies: list[str], judge: RemoteJudge | None) -> list[list[dict]]:
    """The replies to `question_prompts(items)`, graded, per item."""
    answers = iter(replies)
    return [[{"question": question, "gold": gold, "prediction": (reply := next(answers)),
              **asdict(grade(reply, gold, judge, question))} for question, gold in item.questions] for item in items]


def answer_questions(lm: LM, items: list[Item], max_tokens: int, judge: RemoteJudge | None,
                     open_book: bool = False) -> list[list[dict]]:
    """Every question of every item in one greedy batch, graded."""
    return graded(items, lm_ops.generate(lm, question_prompts(lm, items, open_book), max_tokens, batch_size=16),
                  judge)


def accuracy(rows: list[dict]) -> dict[str, float]:
    """Mean of each metric over graded answers, or over trials' accuracies."""
    return {metric: round(sum(float(r[metric]) for r in rows) / len(rows), 4)
            for metric in ("em", "f1", "contains", "judge")}
