"""Reading the user's material: files, folders or stdin, validated and split into passages that fit the model."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from seal.errors import NotText, SealError

TEXT_SUFFIXES = {".md", ".txt", ".rst", ".text", ".markdown"}


def packaged(name: str) -> object:
    """A JSON file shipped in seal/data: batteries, rules, calibration sets."""
    return json.loads(resources.files("seal").joinpath(f"data/{name}").read_text(encoding="utf-8"))


@dataclass
class Document:
    source: str
    title: str
    text: str
    sha256: str


@dataclass
class Passage:
    title: str
    text: str
    source: str


def _decode(raw: bytes, source: str) -> str:
    if b"\x00" in raw:
        raise NotText(f"{source} looks binary (it contains NUL bytes); give a UTF-8 text document")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise NotText(f"{source} is not valid UTF-8 (byte {err.start}); convert it to UTF-8 text") from err
    if not text.strip():
        raise SealError(f"{source} is empty; there is nothing to learn")
    return text


def _title(text: str, fallback: str) -> tuple[str, str]:
    """A leading markdown heading becomes the title; otherwise the file's stem does."""
    first, _, rest = text.strip().partition("\n")
    if first.startswith("#"):
        return first.lstrip("#").strip() or fallback, rest.strip()
    return fallback, text.strip()


def read_documents(paths: list[str]) -> list[Document]:
    """Read every path (a file, a folder of text files, or - for stdin) into validated documents."""
    if not paths:
        raise SealError("no document given: pass a file, a folder or - for stdin")
    docs: list[Document] = []
    for arg in paths:
        if arg == "-":
            entries = [("stdin", sys.stdin.buffer.read(), "stdin")]
        else:
            path = Path(arg).expanduser()
            if not path.exists():
                raise SealError(f"no such file or folder: {arg}")
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                               and not any(part.startswith(".") for part in p.relative_to(path).parts))
                if not files:
                    raise SealError(f"folder {arg} has no text documents (.md, .txt, .rst)")
            else:
                files = [path]
            try:
                entries = [(str(f), f.read_bytes(), f.stem.replace("-", " ").replace("_", " ")) for f in files]
            except OSError as err:
                raise SealError(f"cannot read {err.filename}: {err.strerror}") from err
        docs += [parse_document(raw, source, fallback) for source, raw, fallback in entries]
    return docs


def parse_document(raw: bytes, source: str, fallback_title: str) -> Document:
    """Validate raw bytes as a UTF-8 text document (not binary, not empty) and take its title."""
    title, body = _title(_decode(raw, source), fallback_title)
    if not body:
        raise SealError(f"{source} has a title but no text; there is nothing to learn")
    return Document(source=source, title=title, text=body, sha256=hashlib.sha256(raw).hexdigest())


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def split_passages(doc: Document, count_tokens, max_tokens: int, max_passages: int) -> list[Passage]:
    """Split on paragraphs, then sentences, so that each passage fits `max_tokens` of the model's context."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", doc.text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if count_tokens(paragraph) <= max_tokens:
            pieces.append(paragraph)
            continue
        for sentence in sentences(paragraph):
            if count_tokens(sentence) > max_tokens:
                raise SealError(f"{doc.source} has a sentence of {count_tokens(sentence)} tokens, longer than a "
                                f"passage may be ({max_tokens}); is it really prose?")
            pieces.append(sentence)
    passages: list[str] = []
    for piece in pieces:
        if passages and count_tokens(passages[-1] + " " + piece) <= max_tokens:
            passages[-1] = passages[-1] + " " + piece
        else:
            passages.append(piece)
    if len(passages) > max_passages:
        raise SealError(f"{doc.source} is too long: {len(passages)} passages of up to {max_tokens} tokens "
                        f"(limit {max_passages}); split it into several documents or raise --max-passages")
    return [Passage(title=doc.title, text=text, source=doc.source) for text in passages]
