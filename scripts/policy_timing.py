"""Reward-trial throughput of `seal train-policy` per executor: one short round each, same passages and seeds.

    python scripts/policy_timing.py --data FILE --out runs/policy-timing --device cuda --executors in-process,process

Writes OUT/timing.json (trials/hour, seconds per phase, rewards) next to each executor's run folder. The runs
are ordinary train-policy runs, so their trials can be compared across machines: same keys, same seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seal import policy
from seal.config import ExecutorConfig, GenerationConfig, PolicyConfig
from seal.policy import run_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/policy-timing"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--executors", default="in-process,process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-trials", type=int, default=ExecutorConfig.batch_trials)
    parser.add_argument("--no-plots", action="store_true", help="For machines without matplotlib.")
    args = parser.parse_args()
    if args.no_plots:
        policy._plot = lambda rounds, path: None
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "runs": {}}
    for kind in args.executors.split(","):
        config = PolicyConfig(data=args.data, passages=args.passages, samples=args.samples, rounds=1, repeats=1,
                              device=args.device, generation=GenerationConfig(samples=args.samples))
        start = time.perf_counter()
        executor = ExecutorConfig(kind, args.workers, batch_trials=args.batch_trials)
        stats = run_policy(args.out / kind, config, executor)["rounds"][0]
        records = [json.loads(line) for line in (args.out / kind / "trials.jsonl").read_text().splitlines()]
        rewards = {r["key"]: r["reward"] for r in records if "reward" in r}
        results["runs"][kind] = {"workers": stats["workers"], "trials": stats["trials_run"],
                                 "trials_per_hour": stats["trials_per_hour"], "seconds": stats["seconds"],
                                 "wall_seconds": round(time.perf_counter() - start, 1),
                                 "mean_reward": stats["mean_reward"], "rewards": rewards}
        print(kind, json.dumps({k: v for k, v in results["runs"][kind].items() if k != "rewards"}), flush=True)
    (args.out / "timing.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
