"""Test-time training on a task's own examples, and the answer voted over views of the grid.

Training texts are leave-one-out tasks: each training pair in turn is the query and the others its examples, under
every view the recipe names (a view is applied to every grid of the text, so the rule is kept, seen from another
side). The answer is asked under the same views; each reply is parsed, turned back, and the grid most views agree on
wins (the task as given breaks ties).

Every attempt at a task is an adapter slot of the batched engine (`engine.py`), with the recipe's own learning rate
and epochs: the reward trials of `seal train-policy --domain arc` and the runs of `seal bench arc` train several
recipes in one pass (`--batch-trials`), `seal solve` one."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seal import model as lm_ops
from seal.arc.recipes import RECIPE_START, Recipe, WrittenRecipe, recipe_request, written
from seal.arc.tasks import MAX_SIDE, Grid, Task, grid_text, parse_grid, unview, view
from seal.config import UpdateConfig
from seal.engine import BASE_SLOT, Engine, Job, Outcome
from seal.model import LM
from seal.update import Sequence

TEXT_TOKENS = 2048  # the longest training or asking text: examples are left out of a task's text until it fits
RECIPE_TOKENS = 96  # a recipe's JSON is about 40 tokens


def task_text(examples: list[tuple[Grid, Grid]], query: Grid) -> str:
    shown = "".join(f"Input:\n{grid_text(i)}\nOutput:\n{grid_text(o)}\n\n" for i, o in examples)
    return f"Each input grid becomes its output grid by the same rule.\n\n{shown}Input:\n{grid_text(query)}\nOutput:"


def reply_tokens(grids: list[Grid]) -> int:
    """Room for an answer grid: a quarter more than the largest of these grids (one token per cell and per line)."""
    largest = max(len(g) * (len(g[0]) + 1) for g in grids)
    return min(MAX_SIDE * (MAX_SIDE + 1), largest + largest // 4 + 4)


def fitted_prompt(lm: LM, examples: list[tuple[Grid, Grid]], query: Grid, room: int) -> str:
    """The chat prompt of a task's text, with examples left out from the end until it and `room` tokens of reply fit
    in TEXT_TOKENS (a task with large grids keeps fewer examples)."""
    kept = list(examples)
    while True:
        prompt = lm.chat_prompt([{"role": "user", "content": task_text(kept, query)}])
        if not kept or len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + room <= TEXT_TOKENS:
            return prompt
        kept.pop()


def viewed_pairs(task: Task, name: str) -> list[tuple[Grid, Grid]]:
    return [(view(i, name), view(o, name)) for i, o in task.train]


def leave_one_out(lm: LM, task: Task, recipe: Recipe) -> list[Sequence]:
    """The recipe's training texts: every training pair as the query of the others, under every view."""
    eos = lm.tokenizer.eos_token or ""
    sequences = []
    for name in recipe.views:
        pairs = viewed_pairs(task, name)
        for k, (query, answer) in enumerate(pairs):
            reply = grid_text(answer)
            room = len(lm.tokenizer(reply, add_special_tokens=False)["input_ids"]) + 1
            prompt = fitted_prompt(lm, pairs[:k] + pairs[k + 1:], query, room)
            sequences.append(Sequence(prompt + reply + eos, reply_only=recipe.loss == "output"))
    return sequences


def task_engine(lm: LM, slots: int = 1) -> Engine:
    """The base model of `lm` with `slots` task adapters of the project's one LoRA shape, each trained by its own
    recipe; pack_tokens=0: one text per row, never two of a task's texts run together."""
    return Engine(lm, UpdateConfig(max_tokens=TEXT_TOKENS, pack_tokens=0), slots)


def training_job(lm: LM, task: Task, recipe: Recipe, seed: int) -> Job:
    return Job(leave_one_out(lm, task, recipe), seed, recipe.learning_rate, recipe.epochs)


@dataclass
class Answer:
    grid: Grid | None  # the voted grid; None when no view gave one
    votes: int  # how many views gave it
    asked: int  # how many views were asked
    replies: list[str] = field(default_factory=list)  # each view's reply, in the order asked


