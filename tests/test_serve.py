"""`seal serve` as a real server process on a free loopback port, driven with the official openai client and httpx."""

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from seal.config import ServeConfig
from seal.learn import learn
from seal.bench.serve import ServerProcess, drive
from seal.serve import create_app
from seal.serve.errors import ApiError
from seal.serve.jobs import JobQueue
from seal.store import Store

from test_learn import OPEN_GATE, options

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOC = ("# Brellick Tide Clock\n\nThe Brellick Tide Clock stands on the pier of the town of Brellick. It was built in "
       "1893 by the clockmaker Oswin Tarrow and shows the height of the tide with a copper float.\n")


def Server(home: Path, model: Path, *args: str) -> ServerProcess:
    return ServerProcess(home, KEY, "--model", str(model), *args)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    """One server for the tests of this module that need no store of their own (a start costs seconds of imports):
    their assertions are about what each test itself changed (counters as differences, the version it served)."""
    root = tmp_path_factory.mktemp("serve")
    running = Server(root / "home", tiny_model_dir, "--watch", str(root / "inbox"), "--max-upload-bytes", "4000",
                     "--max-files", "2")
    yield running
    running.stop()


def metric(server: ServerProcess, sample: str) -> float:
    """One sample of `/metrics` (e.g. `seal_generations_total{finish="stop"}`), 0 before it was first counted."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def serving(server: ServerProcess) -> str:
    return server.get("/v1/versions").json()["serving"]


def test_openai_client_chat_streaming_completions_and_models(server):
    chats = 'seal_requests_total{path="/v1/chat/completions",status="200"}'
    before = metric(server, chats)
    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    assert [m.id for m in client.models.list()] == ["seal"]
    reply = client.chat.completions.create(model="seal", messages=[{"role": "user", "content": "Hello"}], max_tokens=6)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 0
    assert reply.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(model="seal", messages=[{"role": "user", "content": "Hello"}],
                                                 max_tokens=6, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    greedy = client.chat.completions.create(model="seal", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=6, temperature=0)
    assert streamed.strip() == greedy.choices[0].message.content  # both greedy
    completion = client.completions.create(model="seal", prompt=["Once upon", "The tide"], max_tokens=4)
    assert completion.object == "text_completion" and len(completion.choices) == 2
    chunks = list(client.completions.create(model="seal", prompt=["Once upon", "The tide"], max_tokens=4, stream=True,
                                            stream_options={"include_usage": True}))
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert [text.strip() for text in texts] == [choice.text for choice in completion.choices]  # both greedy
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    assert metric(server, chats) == before + 3
    assert metric(server, f'seal_current_version{{model="seal",version="{serving(server)}"}}') == 1


def test_reads_and_writes_need_the_key(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    for path in ("/v1/models", "/v1/versions", "/v1/versions/v0", "/v1/adaptations", "/metrics", "/v1/runs"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers={"Authorization": "Bearer wrong-key"}).status_code == 401
    for path in ("/v1/answers", "/v1/blame"):
        assert httpx.post(server.url + path, json={"question": "Who built it?"}).status_code == 401
    refused = server.post("/v1/adaptations", headers={}, files={"file": ("a.md", DOC.encode())})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert server.post("/v1/versions/v0/activate", headers={}).status_code == 401
    chat = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "seal", "messages": []})
    assert chat.status_code == 401


def test_bad_uploads_get_a_json_4xx_and_queue_nothing(server):
    queued = server.get("/v1/adaptations").json()["data"]
    cases = [([("file", ("empty.md", b""))], 400), ([("file", ("x.md", b"\x00\x01ELF"))], 415),
             ([("file", ("latin.md", "caf\xe9 cr\xe8me".encode("latin-1")))], 415),
             ([("file", ("big.md", b"word " * 1000))], 413),
             ([("file", (f"{n}.md", DOC.encode())) for n in range(3)], 400),
             ([], 400)]
    for files, status in cases:
        response = server.post("/v1/adaptations", files=files) if files else server.post("/v1/adaptations")
        assert response.status_code == status, (files[:1], response.text)
        assert response.json()["error"]["message"]
    huge = server.post("/v1/adaptations", files={"file": ("huge.md", b"word " * 20_000)})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"  # refused unread
    assert server.get("/v1/nowhere").json()["error"]["message"] == "Not Found"
    bad_json = server.post("/v1/chat/completions", json={"messages": "not a list"})
    assert bad_json.status_code == 400 and "messages" in bad_json.json()["error"]["message"]
    assert server.get("/v1/adaptations").json()["data"] == queued


def test_adaptation_end_to_end_then_activation(server):
    committed = 'seal_adaptations_total{outcome="committed"}'
    before = metric(server, committed)
    created = server.post("/v1/adaptations", files={"file": ("brellick.md", DOC.encode())})
    assert created.status_code == 202 and created.json()["status"] == "queued"
    job = server.wait_for(created.json()["id"])
    assert job["status"] in ("committed", "rolled_back"), job
    assert {c["name"] for c in job["report"]["checks"]} >= {"knowledge", "locality", "safety"}
    assert job["report"]["notes"] == server.get(f"/v1/versions/{job['version']}").json()["stats"]["notes"]
    versions = server.get("/v1/versions").json()
    assert job["version"] in [v["id"] for v in versions["data"]]
    if job["status"] == "committed":
        assert versions["current"] == versions["serving"] == job["version"]
        assert server.get("/v1/models").headers["X-Seal-Version"] == job["version"]
        assert metric(server, committed) == before + 1
    activated = server.post("/v1/versions/v0/activate")
    assert activated.status_code == 200 and activated.json()["current"] == "v0"
    assert server.get("/v1/versions").json()["serving"] == "v0"
    assert server.post("/v1/versions/v99/activate").status_code == 404


def test_inbox_files_are_adapted_then_moved(server):
    inbox = server.home.parent / "inbox"
    (inbox / "regulation.md").write_text(DOC)
    (inbox / "scan.md").write_bytes(b"\x00\x00binary")
    for path in inbox.iterdir():
        os.utime(path, (time.time() - 10, time.time() - 10))  # settled: not being written any more
    deadline = time.time() + 300
    while time.time() < deadline and any(p.is_file() for p in inbox.iterdir()):
        time.sleep(0.5)
    jobs = {Path(j["inbox_path"]).name: j for j in server.get("/v1/adaptations").json()["data"] if j["inbox_path"]}
    assert jobs["scan.md"]["status"] == "failed" and "binary" in jobs["scan.md"]["reason"]
    assert (inbox / "failed" / f"{jobs['scan.md']['id']}-scan.md").exists()
    regulation = jobs["regulation.md"]
    folder = "done" if regulation["status"] == "committed" else "failed"
    assert (inbox / folder / f"{regulation['id']}-regulation.md").read_text() == DOC


def test_restart_resumes_queued_jobs_and_marks_interrupted_ones(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    document = tmp_path / "doc.md"
    document.write_text(DOC)
    store = Store(home)
    entry = [{"name": "doc.md", "path": str(document), "sha256": "x"}]
    queue = JobQueue(store, ServeConfig(home=home, api_key=KEY))
    cut_short = queue.add("api", entry)
    queue.update(cut_short.id, "training")  # as if the server had died mid-update
    waiting = queue.add("api", entry)
    second = Server(home, tiny_model_dir)
    try:
        interrupted = second.get(f"/v1/adaptations/{cut_short.id}").json()
        assert interrupted["status"] == "interrupted" and "stopped while this job was training" in interrupted["reason"]
        assert second.wait_for(waiting.id)["status"] in ("committed", "rolled_back")
        assert 'seal_adaptations_total{outcome="interrupted"} 1.0' in second.get("/metrics").text
    finally:
        second.stop()


def test_a_full_queue_refuses_uploads_with_a_429_until_a_job_is_claimed(tmp_path):
    queue = JobQueue(Store(tmp_path / "home"), ServeConfig(home=tmp_path / "home", api_key=KEY, max_queued=2))
    for name in ("a.md", "b.md"):
        queue.submit([(name, DOC.encode())], "api")
    with pytest.raises(ApiError) as refused:
        queue.submit([("c.md", DOC.encode())], "api")
    assert (refused.value.status, refused.value.code, queue.queued()) == (429, "queue_full", 2)
    assert queue.claim().status == "generating" and queue.queued() == 1
    assert queue.submit([("c.md", DOC.encode())], "api").status == "queued"


def test_requests_never_fail_across_a_swap(tmp_path, tiny_model_dir, facts_file):
    home = tmp_path / "home"
    # v1 committed past an open gate: whether the random tiny model's own update passes its checks is luck
    assert learn(Store(home), [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    server = Server(home, tiny_model_dir)
    try:
        stop = threading.Event()
        rows: list[dict] = []
        load = threading.Thread(target=lambda: rows.extend(drive(server, 4, lambda n: not stop.is_set(), 4,
                                                                 lambda: "")))
        load.start()
        time.sleep(1)
        job = server.wait_for(server.post("/v1/adaptations", files={"file": ("a.md", DOC.encode())}).json()["id"])
        server.post("/v1/versions/v0/activate")
        time.sleep(1)
        server.post("/v1/versions/v1/activate")  # and back again
        time.sleep(1)
        stop.set()
        load.join()
    finally:
        server.stop()
    assert [r["error"] for r in rows if not r["ok"]] == []
    assert job["status"] in ("committed", "rolled_back")  # an adaptation ran under the load
    assert {"v0", "v1"} <= {r["version"] for r in rows} and len(rows) > 10
    assert all(0 < r["tokens"] <= 4 and r["ttft"] is not None for r in rows)  # usage arrives in the stream


def test_values_openai_refuses_are_400s_and_the_key_is_checked_before_the_body(server):
    def chat(**fields) -> httpx.Response:
        body = {"model": "seal", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}
        return server.post("/v1/chat/completions", json=body)

    served = serving(server)
    refused = {"seed 2^64": chat(seed=2**64), "temperature 5": chat(temperature=5), "temperature -1": chat(temperature=-1),
               "top_p 0": chat(top_p=0), "top_p 1.5": chat(top_p=1.5), "n 2": chat(n=2),
               "a wizard's turn": chat(messages=[{"role": "wizard", "content": "Hi"}]),
               "temperature NaN": server.post("/v1/chat/completions", content=b'{"model": "seal", "messages": '
                                              b'[{"role": "user", "content": "Hi"}], "temperature": NaN}',
                                              headers={**AUTH, "Content-Type": "application/json"})}
    for case, response in refused.items():
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error", case
        assert response.headers["X-Seal-Version"] == served, case
    unknown = chat(model="gpt-4")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    long = chat(messages=[{"role": "user", "content": "tide " * 1100}])  # the tiny model's context is 1024
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    assert chat(seed=2**63 - 1, temperature=0.7, top_p=0.5, n=1).status_code == 200
    assert chat(messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]).is_success
    big = server.post("/v1/chat/completions", content=b"x" * (2 << 20), headers={**AUTH, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    chunked = server.post("/v1/chat/completions", content=iter([b"x" * 65536] * 20),  # no Content-Length
                          headers={**AUTH, "Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    stranger = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert stranger.status_code == 401  # not 400: a body without the key is never parsed
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 401 and server.get(path).status_code == 200
    assert 'seal_requests_total{path="unmatched",status="401"}' in server.get("/metrics").text


def test_uploads_are_told_their_limits_and_no_reply_shows_a_server_path(server):
    big = server.post("/v1/adaptations", files={"file": ("big.md", b"word " * 1600)})
    assert big.json()["error"]["message"] == "big.md is larger than the limit of 4000 bytes"
    many = server.post("/v1/adaptations", files=[("file", (f"{n}.md", DOC.encode())) for n in range(5)])
    assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_files"
    assert many.json()["error"]["message"] == "5 documents in one adaptation; the limit is 2"
    created = server.post("/v1/adaptations", files={"file": ("brellick.md", DOC.encode())}).json()
    assert created["documents"] == [{"name": "brellick.md", "sha256": created["documents"][0]["sha256"]}]
    job = server.wait_for(created["id"])
    replies = [server.get("/v1/adaptations").text, server.get(f"/v1/adaptations/{job['id']}").text,
               server.get("/v1/versions").text, server.get(f"/v1/versions/{job['version']}").text]
    assert not [reply for reply in replies if "uploads" in reply or str(server.home) in reply]


def test_two_sampled_requests_without_a_seed_differ_and_with_one_agree(server):
    client = OpenAI(base_url=f"{server.url}/v1", api_key=KEY)

    def sample(**seed) -> str:
        return client.chat.completions.create(model="seal", messages=[{"role": "user", "content": "Tell a story."}],
                                              max_tokens=24, temperature=1.0, **seed).choices[0].message.content

    assert sample() != sample()
    assert sample(seed=11) == sample(seed=11)


def test_served_is_current_when_activations_race_a_cli_learn_and_both_learns_end(tmp_path, tiny_model_dir, facts_file):
    """A `seal learn` by another process holds the store while the server is asked to adapt and to activate: the
    server's adaptation waits for it, activations are refused meanwhile (409), and afterwards the server serves
    whatever is current, including a rollback made outside it."""
    home = tmp_path / "home"
    assert learn(Store(home), [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    server = Server(home, tiny_model_dir)
    try:
        ferry = tmp_path / "ferry.md"
        ferry.write_text("# Quellin Ferry\n\nThe Quellin ferry leaves Varrow pier at nine every morning.\n")
        outside: list = []
        cli = threading.Thread(target=lambda: outside.append(learn(Store(home), [str(ferry)],
                                                                   options(tiny_model_dir, **OPEN_GATE))))
        cli.start()
        time.sleep(0.5)
        job = server.post("/v1/adaptations", files={"file": ("brellick.md", DOC.encode())}).json()
        statuses = []
        while cli.is_alive():
            statuses.append(server.post(f"/v1/versions/{('v0', 'v1')[len(statuses) % 2]}/activate").status_code)
            time.sleep(0.1)
        cli.join()
        assert outside[0].committed and 409 in statuses and set(statuses) <= {200, 409}
        assert server.wait_for(job["id"])["status"] in ("committed", "rolled_back")  # it waited, then ran
        assert serving_settles(server) == Store(home).current_id()
        with Store(home).writer():  # `seal rollback v0` from a terminal
            Store(home).set_current("v0")
        assert serving_settles(server) == "v0"
    finally:
        server.stop()


def serving_settles(server: ServerProcess, timeout: float = 20) -> str:
    """The version served once it equals the current one (the server looks for outside changes when idle)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        versions = server.get("/v1/versions").json()
        if versions["serving"] == versions["current"]:
            return versions["serving"]
        time.sleep(0.2)
    raise AssertionError(f"serving {versions['serving']} but {versions['current']} is current")


