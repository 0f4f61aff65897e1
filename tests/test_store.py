import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
import torch

from seal.errors import SealError
from seal.store import ProbeRecord, SelfEditRecord, Store, Version, now


def fake_adapter(folder: Path, value: float = 1.0) -> None:
    save_file({"w": torch.full((256, 256), value)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")


def commit(store: Store, value: float = 1.0) -> str:
    with store.writer():
        name = store.stage_adapter(lambda folder: fake_adapter(folder, value))
        version = Version("", store.current_id(), "committed", now(), "tiny", [{"source": "a.md"}], name, 2, 1)
        edit = SelfEditRecord(0, 0, "line", "A fact.", "", "", 0.9, True, "grounded", "A fact.")
        return store.record(version, [edit], [ProbeRecord("Q", " A", "Q", 2.0, 1.0)], make_current=True)


def test_a_store_made_before_probes_kept_their_answers_opens_with_them_empty(tmp_path):
    store = Store(tmp_path)
    commit(store)
    store.db.execute("ALTER TABLE probes DROP COLUMN reply_before")  # the probes table as it was
    store.db.execute("ALTER TABLE probes DROP COLUMN reply_after")
    reopened = Store(tmp_path)
    assert reopened.probes("v1") == [ProbeRecord("Q", " A", "Q", 2.0, 1.0, "", "")]
    probe = ProbeRecord("Q2", " B", "Q2", 3.0, 1.0, "No idea.", "B")
    with reopened.writer():
        version = Version("", "v1", "rolled_back", now(), "tiny", [], None)
        reopened.record(version, [], [probe], make_current=False)
    assert Store(tmp_path).probes("v2") == [probe]


def test_commit_history_show_and_rollback(tmp_path):
    store = Store(tmp_path)
    assert store.current() is None
    v1, v2 = commit(store, 1.0), commit(store, 2.0)
    assert (v1, v2) == ("v1", "v2") and store.current_id() == "v2"
    assert [v.id for v in store.history()] == ["v0", "v1", "v2"]
    assert store.get("v2").parent == "v1"
    assert store.self_edits("v2")[0].train_text == "A fact."
    assert [v.id for v in store.lineage("v2")] == ["v1", "v2"]
    store.set_current("v1")
    assert store.current_id() == "v1" and len(store.history()) == 3  # nothing deleted
    assert load_file(str(store.adapter_path(store.get("v1")) / "adapter_model.safetensors"))["w"][0, 0] == 1.0
    assert store.events()[-1][2] == "v2 -> v1"
    store.set_current("v0")
    assert store.adapter_path(store.current()) is None


def test_unknown_and_rolled_back_versions_cannot_become_current(tmp_path):
    store = Store(tmp_path)
    commit(store)
    failed = Version("", "v1", "rolled_back", now(), "tiny", [], None, reason="locality check failed")
    assert store.record(failed, [], [], make_current=False) == "v2"
    assert store.current_id() == "v1"
    with pytest.raises(SealError, match="unknown version"):
        store.set_current("v9")
    with pytest.raises(SealError, match="never committed"):
        store.set_current("v2")


def test_other_model_is_refused(tmp_path):
    store = Store(tmp_path)
    commit(store)
    with pytest.raises(SealError, match="trained on model 'tiny'"):
        store.ensure_model("other")


def test_corrupt_store_is_a_clear_error(tmp_path):
    (tmp_path / "store.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SealError, match="corrupt"):
        Store(tmp_path)


def test_missing_adapter_is_reported(tmp_path):
    store = Store(tmp_path)
    commit(store)
    adapter = store.adapter_path(store.current())
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(SealError, match="adapter of v1 is missing"):
        store.adapter_path(store.current())


def test_interrupted_commits_are_finished_or_discarded(tmp_path):
    """The two states a crash can leave: staged but unrecorded (discarded), recorded but not renamed (finished)."""
    store = Store(tmp_path)
    commit(store)
    with store.writer():
        orphan = store.stage_adapter(fake_adapter)  # killed before the transaction
    with store.writer():
        pass
    assert not (store.adapters / f".tmp-{orphan}").exists()
    with store.writer():
        name = store.stage_adapter(lambda folder: fake_adapter(folder, 7.0))
        version = Version("", "v1", "committed", now(), "tiny", [], name)
        store.record(version, [], [], make_current=True)
        (store.adapters / name).rename(store.adapters / f".tmp-{name}")  # as if killed before the rename
    reopened = Store(tmp_path)
    assert reopened.current_id() == "v2"  # readers find the staged folder meanwhile
    assert load_file(str(reopened.adapter_path(reopened.current()) / "adapter_model.safetensors"))["w"][0, 0] == 7.0
    with reopened.writer():
        pass
    assert (store.adapters / name).is_dir() and not (store.adapters / f".tmp-{name}").exists()
    assert {p.name for p in store.adapters.iterdir()} == {v.adapter_dir for v in store.history() if v.adapter_dir}


def test_an_emptied_database_never_deletes_adapters(tmp_path):
    store = Store(tmp_path)
    commit(store)
    adapters = {p.name for p in store.adapters.iterdir()}
    store.db.close()
    (tmp_path / "store.sqlite").rename(tmp_path / "aside.sqlite")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"store.sqlite{suffix}").unlink(missing_ok=True)
    with Store(tmp_path).writer():
        pass
    assert {p.name for p in store.adapters.iterdir()} == adapters


def test_second_writer_is_refused(tmp_path):
    store = Store(tmp_path)
    with store.writer():
        with pytest.raises(SealError, match="another seal process"):
            with Store(tmp_path).writer():
                pass


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from seal.store import Store
    from test_store import commit
    store = Store(Path({home!r}))
    value = 1.0
    while True:
        print(commit(store, value), flush=True)
        value += 1
""")


def check_consistent(home: Path) -> int:
    store = Store(home)
    current = store.current()
    committed = [v for v in store.history() if v.status == "committed"]
    for version in committed:  # every committed version has its whole adapter
        tensor = load_file(str(store.adapter_path(version) / "adapter_model.safetensors"))["w"]
        assert tensor.shape == (256, 256)
    assert current is None or current.id == (committed[-1].id if committed else "v0")
    if current is not None and current.id != "v0":
        assert store.self_edits(current.id) and store.probes(current.id)
    return len(committed)


def test_kill_9_never_leaves_a_half_version(tmp_path):
    home = tmp_path / "home"
    script = WRITER.format(tests=str(Path(__file__).parent), home=str(home))
    counts = []
    for delay in [0.0, 0.013, 0.029, 0.041, 0.057, 0.071, 0.089, 0.1]:  # kills land at varied points of a commit
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # one commit done: the writer is in its loop
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        counts.append(check_consistent(home))
        with Store(home).writer():  # the next writer sweeps orphaned adapter folders
            pass
        referenced = {v.adapter_dir for v in Store(home).history() if v.adapter_dir}
        assert {p.name for p in (home / "versions").iterdir()} == referenced
    assert counts == sorted(counts) and counts[-1] > 0


def test_a_full_disk_while_the_adapter_is_written_commits_nothing(tmp_path):
    store = Store(tmp_path)
    commit(store)

    def full(folder):
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SealError, match="No space left on device; nothing was committed"):
        store.stage_adapter(full)
    assert [v.id for v in store.history()] == ["v0", "v1"] and store.current_id() == "v1"
    assert not list(store.adapters.glob(".tmp-*"))
