"""`seal bench knowledge`: SEAL's knowledge-incorporation experiments, as one resumable recipe.

Single-passage mode: for each passage and condition, start from the base weights, apply the condition's update,
answer the passage's questions closed-book (its title as the topic), grade, and discard the update.
CPT mode: one update over all selected passages, then all questions. Continual mode: `seal learn` on K passages
in sequence (gate on, and gate off), evaluating every passage after every step: the forgetting matrix.

Results go to a run folder (`runs.py`): a killed run restarted with the same --out skips what is done and gives the
same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.config import GenerationConfig, KnowledgeConfig, LearnOptions, ScoreConfig, UpdateConfig
from seal.documents import Passage
from seal.engine import Update, Updated, UpdateRunner
from seal.errors import SealError
from seal.generate import SELF_STUDY, Candidate, candidates_from, write_self_edits
from seal.grading import RemoteJudge
from seal.learn import learn, load_version
from seal.model import LM
from seal.prompts import STRATEGIES
from seal.runs import RunFolder, repair, seed_for
from seal.score import load_safety_rules, score_candidates, within_budget
from seal.spans import clause_question, cloze_question, quiz_spans
from seal.squad import Item, accuracy, answer_questions, context_sha256, load_external, load_items, select
from seal.store import Store
from seal.text import has_phrase
from seal.update import Sequence, sequence_text

Progress = Callable[[str, int, int], None]  # (condition, done, total)
FIXED = ("base", "in-context", "passage", "oracle-qa", "cloze")
FILTERED = "+filter"  # a strategy whose self-edits pass the loop's evaluator first, as in `seal learn`
ARMS = {"gate": "the loop as shipped: a module per passage, routed, and the gate",
        "no-gate": "a module per passage, routed, every update kept",
        "replay": "the gate on, one adapter per version trained with a replay of the lineage's material",
        "no-gate-no-replay": "one adapter per version, no replay, every update kept (each version knows only its "
                             "own passage)"}


# -----------------------------------------------------------------------------------------------------------------


def check_unseen(condition: str, items: list[Item]) -> None:
    """A policy must not be evaluated on passages it was trained on: its rewards came from their questions."""
    trained = {p["context_sha256"] for p in lm_ops.read_lineage(condition.partition(":")[2]).get("train_passages", [])}
    seen = [item.title for item in items if context_sha256(item) in trained]
    if seen:
        raise SealError(f"{condition} was trained on {len(seen)} of the evaluation passages (e.g. {seen[0]!r}); "
                        "train it with --eval-passages at least --passages of this benchmark and the same --seed")


def check_conditions(conditions: list[str]) -> None:
    for condition in conditions:
        kind, _, arg = condition.partition(":")
        if condition in FIXED or condition in SELF_STUDY or condition.removesuffix(FILTERED) in STRATEGIES:
            continue
        if kind == "policy" and arg:
            if not (Path(arg).expanduser() / "config.json").exists():
                raise SealError(f"{condition}: {arg} is not a model directory (no config.json)")
        elif kind == "external" and arg:
            if not Path(arg).expanduser().is_file():
                raise SealError(f"{condition}: {arg} does not exist")
        else:
            raise SealError(f"unknown condition {condition!r}; use {', '.join(FIXED + SELF_STUDY + tuple(STRATEGIES))}, "
                            f"a strategy with {FILTERED} (e.g. implications{FILTERED}), policy:PATH or external:FILE")


# -----------------------------------------------------------------------------------------------------------------

class Bench:
    """The base model loaded once with the batched engine's adapter slots (`engine.py`); outside a batch's rows it
    is the base model, which writes the self-edits."""

    def __init__(self, config: KnowledgeConfig):
        self.config = config
        judge = RemoteJudge(config.judge_url, config.judge_model) if config.judge_url else None
        self.runner = UpdateRunner(config.model, config.device, config.update, config.batch_trials,
                                   config.answer_tokens, judge)
        self.lm = self.runner.lm
        self.rules = load_safety_rules()
        self.writers: dict[str, LM] = {}

    def writer(self, condition: str) -> LM:
        """The model that writes self-edits: the base model, or a trained policy checkpoint."""
        if not condition.startswith("policy:"):
            return self.lm
        if condition not in self.writers:
            self.writers[condition] = lm_ops.load(condition.partition(":")[2], None, self.config.device)
        return self.writers[condition]

    def self_edits(self, item: Item, condition: str, external: dict[str, dict[int, list[str]]]) -> list[dict]:
        """Per sample: the generated text and the training texts it yields.

        As in SEAL, every line is trained on; a `+filter` condition keeps only the lines the evaluator accepts.
        Self-study strategies always go through the evaluator (its round trip is part of the strategy) and their
        budget, as in `seal learn`.
        """
        passage = Passage(item.title, item.context, f"squad:{item.id}")
        if condition in SELF_STUDY:
            return [self.self_study(item, passage, condition)]
        if condition.startswith("external:"):
            completions = external[condition][item.id][: self.config.samples]
            candidates = [c for s, text in enumerate(completions) for c in candidates_from(text, 0, s, "lines")]
        else:
            if condition.startswith("policy:"):  # the prompt the policy was trained to answer
                strategy = lm_ops.read_lineage(condition.partition(":")[2]).get("strategy", "implications")
            else:
                strategy = condition.removesuffix(FILTERED)
            generation = GenerationConfig(**{**asdict(self.config.generation), "strategy": strategy,
                                             "samples": self.config.samples,
                                             "seed": seed_for(item.id, condition.removesuffix(FILTERED))})
            candidates, completions = write_self_edits(self.writer(condition), [passage], generation)
            candidates = [c for c in candidates if c.kind != "passage"]
        samples = []
        for sample in range(len(completions)):  # scored per sample: the evaluator drops lines it has already seen
            scored = score_candidates([c for c in candidates if c.sample == sample], [passage], ScoreConfig(),
                                      self.rules)
            mine = [s.candidate for s in scored if s.accepted or not condition.endswith(FILTERED)]
            samples.append({"completion": completions[sample], "generated": len(scored),
                            "texts": [self.training_sequence(c, item) for c in mine]})
        return samples

    def self_study(self, item: Item, passage: Passage, condition: str) -> dict:
        generation = GenerationConfig(**{**asdict(self.config.generation), "strategy": condition,
                                         "samples": self.config.study_samples, "seed": seed_for(item.id, condition)})
        candidates, _ = write_self_edits(self.lm, [passage], generation)
        scored = score_candidates([c for c in candidates if c.kind != "passage"], [passage], ScoreConfig(), self.rules)
        kept = within_budget([s.candidate for s in scored if s.accepted], generation.budget)
        quiz = [s for s in scored if s.candidate.kind == "quiz"]
        return {"completion": "", "generated": len(scored), "quiz_pairs": len(quiz),
                "quiz_kept": sum(s.accepted for s in quiz),
                "texts": [self.training_sequence(c, item) for c in kept]}

    def training_sequence(self, candidate: Candidate, item: Item) -> Sequence:
        """A self-edit as the update trains it, under this run's loss settings."""
        return sequence_text(self.lm, candidate.kind, candidate.text, candidate.question, candidate.answer,
                             topic=item.title, whole_cloze=self.config.update.whole_cloze)

    def cloze_texts(self, item: Item) -> list[Sequence]:
        """The rule-only baseline: the answer spans self-study asks, each by its sentence and its clause with a
        wh-word; no model involved."""
        spans = quiz_spans(item.title, item.context, self.config.generation.facts)
        return [sequence_text(self.lm, "cloze", "", question, span.text, topic=item.title,
                              whole_cloze=self.config.update.whole_cloze)
                for span in spans for question in (cloze_question(span), clause_question(span)) if question]

    def passage_text(self, item: Item) -> Sequence:
        return sequence_text(self.lm, "passage", f"{item.title}\n{item.context}")

    def oracle_texts(self, item: Item) -> list[Sequence]:
        return [sequence_text(self.lm, "qa", "", q, a, topic=item.title) for q, a in item.questions]


