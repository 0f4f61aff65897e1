"""`seal bench serve`: a real `seal serve` on loopback under a bounded load: throughput at several numbers of
concurrent clients with and without batching, and latency while adaptations train and swap in. `seal bench
tenants`: the server's memory as tenants are added, each serving a version of its own. `seal bench faults`: kill -9
at each stage of an adaptation, and what it cost.

Each request streams a chat completion and records its time to first token, decode rate (tokens after the first
per second), total time, the version that answered and the adaptation's status when it started. Requests are
counted as failed on any non-200 reply, transport error or stream without its final `[DONE]`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from seal.bench import Report
from seal.bench.learn import write_doc
from seal.documents import packaged
from seal.errors import SealError
from seal.serve.jobs import FINISHED
from seal.store import Store
from seal.text import covers
from seal.tenants import add_tenant, model_id, new_key, tenant_home

QUESTION = "What does a tide clock show, and how is one built?"


class ServerProcess:
    """`seal serve` started as its own process on a free loopback port; `stop()` ends it. `command` runs another
    program that takes `--port` as `seal serve` does (a test's server with its own settings)."""

    def __init__(self, home: Path, key: str, *args: str, timeout: float = 300, command: list[str] | None = None):
        self.home = home
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {key}"}
        command = command or [str(Path(sys.executable).parent / "seal"), "serve"]
        self.process = subprocess.Popen([*command, "--port", str(self.port), *args],
                                        env={**os.environ, "SEAL_HOME": str(home), "SEAL_API_KEY": key},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"seal serve exited: {self.process.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("seal serve did not answer /health in time")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=60, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, headers=kwargs.pop("headers", self.headers), timeout=60, **kwargs)

    def wait_for(self, job_id: str, statuses: tuple[str, ...] = ("committed", "rolled_back", "failed", "interrupted"),
                 timeout: float = 900, model: str | None = None) -> dict:
        """The adaptation `job_id` (of the tenant `model`, default the default tenant) once it reaches `statuses`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get(f"/v1/adaptations/{job_id}", params={"model": model} if model else None).json()
            if job["status"] in statuses:
                return job
            time.sleep(0.3)
        raise TimeoutError(f"adaptation {job_id} did not reach {statuses}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def chat_request(http: httpx.Client, max_tokens: int, model: str = "seal") -> dict:
    """One streamed chat completion, timed; usage comes in the stream's last chunk."""
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    tokens, done, version, error = 0, False, "", ""
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            version = response.headers.get("X-Seal-Version", "")
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {response.read().decode()[:200]}"
            for line in response.iter_lines() if not error else []:
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                    elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        last = time.perf_counter()
                        first = first or last
    except httpx.HTTPError as err:
        error = repr(err)
    seconds = time.perf_counter() - start
    ok = not error and done
    return {"ok": ok, "error": error or ("" if done else "stream ended without [DONE]"), "version": version,
            "ttft": round(first - start, 3) if first else None, "tokens": tokens, "seconds": round(seconds, 3),
            "decode_tps": round((tokens - 1) / (last - first), 2) if first and last and last > first else None}


def drive(server: ServerProcess, concurrency: int, keep_going: Callable[[int], bool], max_tokens: int,
          status: Callable[[], str]) -> list[dict]:
    """`concurrency` clients in a loop while `keep_going(requests started so far)`; each request is tagged with the
    adaptation status seen when it started."""
    results: list[dict] = []
    started = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal started
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as http:
            while True:
                with lock:
                    if not keep_going(started):
                        return
                    started += 1
                state = status()
                result = chat_request(http, max_tokens)
                with lock:
                    results.append({**result, "status_at_start": state})

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))], 3)


def summarize(rows: list[dict], wall: float | None = None) -> dict:
    """Counts and percentiles of a phase; with its wall time, the tokens/s all its clients received together."""
    good = [r for r in rows if r["ok"]]
    out = {"requests": len(rows), "failed": len(rows) - len(good)}
    for name in ("ttft", "decode_tps", "seconds"):
        values = [r[name] for r in good if r[name] is not None]
        out[name] = {"p50": _percentile(values, 0.5), "p95": _percentile(values, 0.95)}
    if wall:
        out["aggregate_tps"] = round(sum(r["tokens"] for r in good) / wall, 1)
    return out


