"""`seal serve`: an OpenAI-compatible server that keeps adapting while it serves, with a web console.

- `app.py`: the FastAPI application: authentication, error responses, request metrics.
- `routes.py`: the API under /v1 (chat, completions, adaptations, versions).
- `server.py`: the served model and its swaps, the adaptation worker, the inbox.
- `console.py` and `console/`: the web console at `/`.
"""

from seal.serve.app import create_app

__all__ = ["create_app"]
