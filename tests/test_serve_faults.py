"""Faults under a real server process: kill -9 in the middle of a commit, and the disk filling up during one."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal.bench.serve import ServerProcess
from seal.store import Store

from test_serve import DOC, KEY

OPEN_GATE_SERVER = [sys.executable, str(Path(__file__).with_name("open_gate_server.py"))]


def open_gate_server(home: Path, model: Path) -> ServerProcess:
    """A server whose adaptations commit whatever the tiny model learns (every check's threshold open)."""
    return ServerProcess(home, KEY, str(model), command=OPEN_GATE_SERVER)


def staging(home: Path) -> list[str]:
    folder = home / "versions"
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")] if folder.exists() else []


def test_killed_during_a_commit_then_restarted_keeps_the_store_whole_and_settles_the_job(tmp_path, tiny_model_dir):
    """kill -9 while the adapter is staged for its commit (before or after the transaction that records it): the
    restarted server finds the store whole, the job settled by what was recorded, and goes on committing."""
    home = tmp_path / "home"
    caught = None
    for attempt in range(4):  # the staging window is milliseconds: a try that misses it is run again
        server = open_gate_server(home, tiny_model_dir)
        job = server.post("/v1/adaptations", files={"file": (f"tide-{attempt}.md", DOC.encode())}).json()
        deadline = time.time() + 300
        while time.time() < deadline and caught is None:
            if staging(home):
                server.process.kill()
                caught = job
            elif server.process.poll() is not None:
                break
        server.process.kill()
        server.process.wait()
        if caught is not None:
            break
    assert caught is not None, "no try was killed while an adapter was staged"
    second = open_gate_server(home, tiny_model_dir)
    try:
        settled = second.get(f"/v1/adaptations/{caught['id']}").json()
        store = Store(home)
        recorded = [v for v in store.history() if v.status != "base"
                    and [Path(s["source"]).name for s in v.sources] == [caught["documents"][0]["name"]]]
        if recorded:  # killed after the transaction: the version is whole and the job says so
            assert (settled["status"], settled["version"]) == ("committed", recorded[0].id)
            assert (store.adapter_path(recorded[0]) / "adapter_model.safetensors").exists()
        else:  # killed before it: nothing of it was recorded
            assert settled["status"] == "interrupted"
        following = second.post("/v1/adaptations", files={"file": ("after.md", DOC.encode())}).json()
        assert second.wait_for(following["id"])["status"] == "committed"
        assert not staging(home)  # the next writer finished or swept what the kill left
        versions = second.get("/v1/versions").json()
        assert versions["serving"] == versions["current"] == Store(home).current_id()
        chat = second.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                          "max_tokens": 3})
        assert chat.status_code == 200 and chat.headers["X-Seal-Version"] == versions["current"]
    finally:
        second.stop()


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 MiB tmpfs (needs root, as `make test` has on this project's machines)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` until `leave` bytes are free; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_a_full_disk_fails_the_commit_cleanly_and_serving_goes_on(small_disk, tiny_model_dir):
    home = small_disk / "home"
    server = open_gate_server(home, tiny_model_dir)
    try:
        first = server.post("/v1/adaptations", files={"file": ("first.md", DOC.encode())}).json()
        assert server.wait_for(first["id"])["status"] == "committed"
        job = server.post("/v1/adaptations", files={"file": ("second.md", DOC.encode())}).json()
        server.wait_for(job["id"], ("checking", "committed", "rolled_back", "failed"))
        filler = fill(small_disk, leave=48 * 1024)  # room for the job's own records, not for a new adapter
        failed = server.wait_for(job["id"])
        assert failed["status"] == "failed" and "space" in failed["reason"].lower(), failed
        versions = server.get("/v1/versions").json()
        assert versions["current"] == versions["serving"] == "v1" and not staging(home)
        chat = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                         "max_tokens": 3})
        assert chat.status_code == 200 and chat.headers["X-Seal-Version"] == "v1"
        filler.unlink()  # space again: the next adaptation commits
        again = server.post("/v1/adaptations", files={"file": ("third.md", DOC.encode())}).json()
        assert server.wait_for(again["id"])["status"] == "committed"
    finally:
        server.stop()


def test_bench_faults_counts_nothing_lost_over_a_kill_at_each_stage(taught_store, home, tiny_model_dir, tmp_path):
    from seal.bench.serve import bench_faults

    summary = bench_faults(tmp_path / "out", str(tiny_model_dir), home, lambda line: None, ("generating", "checking"),
                           attempts=1)
    assert [r["kill_at"] for r in summary["rows"]] == ["generating", "checking"]
    assert all("v1" in r["versions_after"] for r in summary["rows"])  # the copied store's version survives each kill
    totals = summary["totals"]
    assert summary["rows"][0]["reached"] and totals["versions_lost"] == totals["corrupt_stores"] == 0
    assert totals["jobs_unsettled"] == totals["failed_outside_kill"] == 0
    assert all(r["requests_after_restart"] == 4 for r in summary["rows"])
