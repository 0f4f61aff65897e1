"""The FastAPI application of `seal serve`: error responses in OpenAI's shape, request metrics, the API and the console."""

from __future__ import annotations

import logging
import re
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seal.config import ServeConfig
from seal.errors import SealError
from seal.serve.console import add_console_routes
from seal.serve.routes import add_api_routes
from seal.serve.errors import ApiError
from seal.serve.server import SealServer


log = logging.getLogger("seal.serve")


def _error_response(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def create_app(config: ServeConfig) -> FastAPI:
    server = SealServer(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        yield
        server.stop.set()
        server.scheduler.stop()

    app = FastAPI(title="seal", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(Guard, server=server)

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
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code == 404 and not request.url.path.startswith("/v1/") and wants_html(request):
            return console_page(404)  # a person who followed a wrong link gets a page, a client gets JSON
        return _error_response(err.status_code, str(err.detail), "invalid_request_error", None)

    @app.exception_handler(SealError)
    async def seal_error(request: Request, err: SealError) -> JSONResponse:
        return _error_response(400, str(err), "invalid_request_error", None)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, err: BodyTooLarge) -> JSONResponse:
        return _error_response(413, err.detail, "invalid_request_error", "request_too_large")

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # a bug: answered in OpenAI's shape and counted like any other reply
            log.exception("%s %s failed", request.method, request.url.path)
            response = _error_response(500, "internal error; the server's log has the details", "server_error",
                                       "internal_error")
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        server.metrics.requests.labels(path, str(response.status_code)).inc()
        server.metrics.latency.labels(path).observe(time.perf_counter() - start)
        # chat sets its own request's version; other routes of a tenant leave it in the request's state
        response.headers.setdefault("X-Seal-Version", getattr(request.state, "version",
                                                              server.default.served.version))
        return response

    add_api_routes(app, server)
    console_page = add_console_routes(app, server)
    return app


class BodyTooLarge(StarletteHTTPException):
    """Raised while a body is read; an HTTP exception, so that FastAPI's body parser passes it on as it is."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request is larger than the limit of {limit} bytes")


# What needs the key: the API, metrics and the API's own docs. The console's pages and assets hold no data (each
# page fetches it from /v1 with the key).
PROTECTED = re.compile(r"^/(v1/|metrics$|docs|redoc|openapi\.json$)")
WRITES = re.compile(r"^/v1/(adaptations|versions/[^/]+/activate)$")


class Guard:
    """Every request's key and body size, checked before its body is read: a stranger's upload or bad JSON is
    never parsed, and a body sent in chunks (no Content-Length) is cut off at the limit."""

    def __init__(self, app: ASGIApp, server: SealServer):
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = Headers(scope=scope)
        write = method == "POST" and WRITES.match(path) is not None
        config = self.server.config
        limit = config.max_files * config.max_upload_bytes + 65536 if write else config.max_body_bytes
        try:
            if PROTECTED.match(path):
                caller = self.server.caller(headers.get("authorization", ""))
                self.server.permit(caller, path, write)
                scope.setdefault("state", {})["caller"] = caller  # read by the routes as request.state.caller
            declared = int(headers.get("content-length") or 0)
        except ApiError as err:
            return await _error_response(err.status, err.message, err.kind, err.code)(scope, receive, send)
        except ValueError:
            return await _error_response(400, "Content-Length is not a number", "invalid_request_error",
                                         "invalid_request")(scope, receive, send)
        if declared > limit:
            return await _error_response(413, f"the request is {declared} bytes; the limit is {limit}",
                                         "invalid_request_error", "request_too_large")(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")
