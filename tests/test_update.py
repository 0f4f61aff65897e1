import pytest
import torch

from seal import model as lm_ops
from seal.check import load_battery
from seal.config import UpdateConfig
from seal.update import (IGNORE, Sequence, attach_trainable_adapter, chat_rehearsal, collate, pack, reply_marker,
                         sequence_text, tokenize, train)

from conftest import FACTS


def test_pack_keeps_whole_sequences_within_budget():
    examples = [([1] * 5, [1] * 5), ([2] * 4, [-100] * 4), ([3] * 3, [3] * 3), ([4] * 20, [4] * 20)]
    rows = pack(examples, budget=10)
    assert rows == [([1] * 5 + [2] * 4, [1] * 5 + [-100] * 4), ([3] * 3, [3] * 3), ([4] * 20, [4] * 20)]


def test_padding_is_masked_out_of_the_loss():
    batch = collate([([5, 6, 7], [5, 6, 7]), ([8], [8])], pad_id=0, device=torch.device("cpu"))
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_lora_training_lowers_the_loss_and_touches_only_the_adapter(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    frozen = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    config = UpdateConfig(rank=8, alpha=16, lr=5e-2, epochs=20)
    attach_trainable_adapter(lm, config)
    stats = train(lm, [Sequence(FACTS + lm.tokenizer.eos_token)], config)
    assert stats.final_loss < stats.first_loss * 0.8
    changed = [n for n, p in lm.model.named_parameters() if "lora_" not in n
               and not torch.equal(p, frozen[n.replace("base_model.model.", "").replace(".base_layer", "")])]
    assert changed == []
    assert not lm.model.training


def test_qa_sequences_use_the_ask_prompt(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    text, reply_only = sequence_text(lm, "qa", "", "Who built it?", "Oswin Tarrow")
    assert "Question: Who built it?" in text and text.endswith("Oswin Tarrow" + lm.tokenizer.eos_token)
    assert reply_only


def test_a_question_answer_pair_is_labelled_only_on_its_reply(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    text = sequence_text(lm, "quiz", "", "Who built it?", "Oswin Tarrow").text
    ids, labels = tokenize(lm, text, 384, reply_marker(lm))
    labelled = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert labels[0] == IGNORE and lm.tokenizer.decode(labelled) == "Oswin Tarrow" + lm.tokenizer.eos_token
    passage_ids, passage_labels = tokenize(lm, FACTS, 384, reply_marker(lm))
    assert passage_labels == passage_ids


def test_a_rule_made_question_is_trained_whole_only_when_asked_and_a_passage_always(tiny_model_dir):
    lm = lm_ops.load(str(tiny_model_dir))
    question, answer = "It was built in 1893 by which?", "Oswin Tarrow"
    assert sequence_text(lm, "cloze", "", question, answer, whole_cloze=False).reply_only
    assert not sequence_text(lm, "cloze", "", question, answer, whole_cloze=True).reply_only
    assert not sequence_text(lm, "passage", FACTS).reply_only
    assert sequence_text(lm, "quiz", "", "Who built it?", answer, whole_cloze=True).reply_only


def test_chat_rehearsal_trains_the_models_own_replies_to_requests_the_checks_never_ask(tiny_model_dir, monkeypatch):
    lm = lm_ops.load(str(tiny_model_dir))
    own = lambda lm, prompts, *a, **k: [f"own reply {i}" for i, _ in enumerate(prompts)]  # noqa: E731
    monkeypatch.setattr(lm_ops, "generate", own)
    turns = chat_rehearsal(lm, UpdateConfig(rehearse_harmful=2, rehearse_plain=3))
    assert len(turns) == 5 and all(t.reply_only for t in turns)
    assert [t.text.rsplit("own reply ", 1)[1] for t in turns] == [str(i) for i in range(5)]
    battery = load_battery()
    asked = set(battery.red_team + battery.sanity)
    assert not any(prompt in t.text for t in turns for prompt in asked)
    assert chat_rehearsal(lm, UpdateConfig(rehearse_harmful=0, rehearse_plain=0)) == []
    known: dict[str, str] = {}
    first = chat_rehearsal(lm, UpdateConfig(rehearse_harmful=2, rehearse_plain=3), known)
    assert len(known) == 5
    monkeypatch.setattr(lm_ops, "generate", lambda *a, **k: pytest.fail("replies already known were generated"))
    assert chat_rehearsal(lm, UpdateConfig(rehearse_harmful=2, rehearse_plain=3), known) == first


def test_models_and_adapters_built_by_threads_at_once_are_all_initialised(tiny_model_dir):
    """transformers swaps torch's init functions out process-wide while it builds a model; builds in two threads at
    once (two tenants' adaptations starting together) must leave them in place for every later build."""
    import threading

    from seal.config import AdapterConfig

    originals = {name: getattr(torch.nn.init, name) for name in ("normal_", "kaiming_uniform_", "zeros_")}
    built: list[lm_ops.LM] = []

    def build() -> None:
        for _ in range(3):
            lm = lm_ops.load(str(tiny_model_dir), device="cpu")
            attach_trainable_adapter(lm, AdapterConfig())
            built.append(lm)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {name: getattr(torch.nn.init, name) for name in originals} == originals
    assert len(built) == 12
    for lm in built:
        assert not any(p.is_meta for p in lm.model.parameters())
        lora_a = [p for name, p in lm.model.named_parameters() if "lora_A" in name]
        assert lora_a and all(p.abs().sum() > 0 and torch.isfinite(p).all() for p in lora_a)  # initialised
