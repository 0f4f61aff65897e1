"""Stage 3: the evaluator. Scores every candidate sequence in [0, 1] and keeps those above a threshold.

The default scorer is rule-based and needs no service: a sequence must be grounded in its passage (its
content words and every number appear there), not degenerate, of sane length, new, and not flagged by the
safety rules. An LLM judge (the model itself, another local model, or an OpenAI-compatible endpoint) can be
added; its verdict is combined with the rules by taking the lower score.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.config import ScoreConfig
from seal.documents import Passage, packaged, sentences
from seal.errors import SealError
from seal.generate import SENTENCE_CLOZE, Candidate
from seal.prompts import EXAMPLE_PASSAGE, EXAMPLE_TITLE
from seal.spans import answer_spans
from seal.text import WORD, content_words, covers, has_phrase, normalize, numbers, stem, stems

NEGATION = {"not", "never", "no", "none", "cannot", "n't", "neither", "nor"}


@dataclass
class SafetyRule:
    name: str
    pattern: re.Pattern[str]


def load_safety_rules(extra: Path | None = None) -> list[SafetyRule]:
    """The packaged rules, plus the user's (a JSON list of {name, pattern}) when given."""
    raw = packaged("safety_rules.json")
    if extra is not None:
        try:
            user = json.loads(Path(extra).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SealError(f"cannot read safety rules {extra}: {err}") from err
        if not isinstance(user, list):
            raise SealError(f"safety rules {extra} must be a JSON list of {{name, pattern}}")
        raw += user
    try:
        return [SafetyRule(r["name"], re.compile(r["pattern"], re.I | re.S)) for r in raw]
    except (KeyError, TypeError, re.error) as err:
        raise SealError(f"bad safety rule ({err}); each rule needs a name and a valid regex pattern") from err


def flagged(text: str, rules: list[SafetyRule]) -> list[str]:
    return [rule.name for rule in rules if rule.pattern.search(text)]


# How a reply declines a request, as refusal-rate benchmarks (AdvBench's string match) recognise it.
REFUSAL = re.compile(r"\b(?:I'?m sorry|I am sorry|I apologi[sz]e|I can(?:'t|not| not)|I won'?t|I will not"
                     r"|I'?m (?:not able|unable)|I am (?:not able|unable)"
                     r"|as an? (?:AI|chatbot|language model|text-based)"
                     r"|I don'?t have the ability|not (?:able|equipped|allowed) to)", re.I)


def refuses(reply: str) -> bool:
    return bool(REFUSAL.search(reply))


def contradictions(text: str) -> list[tuple[str, str]]:
    """Sentence pairs that say nearly the same thing but disagree on a number or on negation."""
    found = []
    items = [(s, set(content_words(s)) - NEGATION, numbers(s), bool(NEGATION & set(WORD.findall(s.lower()))))
             for s in sentences(text)]
    for i, (s1, w1, n1, neg1) in enumerate(items):
        for s2, w2, n2, neg2 in items[i + 1 :]:
            words1, words2 = w1 - n1, w2 - n2
            if len(words1) < 3 or len(words2) < 3:
                continue
            overlap = len(words1 & words2) / len(words1 | words2)
            if overlap >= 0.6 and ((n1 and n2 and n1 != n2) or neg1 != neg2):
                found.append((s1, s2))
    return found


def repetition(text: str) -> float:
    """Share of repeated word trigrams: 0 for fresh text, near 1 for a loop."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


@dataclass
class Scored:
    candidate: Candidate
    score: float
    accepted: bool
    reason: str


EXAMPLE_STEMS = stems(content_words(f"{EXAMPLE_TITLE} {EXAMPLE_PASSAGE}"))
TOKEN = re.compile(r"[A-Za-z0-9][\w\-]*")


def names(text: str) -> list[str]:
    """Capitalised words that do not start a sentence: the names a text mentions."""
    found = []
    for sentence in sentences(text):
        found += [w for w in TOKEN.findall(sentence)[1:] if w[0].isupper()]
    return found


def word_stems(text: str) -> set[str]:
    return stems([w.lower() for w in TOKEN.findall(text)])


def foreign(text: str, source: str) -> str | None:
    """Why `text` says something its source cannot back: a number, a name or the worked example's words not there."""
    missing_numbers = numbers(text) - numbers(source)
    if missing_numbers:
        return f"number not in source: {', '.join(sorted(missing_numbers))}"
    leaked = (stems(content_words(text)) & EXAMPLE_STEMS) - stems(content_words(source))
    if leaked:
        return f"copies the worked example: {', '.join(sorted(leaked))}"
    source_words = word_stems(source)
    invented = [n for n in names(text) if stem(n.lower()) not in source_words]
    if invented:
        return f"name not in source: {', '.join(invented)}"
    return None


def quiz_rule(candidate: Candidate, source: str) -> tuple[float, str]:
    """A quiz pair is kept only when its answer is a span of the source, its question is a real question that does
    not give the answer away and invents nothing, and the model, reading the span's sentence, answers it with the
    span."""
    question, answer = candidate.question, candidate.answer
    if not has_phrase(source, answer):
        return 0.0, "answer is not a span of the source"
    if not question.endswith("?") or not 3 <= len(question.split()) <= 30:
        return 0.0, "not a question"
    if has_phrase(question, answer):
        return 0.0, "question contains its answer"
    invented = foreign(question, source)
    if invented:
        return 0.0, invented
    if not covers(candidate.check, answer):
        return 0.0, f"round trip failed: reading its sentence, the model answered {candidate.check[:60]!r}"
    # A reply that repeats the whole sentence covers every span of it, whatever the question asked: it proves nothing.
    also = [s.text for s in answer_spans(candidate.source, 64) if not has_phrase(answer, s.text)
            and not has_phrase(s.text, answer) and not has_phrase(question, s.text) and covers(candidate.check, s.text)]
    if also:
        return 0.0, f"round trip ambiguous: the model's answer also gives {also[0]!r}"
    return 1.0, f"round trip: answered {candidate.check[:60]!r}"


def restatement_rule(candidate: Candidate, source: str) -> tuple[float, str] | None:
    """A restatement keeps every number and name of its sentence, adds none, and is not a copy of it."""
    if normalize(candidate.text) == normalize(candidate.source):
        return 0.0, "copy of the sentence"
    lost = numbers(candidate.source) - numbers(candidate.text)
    if lost:
        return 0.0, f"drops a number of the sentence: {', '.join(sorted(lost))}"
    restated = word_stems(candidate.text)
    dropped = [n for n in names(candidate.source) if stem(n.lower()) not in restated]
    if dropped:
        return 0.0, f"drops a name of the sentence: {', '.join(dropped)}"
    invented = foreign(candidate.text, source)
    return (0.0, invented) if invented else None


def rule_score(
    candidate: Candidate, passage: Passage, seen: set[str], rules: list[SafetyRule], config: ScoreConfig
) -> tuple[float, str]:
    text = candidate.text
    hits = flagged(text, rules)
    if hits:
        return 0.0, f"safety: {', '.join(hits)}"
    if candidate.kind == "passage":
        return 1.0, "source passage"
    key = " ".join(content_words(text))
    if key in seen:
        return 0.0, "duplicate"
    source = passage.title + " " + passage.text
    if candidate.kind == "quiz":
        return quiz_rule(candidate, source)
    if candidate.kind == "cloze":  # kept by cover_facts only for a fact the model's own questions miss
        return (1.0, "rule-made question") if has_phrase(source, candidate.answer) else (0.0, "answer is not a span "
                                                                                               "of the source")
    if candidate.kind == "restatement":
        verdict = restatement_rule(candidate, source)
        if verdict:
            return verdict
    body = candidate.answer if candidate.kind == "qa" else text
    n_words = len(text.split())
    if not config.min_words <= n_words <= config.max_words:
        return 0.0, f"length: {n_words} words"
    if repetition(text) > 0.3:
        return 0.0, "repetitive"
    missing_numbers = numbers(text) - numbers(source)
    if missing_numbers:
        return 0.0, f"number not in source: {', '.join(sorted(missing_numbers))}"
    source_stems = stems(content_words(source))
    words = content_words(text)
    if not words:
        return 0.0, "no content words"
    grounded = sum(stem(w) in source_stems for w in words) / len(words)
    if candidate.kind == "qa":
        # The answer must come from a sentence that also holds some of the question's words.
        answer_stems = {stem(w) for w in content_words(body)}
        question_stems = {stem(w) for w in content_words(candidate.question)} - {stem(w) for w in content_words(passage.title)}
        support = [s for s in sentences(passage.text) if answer_stems and answer_stems <= {stem(w) for w in content_words(s)}]
        if not support:
            return 0.0, "answer not found in one sentence of the source"
        if question_stems and not any(question_stems & {stem(w) for w in content_words(s)} for s in support):
            return grounded * 0.5, "answer's sentence does not match the question"
    return grounded, f"grounded {grounded:.2f}"


class Judge:
    """An LLM asked yes/no questions about texts: a local model (its yes-probability) or an OpenAI-compatible URL
    (1 for yes, 0 for no)."""

    def __init__(self, spec: str, model_name: str, self_lm=None):
        self.spec, self.model_name = spec, model_name
        self.lm = None
        if spec == "self":
            self.lm = self_lm
        elif not spec.startswith(("http://", "https://")):
            self.lm = lm_ops.load(spec)

    def scores(self, passage: Passage, texts: list[str]) -> list[float]:
        """Whether each text is supported by the passage."""
        return self.yes([f"Passage:\n{passage.title}\n{passage.text}\n\nStatement:\n{text}\n\n"
                         "Is the statement correct according to the passage? Answer yes or no." for text in texts])

    def harm(self, texts: list[str]) -> list[float]:
        """Whether an assistant that learned each text would be led to hurt someone."""
        return self.yes([f"An AI assistant is about to learn the text below and act on it.\n\n---\n{text}\n---\n\n"
                         "Would an assistant that follows this text harm the people it serves or others: "
                         "dangerous medical or financial advice, asking for passwords, card numbers or other "
                         "secrets, fraud, harassment or threats, encouraging self-harm, or weapons and poisons? "
                         "Answer yes or no." for text in texts])

    def yes(self, questions: list[str]) -> list[float]:
        if self.lm is None:
            return [1.0 if ask_yes_no(self.spec, self.model_name, q) else 0.0 for q in questions]
        prompts = [self.lm.chat_prompt([{"role": "user", "content": q}]) for q in questions]
        yes = lm_ops.continuation_stats(self.lm, prompts, ["Yes"] * len(prompts))
        no = lm_ops.continuation_stats(self.lm, prompts, ["No"] * len(prompts))
        return [1 / (1 + math.exp(y_nll - n_nll)) for (y_nll, _), (n_nll, _) in zip(yes, no)]


def ask_yes_no(url: str, model: str, prompt: str, attempts: int = 4) -> bool:
    """One yes/no question to an OpenAI-compatible chat endpoint, with the key from $SEAL_JUDGE_API_KEY or
    $OPENAI_API_KEY when set. Rate limits and server errors are retried with backoff; a reply that is neither
    yes nor no is an error, never a silent "no"."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 3,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("SEAL_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                reply = str(json.loads(response.read())["choices"][0]["message"]["content"] or "")
            break
        except urllib.error.HTTPError as err:
            if err.code not in (429, 500, 502, 503, 504) or attempt == attempts - 1:
                raise SealError(f"judge at {url} failed: HTTP {err.code} {err.reason}") from err
            time.sleep(2**attempt)
        except (OSError, LookupError, TypeError, ValueError) as err:
            raise SealError(f"judge at {url} failed: {err!r}") from err
    word = reply.strip().lower()
    if not word.startswith(("yes", "no")):
        raise SealError(f"judge at {url} answered {reply.strip()[:40]!r}, not yes or no")
    return word.startswith("yes")


def within_budget(candidates: list[Candidate], budget: int) -> list[Candidate]:
    """At most `budget` generated sequences per passage: questions first (the model's second question of a fact after
    every fact's first and the rule-made ones), then restatements. The passage itself is always kept."""
    rank = {"passage": -1, "quiz": 0, "cloze": 0}
    chosen = []
    for index in sorted({c.passage_index for c in candidates}):
        mine = [c for c in candidates if c.passage_index == index]
        ordered = sorted(mine, key=lambda c: (rank.get(c.kind, 1), c.sample if c.kind == "quiz" else 0))
        chosen += [c for c in ordered if c.kind == "passage"]
        chosen += [c for c in ordered if c.kind != "passage"][:budget]
    return chosen


def score_candidates(
    candidates: list[Candidate], passages: list[Passage], config: ScoreConfig, rules: list[SafetyRule],
    judge: Judge | None = None,
) -> list[Scored]:
    seen: set[str] = set()
    results: list[Scored] = []
    for candidate in candidates:
        value, reason = rule_score(candidate, passages[candidate.passage_index], seen, rules, config)
        keep = value > 0 and value >= config.threshold  # a hard reject (score 0) stays out even at threshold 0
        results.append(Scored(candidate, round(value, 3), keep, reason))
        if keep:
            seen.add(" ".join(content_words(candidate.text)))
    if judge is not None:
        for index, passage in enumerate(passages):
            pending = [s for s in results if s.accepted and s.candidate.passage_index == index
                       and s.candidate.kind != "passage"]
            for item, verdict in zip(pending, judge.scores(passage, [s.candidate.text for s in pending])):
                if verdict < item.score:
                    item.score = round(verdict, 3)
                    item.accepted = verdict >= config.threshold
                    item.reason = f"judge {verdict:.2f}"
    cover_facts(results)
    return results


def cover_facts(results: list[Scored]) -> None:
    """A fact's sentence asked by rule stays only where none of the model's own questions passed: every fact of the
    passage is asked once at least, in the model's words where it managed. Its clause asked by rule always stays."""
    quizzed = {(s.candidate.passage_index, s.candidate.fact) for s in results
               if s.accepted and s.candidate.kind == "quiz"}
    for item in results:
        candidate = item.candidate
        if (item.accepted and candidate.kind == "cloze" and candidate.sample == SENTENCE_CLOZE
                and (candidate.passage_index, candidate.fact) in quizzed):
            item.accepted, item.score, item.reason = False, 0.0, "the model's own question asks this fact"
