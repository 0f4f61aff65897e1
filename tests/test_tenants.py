"""Tenants: lineages of their own in one home, on the command line and in one `seal serve` sharing one base model."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import NotFoundError, OpenAI

from seal import model as lm_ops
from seal.config import ServeConfig
from seal.errors import NotFound, SealError
from seal.learn import learn, load_version
from seal.serve.server import SealServer
from seal.store import Store
from seal.tenants import add_tenant, model_id, new_key, open_tenant, tenant_names, tenant_of

from test_learn import OPEN_GATE, options
from test_serve import DOC, KEY, Server

SEAL = str(Path(sys.executable).parent / "seal")
FERRY = "# Quellin Ferry\n\nThe Quellin ferry leaves Varrow pier at nine every morning and carries forty bicycles.\n"


def test_names_keys_and_model_ids(tmp_path):
    home = tmp_path / "home"
    key = add_tenant(home, "acme-labs")
    assert tenant_names(home) == ["acme-labs"] and key.startswith("seal-") and len(key) > 30
    assert key not in (home / "tenants" / "acme-labs" / "store.sqlite").read_bytes().decode("latin-1")  # a digest only
    with pytest.raises(SealError, match="exists already"):
        add_tenant(home, "acme-labs")
    for bad in ("Acme", "acme_labs", "a--b", "-a", "../x", "a" * 33):
        with pytest.raises(SealError, match="bad tenant name"):
            add_tenant(home, bad)
    with pytest.raises(NotFound, match="seal tenant add ghost"):
        open_tenant(home, "ghost")
    assert not (home / "tenants" / "ghost").exists()  # a typo makes no tenant
    assert model_id(None) == "seal" and tenant_of("seal") is None
    assert tenant_of(model_id("acme-labs")) == "acme-labs"
    for unknown in ("gpt-4o", "seal:", "seal:Acme", "other:acme-labs"):
        with pytest.raises(NotFound):
            tenant_of(unknown)
    assert new_key(open_tenant(home, "acme-labs")) != key


def test_cli_commands_take_a_tenant(tmp_path, tiny_model_dir, facts_file):
    env = {"SEAL_HOME": str(tmp_path / "home"), "PATH": str(Path(sys.executable).parent)}

    def seal(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SEAL, *args], capture_output=True, text=True, env=env, timeout=300)

    made = seal("tenant", "add", "acme", "--json")
    assert made.returncode == 0 and json.loads(made.stdout)["model"] == "seal:acme"
    assert learn(open_tenant(tmp_path / "home", "acme"), [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    mine = json.loads(seal("history", "--tenant", "acme", "--json").stdout)
    assert mine["current"] == "v1" and [v["id"] for v in mine["versions"] if v["status"] == "committed"] == ["v1"]
    assert json.loads(seal("history", "--json").stdout)["versions"] == []  # the default tenant learned nothing
    listed = json.loads(seal("tenant", "list", "--json").stdout)
    assert listed == [{"tenant": "acme", "model": "seal:acme", "current": "v1", "versions": 1}]
    rolled = seal("rollback", "v0", "--tenant", "acme", "--json")
    assert rolled.returncode == 0 and Store(tmp_path / "home" / "tenants" / "acme").current_id() == "v0"
    for args in (("history", "--tenant", "ghost"), ("ask", "Hi?", "--tenant", "ghost"), ("tenant", "add", "Bad!")):
        failed = seal(*args)
        assert failed.returncode == 1 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_tenants_share_one_server_each_with_its_own_lineage_and_keys(tmp_path, tiny_model_dir, facts_file):
    home = tmp_path / "home"
    keys = {name: add_tenant(home, name) for name in ("acme", "globex")}
    ferry = tmp_path / "ferry.md"
    ferry.write_text(FERRY)
    assert learn(open_tenant(home, "acme"), [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    assert learn(open_tenant(home, "globex"), [str(ferry)], options(tiny_model_dir, **OPEN_GATE)).committed
    server = Server(home, tiny_model_dir)
    try:
        operator, acme, globex = (OpenAI(base_url=f"{server.url}/v1", api_key=k)
                                  for k in (KEY, keys["acme"], keys["globex"]))
        assert sorted(m.id for m in operator.models.list()) == ["seal", "seal:acme", "seal:globex"]
        assert [m.id for m in acme.models.list()] == ["seal:acme"]

        # Requests of three lineages decode together on the one base model; each is answered by its own weights,
        # exactly as that tenant's version answers alone.
        question = [{"role": "user", "content": "When does the ferry leave?"}]
        replies: dict[str, str] = {}

        def ask(client: OpenAI, model: str) -> None:
            reply = client.chat.completions.create(model=model, messages=question, max_tokens=12, temperature=0)
            replies[model] = (reply.system_fingerprint, reply.model, reply.choices[0].message.content)

        threads = [threading.Thread(target=ask, args=pair)
                   for pair in ((operator, "seal"), (acme, "seal:acme"), (globex, "seal:globex"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, model in ((None, "seal"), ("acme", "seal:acme"), ("globex", "seal:globex")):
            lm, version = load_version(open_tenant(home, name), str(tiny_model_dir), "cpu")
            alone = lm_ops.generate(lm, [lm.chat_prompt(question)], 12)[0]
            assert replies[model] == (version, model, alone.strip()), (model, replies[model], alone)
        assert len({text for _, _, text in replies.values()}) > 1  # the lineages do differ

        # A tenant's key opens its own tenant only, and learns nothing of another (the same 404 as no tenant at all).
        with pytest.raises(NotFoundError):
            globex.chat.completions.create(model="seal:acme", messages=question, max_tokens=2)
        as_globex = {"Authorization": f"Bearer {keys['globex']}"}
        for path in ("/v1/versions?model=seal:acme", "/v1/versions?model=seal", "/v1/adaptations?model=seal:acme",
                     "/v1/versions/v1?model=seal:acme", "/v1/versions?model=seal:nobody"):
            response = httpx.get(server.url + path, headers=as_globex)
            assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", path
        assert httpx.post(f"{server.url}/v1/versions/v0/activate?model=seal:acme", headers=as_globex).status_code == 404
        assert httpx.get(f"{server.url}/metrics", headers=as_globex).status_code == 403
        own = httpx.get(f"{server.url}/v1/versions", headers=as_globex).json()
        assert own["model"] == "seal:globex" and [s["title"] for s in own["data"][-1]["sources"]] == ["Quellin Ferry"]
        assert server.get("/v1/versions?model=seal:acme").json()["current"] == "v1"  # the operator sees every tenant

        # Both tenants adapt at once, each in its own queue and lineage, while the others keep serving.
        jobs = {name: httpx.post(f"{server.url}/v1/adaptations", files={"file": ("brellick.md", DOC.encode())},
                                 headers={"Authorization": f"Bearer {keys[name]}"}).json() for name in keys}
        for name, job in jobs.items():
            done = server.wait_for(job["id"], model=f"seal:{name}")
            assert done["status"] in ("committed", "rolled_back"), done
            assert [v["id"] for v in server.get(f"/v1/versions?model=seal:{name}").json()["data"]][-1] == "v2"
        assert server.get("/v1/versions").json()["data"] == []  # the default tenant learned nothing

        # A tenant added while the server runs is served within seconds; a new key shuts out the old one.
        late = add_tenant(home, "initech")
        deadline = time.time() + 20
        while time.time() < deadline and "seal:initech" not in [m.id for m in operator.models.list()]:
            time.sleep(0.5)
        assert [m.id for m in OpenAI(base_url=f"{server.url}/v1", api_key=late).models.list()] == ["seal:initech"]
        new_key(open_tenant(home, "acme"))
        assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {keys['acme']}"}).status_code == 401
    finally:
        server.stop()


def test_a_tenant_on_another_base_model_is_refused(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    add_tenant(home, "acme")
    open_tenant(home, "acme").ensure_model("some/other-model", pin=True)
    with pytest.raises(SealError, match="other-model"):
        SealServer(ServeConfig(home=home, api_key=KEY, model=str(tiny_model_dir), device="cpu"))
    assert Store(home).current_id() == "v0"


def test_adapters_nothing_serves_are_taken_off_after_the_grace_period(tmp_path, tiny_model_dir, facts_file,
                                                                     monkeypatch):
    from seal.serve import shared

    home = tmp_path / "home"
    add_tenant(home, "acme")
    ferry = tmp_path / "ferry.md"
    ferry.write_text(FERRY)
    acme, default = open_tenant(home, "acme"), Store(home)
    for store in (acme, default):
        assert learn(store, [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    assert learn(acme, [str(ferry)], options(tiny_model_dir, **OPEN_GATE)).committed
    base = shared.SharedBase(lm_ops.load(str(tiny_model_dir), device="cpu"), threading.Lock())
    theirs = base.serve(default, None, "v1")
    first, second = base.serve(acme, "acme", "v1"), base.serve(acme, "acme", "v2")
    assert theirs.adapters == {"seal__v1"} and first.adapters < second.adapters  # v2 adds one module to v1's
    assert set(base.lm.model.peft_config) == {"seal__v1", "t-acme__v1", "t-acme__v2"}
    rolled_back = base.serve(acme, "acme", "v0")
    base.retire(second, [theirs, rolled_back])
    base.collect(set())
    assert len(base.lm.model.peft_config) == 3  # within the grace period a late request still finds them
    monkeypatch.setattr(shared, "GRACE_SECONDS", 0.0)
    base.collect({"t-acme__v2"})  # one still decoding
    assert set(base.lm.model.peft_config) == {"seal__v1", "t-acme__v2"}
    base.collect(set())
    assert set(base.lm.model.peft_config) == {"seal__v1"}
    assert base.serve(acme, "acme", "v2").adapters == {"t-acme__v1", "t-acme__v2"}  # put back on when served again
    assert not base.retired


def test_bench_tenants_serves_every_copy_at_once(taught_store, home, tiny_model_dir, tmp_path):
    from seal.bench.serve import bench_tenants

    summary = bench_tenants(tmp_path / "out", str(tiny_model_dir), home, [2], 4, lambda line: None)
    assert [r["tenants"] for r in summary["rows"]] == [0, 2]
    assert [(r["requests"], r["failed"], r["versions"]) for r in summary["rows"]] == [(1, 0, []), (3, 0, ["v1"])]
    assert all(r["rss"] > 0 for r in summary["rows"]) and (tmp_path / "out" / "tenants.md").exists()
    with pytest.raises(SealError, match="no store at"):
        bench_tenants(tmp_path / "out", str(tiny_model_dir), tmp_path / "nothing", [1], 4, lambda line: None)
    assert not (tmp_path / "nothing").exists()


def test_bench_adapting_times_two_tenants_adapting_at_once_and_asks_each_both_documents(tiny_model_dir, tmp_path):
    from seal.documents import packaged
    from seal.bench.serve import bench_adapting

    items = packaged("invented_facts.json")[:2]
    summary = bench_adapting(tmp_path / "out", str(tiny_model_dir), items, lambda line: None)
    jobs = summary["jobs"]
    assert set(jobs) == {"tenant-1", "tenant-2"}
    for name, job in jobs.items():
        assert job["status"] in ("committed", "rolled_back") and "training" in job["stages_at_s"], job
        assert summary["requests"][name]["failed"] == 0 and summary["requests"][name]["requests"] >= 1
        served = job["version"] if job["status"] == "committed" else "v0"
        rows = [r for r in summary["rows"] if r["tenant"] == name]
        assert [r["questions_of"] for r in rows] == ["tenant-1", "tenant-2"]  # every document's questions, asked
        assert {r["version"] for r in rows} == {served} and all(r["asked"] == 6 for r in rows)
    assert "tenants adapting and serving at once" in (tmp_path / "out" / "adapting.md").read_text()
