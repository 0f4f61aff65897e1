"""`seal serve`: an OpenAI-compatible server that keeps adapting while it serves, with a web console.

- `app.py`: the FastAPI application: the key and body-size guard, error responses, request metrics.
- `routes.py`: the API under /v1 (chat, completions, adaptations, versions).
- `server.py`: the served model and its swaps, asking any version; it holds the parts below.
- `scheduler.py`: continuous batching: every request in flight decodes in one batch per step.
- `jobs.py`: the durable adaptation queue and the uploads it learns from.
- `worker.py`: the adaptation worker and the inbox watcher.
- `metrics.py`, `errors.py`: Prometheus metrics; the API's error type.
- `console.py` and `console/`: the web console at `/`.
"""

from seal.serve.app import create_app

__all__ = ["create_app"]
