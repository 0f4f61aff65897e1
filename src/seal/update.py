"""Stage 4: the update. LoRA (peft) on the accepted sequences, with a plain training loop.

Pad tokens never count in the loss (SEAL pads to 2048 and trains on the padding; seal does not). Every version's
adapter is trained afresh from the base weights. How versions build on each other is the `lineage` setting:
"modules" (the default) trains it on the version's own material only, and a version is its lineage's adapters with
a router that gives each prompt to one of them (`routing.py`), so an update costs the same after 32 versions as
after one and trains over nothing learned before; "replay" trains it on its material plus a replay of its
lineage's (`learn._replay`), one self-contained adapter per version, whose update grows with the lineage.
Continuing the previous adapter instead bound answers to the wrong questions: six development documents learned in
turn answered 5 of 30 questions that way, and 13 of 30 with a fresh adapter and every earlier training text
replayed (each document alone: 19 of 30).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from peft import LoraConfig, get_peft_model

from seal import model as lm_ops
from seal.config import AdapterConfig, UpdateConfig
from seal.documents import packaged
from seal.model import LM
from seal.prompts import answer_messages


@dataclass
class TrainStats:
    sequences: int
    tokens: int
    steps: int
    first_loss: float
    final_loss: float
    seconds: float


LINEAGES = ("modules", "replay")
QA_KINDS = ("qa", "quiz", "cloze")  # self-edit kinds trained as a question and its answer
# A question the model wrote is trained with the loss on its answer only: the update learns the answer, not the
# question. A rule-made cloze question is its source sentence with a wh-word; trained on the whole pair
# (`whole_cloze`) it also teaches that sentence, which people's questions echo: on 20 SQuAD development passages
# (outside the benchmark's 50) the rule-made pairs answered 26.1% whole against 18.4% on the answer only (paired +7.7
# points, 95% interval +0.7 to +15.0), and `study` 22.6% against 11.3% on the benchmark's 50. (It was off by default
# while the safety check failed an update for one red-team reply, "You should kill yourself."; the check is now a
# sign test over 120 prompts, and that single reply gives 0.5.)


REHEARSAL_TOKENS = 48  # length of the base model's replies to rehearsed chat requests


def reply_only(kind: str, whole_cloze: bool) -> bool:
    """Whether a sequence of this self-edit kind is trained with the loss on the reply only."""
    return kind in ("qa", "quiz") or (kind == "cloze" and not whole_cloze)


class Sequence(NamedTuple):
    """One training text, and whether its loss counts only the assistant's reply."""

    text: str
    reply_only: bool = False


def sequence_text(lm: LM, kind: str, text: str, question: str = "", answer: str = "",
                  topic: str | None = None, whole_cloze: bool = UpdateConfig.whole_cloze) -> Sequence:
    """How a candidate is written as training text: QA pairs in the exact form questions are later asked."""
    eos = lm.tokenizer.eos_token or ""
    if kind in QA_KINDS:
        return Sequence(lm.chat_prompt(answer_messages(question, topic)) + answer + eos, reply_only(kind, whole_cloze))
    return Sequence(text + eos)


def chat_rehearsal(lm: LM, config: UpdateConfig, known: dict[str, str] | None = None) -> list[Sequence]:
    """Chat turns rehearsed with every update, the loss on the reply: harmful and plain requests (data/rehearsal.json)
    with the replies `lm`, the base model before the adapter, gives them. `known` holds replies the same model gave
    before (a store keeps them, as it keeps the checks' reference answers) and receives the new ones.

    Any update erodes what little refusal the small model has: of the 120 red-team prompts the base model refuses
    18, and after the demo's update none, which the safety check refuses. Rehearsing the model's own chat keeps it
    (37 refused after the demo's update with 8 harmful and 8 plain requests, 30 with 4 and 12). Written refusals
    instead (as safety data mixed into fine-tuning, Bianchi et al., ICLR 2024) made it refuse 38 of 40 plain
    requests. None of these requests is in the checks' batteries."""
    data = packaged("rehearsal.json")
    rng = random.Random(config.seed)
    counts = {"harmful": config.rehearse_harmful, "plain": config.rehearse_plain}
    requests = [r for kind, count in counts.items() for r in rng.sample(data[kind], min(count, len(data[kind])))]
    prompts = [lm.chat_prompt([{"role": "user", "content": r}]) for r in requests]
    known = {} if known is None else known
    missing = [prompt for prompt in prompts if prompt not in known]
    if missing:
        known.update(zip(missing, lm_ops.generate(lm, missing, max_new_tokens=REHEARSAL_TOKENS,
                                                  batch_size=len(missing))))
    return [Sequence(prompt + known[prompt], True) for prompt in prompts]


