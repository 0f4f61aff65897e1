"""The server's state: the model being served and its swaps, and the parts around it (the decoding scheduler, the
adaptation queue and worker, metrics).

Each request is answered by the version that was current when it started. Adaptations (uploads and inbox files)
wait in a durable queue (`jobs.py`) and run one at a time in a background thread (`worker.py`); a committed version
is loaded beside the serving one and swapped in with a single assignment after its checks pass, so no request fails
or sees a half-loaded model.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from seal import model as lm_ops
from seal.config import ServeConfig
from seal.learn import closed_book, load_version, wearing
from seal.model import LM
from seal.serve.errors import ApiError
from seal.serve.jobs import JobQueue
from seal.serve.metrics import Metrics
from seal.serve.scheduler import Generation, Sampling, Scheduler
from seal.serve.worker import AdaptationWorker
from seal.store import BASE_VERSION, Store

MODEL_ID = "seal"


@dataclass
class Served:
    """The model answering requests and the version it carries; replaced whole, never changed in place."""

    lm: LM
    version: str


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
        self.queue = JobQueue(store, config)
        self.metrics.queued.set_function(lambda: len(self.queue.jobs(("queued",))))  # read when scraped
        options = dataclasses.replace(config.learn, model=self.model_name, device=config.device)
        self.worker = AdaptationWorker(store, self.queue, options, self.metrics, self.stop, self.serve_current,
                                       config.watch, config.watch_interval)
        for job in self.queue.interrupt_running():
            self.metrics.adaptations.labels("interrupted").inc()
            self.worker.file_inbox(job)
        lm, version = load_version(store, self.model_name, config.device)
        self.served = Served(lm, version)
        self.base: LM | None = None  # the base model that earlier versions are put on to be asked (`reading`)
        self.read_lock = threading.Lock()
        self.metrics.version.labels(version).set(1)
        self.scheduler = Scheduler(config.max_batch, on_step=self.metrics.batch.observe,
                                   on_end=lambda finish: self.metrics.generations.labels(finish).inc())
        self.metrics.decoding.set_function(lambda: self.scheduler.in_flight)
        self.threads = [threading.Thread(target=self.worker.run, name="seal-adapt", daemon=True)]
        if config.watch is not None:
            config.watch.mkdir(parents=True, exist_ok=True)
            self.threads.append(threading.Thread(target=self.worker.watch_inbox, name="seal-inbox", daemon=True))

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
