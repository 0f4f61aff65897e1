"""`seal train-policy --domain arc`: ReST-EM over recipes, as SEAL trains its ARC self-edits.

Each round the current writer samples recipes for every training task; each valid recipe runs as test-time training
on a fresh copy of the base model and is rewarded 1 when the adapted model answers every test input exactly. An
invalid recipe is rewarded 0 and never trained; one written again for the task takes its first run's reward (with the
task's one seed it trains the same adapter). The writer is fine-tuned on the recipes that solved their task (the loss
on the recipe only) and merged into the next round's writer. Every sampled task, reward and SFT step is a
line of trials.jsonl: a killed run resumes where it stopped. Use tasks that no benchmark evaluates on (SEAL trains on
its training subset and reports its evaluation subset)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seal import model as lm_ops
from seal.arc.recipes import FIRST_OBJECT, RECIPE_START, parse_recipe
from seal.arc.solve import Attempt, recipe_prompt, solve, task_engine, write_recipes
from seal.arc.tasks import Task, graded_tasks, load_tasks
from seal.config import EMBEDDED, SFTConfig
from seal.errors import SealError
from seal.runs import RunFolder, repair, seed_for
from seal.sft import save_checkpoint, sft
from seal.store import now

Progress = Callable[[str, int, int], None]
DOMAIN = "arc"
SAMPLE_TEMPERATURE = 1.0


@dataclass
class ArcPolicyConfig:
    data: str  # ARC tasks to train on (SEAL's training subset)
    solutions: str | None = None
    samples: int = 4  # recipes per task and round
    rounds: int = 2
    seed: int = 0
    batch_trials: int = 1  # reward trials trained together (engine.py), one adapter slot each
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


def _rewards(run: RunFolder, config: ArcPolicyConfig, round_: int, tasks: list[Task], records: dict[str, dict],
             done: set[str], tick: Progress) -> None:
    keys = [(task, s) for task in tasks for s in range(config.samples)]
    pending = [(task, s) for task, s in keys if f"trial/{round_}/{task.name}/{s}" not in done]
    finished = len(keys) - len(pending)

    def record(trials: list[dict]) -> None:
        nonlocal finished
        run.append(trials)
        records.update((trial["key"], trial) for trial in trials)
        finished += len(trials)
        tick(f"rewards r{round_}", finished, len(keys))

    runs: list[tuple[dict, Attempt]] = []
    copies: list[tuple[dict, str]] = []
    for task, sample in pending:
        drawn = records[f"sample/{round_}/{task.name}"]
        trial = {"key": f"trial/{round_}/{task.name}/{sample}", "round": round_, "task": task.name, "sample": sample,
                 "reward": 0.0, "seconds": {}}
        if drawn["rejected"][sample] is not None:  # an invalid recipe earns nothing and is never trained
            record([trial])
            continue
        recipe = parse_recipe(drawn["texts"][sample])
        first = next(s for s in range(sample + 1) if drawn["rejected"][s] is None
                     and parse_recipe(drawn["texts"][s]) == recipe)
        if first < sample:  # the same recipe with the task's one seed trains the same adapter: its reward is shared
            copies.append((trial | {"same_as": first}, f"trial/{round_}/{task.name}/{first}"))
        else:
            runs.append((trial, Attempt(task, recipe, seed_for(config.seed, task.name))))
    if runs:
        engine = task_engine(lm_ops.load(config.model, device=config.device), config.batch_trials)
        for first in range(0, len(runs), config.batch_trials):
            batch = runs[first : first + config.batch_trials]
            results = solve(engine, [attempt for _, attempt in batch])
            record([trial | {"reward": 1.0 if result.solved else 0.0, "seconds": result.seconds}
                    for (trial, _), result in zip(batch, results)])
    for trial, first_key in copies:
        record([trial | {"reward": records[first_key]["reward"]}])


def run_arc_policy(out: Path, config: ArcPolicyConfig, progress: Progress | None = None) -> dict:
    """Run (or resume) ReST-EM over recipes into `out`; returns the per-round statistics (also in stats.json)."""
    tick = progress or (lambda name, done, total: None)
    if min(config.samples, config.rounds, config.batch_trials) < 1:
        raise SealError("--samples, --rounds and --batch-trials must be at least 1")
    tasks = graded_tasks(load_tasks(Path(config.data), Path(config.solutions) if config.solutions else None),
                         "reward against")
    lm_ops.deterministic(config.device)
    run = RunFolder(out)
    run.start(config, extendable=("rounds", "batch_trials"))  # batching changes the time, not the rewards
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
        _rewards(run, config, round_, tasks, records, run.done(), tick)
        records = {r["key"]: r for r in run.records()}
        writer = lm_ops.load(writer_path, device=config.device)
        pairs = []
        for task in tasks:
            prompt = recipe_prompt(writer, task)
            texts = records[f"sample/{round_}/{task.name}"]["texts"]
            solved = [recipe_completion(texts[s]) for s in range(config.samples)
                      if records[f"trial/{round_}/{task.name}/{s}"]["reward"] > 0]
            pairs += [(prompt, completion) for completion in dict.fromkeys(solved)]  # each distinct recipe once
        sft_config = SFTConfig(**{**asdict(config.sft), "seed": seed_for("sft", round_)})
        stats = sft(writer, pairs, sft_config) if pairs else None
        lineage = {"kind": "seal recipe policy", "domain": DOMAIN, "round": round_, "base_model": config.model,
                   "parent": writer_path, "examples": len(pairs), "created_at": now(),
                   "train_tasks": [t.name for t in tasks], "config": asdict(config)}
        save_checkpoint(writer, checkpoint, lineage)
        trials = [records[f"trial/{round_}/{t.name}/{s}"] for t in tasks for s in range(config.samples)]
        run.append([{"key": f"sft/{round_}", "round": round_, "examples": len(pairs),
                     "sft_losses": stats.epoch_losses if stats else [],
                     "recipes_valid": sum(r is None for t in tasks
                                          for r in records[f"sample/{round_}/{t.name}"]["rejected"]),
                     "recipes": len(trials), "recipes_solved": sum(r["reward"] > 0 for r in trials),
                     "tasks_solved": len({r["task"] for r in trials if r["reward"] > 0}), "tasks": len(tasks)}])
        writer_path = str(checkpoint)
    rounds = sorted((r for r in run.records() if r["key"].startswith("sft/")), key=lambda r: r["round"])
    summary = {"rounds": [{k: v for k, v in r.items() if k != "key"} | {"checkpoint": str(out / f"round-{r['round']}")}
                          for r in rounds]}
    (out / "stats.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
