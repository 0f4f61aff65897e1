"""`seal bench learn`: closed-book accuracy on invented facts after `seal learn`, both ways a user works, with the
time of each stage, peak memory and disk per version.
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.bench import Report
from seal.config import LearnOptions
from seal.documents import packaged
from seal.learn import LearnResult, learn, load_version
from seal.prompts import answer_messages
from seal.squad import load_items
from seal.store import Store
from seal.text import covers


def closed_book(store: Store, model: str, questions: list[str]) -> list[str]:
    lm, _ = load_version(store, model)
    prompts = [lm.chat_prompt(answer_messages(q)) for q in questions]
    return lm_ops.generate(lm, prompts, max_new_tokens=48)


def write_doc(folder: Path, item: dict) -> Path:
    path = folder / (re.sub(r"\W+", "-", item["title"].lower()).strip("-") + ".md")
    path.write_text(f"# {item['title']}\n\n{item.get('context') or item['text']}\n", encoding="utf-8")
    return path


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Condition:
    name: str
    samples: int  # 0: the passage alone


def _grade(store: Store, model: str, items: list[dict]) -> list[list[str]]:
    """Every question of every item asked closed-book of the store's current version; the predictions per item."""
    questions = [q["question"] for item in items for q in item["questions"]]
    predictions = iter(closed_book(store, model, questions))
    return [[next(predictions) for _ in item["questions"]] for item in items]


def _correct(item: dict, predictions: list[str]) -> int:
    return sum(covers(p, q["answer"]) for p, q in zip(predictions, item["questions"]))


def bench_learn(out: Path, documents: int, model: str, say: Report, strategies: list[str], samples: int = 2,
                ways: tuple[str, ...] = ("fresh", "sequential"), facts: str | None = None) -> dict:
    """Closed-book accuracy on invented facts, both ways a user works: each document learned into a fresh store
    (before, after the passage alone, after `seal learn` with each strategy), and all documents learned in turn into
    one store, then every question asked. Graded as the knowledge benchmark grades (the local judge).
    `facts`: the user's own documents and questions (SEAL's format) instead of the packaged invented ones."""
    out.mkdir(parents=True, exist_ok=True)
    items = packaged("invented_facts.json") if facts is None else [
        {"title": i.title, "context": i.context, "questions": [{"question": q, "answer": a} for q, a in i.questions]}
        for i in load_items(facts)]
    items = items[:documents]
    conditions = [Condition("passage", 0)] + [Condition(s, samples) for s in strategies]
    rows, timings, disk = [], [], []
    sequential: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        stores = FreshStores(Path(scratch))
        docs = [write_doc(Path(scratch), item) for item in items]
        for index, (item, doc) in enumerate(zip(items, docs) if "fresh" in ways else []):
            row = {"title": item["title"], "questions": len(item["questions"])}
            row["base"] = _correct(item, _grade(Store(Path(scratch) / f"base-{index}"), model, [item])[0])
            for condition in conditions:
                options = _options(model, condition, strategies)
                store, result = stores.learn(f"{condition.name}-{index}", [str(doc)], options)
                predictions = _grade(store, model, [item])[0]
                row[condition.name] = _correct(item, predictions)
                row[f"{condition.name}_committed"] = result.committed
                row[f"{condition.name}_answers"] = predictions
                row[f"{condition.name}_kept"] = result.kept
                row[f"{condition.name}_checks"] = {c["name"]: c.get("value") for c in result.report["checks"]}
                if condition.name == strategies[0]:
                    timings.append({**result.timings, "total": round(sum(result.timings.values()), 2)})
                    if result.committed:
                        disk.append(_dir_size(store.adapter_path(store.current())))
            say(f"{item['title']}: base {row['base']}, " + ", ".join(
                f"{c.name} {row[c.name]}{'' if row[c.name + '_committed'] else ' (refused)'}" for c in conditions)
                + f" / {len(item['questions'])}")
            rows.append(row)
        for condition in conditions[1:] if "sequential" in ways else []:
            committed, seconds = [], []
            for doc in docs:
                store, result = stores.learn(f"sequential-{condition.name}", [str(doc)],
                                             _options(model, condition, strategies))
                committed.append(result.committed)
                seconds.append(round(sum(result.timings.values()), 1))  # grows with the replay
                outcome = "committed" if result.committed else "refused: " + result.reason
                say(f"in turn, {condition.name}: {doc.name} {outcome} ({seconds[-1]:.0f} s)")
            predictions = _grade(store, model, items)
            sequential[condition.name] = {
                "committed": committed, "seconds": seconds,
                "correct": [_correct(i, p) for i, p in zip(items, predictions)], "answers": predictions,
                "versions": len(store.history())}
    total_q = sum(len(item["questions"]) for item in items)
    accuracy = ({name: round(sum(r[name] for r in rows) / total_q, 4)
                 for name in ["base"] + [c.name for c in conditions]} if rows else {})
    in_turn = {name: round(sum(r["correct"]) / total_q, 4) for name, r in sequential.items()}
    stages = {key: round(statistics.median(t[key] for t in timings), 2) for key in timings[0]} if timings else {}
    summary = {
        "facts": facts or "invented_facts.json (packaged)", "documents": len(items), "questions": total_q,
        "accuracy": accuracy, "accuracy_in_turn": in_turn,
        "self_edits_beat_passage": {s: accuracy[s] > accuracy["passage"] for s in strategies} if rows else {},
        "timed_strategy": strategies[0],
        "median_seconds_by_stage": stages,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "adapter_mb": round(statistics.median(disk) / 1e6, 2) if disk else None,
        "rows": rows, "in_turn": sequential,
    }
    (out / "learn.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    table = [f"Documents: {summary['facts']}, {len(items)} documents, {total_q} questions.", "",
             "| condition | each document in a fresh store | all documents learned in turn into one store |",
             "|---|---|---|"]
    for name in dict.fromkeys(list(accuracy) + list(in_turn)):
        cells = [f"{d[name]:.1%} ({round(d[name] * total_q)}/{total_q})" if name in d else "-"
                 for d in (accuracy, in_turn)]
        table.append(f"| {name} | {cells[0]} | {cells[1]} |")
    table += ["", "| stage | median seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in stages.items()]
    table += ["", f"Peak RSS: {summary['peak_rss_gib']} GiB. Adapter per version: {summary['adapter_mb']} MB."]
    (out / "learn.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    return summary


def _options(model: str, condition: Condition, strategies: list[str]) -> LearnOptions:
    options = LearnOptions(model=model)
    options.generation.samples = condition.samples
    options.generation.strategy = condition.name if condition.samples else strategies[0]
    return options


class FreshStores:
    """A new store per trial, sharing the base model's battery answers and the harm probe so they are computed once."""

    SHARED = ("reference", "harm_probe")

    def __init__(self, root: Path):
        self.root, self.shared = root, {}

    def learn(self, name: str, paths: list[str], options: LearnOptions) -> tuple[Store, LearnResult]:
        store = Store(self.root / name)
        for key, value in self.shared.items():
            store.set_state(key, value)
        result = learn(store, paths, options)
        self.shared |= {key: store.get_state(key) for key in self.SHARED if store.get_state(key)}
        return store, result