def lora_config(config: AdapterConfig) -> LoraConfig:
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")


def attach_trainable_adapter(lm: LM, config: AdapterConfig) -> None:
    """Wrap the base model in a fresh trainable LoRA adapter (an update's, or the policy's fine-tuning)."""
    with lm_ops.BUILDING:
        lm.model = get_peft_model(lm.model, lora_config(config))


IGNORE = -100  # the label that makes a position count for nothing in the loss
Example = tuple[list[int], list[int]]  # input ids and their labels


def reply_marker(lm: LM) -> str:
    """What the chat template writes between a user's words and the assistant's reply
    (for SmolLM2 "<|im_end|>\n<|im_start|>assistant\n")."""
    prompt = lm.chat_prompt([{"role": "user", "content": "x"}])
    return prompt[prompt.rindex("x") + 1 :]


def tokenize(lm: LM, text: str, max_tokens: int, marker: str = "") -> Example:
    """Input ids and labels of one training text. Given the reply marker, a chat-format text (a question-answer
    pair) is labelled only after its last marker; any other text is labelled whole."""
    cut = text.rfind(marker) + len(marker) if marker and marker in text else 0
    context = lm.tokenizer(text[:cut], add_special_tokens=False)["input_ids"] if cut else []
    reply = lm.tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
    return (context + reply)[:max_tokens], ([IGNORE] * len(context) + reply)[:max_tokens]


def pack(examples: list[Example], budget: int) -> list[Example]:
    """Concatenate whole sequences (each ends in EOS) into rows of at most `budget` tokens.

    On a CPU a step costs nearly as much for 30 tokens as for 250, so packing halves the update's time.
    A sequence longer than the budget gets a row of its own.
    """
    rows: list[Example] = []
    for ids, labels in examples:
        if rows and len(rows[-1][0]) + len(ids) <= budget:
            rows[-1] = (rows[-1][0] + ids, rows[-1][1] + labels)
        else:
            rows.append((list(ids), list(labels)))
    return rows


def collate(examples: list[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded (input ids, labels) rows; padding is masked out of attention and of the loss."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def planned_batches(lm: LM, sequences: list[Sequence], config: UpdateConfig,
                    seed: int) -> tuple[list[Example], list[tuple[int, list[Example]]]]:
    """The training examples of `sequences` (those with a token to learn), and every step's rows with its epoch:
    each epoch shuffled (seeded) and packed anew. The solo update and the batched engine train from this."""
    marker = reply_marker(lm)
    examples = [tokenize(lm, s.text, config.max_tokens, marker if s.reply_only else "") for s in sequences]
    examples = [(ids, labels) for ids, labels in examples if len(ids) > 1 and any(x != IGNORE for x in labels[1:])]
    order = random.Random(seed)
    batches = []
    for epoch in range(config.epochs if examples else 0):
        order.shuffle(examples)
        rows = pack(examples, config.pack_tokens)
        batches += [(epoch, rows[first : first + config.batch_size])
                    for first in range(0, len(rows), config.batch_size)]
    return examples, batches


def train(lm: LM, sequences: list[Sequence], config: UpdateConfig,
          on_step: Callable[[int, int, float], None] | None = None) -> TrainStats:
    """Train the attached adapter on `sequences` and leave the model in eval mode."""
    start = time.perf_counter()
    examples, batches = planned_batches(lm, sequences, config, config.seed)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    torch.manual_seed(config.seed)
    losses: list[float] = []
    lm.model.train()
    for _, rows in batches:
        loss = lm.model(**collate(rows, lm.tokenizer.pad_token_id, lm.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step:
            on_step(len(losses), len(batches), losses[-1])
    lm.model.eval()
    last_epoch = [loss for loss, (epoch, _) in zip(losses, batches) if epoch == config.epochs - 1]
    return TrainStats(sequences=len(examples), tokens=sum(len(ids) for ids, _ in examples) * config.epochs,
                      steps=len(losses),
                      first_loss=round(losses[0] if losses else 0.0, 4),
                      final_loss=round(sum(last_epoch) / len(last_epoch), 4) if last_epoch else 0.0,
                      seconds=round(time.perf_counter() - start, 2))
