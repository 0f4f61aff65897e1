"""End to end on the embedded SmolLM2-135M model, through the installed `seal` command, as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import seal as seal_package
from seal.text import covers

SEAL = str(Path(sys.executable).with_name("seal"))


def seal(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEAL_HOME": str(home)}
    result = subprocess.run([SEAL, *args], env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.embedded
def test_learn_answer_and_roll_back_on_the_embedded_model(tmp_path):
    """An invented document learned with the defaults; then questions worded as a person asks them, which no training
    text contains; then rollback and forward again. The document is one where `seal bench learn` found the update
    reliable (seed 0). One learn, because each takes minutes on a CPU."""
    home = tmp_path / "home"
    shared_cache = Path.home() / ".seal" / "models"
    if (shared_cache / "smollm2-135m-instruct" / "model.safetensors").exists():
        (home / "models").mkdir(parents=True)
        shutil.copytree(shared_cache / "smollm2-135m-instruct", home / "models" / "smollm2-135m-instruct")
    item = next(i for i in json.loads((Path(seal_package.__file__).parent / "data" / "invented_facts.json").read_text())
                if i["title"] == "Town of Dunsquill")
    doc = tmp_path / "dunsquill.md"
    doc.write_text(f"# {item['title']}\n\n{item['context']}\n", encoding="utf-8")
    asked = [q for q in item["questions"] if q["answer"] in ("River Tamber", "212")]
    before = [json.loads(seal(home, "ask", "--version", "v0", q["question"], "--json").stdout)["answer"] for q in asked]
    result = seal(home, "learn", str(doc), "--json", check=False)
    payload = json.loads(result.stdout)
    assert result.returncode == 0, payload["reason"]
    assert payload["committed"] and payload["version"] == "v1" and payload["kept"] > 0
    knowledge = next(c for c in payload["report"]["checks"] if c["name"] == "knowledge")
    assert knowledge["detail"]["mean_nll_after"] < knowledge["detail"]["mean_nll_before"]
    shown = json.loads(seal(home, "show", "v1", "--json").stdout)
    quiz = [e for e in shown["self_edits"] if e["kind"] == "quiz"]
    assert any(e["accepted"] for e in quiz) and any(not e["accepted"] for e in quiz)
    trained = " ".join(e["train_text"] for e in shown["self_edits"])
    assert not any(q["question"] in trained for q in asked)  # asked in words the update never saw
    after = [json.loads(seal(home, "ask", q["question"], "--json").stdout)["answer"] for q in asked]
    newly = [q for q, b, a in zip(asked, before, after) if covers(a, q["answer"]) and not covers(b, q["answer"])]
    assert newly, list(zip(before, after))
    table = seal(home, "show", "v1").stdout
    assert "quiz pairs" in table and "round trip" in table

    seal(home, "rollback", "v0")
    history = json.loads(seal(home, "history", "--json").stdout)
    assert history["current"] == "v0" and [v["id"] for v in history["versions"]] == ["v0", "v1"]
    assert json.loads(seal(home, "ask", asked[0]["question"], "--json").stdout)["version"] == "v0"
    seal(home, "rollback", "v1")
    assert json.loads(seal(home, "history", "--json").stdout)["current"] == "v1"


@pytest.mark.embedded
def test_solve_learns_a_few_shot_task_that_it_cannot_answer_in_context(tmp_path):
    """ARC's domain on the embedded model: a colour swap on 4x4 grids, three examples. Read in the prompt, the model
    answers with prose; after test-time training by the default recipe, every cell is right (seed 0; 5 of 6 views
    agreed when this task was chosen)."""
    swap = {1: 2, 2: 1}
    inputs = [[[1, 0, 1, 2], [0, 0, 2, 0], [1, 2, 0, 2], [0, 0, 0, 1]],
              [[1, 0, 0, 0], [2, 1, 0, 2], [0, 0, 2, 2], [2, 0, 2, 2]],
              [[1, 0, 0, 0], [2, 0, 1, 1], [0, 2, 0, 2], [1, 2, 2, 0]],
              [[0, 2, 2, 2], [0, 1, 0, 2], [2, 0, 2, 0], [2, 0, 1, 2]]]
    pairs = [{"input": grid, "output": [[swap.get(c, c) for c in row] for row in grid]} for grid in inputs]
    task = tmp_path / "swap.json"
    task.write_text(json.dumps({"train": pairs[:3], "test": pairs[3:]}), encoding="utf-8")
    home = tmp_path / "home"
    (in_context,) = json.loads(seal(home, "solve", str(task), "--in-context", "--json").stdout)
    assert in_context["correct"] == [False]
    (trained,) = json.loads(seal(home, "solve", str(task), "--recipe", "default", "--json").stdout)
    assert trained["correct"] == [True], trained["answers"]
    assert trained["training"]["final_loss"] < trained["training"]["first_loss"]
