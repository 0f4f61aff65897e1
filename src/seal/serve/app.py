"""The FastAPI application of `seal serve`: error responses in OpenAI's shape, request metrics, the API and the console."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from seal.config import ServeConfig
from seal.errors import SealError
from seal.serve.console import add_console_routes
from seal.serve.routes import add_api_routes
from seal.serve.server import ApiError, SealServer


def _error_response(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def create_app(config: ServeConfig) -> FastAPI:
    server = SealServer(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.scheduler.start()
        for thread in server.threads:
            thread.start()
        yield
        server.stop.set()
        server.scheduler.stop()

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
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code == 404 and not request.url.path.startswith("/v1/") and wants_html(request):
            return console_page(404)  # a person who followed a wrong link gets a page, a client gets JSON
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

    add_api_routes(app, server)
    console_page = add_console_routes(app, server)
    return app


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")
