"""`seal train-policy --domain arc`: ReST-EM over recipes, as SEAL trains its ARC self-edits.

Each round the current writer samples recipes for every training task; each valid recipe runs as test-time training
on a fresh adapter over the base model and is rewarded 1 when the adapted model answers every test input exactly
(SEAL's reward), or with `reward="cells"` the share of answer cells it got right (partial credit, for a model that
seldom solves a task whole). An invalid recipe is rewarded 0 and never trained; one written again for the task takes
its first run's reward (with the task's one seed it trains the same adapter). The writer is fine-tuned on each task's
best recipes (every one that solved it; with cells, the nearest), whichever form of the answer its request shows, the
loss on the recipe only, and merged into the next round's writer. Every sampled task, reward and SFT step is a line
of trials.jsonl: a killed run resumes where it stopped. Use tasks that no benchmark evaluates on (SEAL trains on its
training subset and reports its evaluation subset)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seal import model as lm_ops
from seal.arc.recipes import EXAMPLE_RECIPES, FIRST_OBJECT, RECIPE_START, Recipe, parse_recipe
from seal.arc.solve import Attempt, cells_right, recipe_prompt, solve, task_engine, write_recipes
from seal.arc.tasks import Task, graded_tasks, load_tasks
from seal.config import EMBEDDED, ExecutorConfig, SFTConfig
from seal.errors import SealError
from seal.executors import batches, make_executor, start_worker
from seal.runs import RunFolder, repair, seed_for
from seal.sft import save_checkpoint, sft
from seal.store import now

Progress = Callable[[str, int, int], None]
DOMAIN = "arc"
REWARDS = ("exact", "cells")
SAMPLE_TEMPERATURE = 1.0


@dataclass
class ArcPolicyConfig:
    data: str  # ARC tasks to train on (SEAL's training subset)
    solutions: str | None = None
    samples: int = 4  # recipes per task and round
    rounds: int = 2
    seed: int = 0
    reward: str = "exact"  # exact: 1 when every test output is right (SEAL's); cells: the share of answer cells right
    model: str = EMBEDDED  # the base model TTT adapts, and the first writer
    device: str = "auto"
    domain: str = DOMAIN  # tells a resumed run folder from the knowledge domain's
    sft: SFTConfig = field(default_factory=SFTConfig)

    @classmethod
    def from_dict(cls, raw: dict) -> ArcPolicyConfig:
        try:
            return cls(**{**raw, "sft": SFTConfig(**raw["sft"])})
        except (TypeError, KeyError) as err:
            raise SealError(f"the run was written by another version of seal and cannot be resumed ({err}); "
                            "start a new run with --out") from err


def kept_recipes(completions: list[str], rewards: list[float]) -> list[str]:
    """A task's recipes the writer is fine-tuned on: those with the task's best reward, when it is above 0, each
    distinct one once (with the exact reward, every recipe that solved the task; with cells, the nearest)."""
    best = max(rewards, default=0.0)
    if best <= 0:
        return []
    return list(dict.fromkeys(text for text, reward in zip(completions, rewards) if reward == best))


def recipe_completion(text: str) -> str:
    """What the writer wrote after the begun reply, up to the end of its recipe (SFT teaches it to stop there)."""
    found = FIRST_OBJECT.search(text)
    return (text[: found.end()] if found else text)[len(RECIPE_START):]


def _sample(run: RunFolder, config: ArcPolicyConfig, round_: int, writer_path: str, tasks: list[Task],
            done: set[str]) -> None:
    todo = [t for t in tasks if f"sample/{round_}/{t.name}" not in done]
    if not todo:
        return
    writer = lm_ops.load(writer_path, device=config.device)
    for task in todo:
        written = write_recipes(writer, task, config.samples, SAMPLE_TEMPERATURE, seed_for("sample", round_, task.name))
        run.append([{"key": f"sample/{round_}/{task.name}", "round": round_, "task": task.name,
                     "texts": [w.text for w in written], "rejected": [w.rejected for w in written]}])


@dataclass
class RecipeTrial:
    key: str
    task: Task
    recipe: Recipe
    seed: int  # the task's one seed: every recipe for a task starts from the same adapter and data order
    round: int
    sample: int


class RecipeWorker:
    """The base model with `batch_trials` task adapter slots (an executor's worker): trains a batch of recipes in one
    pass and rewards each by what its adapter answers (`reward`: exact or cells)."""

    def __init__(self, model: str, device: str, batch_trials: int, reward: str, threads: int | None = None):
        self.name = start_worker(device, threads)
        self.engine = task_engine(lm_ops.load(model, device=device), batch_trials)
        self.reward = reward

    def run(self, trials: list[RecipeTrial]) -> list[dict]:
        records = []
        for trial, result in zip(trials, solve(self.engine, [Attempt(t.task, t.recipe, t.seed) for t in trials])):
            cells = round(cells_right([a.grid for a in result.answers], trial.task.solutions or []), 3)
            records.append({"key": trial.key, "round": trial.round, "task": trial.task.name, "sample": trial.sample,
                            "reward": cells if self.reward == "cells" else float(bool(result.solved)),
                            "solved": bool(result.solved), "cells_right": cells,
                            "predicted": [a.grid for a in result.answers], "seconds": result.seconds,
                            "worker": self.name, "batch": len(trials)})
        return records


def _rewards(run: RunFolder, config: ArcPolicyConfig, executor_config: ExecutorConfig, round_: int,
             tasks: list[Task], records: dict[str, dict], done: set[str], tick: Progress) -> None:
    """Every sample's reward: an invalid recipe 0, a recipe written again for its task its first run's, and each
    distinct one trained by the executor's workers, in batches formed from the whole round (so a resumed run trains
    each in the batch it had; a batch with any trial missing is run again whole, the first record of a key kept)."""
    keys = [f"trial/{round_}/{task.name}/{s}" for task in tasks for s in range(config.samples)]
    finished = sum(key in done for key in keys)

    def record(results: list[dict]) -> None:
        nonlocal finished
        new = [r for r in results if r["key"] not in done]
        run.append(new)
        records.update((r["key"], r) for r in new)
        done.update(r["key"] for r in new)
        finished += len(new)
        tick(f"rewards r{round_}", finished, len(keys))

    trials: list[RecipeTrial] = []
    others: list[dict] = []  # invalid recipes and repeats, recorded once the runs they copy are
    for task in tasks:
        drawn = records[f"sample/{round_}/{task.name}"]
        recipes = [None if rejected else parse_recipe(text) for text, rejected in zip(drawn["texts"],
                                                                                        drawn["rejected"])]
        for sample, recipe in enumerate(recipes[: config.samples]):
            key = f"trial/{round_}/{task.name}/{sample}"
            first = recipes.index(recipe)
            if recipe is not None and first == sample:
                trials.append(RecipeTrial(key, task, recipe, seed_for(config.seed, task.name), round_, sample))
                continue
            trial = {"key": key, "round": round_, "task": task.name, "sample": sample, "reward": 0.0, "solved": False,
                     "seconds": {}}
            # an invalid recipe earns nothing and is never trained; a repeat from the task's one seed trains the same
            # adapter as its first run, whose reward it takes
            others.append(trial if recipe is None else trial | {"same_as": first})
    todo = [batch for batch in batches(trials, executor_config.batch_trials) if any(t.key not in done for t in batch)]
    if todo:
        executor = make_executor(executor_config, RecipeWorker, (config.model, config.device,
                                                                 executor_config.batch_trials, config.reward),
                                 config.device)
        try:
            for results in executor.map(todo):
                record(results)
        finally:
            executor.close()
    for trial in others:
        if "same_as" in trial:
            copied = records[f"trial/{round_}/{trial['task']}/{trial['same_as']}"]
            trial |= {name: copied[name] for name in ("reward", "solved", "cells_right", "predicted") if name in copied}
        record([trial])


def run_arc_policy(out: Path, config: ArcPolicyConfig, executor_config: ExecutorConfig | None = None,
                   progress: Progress | None = None) -> dict:
    """Run (or resume) ReST-EM over recipes into `out`; returns the per-round statistics (also in stats.json)."""
    tick = progress or (lambda name, done, total: None)
    if min(config.samples, config.rounds) < 1:
        raise SealError("--samples and --rounds must be at least 1")
    if config.reward not in REWARDS:
        raise SealError(f"--reward {config.reward!r}: use {' or '.join(REWARDS)}")
    executor_config = executor_config or ExecutorConfig(batch_trials=1)
    tasks = graded_tasks(load_tasks(Path(config.data), Path(config.solutions) if config.solutions else None),
                         "reward against")
    lm_ops.deterministic(config.device)
    run = RunFolder(out)
    run.start(config, extendable=("rounds",))
    repair(run)
    writer_path = config.model
    for round_ in range(1, config.rounds + 1):
        checkpoint = out / f"round-{round_}"
        done = run.done()
        if f"sft/{round_}" in done and (checkpoint / "config.json").exists():
            writer_path = str(checkpoint)
            continue
        tick(f"sample r{round_}", 0, 1)
        _sample(run, config, round_, writer_path, tasks, done)
        tick(f"sample r{round_}", 1, 1)
        records = {r["key"]: r for r in run.records()}
        _rewards(run, config, executor_config, round_, tasks, records, run.done(), tick)
        records = {r["key"]: r for r in run.records()}
        writer = lm_ops.load(writer_path, device=config.device)
        kept = []
        for task in tasks:
            texts = records[f"sample/{round_}/{task.name}"]["texts"]
            rewards = [records[f"trial/{round_}/{task.name}/{s}"]["reward"] for s in range(config.samples)]
            completions = [recipe_completion(text) for text in texts[: config.samples]]
            kept += [(task, completion) for completion in kept_recipes(completions, rewards)]
        # whichever form the request shows, the writer is to answer with the task's best recipe
        pairs = [(recipe_prompt(writer, task, example), completion)
                 for task, completion in kept for example in range(len(EXAMPLE_RECIPES))]
        sft_config = SFTConfig(**{**asdict(config.sft), "seed": seed_for("sft", round_)})
        stats = sft(writer, pairs, sft_config) if pairs else None
        lineage = {"kind": "seal recipe policy", "domain": DOMAIN, "round": round_, "base_model": config.model,
                   "parent": writer_path, "examples": len(kept), "created_at": now(),
                   "train_tasks": [t.name for t in tasks], "config": asdict(config)}
        save_checkpoint(writer, checkpoint, lineage)
        trials = [records[f"trial/{round_}/{t.name}/{s}"] for t in tasks for s in range(config.samples)]
        run.append([{"key": f"sft/{round_}", "round": round_, "examples": len(kept),
                     "sft_losses": stats.epoch_losses if stats else [],
                     "recipes_valid": sum(r is None for t in tasks
                                          for r in records[f"sample/{round_}/{t.name}"]["rejected"]),
                     "recipes": len(trials), "recipes_solved": sum(r["solved"] for r in trials),
                     "tasks_solved": len({r["task"] for r in trials if r["solved"]}), "tasks": len(tasks),
                     "mean_reward": round(sum(r["reward"] for r in trials) / len(trials), 3)}])
        writer_path = str(checkpoint)
    rounds = sorted((r for r in run.records() if r["key"].startswith("sft/")), key=lambda r: r["round"])
    summary = {"rounds": [{k: v for k, v in r.items() if k != "key"} | {"checkpoint": str(out / f"round-{r['round']}")}
                          for r in rounds]}
    (out / "stats.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
