"""The server's state: the tenants (each a lineage with its store, adaptation queue and worker, and the version it
serves), the one base model they share, and the parts around them (the decoding scheduler, metrics, keys).

Each request is answered by the version its tenant served when it started. Adaptations (uploads and inbox files)
wait in each tenant's durable queue (`jobs.py`) and run in background threads (`worker.py`), as many at once as
`--adaptations` allows; a committed version's adapters are put on the shared model beside the serving ones and the
tenant's served version is swapped with a single assignment, so no request fails or sees a half-loaded model.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from seal import model as lm_ops
from seal.config import ServeConfig
from seal.errors import NotFound, SealError
from seal.learn import closed_book, load_version, wearing
from seal.model import LM
from seal.prompts import answer_messages
from seal.serve.errors import ApiError
from seal.serve.jobs import JobQueue
from seal.serve.metrics import Metrics
from seal.serve.scheduler import Generation, Sampling, Scheduler
from seal.serve.shared import Served, SharedBase
from seal.serve.worker import AdaptationWorker
from seal.store import BASE_VERSION, Store
from seal.tenants import digest, key_opens, model_id, open_tenant, tenant_names, tenant_of

log = logging.getLogger("seal.serve")
HOUSEKEEPING_SECONDS = 2.0  # how often new tenants are looked for and retired adapters taken off


@dataclass
class Tenant:
    """A lineage served beside the others: its store, adaptation queue and worker, and what it serves now."""

    name: str | None  # None: the default tenant, the store at $SEAL_HOME
    store: Store
    queue: JobQueue
    worker: AdaptationWorker
    served: Served  # replaced whole on a swap
    threads: list[threading.Thread]

    @property
    def model(self) -> str:
        return model_id(self.name)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the operator (the server's key opens every tenant), a tenant (its key opens that tenant
    only), or, with neither, an anonymous reader (--public-read: reads of the default tenant)."""

    tenant: str | None = None
    operator: bool = False


ANONYMOUS = Caller()


