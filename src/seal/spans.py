"""Answer candidates found by rules: the spans of a passage a question can be about, and rule-made cloze questions.

A span is a date, a number with its unit, a run of capitalised words (a name), a quoted phrase, or the phrase
that follows "is a", "called", "include"...: the kinds of answer people ask for and SQuAD's answers mostly are.
No model is involved, so these rules are also the `cloze` baseline that the model's own quiz must beat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal.documents import sentences
from seal.prompts import QUESTION_WORDS
from seal.text import STOP_WORDS, normalize

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
DATE = re.compile(rf"\b(?:(?:{MONTHS})\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+(?:{MONTHS})\s+\d{{4}}"
                  rf"|(?:{MONTHS})\s+\d{{4}}|(?:early |mid-|late )?(?:{MONTHS})\b)")
SCALE = r"(?:\s+(?:million|billion|thousand|hundred|trillion))?"
YEAR = re.compile(r"^(?:1[0-9]|20|21)\d\d$")
# A number, then its unit when one follows: one lower-case word that is not a stop word ("310 grams", "16 hours"),
# two after "square", "cubic" or "per". A year stands alone.
QUANTITY = re.compile(rf"(?:\$|£|€)?(?<![\w\-])\d[\d,.]*(?:[–-]\d[\d,.]*)?(?![A-Za-z\d]){SCALE}(?:%|\s+percent|(?:[ -](?:square|cubic|per)"
                      rf")?[ -](?!(?:{'|'.join(STOP_WORDS)})\b)[a-z][a-z\-]+)?")
NUMBER_WORDS = re.compile(r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                          r"fifty|hundred)\b(?:[ -](?:[a-z][a-z\-]+))?")
CONNECTORS = {"of", "de", "the", "and", "von", "van", "da", "del", "du", "&"}
# Capitalised only because they open a sentence: never the start of a name.
OPENERS = {"although", "however", "later", "today", "since", "despite", "although", "moreover", "thus", "yet",
           "meanwhile", "instead", "finally", "first", "initially", "originally", "eventually", "many", "most", "some"}
QUOTED = re.compile(r"[\"\u201c]([^\"\u201d]{2,60})[\"\u201d]")
DEFINING = re.compile(r"\b(?:is|was|are|were) (?:a|an|the) |\b(?:called|named|known as|such as|include|includes|"
                      r"including|consists of|made of|made from|led by|built by|founded by|designed by) ", re.I)
CLAUSE_END = re.compile(r"[,;:.()]|\s(?:which|who|that|and|but|where|when|while|because)\s")


@dataclass(frozen=True)
class Span:
    text: str
    sentence: str
    kind: str  # date | quantity | name | phrase


def _names(sentence: str) -> list[str]:
    """Runs of capitalised words, joined by 'of', 'the', 'de'...; a lone capitalised first word is not a name."""
    words = re.sub(r"(?<![A-Z])\.", " . ", sentence.replace(",", " , ").replace(";", " ; ")).split()
    found, run = [], []
    for index, word in enumerate(words + ["."]):
        capital = (word[:1].isupper() and word != "I") or (word[:1].isdigit() and run)
        if capital and not (index == 0 and word.lower() in STOP_WORDS | OPENERS):
            run.append(word)
        elif run and word.lower() in CONNECTORS and index + 1 < len(words) and words[index + 1][:1].isupper():
            run.append(word)
        else:
            while run and run[-1].lower() in CONNECTORS:
                run.pop()
            if run and not (len(run) == 1 and index == 1):
                found.append(" ".join(run))
            run = []
    return found


def _phrases(sentence: str) -> list[str]:
    """What follows a defining verb, up to the end of its clause, at most six words."""
    found = []
    for match in DEFINING.finditer(sentence):
        rest = sentence[match.end():]
        cut = CLAUSE_END.search(rest)
        words = (rest[: cut.start()] if cut else rest).split()[:6]
        if len(words) >= 1 and normalize(" ".join(words)):
            found.append(" ".join(words).rstrip(".,;:"))
    return found


def _year(quantity: str) -> str:
    """The year in a quantity that starts with one ("1874", "1874 carrying": a year takes no unit); else empty."""
    first = quantity.split()[0].rstrip(",.")
    return first if YEAR.match(first) else ""


def answer_spans(text: str, limit: int) -> list[Span]:
    """Up to `limit` distinct spans, taken in turns from each sentence so that the whole passage is covered."""
    per_sentence: list[list[Span]] = []
    for sentence in sentences(text):
        found: list[Span] = []
        for kind, pieces in (("date", [m.group(0) for m in DATE.finditer(sentence)]),
                             ("date", [_year(m.group(0)) for m in QUANTITY.finditer(sentence) if _year(m.group(0))]),
                             ("quantity", [m.group(0) for m in QUANTITY.finditer(sentence) if not _year(m.group(0))]
                              + [m.group(0) for m in NUMBER_WORDS.finditer(sentence)]),
                             ("name", _names(sentence) + QUOTED.findall(sentence)),
                             ("phrase", _phrases(sentence))):
            for piece in pieces:
                piece = piece.strip(" ,;:.'\"\u2018\u2019").removesuffix("'s").removesuffix("\u2019s")
                inside = any(normalize(piece) in normalize(s.text) for s in found)
                if piece and normalize(piece) and not inside:
                    found.append(Span(piece, sentence, kind))
        per_sentence.append(found)
    chosen: list[Span] = []
    seen: set[str] = set()
    for rank in range(max((len(f) for f in per_sentence), default=0)):
        for found in per_sentence:
            if rank < len(found) and normalize(found[rank].text) not in seen and len(chosen) < limit:
                seen.add(normalize(found[rank].text))
                chosen.append(found[rank])
    return chosen


def cloze_question(span: Span) -> str:
    """The rule-only question: the span's sentence with the span replaced by a wh-word."""
    return span.sentence.replace(span.text, QUESTION_WORDS[span.kind].lower(), 1).rstrip(".!") + "?"
