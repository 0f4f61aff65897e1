"""`seal blame QUESTION`: which version changed the answer to a question, and what it learned that did.

The current lineage is walked from the base model: each committed version answers the question closed-book, as
`seal ask` does (greedy, so the same version always gives the same answer), and where the answer changes the version
is named with its documents and the self-edits it trained on that hold the new answer's words. One copy of the base
weights is loaded; each version's adapters are put on and taken off in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seal.errors import SealError
from seal.learn import closed_book, load_version, wearing
from seal.model import LM
from seal.store import BASE_VERSION, Store, Version
from seal.text import content_words, normalize, stems


@dataclass
class Step:
    """One version's answer, and when it differs from the version before: what that version learned."""

    version: str
    answer: str
    changed: bool = False
    sources: list[str] = field(default_factory=list)
    # Self-edits the version trained on that hold words of its new answer, most such words first.
    evidence: list[str] = field(default_factory=list)


def blame(store: Store, question: str, model: str | None = None, device: str = "auto", max_new_tokens: int = 64,
          evidence: int = 3, base: LM | None = None) -> list[Step]:
    """The answer of the base model and of every committed version up to the current one, oldest first. `base` is
    the base model when the caller holds one (the server does); it is loaded otherwise."""
    if not question.strip():
        raise SealError("the question is empty")
    lm = base or load_version(store, model, device, BASE_VERSION)[0]
    steps = [Step(BASE_VERSION, closed_book(lm, question, max_new_tokens))]
    current = store.current()
    for version in store.lineage(current.id) if current else []:
        with wearing(store, lm, version):
            answer = closed_book(lm, question, max_new_tokens)
        step = Step(version.id, answer)
        if normalize(answer) != normalize(steps[-1].answer):
            step.changed = True
            step.sources = [s["source"] for s in version.sources]
            step.evidence = _holding(store, version, answer, steps[-1].answer)[:evidence]
        steps.append(step)
    return steps


def _holding(store: Store, version: Version, answer: str, before: str) -> list[str]:
    """The version's trained self-edits, other than its documents' own text (named already), that share words with
    its new answer (the words the answer before lacked, or all its words when it only lost some): most shared
    first, then the shortest, the most to the point."""
    new = set(stems(content_words(answer))) - set(stems(content_words(before))) or set(stems(content_words(answer)))
    trained = [e.text for e in store.self_edits(version.id) if e.accepted and e.train_text and e.kind != "passage"]
    shared = [(len(new & set(stems(content_words(text)))), text) for text in trained]
    return [text for count, text in sorted(shared, key=lambda pair: (-pair[0], len(pair[1]))) if count]