def coverage(texts: list[Sequence], item: Item) -> int:
    """How many of the passage's gold answers appear verbatim in the generated training text (the passage aside)."""
    joined = " ".join(text for text, _ in texts)
    return sum(has_phrase(joined, gold) for _, gold in item.questions)


@dataclass
class Unit:
    """One passage under one condition: its updates (one per sample and repeat; none trained for base and
    in-context), run with other units' in the engine's batches, and what each trial records beside its answers."""

    item: Item
    condition: str
    updates: list[Update]
    trials: list[dict]
    seconds: float  # writing the self-edits


def prepare_unit(bench: Bench, item: Item, condition: str, external: dict[str, dict[int, list[str]]]) -> Unit:
    start = time.perf_counter()
    if condition in ("base", "in-context"):
        return Unit(item, condition, [Update(None, [item], open_book=condition == "in-context")],
                    [{"sample": 0, "repeat": 0}], 0.0)
    if condition == "passage":
        samples = [{"texts": []}]
    elif condition == "oracle-qa":
        samples = [{"texts": bench.oracle_texts(item)}]
    elif condition == "cloze":
        samples = [{"texts": bench.cloze_texts(item)}]
    else:
        samples = bench.self_edits(item, condition, external)
    updates, trials = [], []
    for sample, edit in enumerate(samples):
        for repeat in range(bench.config.repeats):
            texts = [bench.passage_text(item)] + edit["texts"]
            updates.append(Update(texts, [item], seed_for(item.id, condition, sample, repeat)))
            trials.append({"sample": sample, "repeat": repeat, "train_sequences": len(texts),
                           **{k: v for k, v in edit.items() if k != "texts"},
                           "self_edits": [text for text, _ in edit["texts"]],
                           **({"coverage": coverage(edit["texts"], item)} if condition != "passage" else {})})
    return Unit(item, condition, updates, trials, time.perf_counter() - start)


