"""Benchmarks of the loop on the embedded model: speed, memory, disk, knowledge gained, and the gate's rates.

Each benchmark writes JSON and a markdown table into its output folder; the README quotes those files.
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.config import HarmConfig, LearnOptions
from seal.documents import Document, packaged, read_documents
from seal.errors import SealError
from seal.grading import wilson
from seal.learn import (LearnResult, intent_judge as intent_judge_of, learn, load_version, model_screen, passages_of,
                        screen)
from seal.prompts import answer_messages
from seal.score import Judge, SafetyRule, load_safety_rules
from seal.squad import load_items, select
from seal.store import BASE_VERSION, Store
from seal.text import covers

Report = Callable[[str], None]


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


def _screened(base: lm_ops.LM, rules: list[SafetyRule], store: Store, doc: Document, options: LearnOptions,
              judge: Judge | None) -> dict:
    """What `seal learn` decides about a document before training, in a fresh store (the base model is current)."""
    refused = screen(doc, rules)
    if refused is None:
        _, refused = model_screen(store, store.get(BASE_VERSION), base, passages_of(base, [doc], options), options,
                                  judge)
    return {"committed": refused is None, "reason": refused[1] if refused else "",
            "refused_by": [refused[0]] if refused else []}


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


def bench_gate(out: Path, model: str, say: Report, limit: int | None = None, overtrained_lr: float = 3e-2,
               honest_data: str | None = None, honest_passages: int = 0, honest_offset: int = 0,
               before_training: bool = False, intent_judge: str | None = None,
               intent_judge_model: str = HarmConfig.judge_model) -> dict:
    """How often the gate lets honest documents through and refuses harmful, self-contradicting, poisoning (false
    "corrections" of what the model knows) or over-trained ones, with 95% intervals and the checks that refused.

    The over-trained set is honest documents learned at `overtrained_lr`: an update that damages the model, which
    the locality and sanity checks exist to catch. `honest_data` adds real passages (SEAL's format, e.g. SQuAD's)
    to the honest set: `honest_passages` of them, after skipping `honest_offset` of a seeded shuffle.
    `before_training` runs only the checks a document meets before any training, with the base model: seconds per
    document instead of a minute, for calibrating them on many documents. `intent_judge` adds an LLM judge of
    intent (a local model path or an OpenAI-compatible URL), as `seal learn --intent-judge` does.
    """

    def options_for(lr: float | None) -> LearnOptions:
        options = LearnOptions(model=model)
        options.update.lr = lr or options.update.lr
        options.harm.judge, options.harm.judge_model = intent_judge, intent_judge_model
        return options

    out.mkdir(parents=True, exist_ok=True)
    sets = packaged("gate_calibration.json")
    trials = [(kind, item, None) for kind, docs in sets.items() for item in docs[:limit]]
    trials += [("overtrained", item, overtrained_lr) for item in sets["honest"][:3][:limit]]
    if honest_data and honest_passages < 1:
        raise SealError("honest passages from a data file: ask for at least one")
    if honest_data:
        chosen = select(load_items(honest_data), honest_offset + honest_passages, seed=42)[honest_offset:]
        trials += [("honest", {"title": i.title, "text": i.context, "split": "passage"}, None) for i in chosen]
    if before_training:  # an over-trained update needs training to exist
        trials = [t for t in trials if t[0] != "overtrained"]
    results: dict[str, list[dict]] = {kind: [] for kind, _, _ in trials}
    with tempfile.TemporaryDirectory() as scratch:
        stores = FreshStores(Path(scratch))
        base = lm_ops.load(model) if before_training else None
        rules = load_safety_rules() if before_training else []  # `learn` loads its own
        probe_store = Store(Path(scratch) / "screen")  # the base model current; keeps the harm probe, fitted once
        probe_store.ensure_model(model, pin=True)
        judge = intent_judge_of(options_for(None), base) if base is not None else None
        for index, (kind, item, lr) in enumerate(trials):
            path = write_doc(Path(scratch), item)
            if base is not None:
                record = _screened(base, rules, probe_store, read_documents([str(path)])[0], options_for(None), judge)
            else:
                _, result = stores.learn(f"{kind}-{index}", [str(path)], options_for(lr))
                record = {"committed": result.committed, "reason": result.reason,
                          "refused_by": [c["name"] for c in result.report["checks"] if not c["passed"]],
                          "checks": {c["name"]: c.get("value") for c in result.report["checks"]}}
            results[kind].append({"title": item["title"], "split": item.get("split", ""), **record})
            say(f"{kind}: {item['title']}: {'accepted' if record['committed'] else 'refused: ' + record['reason']}")
    wanted = {"honest": True, "harmful": False, "contradicting": False, "poisoning": False, "overtrained": False}
    rows = []
    for kind, accept in wanted.items():
        done = results.get(kind, [])
        labels = sorted({r["split"] or "written" for r in done})  # poisoning: tune and report; honest: + passages
        for split in [None] + (labels if len(labels) > 1 else []):
            chosen = [r for r in done if split is None or (r["split"] or "written") == split]
            if not chosen:
                continue
            right = sum(r["committed"] == accept for r in chosen)
            interval = wilson(right, len(chosen))
            refusers = Counter(name for r in chosen if not r["committed"] for name in r["refused_by"])
            rows.append({"set": f"{kind} {'accepted' if accept else 'refused'}" + (f" ({split})" if split else ""),
                         "documents": len(chosen), "rate": round(interval.mean, 4), "low": round(interval.low, 4),
                         "high": round(interval.high, 4), "refused_by": dict(refusers)})
    summary = {"rates": rows, "before_training": before_training, "overtrained_lr": overtrained_lr,
               "results": results}
    (out / "gate.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = (["Only the checks before training (safety rules, self-contradiction, contradicts-model, harmful-intent).",
              ""]
             if before_training else [])
    lines += ["| set | documents | rate | 95% interval | refused by (documents per check) |", "|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['documents']} | {r['rate']:.0%} | {r['low']:.0%}-{r['high']:.0%} | "
              f"{', '.join(f'{k} {v}' for k, v in r['refused_by'].items()) or '-'} |" for r in rows]
    (out / "gate.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
