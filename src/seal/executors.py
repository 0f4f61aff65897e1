"""Where reward trials run: in this process, a local process pool, or Ray actors.

An executor hands batches of trials to workers and yields each batch's results as it finishes. A worker is any
class built from plain arguments plus `threads` (torch threads for it; None: torch's default) whose `run(batch)`
returns one record per trial: the knowledge domain's `reward.RewardWorker` and the few-shot domain's
`arc.policy.RecipeWorker`. Each worker loads its model once. Callers form batches from the whole list of trials,
never from what is left to do, so a trial gives the same result whichever executor and worker run it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

import torch

from seal.config import ExecutorConfig
from seal.errors import SealError
from seal.model import deterministic

EXECUTORS = ("in-process", "process", "ray")


def start_worker(device: str, threads: int | None) -> str:
    """What every worker does first: its torch threads and deterministic kernels. Returns its name for records."""
    if threads:
        torch.set_num_threads(threads)
    deterministic(device)
    return f"{os.uname().nodename}:{os.getpid()}"


def batches(trials: list, size: int) -> list[list]:
    return [trials[first : first + size] for first in range(0, len(trials), size)]


class Executor(Protocol):
    def map(self, batches: list[list]) -> Iterator[list[dict]]:
        """Run every batch of trials; yield each batch's results as it finishes (in any order)."""

    def close(self) -> None: ...


class InProcess:
    def __init__(self, worker: type, args: tuple):
        self.worker = worker(*args)

    def map(self, batches: list[list]) -> Iterator[list[dict]]:
        for batch in batches:
            yield self.worker.run(batch)

    def close(self) -> None:
        pass


_pool_worker: Any = None


def _start_pool_worker(worker: type, args: tuple, threads: int) -> None:
    global _pool_worker
    _pool_worker = worker(*args, threads=threads)


def _run_in_pool(trials: list) -> list[dict]:
    assert _pool_worker is not None, "the pool's initializer loads the model"
    return _pool_worker.run(trials)


class ProcessPool:
    """Local worker processes (spawned, so no torch state is forked), each loading the model once."""

    def __init__(self, worker: type, args: tuple, workers: int):
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_pool_worker, initargs=(worker, args, threads))

    def map(self, batches: list[list]) -> Iterator[list[dict]]:
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

    def __init__(self, worker: type, args: tuple, workers: int, address: str | None, device: str):
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
        gpus = 1 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else 0
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(worker)
        threads = 1 if not address else None  # locally the workers share this machine's cores
        self.pool = ActorPool([actor.remote(*args, threads=threads) for _ in range(workers)])

    def map(self, batches: list[list]) -> Iterator[list[dict]]:
        yield from self.pool.map_unordered(lambda worker, batch: worker.run.remote(batch), batches)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(config: ExecutorConfig, worker: type, args: tuple, device: str) -> Executor:
    """An executor of `config.kind` whose workers are `worker(*args, threads=...)`."""
    if config.kind not in EXECUTORS:
        raise SealError(f"unknown executor {config.kind!r}; use {', '.join(EXECUTORS)}")
    if config.workers < 1 or config.batch_trials < 1:
        raise SealError("--workers and --batch-trials must be at least 1")
    if config.kind == "process":
        return ProcessPool(worker, args, config.workers)
    if config.kind == "ray":
        return RayActors(worker, args, config.workers, config.ray_address, device)
    return InProcess(worker, args)