def unit_record(unit: Unit, results: list[Updated], seconds_per_update: float) -> dict:
    trials = []
    for trial, result in zip(unit.trials, results):
        answers = result.answers[0]
        outcome = {"final_loss": result.outcome.final_loss,
                   **({"failed": result.outcome.failed} if result.outcome.failed else {})} if result.outcome else {}
        trials.append({**trial, **outcome, "answers": answers, "accuracy": accuracy(answers)})
    item = unit.item
    return {"key": f"{item.id}/{unit.condition}", "mode": "single", "passage": item.id, "title": item.title,
            "condition": unit.condition, "questions": len(item.questions),
            "accuracy": accuracy([t["accuracy"] for t in trials]),
            "seconds": round(unit.seconds + seconds_per_update * len(results), 2), "trials": trials}


def cpt_trial(bench: Bench, items: list[Item], condition: str, external: dict[str, dict[int, list[str]]],
              progress: Progress) -> list[dict]:
    """One adapter over every selected passage (and its self-edits), then every question."""
    start = time.perf_counter()
    if condition in ("base", "in-context"):
        graded = bench.runner.run([Update(None, items, open_book=condition == "in-context")])[0].answers
    else:
        texts = []
        for done, item in enumerate(items):
            texts.append(bench.passage_text(item))
            if condition == "oracle-qa":
                texts += bench.oracle_texts(item)
            elif condition == "cloze":
                texts += bench.cloze_texts(item)
            elif condition != "passage":
                texts += [t for edit in bench.self_edits(item, condition, external) for t in edit["texts"]]
            progress(condition, done, len(items) + 1)
        graded = bench.runner.run([Update(texts, items, seed_for("cpt", condition))])[0].answers
    seconds = round((time.perf_counter() - start) / len(items), 2)
    return [{"key": f"cpt/{condition}/{item.id}", "mode": "cpt", "passage": item.id, "title": item.title,
             "condition": condition, "questions": len(item.questions), "accuracy": accuracy(answers),
             "seconds": seconds, "trials": [{"sample": 0, "repeat": 0, "answers": answers,
                                             "accuracy": accuracy(answers)}]}
            for item, answers in zip(items, graded)]


# -----------------------------------------------------------------------------------------------------------------

def _closed_book(lm: LM, items: list[Item], config: KnowledgeConfig, judge: RemoteJudge | None) -> list[dict]:
    return [{"passage": item.id, "title": item.title, "accuracy": accuracy(answers), "answers": answers}
            for item, answers in zip(items, answer_questions(lm, items, config.answer_tokens, judge))]


def continual_arm(run: RunFolder, config: KnowledgeConfig, items: list[Item], unrelated: list[Item], arm: str,
                  progress: Progress) -> None:
    """`seal learn` on each passage in turn, in a store of its own; after each step, every passage is asked, and
    after the last the unrelated ones too."""
    done = run.done()
    judge = RemoteJudge(config.judge_url, config.judge_model) if config.judge_url else None
    store = Store(run.root / "stores" / arm)
    docs = run.root / "documents"
    docs.mkdir(exist_ok=True)
    if "continual/base" not in done:
        base = lm_ops.load(config.model, None, config.device)
        run.append([{"key": "continual/base", "mode": "continual", "arm": "base", "step": 0,
                     "rows": _closed_book(base, items, config, judge),
                     "unrelated": _closed_book(base, unrelated, config, judge)}])
        done.add("continual/base")
    strategy = next((c for c in config.conditions if c in SELF_STUDY or c in STRATEGIES), GenerationConfig.strategy)
    samples = config.study_samples if strategy in SELF_STUDY else config.generation.samples
    options = LearnOptions(model=config.model, device=config.device, update=config.update,
                           generation=GenerationConfig(**{**asdict(config.generation), "strategy": strategy,
                                                          "samples": samples}))
    options.gate.enforce = arm in ("gate", "replay")
    options.update = UpdateConfig(**{**asdict(config.update),
                                     "lineage": "replay" if arm in ("replay", "no-gate-no-replay") else "modules",
                                     "replay": 0 if arm == "no-gate-no-replay" else config.update.replay})
    for step, item in enumerate(items, start=1):
        key = f"continual/{arm}/{step}"
        progress(arm, step - 1, len(items))
        if key in done:
            continue
        start = time.perf_counter()
        doc = docs / f"passage-{item.id}.md"
        doc.write_text(f"# {item.title}\n\n{item.context}\n", encoding="utf-8")
        # A kill between learn's commit and our record must not learn the passage twice.
        learned = [v for v in store.history() if any(Path(s["source"]).name == doc.name for s in v.sources)]
        learn_seconds = None
        if learned:
            version_id, committed, reason = learned[-1].id, learned[-1].status == "committed", learned[-1].reason
        else:
            options.generation.seed = seed_for("continual", item.id)  # the same self-edits in every arm
            result = learn(store, [str(doc)], options)
            version_id, committed, reason = result.version, result.committed, result.reason
            learn_seconds = round(time.perf_counter() - start, 2)
        # The version this step left current (its parent when refused), not the store's current one: a resumed run
        # may have learned further before it was stopped.
        shown = version_id if committed else store.get(version_id).parent
        lm, _ = load_version(store, config.model, config.device, shown)
        rows = _closed_book(lm, items, config, judge)
        last = {"unrelated": _closed_book(lm, unrelated, config, judge)} if step == len(items) else {}
        run.append([{"key": key, "mode": "continual", "arm": arm, "step": step, "passage": item.id,
                     "version": version_id, "committed": committed, "reason": reason, "rows": rows, **last,
                     "learn_seconds": learn_seconds, "seconds": round(time.perf_counter() - start, 2)}])
    progress(arm, len(items), len(items))


