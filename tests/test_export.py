"""`seal export`: a version leaves seal as PEFT adapters, a merged model or a GGUF file that give its own logits."""

import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from seal.cli import app
from seal.learn import load_version
from seal.store import Version, now

from conftest import TAUGHT_QUESTION

runner = CliRunner()


def logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits[0]


def test_exports_load_back_and_give_the_versions_own_logits(taught_store, tiny_model_dir, tmp_path):
    store, _ = taught_store
    lm, _ = load_version(store, str(tiny_model_dir), "cpu", "v1")
    prompt = lm.chat_prompt([{"role": "user", "content": TAUGHT_QUESTION}])
    expected = logits(lm.model, lm.tokenizer, prompt)

    done = runner.invoke(app, ["export", "v1", "--out", str(tmp_path / "peft"), "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["modules"] == ["v1"]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "peft" / "v1")
    assert torch.allclose(logits(adapted.eval(), lm.tokenizer, prompt), expected, atol=1e-5)
    assert json.loads((tmp_path / "peft" / "router.json").read_text())["modules"][0]["name"] == "v1"

    assert runner.invoke(app, ["export", "v1", "--out", str(tmp_path / "merged"), "--format", "merged"]).exit_code == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert (logits(merged, lm.tokenizer, prompt) - expected).abs().max() < 1e-4
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "/docs/beacon.md" in card and str(tiny_model_dir) in card and "**v1**" in card

    # GGUF, read back through transformers' GGUF loader: the path seal loads its embedded model by
    assert runner.invoke(app, ["export", "v1", "--out", str(tmp_path / "gguf"), "--format", "gguf"]).exit_code == 0
    from_gguf = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file="seal-v1.gguf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "gguf", gguf_file="seal-v1.gguf")
    assert tokenizer(prompt)["input_ids"] == lm.tokenizer(prompt)["input_ids"]
    assert (logits(from_gguf, lm.tokenizer, prompt) - expected).abs().max() < 1e-4


def test_export_refuses_what_it_cannot_do_in_one_line_and_keeps_what_is_there(taught_store, tmp_path):
    store, _ = taught_store
    store.record(Version("", "v1", "rolled_back", now(), store.model(), [], None, 0, 0, {}, {}, "sanity check failed"),
                 [], [], make_current=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    cases = {("v9", "peft", tmp_path / "a"): "unknown version", ("v2", "peft", tmp_path / "b"): "rolled back",
             ("v1", "onnx", tmp_path / "c"): "unknown export format", ("v1", "peft", full): "not empty"}
    for (version, fmt, out), fragment in cases.items():
        result = runner.invoke(app, ["export", version, "--out", str(out), "--format", fmt])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert (full / "mine.txt").read_text() == "keep me"
