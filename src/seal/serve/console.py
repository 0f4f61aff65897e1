"""The web console of `seal serve`: one HTML shell and a script without a build step, no CDN (it works offline).

Every page is the same shell; the script reads the page from the URL and draws it from the /v1 API with the key the
person entered once (kept in the browser's localStorage). A version or run that does not exist is answered with the
shell and a 404 status, which the page shows as such. Run folders (`--runs`) are read here: their results, plots
and settings, never anything outside the folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from seal.serve.errors import ApiError
from seal.serve.server import SealServer

STATIC = resources.files("seal.serve") / "console"
RUN_FILES = {".md": "text/markdown; charset=utf-8", ".json": "application/json", ".png": "image/png",
             ".svg": "image/svg+xml", ".csv": "text/csv; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def run_folders(root: Path) -> list[dict]:
    """Every folder under `root` holding a run's settings (config.json) or results (results.md), by its path."""
    folders = sorted({marker.parent for name in ("config.json", "results.md") for marker in root.rglob(name)})
    found = []
    for folder in folders:
        if folder == root or any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in RUN_FILES)
        found.append({"name": folder.relative_to(root).as_posix(), "files": [f.name for f in files],
                      "modified": int(max(f.stat().st_mtime for f in files))})
    return found


def run_folder(root: Path, name: str) -> Path:
    """The run folder `name` under `root`, as `run_folders` lists them; a name that leaves `root`, names a hidden
    folder or no run is a 404."""
    folder = (root / name).resolve()
    if (not folder.is_relative_to(root.resolve()) or folder == root.resolve() or name.startswith("/")
            or any(part.startswith(".") for part in Path(name).parts)
            or not ((folder / "config.json").is_file() or (folder / "results.md").is_file())):
        raise ApiError(404, f"no run {name!r}", code="not_found")
    return folder


def run_file(root: Path, name: str, file: str) -> Path:
    """A result file at the top of a run folder, never one a link points at outside it."""
    folder = run_folder(root, name)
    path = (folder / file).resolve()
    if (not re.fullmatch(r"[\w.-]+", file) or path.parent != folder or path.suffix not in RUN_FILES
            or not path.is_file()):
        raise ApiError(404, f"no file {file!r} in run {name!r}", code="not_found")
    return path


def add_console_routes(app: FastAPI, server: SealServer) -> Callable[[int], HTMLResponse]:
    """The console's pages, assets and run folders; returns the page maker (the app answers unknown pages with it)."""
    shell = (STATIC / "index.html").read_text(encoding="utf-8")
    assets = {name: (STATIC / name).read_bytes() for name in ASSETS}

    def page(status: int = 200) -> HTMLResponse:
        flags = json.dumps({"status": status, "publicRead": server.config.public_read,
                            "runs": server.config.runs is not None})
        return HTMLResponse(shell.replace("{{flags}}", flags), status_code=status)

    for path in ("/", "/ask", "/learn", "/chat", "/benchmarks"):
        app.add_api_route(path, lambda: page(), methods=["GET"], include_in_schema=False)

    @app.get("/versions/{version_id}", include_in_schema=False)
    def version_page(version_id: str) -> HTMLResponse:
        return page(200 if server.default.store.find(version_id) is not None else 404)

    @app.get("/benchmarks/{name:path}", include_in_schema=False)
    def run_page(name: str) -> HTMLResponse:
        try:
            run_folder(runs_root(server), name)
        except ApiError:
            return page(404)
        return page()

    @app.get("/console/{asset}", include_in_schema=False)
    def asset(asset: str) -> Response:
        if asset not in assets:
            raise ApiError(404, f"no file {asset!r}", code="not_found")
        return Response(assets[asset], media_type=ASSETS[asset], headers={"Cache-Control": "no-cache"})

    @app.get("/v1/runs")
    def runs() -> dict:
        return {"object": "list", "data": run_folders(runs_root(server))}

    @app.get("/v1/runs/{name:path}/files/{file}")
    def result_file(name: str, file: str) -> FileResponse:
        path = run_file(runs_root(server), name, file)
        # Never run as a page of the console's origin (an SVG could carry a script that reads the stored key).
        return FileResponse(path, media_type=RUN_FILES[path.suffix],
                            headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"})

    return page


def runs_root(server: SealServer) -> Path:
    if server.config.runs is None:
        raise ApiError(404, "this server shows no benchmark runs: start it with --runs DIR", code="no_runs")
    return server.config.runs
