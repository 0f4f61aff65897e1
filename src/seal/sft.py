"""Supervised fine-tuning of the self-edit writer on (prompt, completion) pairs, loss on the completion only.

LoRA for the step, then merged into the weights and saved as a plain checkpoint (with its lineage), so the new
policy loads anywhere a model is accepted.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from seal.config import SFTConfig
from seal.model import LM
from seal.update import IGNORE, attach_trainable_adapter, collate


@dataclass
class SFTStats:
    examples: int
    completion_tokens: int
    steps: int
    losses: list[float]  # one per step
    epoch_losses: list[float]  # mean per epoch
    seconds: float


def tokenize_example(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str,
                     max_tokens: int) -> tuple[list[int], list[int]]:
    """Input ids of prompt + completion, and labels that ignore every prompt token.

    Prompt and completion are tokenized apart, as they were at sampling time, so the mask boundary is exact.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + completion_ids)[:max_tokens]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_tokens]
    return ids, labels


def sft(lm: LM, pairs: list[tuple[str, str]], config: SFTConfig) -> SFTStats:
    """Train a fresh LoRA adapter on `pairs` (prompt, completion) and merge it into `lm.model`."""
    start = time.perf_counter()
    eos = lm.tokenizer.eos_token or ""
    examples = [tokenize_example(lm.tokenizer, prompt, completion + eos, config.max_tokens)
                for prompt, completion in pairs]
    examples = [e for e in examples if any(label != IGNORE for label in e[1])]
    torch.manual_seed(config.seed)  # the adapter's initial A matrices
    attach_trainable_adapter(lm, config)
    model = lm.model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    order = random.Random(config.seed)
    losses: list[float] = []
    epoch_losses: list[float] = []
    model.train()
    for _ in range(config.epochs):
        order.shuffle(examples)
        epoch: list[float] = []
        for first in range(0, len(examples), config.batch_size):
            loss = model(**collate(examples[first : first + config.batch_size], lm.tokenizer.pad_token_id,
                                   lm.device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            epoch.append(round(loss.item(), 4))
        losses += epoch
        if epoch:
            epoch_losses.append(round(sum(epoch) / len(epoch), 4))
    model.eval()
    lm.model = model.merge_and_unload()
    return SFTStats(examples=len(examples), completion_tokens=sum(sum(1 for x in labs if x != IGNORE)
                                                                 for _, labs in examples),
                    steps=len(losses), losses=losses, epoch_losses=epoch_losses,
                    seconds=round(time.perf_counter() - start, 2))


def save_checkpoint(lm: LM, folder: Path, lineage: dict) -> None:
    """Weights, tokenizer and lineage.json, written to a staging folder and renamed into place."""
    staging = folder.with_name(f".tmp-{folder.name}")
    if staging.exists():
        shutil.rmtree(staging)  # left by a run killed while saving
    lm.model.save_pretrained(staging)
    lm.tokenizer.save_pretrained(staging)
    (staging / "lineage.json").write_text(json.dumps(lineage, indent=2), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
