"""The reward of a self-edit, computed by the workers of an executor (`executors.py`).

A reward trial trains a fresh LoRA adapter on the passage plus one self-edit, asks the passage's questions
closed-book and returns the judge accuracy. Trials run in batches through the batched engine (`engine.py`): one
pass trains and asks a batch of adapters together, each ending where it would alone (to float tolerance: a row's
arithmetic depends a little on its batch's shape). A trial is a plain dataclass with its own seed, and callers form
batches from the whole list of trials, never from what is left to do, so a trial gives the same result whichever
executor and worker run it, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from seal import model as lm_ops
from seal.config import UpdateConfig
from seal.engine import Update, UpdateRunner
from seal.executors import start_worker
from seal.grading import RemoteJudge
from seal.squad import Item, accuracy
from seal.update import Sequence


@dataclass
class Trial:
    key: str
    item: Item
    texts: list[Sequence]  # training sequences, the passage first, already in their training form
    seed: int  # the LoRA init and data order; shared by every sample of a passage (common random numbers)
    round: int = 0
    sample: int = -1  # -1: the passage alone
    repeat: int = 0


@dataclass
class TrialSetup:
    """What every trial shares: the base model, the inner update, and how answers are produced and graded."""

    model: str = lm_ops.EMBEDDED
    device: str = "auto"
    answer_tokens: int = 32
    judge_url: str | None = None
    judge_model: str = "gpt-4.1-mini"
    update: UpdateConfig = field(default_factory=UpdateConfig)


class RewardWorker:
    """One base model with `batch_trials` adapter slots, reset for every batch of trials (an executor's worker)."""

    def __init__(self, setup: TrialSetup, batch_trials: int, threads: int | None = None):
        self.name = start_worker(setup.device, threads)
        judge = RemoteJudge(setup.judge_url, setup.judge_model) if setup.judge_url else None
        self.runner = UpdateRunner(setup.model, setup.device, setup.update, batch_trials, setup.answer_tokens, judge)

    def run(self, trials: list[Trial]) -> list[dict]:
        start = time.perf_counter()
        results = self.runner.run([Update(trial.texts, [trial.item], trial.seed) for trial in trials])
        seconds = round((time.perf_counter() - start) / len(trials), 2)  # each trial's share of the batch
        records = []
        for trial, result in zip(trials, results):
            outcome = result.outcome
            scores = accuracy(result.answers[0])
            records.append({"key": trial.key, "round": trial.round, "passage": trial.item.id, "sample": trial.sample,
                            "repeat": trial.repeat, "reward": scores["judge"], "accuracy": scores,
                            "final_loss": outcome.final_loss if outcome else None,
                            "failed": outcome.failed if outcome else None,
                            "train_sequences": len(trial.texts), "answers": result.answers[0], "worker": self.name,
                            "batch": len(trials), "seconds": seconds})
        return records