def test_a_bug_is_answered_as_a_counted_json_500(tmp_path, tiny_model_dir):
    app = create_app(ServeConfig(home=tmp_path / "home", api_key=KEY, model=str(tiny_model_dir)))

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    app.state.server.answers = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/answers", json={"question": "Who?"}, headers=AUTH)
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert "a bug" not in response.text and response.headers["X-Seal-Version"] == "v0"
        assert 'seal_requests_total{path="/v1/answers",status="500"} 1.0' in client.get("/metrics", headers=AUTH).text


def test_a_client_leaving_mid_stream_frees_its_row(server):
    cancelled = 'seal_generations_total{finish="cancelled"}'
    before = metric(server, cancelled)
    body = {"model": "seal", "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 512,
            "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ") and next(lines) == ""
    # the connection is closed after the first chunk; the server notices and drops the request from the batch
    deadline = time.time() + 30
    while time.time() < deadline and metric(server, cancelled) == before:
        time.sleep(0.2)
    assert metric(server, cancelled) == before + 1 and metric(server, "seal_requests_decoding") == 0


def test_killed_mid_training_and_mid_stream_then_restarted_loses_nothing(tmp_path, tiny_model_dir, facts_file):
    """kill -9 while an adaptation trains and a reply streams: the restarted server opens the store intact with every
    committed version, reports the job interrupted, and goes on with the queue."""
    home = tmp_path / "home"
    assert learn(Store(home), [str(facts_file)], options(tiny_model_dir, **OPEN_GATE)).committed
    first = Server(home, tiny_model_dir)
    cut_short = first.post("/v1/adaptations", files={"file": ("a.md", DOC.encode())}).json()
    waiting = first.post("/v1/adaptations", files={"file": ("b.md", DOC.encode())}).json()
    first.wait_for(cut_short["id"], ("training",))
    body = {"model": "seal", "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 512,
            "stream": True}
    with httpx.stream("POST", f"{first.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        next(response.iter_lines())
        first.process.kill()  # SIGKILL, mid-stream and mid-training
        first.process.wait()
    second = Server(home, tiny_model_dir)
    try:
        assert second.get(f"/v1/adaptations/{cut_short['id']}").json()["status"] == "interrupted"
        assert second.wait_for(waiting["id"])["status"] in ("committed", "rolled_back")
        versions = {v["id"]: v["status"] for v in second.get("/v1/versions").json()["data"]}
        assert versions["v1"] == "committed" and all(s in ("base", "committed", "rolled_back") for s in versions.values())
        assert not list((home / "versions").glob(".tmp-*"))  # the next writer swept what the kill left
        assert second.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 4}).status_code == 200
    finally:
        second.stop()