def vote(grids: list[Grid | None]) -> tuple[Grid | None, int]:
    """The grid most entries agree on, the earliest breaking ties; None entries have no vote."""
    counts = Counter(tuple(map(tuple, g)) for g in grids if g is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    winner = next(g for g in grids if g is not None and counts[tuple(map(tuple, g))] == best)
    return winner, best


def predict(engine: Engine, task: Task, views: list[str], slot: int) -> list[Answer]:
    """Each test input asked through the slot's adapter under every view (greedy, one batch), turned back and
    voted."""
    room = reply_tokens([o for _, o in task.train] + task.test)
    answers = []
    for test in task.test:
        prompts = [fitted_prompt(engine.lm, viewed_pairs(task, name), view(test, name), room) for name in views]
        replies = engine.generate(prompts, [slot] * len(prompts), room, batch_size=len(prompts))
        grids = []
        for name, reply in zip(views, replies):
            grid = parse_grid(reply)
            grids.append(unview(grid, name) if grid is not None else None)
        grid, votes = vote(grids)
        answers.append(Answer(grid, votes, len(views), replies))
    return answers


def recipe_prompt(lm: LM, task: Task, example: int = 0) -> str:
    """What the recipe writer completes: the request showing the `example`-th form, and its reply begun (sampling and
    the writer's SFT both)."""
    return lm.chat_prompt([{"role": "user", "content": recipe_request(task, example)}]) + RECIPE_START


def write_recipes(lm: LM, task: Task, samples: int = 1, temperature: float = 0.0,
                  seed: int = 0) -> list[WrittenRecipe]:
    """Recipes the model writes for the task (greedy, or `samples` sampled, the k-th shown the k-th form); one it gets
    wrong becomes the default recipe, with the reason."""
    prompts = [recipe_prompt(lm, task, k) for k in range(samples)]
    replies = lm_ops.generate(lm, prompts, max_new_tokens=RECIPE_TOKENS, temperature=temperature, seed=seed,
                              batch_size=samples)
    return [written(RECIPE_START + reply) for reply in replies]


def cells_right(predicted: list[Grid | None], truths: list[Grid]) -> float:
    """The share of a run's answer cells that are right, over its test inputs (an answer of the wrong shape: none).
    Partial credit says how near a small model came where exact matches are rare."""
    shares = []
    for grid, truth in zip(predicted, truths):
        same_shape = grid is not None and len(grid) == len(truth) and len(grid[0]) == len(truth[0])
        shares.append(sum(a == b for row, want in zip(grid, truth) for a, b in zip(row, want))
                      / (len(truth) * len(truth[0])) if same_shape else 0.0)
    return sum(shares) / len(shares)


@dataclass
class Attempt:
    """One run at a task: test-time training by the recipe from `seed` (no recipe: the examples in context only)."""

    task: Task
    recipe: Recipe | None
    seed: int = 0
    written: WrittenRecipe | None = None  # the model's own recipe, when it wrote the one used


@dataclass
class Solved:
    task: str
    recipe: Recipe | None  # None: asked in context, no training
    answers: list[Answer]
    correct: list[bool] | None  # per test input, when the solutions are known
    training: Outcome | None
    seconds: dict[str, float]
    written: WrittenRecipe | None = None

    @property
    def solved(self) -> bool | None:
        return None if self.correct is None else all(self.correct)


def solve(engine: Engine, attempts: list[Attempt]) -> list[Solved]:
    """Every attempt's adapter trained in one batched pass (a slot each), then each attempt's test inputs answered
    through its own adapter and graded when the solutions are known. Training seconds are the pass's, shared out."""
    trained = [a for a in attempts if a.recipe is not None]
    start = time.perf_counter()
    outcomes = engine.train([training_job(engine.lm, a.task, a.recipe, a.seed) for a in trained])
    training_seconds = round((time.perf_counter() - start) / max(len(trained), 1), 2)
    outcome_of = {id(a): (slot, outcome) for slot, (a, outcome) in enumerate(zip(trained, outcomes))}
    results = []
    for attempt in attempts:
        task = attempt.task
        slot, outcome = outcome_of.get(id(attempt), (BASE_SLOT, None))
        views = attempt.recipe.views if attempt.recipe else ["identity"]
        start = time.perf_counter()
        if outcome is not None and outcome.failed:  # an adapter that did not train answers nothing
            answers = [Answer(None, 0, len(views)) for _ in task.test]
        else:
            answers = predict(engine, task, views, slot)
        seconds = {"predicting": round(time.perf_counter() - start, 2)}
        if outcome is not None:
            seconds = {"training": training_seconds, **seconds}
        correct = ([a.grid == truth for a, truth in zip(answers, task.solutions)]
                   if task.solutions is not None else None)
        results.append(Solved(task.name, attempt.recipe, answers, correct, outcome, seconds, attempt.written))
    return results


def solve_tasks(tasks: list[Task], model: str, device: str = "auto", recipe: Recipe | None = None, seed: int = 0,
                keep: Path | None = None, in_context: bool = False, writer: str | None = None) -> list[Solved]:
    """`seal solve`: each task by the given recipe, else by the recipe the writer (a trained policy, else the model
    itself) writes for it (greedy), else (`in_context`) with no training, on a fresh adapter over the base model.
    `keep` is a folder for the task adapters."""
    engine = task_engine(lm_ops.load(model, device=device))
    writes = recipe is None and not in_context
    writer_lm = lm_ops.load(writer, device=device) if writes and writer is not None else engine.lm
    results = []
    for task in tasks:
        mine = write_recipes(writer_lm, task)[0] if writes else None
        used = None if in_context else (recipe or mine.recipe)
        results += solve(engine, [Attempt(task, used, seed, mine)])
        if keep is not None and used is not None:
            engine.save_adapter(0, keep / task.name)
    return results
