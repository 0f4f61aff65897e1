"""The API of `seal serve` under /v1: OpenAI's chat and completions, adaptations, versions; /health, /metrics.

Each request is for one tenant: the `model` of chat and completions (`seal`, `seal:NAME`), the `model` query
parameter of the other routes; without it, the key's own tenant (the default one for the server's key).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from seal.blame import blame
from seal.errors import Busy, NotCommitted
from seal.serve.errors import ApiError
from seal.serve.jobs import Job
from seal.serve.server import ANONYMOUS, SealServer, Tenant
from seal.store import Version

INT64 = 2**63
MAX_FORM_PARTS = 1000


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict] | None = None


class Sampled(BaseModel):
    """What chat and completions share, bounded as OpenAI bounds it."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None  # None: the key's own tenant
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    n: int | None = Field(None, ge=1, le=1, description="seal returns one choice per prompt")
    stream: bool = False
    stream_options: dict | None = None


class ChatRequest(Sampled):
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class CompletionRequest(Sampled):
    prompt: str | list[str]
    max_tokens: int | None = 16


class AnswersRequest(BaseModel):
    question: str
    versions: list[str] = []
    max_tokens: int | None = 64


class BlameRequest(BaseModel):
    question: str
    max_tokens: int | None = 64


def _text(content: str | list[dict] | None) -> str:
    """A message's text; content given as parts (OpenAI's list form) keeps its text parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def _usage(body: Sampled) -> bool:
    """Whether a streamed reply ends with a usage chunk (`stream_options.include_usage`)."""
    return bool((body.stream_options or {}).get("include_usage"))


def public_sources(sources: list[dict]) -> list[dict]:
    """A version's documents as API readers see them: by file name, never by a path on the server."""
    return [{**source, "source": Path(source.get("source") or "").name} for source in sources]


def public_job(job: Job) -> dict:
    """A job without where its documents are kept on the server."""
    return {**asdict(job), "documents": [{"name": d["name"], "sha256": d["sha256"]} for d in job.documents],
            "inbox_path": Path(job.inbox_path).name if job.inbox_path else None}


def _summary(version: Version) -> dict:
    """A version for the list: its sources without their text, each check without its detail, and no training
    statistics (those are on the version's own page): 50 versions in 36 kB."""
    fields = {key: value for key, value in vars(version).items() if key != "stats"}  # not asdict: no deep copy
    fields["sources"] = [{key: value for key, value in source.items() if key != "text"}
                         for source in public_sources(version.sources)]
    fields["report"] = {**version.report, "checks": [{key: value for key, value in check.items() if key != "detail"}
                                                     for check in version.report.get("checks", [])]}
    fields["seconds"] = round(sum(version.stats.get("timings", {}).values()), 1)
    return fields


