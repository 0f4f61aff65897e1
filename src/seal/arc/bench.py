"""`seal bench arc`: few-shot tasks solved under each condition, with the same seeds, resumable.

Conditions: in-context (no training), recipe:NAME (a fixed recipe, recipes.NAMED_RECIPES), sampled (recipes the model
writes, `samples` per task, each run), policy:PATH (recipes a trained recipe writer writes, as sampled). The oracle
is read off the runs: a task counts when any recipe solved it. A recipe an earlier run of the task already trained
(a sample the default replaced, one the writer wrote twice) is not trained again: with the same seed it trains the
same adapter, so its answers are taken over. Every run is one line of trials.jsonl; a rerun with the same --out
skips what is done."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seal import model as lm_ops
from seal.arc.recipes import NAMED_RECIPES, Recipe, WrittenRecipe, check_recipe
from seal.arc.solve import Attempt, Solved, cells_right, solve, task_engine, write_recipes
from seal.arc.tasks import Grid, Task, graded_tasks, load_tasks
from seal.config import EMBEDDED
from seal.engine import Engine
from seal.errors import SealError
from seal.model import LM
from seal.runs import RunFolder, repair, seed_for

SAMPLE_TEMPERATURE = 1.0


@dataclass
class ArcBenchConfig:
    data: str
    solutions: str | None = None
    conditions: list[str] = field(default_factory=lambda: ["in-context", "recipe:default"])
    tasks: list[str] = field(default_factory=list)  # task ids; empty: every task of the file
    samples: int = 3  # recipes written per task by the sampled and policy conditions
    seed: int = 0
    batch_trials: int = 1  # runs trained together (engine.py), one adapter slot each
    model: str = EMBEDDED
    device: str = "auto"


def check_conditions(conditions: list[str]) -> None:
    for condition in conditions:
        name = condition.split(":", 1)[1] if ":" in condition else ""
        if condition in ("in-context", "sampled") or (condition.startswith("recipe:") and name in NAMED_RECIPES):
            continue
        if condition.startswith("policy:") and name:
            continue
        raise SealError(f"unknown condition {condition!r}: use in-context, sampled, policy:PATH or recipe:NAME "
                        f"(NAME one of {', '.join(NAMED_RECIPES)})")


def bench_tasks(config: ArcBenchConfig) -> list[Task]:
    tasks = load_tasks(Path(config.data), Path(config.solutions) if config.solutions else None)
    if config.tasks:
        missing = sorted(set(config.tasks) - {t.name for t in tasks})
        if missing:
            raise SealError(f"no task {missing[0]!r} in {config.data}")
        tasks = [t for t in tasks if t.name in config.tasks]
    return graded_tasks(tasks, "grade against")


def record(key: str, condition: str, sample: int, result: Solved, written: WrittenRecipe | None) -> dict:
    return {"key": key, "condition": condition, "task": result.task, "sample": sample,
            "recipe": result.recipe.to_json() if result.recipe else None,
            "written": written.text if written else None, "rejected": written.rejected if written else None,
            "solved": result.solved, "correct": result.correct,
            "predicted": [a.grid for a in result.answers], "votes": [a.votes for a in result.answers],
            "views": [a.asked for a in result.answers],
            "steps": result.training.steps if result.training else 0, "seconds": result.seconds}


def units(config: ArcBenchConfig, task: Task) -> list[tuple[str, str, int]]:
    """(key, condition, sample) of every run of a task."""
    out = []
    for condition in config.conditions:
        count = config.samples if condition == "sampled" or condition.startswith("policy:") else 1
        out += [(f"{condition}/{task.name}/{s}", condition, s) for s in range(count)]
    return out


def _ran(record: dict, task: Task, recipe: Recipe) -> bool:
    """Whether the record is a run of this recipe on this task (records written before a recipe key existed read
    as its default)."""
    return record["task"] == task.name and record["recipe"] is not None and check_recipe(record["recipe"]) == recipe


def run_arc_bench(out_dir: Path, config: ArcBenchConfig, report: Callable[[str], None]) -> list[dict]:
    check_conditions(config.conditions)
    if config.batch_trials < 1:
        raise SealError("--batch-trials must be at least 1")
    tasks = bench_tasks(config)
    run = RunFolder(out_dir)
    run.start(config, extendable=("conditions", "tasks", "batch_trials"))  # batching changes the time, not the runs
    repair(run)
    records = run.records()
    done = {r["key"] for r in records}
    engine: Engine | None = None
    writers: dict[str, LM] = {}  # loaded once, and only for a task with a unit to run

    def base() -> Engine:
        nonlocal engine
        if engine is None:
            engine = task_engine(lm_ops.load(config.model, device=config.device), config.batch_trials)
        return engine

    for task in tasks:
        seed = seed_for(config.seed, task.name)  # the same seed for the task under every condition
        written: dict[str, list[WrittenRecipe]] = {}
        runs: list[tuple[str, str, int, Attempt]] = []
        copies: list[tuple[str, str, int, WrittenRecipe | None, Recipe]] = []
        for key, condition, sample in units(config, task):
            if key in done:
                continue
            mine = None
            if condition == "sampled" or condition.startswith("policy:"):
                if condition not in writers:  # the untrained writer is the engine's base model (no slot while writing)
                    writers[condition] = (base().lm if condition == "sampled" else
                                          lm_ops.load(condition.split(":", 1)[1], device=config.device))
                if condition not in written:  # all samples in one batch, so a resumed run draws the same ones
                    written[condition] = write_recipes(writers[condition], task, config.samples, SAMPLE_TEMPERATURE,
                                                       seed)
                mine = written[condition][sample]
            recipe = (None if condition == "in-context" else
                      NAMED_RECIPES[condition.split(":", 1)[1]] if condition.startswith("recipe:") else mine.recipe)
            # the same recipe with the same seed trains the same adapter: one run's answers serve every such unit
            if recipe is not None and (any(_ran(r, task, recipe) for r in records)
                                       or any(a.recipe == recipe for *_, a in runs)):
                copies.append((key, condition, sample, mine, recipe))
            else:
                runs.append((key, condition, sample, Attempt(task, recipe, seed, mine)))
        for first in range(0, len(runs), config.batch_trials):
            batch = runs[first : first + config.batch_trials]
            for (key, condition, sample, attempt), result in zip(batch, solve(base(), [a for *_, a in batch])):
                new = record(key, condition, sample, result, attempt.written)
                report(f"{key}: {'solved' if result.solved else 'not solved'} in {sum(result.seconds.values()):.0f} s")
                run.append([new])
                records.append(new)
        for key, condition, sample, mine, recipe in copies:
            same = next(r for r in records if _ran(r, task, recipe) and "reused" not in r)
            new = {**same, "key": key, "condition": condition, "sample": sample, "reused": same["key"],
                   "written": mine.text if mine else None, "rejected": mine.rejected if mine else None}
            report(f"{key}: the same recipe as {same['key']}")
            run.append([new])
            records.append(new)
    return records


PAPER = {"in-context": 0.0, "recipes before RL": 20.0, "after RL": 72.5, "oracle recipe": 100.0}  # Llama-3.2-1B
TRAINED = ("recipe:", "sampled", "policy:")


def summarize(config: dict, records: list[dict], truths: dict[str, list[Grid]]) -> dict:
    tasks = sorted({r["task"] for r in records})
    conditions = [c for c in config["conditions"] if any(r["condition"] == c for r in records)]
    rows = {}
    for condition in conditions:
        mine = [r for r in records if r["condition"] == condition]
        solved_tasks = {r["task"] for r in mine if r["solved"]}
        ran = [r for r in mine if "reused" not in r]  # a run taken over from the same recipe took no time
        trained = [r["seconds"]["training"] for r in ran if "training" in r["seconds"]]
        rows[condition] = {
            "tasks": len({r["task"] for r in mine}), "tasks_solved": len(solved_tasks),
            "runs": len(mine), "runs_solved": sum(bool(r["solved"]) for r in mine),
            "recipes_rejected": sum(r["rejected"] is not None for r in mine),
            "cells_right": round(sum(cells_right(r["predicted"], truths[r["task"]]) for r in mine) / len(mine), 3),
            "training_seconds": round(sum(trained) / len(trained), 1) if trained else 0.0,
            "predicting_seconds": round(sum(r["seconds"]["predicting"] for r in ran) / len(ran), 1) if ran else 0.0,
            "runs_reused": len(mine) - len(ran),
        }
    trained_runs = [r for r in records if r["condition"].startswith(TRAINED)]
    oracle = sorted({r["task"] for r in trained_runs if r["solved"]})
    def solved_of(task: str, condition: str) -> str:
        runs = [r for r in records if r["task"] == task and r["condition"] == condition]
        return f"{sum(bool(r['solved']) for r in runs)}/{len(runs)}" if runs else "-"  # "-": not run on this task

    per_task = {task: {c: solved_of(task, c) for c in conditions} for task in tasks}
    return {"config": config, "tasks": len(tasks), "conditions": rows,
            "oracle": {"tasks_solved": len(oracle), "solved": oracle}, "per_task": per_task, "paper": PAPER}


def markdown(summary: dict) -> str:
    lines = [f"ARC few-shot tasks: {summary['tasks']} tasks, exact match on every test output of a task; cells right: "
             "the share of answer cells right (none for an answer of the wrong shape), the mean over runs.", "",
             "| condition | tasks solved | runs solved | cells right | recipes rejected | training s/run | "
             "predicting s/run |", "|---|---|---|---|---|---|---|"]
    for name, row in summary["conditions"].items():
        lines.append(f"| {name} | {row['tasks_solved']}/{row['tasks']} | {row['runs_solved']}/{row['runs']} | "
                     f"{row['cells_right']:.1%} | {row['recipes_rejected']} | {row['training_seconds']} | "
                     f"{row['predicting_seconds']} |")
    lines.append(f"| oracle (any recipe run) | {summary['oracle']['tasks_solved']}/{summary['tasks']} | | | | | |")
    names = list(summary["conditions"])
    lines += ["", "Per task (runs solved / runs):", "", "| task | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    lines += [f"| {task} | " + " | ".join(cells[n] for n in names) + " |"
              for task, cells in summary["per_task"].items()]
    lines += ["", "SEAL (Llama-3.2-1B, its curated subset): " +
              ", ".join(f"{k} {v}%" for k, v in summary["paper"].items()) + "."]
    return "\n".join(lines) + "\n"


# ARC's usual palette, colours 0-9.
PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
           "#870C25"]


def plot_predictions(tasks: list[Task], records: list[dict], path: Path, limit: int = 4) -> None:
    """The first test input of a few tasks, its true output, and each condition's first prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    shown = [t for t in tasks if any(r["task"] == t.name for r in records)][:limit]
    conditions = list(dict.fromkeys(r["condition"] for r in records))
    columns = 2 + len(conditions)
    figure, axes = plt.subplots(len(shown), columns, figsize=(2.2 * columns, 2.4 * len(shown)), squeeze=False)
    colours = ListedColormap(PALETTE)
    for row, task in zip(axes, shown):
        panels: list[tuple[str, Grid | None]] = [("test input", task.test[0]), ("truth", task.solutions[0])]
        for condition in conditions:
            first = next((r for r in records if r["task"] == task.name and r["condition"] == condition), None)
            grid = first["predicted"][0] if first else None
            mark = "" if first is None else (" ✓" if first["correct"][0] else " ✗")
            panels.append((condition + mark, grid))
        for axis, (title, grid) in zip(row, panels):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(title, fontsize=8)
            if grid is not None:
                axis.imshow(grid, cmap=colours, vmin=0, vmax=9)
        row[0].set_ylabel(task.name, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(out_dir: Path, config: ArcBenchConfig) -> dict:
    """arc.json, arc.md and predictions.png from the run folder's records."""
    run = RunFolder(out_dir)
    tasks = bench_tasks(config)
    records = [r for r in run.records() if r["task"] in {t.name for t in tasks}]  # the tasks asked for this time
    summary = summarize(run.config(), records, {t.name: t.solutions for t in tasks})
    (out_dir / "arc.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out_dir / "arc.md").write_text(markdown(summary), encoding="utf-8")
    if records:
        plot_predictions(tasks, records, out_dir / "predictions.png")
    return summary
