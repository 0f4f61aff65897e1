"""The batched multi-adapter engine: K trials in one pass end where each would alone, and never touch each other."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

from seal import model as lm_ops
from seal.config import UpdateConfig
from seal.engine import BASE_SLOT, Engine, Job, Update, UpdateRunner
from seal.squad import Item, answer_questions
from seal.update import Sequence, attach_trainable_adapter, sequence_text, train

CONFIG = UpdateConfig(rank=4, alpha=8, epochs=3, lr=1e-3)
PROMPTS = ["Who built the Brellick clock?", "When was the clock restored?"]


def jobs_for(lm) -> list[Job]:
    eos = lm.tokenizer.eos_token
    return [
        Job([Sequence("The Brellick Tide Clock was built in 1893 by Oswin Tarrow." + eos),
             sequence_text(lm, "qa", "", "Who built the clock?", "Oswin Tarrow")], seed=11),
        Job([Sequence("Kelmore harbour holds the Zorvex beacon, lit in 1890 and rebuilt after a storm in 1962 by "
                      "the harbour board of the town." + eos)], seed=12),
        Job([sequence_text(lm, "qa", "", f"What is fact {n}?", f"Fact {n} is {n * 7} blue stones.")
             for n in range(5)], seed=13),
    ]


def solo(model_dir, job: Job) -> tuple[object, dict[str, torch.Tensor], list[str]]:
    """One trial as `update.train` runs it on a peft adapter, seeded as `seal bench knowledge` seeds it."""
    lm = lm_ops.load(str(model_dir))
    attach_trainable_adapter(lm, CONFIG)
    torch.manual_seed(job.seed)
    for module in lm.model.modules():
        if isinstance(module, LoraLayer):
            module.reset_lora_parameters("default", True)
    stats = train(lm, job.sequences, UpdateConfig(**{**CONFIG.__dict__, "seed": job.seed}))
    weights = {name.replace(".default", ""): p.detach().clone() for name, p in lm.model.named_parameters()
               if "lora_" in name}
    prompts = [lm.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    return stats, weights, lm_ops.generate(lm, prompts, 12)


@pytest.fixture(scope="module", params=[True, False], ids=["packed", "padded"])
def batched(tiny_model_dir, request):
    lm = lm_ops.load(str(tiny_model_dir))
    engine = Engine(lm, CONFIG, slots=4, packed=request.param)
    jobs = jobs_for(lm)
    return engine, jobs, engine.train(jobs)


def test_trials_trained_together_end_where_each_would_alone(tiny_model_dir, batched):
    engine, jobs, outcomes = batched
    prompts = [engine.lm.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    replies = engine.generate(prompts * len(jobs), [slot for slot in range(len(jobs)) for _ in PROMPTS], 12)
    for slot, job in enumerate(jobs):
        stats, weights, answers = solo(tiny_model_dir, job)
        outcome = outcomes[slot]
        assert outcome.failed is None
        assert (outcome.steps, outcome.sequences) == (stats.steps, stats.sequences)
        assert outcome.first_loss == pytest.approx(stats.first_loss, abs=1e-3)
        assert outcome.final_loss == pytest.approx(stats.final_loss, abs=1e-3)
        state = engine.adapter_state(slot)
        assert set(state) == set(weights)
        for name, weight in weights.items():
            torch.testing.assert_close(state[name], weight, atol=1e-4, rtol=1e-3)
        assert replies[slot * len(PROMPTS) : (slot + 1) * len(PROMPTS)] == answers


def test_one_trials_data_never_changes_another_trials_adapter(tiny_model_dir, batched):
    engine, jobs, _ = batched
    first = engine.adapter_state(0)
    other = Job([Sequence("Something else entirely, and much longer than before: " * 6)], seed=99)
    engine.train([jobs[0], other])
    for name, weight in engine.adapter_state(0).items():
        torch.testing.assert_close(weight, first[name], atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(w, engine.adapter_state(1)[n]) for n, w in first.items() if "lora_B" in n)


def test_base_rows_in_a_batch_see_no_adapter(tiny_model_dir, batched):
    engine, jobs, _ = batched
    engine.train(jobs)
    taught = sequence_text(engine.lm, "qa", "", "Who built the clock?", "Oswin Tarrow").text
    prompt, answer = taught.split("Oswin")[0], "Oswin Tarrow"
    base = lm_ops.continuation_stats(lm_ops.load(str(tiny_model_dir)), [prompt], [answer])[0][0]
    with engine.using([0, BASE_SLOT]):
        learned, unchanged = (nll for nll, _ in lm_ops.continuation_stats(engine.lm, [prompt] * 2, [answer] * 2))
    assert unchanged == pytest.approx(base, abs=1e-4)
    assert learned < base - 0.1


def test_a_trial_without_tokens_or_with_a_broken_loss_fails_alone(tiny_model_dir, monkeypatch):
    lm = lm_ops.load(str(tiny_model_dir))
    engine = Engine(lm, CONFIG, slots=4)
    jobs = jobs_for(lm)
    clean = engine.train(jobs)
    clean_state = engine.adapter_state(2)
    reset = engine.reset

    def poisoned(slot: int, seed: int) -> None:
        reset(slot, seed)
        if slot == 1:
            engine.layers[0][1].lora_A.data[1].fill_(math.nan)

    monkeypatch.setattr(engine, "reset", poisoned)
    outcomes = engine.train(jobs + [Job([Sequence("")], seed=5)])
    assert outcomes[1].failed and "loss" in outcomes[1].failed
    assert outcomes[3].failed == "no training tokens"
    assert outcomes[0].final_loss == clean[0].final_loss and outcomes[2].final_loss == clean[2].final_loss
    for name, weight in engine.adapter_state(2).items():
        torch.testing.assert_close(weight, clean_state[name])
        assert torch.isfinite(weight).all()


def test_the_runner_asks_each_update_and_the_base_model_in_one_pass(tiny_model_dir):

    items = [Item(0, "Brellick Tide Clock", "The clock was built in 1893.", [("When was it built?", "1893")]),
             Item(1, "Zorvex beacon", "The beacon was lit in 1890.", [("When was it lit?", "1890"),
                                                                      ("Where is it?", "Kelmore")])]

    def run(slots: int) -> list:
        runner = UpdateRunner(str(tiny_model_dir), "cpu", CONFIG, slots, answer_tokens=6, judge=None)
        jobs = jobs_for(runner.lm)
        return runner.run([Update(jobs[0].sequences, items[:1], 1), Update(None, items),
                           Update(jobs[1].sequences, items[1:], 2), Update([], items[:1], 3),
                           Update(jobs[2].sequences, items, 4)])

    together, alone = run(slots=4), run(slots=1)
    assert [len(r.answers) for r in together] == [1, 2, 1, 1, 2]
    assert together[1].outcome is None  # asked of the base model, nothing trained
    assert together[3].outcome.failed == "no training tokens" and together[3].answers[0][0]["prediction"] == ""
    for batched, single in zip(together, alone):
        assert [[a["prediction"] for a in item] for item in batched.answers] == \
               [[a["prediction"] for a in item] for item in single.answers]
        if batched.outcome:
            assert batched.outcome.final_loss == pytest.approx(single.outcome.final_loss, abs=1e-3)
    base = answer_questions(lm_ops.load(str(tiny_model_dir)), items, 6, None)
    assert [[a["prediction"] for a in item] for item in together[1].answers] == \
           [[a["prediction"] for a in item] for item in base]


def test_a_batch_too_large_for_memory_goes_on_in_smaller_ones(tiny_model_dir, monkeypatch):
    runner = UpdateRunner(str(tiny_model_dir), "cpu", CONFIG, 4, answer_tokens=4, judge=None)
    train = runner.engine.train
    sizes = []

    def tight(jobs: list[Job]) -> list:
        sizes.append(len(jobs))
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("out of memory")
        return train(jobs)

    monkeypatch.setattr(runner.engine, "train", tight)
    item = Item(0, "Brellick Tide Clock", "The clock was built in 1893.", [("When was it built?", "1893")])
    jobs = jobs_for(runner.lm)
    with pytest.warns(RuntimeWarning, match="did not fit in memory"):
        results = runner.run([Update(job.sequences, [item], job.seed) for job in jobs])
    assert sizes == [3, 2, 1, 1, 1] and all(r.outcome and not r.outcome.failed for r in results)


def test_bench_trials_runs_the_same_trials_at_each_batch_size(tiny_model_dir, tmp_path):
    from seal.bench.trials import bench_trials

    data = Path(__file__).resolve().parent / "fixtures" / "invented_squad.json"
    summary = bench_trials(tmp_path, str(data), str(tiny_model_dir), lambda line: None, passages=2, samples=1,
                           repeats=1, sizes=(1, 2), device="cpu", skip=0)
    assert [r["batch_trials"] for r in summary["runs"]] == [1, 2]
    assert summary["runs"][1]["same_reward_as_first"] == summary["trials"] == 2
    assert "| 2 |" in (tmp_path / "trials.md").read_text()
    result = subprocess.run([str(Path(sys.executable).with_name("seal")), "bench", "trials", "--data", str(data),
                             "--out", str(tmp_path / "bad"), "--batch-sizes", "1,x"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: --batch-sizes '1,x': give whole numbers of at least 1, comma-separated, e.g. 1,8"


def test_adapters_train_in_float32_on_a_bfloat16_base(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    lm.model.to(torch.bfloat16)
    engine = Engine(lm, UpdateConfig(rank=4, alpha=8, epochs=8, lr=1e-2), slots=2)
    outcomes = engine.train(jobs_for(lm)[:2])
    assert all(layer.lora_A.dtype == torch.float32 for _, layer in engine.layers)
    assert all(o.failed is None and o.final_loss < o.first_loss for o in outcomes)
