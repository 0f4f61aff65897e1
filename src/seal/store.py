"""Stage 6: the store. Versions on disk (adapter safetensors) with their metadata in SQLite.

A commit is atomic: the adapter is written to `versions/.tmp-<name>` and fsynced; one SQLite transaction then
records the version (naming `<name>`) and moves the current pointer; only then is the folder renamed to `<name>`.
A kill -9 before the transaction leaves an unreferenced `.tmp-` folder, which the next writer deletes; a kill
after it leaves a referenced one, which the next writer (and any reader) completes. Folders without the `.tmp-`
prefix are never deleted. History is never rewritten: a rollback only moves the pointer; failed attempts are kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from safetensors import SafetensorError

from seal.errors import Busy, NotCommitted, NotFound, SealError

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, parent TEXT, status TEXT NOT NULL,
    created_at TEXT NOT NULL, model TEXT NOT NULL, sources TEXT NOT NULL, adapter_dir TEXT,
    kept INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
    stats TEXT NOT NULL DEFAULT '{}', report TEXT NOT NULL DEFAULT '{}', reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS self_edits (
    version_id TEXT NOT NULL REFERENCES versions(id), passage_index INTEGER, sample INTEGER, kind TEXT,
    text TEXT, question TEXT, answer TEXT, score REAL, accepted INTEGER, reason TEXT, train_text TEXT);
CREATE TABLE IF NOT EXISTS probes (
    version_id TEXT NOT NULL REFERENCES versions(id), prompt TEXT, answer TEXT, label TEXT, nll_before REAL,
    nll_after REAL, reply_before TEXT NOT NULL DEFAULT '', reply_after TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
"""

BASE_VERSION = "v0"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seal_home() -> Path:
    """Where the store lives: $SEAL_HOME, else ~/.seal."""
    return Path(os.environ.get("SEAL_HOME", Path.home() / ".seal")).expanduser()


@dataclass
class SelfEditRecord:
    passage_index: int
    sample: int
    kind: str
    text: str
    question: str
    answer: str
    score: float
    accepted: bool
    reason: str
    train_text: str  # exactly what the update trained on; empty when rejected


@dataclass
class ProbeRecord:
    prompt: str
    answer: str
    label: str
    nll_before: float
    nll_after: float
    reply_before: str = ""  # the closed-book replies to a question probe; "" for a cloze probe
    reply_after: str = ""


@dataclass
class Version:
    id: str
    parent: str | None
    status: str  # base | committed | rolled_back
    created_at: str
    model: str
    sources: list[dict]
    adapter_dir: str | None
    kept: int = 0
    rejected: int = 0
    stats: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    reason: str = ""


def _fsync_tree(path: Path) -> None:
    for item in sorted(path.rglob("*")):
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Connection:
    """One SQLite connection that the threads of a process share (a server opens its store once): each statement
    runs under a lock and returns its rows at once, and a transaction holds the lock until it ends."""

    def __init__(self, path: Path):
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)

    def execute(self, sql: str, args: tuple | list = ()) -> _Rows:
        with self.lock:
            return _Rows(self._db.execute(sql, args).fetchall())

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.lock:
            self._db.executemany(sql, rows)

    def executescript(self, script: str) -> None:
        with self.lock:
            self._db.executescript(script)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        with self.lock:
            self._db.close()


class _Rows(list):
    """A statement's rows, read whole; `fetchone` and `fetchall` as a cursor has them."""

    def fetchone(self) -> tuple | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple]:
        return list(self)


