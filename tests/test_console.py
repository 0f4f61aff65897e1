"""The web console of `seal serve`: its API on a real server, then the pages in a real headless Chromium.

The server runs on a store whose v1 was taught one answer (conftest's `teach`), so asking across versions and blame
have a known change to find. Screenshots of every page go to build/console-screenshots/ (or $SEAL_SCREENSHOTS).
"""

import os
import shutil
from pathlib import Path

import httpx
import pytest

from seal.bench.serve import ServerProcess
from seal.serve.console import run_file, run_folders
from seal.serve.errors import ApiError

from conftest import TAUGHT_QUESTION, teach

KEY = "console-key-0123456789abcdef"
DOC = ("# Brellick Tide Clock\n\nThe Brellick Tide Clock stands on the pier of the town of Brellick. It was built in "
       "1893 by the clockmaker Oswin Tarrow and shows the height of the tide with a copper float.\n")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("SEAL_SCREENSHOTS", Path(__file__).parent.parent / "build" / "console-screenshots"))


@pytest.fixture(scope="module")
def console(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("console")
    teach(root / "home", tiny_model_dir)
    run = root / "runs" / "knowledge" / "demo-run"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"passages": 2}', encoding="utf-8")
    (run / "results.md").write_text("# Demo run\n\n| condition | accuracy |\n|---|---|\n| study | 27.9% |\n",
                                    encoding="utf-8")
    (root / "runs" / "secret.md").write_text("not a run", encoding="utf-8")
    server = ServerProcess(root / "home", KEY, "--model", str(tiny_model_dir), "--runs", str(root / "runs"),
                           "--public-read")
    yield server
    server.stop()


