"""Answer candidates found by rules: the spans of a passage a question can be about, and rule-made cloze questions.

A span is a date, a number with its unit, a run of capitalised words (a name), a quoted phrase, the phrase that
follows "is a", "called", "include"..., or, asked for, a plain noun phrase ("administrative law", "coal"): the kinds
of answer people ask for and SQuAD's answers mostly are. No model is involved, so these rules are also the `cloze`
baseline that the model's own quiz must beat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal.documents import sentences
from seal.prompts import QUESTION_WORDS
from seal.text import FUNCTION_WORDS, has_phrase, normalize

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
DATE = re.compile(rf"\b(?:early |mid-|late )?(?:(?:{MONTHS})\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
                  rf"|\d{{1,2}}\s+(?:{MONTHS})\s+\d{{4}}|(?:{MONTHS})\s+\d{{4}}|(?:{MONTHS})\b)")
SCALE = r"(?:\s+(?:million|billion|thousand|hundred|trillion))?"
YEAR = re.compile(r"^(?:1[0-9]|20|21)\d\d$")
NOT_A_UNIT = rf"(?!(?:{'|'.join(FUNCTION_WORDS)})\b)"
# A number, then its unit when one follows: one lower-case word that is not a function word ("310 grams",
# "16 hours"), two after "square", "cubic" or "per".
QUANTITY = re.compile(rf"(?:\$|£|€)?(?<![\w\-])\d(?:[\d,.]*\d)?(?:[–-]\d(?:[\d,.]*\d)?)?(?![A-Za-z\d]){SCALE}"
                      rf"(?:%|\s+percent|(?:[ -](?:square|cubic|per))?[ -]{NOT_A_UNIT}[a-z][a-z\-]+)?")
NUMBER_WORDS = re.compile(rf"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                          rf"fifty|hundred)\b(?:[ -]{NOT_A_UNIT}[a-z][a-z\-]+)?", re.I)
# A number after one of these is a year even when a word follows it ("in 1874 carrying...").
YEAR_BEFORE = {"in", "since", "by", "until", "from", "of", "after", "before", "during", "around", "circa"}
CONNECTORS = {"of", "de", "the", "and", "von", "van", "da", "del", "du", "&"}
# Capitalised only because they open a sentence: never the start of a name.
OPENERS = {"although", "however", "later", "today", "since", "despite", "moreover", "thus", "yet",
           "meanwhile", "instead", "finally", "first", "initially", "originally", "eventually", "many", "most", "some"}
QUOTED = re.compile(r"[\"\u201c]([^\"\u201d]{2,60})[\"\u201d]")
DEFINING = re.compile(r"\b(?:is|was|are|were) (?:a|an|the) |\b(?:called|named|known as|such as|include|includes|"
                      r"including|consists of|made of|made from|led by|built by|founded by|designed by) ", re.I)
CLAUSE_END = re.compile(r"[,;:.()]|\s(?:which|who|that|and|but|where|when|while|because)\s")
TOKEN = re.compile(r"[^\W\d_][\w'\u2019\-]*|\S")
# Common verbs that are not function words: a noun phrase ends before them (there is no part-of-speech tagger here).
VERBS = frozenset("be became become becomes began begin begins came come comes find finds found gave give gives go "
                  "goes got gets held hold holds known led leads made make makes said say says saw see sees took take "
                  "takes use used uses went".split())
NOUN_WORDS = 4  # the longest noun phrase kept: its last words, where English puts the head noun


@dataclass(frozen=True)
class Span:
    text: str
    sentence: str
    kind: str  # date | quantity | name | phrase | noun


def _names(sentence: str) -> list[str]:
    """Runs of capitalised words, joined by 'of', 'the', 'de'...; a lone capitalised first word is not a name."""
    words = re.sub(r"(?<![A-Z])\.", " . ", sentence.replace(",", " , ").replace(";", " ; ")).split()
    found, run = [], []
    for index, word in enumerate(words + ["."]):
        capital = (word[:1].isupper() and word != "I") or (word[:1].isdigit() and run)
        if capital and not (index == 0 and word.lower() in FUNCTION_WORDS | OPENERS):
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


def _noun_phrases(sentence: str) -> list[str]:
    """Runs of words between function words, verbs, numbers and punctuation ("the Pauli exclusion principle" gives
    "Pauli exclusion principle"), "of" kept inside a run; a crude chunker that finds what the other kinds miss."""
    found: list[str] = []
    run: list[str] = []
    for token in TOKEN.findall(sentence) + ["."]:
        low = token.lower()
        inside = token[0].isalpha() and (low not in FUNCTION_WORDS or (low == "of" and run)) and low not in VERBS
        ends_like_verb = low.endswith(("ed", "ly")) and len(low) > 3 and not token[0].isupper()
        if inside and not ends_like_verb:
            run.append(token)
            continue
        while run and run[-1].lower() == "of":
            run.pop()
        if run:
            found.append(" ".join(run[-NOUN_WORDS:]))
        run = []
    return found


def _year(sentence: str, match: re.Match[str]) -> str:
    """The year a quantity is, or empty: a bare number from 1000 to 2199, or one with a word after it when a
    preposition comes before it ("in 1874 carrying", but "1500 metres" is a quantity)."""
    words = match.group(0).split()
    if not YEAR.match(words[0]):
        return ""
    before = sentence[: match.start()].split()[-1:]
    return words[0] if len(words) == 1 or (before and before[0].lower() in YEAR_BEFORE) else ""


def answer_spans(text: str, limit: int, nouns: bool = False) -> list[Span]:
    """Up to `limit` distinct spans, taken in turns from each sentence so that the whole passage is covered; with
    `nouns`, noun phrases no other kind found follow all the others, in a text that states facts of the other kinds
    (a poem's nouns are not facts to ask about)."""
    per_sentence: list[list[Span]] = []
    in_order = sentences(text)
    for sentence in in_order:
        found: list[Span] = []
        dates = [m.group(0) for m in DATE.finditer(sentence)]
        # A number that is part of a date is not a quantity of its own ("January 2027 added" is no "2027 added").
        quantities = [(m.group(0), _year(sentence, m)) for m in QUANTITY.finditer(sentence)
                      if not any(has_phrase(d, m.group(0).split()[0]) for d in dates)]
        for kind, pieces in (("date", dates + [y for _, y in quantities if y]),
                             ("quantity", [q for q, y in quantities if not y]
                              + [m.group(0) for m in NUMBER_WORDS.finditer(sentence)]),
                             ("name", _names(sentence) + QUOTED.findall(sentence)),
                             ("phrase", _phrases(sentence))):
            for piece in pieces:
                piece = piece.strip(" ,;:.'\"\u2018\u2019").removesuffix("'s").removesuffix("\u2019s")
                inside = any(has_phrase(s.text, piece) for s in found)
                if piece and normalize(piece) and not inside:
                    found.append(Span(piece, sentence, kind))
        per_sentence.append(found)
    chosen = _in_turns(per_sentence, limit, set())
    if nouns and chosen:
        noun_phrases = [[Span(phrase, sentence, "noun") for phrase in _noun_phrases(sentence)
                         if normalize(phrase) and not any(has_phrase(s.text, phrase) for s in found)]
                        for sentence, found in zip(in_order, per_sentence)]
        chosen += _in_turns(noun_phrases, limit - len(chosen), {normalize(s.text) for s in chosen})
    return chosen


def _in_turns(per_sentence: list[list[Span]], limit: int, seen: set[str]) -> list[Span]:
    """The first span of each sentence, then the second of each..., skipping what was seen, up to `limit`."""
    chosen: list[Span] = []
    for rank in range(max((len(f) for f in per_sentence), default=0)):
        for found in per_sentence:
            if rank < len(found) and normalize(found[rank].text) not in seen and len(chosen) < limit:
                seen.add(normalize(found[rank].text))
                chosen.append(found[rank])
    return chosen


def quiz_spans(title: str, text: str, facts: int) -> list[Span]:
    """The first `facts` answer spans of a passage a quiz asks, noun phrases last. Spans inside the title are
    skipped: a question about the topic names it, so it would contain its answer."""
    return [s for s in answer_spans(text, facts + 4, nouns=True) if not has_phrase(title, s.text)][:facts]


def cloze_question(span: Span) -> str:
    """The rule-only question: the span's sentence with the span replaced by a wh-word."""
    return span.sentence.replace(span.text, QUESTION_WORDS[span.kind].lower(), 1).rstrip(".!") + "?"


# Where a clause ends: punctuation, or a relative or linking word that starts the next one.
CLAUSE_BREAK = re.compile(r"\s*[,;:()\u2014]\s*|\s+(?=(?:which|who|whom|whose|where|while|because|although|but|"
                          r"whereas)\s)")
CLAUSE_WORDS = 6  # words besides the span a clause question keeps at least, so that it still says what it asks


def _clause(sentence: str, start: int, end: int) -> tuple[int, int]:
    """Where the clause around `sentence[start:end]` begins and ends, widened a clause at a time (earlier ones first)
    until it has `CLAUSE_WORDS` words besides that span, or is the whole sentence."""
    breaks = [(m.start(), m.end()) for m in CLAUSE_BREAK.finditer(sentence) if m.end() <= start or m.start() >= end]
    before = [b for b in breaks if b[1] <= start]
    after = [b for b in breaks if b[0] >= end]
    while True:
        low = before[-1][1] if before else 0
        high = after[0][0] if after else len(sentence)
        if len(sentence[low:high].split()) - len(sentence[start:end].split()) >= CLAUSE_WORDS or not (before or after):
            return low, high
        (before if before else after).pop(-1 if before else 0)


def _as_question(words: str) -> str:
    return words[:1].upper() + words[1:] + "?"


def clause_question(span: Span) -> str:
    """The rule-made question in fewer words: the clause around the span, widened a clause at a time (earlier ones
    first) until it has `CLAUSE_WORDS` words besides the span; empty when that is the whole sentence. People ask
    with the words next to the answer; a whole long sentence asked also matches questions about its other facts
    (on SQuAD most wrong answers after self-study were another answer of the same passage)."""
    sentence = span.sentence
    start = sentence.find(span.text)
    low, high = _clause(sentence, start, start + len(span.text))
    if low == 0 and high >= len(sentence.rstrip(".!?")):
        return ""
    return _as_question(sentence[low:high].replace(span.text, QUESTION_WORDS[span.kind].lower(), 1).strip(" ,;:.!?"))


def lead_question(span: Span, start: int) -> tuple[str, str]:
    """The question the words of its clause before a claim ask ("The capital of Italy is which?" for "Milan" at
    `start` of its sentence), and those words ("The capital of Italy is"), with which a reply that restates the
    question begins. The clause's later words are left out: after a false claim they tend to support it."""
    low, _ = _clause(span.sentence, start, start + len(span.text))
    lead = span.sentence[low:start].strip(" ,;:")
    return _as_question(f"{lead} {QUESTION_WORDS[span.kind].lower()}".strip()), lead


def question_start(span: Span) -> str:
    """The first words of a question whose answer is `span`, forced on the model that writes the rest. A quantity's
    unit goes into them ("How many grams"): with "How many" alone the 135M model asks about another number of the
    sentence ("How many hours of scanning..." for "310 grams")."""
    if span.kind == "quantity":
        if span.text.endswith(("%", "percent")):
            return "What percentage"
        words = span.text.replace("-", " ").split()
        unit = words[-1] if len(words) > 1 and words[-1].isalpha() and words[-1].islower() else ""
        return f"How many {unit}".strip()
    return QUESTION_WORDS[span.kind]
