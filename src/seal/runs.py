"""Run folders: a benchmark's or a training run's settings and its finished units of work, resumable after a kill.

A run folder holds config.json and trials.jsonl; each finished unit of work is appended (and fsynced) as one JSON
line, so a killed run restarted with the same --out skips what is done. Every unit is seeded from its own key
(`seed_for`), never from the order work happens in, so a resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict
from pathlib import Path

from seal.errors import SealError


class RunFolder:
    """config.json, then trials.jsonl appended one finished unit at a time."""

    def __init__(self, root: Path):
        self.root = root
        self.trials_path = root / "trials.jsonl"

    def start(self, config: object, extendable: tuple[str, ...] = ()) -> None:
        """Write the run's settings, or check a resumed run has the same ones (`extendable` ones may change:
        conditions or rounds added to a run reuse everything already done)."""
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = json.loads(json.dumps(asdict(config)))
        path = self.root / "config.json"
        if path.exists():
            existing = self.config()
            changed = sorted(k for k in set(wanted) | set(existing) if wanted.get(k) != existing.get(k))
            if any(k not in extendable for k in changed):
                raise SealError(f"{self.root} holds a run with other settings ({', '.join(changed)}); "
                                "resume it with the same options or choose another --out")
            if not changed:
                return
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(wanted, indent=2), encoding="utf-8")
        os.replace(staging, path)

    def config(self) -> dict:
        path = self.root / "config.json"
        if not path.exists():
            raise SealError(f"{self.root} is not a benchmark run folder (no config.json)")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SealError(f"cannot read {path}: {err}") from err

    def records(self) -> list[dict]:
        if not self.trials_path.exists():
            return []
        records: dict[str, dict] = {}
        for line in self.trials_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: its unit is redone
            records.setdefault(record["key"], record)  # a redone unit gives the same record; keep the first
        return list(records.values())

    def done(self) -> set[str]:
        return {r["key"] for r in self.records()}

    def append(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in records)
        with open(self.trials_path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def repair(run: RunFolder) -> None:
    """Cut a last line a kill left without its newline, so new records start on a line of their own."""
    if not run.trials_path.exists():
        return
    data = run.trials_path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(run.trials_path, data.rfind(b"\n") + 1)


def seed_for(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())

