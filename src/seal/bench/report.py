"""`seal bench report`: the summary JSON, a markdown table and PNG plots from a finished or partial run folder."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from seal.errors import SealError  # noqa: E402
from seal.grading import Interval, bootstrap, paired  # noqa: E402
from seal.bench.knowledge import ARMS, FIXED  # noqa: E402
from seal.runs import RunFolder  # noqa: E402
from seal.model import read_lineage  # noqa: E402

METRICS = ("judge", "contains", "f1", "em")
SEAL_PAPER = {"base": 32.7, "passage": 33.5, "implications": 39.7, "external (GPT-4.1 implications)": 46.3,
              "after 2 ReST-EM rounds": 47.0}


def _interval(interval: Interval) -> dict:
    return {"mean": round(interval.mean, 4), "low": round(interval.low, 4), "high": round(interval.high, 4)}


def _per_passage(records: list[dict], condition: str, metric: str) -> dict[int, float]:
    return {r["passage"]: r["accuracy"][metric] for r in records if r["condition"] == condition}


def _spread(records: list[dict], condition: str) -> dict:
    """How much the score moves between self-edit samples, and between repeated updates of one sample."""
    over_samples, over_repeats = [], []
    for record in (r for r in records if r["condition"] == condition):
        by_sample: dict[int, list[float]] = {}
        for trial in record["trials"]:
            by_sample.setdefault(trial["sample"], []).append(trial["accuracy"]["judge"])
        if len(by_sample) > 1:
            over_samples.append(statistics.stdev([statistics.mean(v) for v in by_sample.values()]))
        over_repeats += [statistics.stdev(v) for v in by_sample.values() if len(v) > 1]
    return {"sd_over_samples": round(statistics.mean(over_samples), 4) if over_samples else None,
            "sd_over_repeats": round(statistics.mean(over_repeats), 4) if over_repeats else None}


def _best_of_samples(records: list[dict], condition: str) -> dict | None:
    """Pick the best sample on half of a passage's questions and score it on the other half (held out).

    Scoring a pick on the questions that chose it would flatter it; the mean sample on the same held-out half
    is the fair comparison.
    """
    picked, average = [], []
    for record in (r for r in records if r["condition"] == condition):
        samples: dict[int, list[list[float]]] = {}
        for trial in record["trials"]:
            samples.setdefault(trial["sample"], []).append([float(a["judge"]) for a in trial["answers"]])
        if len(samples) < 2 or record["questions"] < 2:
            continue
        chooser = {s: statistics.mean(q for run in runs for q in run[0::2]) for s, runs in samples.items()}
        held_out = {s: statistics.mean(q for run in runs for q in run[1::2]) for s, runs in samples.items()}
        picked.append(held_out[max(chooser, key=lambda s: (chooser[s], -s))])
        average.append(statistics.mean(held_out.values()))
    if not picked:
        return None
    return {"passages": len(picked), "picked_heldout": round(statistics.mean(picked), 4),
            "mean_sample_heldout": round(statistics.mean(average), 4)}


def _judge_agreement(records: list[dict]) -> dict:
    answers = [a for r in records for t in r.get("trials", []) for a in t["answers"]]
    if not answers:
        return {}
    agree = lambda other: round(sum(a["judge"] == a[other] for a in answers) / len(answers), 4)  # noqa: E731
    return {"answers": len(answers), "with_em": agree("em"), "with_contains": agree("contains")}


def summarize_passages(config: dict, records: list[dict]) -> dict:
    conditions = [c for c in config["conditions"] if any(r["condition"] == c for r in records)]
    table = {}
    for condition in conditions:
        rows = [r for r in records if r["condition"] == condition]
        entry = {"passages": len(rows), "questions": sum(r["questions"] for r in rows),
                 "seconds_per_passage": round(statistics.mean(r["seconds"] for r in rows), 2),
                 "seconds_total": round(sum(r["seconds"] for r in rows), 1)}
        for metric in METRICS:
            entry[metric] = _interval(bootstrap(list(_per_passage(records, condition, metric).values())))
        trials = [t for r in rows for t in r["trials"] if "coverage" in t]
        if trials:  # gold answers found verbatim in the generated training text, over all questions asked
            entry["coverage"] = round(sum(t["coverage"] for t in trials)
                                      / sum(len(t["answers"]) for t in trials), 4)
        quizzed = [t for t in trials if t.get("quiz_pairs")]
        if quizzed:  # the share of the model's own question-answer pairs that the evaluator's round trip kept
            entry["quiz_kept_share"] = round(sum(t["quiz_kept"] for t in quizzed)
                                             / sum(t["quiz_pairs"] for t in quizzed), 4)
        if any(len(r["trials"]) > 1 for r in rows):
            entry["spread"] = _spread(records, condition)
            entry["best_of_samples"] = _best_of_samples(records, condition)
        table[condition] = entry
    references = [c for c in ("base", "passage") if c in conditions]
    differences = {}
    for reference in references:
        for condition in conditions:
            if condition in ("base", "in-context", reference):
                continue
            differences[f"{condition} - {reference}"] = _difference(records, reference, condition)
    for condition in [c for c in conditions if c.startswith("policy:")]:
        # a trained policy against the untrained model writing with the same prompt
        untrained = read_lineage(condition.partition(":")[2]).get("strategy", "implications")
        if untrained in conditions:
            differences[f"{condition} - {untrained}"] = _difference(records, untrained, condition)
    return {"conditions": table, "paired_differences": differences, "judge_agreement": _judge_agreement(records)}


def _difference(records: list[dict], reference: str, condition: str) -> dict:
    diff = paired(_per_passage(records, reference, "judge"), _per_passage(records, condition, "judge"))
    return {**_interval(diff), "excludes_zero": diff.excludes_zero()}


def summarize_continual(config: dict, records: list[dict]) -> dict:
    base = next((r for r in records if r["key"] == "continual/base"), None)
    arms = {}
    for arm in config["arms"]:
        steps = sorted((r for r in records if r.get("arm") == arm), key=lambda r: r["step"])
        if base is None or not steps:
            continue
        matrix = [[row["accuracy"]["judge"] for row in base["rows"]]]
        matrix += [[row["accuracy"]["judge"] for row in step["rows"]] for step in steps]
        first = [row[0] for row in matrix]
        # Each committed passage right after its own step, and after the last step.
        learned = [k for k, s in enumerate(steps) if s["committed"]]
        after_own = [matrix[k + 1][k] for k in learned]
        at_end = [matrix[-1][k] for k in learned]
        learn_seconds = [s.get("learn_seconds") for s in steps]
        # committed learns only: a document refused before training takes seconds and says nothing of the growth
        timed = [s["learn_seconds"] for s in steps if s.get("learn_seconds") is not None and s["committed"]]
        entry = {"matrix": matrix, "committed": [s["committed"] for s in steps],
                 "reasons": [s["reason"] for s in steps],
                 "first_passage": {"base": first[0], "after_own_update": first[1], "after_last": first[-1],
                                   "steps": len(steps)},
                 "mean_learned_after_last": round(statistics.mean(matrix[-1][: len(steps)]), 4),
                 "learned": {"passages": [steps[k]["passage"] for k in learned], "after_own_step": after_own,
                             "after_last_step": at_end,
                             "mean_after_own_step": round(statistics.mean(after_own), 4) if learned else None,
                             "mean_after_last_step": round(statistics.mean(at_end), 4) if learned else None},
                 "learn_seconds": learn_seconds,
                 # the last three committed learns against the first three: what a growing lineage costs
                 "learn_time_growth": round(statistics.mean(timed[-3:]) / statistics.mean(timed[:3]), 2)
                 if len(timed) >= 6 else None,
                 "seconds_per_step": round(statistics.mean(s["seconds"] for s in steps), 1)}
        if learned and entry["learned"]["mean_after_own_step"]:
            entry["learned"]["kept_share"] = round(entry["learned"]["mean_after_last_step"]
                                                   / entry["learned"]["mean_after_own_step"], 4)
        if "unrelated" in base and "unrelated" in steps[-1]:
            entry["unrelated"] = {"passages": len(base["unrelated"]),
                                  "untouched": _macro(base["unrelated"]), "after_last": _macro(steps[-1]["unrelated"])}
        arms[arm] = entry
    return {"arms": arms}


def _macro(rows: list[dict]) -> float:
    return round(statistics.mean(row["accuracy"]["judge"] for row in rows), 4)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(config: dict, summary: dict) -> str:
    lines = [f"Data: `{config['data']}`, mode {config['mode']}, model {config['model']}, seed {config['seed']}."]
    if config["mode"] == "continual":
        for arm, result in summary["arms"].items():
            k = result["first_passage"]["steps"]
            lines += ["", f"**{arm}** ({ARMS[arm]}): judge accuracy (%) after each step (rows) on each passage "
                      "(columns); row 0 is the untouched model.", "",
                      "| after | " + " | ".join(f"p{j}" for j in range(len(result["matrix"][0]))) + " |",
                      "|---" * (len(result["matrix"][0]) + 1) + "|"]
            for step, row in enumerate(result["matrix"]):
                mark = "" if step == 0 or result["committed"][step - 1] else " (refused)"
                lines.append(f"| {step}{mark} | " + " | ".join(_pct(v) for v in row) + " |")
            first = result["first_passage"]
            lines += ["", f"Passage 0: {_pct(first['base'])}% untouched, {_pct(first['after_own_update'])}% after its "
                      f"own update, {_pct(first['after_last'])}% after {k} updates. Mean over learned passages after "
                      f"the last step: {_pct(result['mean_learned_after_last'])}%. "
                      f"{result['seconds_per_step']} s per step (learn and every question)."]
            learned = result.get("learned", {})
            if learned.get("mean_after_own_step") is not None:
                kept = learned.get("kept_share")
                lines += ["", f"Learned passages ({len(learned['passages'])} committed): "
                          f"{_pct(learned['mean_after_own_step'])}% right after their own step, "
                          f"{_pct(learned['mean_after_last_step'])}% after the last"
                          + (f" ({_pct(kept)}% kept)." if kept is not None else ".")]
            if result.get("unrelated"):
                u = result["unrelated"]
                lines += ["", f"Unrelated passages ({u['passages']}, never learned): {_pct(u['untouched'])}% "
                          f"untouched, {_pct(u['after_last'])}% after the last step."]
            timed = [t for t in result.get("learn_seconds", []) if t is not None]
            if timed:
                growth = result.get("learn_time_growth")
                lines += ["", "`seal learn` seconds per step: " + ", ".join(f"{t:.0f}" for t in timed)
                          + (f" (last three committed / first three: {growth}x)." if growth else ".")]
        return "\n".join(lines) + "\n"
    table = summary["conditions"]
    lines += ["", "Macro-averaged over passages, 95% bootstrap intervals in brackets (%).", "",
              "| condition | passages | judge | contains | F1 | EM | s / passage |", "|---|---|---|---|---|---|---|"]
    for condition, entry in table.items():
        cells = [f"{_pct(entry[m]['mean'])} [{_pct(entry[m]['low'])}, {_pct(entry[m]['high'])}]" for m in METRICS[:2]]
        cells += [_pct(entry[m]["mean"]) for m in METRICS[2:]]
        lines.append(f"| {condition} | {entry['passages']} | " + " | ".join(cells)
                     + f" | {entry['seconds_per_passage']} |")
    total = sum(e["seconds_total"] for e in table.values())
    lines += ["", f"Total: {total / 60:.1f} min for {sum(e['passages'] for e in table.values())} passage-conditions."]
    generated = {c: e for c, e in table.items() if "coverage" in e}
    if generated:
        lines += ["", "| condition | gold answers verbatim in the generated training text | quiz pairs kept by the "
                  "round trip |", "|---|---|---|"]
        lines += [f"| {c} | {_pct(e['coverage'])}% | "
                  + (f"{_pct(e['quiz_kept_share'])}% |" if "quiz_kept_share" in e else "- |")
                  for c, e in generated.items()]
    if summary["paired_differences"]:
        lines += ["", "Paired differences in judge accuracy over the passages both conditions have, percentage points"
                  + (" (one adapter per condition in cpt mode: the intervals leave out the update's own noise)"
                     if config["mode"] == "cpt" else "") + ":", "",
                  "| difference | mean | 95% interval | excludes 0 |", "|---|---|---|---|"]
        for name, d in summary["paired_differences"].items():
            lines.append(f"| {name} | {_pct(d['mean'])} | [{_pct(d['low'])}, {_pct(d['high'])}] | "
                         f"{'yes' if d['excludes_zero'] else 'no'} |")
    spreads = {c: e for c, e in table.items() if "spread" in e}
    if spreads:
        lines += ["", "| condition | sd over samples | sd over repeats | best sample, held-out questions | "
                  "mean sample, same held-out questions |", "|---|---|---|---|---|"]
        for condition, e in spreads.items():
            best = e["best_of_samples"] or {}
            fmt = lambda v: "-" if v is None else _pct(v)  # noqa: E731
            lines.append(f"| {condition} | {fmt(e['spread']['sd_over_samples'])} | {fmt(e['spread']['sd_over_repeats'])}"
                         f" | {fmt(best.get('picked_heldout'))} | {fmt(best.get('mean_sample_heldout'))} |")
    lines += ["", "SEAL paper, for reference (Qwen2.5-7B, 200 passages, LLM judge): "
              + ", ".join(f"{k} {v}%" for k, v in SEAL_PAPER.items()) + "."]
    agreement = summary["judge_agreement"]
    if agreement:
        lines += ["", f"Judge ({config['judge_url'] or 'local rule judge'}) agrees with exact match on "
                  f"{_pct(agreement['with_em'])}% and with containment on {_pct(agreement['with_contains'])}% of "
                  f"{agreement['answers']} answers."]
    return "\n".join(lines) + "\n"


def plot(config: dict, summary: dict, folder: Path) -> list[Path]:
    written = []
    if config["mode"] == "continual":
        for arm, result in summary["arms"].items():
            fig, axis = plt.subplots(figsize=(6, 5))
            image = axis.imshow([[100 * v for v in row] for row in result["matrix"]], cmap="viridis", vmin=0,
                                vmax=100)
            axis.set_xlabel("passage")
            axis.set_ylabel("after update")
            axis.set_title(f"continual, {arm}: judge accuracy (%)")
            fig.colorbar(image)
            path = folder / f"continual-{arm}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
        return written
    table = summary["conditions"]
    names = list(table)
    means = [100 * table[n]["judge"]["mean"] for n in names]
    errors = [[100 * (table[n]["judge"]["mean"] - table[n]["judge"]["low"]) for n in names],
              [100 * (table[n]["judge"]["high"] - table[n]["judge"]["mean"]) for n in names]]
    fig, axis = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    axis.bar(names, means, yerr=errors, capsize=4, color=["#999" if n in FIXED else "#3b7" for n in names])
    axis.set_ylabel("accuracy by the judge (%)")
    axis.set_title(f"{config['mode']} mode, up to {max(e['passages'] for e in table.values())} passages, "
                   "95% bootstrap intervals")
    axis.tick_params(axis="x", rotation=30)
    path = folder / "accuracy.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [path]


def report(folder: Path) -> dict:
    """Write summary.json, results.md and the plots into the run folder; returns the summary."""
    run = RunFolder(folder)
    config, records = run.config(), run.records()
    if not records:
        raise SealError(f"{folder} has no finished trials yet; nothing to report")
    summary = summarize_continual(config, records) if config["mode"] == "continual" else summarize_passages(config, records)
    summary = {"config": config, **summary}
    summary["plots"] = [str(p) for p in plot(config, summary, folder)]
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (folder / "results.md").write_text(markdown(config, summary), encoding="utf-8")
    return summary