class SealServer:
    """Holds the tenants and the shared model; the FastAPI routes call into it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.stop = threading.Event()
        # Moving a tenant's current pointer and swapping what it serves happen together under this lock (activation,
        # a committed adaptation, a version made by another process); requests never take it.
        self.swap_lock = threading.Lock()
        self.training = threading.Semaphore(config.adaptations)
        self.scheduler = Scheduler(config.max_batch, on_step=self.metrics.batch.observe,
                                   on_end=lambda finish: self.metrics.generations.labels(finish).inc())
        default = Store(config.home)  # each store is opened once: its connection is shared by every thread
        self.model_name = config.model or default.model() or lm_ops.EMBEDDED
        self.options = dataclasses.replace(config.learn, model=self.model_name, device=config.device)
        default.ensure_model(self.model_name)
        self.shared = SharedBase(lm_ops.load(self.model_name, None, config.device), self.scheduler.model_lock)
        self.tenants: dict[str | None, Tenant] = {}
        self.refused: set[str] = set()  # tenants that cannot be served (another base model), told once in the log
        self.started = False
        self._open(None, default)
        for name in tenant_names(config.home):
            self._open(name, open_tenant(config.home, name))
        self.base: LM | None = None  # the base model that earlier versions are put on to be asked (`reading`)
        self.read_lock = threading.Lock()
        self.metrics.queued.set_function(  # read when scraped
            lambda: sum(t.queue.queued() for t in list(self.tenants.values())))
        self.metrics.decoding.set_function(lambda: self.scheduler.in_flight)
        self.housekeeper = threading.Thread(target=self._housekeeping, name="seal-tenants", daemon=True)

    @property
    def default(self) -> Tenant:
        return self.tenants[None]

    def start(self) -> None:
        self.scheduler.start()
        self.housekeeper.start()
        for tenant in list(self.tenants.values()):
            for thread in tenant.threads:
                thread.start()
        self.started = True

    def _open(self, name: str | None, store: Store) -> Tenant:
        """Serve tenant `name`: its current version put on the shared model, its queue and worker made."""
        store.ensure_model(self.model_name)
        queue = JobQueue(store, self.config)
        watch = self.config.watch if name is None or self.config.watch is None else self.config.watch / "tenants" / name
        worker = AdaptationWorker(store, queue, self.options, self.metrics, self.stop,
                                  lambda: self.serve_current(name), self.training, watch, self.config.watch_interval)
        for job in queue.interrupt_running():
            self.metrics.adaptations.labels(job.status).inc()
            worker.file_inbox(job)
        served = self.shared.serve(store, name, store.current_id())
        label = name or "seal"
        threads = [threading.Thread(target=worker.run, name=f"seal-adapt-{label}", daemon=True)]
        if watch is not None:
            watch.mkdir(parents=True, exist_ok=True)
            threads.append(threading.Thread(target=worker.watch_inbox, name=f"seal-inbox-{label}", daemon=True))
        tenant = self.tenants[name] = Tenant(name, store, queue, worker, served, threads)
        self.metrics.version.labels(served.model, served.version).set(1)
        if self.started:
            for thread in threads:
                thread.start()
        return tenant

    def _housekeeping(self) -> None:
        """Serve tenants added while the server runs (`seal tenant add`); take off adapters nothing serves."""
        while not self.stop.wait(HOUSEKEEPING_SECONDS):
            for name in tenant_names(self.config.home):
                if name in self.tenants or name in self.refused:
                    continue
                with self.swap_lock:
                    try:
                        self._open(name, open_tenant(self.config.home, name))
                    except SealError as err:
                        self.refused.add(name)
                        log.warning("tenant %s is not served: %s", name, err)
            with self.swap_lock, self.scheduler.model_lock:
                self.shared.collect(self.scheduler.adapters_in_use())

    # ---- keys and tenants ----------------------------------------------------------------------------

    def caller(self, authorization: str) -> Caller:
        """Who a request's key belongs to (no key: ANONYMOUS); a key that opens nothing is a 401."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if not authorization:
            return ANONYMOUS
        if scheme.lower() == "bearer" and token:
            if hmac.compare_digest(token.encode(), self.config.api_key.encode()):
                return Caller(operator=True)
            key_digest = digest(token)
            for tenant in list(self.tenants.values()):
                if tenant.name is not None and key_opens(tenant.store, key_digest):
                    return Caller(tenant=tenant.name)
        raise ApiError(401, "wrong API key: send 'Authorization: Bearer <key>'", "authentication_error",
                       "invalid_api_key")

    def permit(self, caller: Caller, path: str, write: bool) -> None:
        """Writes always need a key; reads need one unless the server was started with --public-read. A tenant's
        key opens the API (/v1/) only: metrics and the API's docs are the operator's."""
        if caller == ANONYMOUS and (write or not self.config.public_read):
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error",
                           "invalid_api_key")
        if caller.tenant is not None and not path.startswith("/v1/"):
            raise ApiError(403, "a tenant's key opens the API under /v1/ only", "permission_error",
                           "insufficient_permissions")

    def tenant(self, caller: Caller, model: str | None) -> Tenant:
        """The tenant a request names by `model` (None: the caller's own; the default tenant for the operator); an
        unknown one and one the caller may not use get the same 404, so a key learns nothing of other tenants."""
        try:
            name = caller.tenant if model is None else tenant_of(model)
        except NotFound:
            name = "?"
        visible = caller.operator or name == caller.tenant
        if not visible or name not in self.tenants:
            raise ApiError(404, f"the model {model!r} does not exist, or this key cannot use it",
                           code="model_not_found")
        return self.tenants[name]

    def visible(self, caller: Caller) -> list[Tenant]:
        """The tenants a caller may use."""
        return [t for t in list(self.tenants.values()) if caller.operator or t.name == caller.tenant]

    # ---- serving -------------------------------------------------------------------------------------

    def _swap(self, tenant: Tenant, version_id: str) -> None:
        """Put `version_id`'s adapters on the shared model, then make it the tenant's served version."""
        served = self.shared.serve(tenant.store, tenant.name, version_id)
        previous, tenant.served = tenant.served, served
        self.shared.retire(previous, [t.served for t in self.tenants.values()])
        self.metrics.version.remove(previous.model, previous.version)
        self.metrics.version.labels(served.model, served.version).set(1)

    def serve_current(self, name: str | None = None) -> None:
        """Serve the tenant's current version if another is served: after a commit, or a `seal learn` or
        `seal rollback` by another process on the same store."""
        with self.swap_lock:
            tenant = self.tenants[name]
            current = tenant.store.current_id()
            if current != tenant.served.version:
                self._swap(tenant, current)

    def activate(self, tenant: Tenant, version_id: str) -> str:
        """Make `version_id` the tenant's current version and serve it, as one step; returns the version before."""
        with self.swap_lock:
            with tenant.store.writer():
                previous = tenant.store.current_id()
                tenant.store.set_current(version_id)
            self._swap(tenant, version_id)
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
        sampling = Sampling(min(max_tokens, context - len(ids)), temperature or 0.0,
                            1.0 if top_p is None else top_p, seed)
        generation = self.scheduler.submit(lm, ids, sampling, served.adapter_for(prompt))
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

    def stream(self, served: Served, generations: list[Generation], request_id: str, include_usage: bool,
               chat: bool) -> Iterator[str]:
        """Server-sent events in OpenAI's chunk format, chat's deltas or completions' texts (one choice per
        generation, read in order while all decode together), ending with `data: [DONE]` (after a usage chunk if
        asked). A client that goes away closes this generator, which gives up the requests' batch slots."""
        created = int(time.time())
        tok = served.lm.tokenizer

        def chunk(choice: dict | None, usage: dict | None = None) -> str:
            body = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created, "model": served.model, "system_fingerprint": served.version,
                    "choices": [choice] if choice else [], **({"usage": usage} if usage else {})}
            return f"data: {json.dumps(body)}\n\n"

        def choice(index: int, text: str | None, finish: str | None = None) -> dict:
            if chat:
                return {"index": index, "delta": {} if text is None else {"content": text}, "logprobs": None,
                        "finish_reason": finish}
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}

        try:
            if chat:
                yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None})
            produced = 0
            for index, generation in enumerate(generations):
                tokens: list[int] = []
                sent = ""
                for token in generation:
                    if not tokens and index == 0:
                        self.metrics.first_token.observe(time.perf_counter() - generation.submitted)
                    tokens.append(token)
                    text = tok.decode(tokens, skip_special_tokens=True)
                    if text.endswith("\ufffd"):
                        continue  # a character split across tokens: wait for its end
                    if len(text) > len(sent):
                        yield chunk(choice(index, text[len(sent):]))
                        sent = text
                self.metrics.tokens.labels("completion").inc(len(tokens))
                produced += len(tokens)
                yield chunk(choice(index, None, generation.finish_reason or "stop"))
            if include_usage:  # OpenAI's form: one more chunk, with no choices
                prompt_tokens = sum(len(generation.prompt_ids) for generation in generations)
                yield chunk(None, usage={"prompt_tokens": prompt_tokens, "completion_tokens": produced,
                                         "total_tokens": prompt_tokens + produced})
            yield "data: [DONE]\n\n"
        finally:
            for generation in generations:
                generation.cancel()  # nothing if it has ended; frees the slot of a client that left mid-stream

    @contextmanager
    def reading(self) -> Iterator[LM]:
        """A base model of its own, for asking any version: loaded on first use, one request at a time, because
        each version's adapters are put on it and taken off again (`learn.wearing`)."""
        with self.read_lock:
            if self.base is None:
                self.base = load_version(self.default.store, self.model_name, self.config.device, BASE_VERSION)[0]
            yield self.base

    def answers(self, tenant: Tenant, question: str, version_ids: list[str], max_tokens: int) -> list[dict]:
        """`question` answered closed-book, as `seal ask` answers it, by each of the tenant's versions, in the
        order given."""
        if not question.strip():
            raise ApiError(400, "the question is empty", code="empty_question")
        store = tenant.store
        versions = []
        for version_id in version_ids:
            version = store.find(version_id)
            if version is None and version_id != BASE_VERSION:  # v0 is recorded only once something is learned
                raise ApiError(404, f"no version {version_id!r}", code="not_found")
            if version is not None and version.status == "rolled_back":
                raise ApiError(400, f"{version_id} was rolled back by its checks: it has no weights to answer with",
                               code="rolled_back")
            versions.append(version)
        served = tenant.served
        results = []
        with self.reading() as lm:
            for version_id, version in zip(version_ids, versions):
                start = time.perf_counter()
                if version_id == served.version:  # already on the shared model: asked in the decoding batch
                    prompt = served.lm.chat_prompt(answer_messages(question))
                    answer = self.complete([self.submit(served, prompt, max_tokens, None, None, None)])[0][0]
                else:  # a version of the modules lineage puts on every module up to it: seconds per module
                    with wearing(store, lm, version) if version else nullcontext():
                        answer = closed_book(lm, question, max_tokens)
                results.append({"version": version_id, "answer": answer,
                                "seconds": round(time.perf_counter() - start, 2)})
        return results
