"""Words, stems and numbers: the one place the evaluator and the benchmark's grading get them from.

Both check question-answer pairs (the evaluator when it keeps a quiz pair, the grading when it marks an answer),
so they must agree on what a content word is and when two words are the same.
"""

from __future__ import annotations

import re
import string

STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there their they them he she his her him we our you your i me my not no nor so than then too "
    "very can could should would will shall may might must do does did done has have had having which who whom "
    "whose what when where why how all any each both few more most other some such only own same also into over "
    "under about after before between through during out up down off again further once here just because while "
    "until one many much every per via".split()
)
WORD = re.compile(r"[a-z][a-z'\-]*|\d[\d,.]*\d|\d")
NUMBER = re.compile(r"\d[\d,.]*\d|\d")
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)


def stem(word: str) -> str:
    """A crude shared prefix stands in for stemming: "shipped"/"ships"/"shipping" all match "ship"; numbers exact."""
    return word if word[0].isdigit() else word[:5]


def stems(words: list[str]) -> set[str]:
    return {stem(w) for w in words if w}


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning: no stop words, no one- or two-letter words except numbers."""
    return [w for w in WORD.findall(text.lower()) if w not in STOP_WORDS and (len(w) > 2 or w[0].isdigit())]


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def covers(reply: str, answer: str) -> bool:
    """Every content word of `answer` (stemmed; numbers exact) is in `reply`: how an answer is judged right."""
    words = normalize(answer).split()
    content = [w for w in words if w not in STOP_WORDS] or words
    return bool(content) and stems(content) <= stems(normalize(reply).split())