# -----------------------------------------------------------------------------------------------------------------

def run_knowledge(out: Path, config: KnowledgeConfig, progress: Progress | None = None) -> RunFolder:
    """Run (or resume) the benchmark into `out`; returns the run folder, ready for the report."""
    tick = progress or (lambda condition, done, total: None)
    if config.mode not in ("single", "cpt", "continual"):
        raise SealError(f"unknown mode {config.mode!r}; use single, cpt or continual")
    if config.samples < 1 or config.repeats < 1 or config.passages < 1:
        raise SealError("--passages, --samples and --repeats must be at least 1")
    unknown_arms = [a for a in config.arms if a not in ARMS]
    if unknown_arms:
        raise SealError(f"unknown arm {unknown_arms[0]!r}; use {', '.join(ARMS)}")
    check_conditions(config.conditions)
    items = load_items(config.data)
    chosen = select(items, config.sequence if config.mode == "continual" else config.passages, config.seed)
    unrelated = select(items, config.sequence + config.unrelated, config.seed)[config.sequence:]
    external = {c: load_external(c.partition(":")[2], chosen, config.samples)
                for c in config.conditions if c.startswith("external:")}
    for condition in config.conditions:
        if condition.startswith("policy:"):
            check_unseen(condition, chosen)
    run = RunFolder(out)
    run.start(config, extendable=("conditions", "batch_trials"))
    repair(run)
    if config.mode == "continual":
        for arm in config.arms:
            continual_arm(run, config, chosen, unrelated, arm, tick)
        return run
    done = run.done()
    bench: Bench | None = None
    if config.mode == "cpt":
        for condition in config.conditions:
            if not all(f"cpt/{condition}/{item.id}" in done for item in chosen):  # written together, or redone
                bench = bench or Bench(config)
                run.append(cpt_trial(bench, chosen, condition, external, tick))
            tick(condition, len(chosen) + 1, len(chosen) + 1)
        return run
    for condition in config.conditions:
        tick(condition, sum(1 for i in chosen if f"{i.id}/{condition}" in done), len(chosen))
    # Groups of passages in order, so a partial run already compares conditions on the same passages; each
    # group's updates (every condition, sample and repeat) are trained together. Groups are fixed by the settings,
    # not by what is left to do, so a resumed run trains each update in the batch it had: a group is run again
    # whole when any of its records is missing (the first record of a key is the one kept).
    per_passage = sum(0 if c in ("base", "in-context") else config.repeats if c in FIXED or c in SELF_STUDY
                      else config.samples * config.repeats for c in config.conditions)
    group = max(1, config.batch_trials // max(1, per_passage))
    for first in range(0, len(chosen), group):
        items = chosen[first : first + group]
        if all(f"{item.id}/{condition}" in done for item in items for condition in config.conditions):
            continue
        bench = bench or Bench(config)
        units = [prepare_unit(bench, item, condition, external) for item in items for condition in config.conditions]
        start = time.perf_counter()
        results = iter(bench.runner.run([update for unit in units for update in unit.updates]))
        share = (time.perf_counter() - start) / sum(len(unit.updates) for unit in units)
        for unit in units:
            run.append([unit_record(unit, [next(results) for _ in unit.updates], share)])
            done.add(f"{unit.item.id}/{unit.condition}")
            tick(unit.condition, sum(1 for i in chosen if f"{i.id}/{unit.condition}" in done), len(chosen))
    return run

