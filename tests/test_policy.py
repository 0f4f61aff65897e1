"""`seal train-policy` (ReST-EM) on the tiny model: selection, the SFT step, each executor, resume after kill -9."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seal import model as lm_ops
from seal.cli import app
from seal.config import ExecutorConfig, GenerationConfig, KnowledgeConfig, PolicyConfig, SFTConfig, UpdateConfig
from seal.errors import SealError
from seal.bench.knowledge import run_knowledge
from seal.policy import Choice, round_stats, run_policy, select_best, sft_pairs, training_items
from seal.prompts import STRATEGIES, self_edit_messages
from seal.bench.report import report
from seal.sft import sft, tokenize_example
from seal.squad import Item, load_items, select
from seal.store import Store
from seal.update import IGNORE, collate

DATA = Path(__file__).resolve().parent / "fixtures" / "invented_squad.json"
SEAL = str(Path(sys.executable).parent / "seal")
TINY_ARGS = ["--data", str(DATA), "--passages", "2", "--eval-passages", "1", "--samples", "2", "--reward-repeats",
             "2", "--rounds", "2", "--min-reward", "-1", "--max-new-tokens", "16", "--epochs", "1", "--sft-epochs", "2"]


def tiny_policy_config(model: Path) -> PolicyConfig:
    # A random tiny model answers nothing right, so every reward is 0; min_reward -1 still keeps the best sample.
    return PolicyConfig(data=str(DATA), passages=2, eval_passages=1, samples=2, rounds=2, repeats=2, min_reward=-1,
                        model=str(model), answer_tokens=8, generation=GenerationConfig(samples=2, max_new_tokens=16),
                        update=UpdateConfig(epochs=1), sft=SFTConfig(epochs=2))


def trial_outcomes(run: Path) -> list[tuple]:
    """What must not depend on the executor or on interruptions: every trial's key, reward, loss and answers."""
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    return sorted((r["key"], r["reward"], r["final_loss"], tuple(a["prediction"] for a in r["answers"]))
                  for r in records if "reward" in r)


def weights_digest(checkpoint: Path) -> str:
    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()


# --- selection and statistics on hand-made rewards ---------------------------------------------------------------

REWARDS = {1: [[0.2, 0.4], [0.6, 0.6], [0.6, 0.6]],  # samples 1 and 2 tie: the lower number wins
           2: [[0.0, 0.0], [0.0, 0.0]],  # nothing learned from any sample: nothing to imitate
           3: [[0.2, 0.2], [0.4, 0.0]]}  # a tie of means; equal to the passage-only reward
PASSAGE = {1: 0.5, 2: 0.0, 3: 0.2}


def test_select_best_keeps_the_best_sample_that_qualifies():
    assert select_best(REWARDS, PASSAGE, min_reward=0.0, beat_passage=False) == {1: Choice(1, 0.6), 3: Choice(0, 0.2)}
    assert select_best(REWARDS, PASSAGE, min_reward=0.0, beat_passage=True) == {1: Choice(1, 0.6)}
    assert select_best(REWARDS, PASSAGE, min_reward=0.5, beat_passage=False) == {1: Choice(1, 0.6)}
    assert set(select_best(REWARDS, PASSAGE, min_reward=-1.0, beat_passage=False)) == {1, 2, 3}


def test_round_stats_compare_spread_over_samples_with_spread_over_repeats():
    kept = select_best(REWARDS, PASSAGE, 0.0, False)
    stats = round_stats(REWARDS, PASSAGE, kept)
    assert stats["mean_reward"] == pytest.approx(1.9 / 7, abs=1e-4)
    assert stats["best_reward"] == pytest.approx((0.6 + 0.0 + 0.2) / 3, abs=1e-4)
    assert stats["passage_reward"] == pytest.approx(0.7 / 3, abs=1e-4)
    assert stats["kept"] == 2 and stats["kept_reward"] == pytest.approx(0.4) and stats["kept_beat_passage"] == 1
    assert stats["ties"] == 2
    assert stats["sd_over_samples"] == pytest.approx(0.1732 / 3, abs=1e-4)  # only passage 1's samples differ
    assert stats["sd_over_repeats"] == pytest.approx((0.1414 + 0.2828) / 7, abs=1e-4)
    assert stats["selection_is_noise"] is True
    clean = round_stats({1: [[0.2, 0.2], [0.8, 0.8]]}, {1: 0.0}, {1: Choice(1, 0.8)})
    assert clean["sd_over_repeats"] == 0 and clean["selection_is_noise"] is False


