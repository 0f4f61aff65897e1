"""Grading closed-book answers, and the statistics that say whether a difference between conditions is real.

Three verdicts per answer, all reported: SQuAD's exact match and token F1 (official normalization), and a judge.
The default judge is local and rule-based, so grading needs no service: an answer is right when it contains
every content word of the gold answer (5-character stems, numbers exact). A small model answers in full
sentences ("The invasion was planned by the duc de Choiseul."), where exact match is 0 and F1 is diluted.
`RemoteJudge` asks any OpenAI-compatible endpoint a yes/no question instead, as SEAL does with an LLM judge.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from seal.score import ask_yes_no
from seal.text import covers, has_phrase, normalize


def exact_match(prediction: str, gold: str) -> bool:
    return normalize(prediction) == normalize(gold)


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected:
        return float(predicted == expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, gold: str) -> bool:
    """The normalized gold answer appears, as whole words, inside the normalized prediction."""
    return has_phrase(prediction, gold)


def rule_judge(prediction: str, gold: str) -> bool:
    """The local judge: every content word of the gold answer (stemmed; numbers exact) is in the prediction."""
    return covers(prediction, gold)


@dataclass
class Grade:
    em: bool
    f1: float
    contains: bool
    judge: bool


def grade(prediction: str, gold: str, judge: "RemoteJudge | None" = None, question: str = "") -> Grade:
    verdict = judge.verdict(question, gold, prediction) if judge else rule_judge(prediction, gold)
    return Grade(exact_match(prediction, gold), round(token_f1(prediction, gold), 4), contains(prediction, gold),
                 verdict)


class RemoteJudge:
    """Any OpenAI-compatible chat endpoint, asked whether the answer means the same as the gold answer."""

    def __init__(self, url: str, model: str):
        self.url, self.model = url.rstrip("/"), model

    def verdict(self, question: str, gold: str, prediction: str) -> bool:
        return ask_yes_no(self.url, self.model, f"Question: {question}\nReference answer: {gold}\n"
                          f"Student answer: {prediction}\n\nDoes the student answer give the same answer as the "
                          "reference? Reply with yes or no.")


@dataclass
class Interval:
    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def wilson(successes: int, trials: int, z: float = 1.96) -> Interval:
    """Wilson's score interval of a rate (95% with the default z): sound at 0 or 1 and for a few dozen documents,
    where the normal approximation is not."""
    if trials == 0:
        raise ValueError("a rate needs at least one trial")
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Interval(rate, round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6))


def sign_test(worse: int, better: int) -> float:
    """One-sided exact sign test (McNemar's, on the pairs that changed): the probability of at least `worse` of the
    `worse + better` changes going the bad way if each change went either way with equal chance."""
    changed = worse + better
    return sum(math.comb(changed, k) for k in range(worse, changed + 1)) / 2**changed


def bootstrap(values: list[float], resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap of the mean over units (passages): resample units with replacement."""
    if not values:
        raise ValueError("bootstrap needs at least one value")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return Interval(sum(values) / n, means[int(tail * (resamples - 1))], means[int((1 - tail) * (resamples - 1))])


def paired(first: dict[int, float], second: dict[int, float], resamples: int = 10_000, seed: int = 0) -> Interval:
    """Bootstrap of the mean per-unit difference second - first, over the units both have."""
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError("the two conditions share no passages")
    return bootstrap([second[k] - first[k] for k in shared], resamples, seed)
