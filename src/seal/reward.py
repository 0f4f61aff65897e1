"""The reward of a self-edit, and the executors that compute many of them: in-process, a process pool, or Ray.

A reward trial trains a fresh LoRA adapter on the passage plus one self-edit (the same inner update as
`seal bench knowledge`), asks the passage's questions closed-book and returns the judge accuracy. A trial is a
plain dataclass with its own seed, so it gives the same result whichever executor and worker run it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Protocol

import torch

from seal.errors import SealError
from seal.knowledge import Bench, KnowledgeConfig
from seal.squad import Item, accuracy
from seal.model import deterministic
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
class ExecutorConfig:
    kind: str = "in-process"
    workers: int = 2  # process and ray: workers, each with one model
    ray_address: str | None = None  # None: a local Ray cluster of `workers` CPUs; "auto" or ray://...: join one


class RewardWorker:
    """One base model with one trainable adapter, reset for every trial."""

    def __init__(self, setup: KnowledgeConfig, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        deterministic(setup.device)
        self.bench = Bench(setup)
        self.name = f"{os.uname().nodename}:{os.getpid()}"

    def run(self, trial: Trial) -> dict:
        start = time.perf_counter()
        answers, loss = self.bench.updated_answers(trial.texts, [trial.item], trial.seed)
        scores = accuracy(answers[0])
        return {"key": trial.key, "round": trial.round, "passage": trial.item.id, "sample": trial.sample,
                "repeat": trial.repeat, "reward": scores["judge"], "accuracy": scores, "final_loss": loss,
                "train_sequences": len(trial.texts), "answers": answers[0], "worker": self.name,
                "seconds": round(time.perf_counter() - start, 2)}


class Executor(Protocol):
    def map(self, trials: list[Trial]) -> Iterator[dict]:
        """Run every trial; yield each result as it finishes (in any order)."""

    def close(self) -> None: ...


class InProcess:
    def __init__(self, setup: KnowledgeConfig):
        self.worker = RewardWorker(setup)

    def map(self, trials: list[Trial]) -> Iterator[dict]:
        for trial in trials:
            yield self.worker.run(trial)

    def close(self) -> None:
        pass


_pool_worker: RewardWorker | None = None


def _start_pool_worker(setup: KnowledgeConfig, threads: int) -> None:
    global _pool_worker
    _pool_worker = RewardWorker(setup, threads)


def _run_in_pool(trial: Trial) -> dict:
    assert _pool_worker is not None, "the pool's initializer loads the model"
    return _pool_worker.run(trial)


class ProcessPool:
    """Local worker processes (spawned, so no torch state is forked), each loading the model once."""

    def __init__(self, setup: KnowledgeConfig, workers: int):
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_pool_worker, initargs=(setup, threads))

    def map(self, trials: list[Trial]) -> Iterator[dict]:
        futures = [self.pool.submit(_run_in_pool, trial) for trial in trials]
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

    def __init__(self, setup: KnowledgeConfig, workers: int, address: str | None):
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
        self.pool = ActorPool([actor.remote(setup, threads) for _ in range(workers)])

    def map(self, trials: list[Trial]) -> Iterator[dict]:
        yield from self.pool.map_unordered(lambda worker, trial: worker.run.remote(trial), trials)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(config: ExecutorConfig, setup: KnowledgeConfig) -> Executor:
    if config.kind not in EXECUTORS:
        raise SealError(f"unknown executor {config.kind!r}; use {', '.join(EXECUTORS)}")
    if config.workers < 1:
        raise SealError("--workers must be at least 1")
    if config.kind == "process":
        return ProcessPool(setup, config.workers)
    if config.kind == "ray":
        return RayActors(setup, config.workers, config.ray_address)
    return InProcess(setup)
