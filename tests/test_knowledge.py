"""`seal bench knowledge` on the tiny model: data validation, every mode end to end, resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal.config import GenerationConfig, KnowledgeConfig, UpdateConfig
from seal.errors import SealError
from seal.bench.knowledge import run_knowledge
from seal.bench.report import report
from seal.routing import lineage_of
from seal.runs import RunFolder
from seal.squad import load_items, select
from seal.store import Store

DATA = Path(__file__).resolve().parent / "fixtures" / "invented_squad.json"


def tiny_config(model: Path, **overrides) -> KnowledgeConfig:
    settings = dict(data=str(DATA), conditions=["base", "passage", "implications", "oracle-qa"], passages=2,
                    model=str(model), answer_tokens=8, update=UpdateConfig(epochs=2),
                    generation=GenerationConfig(samples=1, max_new_tokens=12))
    return KnowledgeConfig(**{**settings, **overrides})


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[]", "expected a non-empty list"),
    ('[{"title": "A", "context": "x", "questions": [{"question": "q?", "answer": "a"}]}, {"title": "B"}]',
     "entry 1 ('B') has a missing or empty 'context'"),
    ('[{"title": "A", "context": "x", "questions": []}]', "entry 0 ('A') has a missing or empty 'questions'"),
    ('[{"title": "A", "context": "x", "questions": [{"question": "q?", "answer": " "}]}]',
     "entry 0 ('A') question 0 needs a non-empty question and answer"),
    ('[3]', "entry 0 is not an object"),
])
def test_bad_data_names_the_entry(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(SealError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_items(str(path))


def test_official_squad_json_is_converted_and_selection_is_seeded(tmp_path):
    official = {"version": "1.1", "data": [{"title": "Brellick_Tide_Clock", "paragraphs": [
        {"context": f"Paragraph {n}.", "qas": [{"id": str(n), "question": f"Which {n}?",
                                               "answers": [{"text": f"{n}", "answer_start": 10}]}]}
        for n in range(5)]}]}
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(official))
    items = load_items(str(path))
    assert [i.title for i in items] == ["Brellick Tide Clock"] * 5
    assert items[3].questions == [("Which 3?", "3")]
    first, again, other = select(items, 5, 42), select(items, 5, 42), select(items, 5, 7)
    assert [i.id for i in first] == [i.id for i in again] and sorted(i.id for i in first) == [0, 1, 2, 3, 4]
    assert [i.id for i in first] != [i.id for i in other]  # the seed decides the order
    assert [i.id for i in select(items, 2, 42)] == [i.id for i in first[:2]]  # fewer passages: a prefix


def test_unknown_condition_and_changed_settings_are_refused(tmp_path, tiny_model_dir):
    with pytest.raises(SealError, match="unknown condition 'implicatons'"):
        run_knowledge(tmp_path / "run", tiny_config(tiny_model_dir, conditions=["implicatons"]))
    run_knowledge(tmp_path / "run", tiny_config(tiny_model_dir, conditions=["base"]))
    with pytest.raises(SealError, match="other settings \\(passages\\)"):
        run_knowledge(tmp_path / "run", tiny_config(tiny_model_dir, conditions=["base"], passages=1))


def test_single_mode_end_to_end_with_samples_repeats_and_report(tmp_path, tiny_model_dir):
    config = tiny_config(tiny_model_dir, conditions=["base", "in-context", "passage", "self-qa", "oracle-qa"],
                         samples=2, repeats=2, generation=GenerationConfig(samples=2, max_new_tokens=12))
    run = run_knowledge(tmp_path / "run", config)
    records = run.records()
    assert {(r["passage"], r["condition"]) for r in records} == {
        (i.id, c) for i in select(load_items(str(DATA)), 2, 42) for c in config.conditions}
    self_qa = [r for r in records if r["condition"] == "self-qa"]
    assert all(len(r["trials"]) == 4 for r in self_qa)  # 2 samples x 2 repeats
    oracle = next(r for r in records if r["condition"] == "oracle-qa")
    assert oracle["trials"][0]["train_sequences"] == 1 + oracle["questions"]  # the passage, then each pair
    answer = oracle["trials"][0]["answers"][0]
    assert set(answer) == {"question", "gold", "prediction", "em", "f1", "contains", "judge"}
    summary = report(tmp_path / "run")
    assert set(summary["conditions"]) == set(config.conditions)
    assert "oracle-qa - passage" in summary["paired_differences"]
    assert summary["conditions"]["self-qa"]["spread"]["sd_over_repeats"] is not None
    for name in ("summary.json", "results.md", "accuracy.png", "config.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert "| self-qa | 2 |" in (tmp_path / "run" / "results.md").read_text()


def test_external_completions_and_a_policy_checkpoint_write_the_self_edits(tmp_path, tiny_model_dir):
    items = select(load_items(str(DATA)), 2, 42)
    external = tmp_path / "gpt-implications.json"
    external.write_text(json.dumps([{"title": i.title, "context": i.context, "completions": [
        f"{i.title} is the subject of this passage.\nThe passage names {i.title} twice."]} for i in items]))
    conditions = [f"external:{external}", f"policy:{tiny_model_dir}"]
    records = run_knowledge(tmp_path / "run", tiny_config(tiny_model_dir, conditions=conditions)).records()
    from_file = [r for r in records if r["condition"] == conditions[0]]
    assert len(from_file) == 2 and all(r["trials"][0]["train_sequences"] == 3 for r in from_file)
    assert all(r["trials"][0]["completion"].startswith(r["title"]) for r in from_file)
    assert all("completion" in r["trials"][0] for r in records if r["condition"] == conditions[1])
    second = tmp_path / "other-implications.json"
    second.write_text(json.dumps([{"title": i.title, "context": i.context, "completions": ["One line only."]}
                                  for i in items]))
    both = run_knowledge(tmp_path / "both", tiny_config(tiny_model_dir, conditions=[conditions[0], f"external:{second}"]))
    lines = {r["condition"]: r["trials"][0]["train_sequences"] for r in both.records()}
    assert lines == {conditions[0]: 3, f"external:{second}": 2}  # each condition trains on its own file
    external.write_text(json.dumps([{"title": "Other", "context": "Another text.", "completions": ["x"]}]))
    with pytest.raises(SealError, match="has no completions for 2 selected passages"):
        run_knowledge(tmp_path / "other", tiny_config(tiny_model_dir, conditions=conditions))


def test_cli_reports_bad_input_in_one_line(tmp_path):
    seal = str(Path(sys.executable).parent / "seal")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"title": "Brellick", "context": "x", "questions": [{"question": "Who?"}]}]')
    result = subprocess.run([seal, "bench", "knowledge", "--data", str(bad), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {bad}: entry 0 ('Brellick') question 0 needs a non-empty question and answer")
    result = subprocess.run([seal, "bench", "report", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "is not a benchmark run folder" in result.stderr


def test_cpt_mode_trains_one_adapter_over_all_passages(tmp_path, tiny_model_dir):
    run = run_knowledge(tmp_path / "cpt", tiny_config(tiny_model_dir, mode="cpt", conditions=["base", "passage"]))
    records = run.records()
    assert sorted(r["key"] for r in records) == sorted(f"cpt/{c}/{i.id}" for c in ("base", "passage")
                                                      for i in select(load_items(str(DATA)), 2, 42))
    report(tmp_path / "cpt")
    assert "| passage | 2 |" in (tmp_path / "cpt" / "results.md").read_text()


def test_continual_mode_builds_the_matrix_for_each_arm(tmp_path, tiny_model_dir, home):
    config = tiny_config(tiny_model_dir, mode="continual", sequence=2, unrelated=1,
                         arms=["gate", "no-gate", "no-gate-no-replay"])
    run_knowledge(tmp_path / "cont", config)
    summary = report(tmp_path / "cont")
    for arm in ("gate", "no-gate", "no-gate-no-replay"):
        matrix = summary["arms"][arm]["matrix"]
        assert len(matrix) == 3 and all(len(row) == 2 for row in matrix)  # (K+1) x K
    kept = summary["arms"]["no-gate"]
    assert all(kept["committed"])  # gate off keeps every update
    # every learned passage right after its own step (the diagonal) and after the last (the last row)
    matrix = kept["matrix"]
    assert kept["learned"]["after_own_step"] == [matrix[1][0], matrix[2][1]]
    assert kept["learned"]["after_last_step"] == matrix[2]
    assert kept["unrelated"]["passages"] == 1 and all(t is not None for t in kept["learn_seconds"])
    records = [json.loads(line) for line in (tmp_path / "cont" / "trials.jsonl").read_text().splitlines()]
    lineages = {r["arm"]: r for r in records if r.get("step") == 1}
    stores = tmp_path / "cont" / "stores"
    assert lineage_of(Store(stores / "no-gate").get(lineages["no-gate"]["version"])) == "modules"
    assert lineage_of(Store(stores / "no-gate-no-replay").get(lineages["no-gate-no-replay"]["version"])) == "replay"
    assert (tmp_path / "cont" / "continual-gate.png").exists()


def test_resume_after_kill_gives_identical_results(tmp_path, tiny_model_dir):
    args = [str(Path(sys.executable).parent / "seal"), "bench", "knowledge", "--data", str(DATA), "--passages", "3",
            "--conditions", "base,passage,implications", "--model", str(tiny_model_dir), "--epochs", "2",
            "--batch-trials", "2"]  # one passage per batch, so the kill lands between batches
    env = {**os.environ, "SEAL_HOME": str(tmp_path / "home")}
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    killed = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = tmp_path / "killed" / "trials.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not trials.exists() or len(trials.read_text().splitlines()) < 2):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished_before = len(trials.read_text().splitlines())
    assert 2 <= finished_before < 9
    with open(trials, "a") as handle:  # as if the kill had come in the middle of writing a record
        handle.write('{"key": "cut-short", "trials": [')
    subprocess.run(args + ["--out", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    whole = sorted(without_timing(json.loads(l) for l in (tmp_path / "whole" / "trials.jsonl").read_text().splitlines()),
                   key=lambda r: r["key"])
    # A batch cut short is trained again whole, so a unit it had finished may be in the file twice: the run reads
    # the first, as a resume does.
    resumed = sorted(without_timing(RunFolder(tmp_path / "killed").records()), key=lambda r: r["key"])
    assert len(resumed) == 9 and resumed == whole


def test_self_study_conditions_and_the_rule_only_cloze_baseline(tmp_path, tiny_model_dir):
    config = tiny_config(tiny_model_dir, conditions=["passage", "cloze", "quiz", "study"], passages=1,
                         generation=GenerationConfig(samples=1, max_new_tokens=12, facts=3))
    records = {r["condition"]: r for r in run_knowledge(tmp_path / "run", config).records()}
    cloze = records["cloze"]["trials"][0]
    # the passage, each of the 3 answer spans asked by its sentence, and by its clause where the sentence is long
    assert 1 + 3 < cloze["train_sequences"] <= 1 + 3 * 2
    assert all("Question:" in text and text.count("?") >= 1 for text in cloze["self_edits"])
    assert cloze["coverage"] >= 1  # spans are the passage's own words, so some gold answers are among them
    quiz = records["quiz"]["trials"][0]
    assert quiz["quiz_pairs"] >= 1 and 0 <= quiz["quiz_kept"] <= quiz["quiz_pairs"]
    # the passage, the kept model-written pairs, each of the 3 facts asked by its sentence where they miss it, and
    # by its clause where the sentence is long
    assert 1 + 3 <= quiz["train_sequences"] <= 1 + 3 * 2 + quiz["quiz_kept"]
    assert "coverage" not in records["passage"]["trials"][0]  # nothing generated to cover anything
    summary = report(tmp_path / "run")
    assert summary["conditions"]["cloze"]["coverage"] > 0 and "quiz_kept_share" in summary["conditions"]["quiz"]
    assert "round trip" in (tmp_path / "run" / "results.md").read_text()
