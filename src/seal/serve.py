"""`seal serve`: an OpenAI-compatible server that keeps adapting while it serves.

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
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from seal import model as lm_ops
from seal.config import ServeConfig
from seal.documents import TEXT_SUFFIXES, parse_document
from seal.errors import SealError
from seal.learn import learn, load_version
from seal.model import LM
from seal.store import FINISHED, Job, Store

MODEL_ID = "seal"
STATUS_OF_STAGE = {"load": "generating", "generate": "generating", "train": "training", "check": "checking"}


@dataclass
class Served:
    """The model answering requests and the version it carries; replaced whole, never changed in place."""

    lm: LM
    version: str


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def _error_response(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = MODEL_ID
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = MODEL_ID
    prompt: str | list[str]
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False


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


def _text(content: str | list[dict] | None) -> str:
    """A message's text; content given as parts (OpenAI's list form) keeps its text parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


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
        self.swap_lock = threading.Lock()  # one swap at a time; readers never take it
        store = Store(config.home)
        self.model_name = config.model or store.model() or lm_ops.EMBEDDED
        self.options = dataclasses.replace(config.learn, model=self.model_name, device=config.device)
        for job in store.interrupt_running():
            self.metrics.adaptations.labels("interrupted").inc()
            self._file_inbox(job)
        lm, version = load_version(store, self.model_name, config.device)
        self.served = Served(lm, version)
        self.metrics.version.labels(version).set(1)
        self.threads = [threading.Thread(target=self._work, name="seal-adapt", daemon=True)]
        if config.watch is not None:
            config.watch.mkdir(parents=True, exist_ok=True)
            self.threads.append(threading.Thread(target=self._watch, name="seal-inbox", daemon=True))

    # ---- serving -------------------------------------------------------------------------------------

    def swap(self, store: Store, version_id: str) -> None:
        """Load `version_id` beside the serving model, then make it the served one in one assignment."""
        with self.swap_lock:
            lm, version = load_version(store, self.model_name, self.config.device, version_id)
            previous, self.served = self.served, Served(lm, version)
            self.metrics.version.remove(previous.version)
            self.metrics.version.labels(version).set(1)

    def token_limit(self, asked: int | None) -> int:
        if asked is not None and asked < 1:
            raise ApiError(400, "max_tokens must be at least 1", code="invalid_max_tokens")
        return min(asked or self.config.max_tokens, self.config.max_tokens)

    def complete(self, served: Served, prompts: list[str], max_tokens: int, temperature: float | None,
                 top_p: float | None, seed: int | None) -> list[tuple[str, int, int, str]]:
        """(text, prompt tokens, completion tokens, finish reason) per prompt. Greedy unless a temperature is set."""
        tok = served.lm.tokenizer
        ids = lm_ops.generate_tokens(served.lm, prompts, max_tokens, temperature or 0.0, top_p or 1.0,
                                     seed=seed or 0, batch_size=len(prompts))
        results = []
        for prompt, tokens in zip(prompts, ids):
            prompt_tokens = len(tok(prompt, add_special_tokens=False)["input_ids"])
            text = tok.decode(tokens, skip_special_tokens=True).strip()
            results.append((text, prompt_tokens, len(tokens), "length" if len(tokens) >= max_tokens else "stop"))
            self.metrics.tokens.labels("prompt").inc(prompt_tokens)
            self.metrics.tokens.labels("completion").inc(len(tokens))
        return results

    def stream_chat(self, served: Served, prompt: str, max_tokens: int, request_id: str,
                    include_usage: bool) -> Iterator[str]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]` (after a usage chunk if asked)."""
        start = time.perf_counter()
        created = int(time.time())

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                    "system_fingerprint": served.version, "choices": choices, **({"usage": usage} if usage else {})}
            return f"data: {json.dumps(body)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        pieces: list[str] = []
        for piece in lm_ops.stream(served.lm, prompt, max_tokens):
            if not pieces:
                self.metrics.first_token.observe(time.perf_counter() - start)
            pieces.append(piece)
            yield chunk({"content": piece})
        tok = served.lm.tokenizer
        produced = len(tok("".join(pieces), add_special_tokens=False)["input_ids"])
        prompt_tokens = len(tok(prompt, add_special_tokens=False)["input_ids"])
        self.metrics.tokens.labels("prompt").inc(prompt_tokens)
        self.metrics.tokens.labels("completion").inc(produced)
        yield chunk({}, "length" if produced >= max_tokens else "stop")
        if include_usage:  # OpenAI's form: one more chunk, with no choices
            yield chunk(None, usage={"prompt_tokens": prompt_tokens, "completion_tokens": produced,
                                     "total_tokens": prompt_tokens + produced})
        yield "data: [DONE]\n\n"

    # ---- adapting ------------------------------------------------------------------------------------

    def enqueue(self, store: Store, files: list[tuple[str, bytes]], origin: str, inbox_path: str | None = None) -> Job:
        """Validate documents, keep a copy under $SEAL_HOME/uploads, and record the job; raises ApiError on bad input."""
        if not files:
            raise ApiError(400, "no document: send one or more files as multipart field 'file'", code="no_file")
        if len(files) > self.config.max_files:
            raise ApiError(400, f"{len(files)} documents in one adaptation; the limit is {self.config.max_files}",
                           code="too_many_files")
        if len(store.jobs(("queued",))) >= self.config.max_queued:
            raise ApiError(429, f"{self.config.max_queued} adaptations are already queued; try again later",
                           "rate_limit_error", "queue_full")
        hashes = []
        for name, raw in files:
            if len(raw) > self.config.max_upload_bytes:
                raise ApiError(413, f"{name} is {len(raw)} bytes; the limit is {self.config.max_upload_bytes}",
                               code="file_too_large")
            try:
                hashes.append(parse_document(raw, name, Path(name).stem).sha256)
            except SealError as err:
                raise ApiError(415 if "binary" in str(err) or "UTF-8" in str(err) else 400, str(err),
                               code="bad_document") from None
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
        store = Store(self.config.home)
        while not self.stop.is_set():
            job = store.claim_job()
            if job is None:
                self.stop.wait(0.5)
                continue
            self.metrics.queued.set(len(store.jobs(("queued",))))
            self._adapt(store, job)

    def _adapt(self, store: Store, job: Job) -> None:
        status = {"now": "generating"}

        def progress(stage: str, done: int, total: int) -> None:
            wanted = STATUS_OF_STAGE.get(stage, status["now"])
            if wanted != status["now"]:
                status["now"] = wanted
                store.update_job(job.id, wanted)

        try:
            result = learn(store, [d["path"] for d in job.documents], self.options, progress)
        except SealError as err:
            store.update_job(job.id, "failed", reason=str(err))
            self.metrics.adaptations.labels("failed").inc()
        except Exception as err:  # noqa: BLE001 - a bug must not kill the worker; the job says what happened
            store.update_job(job.id, "failed", reason=f"internal error: {type(err).__name__}: {err}")
            self.metrics.adaptations.labels("failed").inc()
        else:
            outcome = "committed" if result.committed else "rolled_back"
            if result.committed:
                self.swap(store, result.version)  # before the job says committed: a client that sees it gets it
            store.update_job(job.id, outcome, result.version, result.reason, result.report)
            self.metrics.adaptations.labels(outcome).inc()
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

    def sweep_inbox(self, store: Store) -> None:
        """Record a job for each new text file in the inbox; the file is moved only once its job is finished."""
        assert self.config.watch is not None
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
                self.enqueue(store, [(path.name, raw)], "inbox", str(path))
            except ApiError as err:
                if err.status == 429:
                    return  # the queue is full: the file waits in the inbox
                job = store.enqueue("inbox", [{"name": path.name, "path": str(path), "sha256": sha256_of(raw)}],
                                    str(path), status="failed", reason=err.message)
                self.metrics.adaptations.labels("failed").inc()
                self._file_inbox(job)

    def _watch(self) -> None:
        store = Store(self.config.home)
        while not self.stop.is_set():
            self.sweep_inbox(store)
            self.stop.wait(self.config.watch_interval)


# -----------------------------------------------------------------------------------------------------------------

def create_app(config: ServeConfig) -> FastAPI:
    server = SealServer(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for thread in server.threads:
            thread.start()
        yield
        server.stop.set()

    app = FastAPI(title="seal", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error_response(err.status, err.message, err.kind, err.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return _error_response(400, f"{where}: {first['msg']}" if where else first["msg"], "invalid_request_error",
                               "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error_response(err.status_code, str(err.detail), "invalid_request_error", None)

    @app.exception_handler(SealError)
    async def seal_error(request: Request, err: SealError) -> JSONResponse:
        return _error_response(400, str(err), "invalid_request_error", None)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        server.metrics.requests.labels(path, str(response.status_code)).inc()
        server.metrics.latency.labels(path).observe(time.perf_counter() - start)
        response.headers.setdefault("X-Seal-Version", server.served.version)  # chat sets its own request's
        return response

    def authorize(request: Request, write: bool) -> None:
        if not write and config.public_read:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "invalid_api_key")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": server.served.version, "model": server.model_name}

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        authorize(request, write=False)
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        authorize(request, write=False)
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "seal",
                                            "version": server.served.version}]}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest, request: Request):
        authorize(request, write=False)
        served = server.served  # this request's version, whatever is swapped in meanwhile
        if not body.messages:
            raise ApiError(400, "messages must not be empty", code="empty_messages")
        prompt = served.lm.chat_prompt([{"role": m.role, "content": _text(m.content)} for m in body.messages])
        limit = server.token_limit(body.max_completion_tokens or body.max_tokens)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(server.stream_chat(served, prompt, limit, request_id, include_usage),
                                     media_type="text/event-stream", headers={"X-Seal-Version": served.version})
        text, prompt_tokens, produced, finish = server.complete(served, [prompt], limit, body.temperature,
                                                                body.top_p, body.seed)[0]
        return JSONResponse({
            "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": MODEL_ID,
            "system_fingerprint": served.version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": produced,
                      "total_tokens": prompt_tokens + produced}}, headers={"X-Seal-Version": served.version})

    @app.post("/v1/completions")
    def completions(body: CompletionRequest, request: Request):
        authorize(request, write=False)
        if body.stream:
            raise ApiError(400, "stream is supported on /v1/chat/completions only", code="stream_unsupported")
        served = server.served
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > 16:
            raise ApiError(400, "prompt must be a string or a list of 1 to 16 strings", code="invalid_prompt")
        results = server.complete(served, prompts, server.token_limit(body.max_tokens), body.temperature,
                                  body.top_p, body.seed)
        return JSONResponse({
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": MODEL_ID, "system_fingerprint": served.version,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                        for i, (text, _, _, finish) in enumerate(results)],
            "usage": {"prompt_tokens": sum(r[1] for r in results), "completion_tokens": sum(r[2] for r in results),
                      "total_tokens": sum(r[1] + r[2] for r in results)}}, headers={"X-Seal-Version": served.version})

    @app.post("/v1/adaptations", status_code=202)
    async def adapt(request: Request) -> dict:
        authorize(request, write=True)  # before the body is read: a stranger's upload is never parsed
        declared = int(request.headers.get("content-length") or 0)
        if declared > config.max_files * config.max_upload_bytes + 65536:
            raise ApiError(413, f"the request is {declared} bytes; the limit is {config.max_files} files of "
                           f"{config.max_upload_bytes} bytes", code="request_too_large")
        form = await request.form(max_files=config.max_files + 1, max_fields=16)
        files = []
        for name, upload in form.multi_items():
            if name == "file" and isinstance(upload, UploadFile):
                raw = await upload.read(config.max_upload_bytes + 1)  # one byte more tells an oversize file
                files.append((upload.filename or "document.md", raw))
        return asdict(server.enqueue(Store(config.home), files, "api"))

    @app.get("/v1/adaptations")
    def list_adaptations(request: Request) -> dict:
        authorize(request, write=False)
        return {"object": "list", "data": [asdict(j) for j in Store(config.home).jobs()]}

    @app.get("/v1/adaptations/{job_id}")
    def get_adaptation(job_id: str, request: Request) -> dict:
        authorize(request, write=False)
        job = Store(config.home).job(job_id)
        if job is None:
            raise ApiError(404, f"no adaptation {job_id!r}", code="not_found")
        return asdict(job)

    @app.get("/v1/versions")
    def versions(request: Request) -> dict:
        authorize(request, write=False)
        store = Store(config.home)
        return {"object": "list", "current": store.current_id(), "serving": server.served.version,
                "data": [{k: v for k, v in asdict(version).items() if k != "stats"} for version in store.history()]}

    @app.post("/v1/versions/{version_id}/activate")
    def activate(version_id: str, request: Request) -> dict:
        authorize(request, write=True)
        store = Store(config.home)
        if not any(v.id == version_id for v in store.history()):
            raise ApiError(404, f"no version {version_id!r}", code="not_found")
        try:
            with store.writer():
                previous = store.current_id()
                store.set_current(version_id)
        except SealError as err:
            busy = "another seal process" in str(err)
            raise ApiError(409 if busy else 400, "an adaptation is being trained; activate again when it is done"
                           if busy else str(err), code="busy" if busy else "not_activatable") from None
        server.swap(store, version_id)
        return {"previous": previous, "current": version_id}

    return app