class Store:
    def __init__(self, home: Path):
        self.home = home
        self.adapters = home / "versions"
        self.adapters.mkdir(parents=True, exist_ok=True)
        self.path = home / "store.sqlite"
        try:
            self.db = _Connection(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            self.db.executescript(SCHEMA)
            self._add_columns("probes", {"reply_before": "TEXT NOT NULL DEFAULT ''",
                                         "reply_after": "TEXT NOT NULL DEFAULT ''"})
        except sqlite3.OperationalError as err:  # locked, read-only, disk full: not corruption
            raise SealError(f"cannot open the store {self.path}: {err}") from err
        except sqlite3.DatabaseError as err:
            raise SealError(f"the store {self.path} is corrupt ({err}); restore {self.home} from a backup, or move "
                            "that whole folder aside to start anew") from err

    def _add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Columns added since a store was made (its existing rows get the default); looked for again inside the
        write lock, so two processes opening an old store add each column once."""
        def missing() -> list[str]:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            return [name for name in columns if name not in have]

        if missing():
            with self.transaction():
                for name in missing():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")

    # ---- reading -------------------------------------------------------------------------------------

    def _version(self, row: sqlite3.Row | tuple) -> Version:
        (vid, _seq, parent, status, created, model, sources, adapter, kept, rejected, stats, report, reason) = row
        return Version(vid, parent, status, created, model, json.loads(sources), adapter, kept, rejected,
                       json.loads(stats), json.loads(report), reason)

    def history(self) -> list[Version]:
        return [self._version(r) for r in self.db.execute("SELECT * FROM versions ORDER BY seq")]

    def get(self, version_id: str) -> Version:
        version = self.find(version_id)
        if version is None:
            known = ", ".join(v.id for v in self.history()) or "none yet"
            raise NotFound(f"unknown version {version_id!r} (versions: {known})")
        return version

    def find(self, version_id: str) -> Version | None:
        """The version `version_id`, or None where there is none."""
        row = self.db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        return self._version(row) if row else None

    def current_id(self) -> str:
        row = self.db.execute("SELECT value FROM state WHERE key = 'current'").fetchone()
        return row[0] if row else BASE_VERSION

    def current(self) -> Version | None:
        """The current version, or None before anything was learned."""
        return self.get(self.current_id()) if self.has_versions() else None

    def has_versions(self) -> bool:
        return self.db.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is not None

    def adapter_path(self, version: Version) -> Path | None:
        if version.adapter_dir is None:
            return None
        path = self.adapters / version.adapter_dir
        if not path.exists():  # committed, but the rename after the commit has not happened yet
            path = self.adapters / f".tmp-{version.adapter_dir}"
        if not (path / "adapter_model.safetensors").exists():
            raise SealError(f"the store is corrupt: the adapter of {version.id} is missing ({path})")
        return path

    def model(self) -> str | None:
        return self.get_state("model")

    def get_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.transaction():
            self._put_state(key, value)

    def _put_state(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))

    def self_edits(self, version_id: str) -> list[SelfEditRecord]:
        rows = self.db.execute("SELECT passage_index, sample, kind, text, question, answer, score, accepted, reason, "
                               "train_text FROM self_edits WHERE version_id = ? ORDER BY rowid", (version_id,))
        return [SelfEditRecord(*r[:7], bool(r[7]), r[8], r[9]) for r in rows]

    def probes(self, version_id: str) -> list[ProbeRecord]:
        rows = self.db.execute("SELECT prompt, answer, label, nll_before, nll_after, reply_before, reply_after "
                               "FROM probes WHERE version_id = ?", (version_id,))
        return [ProbeRecord(*r) for r in rows]

    def lineage(self, version_id: str) -> list[Version]:
        """The committed versions from the first up to `version_id`, oldest first."""
        chain: list[Version] = []
        vid: str | None = version_id
        while vid is not None:
            version = self.get(vid)
            if version.status == "committed":
                chain.append(version)
            vid = version.parent
        return chain[::-1]

    def events(self) -> list[tuple[str, str, str]]:
        return list(self.db.execute("SELECT at, kind, detail FROM events ORDER BY rowid"))

    # ---- writing -------------------------------------------------------------------------------------

    @contextmanager
    def writer(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """One writer at a time across processes; also sweeps what an interrupted commit left behind. Held by
        another: with `on_wait`, tell it and wait for the lock (a `seal learn` while the server adapts runs after
        it); without, raise `Busy`."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "store.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                if on_wait is None:
                    raise Busy(f"another seal process is changing {self.home}; try again when it is done") from err
                on_wait()
                fcntl.flock(lock, fcntl.LOCK_EX)
            self._collect_garbage()
            yield

    def _collect_garbage(self) -> None:
        """Finish what an interrupted commit left: rename committed staging folders, delete the others."""
        referenced = {r[0] for r in self.db.execute("SELECT adapter_dir FROM versions WHERE adapter_dir IS NOT NULL")}
        for entry in self.adapters.glob(".tmp-*"):
            name = entry.name.removeprefix(".tmp-")
            if name in referenced:
                entry.rename(self.adapters / name)
            else:
                shutil.rmtree(entry)
        _fsync_dir(self.adapters)

    def ensure_model(self, model: str, pin: bool = False) -> None:
        """Refuse a model other than the store's; with `pin`, make `model` the store's (and v0) if it has none."""
        known = self.model()
        if known is not None and known != model:
            raise SealError(f"this store's versions were trained on model {known!r}, not {model!r}; "
                            f"pass --model {known} or use another SEAL_HOME")
        if known is None and pin:
            with self.transaction():
                self.db.execute("INSERT INTO versions (id, seq, parent, status, created_at, model, sources) "
                                "VALUES (?, 0, NULL, 'base', ?, ?, '[]')", (BASE_VERSION, now(), model))
                self._put_state("model", model)
                self._put_state("current", BASE_VERSION)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.lock:  # no other thread's statement lands inside this transaction
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise SealError(f"cannot write the store {self.path}: {err}") from err
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException as error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise SealError(f"cannot write the store {self.path}: {error}") from error
                raise

    def stage_adapter(self, save: Callable[[Path], None]) -> str:
        """Write an adapter with `save(folder)` into a staging folder and make it durable; returns its name.

        `record` names it in the commit transaction and then moves it into place.
        """
        name = uuid.uuid4().hex
        staging = self.adapters / f".tmp-{name}"
        try:
            staging.mkdir()
            save(staging)
            _fsync_tree(staging)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)  # whatever stopped it, no half-written folder stays
            if isinstance(err, (OSError, SafetensorError)):  # a full disk, above all (safetensors reports its own)
                reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                raise SealError(f"cannot write the new version's adapter in {self.adapters}: {reason}; nothing was "
                                "committed") from err
            raise
        return name

    def record(self, version: Version, self_edits: list[SelfEditRecord], probes: list[ProbeRecord],
               make_current: bool) -> str:
        """Record an attempt (committed or rolled back) in one transaction; returns its new id."""
        self.ensure_model(version.model, pin=True)
        with self.transaction():
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions").fetchone()[0]
            version.id = f"v{seq}"
            self.db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (version.id, seq, version.parent, version.status, version.created_at, version.model,
                 json.dumps(version.sources), version.adapter_dir, version.kept, version.rejected,
                 json.dumps(version.stats), json.dumps(version.report), version.reason))
            self.db.executemany(
                "INSERT INTO self_edits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(version.id, s.passage_index, s.sample, s.kind, s.text, s.question, s.answer, s.score,
                  int(s.accepted), s.reason, s.train_text) for s in self_edits])
            self.db.executemany("INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(version.id, p.prompt, p.answer, p.label, p.nll_before, p.nll_after, p.reply_before,
                                  p.reply_after) for p in probes])
            if make_current:
                self._put_state("current", version.id)
        if version.adapter_dir is not None:
            (self.adapters / f".tmp-{version.adapter_dir}").rename(self.adapters / version.adapter_dir)
            _fsync_dir(self.adapters)
        return version.id

    def set_current(self, version_id: str) -> Version:
        version = self.get(version_id)
        if version.status not in ("committed", "base"):
            raise NotCommitted(f"{version_id} was rolled back by its checks and was never committed; "
                            "pick a committed version (see `seal history`)")
        self.adapter_path(version)
        previous = self.current_id()
        with self.transaction():
            self._put_state("current", version_id)
            self.db.execute("INSERT INTO events VALUES (?, 'rollback', ?)", (now(), f"{previous} -> {version_id}"))
        return version
