import io
import sys

import pytest

from seal.documents import Document, read_documents, sentences, split_passages
from seal.errors import SealError


def words(text: str) -> int:
    return len(text.split())


def test_reads_title_from_heading_and_hashes(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Orvane K7\n\nThe drone flies.\n", encoding="utf-8")
    [parsed] = read_documents([str(doc)])
    assert parsed.title == "Orvane K7"
    assert parsed.text == "The drone flies."
    assert len(parsed.sha256) == 64


def test_folder_reads_text_files_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("Second file.", encoding="utf-8")
    (tmp_path / "a.md").write_text("First file.", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00")
    docs = read_documents([str(tmp_path)])
    assert [d.title for d in docs] == ["a", "b"]


def test_folder_skips_hidden_folders(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_bytes(b"\x00\x01")
    (tmp_path / "README.md").write_text("Visible.", encoding="utf-8")
    assert [d.text for d in read_documents([str(tmp_path)])] == ["Visible."]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Piped facts.")))
    assert read_documents(["-"])[0].text == "Piped facts."


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"   \n\t ", "empty"), (b"\x00\x01binary", "binary"), (b"caf\xe9 menu", "UTF-8"),
    (b"# Only a title\n", "no text"),
])
def test_bad_documents(tmp_path, content, message):
    doc = tmp_path / "bad.md"
    doc.write_bytes(content)
    with pytest.raises(SealError, match=message):
        read_documents([str(doc)])


def test_missing_file_and_no_paths(tmp_path):
    with pytest.raises(SealError, match="no such file"):
        read_documents([str(tmp_path / "nope.md")])
    with pytest.raises(SealError, match="no document"):
        read_documents([])


def test_sentences():
    assert sentences("It rained. Then it stopped! Was it 3.5 mm? Yes.") == [
        "It rained.", "Then it stopped!", "Was it 3.5 mm?", "Yes."]


def test_long_document_is_split_into_fitting_passages():
    text = "\n\n".join(f"Paragraph {i} says the tower has {i} bells and a red door." for i in range(30))
    doc = Document("d.md", "Tower", text, "0" * 64)
    passages = split_passages(doc, words, max_tokens=40, max_passages=64)
    assert len(passages) > 1
    assert all(words(p.text) <= 40 for p in passages)
    assert " ".join(p.text for p in passages) == " ".join(text.split())


def test_document_far_longer_than_allowed_is_refused():
    doc = Document("huge.md", "Huge", "Word after word. " * 5000, "0" * 64)
    with pytest.raises(SealError, match="too long"):
        split_passages(doc, words, max_tokens=50, max_passages=8)