def bench_serve(out: Path, model: str, requests: int, max_tokens: int, clients: list[int], batches: list[int],
                report: Report) -> dict:
    """Throughput at each number of concurrent clients under each `--max-batch` (1: one request decodes at a time),
    each server idle; then, batched, the same while adaptations train and across their swaps."""
    out.mkdir(parents=True, exist_ok=True)
    documents = [write_doc(out, item) for item in packaged("invented_facts.json")[:2]]
    phases: dict[str, list[dict]] = {}
    walls: dict[str, float] = {}
    jobs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="seal-bench-serve-") as home:
        for max_batch in batches:
            server = ServerProcess(Path(home), secrets.token_hex(16), "--model", model, "--max-batch", str(max_batch))
            try:
                drive(server, 1, lambda n: n < 1, max_tokens, lambda: "idle")  # warm-up, not counted
                for count in clients:
                    name = f"idle, {count} client(s), max batch {max_batch}"
                    report(name)
                    start = time.perf_counter()
                    phases[name] = drive(server, count, lambda n, count=count: n < max(requests, 2 * count),
                                         max_tokens, lambda: "idle")
                    walls[name] = time.perf_counter() - start
            finally:
                server.stop()
        server = ServerProcess(Path(home), secrets.token_hex(16), "--model", model, "--max-batch", str(max(batches)))

        def status() -> str:
            job = jobs.get("current")
            return server.get(f"/v1/adaptations/{job}").json()["status"] if job else "idle"

        try:
            for count, document in zip((1, max(clients)), documents):
                job = server.post("/v1/adaptations", files={"file": (document.name, document.read_bytes())}).json()
                jobs["current"] = job["id"]
                server.wait_for(job["id"], ("training", "checking", "committed", "rolled_back", "failed"))
                report(f"adaptation {job['id']} training, {count} client(s)")
                rows = drive(server, count, lambda n: status() == "training" or n < count, max_tokens, status)
                phases[f"training, {count} client(s)"] = [r for r in rows if r["status_at_start"] == "training"]
                report(f"until {job['id']} is swapped in, {count} client(s)")
                swap = drive(server, count, lambda n: status() not in ("committed", "rolled_back", "failed"),
                             max_tokens, status)
                swap += drive(server, count, lambda n: n < 2 * count, max_tokens, status)
                phases[f"across the swap, {count} client(s)"] = rows + swap
                jobs[f"adaptation {count}"] = server.get(f"/v1/adaptations/{job['id']}").json()["status"]
                jobs.pop("current")
        finally:
            server.stop()
    summary = {"model": model, "max_tokens": max_tokens, "requests_per_idle_phase": requests, "clients": clients,
               "batches": batches, "adaptations": {k: v for k, v in jobs.items() if k != "current"},
               "phases": {name: {**summarize(rows, walls.get(name)), "versions": sorted({r["version"] for r in rows})}
                          for name, rows in phases.items()}}
    (out / "serve.json").write_text(json.dumps({**summary, "requests": phases}, indent=2), encoding="utf-8")
    lines = [f"# seal serve under load ({model}, streamed chat, {max_tokens} tokens max)", "",
             "| phase | requests | failed | tokens/s, all clients | time to first token p50 / p95 (s) | "
             "decode tokens/s per request p50 / p95 | request p50 / p95 (s) | versions |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summary["phases"].items():
        lines.append(f"| {name} | {s['requests']} | {s['failed']} | {s.get('aggregate_tps', '-')} | "
                     f"{s['ttft']['p50']} / {s['ttft']['p95']} | {s['decode_tps']['p50']} / {s['decode_tps']['p95']} | "
                     f"{s['seconds']['p50']} / {s['seconds']['p95']} | {', '.join(s['versions'])} |")
    lines += ["", "Adaptations: " + ", ".join(f"{k}: {v}" for k, v in summary["adaptations"].items())]
    (out / "serve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of the store at `source` (SQLite's online backup, then its adapters) made at `target`."""
    target.mkdir(parents=True)
    with sqlite3.connect(source / "store.sqlite") as original, sqlite3.connect(target / "store.sqlite") as copy:
        original.backup(copy)
    shutil.copytree(source / "versions", target / "versions")


def memory_mib(pid: int) -> dict:
    """A process's resident memory now and at its peak, in MiB (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: round(int(fields[key].split()[0]) / 1024, 1) for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def bench_tenants(out: Path, model: str, source: Path, counts: list[int], max_tokens: int,
                  report: Report) -> dict:
    """`seal serve`'s memory with 0 tenants (the default one, at the base model) and with each of `counts`, every
    tenant a copy of the store at `source` serving its current version, and all of them asked at once."""
    if not (source / "store.sqlite").exists():
        raise SealError(f"no store at {source}: pass --from a SEAL_HOME (or a tenant's folder) with a learned version")
    version = Store(source).current()
    if version is None or version.adapter_dir is None:
        raise SealError(f"the store {source} serves no learned version: `seal learn` a document there first")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for count in [0, *counts]:
        with tempfile.TemporaryDirectory(prefix="seal-bench-tenants-") as folder:
            home = Path(folder)
            keys = {"seal": secrets.token_hex(16)}
            for index in range(1, count + 1):
                copy_store(source, tenant_home(home, f"tenant-{index}"))
                keys[f"seal:tenant-{index}"] = new_key(Store(tenant_home(home, f"tenant-{index}")))
            report(f"{count} tenant(s)")
            server = ServerProcess(home, keys["seal"], "--model", model, "--max-batch", str(count + 1))
            results: dict[str, dict] = {}

            def ask(name: str, key: str) -> None:
                with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
                    results[name] = chat_request(http, max_tokens, name)

            try:
                threads = [threading.Thread(target=ask, args=item) for item in keys.items()]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                memory = memory_mib(server.process.pid)
            finally:
                server.stop()
        rows.append({"tenants": count, **memory, "requests": len(results),
                     "failed": sum(not r["ok"] for r in results.values()),
                     "versions": sorted({r["version"] for name, r in results.items() if name != "seal"})})
    adapters = sum(f.stat().st_size for f in (source / "versions").rglob("*.safetensors")) / 2**20
    summary = {"model": model, "source": str(source), "source_version": version.id,
               "adapter_mib_on_disk": round(adapters, 1), "rows": rows}
    (out / "tenants.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [f"# seal serve's memory by tenants ({model}; each tenant serves a copy of {version.id}, "
             f"{summary['adapter_mib_on_disk']} MiB of adapters on disk)", "",
             "| tenants | resident MiB | peak MiB | requests at once | failed | versions answering |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['tenants']} | {r['rss']} | {r['peak']} | {r['requests']} | {r['failed']} | "
              f"{', '.join(r['versions']) or '-'} |" for r in rows]
    (out / "tenants.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def answer(server: ServerProcess, tenant: str, question: str) -> dict:
    """`question` asked closed-book of `tenant`'s current version through `/v1/answers`, as `seal ask` asks."""
    response = server.post(f"/v1/answers?model={model_id(tenant)}", json={"question": question, "max_tokens": 48})
    if response.status_code != 200:
        raise SealError(f"/v1/answers for {tenant} answered {response.status_code}: {response.text[:300]}")
    return response.json()["data"][0]


def bench_adapting(out: Path, model: str, items: list[dict], report: Report) -> dict:
    """Tenants adapting and serving at once: one `seal serve --adaptations N` with N fresh tenants, each sent its own
    document while a client streams chat to each; the stages of every adaptation timed (how long they trained at
    the same time); then every tenant asked every document's questions closed-book, as `seal ask` asks them. A tenant
    answers from its own lineage when it answers its own document's questions and not the others'."""
    out.mkdir(parents=True, exist_ok=True)
    names = [f"tenant-{index}" for index in range(1, len(items) + 1)]
    documents = dict(zip(names, (write_doc(out, item) for item in items)))
    questions = {name: item["questions"] for name, item in zip(names, items)}
    with tempfile.TemporaryDirectory(prefix="seal-bench-adapting-") as folder:
        home = Path(folder)
        keys = {name: add_tenant(home, name) for name in names}
        server = ServerProcess(home, secrets.token_hex(16), "--model", model, "--adaptations", str(len(names)))
        stop = threading.Event()
        replies: dict[str, list[dict]] = {name: [] for name in names}

        def client(name: str) -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys[name]}"},
                              timeout=600) as http:
                while not stop.is_set():
                    replies[name].append(chat_request(http, 16, model_id(name)))

        try:
            jobs = {name: server.post(f"/v1/adaptations?model={model_id(name)}",
                                      files={"file": (documents[name].name, documents[name].read_bytes())}).json()
                    for name in names}
            streams = [threading.Thread(target=client, args=(name,)) for name in names]
            for thread in streams:
                thread.start()
            report(f"{len(names)} tenants adapting at once")
            started = time.time()
            stages: dict[str, dict[str, float]] = {name: {} for name in names}
            final: dict[str, dict] = {}
            while len(final) < len(names):
                for name in set(names) - set(final):
                    job = server.get(f"/v1/adaptations/{jobs[name]['id']}?model={model_id(name)}").json()
                    stages[name].setdefault(job["status"], round(time.time() - started, 1))
                    if job["status"] in FINISHED:
                        final[name] = job
                time.sleep(1)
            stop.set()
            for thread in streams:
                thread.join()
            memory = memory_mib(server.process.pid)
            report("every tenant asked every document's questions")
            rows = []
            for name in names:
                for owner in names:
                    answers = [answer(server, name, q["question"]) for q in questions[owner]]
                    rows.append({"tenant": name, "questions_of": owner, "version": answers[0]["version"],
                                 "correct": sum(covers(a["answer"], q["answer"])
                                                for a, q in zip(answers, questions[owner])),
                                 "asked": len(answers), "answers": [a["answer"] for a in answers]})
        finally:
            stop.set()
            server.stop()
    spans = [(stages[name].get("training"), stages[name].get("checking")) for name in names]
    overlap = 0.0  # how long every adaptation was training at once (none if one never trained)
    if all(None not in span for span in spans):
        overlap = max(0.0, min(end for _, end in spans) - max(begin for begin, _ in spans))
    summary = {"model": model, "tenants": len(names),
               "jobs": {name: {"document": documents[name].name, "status": final[name]["status"],
                               "version": final[name].get("version"), "reason": final[name].get("reason"),
                               "stages_at_s": stages[name]} for name in names},
               "seconds_training_at_once": round(overlap, 1), **memory,
               "requests": {name: summarize(replies[name]) for name in names},
               "versions_answering": {name: sorted({r["version"] for r in replies[name] if r["ok"]}) for name in names},
               "rows": rows}
    (out / "adapting.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [f"# {len(names)} tenants adapting and serving at once ({model}, `--adaptations {len(names)}`)", "",
             "| tenant | document | outcome | stages (s after upload) | chat requests while adapting | failed |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {job['document']} | {job['status']} {job['version'] or ''} | "
              f"{', '.join(f'{stage} {at}' for stage, at in job['stages_at_s'].items())} | "
              f"{summary['requests'][name]['requests']} | {summary['requests'][name]['failed']} |"
              for name, job in summary["jobs"].items()]
    lines += ["", f"All of them trained at once for {summary['seconds_training_at_once']} s; the server's "
              f"resident memory afterwards {summary['rss']} MiB (peak {summary['peak']} MiB).", "",
              "Closed-book answers afterwards, each tenant asked every document's questions:", "",
              "| tenant | questions of | version answering | correct |", "|---|---|---|---|"]
    lines += [f"| {r['tenant']} | {r['questions_of']} | {r['version']} | {r['correct']}/{r['asked']} |" for r in rows]
    (out / "adapting.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


KILL_POINTS = ("generating", "training", "checking", "commit")  # the job's stages, and its adapter being staged


def staged(home: Path) -> bool:
    """Whether an adapter is being staged for a commit (`Store.stage_adapter`) in the store at `home`."""
    folder = home / "versions"
    return folder.exists() and any(name.startswith(".tmp-") for name in os.listdir(folder))


def kept_versions(home: Path) -> dict[str, bool]:
    """Every committed version of the store at `home`, and whether its adapter is whole on disk."""
    store = Store(home)
    whole = {}
    for version in (v for v in store.history() if v.status == "committed"):
        try:
            whole[version.id] = (store.adapter_path(version) / "adapter_model.safetensors").stat().st_size > 0
        except (SealError, OSError):
            whole[version.id] = False
    return whole


def kill_once(home: Path, key: str, model: str, point: str, document: Path) -> dict:
    """Upload `document` to a fresh `seal serve` on `home`, kill it with -9 once its adaptation reaches `point` (or
    when it finishes first), restart it, and record what the kill cost."""
    before = kept_versions(home) if (home / "store.sqlite").exists() else {}
    server = ServerProcess(home, key, "--model", model)
    job = server.post("/v1/adaptations", files={"file": (document.name, document.read_bytes())}).json()
    requests: list[dict] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=600) as http:
            while not stop.is_set():
                started = time.time()
                requests.append({**chat_request(http, 16), "started": started, "ended": time.time()})

    streaming = threading.Thread(target=client)
    streaming.start()
    upload = time.time()
    reached = False
    next_look = upload
    while server.process.poll() is None:
        if point == "commit" and staged(home):  # a window of milliseconds: looked for without pause
            reached = True
            break
        if time.time() >= next_look:
            status = server.get(f"/v1/adaptations/{job['id']}").json()["status"]
            if status == point or status in FINISHED:
                reached = status == point
                break
            next_look = time.time() + 0.2
        if point != "commit":  # only the commit's window needs looking without pause; the others wait for the look
            time.sleep(max(0.0, next_look - time.time()))
    killed = time.time()
    server.process.kill()
    server.process.wait()
    stop.set()
    streaming.join()
    restarted = ServerProcess(home, key, "--model", model)
    try:
        settled = restarted.get(f"/v1/adaptations/{job['id']}").json()
        with httpx.Client(base_url=restarted.url, headers=restarted.headers, timeout=600) as http:
            after_restart = [chat_request(http, 16) for _ in range(4)]
        if settled["status"] == "queued":  # killed before it was claimed: it runs now
            settled = restarted.wait_for(job["id"])
    finally:
        restarted.stop()
    after = kept_versions(home)
    with sqlite3.connect(home / "store.sqlite") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    outside = [r for r in requests if r["ended"] < killed - 0.5 and not r["ok"]] + \
        [r for r in after_restart if not r["ok"]]
    return {"kill_at": point, "document": document.name, "reached": reached,
            "seconds_after_upload": round(killed - upload, 1),
            "job_after_restart": settled["status"], "job_version": settled.get("version"),
            "job_reason": None if reached else settled.get("reason"),
            "versions_before": sorted(before), "versions_after": sorted(after),
            "versions_lost": sum(1 for v in before if not after.get(v)),
            "store_integrity": integrity, "staging_left": staged(home),
            "requests_before_kill": len(requests), "requests_after_restart": len(after_restart),
            "failed_outside_kill": len(outside)}