def add_api_routes(app: FastAPI, server: SealServer) -> None:
    def tenant_of(request: Request, model: str | None) -> Tenant:
        """The tenant a request is for, as its key may use it (`app.Guard` found who the key belongs to)."""
        tenant = server.tenant(getattr(request.state, "caller", ANONYMOUS), model)
        request.state.version = tenant.served.version  # the reply's X-Seal-Version
        return tenant

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": server.default.served.version, "model": server.model_name}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        """The tenants this key may use, each with the version it serves."""
        caller = getattr(request.state, "caller", ANONYMOUS)
        return {"object": "list", "data": [{"id": t.model, "object": "model", "created": 0, "owned_by": "seal",
                                            "version": t.served.version} for t in server.visible(caller)]}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest, request: Request):
        served = tenant_of(request, body.model).served  # this request's version, whatever is swapped in meanwhile
        if not body.messages:
            raise ApiError(400, "messages must not be empty", code="empty_messages")
        prompt = served.lm.chat_prompt([{"role": "system" if m.role == "developer" else m.role,
                                         "content": _text(m.content)} for m in body.messages])
        limit = server.token_limit(body.max_completion_tokens or body.max_tokens)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        generation = server.submit(served, prompt, limit, body.temperature, body.top_p, body.seed)
        if body.stream:
            return StreamingResponse(server.stream(served, [generation], request_id, _usage(body), chat=True),
                                     media_type="text/event-stream", headers={"X-Seal-Version": served.version})
        text, prompt_tokens, produced, finish = server.complete([generation])[0]
        return JSONResponse({
            "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": served.model,
            "system_fingerprint": served.version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": produced,
                      "total_tokens": prompt_tokens + produced}}, headers={"X-Seal-Version": served.version})

    @app.post("/v1/completions")
    def completions(body: CompletionRequest, request: Request):
        served = tenant_of(request, body.model).served
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > 16:
            raise ApiError(400, "prompt must be a string or a list of 1 to 16 strings", code="invalid_prompt")
        limit = server.token_limit(body.max_tokens)
        generations = [server.submit(served, prompt, limit, body.temperature, body.top_p, body.seed)
                       for prompt in prompts]
        request_id = f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(server.stream(served, generations, request_id, _usage(body), chat=False),
                                     media_type="text/event-stream", headers={"X-Seal-Version": served.version})
        results = server.complete(generations)
        return JSONResponse({
            "id": request_id, "object": "text_completion", "created": int(time.time()),
            "model": served.model, "system_fingerprint": served.version,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                        for i, (text, _, _, finish) in enumerate(results)],
            "usage": {"prompt_tokens": sum(r[1] for r in results), "completion_tokens": sum(r[2] for r in results),
                      "total_tokens": sum(r[1] + r[2] for r in results)}}, headers={"X-Seal-Version": served.version})

    @app.post("/v1/adaptations", status_code=202)
    async def adapt(request: Request, model: str | None = None) -> dict:
        tenant = tenant_of(request, model)
        # The body's size is bounded before this runs (`app.Guard`); `JobQueue.submit` counts the documents and
        # names the limit, so the form parser's own count (and its message) stays out of the way.
        form = await request.form(max_files=MAX_FORM_PARTS, max_fields=16)
        files = []
        for name, upload in form.multi_items():
            if name == "file" and isinstance(upload, UploadFile):
                raw = await upload.read(server.config.max_upload_bytes + 1)  # one byte more tells an oversize file
                files.append((upload.filename or "document.md", raw))
        return public_job(tenant.queue.submit(files, "api"))

    @app.get("/v1/adaptations")
    def list_adaptations(request: Request, model: str | None = None) -> dict:
        tenant = tenant_of(request, model)
        return {"object": "list",
                "data": [{**public_job(j), "progress": tenant.worker.progress(j.id)} for j in tenant.queue.jobs()]}

    @app.get("/v1/adaptations/{job_id}")
    def get_adaptation(job_id: str, request: Request, model: str | None = None) -> dict:
        """The job, with `progress` while it runs: its stages so far, steps done of total, the training losses."""
        tenant = tenant_of(request, model)
        job = tenant.queue.job(job_id)
        if job is None:
            raise ApiError(404, f"no adaptation {job_id!r}", code="not_found")
        return {**public_job(job), "progress": tenant.worker.progress(job_id)}

    @app.get("/v1/versions")
    def versions(request: Request, model: str | None = None) -> JSONResponse:
        """Every version, oldest first, without its documents' text and training statistics (`/v1/versions/ID`).
        Answered as plain JSON: FastAPI's encoder walking every value tripled the time with 50 versions."""
        tenant = tenant_of(request, model)
        store = tenant.store
        return JSONResponse({"object": "list", "model": tenant.model, "current": store.current_id(),
                             "serving": tenant.served.version,
                             "data": [_summary(version) for version in store.history()]})

    @app.get("/v1/versions/{version_id}")
    def version(version_id: str, request: Request, model: str | None = None) -> dict:
        """Everything about one version, as `seal show --json` prints it."""
        store = tenant_of(request, model).store
        found = store.find(version_id)
        if found is None:
            raise ApiError(404, f"no version {version_id!r}", code="not_found")
        return {**asdict(found), "sources": public_sources(found.sources), "current": store.current_id() == version_id,
                "self_edits": [asdict(e) for e in store.self_edits(version_id)],
                "probes": [asdict(p) for p in store.probes(version_id)]}

    @app.post("/v1/answers")
    def answers(body: AnswersRequest, request: Request, model: str | None = None) -> dict:
        """One question answered closed-book by several versions side by side (default: the current one)."""
        tenant = tenant_of(request, model)
        asked = body.versions or [tenant.store.current_id()]
        if len(asked) > 16:
            raise ApiError(400, "ask at most 16 versions at once", code="too_many_versions")
        return {"question": body.question,
                "data": server.answers(tenant, body.question, asked, server.token_limit(body.max_tokens))}

    @app.post("/v1/blame")
    def blame_route(body: BlameRequest, request: Request, model: str | None = None) -> dict:
        """`seal blame`: every version of the current lineage answers; where the answer changed, what it learned."""
        store = tenant_of(request, model).store
        with server.reading() as base:
            steps = blame(store, body.question, max_new_tokens=server.token_limit(body.max_tokens), base=base)
        return {"question": body.question, "data": [asdict(step) for step in steps]}

    @app.post("/v1/versions/{version_id}/activate")
    def activate(version_id: str, request: Request, model: str | None = None) -> dict:
        tenant = tenant_of(request, model)
        if tenant.store.find(version_id) is None:
            raise ApiError(404, f"no version {version_id!r}", code="not_found")
        try:
            previous = server.activate(tenant, version_id)
        except Busy:
            raise ApiError(409, "an adaptation is being trained; activate again when it is done", code="busy") from None
        except NotCommitted as err:
            raise ApiError(400, str(err), code="not_activatable") from None
        return {"previous": previous, "current": version_id}
