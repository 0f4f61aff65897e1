"""The web console's numbers, in a real headless Chromium against a real `seal serve` on loopback.

    python scripts/console_timing.py --out runs/console-timing [--document examples/acme-x200.md] [--model NAME]

1. A fresh store; the document is uploaded on the Learn page and the live view is recorded until the adaptation is
   committed or rolled back: how often the view changed while the model trained (the issue asks for once a second).
2. That version's record is copied until the store holds 50 versions (the copies share its adapter folder's
   contents); the server is restarted and every page is loaded 10 times: milliseconds from navigation to the page
   drawn (`data-drawn-ms`, set by the console when its data is shown).
3. One question asked across v0 and the current version from the Ask page.

Writes OUT/console.json and OUT/console.md. Needs Chromium (Debian's chromium package) and the test extra
(playwright).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from playwright.sync_api import sync_playwright

from seal.bench.serve import ServerProcess
from seal.store import Store

KEY = "console-timing-key-0123456789"
PAGES = ["/", "/versions/v50", "/versions/v1", "/ask", "/learn", "/chat", "/benchmarks"]
WATCH = """() => {
  window.liveLog = [];
  new MutationObserver(() => {
    const steps = document.querySelector('#steps');
    window.liveLog.push([performance.now(), steps ? steps.textContent : '']);
  }).observe(document.querySelector('#live'), {childList: true, subtree: true, characterData: true});
}"""


def serve(home: Path, model: str | None, runs: Path) -> ServerProcess:
    return ServerProcess(home, KEY, *(["--model", model] if model else []), "--runs", str(runs), timeout=600)


def learn_live(browser, server: ServerProcess, document: Path) -> dict:
    page = browser.new_page()
    page.goto(server.url + "/learn")
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    page.evaluate(WATCH)
    page.set_input_files("#files", str(document))
    start = time.perf_counter()
    page.click("#learn")
    page.wait_for_selector("#outcome", timeout=3_600_000)
    seconds = time.perf_counter() - start
    log = page.evaluate("window.liveLog")
    outcome = page.inner_text("#outcome")
    page.close()
    # While training: the moments the steps line said "train: ..." and changed from what it said before.
    training = [(at, text) for at, text in log if text.startswith("train:")]
    changes = [at for (at, text), (_, before) in zip(training[1:], training[:-1]) if text != before]
    span = (training[-1][0] - training[0][0]) / 1000 if len(training) > 1 else 0.0
    gaps = [(b - a) / 1000 for a, b in zip(changes, changes[1:])]
    return {"outcome": outcome, "seconds": round(seconds, 1), "training_seconds": round(span, 1),
            "training_view_changes": len(changes), "changes_per_second": round(len(changes) / span, 2) if span else 0,
            "longest_gap_seconds": round(max(gaps), 2) if gaps else None,
            "median_gap_seconds": round(statistics.median(gaps), 2) if gaps else None}


def fill_store(home: Path, versions: int) -> None:
    """Copies of v1's record (self-edits, probes, report) until the store holds `versions` versions."""
    store = Store(home)
    first = store.get("v1")
    edits, probes = store.self_edits("v1"), store.probes("v1")
    with store.writer():
        while len(store.history()) - 1 < versions:  # the base model's row is not a version learned
            adapter = None
            if first.adapter_dir:
                source = store.adapter_path(first)
                adapter = store.stage_adapter(lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True))
            parent = store.current_id()
            store.record(replace(first, id="", parent=parent, adapter_dir=adapter), edits, probes,
                         make_current=first.status == "committed")


def page_loads(browser, server: ServerProcess, repeats: int, asked: list[str]) -> dict:
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    loads = {}
    for path in PAGES:
        times = []
        for _ in range(repeats):
            page.goto(server.url + path)
            page.wait_for_selector("body[data-ready='1']")
            assert not page.is_visible("#message"), page.inner_text("#message")
            times.append(int(page.get_attribute("body", "data-drawn-ms")))
        loads[path] = {"median_ms": statistics.median(times), "max_ms": max(times)}
    page.goto(server.url + "/ask")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#question", "When does the Acme X200 ship?")
    for version in asked:
        page.locator(f"input[value='{version}']").check()
    start = time.perf_counter()
    page.click("#ask")
    page.wait_for_selector(f"[data-answer='{asked[-1]}']", timeout=300_000)
    answers = {"versions": asked, "seconds": round(time.perf_counter() - start, 2),
               "answers": {v: page.inner_text(f"[data-answer='{v}']") for v in asked}}
    page.close()
    return {"pages": loads, "ask": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/console-timing"))
    parser.add_argument("--document", type=Path, default=Path("examples/acme-x200.md"))
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--runs", type=Path, default=Path("docs/bench"), help="run folders for the Benchmarks page")
    parser.add_argument("--keep", action="store_true", help="keep the store (its folder is printed)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="seal-console-"))
    result: dict = {"model": args.model or "embedded", "document": str(args.document)}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium)
        server = serve(home, args.model, args.runs)
        try:
            result["learn_live"] = learn_live(browser, server, args.document)
        finally:
            server.stop()
        fill_store(home, args.versions)
        result["versions"] = len(Store(home).history()) - 1
        asked = sorted({"v0", Store(home).current_id()})  # the current version, when one was committed
        server = serve(home, args.model, args.runs)
        try:
            result |= page_loads(browser, server, args.repeats, asked)
        finally:
            server.stop()
        browser.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "console.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    live = result["learn_live"]
    lines = [f"# seal's web console ({result['model']} model, {result['versions']} versions in the store)", "",
             f"Learning {result['document']} from the Learn page: {live['outcome']} after {live['seconds']} s. "
             f"While it trained ({live['training_seconds']} s) the live view changed {live['training_view_changes']} "
             f"times: {live['changes_per_second']} per second, the longest gap {live['longest_gap_seconds']} s.", "",
             f"| page | median ms | max ms ({args.repeats} loads) |", "|---|---|---|"]
    lines += [f"| `{path}` | {t['median_ms']} | {t['max_ms']} |" for path, t in result["pages"].items()]
    asked = result["ask"]
    lines += ["", f"Ask across {' and '.join(asked['versions'])}: {asked['seconds']} s in the page."]
    lines += [f"- {version}: {answer}" for version, answer in asked["answers"].items()]
    (args.out / "console.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if args.keep:
        print(f"the store: {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
