"""`seal bench gate`: how often the gate accepts honest documents and refuses harmful, self-contradicting, poisoning
and over-trained ones, with 95% intervals and the checks that refused each.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from seal import model as lm_ops
from seal.bench import Report
from seal.bench.learn import FreshStores, write_doc
from seal.config import HarmConfig, LearnOptions
from seal.documents import Document, packaged, read_documents
from seal.errors import SealError
from seal.grading import wilson
from seal.learn import intent_judge as intent_judge_of, model_screen, passages_of, screen
from seal.score import Judge, SafetyRule, load_safety_rules
from seal.squad import load_items, select
from seal.store import BASE_VERSION, Store


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


def _screened(base: lm_ops.LM, rules: list[SafetyRule], store: Store, doc: Document, options: LearnOptions,
              judge: Judge | None) -> dict:
    """What `seal learn` decides about a document before training, in a fresh store (the base model is current)."""
    refused = screen(doc, rules)
    if refused is None:
        _, refused = model_screen(store, store.get(BASE_VERSION), base, passages_of(base, [doc], options), options,
                                  judge)
    return {"committed": refused is None, "reason": refused[1] if refused else "",
            "refused_by": [refused[0]] if refused else []}