def test_console_api_shows_versions_answers_across_them_and_blames(console):
    detail = console.get("/v1/versions/v1").json()
    assert detail["current"] and [e["accepted"] for e in detail["self_edits"]] == [True, True, False]
    assert console.get("/v1/versions/v7").status_code == 404
    for path in ("/v1/models", "/v1/versions", "/v1/versions/v1", "/v1/adaptations", "/metrics", "/v1/runs"):
        assert httpx.get(console.url + path).status_code == 200, path  # --public-read: reads need no key
    chat = httpx.post(f"{console.url}/v1/chat/completions", timeout=60,
                      json={"model": "seal", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert chat.status_code == 200
    assert httpx.post(console.url + "/v1/versions/v0/activate").status_code == 401  # writes always need it
    assert httpx.post(console.url + "/v1/adaptations", files={"file": ("a.md", DOC.encode())}).status_code == 401

    answers = console.post("/v1/answers", json={"question": TAUGHT_QUESTION, "versions": ["v0", "v1"]}).json()["data"]
    assert [a["version"] for a in answers] == ["v0", "v1"]
    assert "harbour" in answers[1]["answer"].lower() and "harbour" not in answers[0]["answer"].lower()
    assert console.post("/v1/answers", json={"question": "Why?", "versions": ["v9"]}).status_code == 404
    assert console.post("/v1/answers", json={"question": " ", "versions": ["v1"]}).status_code == 400

    steps = console.post("/v1/blame", json={"question": TAUGHT_QUESTION}).json()["data"]
    assert [(s["version"], s["changed"]) for s in steps] == [("v0", False), ("v1", True)]
    assert steps[1]["sources"] == ["/docs/beacon.md"]

    runs = console.get("/v1/runs").json()["data"]
    assert [r["name"] for r in runs] == ["knowledge/demo-run"]
    assert "27.9%" in console.get("/v1/runs/knowledge/demo-run/files/results.md").text
    for outside in ("/v1/runs/knowledge/demo-run/files/..%2F..%2Fsecret.md", "/v1/runs/../files/secret.md",
                    "/v1/runs/knowledge/demo-run/files/config.py"):
        assert console.get(outside).status_code == 404, outside

    page = httpx.get(console.url + "/versions/v7", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "console.js" in page.text
    assert httpx.get(console.url + "/no-such-page", headers={"Accept": "text/html"}).status_code == 404
    assert httpx.get(console.url + "/no-such-page").json()["error"]["message"] == "Not Found"  # a client gets JSON


def test_run_files_never_come_from_outside_the_runs_folder(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "outside"
    for folder in (root / "a", root / ".hidden", outside):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}", encoding="utf-8")
    (outside / "secret.md").write_text("secret", encoding="utf-8")
    (root / "a" / "link.md").symlink_to(outside / "secret.md")
    assert run_file(root, "a", "config.json") == (root / "a" / "config.json").resolve()
    assert [run["name"] for run in run_folders(root)] == ["a"]
    for name, file in [("../outside", "secret.md"), ("a", "link.md"), (".hidden", "config.json"),
                       ("a", "../../outside/secret.md"), (str(outside), "secret.md")]:
        with pytest.raises(ApiError):
            run_file(root, name, file)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install Debian's chromium package (make test does)")
def test_console_in_a_browser_learn_watch_ask_blame_roll_back(console):
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def visit(path: str, shot: str) -> None:
            page.goto(console.url + path)
            page.wait_for_selector("body[data-ready='1']")
            page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)

        visit("/", "0-no-key")  # --public-read: the timeline shows; a write gets the API's 401 as a message
        page.click("[data-activate='v0']")
        expect(page.locator("#message")).to_contain_text("API key")
        page.screenshot(path=str(SCREENSHOTS / "0-no-key.png"), full_page=True)

        page.fill("#key", KEY)  # entered once: every later page sends it
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("[data-version='v1']")
        expect(page.locator("#message")).to_be_hidden()

        visit("/learn", "1-learn")
        page.fill("#text", DOC)
        page.click("#learn")
        expect(page.locator("#outcome")).to_be_visible(timeout=600_000)  # committed or rolled back, with the reason
        outcome = page.locator("#live [data-status]").get_attribute("data-status")
        assert outcome in ("committed", "rolled_back"), page.inner_text("#live")
        expect(page.locator("#live svg.chart")).to_be_visible()  # the training's loss, drawn while it ran
        assert page.locator("#live .stages li.done").count() == 6  # every stage was seen, load to check
        page.screenshot(path=str(SCREENSHOTS / "2-learned.png"), full_page=True)

        visit("/", "3-versions")  # the new version in the timeline, with its status
        expect(page.locator("[data-version='v2']")).to_contain_text("committed" if outcome == "committed"
                                                                     else "rolled back")

        visit("/versions/v2", "4-version")
        expect(page.locator("#checks")).to_contain_text("locality")
        expect(page.locator("details").first).to_contain_text("Oswin Tarrow")  # the source with its text
        rows = page.locator("#self-edits tbody tr")
        every = rows.count()
        page.select_option("select[aria-label='kept or rejected']", "rejected")
        assert rows.count() == page.locator("#self-edits tbody tr[data-kept='0']").count() < every

        visit("/ask", "5-ask")
        page.fill("#question", TAUGHT_QUESTION)
        page.locator("input[value='v0']").check()
        page.locator("input[value='v1']").check()
        page.click("#ask")
        expect(page.locator("[data-answer='v1']")).to_contain_text("harbour")
        expect(page.locator("[data-answer='v0']")).not_to_contain_text("harbour")
        page.click("#blame")
        expect(page.locator("[data-blame='v1']")).to_contain_text("changed")
        page.screenshot(path=str(SCREENSHOTS / "6-blame.png"), full_page=True)

        visit("/", "7-before-roll-back")
        page.click("[data-activate='v0']")  # roll back to the base model
        expect(page.locator("#message")).to_contain_text("v0 is now current")
        expect(page.locator("[data-version='v0'] .badge.current")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "8-rolled-back.png"), full_page=True)

        visit("/chat", "9-chat")
        page.fill("#say", "Hello there")
        page.click("#send")
        expect(page.locator(".turn.assistant")).not_to_be_empty()
        expect(page.locator("main")).to_contain_text("answered by v0")

        visit("/benchmarks/knowledge/demo-run", "10-benchmark")
        expect(page.locator(".markdown table")).to_contain_text("27.9%")

        visit("/versions/v7", "11-not-found")
        expect(page.locator("h1")).to_have_text("Not found")

        browser.close()
    assert not errors, errors