def test_training_passages_are_disjoint_from_the_evaluation_prefix():
    items = load_items(str(DATA))
    config = PolicyConfig(data=str(DATA), passages=2, eval_passages=1)
    evaluated = {i.id for i in select(items, 1, 42)}
    trained = {i.id for i in training_items(items, config)}
    assert len(trained) == 2 and not evaluated & trained
    with pytest.raises(SealError, match="has 3 passages; keeping 2 for evaluation leaves 1"):
        training_items(items, PolicyConfig(data=str(DATA), passages=2, eval_passages=2))



def test_a_run_written_by_another_seal_is_refused_with_one_clear_error():
    saved = json.loads(json.dumps(asdict(PolicyConfig(data=str(DATA)))))
    assert PolicyConfig.from_dict(saved) == PolicyConfig(data=str(DATA))
    saved["update"]["answer_loss_only"] = True  # a setting an earlier seal had
    with pytest.raises(SealError, match="another version of seal and cannot be resumed"):
        PolicyConfig.from_dict(saved)

def test_sft_dataset_pairs_each_kept_completion_with_its_sampling_prompt(tiny_model_dir):
    writer = lm_ops.load(str(tiny_model_dir), None, "cpu")
    items = {7: Item(7, "Brellick", "The clock is copper.", [("q", "a")]),
             3: Item(3, "Selk", "The river freezes.", [("q", "a")])}
    completions = {7: ["seven zero", "seven one"], 3: ["three zero", "three one"]}
    pairs = sft_pairs(writer, items, completions, {7: Choice(1, 0.5), 3: Choice(0, 0.2)}, "implications")
    prompt = writer.chat_prompt(self_edit_messages(STRATEGIES["implications"], "Selk", "The river freezes."))
    assert pairs[0] == (prompt, "three zero") and pairs[1][1] == "seven one"  # passage order, the kept sample


# --- the SFT step ---------------------------------------------------------------------------------------------------

