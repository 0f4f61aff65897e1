"""`seal train-policy`: ReST-EM, as in SEAL, so the model learns to write self-edits that actually teach it.

Each round samples self-edits from the current policy for training passages, rewards each one with the
passage's closed-book accuracy after a fresh LoRA update on it (mean over repeats with different seeds), keeps
the best per passage, fine-tunes the policy on (prompt, best self-edit) with the loss on the completion only,
and merges the result into the next round's policy. The inner update always starts from the base model the
user adapts, so the reward measures what the user will get.

The run folder holds config.json and trials.jsonl, where every sampled passage, reward trial and SFT step is
one fsynced line: a killed run resumes trial by trial and ends with the same checkpoint. round-N/ is the merged
policy with lineage.json; stats.json and rounds.png summarise the rounds.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.config import ExecutorConfig, GenerationConfig, PolicyConfig, SFTConfig
from seal.documents import Passage
from seal.errors import SealError
from seal.executors import Executor, batches, make_executor
from seal.generate import write_self_edits
from seal.prompts import STRATEGIES, self_edit_messages
from seal.reward import RewardWorker, Trial, TrialSetup
from seal.runs import RunFolder, repair, seed_for
from seal.sft import save_checkpoint, sft
from seal.squad import Item, context_sha256, load_items, select
from seal.store import now
from seal.update import Sequence, sequence_text

Progress = Callable[[str, int, int], None]


@dataclass
class Choice:
    sample: int
    reward: float


def training_items(items: list[Item], config: PolicyConfig) -> list[Item]:
    """Passages after the first `eval_passages` of the seeded shuffle, which `seal bench knowledge` evaluates on."""
    order = select(items, len(items), config.seed)
    chosen = order[config.eval_passages : config.eval_passages + config.passages]
    if len(chosen) < config.passages:
        raise SealError(f"{config.data} has {len(items)} passages; keeping {config.eval_passages} for evaluation "
                        f"leaves {len(chosen)}, fewer than --passages {config.passages}")
    return chosen


def select_best(rewards: dict[int, list[list[float]]], passage_rewards: dict[int, float],
                min_reward: float, beat_passage: bool) -> dict[int, Choice]:
    """The best sample per passage by mean reward over repeats (ties: the lower sample number), if it qualifies."""
    kept = {}
    for passage, samples in sorted(rewards.items()):
        means = [statistics.fmean(repeats) for repeats in samples]
        best = max(range(len(means)), key=lambda s: (means[s], -s))
        if means[best] <= min_reward:
            continue
        if beat_passage and means[best] <= passage_rewards[passage]:
            continue
        kept[passage] = Choice(best, round(means[best], 4))
    return kept


def sft_pairs(writer: lm_ops.LM, items: dict[int, Item], completions: dict[int, list[str]],
              kept: dict[int, Choice], strategy: str) -> list[tuple[str, str]]:
    """(the prompt the completion was sampled from, the kept completion), in passage order."""
    return [(writer.chat_prompt(self_edit_messages(STRATEGIES[strategy], items[p].title, items[p].context)),
             completions[p][choice.sample]) for p, choice in sorted(kept.items())]


def round_stats(rewards: dict[int, list[list[float]]], passage_rewards: dict[int, float],
                kept: dict[int, Choice]) -> dict:
    """Rewards of samples and kept self-edits, and the spread over samples vs the spread over repeats."""
    means = {p: [statistics.fmean(r) for r in samples] for p, samples in rewards.items()}
    over_samples = [statistics.stdev(m) for m in means.values() if len(m) > 1]
    over_repeats = [statistics.stdev(r) for samples in rewards.values() for r in samples if len(r) > 1]
    sd_samples = round(statistics.fmean(over_samples), 4) if over_samples else None
    sd_repeats = round(statistics.fmean(over_repeats), 4) if over_repeats else None
    return {
        "passages": len(rewards),
        "mean_reward": round(statistics.fmean(m for ms in means.values() for m in ms), 4),
        "best_reward": round(statistics.fmean(max(m) for m in means.values()), 4),
        "passage_reward": round(statistics.fmean(passage_rewards[p] for p in rewards), 4),
        "kept": len(kept),
        "kept_reward": round(statistics.fmean(c.reward for c in kept.values()), 4) if kept else None,
        "kept_beat_passage": sum(1 for p, c in kept.items() if c.reward > passage_rewards[p]),
        "ties": sum(1 for m in means.values() if len(set(m)) == 1),  # passages where selection had nothing to go on
        "sd_over_samples": sd_samples,
        "sd_over_repeats": sd_repeats,
        # If one self-edit's reward moves as much between seeds as between self-edits, the pick is mostly noise.
        "selection_is_noise": None if sd_samples is None or sd_repeats is None else sd_repeats >= sd_samples,
    }


# -----------------------------------------------------------------------------------------------------------------

def _sample_round(run: RunFolder, config: PolicyConfig, round_: int, policy: str, items: list[Item],
                  done: set[str], tick: Progress) -> None:
    """Sample `samples` self-edits per passage from the current policy; one record per passage."""
    todo = [item for item in items if f"sample/{round_}/{item.id}" not in done]
    tick(f"sample r{round_}", len(items) - len(todo), len(items))
    if not todo:
        return
    writer = lm_ops.load(policy, None, config.device)
    for item in todo:
        generation = GenerationConfig(**{**asdict(config.generation), "strategy": config.strategy,
                                         "samples": config.samples, "seed": seed_for("sample", round_, item.id)})
        candidates, completions = write_self_edits(writer, [Passage(item.title, item.context, f"data:{item.id}")],
                                                   generation)
        texts = [[sequence_text(writer, c.kind, c.text, c.question, c.answer, topic=item.title,
                                whole_cloze=config.update.whole_cloze)
                  for c in candidates if c.sample == s] for s in range(config.samples)]
        run.append([{"key": f"sample/{round_}/{item.id}", "round": round_, "passage": item.id,
                     "completions": completions, "texts": texts,
                     "passage_text": sequence_text(writer, "passage", f"{item.title}\n{item.context}")}])
        done.add(f"sample/{round_}/{item.id}")
        tick(f"sample r{round_}", sum(1 for i in items if f"sample/{round_}/{i.id}" in done), len(items))


def _trials(config: PolicyConfig, round_: int, items: list[Item], samples: dict[int, dict]) -> list[Trial]:
    """The round's reward trials; round 1 also carries the passage-only updates (the reference)."""
    trials = []
    for item in items:
        passage = Sequence(*samples[item.id]["passage_text"])  # JSON keeps a sequence as [text, reply_only]
        for repeat in range(config.repeats):
            seed = seed_for("reward", item.id, repeat)  # every sample of a passage meets the same seeds
            if round_ == 1:
                trials.append(Trial(f"passage/{item.id}/{repeat}", item, [passage], seed, repeat=repeat))
            for sample in range(config.samples):
                edits = [Sequence(*text) for text in samples[item.id]["texts"][sample]]
                trials.append(Trial(f"trial/{round_}/{item.id}/{sample}/{repeat}", item, [passage] + edits, seed,
                                    round_, sample, repeat))
    return trials


