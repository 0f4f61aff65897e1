"""Words, stems and numbers: the one place the evaluator and the benchmark's grading get them from.

Both check question-answer pairs (the evaluator when it keeps a quiz pair, the grading when it marks an answer),
so they must agree on what a content word is and when two words are the same.
"""

from __future__ import annotations

import re
import string

# Words an answer may leave out and still be right: articles, pronouns, auxiliaries. Negations, quantifiers
# and prepositions are not here, since "not guilty" and "guilty", "one million" and "two million" differ.
STOP_WORDS = frozenset(
    "a an the of in on at to for by with from and or as is was were are be been it its this that these those "
    "he she they his her their which who whom what when where why how than then into about over".split())
# Words a statement may use without its source using them: they say nothing the source must back.
FUNCTION_WORDS = STOP_WORDS | frozenset(
    "but if being there them him we our you your i me my not no nor so too very can could should would will "
    "shall may might must do does did done has have had having whose all any each both few more most other some "
    "such only own same also under after before between through during out up down off again further once here "
    "just because while until one many much every per via".split())
WORD = re.compile(r"[a-z][a-z'\-]*|\d[\d,.]*\d|\d")
NUMBER = re.compile(r"\d[\d,.]*\d|\d")
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)


def stem(word: str) -> str:
    """A crude shared prefix stands in for stemming: "shipped", "shipping" and "shipment" all match; numbers exact."""
    return word if word[0].isdigit() else word[:5]


def stems(words: list[str]) -> set[str]:
    return {stem(w) for w in words if w}


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning: no function words, no one- or two-letter words except numbers."""
    return [w for w in WORD.findall(text.lower()) if w not in FUNCTION_WORDS and (len(w) > 2 or w[0].isdigit())]


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def has_phrase(text: str, phrase: str) -> bool:
    """`phrase` appears in `text` as whole words, both normalized."""
    needle = normalize(phrase)
    return bool(needle) and f" {needle} " in f" {normalize(text)} "


MONTH_NAMES = ("january february march april may june july august september october november december").split()
ISO_DATE = re.compile(r"\b(\d{4})-(0?[1-9]|1[0-2])-(0?[1-9]|[12]\d|3[01])\b")
# "one" is left out: it is a pronoun more often than a count.
NUMBER_NAMES = {w: str(n) for n, w in enumerate("zero _ two three four five six seven eight nine ten eleven twelve "
                                                 "thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
                                                 "twenty".split()) if w != "_"}
NUMBER_NAMES |= {w: str(10 * n) for n, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)}


def judged_words(text: str) -> list[str]:
    """Normalized words with a date or a count written another way made the same: "2027-03-14" is "march 14 2027",
    "six" is "6"."""
    text = ISO_DATE.sub(lambda m: f"{MONTH_NAMES[int(m[2]) - 1]} {int(m[3])} {m[1]}", text)
    return [NUMBER_NAMES.get(w, w) for w in normalize(text).split()]


def covers(reply: str, answer: str) -> bool:
    """Every content word of `answer` (stemmed; numbers exact) is in `reply`: how an answer is judged right."""
    words = judged_words(answer)
    content = [w for w in words if w not in STOP_WORDS] or words
    return bool(content) and stems(content) <= stems(judged_words(reply))
