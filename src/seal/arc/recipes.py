"""The self-edit of the ARC domain: a training recipe the model writes for a task, parsed and checked before any of it
reaches training. A recipe names the views of the grids to train on (from a fixed vocabulary), how many recoloured
copies of the task to add, the learning rate, the epochs, and whether the loss counts the output grid only or the
whole text."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seal.arc.tasks import MAX_RECOLOURINGS, VIEWS, Task, grid_text, recolour_view
from seal.errors import SealError

LOSSES = ("output", "all")
LR_RANGE = (1e-5, 5e-3)
MAX_EPOCHS = 3  # each epoch is a pass over every leave-one-out task under every view: minutes on a CPU


@dataclass(frozen=True)
class Recipe:
    augmentations: tuple[str, ...] = ("rotate90", "rotate180", "rotate270", "flip_horizontal", "flip_vertical")
    learning_rate: float = 5e-4
    epochs: int = 2
    loss: str = "output"
    recolourings: int = 0  # recoloured copies of the task (tasks.recolouring), trained on and voted over as views

    @property
    def views(self) -> list[str]:
        """The views trained on and voted over: the task as given, each augmentation, then each recolouring."""
        return ["identity", *(name for name in self.augmentations if name != "identity"),
                *(recolour_view(k) for k in range(1, self.recolourings + 1))]

    def to_json(self) -> dict:
        return {**asdict(self), "augmentations": list(self.augmentations)}


# The default recipe (the task as given plus five rotations and flips, the output's loss, lr 5e-4, 2 epochs) solved 2
# of 6 tasks of SEAL's evaluation subset on the embedded model when the issue was filed.
DEFAULT_RECIPE = Recipe()
# Fixed recipes by name (`seal solve --recipe NAME`, the benchmark's recipe:NAME conditions).
NAMED_RECIPES = {
    "plain": Recipe((), 1e-3, 3, "output"),  # the examples as given, no views
    "default": DEFAULT_RECIPE,
    "every-view": Recipe(tuple(name for name in VIEWS if name != "identity"), 5e-4, 1, "all"),
    "recoloured": Recipe((), 1e-3, 1, "output", MAX_RECOLOURINGS),  # the examples and 8 recoloured copies
}


class BadRecipe(SealError):
    """A recipe that must not reach training; its message says which rule it broke."""


def check_recipe(raw: object) -> Recipe:
    """A Recipe from a parsed JSON object (a key left out takes the default's value), or BadRecipe saying what is
    wrong with it."""
    if not isinstance(raw, dict):
        raise BadRecipe("the recipe is not a JSON object")
    unknown = set(raw) - {"augmentations", "recolourings", "learning_rate", "epochs", "loss"}
    if unknown:
        raise BadRecipe(f"unknown key {sorted(unknown)[0]!r}")
    augmentations = raw.get("augmentations", list(DEFAULT_RECIPE.augmentations))
    if not isinstance(augmentations, list) or not all(isinstance(a, str) for a in augmentations):
        raise BadRecipe("augmentations must be a list of names")
    strange = [a for a in augmentations if a not in VIEWS]
    if strange:
        raise BadRecipe(f"unknown augmentation {strange[0]!r} (known: {', '.join(VIEWS)})")
    recolourings = raw.get("recolourings", DEFAULT_RECIPE.recolourings)
    if type(recolourings) is not int or not 0 <= recolourings <= MAX_RECOLOURINGS:
        raise BadRecipe(f"recolourings {recolourings!r} is not a whole number 0-{MAX_RECOLOURINGS}")
    lr = raw.get("learning_rate", DEFAULT_RECIPE.learning_rate)
    if type(lr) not in (int, float) or not LR_RANGE[0] <= lr <= LR_RANGE[1]:
        raise BadRecipe(f"learning_rate {lr!r} is outside {LR_RANGE[0]:g}-{LR_RANGE[1]:g}")
    epochs = raw.get("epochs", DEFAULT_RECIPE.epochs)
    if type(epochs) is not int or not 1 <= epochs <= MAX_EPOCHS:
        raise BadRecipe(f"epochs {epochs!r} is not a whole number 1-{MAX_EPOCHS}")
    loss = raw.get("loss", DEFAULT_RECIPE.loss)
    if loss not in LOSSES:
        raise BadRecipe(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    return Recipe(tuple(dict.fromkeys(augmentations)), float(lr), epochs, loss, recolourings)


FIRST_OBJECT = re.compile(r"\{.*?\}", re.S)


def parse_recipe(text: str) -> Recipe:
    """The first JSON object a reply writes, checked; BadRecipe when there is none or it breaks a rule."""
    found = FIRST_OBJECT.search(text)
    if not found:
        raise BadRecipe("no JSON object in the reply")
    try:
        raw = json.loads(found.group(0))
    except ValueError as err:
        raise BadRecipe(f"not valid JSON ({err.msg})") from err
    return check_recipe(raw)


@dataclass
class WrittenRecipe:
    """A recipe the model wrote, or the default in its place with the reason."""

    text: str
    recipe: Recipe
    rejected: str | None = field(default=None)


def written(text: str) -> WrittenRecipe:
    try:
        return WrittenRecipe(text, parse_recipe(text))
    except BadRecipe as err:
        return WrittenRecipe(text, DEFAULT_RECIPE, str(err))


# Forms of an answer shown to the writer, one per sample (the k-th sample sees the k-th, cyclically). Shown three
# forms at once, the embedded model mixed them into invalid JSON in 29 of 32 samples; shown one, it copies it or varies
# a value, and with one form for every sample ReST-EM had one recipe to choose from (its writer collapsed onto it).
# The forms spread the vocabulary: few and many views and recolourings, low and high learning rates, 1-3 epochs, both
# losses.
EXAMPLE_RECIPES = (
    '{"augmentations": ["flip_vertical", "transpose"], "recolourings": 0, "learning_rate": 0.001, "epochs": 1, '
    '"loss": "all"}',
    '{"augmentations": ["identity"], "recolourings": 4, "learning_rate": 0.0005, "epochs": 2, "loss": "output"}',
    '{"augmentations": ["rotate90", "rotate180", "rotate270"], "recolourings": 2, "learning_rate": 0.0002, '
    '"epochs": 3, "loss": "output"}',
    '{"augmentations": ["flip_horizontal"], "recolourings": 8, "learning_rate": 0.002, "epochs": 1, "loss": "all"}',
)
RECIPE_START = '{"augmentations": ["'  # the reply is begun for the writer: without it, the embedded model wrote prose


def recipe_request(task: Task, example: int = 0, max_pairs: int = 2) -> str:
    """What the recipe writer is asked: a few of the task's examples, the vocabulary, and a form of the answer (the
    `example`-th, cyclically)."""
    shown = "\n\n".join(f"Input:\n{grid_text(i)}\nOutput:\n{grid_text(o)}" for i, o in task.train[:max_pairs])
    return (f"A puzzle turns each input grid into an output grid by one rule. Examples:\n\n{shown}\n\n"
            "A small model will be fine-tuned on these examples before it solves the puzzle. Choose how: which views "
            f"of the grids to train on (identity alone for the grids as given, or any of "
            f"{', '.join(name for name in VIEWS if name != 'identity')}), how many copies with the colours swapped "
            f"(0 to {MAX_RECOLOURINGS}), the learning rate ({LR_RANGE[0]:g} to {LR_RANGE[1]:g}), the epochs (1 to "
            f"{MAX_EPOCHS}), and whether the loss counts only the output grid (\"output\") or the whole text "
            f"(\"all\"). Answer with one JSON object in this form:\n{EXAMPLE_RECIPES[example % len(EXAMPLE_RECIPES)]}")


def read_recipe(name_or_path: str) -> Recipe:
    """A named recipe, or one a user wrote in a JSON file (`seal solve --recipe`): BadRecipe, naming the file, when it
    breaks a rule."""
    if name_or_path in NAMED_RECIPES:
        return NAMED_RECIPES[name_or_path]
    path = Path(name_or_path)
    try:
        return check_recipe(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadRecipe(f"cannot read recipe {path} (nor is it one of {', '.join(NAMED_RECIPES)}): {err}") from err
    except BadRecipe as err:
        raise BadRecipe(f"recipe {path}: {err}") from err