def test_sft_loss_is_on_completion_tokens_only(tiny_model_dir):
    writer = lm_ops.load(str(tiny_model_dir), None, "cpu")
    tok = writer.tokenizer
    prompt = writer.chat_prompt([{"role": "user", "content": "List facts about the Brellick clock."}])
    completion = "The Brellick clock is made of copper.\nIt was built in 1893." + tok.eos_token
    ids, labels = tokenize_example(tok, prompt, completion, 1024)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tok(completion, add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + completion_ids
    for position, (token, label) in enumerate(zip(ids, labels)):
        assert label == (IGNORE if position < len(prompt_ids) else token), position
    assert completion_ids[-1] == tok.eos_token_id  # the policy learns where to stop

    short = tokenize_example(tok, "Q", "A", 1024)
    batch = collate([(ids, labels), short], tok.pad_token_id, torch.device("cpu"))
    padded = len(ids) - len(short[0])
    assert batch["labels"][1, -padded:].tolist() == [IGNORE] * padded
    assert batch["attention_mask"][1].sum().item() == len(short[0])

    # The model's loss with these labels is the mean cross-entropy over the completion's tokens alone.
    with torch.no_grad():
        out = writer.model(**collate([(ids, labels)], tok.pad_token_id, torch.device("cpu")))
        logits = out.logits[0, len(prompt_ids) - 1 : -1]
        by_hand = torch.nn.functional.cross_entropy(logits, torch.tensor(completion_ids))
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_sft_lowers_the_loss_and_merges_into_a_plain_model(tiny_model_dir):
    writer = lm_ops.load(str(tiny_model_dir), None, "cpu")
    before = {k: v.clone() for k, v in writer.model.state_dict().items()}
    pairs = [(writer.chat_prompt([{"role": "user", "content": f"Facts {n}?"}]), f"The Brellick clock has {n} hands.")
             for n in range(3)]
    stats = sft(writer, pairs, SFTConfig(epochs=6, lr=1e-2))
    assert stats.examples == 3 and stats.steps == 18
    assert stats.epoch_losses[-1] < 0.7 * stats.epoch_losses[0]
    after = writer.model.state_dict()
    assert set(after) == set(before)  # merged: no LoRA tensors left
    assert any(not torch.equal(before[k], after[k]) for k in before)


# --- whole rounds ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def in_process_run(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy") / "in-process"
    run_policy(out, tiny_policy_config(tiny_model_dir), ExecutorConfig("in-process"))
    return out


def test_a_round_writes_checkpoints_lineage_stats_and_plot(in_process_run, tiny_model_dir):
    stats = json.loads((in_process_run / "stats.json").read_text())
    assert [r["round"] for r in stats["rounds"]] == [1, 2]
    first = stats["rounds"][0]
    assert first["kept"] == 2 and first["sft_examples"] == 2 and first["trials_run"] == 2 * 2 * 2 + 2 * 2
    assert stats["rounds"][1]["trials_run"] == 2 * 2 * 2  # the passage-only reference is measured once
    assert (in_process_run / "rounds.png").stat().st_size > 0
    lineage = json.loads((in_process_run / "round-2" / "lineage.json").read_text())
    assert lineage["round"] == 2 and lineage["parent"] == str(in_process_run / "round-1")
    assert lineage["base_model"] == str(tiny_model_dir) and len(lineage["train_passages"]) == 2
    assert lineage["data"]["sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert weights_digest(in_process_run / "round-1") != weights_digest(tiny_model_dir)
    assert lm_ops.load(str(in_process_run / "round-2"), None, "cpu").model is not None  # usable as a model


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_every_executor_gives_the_same_trials_and_checkpoint(in_process_run, tiny_model_dir, tmp_path, kind):
    if kind == "ray":
        pytest.importorskip("ray")
    out = tmp_path / kind
    run_policy(out, tiny_policy_config(tiny_model_dir), ExecutorConfig(kind, workers=2))
    assert trial_outcomes(out) == trial_outcomes(in_process_run)
    workers = {json.loads(line).get("worker") for line in (out / "trials.jsonl").read_text().splitlines()} - {None}
    assert len(workers) == 2 and all(str(os.getpid()) not in w for w in workers)  # really fanned out
    assert weights_digest(out / "round-2") == weights_digest(in_process_run / "round-2")


def test_resume_after_kill_gives_the_same_checkpoint(tmp_path, tiny_model_dir):
    args = [SEAL, "train-policy", *TINY_ARGS, "--model", str(tiny_model_dir)]
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, capture_output=True)
    killed = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    trials = tmp_path / "killed" / "trials.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not trials.exists() or len(trials.read_text().splitlines()) < 5):
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "round-2").exists()
    with open(trials, "a") as handle:  # as if the kill had come in the middle of writing a record
        handle.write('{"key": "trial/1/0/0/')
    resumed = subprocess.run([SEAL, "train-policy", "--resume", str(tmp_path / "killed")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert trial_outcomes(tmp_path / "killed") == trial_outcomes(tmp_path / "whole")
    assert weights_digest(tmp_path / "killed" / "round-2") == weights_digest(tmp_path / "whole" / "round-2")
    # --resume with more rounds extends the run; other settings cannot change under an existing folder.
    again = subprocess.run(args + ["--out", str(tmp_path / "killed"), "--samples", "3"], capture_output=True, text=True)
    assert again.returncode == 1 and "other settings (generation, samples)" in again.stderr


def test_policy_is_refused_on_passages_it_was_trained_on(in_process_run, tiny_model_dir, tmp_path):
    policy = f"policy:{in_process_run / 'round-2'}"
    config = KnowledgeConfig(data=str(DATA), conditions=["base", policy], passages=3, model=str(tiny_model_dir),
                             answer_tokens=8, update=UpdateConfig(epochs=1),
                             generation=GenerationConfig(samples=1, max_new_tokens=12))
    with pytest.raises(SealError, match="was trained on 2 of the evaluation passages"):
        run_knowledge(tmp_path / "all", config)
    config.passages = 1  # the passage train-policy left out
    records = run_knowledge(tmp_path / "unseen", config).records()
    assert {r["condition"] for r in records} == {"base", policy}
    config.conditions = ["base", "implications", policy]  # a condition added to a run reuses what is done
    run_knowledge(tmp_path / "unseen", config)
    assert f"{policy} - implications" in report(tmp_path / "unseen")["paired_differences"]


def test_learn_writes_self_edits_with_a_trained_policy(in_process_run, tiny_model_dir, home, facts_file):
    policy = str(in_process_run / "round-2")
    result = CliRunner().invoke(app, ["learn", str(facts_file), "--model", str(tiny_model_dir), "--policy", policy,
                                      "--samples", "1", "--max-new-tokens", "12", "--epochs", "1", "--json"])
    version = Store(home).get(json.loads(result.stdout)["version"])
    assert version.stats["config"]["policy"] == policy
    assert version.stats["config"]["generation"]["strategy"] == "implications"  # from the policy's lineage
    missing = CliRunner().invoke(app, ["learn", str(facts_file), "--model", str(tiny_model_dir), "--policy",
                                       str(home / "nowhere")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
