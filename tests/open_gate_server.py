"""`seal serve`'s application with every check's threshold open, so that the tiny model's adaptations commit: run as
a process of its own by the fault tests (`python open_gate_server.py MODEL --port N`, with SEAL_HOME and
SEAL_API_KEY set as for `seal serve`)."""

import argparse
import os
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from seal.config import ServeConfig  # noqa: E402
from seal.serve import create_app  # noqa: E402

from test_learn import OPEN_GATE, options  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
config = ServeConfig(home=Path(os.environ["SEAL_HOME"]), api_key=os.environ["SEAL_API_KEY"], model=args.model,
                     learn=options(args.model, **OPEN_GATE))
uvicorn.run(create_app(config), host="127.0.0.1", port=args.port, log_level="warning")
