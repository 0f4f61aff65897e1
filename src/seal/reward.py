"""The reward of a self-edit, and the executors that compute many of them: in-process, a process pool, or Ray.

A reward trial trains a fresh LoRA adapter on the passage plus one self-edit, asks the passage's questions
closed-book and returns the judge accuracy. Trials run in batches through the batched engine (`engine.py`): one
pass trains and asks a batch of adapters together, each ending where it would alone (to float tolerance: a row's
arithmetic depends a little on its batch's shape). A trial is a plain dataclass with its own seed, and callers form
batches from the whole list of trials, never from what is left to do, so a trial gives the same result whichever
executor and worker run it, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Protocol

import torch

from seal import model as lm_ops
from seal.config import ExecutorConfig, UpdateConfig
from seal.engine import Update, UpdateRunner
from seal.errors import SealError
from seal.grading import RemoteJudge
from seal.model import deterministic
from seal.squad import Item, accuracy
from seal.update import Sequence

EXECUTORS = ("in-process", "process", "ray")


@dataclass
class Trial:
    key: str
    item: Item
    texts: list[Sequence]  # training sequences, the passage first, already in their training form
    seed: int  # the LoRA init and data order; shared by every sample of a passage (common random numbers)
    round: int = 0
    sample: int = -1  # -1: the passage alone
    repeat: int = 0


@dataclass
class TrialSetup:
    """What every trial shares: the base model, the inner update, and how answers are produced and graded."""

    model: str = lm_ops.EMBEDDED
    device: str = "auto"
    answer_tokens: int = 32
    judge_url: str | None = None
    judge_model: str = "gpt-4.1-mini"
    update: UpdateConfig = field(default_factory=UpdateConfig)


class RewardWorker:
    """One base model with `batch_trials` adapter slots, reset for every batch of trials."""

    def __init__(self, setup: TrialSetup, batch_trials: int, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        deterministic(setup.device)
        judge = RemoteJudge(setup.judge_url, setup.judge_model) if setup.judge_url else None
        self.runner = UpdateRunner(setup.model, setup.device, setup.update, batch_trials, setup.answer_tokens, judge)
        self.name = f"{os.uname().nodename}:{os.getpid()}"

    def run(self, trials: list[Trial]) -> list[dict]:
        start = time.perf_counter()
        results = self.runner.run([Update(trial.texts, [trial.item], trial.seed) for trial in trials])
        seconds = round((time.perf_counter() - start) / len(trials), 2)  # each trial's share of the batch
        records = []
        for trial, result in zip(trials, results):
            outcome = result.outcome
            scores = accuracy(result.answers[0])
            records.append({"key": trial.key, "round": trial.round, "passage": trial.item.id, "sample": trial.sample,
                            "repeat": trial.repeat, "reward": scores["judge"], "accuracy": scores,
                            "final_loss": outcome.final_loss if outcome else None,
                            "failed": outcome.failed if outcome else None,
                            "train_sequences": len(trial.texts), "answers": result.answers[0], "worker": self.name,
                            "batch": len(trials), "seconds": seconds})
        return records


def batches(trials: list[Trial], size: int) -> list[list[Trial]]:
    return [trials[first : first + size] for first in range(0, len(trials), size)]


class Executor(Protocol):
    def map(self, batches: list[list[Trial]]) -> Iterator[list[dict]]:
        """Run every batch of trials; yield each batch's results as it finishes (in any order)."""

    def close(self) -> None: ...


class InProcess:
    def __init__(self, setup: TrialSetup, batch_trials: int):
        self.worker = RewardWorker(setup, batch_trials)

    def map(self, batches: list[list[Trial]]) -> Iterator[list[dict]]:
        for batch in batches:
            yield self.worker.run(batch)

    def close(self) -> None:
        pass


_pool_worker: RewardWorker | None = None


def _start_pool_worker(setup: TrialSetup, batch_trials: int, threads: int) -> None:
    global _pool_worker
    _pool_worker = RewardWorker(setup, batch_trials, threads)


def _run_in_pool(trials: list[Trial]) -> list[dict]:
    assert _pool_worker is not None, "the pool's initializer loads the model"
    return _pool_worker.run(trials)


class ProcessPool:
    """Local worker processes (spawned, so no torch state is forked), each loading the model once."""

    def __init__(self, setup: TrialSetup, workers: int, batch_trials: int):
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_pool_worker, initargs=(setup, batch_trials, threads))

    def map(self, batches: list[list[Trial]]) -> Iterator[list[dict]]:
        futures = [self.pool.submit(_run_in_pool, batch) for batch in batches]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayActors:
    """One Ray actor per worker (a CPU slot, or a GPU when the device is CUDA), fed through an ActorPool."""

    def __init__(self, setup: TrialSetup, workers: int, address: str | None, batch_trials: int):
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise SealError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        gpus = 1 if setup.device.startswith("cuda") or (setup.device == "auto" and torch.cuda.is_available()) else 0
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(RewardWorker)
        threads = 1 if not address else None  # locally the workers share this machine's cores
        self.pool = ActorPool([actor.remote(setup, batch_trials, threads) for _ in range(workers)])

    def map(self, batches: list[list[Trial]]) -> Iterator[list[dict]]:
        yield from self.pool.map_unordered(lambda worker, batch: worker.run.remote(batch), batches)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(config: ExecutorConfig, setup: TrialSetup) -> Executor:
    if config.kind not in EXECUTORS:
        raise SealError(f"unknown executor {config.kind!r}; use {', '.join(EXECUTORS)}")
    if config.workers < 1 or config.batch_trials < 1:
        raise SealError("--workers and --batch-trials must be at least 1")
    if config.kind == "process":
        return ProcessPool(setup, config.workers, config.batch_trials)
    if config.kind == "ray":
        return RayActors(setup, config.workers, config.ray_address, config.batch_trials)
    return InProcess(setup, config.batch_trials)
