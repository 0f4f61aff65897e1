"""Stage 5: the checks that gate an update. Each has a threshold; any failure rolls the update back.

- knowledge: probes about the new document must be answered better (lower answer NLL) than before;
- locality: on unrelated prompts the adapted model must still predict what the base model predicted
  (teacher-forced token agreement, EasyEdit-style);
- retention: the probes of earlier versions must still pass (nothing learned before is forgotten);
- safety: the adapted model must not answer more red-team prompts unsafely (a reply the safety rules flag, or one
  that does not refuse) than the base model did, beyond what chance explains (a sign test over 120 prompts, so one
  noisy reply cannot fail an update);
- sanity: plain requests must not get empty, looping or refusing replies more often than from the base model (the
  same test over 40 requests: an update that teaches refusing everything fails here).

Before any training, `contradicted_claims` compares the document with what the current version confidently says.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seal import model as lm_ops
from seal.config import GateConfig
from seal.documents import Passage, packaged, sentences
from seal.errors import SealError
from seal.generate import Candidate
from seal.grading import sign_test
from seal.model import LM
from seal.prompts import answer_messages
from seal.score import REFUSAL, SafetyRule, flagged, refuses, repetition
from seal.spans import NUMBER_WORDS, Span, answer_spans, lead_question
from seal.text import covers, has_phrase, normalize


@dataclass
class Probe:
    prompt: str  # the exact model input
    answer: str  # the continuation whose likelihood is measured
    label: str  # what a person reads: the question, or the cloze sentence
    question: bool = False  # the updated model must answer it (held-out quiz pairs), not only make it likelier


@dataclass
class CheckResult:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: dict = field(default_factory=dict)


@dataclass
class GateReport:
    passed: bool
    checks: list[CheckResult]

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        return "; ".join(f"{c.name} check failed ({c.value:.3g} vs threshold {c.threshold:.3g})" for c in failed)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class Battery:
    """The fixed prompts every update is checked on."""

    locality: list[str]  # unrelated text openings, continued as the base model continued them
    red_team: list[str]  # harmful requests, in data/red_team.json plus the user's
    sanity: list[str]  # plain requests that must get a non-empty, non-looping reply that does not refuse


def load_battery(red_team: Path | None = None) -> Battery:
    """The packaged batteries, plus the user's red-team prompts (a JSON list of {"prompt", "category"}) when given."""
    fixed, prompts = packaged("batteries.json"), packaged("red_team.json")
    if red_team is not None:
        try:
            extra = json.loads(Path(red_team).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SealError(f"cannot read red-team prompts {red_team}: {err}") from err
        if not isinstance(extra, list) or not all(isinstance(e, dict) and isinstance(e.get("prompt"), str)
                                                  and e["prompt"].strip() for e in extra):
            raise SealError(f"red-team prompts {red_team} must be a JSON list of {{prompt, category}}")
        prompts += extra
    return Battery(fixed["locality"], [p["prompt"] for p in prompts], fixed["sanity"])


def reference_key(battery: Battery, rules: list[SafetyRule], config: GateConfig) -> str:
    """What the base model's reference answers depend on: they are recomputed when any of it changes."""
    parts = [battery.locality, battery.red_team, battery.sanity, [r.pattern.pattern for r in rules],
             REFUSAL.pattern, config.generation_tokens, config.sanity_max_repetition]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def cloze_probes(passages: list[Passage], per_passage: int) -> list[Probe]:
    """Probes derived from the document: the title and the start of a sentence, then its second half."""
    probes: list[Probe] = []
    for passage in passages:
        chosen = [s for s in sentences(passage.text) if len(s.split()) >= 6]
        # Spread the picks over the passage rather than taking only its opening.
        step = max(1, len(chosen) // per_passage)
        for sentence in chosen[::step][:per_passage]:
            words = sentence.split()
            cut = max(3, len(words) // 2)
            probes.append(Probe(f"{passage.title}\n{' '.join(words[:cut])}", " " + " ".join(words[cut:]), sentence))
    return probes


@dataclass
class Contradiction:
    sentence: str  # the document's sentence
    claim: str  # what the document states there
    expected: str  # what the model says instead
    confidence: float  # the model's probability of its own choice where the two part
    asked: str = ""  # the question the model answered, or empty where it read the sentence on


EXPECTED = re.compile(r"[\w'-]+(?: [A-Z][\w'-]*)*")  # a word, or a name of several capitalised words


def _rival(span: Span, shared: str, own: str, document: str) -> bool:
    """Whether the model's token `own`, where the document has `document` after `shared` tokens of the claim, begins
    another thing of the claim's kind: another name, year or count, not another wording of the same one ("Bible"
    for "Holy Bible") or a word that goes on differently ("Serbian inventor" for "Serbian American")."""
    word = own.strip()
    if not word or word.lower() in normalize(span.text).split():
        return False
    if word.isdigit() and document.strip().isdigit():  # inside a number: only once its first two digits agree
        return sum(ch.isdigit() for ch in shared) >= 2
    if not own.startswith(" "):  # a different spelling of the same word, more often than another thing
        return False
    if not shared and NUMBER_WORDS.fullmatch(word):
        return span.kind == "quantity"
    return span.kind in ("name", "date") and word.isalpha() and word[0].isupper()


@dataclass(frozen=True)
class _Reading:
    """A claim as the model meets it: its sentence read up to it, or the question its clause asks."""

    span: Span  # the claim, in its sentence
    prompt: str  # what the model reads, ending where the claim would follow
    lead: str  # the document's words just before the claim (the whole prompt when reading on)
    asked: str  # the question, or empty


def _readings(lm: LM, passages: list[Passage], config: GateConfig) -> list[_Reading]:
    """Every mention of every claim (names, dates, counts) read both ways: the sentence up to it, as text to go on
    with, and asked as a question whose answer the reply begins by restating. A small model often knows a fact
    only asked ("The capital of Italy is which?": Rome) and goes on from a bare prefix with a word like "the"."""
    readings = []
    for passage in passages:
        in_order = sentences(passage.text)
        for claim in answer_spans(passage.text, limit=1000):
            mention = re.compile(rf"(?<!\w){re.escape(claim.text)}(?!\w)")
            for sentence in in_order:  # every mention: the first may open its sentence
                for at in mention.finditer(sentence):
                    span = Span(claim.text, sentence, claim.kind)
                    prefix = sentence[: at.start()].rstrip()
                    if len(prefix.split()) >= config.contradiction_min_words:
                        readings.append(_Reading(span, prefix, prefix, ""))
                    question, lead = lead_question(span, at.start())
                    if len(lead.split()) >= config.contradiction_min_words_asked:
                        readings.append(_Reading(span, lm.chat_prompt(answer_messages(question)) + lead, lead,
                                                 question))
    return readings


def contradicted_claims(lm: LM, passages: list[Passage], config: GateConfig) -> list[Contradiction]:
    """Claims of the passages (names, dates, counts) that the model, reading each sentence up to the claim or asked
    what its clause asks, confidently says otherwise: a false "correction" of what it knows, or a document that
    contradicts an earlier one it learned. A small model is sure of few facts, so this catches only what it does
    know well. One contradiction a claim and sentence: the more confident reading."""
    readings = _readings(lm, passages, config)
    if not readings:
        return []
    tok = lm.tokenizer
    order = sorted(range(len(readings)), key=lambda k: len(readings[k].prompt))  # like lengths batched pad less
    ranked = lm_ops.continuation_choices(lm, [readings[k].prompt for k in order],
                                         [" " + readings[k].span.text for k in order], share_prefix=True)
    choices = [tokens for _, tokens in sorted(zip(order, ranked), key=lambda pair: pair[0])]
    found: dict[tuple[str, str], Contradiction] = {}
    for reading, tokens in zip(readings, choices):
        part = next((k for k, c in enumerate(tokens) if c.top != c.token), None)
        if part is None:
            continue
        choice = tokens[part]
        shared = tok.decode([c.token for c in tokens[:part]])
        own, document = tok.decode([choice.top]), tok.decode([choice.token])
        if own.strip().isdigit():
            needed = config.contradiction_min_confidence_digit
        else:
            needed = config.contradiction_min_confidence_asked if reading.asked else config.contradiction_min_confidence
        key = (reading.span.sentence, reading.span.text)
        if (choice.top_probability >= needed
                and choice.probability * config.contradiction_min_ratio <= choice.top_probability
                and _rival(reading.span, shared, own, document)
                and (key not in found or found[key].confidence < choice.top_probability)):
            # The model's own words there: its choice, then a few greedy tokens to finish the name or number.
            rest = lm_ops.generate_tokens(lm, [reading.prompt + shared + own], max_new_tokens=4)[0]
            match = EXPECTED.match((shared + own + tok.decode(rest)).strip())
            said = match.group(0) if match else own.strip()
            if has_phrase(reading.lead, said):  # it repeats what it has just read ("1603" after "1589, 1603,")
                continue
            found[key] = Contradiction(reading.span.sentence, reading.span.text, said,
                                       round(choice.top_probability, 3), reading.asked)
    return list(found.values())


def read_probe_file(path: Path) -> list[tuple[str, str]]:
    """User probes: a JSON list of {question, answer}."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
        pairs = [(str(item["question"]).strip(), str(item["answer"]).strip()) for item in items]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SealError(f"cannot read probe file {path}: expected a JSON list of {{question, answer}} ({err})") from err
    if not pairs or not all(q and a for q, a in pairs):
        raise SealError(f"probe file {path} has no probes or an empty question/answer")
    return pairs


def qa_probes(pairs: list[tuple[str, str]], lm: LM, must_answer: bool) -> list[Probe]:
    """Questions asked exactly as `seal ask` asks them; with `must_answer` the reply is graded, otherwise the
    answer's likelihood must rise."""
    return [Probe(lm.chat_prompt(answer_messages(q)), " " + a, q, question=must_answer) for q, a in pairs]


def hold_out(pairs: list[Candidate], per_passage: int) -> list[Candidate]:
    """Kept quiz pairs to hold out of training as probes: a second wording of a fact whose first is trained (unless
    a tiny --budget cuts it), so the probe asks what was learned in words that were not. At most `per_passage` per
    passage."""
    chosen: list[Candidate] = []
    by_fact: dict[tuple[int, int], list[Candidate]] = {}
    for pair in pairs:
        by_fact.setdefault((pair.passage_index, pair.fact), []).append(pair)
    for (passage, _), wordings in sorted(by_fact.items()):
        if len(wordings) > 1 and sum(c.passage_index == passage for c in chosen) < per_passage:
            chosen.append(wordings[-1])
    return chosen


def probe_replies(lm: LM, probes: list[Probe], max_new_tokens: int = 32) -> list[str]:
    """Closed-book replies to the question probes, "" for the others (cloze probes are only measured by likelihood)."""
    questions = [p.prompt for p in probes if p.question]
    replies = iter(lm_ops.generate(lm, questions, max_new_tokens, batch_size=16) if questions else [])
    return [next(replies) if p.question else "" for p in probes]


def answer_nlls(lm: LM, probes: list[Probe]) -> list[float]:
    return [nll for nll, _ in lm_ops.continuation_stats(lm, [p.prompt for p in probes], [p.answer for p in probes])]


def base_reference(lm: LM, battery: Battery, rules: list[SafetyRule], config: GateConfig) -> dict:
    """What the base model does on the batteries: computed once per store (and again when the battery, the rules
    or the reply length change), with any adapter switched off.

    Locality keeps the base model's own token ids, so that its agreement with itself is exactly 1.
    """
    adapter_off = lm.model.disable_adapter() if hasattr(lm.model, "disable_adapter") else nullcontext()
    with adapter_off:
        locality = lm_ops.generate_tokens(lm, battery.locality, max_new_tokens=config.generation_tokens)
        outcomes, _ = _battery_replies(lm, battery, rules, config)
    return {"key": reference_key(battery, rules, config), "locality": locality, **outcomes}


def _battery_replies(lm: LM, battery: Battery, rules: list[SafetyRule],
                     config: GateConfig) -> tuple[dict[str, dict[str, list[int]]], list[str]]:
    """Red-team and sanity prompts in one generation batch. Returns, by prompt index, the red-team replies flagged by
    the rules and those that comply (do not refuse), the sanity replies that are degenerate (empty or looping) and
    those that refuse; and the sanity replies."""
    asked = battery.red_team + battery.sanity
    prompts = [lm.chat_prompt([{"role": "user", "content": p}]) for p in asked]
    replies = lm_ops.generate(lm, prompts, max_new_tokens=config.generation_tokens, batch_size=len(prompts))
    red, plain = replies[: len(battery.red_team)], replies[len(battery.red_team) :]
    degenerate = lambda reply: not reply.strip() or repetition(reply) > config.sanity_max_repetition  # noqa: E731
    return {"red_team": {"flagged": [i for i, r in enumerate(red) if flagged(r, rules)],
                         "complied": [i for i, r in enumerate(red) if not refuses(r)]},
            "sanity": {"degenerate": [i for i, r in enumerate(plain) if degenerate(r)],
                       "refused": [i for i, r in enumerate(plain) if refuses(r)]}}, plain


def _changed(before: dict[str, list[int]], after: dict[str, list[int]], prompts: list[str], config: GateConfig,
             name: str) -> CheckResult:
    """A check over a battery: prompts with any bad outcome after but not before, against the reverse."""
    bad = lambda outcomes: set().union(*map(set, outcomes.values()))  # noqa: E731
    newly, cleared = sorted(bad(after) - bad(before)), sorted(bad(before) - bad(after))
    chance = sign_test(len(newly), len(cleared))
    counts = {f"{outcome}_{when}": len(ids) for when, outcomes in (("before", before), ("after", after))
              for outcome, ids in outcomes.items()}
    return CheckResult(name, chance >= config.min_chance, chance, config.min_chance,
                       {"prompts": len(prompts), **counts, "newly_bad": [prompts[i] for i in newly],
                        "no_longer_bad": [prompts[i] for i in cleared]})


def run_gate(
    lm: LM, probes: list[Probe], nll_before: list[float], earlier: list[tuple[Probe, float]], battery: Battery,
    reference: dict, rules: list[SafetyRule], config: GateConfig, whole: LM | None = None,
) -> tuple[GateReport, list[float], list[str]]:
    """Run every check on the updated model; returns the report, and the new probes' NLL and replies after the update
    (replies to question probes only). `whole` is the whole new version when `lm` is its new module alone: earlier
    versions' probes ask it."""
    checks: list[CheckResult] = []

    nll_after = answer_nlls(lm, probes)
    detail = {"probes": len(probes), "mean_nll_before": mean(nll_before), "mean_nll_after": mean(nll_after)}
    # Questions must be answered (graded replies, closed-book), not only made likelier; cloze probes, where a
    # passage has no questions, must become likelier. The check's value is the questions' share when there are any.
    questions = [p for p in probes if p.question]
    probe_answers = probe_replies(lm, probes, config.generation_tokens)
    right = [covers(reply, p.answer) for p, reply in zip(probes, probe_answers) if p.question]
    improved = [after < before for p, before, after in zip(probes, nll_before, nll_after) if not p.question]
    answered_share = sum(right) / len(right) if right else None
    improved_share = sum(improved) / len(improved) if improved else None
    passed = ((answered_share is None or answered_share >= config.knowledge_min_answered)
              and (improved_share is None or improved_share >= config.knowledge_min_improved)
              and bool(probes))
    if answered_share is not None:
        detail |= {"answered": [p.label for p, r in zip(questions, right) if r],
                   "not_answered": [p.label for p, r in zip(questions, right) if not r]}
    if answered_share is not None and improved_share is not None:
        detail["cloze_improved_share"] = improved_share
    checks.append(CheckResult("knowledge", passed, answered_share if answered_share is not None else improved_share or 0.0,
                              config.knowledge_min_answered if answered_share is not None
                              else config.knowledge_min_improved, detail))

    if earlier:
        now = answer_nlls(whole or lm, [p for p, _ in earlier])
        kept = [after < before for (_, before), after in zip(earlier, now)]
        value = sum(kept) / len(kept)
        checks.append(CheckResult("retention", value >= config.retention_min_kept, value, config.retention_min_kept,
                                  {"earlier_probes": len(kept), "forgotten": [p.label for (p, _), k in
                                                                               zip(earlier, kept) if not k][:10]}))

    stats = lm_ops.continuation_stats(lm, battery.locality, reference["locality"])
    agreement = mean([agree for _, agree in stats])
    checks.append(CheckResult("locality", agreement >= config.locality_min_agreement, agreement,
                              config.locality_min_agreement, {"prompts": len(stats)}))

    outcomes, replies = _battery_replies(lm, battery, rules, config)
    checks.append(_changed(reference["red_team"], outcomes["red_team"], battery.red_team, config, "safety"))
    sanity = _changed(reference["sanity"], outcomes["sanity"], battery.sanity, config, "sanity")
    sanity.detail["replies"] = replies
    checks.append(sanity)
    return GateReport(all(c.passed for c in checks), checks), nll_after, probe_answers


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0
