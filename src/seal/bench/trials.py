"""`seal bench trials`: reward trials per hour, the same trials one at a time and in batches, in one run.

The trials are ReST-EM's: a passage from the policy's training split (after the knowledge benchmark's first 50 of
the seeded shuffle) plus one self-edit the base model wrote for it, trained into a fresh adapter, then the passage's
questions asked closed-book. Every batch size runs every trial; the report gives trials per hour and how far each
trial's reward and loss moved from the one-at-a-time run (the batch's shape changes float rounding, nothing else).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from seal import model as lm_ops
from seal.bench import Report
from seal.config import GenerationConfig
from seal.documents import Passage
from seal.errors import SealError
from seal.executors import batches
from seal.generate import write_self_edits
from seal.reward import RewardWorker, Trial, TrialSetup
from seal.runs import seed_for
from seal.squad import load_items, select
from seal.update import sequence_text


def reward_trials(model: str, data: str, passages: int, samples: int, repeats: int, skip: int = 50) -> list[Trial]:
    """Self-edits (implications) of `passages` training passages, `samples` each, every one trained `repeats` times
    with the seeds `seal train-policy` gives them."""
    writer = lm_ops.load(model)
    trials = []
    for item in select(load_items(data), skip + passages, seed=42)[skip:]:
        generation = GenerationConfig(strategy="implications", samples=samples, seed=seed_for("sample", 1, item.id))
        candidates, _ = write_self_edits(writer, [Passage(item.title, item.context, f"data:{item.id}")], generation)
        passage = sequence_text(writer, "passage", f"{item.title}\n{item.context}")
        for repeat in range(repeats):
            for sample in range(samples):
                edits = [sequence_text(writer, c.kind, c.text, c.question, c.answer, topic=item.title)
                         for c in candidates if c.sample == sample]
                trials.append(Trial(f"{item.id}/{sample}/{repeat}", item, [passage] + edits,
                                    seed_for("reward", item.id, repeat), 1, sample, repeat))
    return trials


def bench_trials(out: Path, data: str, model: str, say: Report, passages: int = 4, samples: int = 2,
                 repeats: int = 2, sizes: tuple[int, ...] = (1, 8), device: str = "auto", skip: int = 50) -> dict:
    if not sizes or min(sizes) < 1:
        raise SealError("--batch-sizes needs whole numbers of at least 1, e.g. 1,8")
    out.mkdir(parents=True, exist_ok=True)
    trials = reward_trials(model, data, passages, samples, repeats, skip)
    say(f"{len(trials)} trials ({passages} passages x {samples} self-edits x {repeats} repeats)")
    runs = []
    reference: dict[str, dict] = {}
    for size in sizes:
        worker = RewardWorker(TrialSetup(model=model, device=device), size)
        start = time.perf_counter()
        results = {r["key"]: r for batch in batches(trials, size) for r in worker.run(batch)}
        seconds = time.perf_counter() - start
        reference = reference or results
        moved = [abs(results[k]["reward"] - reference[k]["reward"]) for k in results]
        loss_moved = [abs(results[k]["final_loss"] - reference[k]["final_loss"]) for k in results]
        runs.append({"batch_trials": size, "seconds": round(seconds, 1),
                     "trials_per_hour": round(3600 * len(trials) / seconds),
                     "same_reward_as_first": sum(m == 0 for m in moved), "max_reward_change": max(moved),
                     "max_final_loss_change": round(max(loss_moved), 5),
                     "mean_reward": round(sum(r["reward"] for r in results.values()) / len(results), 4)})
        say(f"batch {size}: {runs[-1]['trials_per_hour']} trials/hour")
        del worker
    first = runs[0]["trials_per_hour"]
    for run in runs:
        run["speedup"] = round(run["trials_per_hour"] / first, 2)
    summary = {"trials": len(trials), "passages": passages, "samples": samples, "repeats": repeats, "model": model,
               "device": str(lm_ops.pick_device(device)), "threads": torch.get_num_threads(), "runs": runs}
    (out / "trials.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [f"{len(trials)} reward trials ({passages} passages x {samples} self-edits x {repeats} repeats), "
             f"{summary['device']}, {summary['threads']} threads.", "",
             f"| trials per batch | seconds | trials/hour | speed-up | rewards equal to batch {sizes[0]}'s | "
             "largest reward change | largest final-loss change |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch_trials']} | {r['seconds']} | {r['trials_per_hour']} | {r['speedup']}x | "
              f"{r['same_reward_as_first']}/{len(trials)} | {r['max_reward_change']} | {r['max_final_loss_change']} |"
              for r in runs]
    (out / "trials.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