def _tables(records: dict[str, dict], config: PolicyConfig, round_: int,
            items: list[Item]) -> tuple[dict[int, list[list[float]]], dict[int, float]]:
    rewards = {i.id: [[records[f"trial/{round_}/{i.id}/{s}/{k}"]["reward"] for k in range(config.repeats)]
                      for s in range(config.samples)] for i in items}
    passage = {i.id: statistics.fmean(records[f"passage/{i.id}/{k}"]["reward"] for k in range(config.repeats))
               for i in items}
    return rewards, passage


def _lineage(config: PolicyConfig, round_: int, parent: str, items: list[Item], examples: int) -> dict:
    data = Path(config.data).expanduser()
    return {"kind": "seal self-edit policy", "round": round_, "base_model": config.model, "parent": parent,
            "strategy": config.strategy, "examples": examples, "created_at": now(),
            "data": {"path": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()},
            "train_passages": [{"id": i.id, "title": i.title, "context_sha256": context_sha256(i)} for i in items],
            "config": asdict(config)}


def run_policy(out: Path, config: PolicyConfig, executor_config: ExecutorConfig | None = None,
               progress: Progress | None = None) -> dict:
    """Run (or resume) ReST-EM into `out`; returns the per-round statistics (also in stats.json)."""
    tick = progress or (lambda name, done, total: None)
    if min(config.passages, config.samples, config.repeats, config.rounds) < 1:
        raise SealError("--passages, --samples, --reward-repeats and --rounds must be at least 1")
    if config.strategy not in STRATEGIES:
        raise SealError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    items = training_items(load_items(config.data), config)
    lm_ops.deterministic(config.device)  # sampling and SFT too, so a resumed run ends with the same checkpoint
    by_id = {item.id: item for item in items}
    run = RunFolder(out)
    run.start(config, extendable=("rounds",))
    repair(run)
    setup = TrialSetup(model=config.model, device=config.device, answer_tokens=config.answer_tokens,
                       judge_url=config.judge_url, judge_model=config.judge_model, update=config.update)
    executor: Executor | None = None
    executor_settings = executor_config or ExecutorConfig()
    policy = config.model
    try:
        for round_ in range(1, config.rounds + 1):
            checkpoint = out / f"round-{round_}"
            done = run.done()
            if f"sft/{round_}" in done and (checkpoint / "config.json").exists():
                policy = str(checkpoint)
                continue
            started = time.perf_counter()
            _sample_round(run, config, round_, policy, items, done, tick)
            sampled = time.perf_counter()
            records = {r["key"]: r for r in run.records()}
            samples = {i.id: records[f"sample/{round_}/{i.id}"] for i in items}
            trials = _trials(config, round_, items, samples)
            # Batches come from the whole round, so a resumed run trains each trial in the batch it had; a batch
            # is run again whole when any of its trials is missing (the first record of a key is the one kept).
            todo = [batch for batch in batches(trials, executor_settings.batch_trials)
                    if any(trial.key not in done for trial in batch)]
            finished = len(trials) - sum(trial.key not in done for batch in todo for trial in batch)
            tick(f"rewards r{round_}", finished, len(trials))
            if todo:
                executor = executor or make_executor(executor_settings, RewardWorker,
                                                     (setup, executor_settings.batch_trials), config.device)
                for results in executor.map(todo):
                    run.append(results)
                    finished += sum(result["key"] not in done for result in results)
                    tick(f"rewards r{round_}", finished, len(trials))
            rewarded = time.perf_counter()
            records = {r["key"]: r for r in run.records()}
            rewards, passage_rewards = _tables(records, config, round_, items)
            kept = select_best(rewards, passage_rewards, config.min_reward, config.beat_passage)
            tick(f"sft r{round_}", 0, 1)
            writer = lm_ops.load(policy, None, config.device)
            pairs = sft_pairs(writer, by_id, {p: s["completions"] for p, s in samples.items()}, kept, config.strategy)
            sft_config = SFTConfig(**{**asdict(config.sft), "seed": seed_for("sft", round_)})
            stats = sft(writer, pairs, sft_config) if pairs else None
            save_checkpoint(writer, checkpoint, _lineage(config, round_, policy, items, len(pairs)))
            tick(f"sft r{round_}", 1, 1)
            run.append([{"key": f"sft/{round_}", "round": round_, "kept": {p: asdict(c) for p, c in kept.items()},
                         "stats": round_stats(rewards, passage_rewards, kept), "sft": asdict(stats) if stats else None,
                         "trials_run": sum(len(batch) for batch in todo), "executor": asdict(executor_settings),
                         "seconds": {"sample": round(sampled - started, 1), "rewards": round(rewarded - sampled, 1),
                                     "sft": round(time.perf_counter() - rewarded, 1)}}])
            policy = str(checkpoint)
    finally:
        if executor is not None:
            executor.close()
    return write_stats(out)


