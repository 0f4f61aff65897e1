"""Which adapter answers a prompt, when a version is a set of modules (one LoRA adapter per learned document).

A module's own documents decide what it answers: a prompt goes to the module whose documents hold the largest
share of the prompt's content words, weighted by how rare each word is among the modules (a word every document
has says nothing about which one is asked about), and to the base model when no module holds at least
`min_coverage` of it. The words of the prompt's scaffolding (chat template, instructions) do not count.

Measured without a model (`../shared/data/squad`: each SQuAD question against its own passage among 1 to 64 learned
ones, and the 276 red-team, locality, sanity and rehearsal prompts, which match no passage): at 0.4, 95-100% of
questions reached their passage's module with the title given as the topic and 92-98% without it, and 0-11% of the
unrelated prompts reached some module (0.3: 94-100%, and up to 28% of the unrelated). A question that reaches the
wrong module is answered as the base model would, or worse; an unrelated prompt that reaches a module meets what
the gate checked (every module is checked alone on every prompt of its batteries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from seal.store import Store, Version
from seal.text import content_words, stems

BASE = "__base__"  # peft's name for "no adapter" in a batch of mixed adapters


def words_of(text: str) -> frozenset[str]:
    return frozenset(stems(content_words(text)))


@dataclass
class Router:
    modules: dict[str, frozenset[str]]  # adapter name -> the stems of its documents
    scaffolding: frozenset[str] = frozenset()  # words of the prompt template, ignored
    min_coverage: float = 0.4
    only: str | None = None  # every prompt to this adapter (how the gate checks a new module on its own)
    _weights: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _unseen: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        count = len(self.modules)
        holders: dict[str, int] = {}
        for words in self.modules.values():
            for word in words:
                holders[word] = holders.get(word, 0) + 1
        self._weights = {word: math.log(1 + (count + 1) / (n + 0.5)) for word, n in holders.items()}
        # A word no module holds weighs as one that a single module holds: were it heavier, a question worded
        # partly in its own words would miss its module when few modules exist.
        self._unseen = math.log(1 + (count + 1) / 1.5)

    def weight(self, word: str) -> float:
        return self._weights.get(word, self._unseen)

    def pick(self, prompt: str) -> str:
        """The adapter that answers `prompt` (`BASE` for the base model)."""
        if self.only is not None:
            return self.only
        asked = words_of(prompt) - self.scaffolding
        total = sum(self.weight(w) for w in asked)
        if not asked or not self.modules:
            return BASE
        coverage = {name: sum(self.weight(w) for w in asked & words) / total for name, words in self.modules.items()}
        best = max(reversed(coverage), key=lambda name: coverage[name])  # a tie goes to the newest module
        return best if coverage[best] >= self.min_coverage else BASE

    def names(self, prompts: list[str]) -> list[str]:
        return [self.pick(p) for p in prompts]

    def fixed_for(self, text: str) -> Router:
        """This router with every prompt sent where `text` as a whole goes. A document's claims are checked so: one
        sentence alone can share enough words with another document to reach its module, which then answers with
        that document's names (3 of 12 invented documents learned in turn were refused for it)."""
        return replace(self, only=self.pick(text))


@dataclass
class Module:
    name: str  # the version's id
    path: Path
    words: frozenset[str]  # what it was taught: the words of its documents, for the router


def lineage_of(version: Version) -> str:
    """How a version was built; versions from before modules existed were built by replay."""
    return version.stats.get("config", {}).get("update", {}).get("lineage", "replay")


def taught_words(titles: list[str], passages: list[str]) -> frozenset[str]:
    """What the router knows of a module: the words of its documents' titles and passages."""
    return words_of("\n".join(titles + passages))


def lineage_modules(store: Store, version: Version) -> list[Module]:
    """The adapters that make up `version` under the modules lineage, oldest first: its own and its committed
    ancestors', back to the nearest one built by replay, whose adapter holds its whole lineage."""
    chain = [v for v in store.lineage(version.id) if v.adapter_dir is not None]
    modules = []
    for index in range(len(chain) - 1, -1, -1):
        replayed = lineage_of(chain[index]) == "replay"
        holds = chain[: index + 1] if replayed else [chain[index]]
        words = taught_words([s.get("title") or "" for v in holds for s in v.sources],
                             [e.text for v in holds for e in store.self_edits(v.id) if e.kind == "passage"])
        modules.append(Module(chain[index].id, store.adapter_path(chain[index]), words))
        if replayed:
            break
    return modules[::-1]