def bench_faults(out: Path, model: str, source: Path | None, report: Report,
                 points: tuple[str, ...] = KILL_POINTS, attempts: int = 3) -> dict:
    """kill -9 of a real `seal serve` at each stage of an adaptation (generating self-edits, training, checking, and
    while its adapter is staged for the commit), each time with a client streaming replies; then a restart. Counts
    what a kill must never cost: committed versions lost or damaged, a store failing SQLite's integrity check, a job
    left unsettled, requests failing outside the killed window. The store starts as a copy of `source` (so that
    there are committed versions to lose), else empty. Each of `points` in turn; a stage the adaptation never
    reached (its document refused before it) is tried again with the next document, up to `attempts` times."""
    out.mkdir(parents=True, exist_ok=True)
    documents = iter([write_doc(out, item) for item in packaged("invented_facts.json")])
    rows = []
    with tempfile.TemporaryDirectory(prefix="seal-bench-faults-") as folder:
        home, key = Path(folder) / "home", secrets.token_hex(16)
        if source is not None:
            copy_store(source, home)
        for point in points:
            for attempt in range(1, attempts + 1):
                document = next(documents, None)
                if document is None:
                    break
                report(f"kill -9 at {point} ({document.name}, attempt {attempt})")
                rows.append(kill_once(home, key, model, point, document))
                if rows[-1]["reached"]:
                    break
    summary = {"model": model, "rows": rows,
               "totals": {"kills": sum(r["reached"] for r in rows),
                          "versions_lost": sum(r["versions_lost"] for r in rows),
                          "corrupt_stores": sum(r["store_integrity"] != "ok" for r in rows),
                          "jobs_unsettled": sum(r["job_after_restart"] not in FINISHED for r in rows),
                          "failed_outside_kill": sum(r["failed_outside_kill"] for r in rows)}}
    (out / "faults.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [f"# seal serve killed with -9 at each stage of an adaptation ({model})", "",
             "| killed at | document | reached | s after upload | job after restart | versions before / after | lost | "
             "store | requests before kill / after restart | failed outside the kill |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kill_at']} | {r['document']} | "
              f"{'yes' if r['reached'] else 'no, it ended first: ' + (r['job_reason'] or '')[:80]} | "
              f"{r['seconds_after_upload']} | {r['job_after_restart']} {r['job_version'] or ''} | "
              f"{', '.join(r['versions_before']) or '-'} / {', '.join(r['versions_after']) or '-'} | "
              f"{r['versions_lost']} | {r['store_integrity']} | {r['requests_before_kill']} / "
              f"{r['requests_after_restart']} | {r['failed_outside_kill']} |" for r in rows]
    lines += ["", "Totals: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["totals"].items())]
    (out / "faults.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
