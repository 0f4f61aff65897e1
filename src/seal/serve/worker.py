"""The adaptation worker of `seal serve`, one per tenant: its queued jobs learned one at a time through the same
`learn()` as `seal learn`, their progress live while they run; and its inbox folder, whose text files become jobs.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seal.config import LearnOptions
from seal.documents import TEXT_SUFFIXES
from seal.errors import SealError
from seal.learn import learn
from seal.serve.errors import ApiError
from seal.serve.jobs import FINISHED, Job, JobQueue, sha256_of
from seal.serve.metrics import Metrics
from seal.store import Store

STATUS_OF_STAGE = {"load": "generating", "generate": "generating", "train": "training", "check": "checking"}


@dataclass
class Live:
    """The running adaptation as it moves (not stored: the version keeps the whole record once it is done)."""

    job: str
    started: float = field(default_factory=time.time)
    stages: list[tuple[str, float]] = field(default_factory=list)  # each stage reached, seconds after the start
    done: int = 0
    total: int = 0
    losses: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"stage": self.stages[-1][0] if self.stages else "", "stages": list(self.stages), "done": self.done,
                "total": self.total, "losses": list(self.losses), "seconds": round(time.time() - self.started, 1)}


class AdaptationWorker:
    """`run` and `watch_inbox` are the bodies of the server's two background threads."""

    def __init__(self, store: Store, queue: JobQueue, options: LearnOptions, metrics: Metrics, stop: threading.Event,
                 serve_current: Callable[[], None], training: threading.Semaphore, watch: Path | None = None,
                 watch_interval: float = 2.0):
        self.store, self.queue, self.options, self.metrics, self.stop = store, queue, options, metrics, stop
        self.training = training  # shared by the tenants' workers: how many adaptations train at once
        # Serves the store's current version: after a commit, and when idle, one another process made current.
        self.serve_current = serve_current
        self.watch, self.watch_interval = watch, watch_interval
        self.live: Live | None = None  # the adaptation being run; replaced whole, read by request threads

    def run(self) -> None:
        """Adapt to queued jobs one at a time until stopped; between jobs, serve what another process made current."""
        while not self.stop.is_set():
            job = None
            if self.training.acquire(timeout=0.5):  # a job stays queued while other tenants' adaptations train
                try:
                    job = self.queue.claim()
                    if job is not None:
                        self._adapt(job)
                finally:
                    self.training.release()
            if job is None:
                self.serve_current()
                self.stop.wait(0.5)

    def progress(self, job_id: str) -> dict | None:
        """The live progress of the adaptation `job_id` while it runs, else None."""
        live = self.live
        return live.to_dict() if live is not None and live.job == job_id else None

    def _adapt(self, job: Job) -> None:
        status = {"now": "generating"}
        live = self.live = Live(job.id)

        def progress(stage: str, done: int, total: int, loss: float | None) -> None:
            if not live.stages or live.stages[-1][0] != stage:
                live.stages.append((stage, round(time.time() - live.started, 1)))
            live.done, live.total = done, total
            if stage == "train":
                live.losses.append(loss)  # None for a step whose loss was not finite (JSON has no NaN)
            wanted = STATUS_OF_STAGE.get(stage, status["now"])
            if wanted != status["now"]:
                status["now"] = wanted
                self.queue.update(job.id, wanted)

        try:
            result = learn(self.store, [d["path"] for d in job.documents], self.options, progress)
            outcome = "committed" if result.committed else "rolled_back"
            if result.committed:
                self.serve_current()  # before the job says committed: a client that sees it gets it
            report = {**result.report, "notes": result.notes}  # e.g. a document with nothing to quiz
            self.queue.update(job.id, outcome, result.version, result.reason, report)
            self.metrics.adaptations.labels(outcome).inc()
        except SealError as err:
            self.queue.update(job.id, "failed", reason=str(err))
            self.metrics.adaptations.labels("failed").inc()
        except Exception as err:  # noqa: BLE001 - a bug must not kill the worker; the job says what happened
            self.queue.update(job.id, "failed", reason=f"internal error: {type(err).__name__}: {err}")
            self.metrics.adaptations.labels("failed").inc()
        finally:
            self.live = None
        self.file_inbox(self.queue.job(job.id))

    def file_inbox(self, job: Job | None) -> None:
        """Move a finished job's inbox file to done/ or failed/ (prefixed with the job id)."""
        if job is None or job.inbox_path is None or job.status not in FINISHED:
            return
        source = Path(job.inbox_path)
        if source.exists():
            target = source.parent / ("done" if job.status == "committed" else "failed") / f"{job.id}-{source.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.move(source, target)

    def sweep_inbox(self) -> None:
        """Record a job for each new text file in the inbox; the file is moved only once its job is finished."""
        assert self.watch is not None
        for path in sorted(self.watch.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            if time.time() - path.stat().st_mtime < 1.0:
                continue  # still being written
            raw = path.read_bytes()
            known = self.queue.from_inbox(str(path), sha256_of(raw))
            if known is not None:
                self.file_inbox(known)  # finished before a restart, not yet moved
                continue
            try:
                self.queue.submit([(path.name, raw)], "inbox", str(path))
            except ApiError as err:
                if err.status == 429:
                    return  # the queue is full: the file waits in the inbox
                job = self.queue.add("inbox", [{"name": path.name, "path": str(path), "sha256": sha256_of(raw)}],
                                     str(path), status="failed", reason=err.message)
                self.metrics.adaptations.labels("failed").inc()
                self.file_inbox(job)

    def watch_inbox(self) -> None:
        while not self.stop.is_set():
            self.sweep_inbox()
            self.stop.wait(self.watch_interval)
