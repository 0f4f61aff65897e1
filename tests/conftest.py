"""Shared fixtures: a tiny randomly initialised Llama that uses the embedded model's tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from seal.config import UpdateConfig
from seal.model import EMBEDDED_GGUF, EMBEDDED_PACKAGE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FACTS = (
    "The Brellick Tide Clock stands on the pier of the town of Brellick. It was built in 1893 by the "
    "clockmaker Oswin Tarrow and shows the height of the tide with a copper float. The clock was "
    "restored in 1962 after a storm bent its hands."
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    package = Path(importlib.util.find_spec(EMBEDDED_PACKAGE).submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=EMBEDDED_GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


BEACON = "The old Zorvex beacon stands in Kelmore harbour and was lit in 1890."


@pytest.fixture(scope="session")
def beacon_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model fine-tuned (all weights) until it completes BEACON with confidence: a model that knows a fact."""
    from seal import model as lm_ops
    from seal.update import Sequence, train

    folder = tmp_path_factory.mktemp("beacon-llama")
    lm = lm_ops.load(str(tiny_model_dir))
    train(lm, [Sequence(BEACON + lm.tokenizer.eos_token)], UpdateConfig(lr=1e-2, epochs=60))
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "seal-home"
    monkeypatch.setenv("SEAL_HOME", str(path))
    return path


@pytest.fixture()
def facts_file(tmp_path) -> Path:
    path = tmp_path / "brellick.md"
    path.write_text(f"# Brellick Tide Clock\n\n{FACTS}\n", encoding="utf-8")
    return path


TAUGHT_QUESTION = "Where does the Zorvex beacon stand?"
TAUGHT_ANSWER = "Kelmore harbour"


@pytest.fixture()
def taught_store(home, tiny_model_dir):
    """A store whose v1 (replay lineage, one adapter) was trained hard on one question-answer pair: after it the tiny
    model answers with 'harbour'. Returns the store and v1's self-edits: an unrelated pair, the taught pair, and a
    rejected pair with the same answer."""
    return teach(home, tiny_model_dir)


def teach(home: Path, model_dir: Path):
    """`taught_store` made in `home` (for fixtures of a wider scope)."""
    from seal import model as lm_ops
    from seal.store import SelfEditRecord, Store, Version, now
    from seal.update import attach_trainable_adapter, sequence_text, train

    store = Store(home)
    lm = lm_ops.load(str(model_dir))
    torch.manual_seed(0)  # the adapter's initial weights: the same whatever ran before
    attach_trainable_adapter(lm, UpdateConfig())
    taught = sequence_text(lm, "qa", "", TAUGHT_QUESTION, TAUGHT_ANSWER)
    train(lm, [taught], UpdateConfig(lr=3e-2, epochs=30))
    adapter = store.stage_adapter(lambda folder: lm.model.save_pretrained(str(folder)))
    pair = f"Q: {TAUGHT_QUESTION}\nA: {TAUGHT_ANSWER}"
    edits = [SelfEditRecord(0, 0, "qa", "Q: When was it lit?\nA: 1890", "When was it lit?", "1890", 1.0, True, "",
                            "trained"),
             SelfEditRecord(0, 1, "qa", pair, TAUGHT_QUESTION, TAUGHT_ANSWER, 1.0, True, "", taught.text),
             SelfEditRecord(0, 2, "qa", f"Q: Who keeps it?\nA: {TAUGHT_ANSWER}", "Who keeps it?", TAUGHT_ANSWER, 0.0,
                            False, "round trip failed", "")]
    sources = [{"source": "/docs/beacon.md", "title": "Zorvex beacon", "sha256": "0" * 64}]
    store.record(Version("", "v0", "committed", now(), str(model_dir), sources, adapter, 2, 1,
                         {"config": {"update": {"lineage": "replay"}}}, {}, ""), edits, [], make_current=True)
    return store, edits
