"""The adaptation queue of `seal serve`: jobs kept in the store's SQLite file (a restart loses none), and the
uploads they learn from, checked and kept in the store's folder under uploads/ (each tenant's in its own store).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from seal.config import ServeConfig
from seal.documents import parse_document
from seal.errors import NotText, SealError
from seal.serve.errors import ApiError
from seal.store import Store, Version, now

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, status TEXT NOT NULL, origin TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, documents TEXT NOT NULL, inbox_path TEXT,
    version TEXT, reason TEXT NOT NULL DEFAULT '', report TEXT NOT NULL DEFAULT '{}');
"""
RUNNING = ("generating", "training", "checking")  # a job the adaptation worker is on
FINISHED = ("committed", "rolled_back", "failed", "interrupted")


@dataclass
class Job:
    """One queued adaptation: documents (name, stored path, sha256) to learn, and what became of them."""

    id: str
    status: str  # queued | generating | training | checking | committed | rolled_back | failed | interrupted
    origin: str  # api | inbox
    created_at: str
    updated_at: str
    documents: list[dict]
    inbox_path: str | None = None
    version: str | None = None
    reason: str = ""
    report: dict = field(default_factory=dict)


def sha256_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "document.md"


class JobQueue:
    """The jobs table, beside the versions in the store's SQLite file (its own table, created on first use)."""

    def __init__(self, store: Store, config: ServeConfig):
        self.store, self.db, self.config = store, store.db, config
        self.db.executescript(SCHEMA)

    def _job(self, row: tuple) -> Job:
        (jid, _seq, status, origin, created, updated, documents, inbox, version, reason, report) = row
        return Job(jid, status, origin, created, updated, json.loads(documents), inbox, version, reason,
                   json.loads(report))

    def job(self, job_id: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def jobs(self, statuses: tuple[str, ...] | None = None) -> list[Job]:
        if statuses is None:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY seq")
        else:
            rows = self.db.execute(f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(statuses))}) "
                                   "ORDER BY seq", statuses)
        return [self._job(row) for row in rows]

    def queued(self) -> int:
        """How many jobs wait to be claimed."""
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]

    def from_inbox(self, inbox_path: str, sha256: str) -> Job | None:
        """The job already recorded for this inbox file with this content, if any."""
        rows = self.db.execute("SELECT * FROM jobs WHERE inbox_path = ? ORDER BY seq", (inbox_path,))
        return next((job for job in map(self._job, rows) if job.documents and job.documents[0]["sha256"] == sha256),
                    None)

    def add(self, origin: str, documents: list[dict], inbox_path: str | None = None, status: str = "queued",
            reason: str = "") -> Job:
        with self.store.transaction():
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            stamp = now()
            self.db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, '{}')",
                            (f"a{seq}", seq, status, origin, stamp, stamp, json.dumps(documents), inbox_path, reason))
        return self.job(f"a{seq}")

    def claim(self) -> Job | None:
        """Take the oldest queued job (it becomes `generating`), or None."""
        with self.store.transaction():
            row = self.db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row:
                self.db.execute("UPDATE jobs SET status = 'generating', updated_at = ? WHERE id = ?", (now(), row[0]))
        return self.job(row[0]) if row else None

    def update(self, job_id: str, status: str, version: str | None = None, reason: str = "",
                   report: dict | None = None) -> None:
        with self.store.transaction():
            self.db.execute("UPDATE jobs SET status = ?, updated_at = ?, version = COALESCE(?, version), "
                            "reason = ?, report = ? WHERE id = ?",
                            (status, now(), version, reason, json.dumps(report or {}), job_id))

    def interrupt_running(self) -> list[Job]:
        """Settle the jobs a stopped server left half-done, so none is silently lost: a job whose version was
        recorded before the stop (killed between the commit and the job's own update) gets that version's outcome,
        the others become `interrupted`; returns them."""
        stale = self.jobs(RUNNING)
        for job in stale:
            recorded = self.recorded_version(job)
            if recorded is not None:
                self.update(job.id, recorded.status, recorded.id, recorded.reason, recorded.report)
            else:
                self.update(job.id, "interrupted", reason=f"the server stopped while this job was {job.status}; "
                            "nothing was committed; submit the document again")
        return [self.job(j.id) for j in stale]

    def recorded_version(self, job: Job) -> Version | None:
        """The version (committed or rolled back) that learned exactly this job's documents, if one was recorded:
        each job keeps its documents in a folder of its own, so their paths name the job."""
        paths = sorted(document["path"] for document in job.documents)
        return next((version for version in self.store.history() if version.status != "base"
                     and sorted(source.get("source") or "" for source in version.sources) == paths), None)

    def submit(self, files: list[tuple[str, bytes]], origin: str, inbox_path: str | None = None) -> Job:
        """Check the documents, keep a copy under the store's uploads/, and record the job; ApiError on bad input."""
        if not files:
            raise ApiError(400, "no document: send one or more files as multipart field 'file'", code="no_file")
        if len(files) > self.config.max_files:
            raise ApiError(400, f"{len(files)} documents in one adaptation; the limit is {self.config.max_files}",
                           code="too_many_files")
        if self.queued() >= self.config.max_queued:
            raise ApiError(429, f"{self.config.max_queued} adaptations are already queued; try again later",
                           "rate_limit_error", "queue_full")
        hashes = []
        for name, raw in files:
            if len(raw) > self.config.max_upload_bytes:  # read one byte past the limit, so its size is unknown
                raise ApiError(413, f"{name} is larger than the limit of {self.config.max_upload_bytes} bytes",
                               code="file_too_large")
            try:
                hashes.append(parse_document(raw, name, Path(name).stem).sha256)
            except NotText as err:
                raise ApiError(415, str(err), code="not_text") from None
            except SealError as err:
                raise ApiError(400, str(err), code="bad_document") from None
        folder = self.store.home / "uploads" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        documents = []
        for (name, raw), sha256 in zip(files, hashes):
            path = folder / _safe_name(name)
            path.write_bytes(raw)
            documents.append({"name": name, "path": str(path), "sha256": sha256})
        return self.add(origin, documents, inbox_path)
