"""The server's state: the model being served and its swaps, the adaptation worker and the inbox watcher.

Each request is answered by the version that was current when it started. Adaptations (uploads and inbox files)
wait in a durable queue in the store's SQLite and run one at a time in a background thread through the same
`learn()` as `seal learn`; a committed version is loaded beside the serving one and swapped in with a single
assignment after its checks pass, so no request fails or sees a half-loaded model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from seal import model as lm_ops
from seal.config import ServeConfig
from seal.documents import TEXT_SUFFIXES, parse_document
from seal.errors import NotText, SealError
from seal.learn import closed_book, learn, load_version, wearing
from seal.model import LM
from seal.serve.scheduler import Generation, Sampling, Scheduler
from seal.store import BASE_VERSION, FINISHED, Job, Store

MODEL_ID = "seal"
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


@dataclass
class Served:
    """The model answering requests and the version it carries; replaced whole, never changed in place."""

    lm: LM
    version: str


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only repeat the start time
        self.registry = CollectorRegistry()
        self.requests = Counter("seal_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram("seal_request_seconds", "Request time (until the response starts)", ["path"],
                                 registry=self.registry)
        self.first_token = Histogram("seal_time_to_first_token_seconds", "Streamed chat: time to the first token",
                                     registry=self.registry)
        self.tokens = Counter("seal_tokens", "Tokens processed", ["kind"], registry=self.registry)
        self.adaptations = Counter("seal_adaptations", "Finished adaptations", ["outcome"], registry=self.registry)
        self.queued = Gauge("seal_adaptations_queued", "Adaptations waiting", registry=self.registry)
        self.version = Gauge("seal_current_version", "The version being served (1 for its label)", ["version"],
                             registry=self.registry)
        self.batch = Histogram("seal_decode_batch_rows", "Requests decoding together, per step",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)


def sha256_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "document.md"


class SealServer:
    """Holds the served model, the adaptation worker and the inbox watcher; the FastAPI routes call into it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.stop = threading.Event()
        # Moving the current pointer and swapping the served model happen together under this lock (activation,
        # a committed adaptation, a version made by another process); requests never take it.
        self.swap_lock = threading.Lock()
        self.store = store = Store(config.home)  # opened once: its connection is shared by every thread
        self.model_name = config.model or store.model() or lm_ops.EMBEDDED
        self.options = dataclasses.replace(config.learn, model=self.model_name, device=config.device)
        for job in store.interrupt_running():
            self.metrics.adaptations.labels("interrupted").inc()
            self._file_inbox(job)
        lm, version = load_version(store, self.model_name, config.device)
        self.served = Served(lm, version)
        self.live: Live | None = None  # the adaptation being run; replaced whole, read by request threads
        self.base: LM | None = None  # the base model that earlier versions are put on to be asked (`reading`)
        self.read_lock = threading.Lock()
        self.metrics.version.labels(version).set(1)
        self.scheduler = Scheduler(config.max_batch, on_step=self.metrics.batch.observe)
        self.threads = [threading.Thread(target=self._work, name="seal-adapt", daemon=True)]
        if config.watch is not None:
            config.watch.mkdir(parents=True, exist_ok=True)
            self.threads.append(threading.Thread(target=self._watch, name="seal-inbox", daemon=True))

    def authorize(self, authorization: str, write: bool) -> None:
        """Writes always need the API key; reads need it unless the server was started with --public-read."""
        if not write and self.config.public_read:
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "invalid_api_key")

    # ---- serving -------------------------------------------------------------------------------------

    def _swap(self, version_id: str) -> None:
        """Load `version_id` beside the serving model, then make it the served one in one assignment."""
        lm, version = load_version(self.store, self.model_name, self.config.device, version_id)
        previous, self.served = self.served, Served(lm, version)
        self.metrics.version.remove(previous.version)
        self.metrics.version.labels(version).set(1)

    def serve_current(self) -> None:
        """Serve the store's current version if another is served: after a commit, or a `seal learn` or
        `seal rollback` by another process on the same store."""
        with self.swap_lock:
            current = self.store.current_id()
            if current != self.served.version:
                self._swap(current)

    def activate(self, version_id: str) -> str:
        """Make `version_id` current and serve it, as one step; returns the version current before."""
        with self.swap_lock:
            with self.store.writer():
                previous = self.store.current_id()
                self.store.set_current(version_id)
            self._swap(version_id)
        return previous

    def token_limit(self, asked: int | None) -> int:
        if asked is not None and asked < 1:
            raise ApiError(400, "max_tokens must be at least 1", code="invalid_max_tokens")
        return min(asked or self.config.max_tokens, self.config.max_tokens)

    def submit(self, served: Served, prompt: str, max_tokens: int, temperature: float | None, top_p: float | None,
               seed: int | None) -> Generation:
        """Queue `prompt` for the decoding batch; greedy unless a temperature is set. A prompt that leaves no room
        in the model's context is refused; `max_tokens` is cut to the room left."""
        lm = served.lm
        ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        context = getattr(lm.model.config, "max_position_embeddings", None) or 2048
        if len(ids) >= context:
            raise ApiError(400, f"the prompt is {len(ids)} tokens; this model's context is {context}",
                           code="context_length_exceeded")
        adapter = lm.router.pick(prompt) if lm.router is not None else None
        sampling = Sampling(min(max_tokens, context - len(ids)), temperature or 0.0,
                            1.0 if top_p is None else top_p, seed)
        generation = self.scheduler.submit(lm, ids, sampling, adapter)
        self.metrics.tokens.labels("prompt").inc(len(ids))
        return generation

    def complete(self, generations: list[Generation]) -> list[tuple[str, int, int, str]]:
        """(text, prompt tokens, completion tokens, finish reason) of each request, once all have ended."""
        results = []
        for generation in generations:
            tokens = generation.wait()
            self.metrics.tokens.labels("completion").inc(len(tokens))
            text = generation.lm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results.append((text, len(generation.prompt_ids), len(tokens), generation.finish_reason or "stop"))
        return results

    def stream_chat(self, served: Served, generation: Generation, request_id: str,
                    include_usage: bool) -> Iterator[str]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]` (after a usage chunk if asked).
        A client that goes away closes this generator, which gives up the request's batch slot."""
        created = int(time.time())
        tok = served.lm.tokenizer

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                    "system_fingerprint": served.version, "choices": choices, **({"usage": usage} if usage else {})}
            return f"data: {json.dumps(body)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            tokens: list[int] = []
            sent = ""
            for token in generation:
                if not tokens:
                    self.metrics.first_token.observe(time.perf_counter() - generation.submitted)
                tokens.append(token)
                text = tok.decode(tokens, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # a character split across tokens: wait for its end
                if len(text) > len(sent):
                    yield chunk({"content": text[len(sent):]})
                    sent = text
            self.metrics.tokens.labels("completion").inc(len(tokens))
            yield chunk({}, generation.finish_reason or "stop")
            if include_usage:  # OpenAI's form: one more chunk, with no choices
                prompt_tokens = len(generation.prompt_ids)
                yield chunk(None, usage={"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                                         "total_tokens": prompt_tokens + len(tokens)})
            yield "data: [DONE]\n\n"
        finally:
            generation.cancel()  # nothing if it has ended; frees the slot of a client that left mid-stream

    @contextmanager
    def reading(self) -> Iterator[LM]:
        """The base model, for asking any version: loaded on first use, one request at a time, because each
        version's adapters are put on it and taken off again (`learn.wearing`)."""
        with self.read_lock:
            if self.base is None:
                self.base = load_version(self.store, self.model_name, self.config.device, BASE_VERSION)[0]
            yield self.base

    def answers(self, question: str, version_ids: list[str], max_tokens: int) -> list[dict]:
        """`question` answered closed-book, as `seal ask` answers it, by each of the versions, in the order given."""
        if not question.strip():
            raise ApiError(400, "the question is empty", code="empty_question")
        store = self.store
        versions = []
        for version_id in version_ids:
            version = store.find(version_id)
            if version is None and version_id != BASE_VERSION:  # v0 is recorded only once something is learned
                raise ApiError(404, f"no version {version_id!r}", code="not_found")
            if version is not None and version.status == "rolled_back":
                raise ApiError(400, f"{version_id} was rolled back by its checks: it has no weights to answer with",
                               code="rolled_back")
            versions.append(version)
        served = self.served
        results = []
        with self.reading() as lm:
            for version_id, version in zip(version_ids, versions):
                start = time.perf_counter()
                if version_id == served.version:  # already worn by the served model: nothing to load
                    answer = closed_book(served.lm, question, max_tokens)
                else:  # a version of the modules lineage puts on every module up to it: seconds per module
                    with wearing(store, lm, version) if version else nullcontext():
                        answer = closed_book(lm, question, max_tokens)
                results.append({"version": version_id, "answer": answer,
                                "seconds": round(time.perf_counter() - start, 2)})
        return results

    # ---- adapting ------------------------------------------------------------------------------------

    def enqueue(self, files: list[tuple[str, bytes]], origin: str, inbox_path: str | None = None) -> Job:
        """Validate documents, keep a copy under $SEAL_HOME/uploads, and record the job; raises ApiError on bad input."""
        if not files:
            raise ApiError(400, "no document: send one or more files as multipart field 'file'", code="no_file")
        store = self.store
        if len(files) > self.config.max_files:
            raise ApiError(400, f"{len(files)} documents in one adaptation; the limit is {self.config.max_files}",
                           code="too_many_files")
        if len(store.jobs(("queued",))) >= self.config.max_queued:
            raise ApiError(429, f"{self.config.max_queued} adaptations are already queued; try again later",
                           "rate_limit_error", "queue_full")
        hashes = []
        for name, raw in files:
            if len(raw) > self.config.max_upload_bytes:  # read one byte past the limit, so its size is unknown
                raise ApiError(413, f"{name} is larger than the limit of {self.config.max_upload_bytes} bytes",
                               code="file_too_large")
            try:
                hashes.append(parse_document(raw, name, Path(name).stem).sha256)
            except NotText as err:
                raise ApiError(415, str(err), code="not_text") from None
            except SealError as err:
                raise ApiError(400, str(err), code="bad_document") from None
        folder = self.config.home / "uploads" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        documents = []
        for (name, raw), sha256 in zip(files, hashes):
            path = folder / _safe_name(name)
            path.write_bytes(raw)
            documents.append({"name": name, "path": str(path), "sha256": sha256})
        job = store.enqueue(origin, documents, inbox_path)
        self.metrics.queued.set(len(store.jobs(("queued",))))
        return job

    def _work(self) -> None:
        while not self.stop.is_set():
            job = self.store.claim_job()
            if job is None:
                self.serve_current()  # a version another process committed or rolled back to
                self.stop.wait(0.5)
                continue
            self.metrics.queued.set(len(self.store.jobs(("queued",))))
            self._adapt(job)

    def progress(self, job_id: str) -> dict | None:
        """The live progress of the adaptation `job_id` while it runs, else None."""
        live = self.live
        return live.to_dict() if live is not None and live.job == job_id else None

    def _adapt(self, job: Job) -> None:
        store = self.store
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
                store.update_job(job.id, wanted)

        try:
            result = learn(store, [d["path"] for d in job.documents], self.options, progress)
            outcome = "committed" if result.committed else "rolled_back"
            if result.committed:
                self.serve_current()  # before the job says committed: a client that sees it gets it
            store.update_job(job.id, outcome, result.version, result.reason, result.report)
            self.metrics.adaptations.labels(outcome).inc()
        except SealError as err:
            store.update_job(job.id, "failed", reason=str(err))
            self.metrics.adaptations.labels("failed").inc()
        except Exception as err:  # noqa: BLE001 - a bug must not kill the worker; the job says what happened
            store.update_job(job.id, "failed", reason=f"internal error: {type(err).__name__}: {err}")
            self.metrics.adaptations.labels("failed").inc()
        finally:
            self.live = None
        self._file_inbox(store.job(job.id))

    # ---- the inbox -----------------------------------------------------------------------------------

    def _file_inbox(self, job: Job | None) -> None:
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
        assert self.config.watch is not None
        store = self.store
        for path in sorted(self.config.watch.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            if time.time() - path.stat().st_mtime < 1.0:
                continue  # still being written
            raw = path.read_bytes()
            known = store.inbox_job(str(path), sha256_of(raw))
            if known is not None:
                self._file_inbox(known)  # finished before a restart, not yet moved
                continue
            try:
                self.enqueue([(path.name, raw)], "inbox", str(path))
            except ApiError as err:
                if err.status == 429:
                    return  # the queue is full: the file waits in the inbox
                job = store.enqueue("inbox", [{"name": path.name, "path": str(path), "sha256": sha256_of(raw)}],
                                    str(path), status="failed", reason=err.message)
                self.metrics.adaptations.labels("failed").inc()
                self._file_inbox(job)

    def _watch(self) -> None:
        while not self.stop.is_set():
            self.sweep_inbox()
            self.stop.wait(self.config.watch_interval)