def write_stats(out: Path) -> dict:
    """stats.json and rounds.png from the run's SFT records (one per finished round)."""
    rounds = sorted((r for r in RunFolder(out).records() if r["key"].startswith("sft/")), key=lambda r: r["round"])
    summary = {"rounds": [{"round": r["round"], **r["stats"], "sft_examples": r["sft"]["examples"] if r["sft"] else 0,
                           "sft_loss_first_epoch": r["sft"]["epoch_losses"][0] if r["sft"] else None,
                           "sft_loss_last_epoch": r["sft"]["epoch_losses"][-1] if r["sft"] else None,
                           "trials_run": r["trials_run"], "executor": r["executor"]["kind"],
                           "workers": 1 if r["executor"]["kind"] == "in-process" else r["executor"]["workers"],
                           "seconds": r["seconds"],
                           "trials_per_hour": round(3600 * r["trials_run"] / r["seconds"]["rewards"])
                           if r["trials_run"] and r["seconds"]["rewards"] else None,
                           "checkpoint": str(out / f"round-{r['round']}")} for r in rounds]}
    (out / "stats.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if rounds:
        _plot(rounds, out / "rounds.png")
    return summary


def _plot(rounds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; imported here so training never needs it
    import matplotlib.pyplot as plt

    numbers = [r["round"] for r in rounds]
    figure, (rewards, spread, loss) = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, label in (("mean_reward", "mean of samples"), ("best_reward", "best sample"),
                        ("kept_reward", "kept"), ("passage_reward", "passage only")):
        values = [r["stats"][name] for r in rounds]
        rewards.plot(numbers, [v if v is not None else float("nan") for v in values], marker="o", label=label)
    rewards.set(title="reward (closed-book accuracy)", xlabel="round", xticks=numbers)
    rewards.legend(fontsize=8)
    for name, label in (("sd_over_samples", "sd over samples"), ("sd_over_repeats", "sd over repeats")):
        spread.plot(numbers, [r["stats"][name] if r["stats"][name] is not None else float("nan") for r in rounds],
                    marker="o", label=label)
    spread.set(title="reward spread", xlabel="round", xticks=numbers)
    spread.legend(fontsize=8)
    for r in rounds:
        if r["sft"]:
            loss.plot(range(1, len(r["sft"]["losses"]) + 1), r["sft"]["losses"], label=f"round {r['round']}")
    loss.set(title="SFT loss (completion tokens)", xlabel="step")
    if any(r["sft"] for r in rounds):
        loss.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
