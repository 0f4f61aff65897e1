"""The inner update: many independent LoRA adapters trained and asked in one batched pass over a frozen base.

Reward trials and the knowledge benchmark each need a fresh adapter trained on a few sequences and then asked a few
questions. One at a time, a 135M model leaves the CPU's matrix units and a GPU mostly idle. Here every target linear
layer carries K adapter slots (stacked A and B weights) and every row of a batch the index of its slot, so K trials
take one forward and one backward per step (the idea of mLoRA, VLDB'25, in plain torch for the CPU and the GPU).

Each trial keeps what it would have alone: its own seeded initialisation (peft's), its own shuffle and packing of
rows (`update.train`'s), a loss that is its own mean over its labelled tokens (the batch's loss is the sum over
trials, so each slot's gradient is exactly its solo gradient), its own gradient clipping, and its own AdamW state
and step count; a slot is stepped only when its trial had rows in the batch. Trials that finish early drop out,
and a trial whose loss is not finite is marked failed without touching the others.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from seal import model as lm_ops
from seal.config import UpdateConfig
from seal.errors import SealError
from seal.grading import RemoteJudge
from seal.model import LM
from seal.squad import Item, graded, question_prompts
from seal.update import IGNORE, Example, Sequence, collate, lora_config, planned_batches

BASE_SLOT = -1  # a row asked of the base model, with no adapter


class _Rows:
    """Which adapter each part of the batch being run goes through, shared by the engine's layers: a slot per row,
    or (slot, start, end) spans of one packed row; neither: the base model."""

    slots: torch.Tensor | None = None
    spans: list[tuple[int, int, int]] | None = None


class StackedLoRA(nn.Module):
    """A frozen linear layer plus K LoRA adapters; each row of the input, or span of a packed row, goes through
    its own one."""

    def __init__(self, base: nn.Linear, slots: int, rank: int, scale: float, rows: _Rows):
        super().__init__()
        self.base = base
        self.scale = scale
        self.rows = rows
        # Adapters in float32 whatever the base's precision (as peft does): AdamW's small steps vanish in bfloat16.
        like = {"dtype": torch.float32, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.zeros(slots, rank, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(slots, base.out_features, rank, **like))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.rows.spans is None and self.rows.slots is None:
            return out
        return out + self._delta(x.to(self.lora_A.dtype)).to(out.dtype)

    def _delta(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows.spans is not None:
            pieces = [x[:, start:end] @ self.lora_A[slot].T @ self.lora_B[slot].T
                      for slot, start, end in self.rows.spans]
            return self.scale * torch.cat(pieces, dim=1)
        slots = self.rows.slots
        chosen = slots.clamp(min=0)
        delta = torch.bmm(torch.bmm(x, self.lora_A[chosen].transpose(1, 2)), self.lora_B[chosen].transpose(1, 2))
        keep = (slots >= 0).to(delta.dtype).view(-1, *([1] * (delta.dim() - 1)))
        return self.scale * delta * keep


@dataclass
class Job:
    """One trial's update: its training sequences and its seed (adapter initialisation and data order), and where the
    trial chooses them (a few-shot task's recipe), its own learning rate and epochs instead of the engine's."""

    sequences: list[Sequence]
    seed: int
    lr: float | None = None
    epochs: int | None = None


@dataclass
class Outcome:
    sequences: int
    tokens: int
    steps: int
    first_loss: float
    final_loss: float
    failed: str | None = None  # why the trial's adapter is unusable: no training tokens, a loss that is not finite


@dataclass
class _Plan:
    slot: int
    lr: float
    sequences: int
    tokens: int
    batches: list[list[Example]]  # every step's rows, all epochs
    epoch_of: list[int]
    losses: list[float]
    failed: str | None = None


class Engine:
    """The base model of `lm` with `slots` LoRA adapters of `config`'s shape in its target layers (peft is not
    involved: `lm` must be the bare base model)."""

    def __init__(self, lm: LM, config: UpdateConfig, slots: int, packed: bool | None = None):
        self.lm = lm
        self.config = config
        self.slots = slots
        # A training step's rows packed end to end into one row (attention kept within each), or padded to the
        # longest. A CPU is compute-bound, so padding is pure loss there (2.4 times the real tokens for 8 reward
        # trials); a GPU is bound by kernel launches, one per trial in a packed row.
        self.packed = lm.device.type == "cpu" if packed is None else packed
        self.rows = _Rows()
        for parameter in lm.model.parameters():
            parameter.requires_grad_(False)
        targets = [(name, module) for name, module in lm.model.named_modules()
                   if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in config.target_modules]
        self.layers: list[tuple[str, StackedLoRA]] = []
        for name, linear in targets:
            parent_name, _, child = name.rpartition(".")
            layer = StackedLoRA(linear, slots, config.rank, config.alpha / config.rank, self.rows)
            setattr(lm.model.get_submodule(parent_name), child, layer)
            self.layers.append((name, layer))
        lm.model.eval()

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, layer in self.layers for p in (layer.lora_A, layer.lora_B)]

    @torch.no_grad()
    def reset(self, slot: int, seed: int) -> None:
        """A fresh adapter in `slot`, drawn as peft draws one after `torch.manual_seed(seed)`: A Kaiming-uniform,
        B zero, layer by layer in the model's order."""
        torch.manual_seed(seed)
        for _, layer in self.layers:
            nn.init.kaiming_uniform_(layer.lora_A[slot], a=math.sqrt(5))
            layer.lora_B[slot].zero_()

    @contextmanager
    def using(self, slots: list[int]) -> Iterator[None]:
        """Run the rows of the next batches through these slots (BASE_SLOT: no adapter)."""
        previous = self.rows.slots
        self.rows.slots = torch.tensor(slots, dtype=torch.long, device=self.lm.device)
        try:
            yield
        finally:
            self.rows.slots = previous

    def _plan(self, slot: int, job: Job) -> _Plan:
        config = replace(self.config, epochs=job.epochs or self.config.epochs)
        examples, batches = planned_batches(self.lm, job.sequences, config, job.seed)  # as `update.train`'s
        return _Plan(slot, job.lr or config.lr, len(examples), sum(len(ids) for ids, _ in examples) * config.epochs,
                     [rows for _, rows in batches], [epoch for epoch, _ in batches], [],
                     None if examples else "no training tokens")

    def train(self, jobs: list[Job]) -> list[Outcome]:
        """Train slot i afresh on jobs[i] (at most `slots` jobs), all in one batched loop; then eval mode."""
        if len(jobs) > self.slots:
            raise ValueError(f"{len(jobs)} jobs for {self.slots} slots")
        for slot, job in enumerate(jobs):
            self.reset(slot, job.seed)
        plans = [self._plan(slot, job) for slot, job in enumerate(jobs)]
        lrs = torch.zeros(self.slots, device=self.lm.device)
        lrs[: len(plans)] = torch.tensor([plan.lr for plan in plans])
        params = self.parameters()
        moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        counts = torch.zeros(self.slots, dtype=torch.long)
        for parameter in params:
            parameter.requires_grad_(True)
        self.lm.model.train()
        try:
            for step in range(max((len(p.batches) for p in plans), default=0)):
                active = [p for p in plans if p.failed is None and step < len(p.batches)]
                if active:
                    self._step(active, step, params, moments, counts, lrs)
        finally:
            for parameter in params:
                parameter.requires_grad_(False)
                parameter.grad = None
            self.lm.model.eval()
        outcomes = []
        for plan in plans:
            last = max(plan.epoch_of, default=0)
            final = [loss for loss, epoch in zip(plan.losses, plan.epoch_of) if epoch == last]
            outcomes.append(Outcome(sequences=plan.sequences, tokens=plan.tokens, steps=len(plan.losses),
                                    first_loss=round(plan.losses[0], 4) if plan.losses else 0.0,
                                    final_loss=round(sum(final) / len(final), 4) if final else 0.0,
                                    failed=plan.failed))
        return outcomes

    def _step(self, active: list[_Plan], step: int, params: list[nn.Parameter],
              moments: list[tuple[torch.Tensor, torch.Tensor]], counts: torch.Tensor, lrs: torch.Tensor) -> None:
        means = self._slot_losses(self._packed_forward if self.packed else self._padded_forward, active, step)
        if self.packed and not torch.isfinite(means[[plan.slot for plan in active]]).all():
            # In a packed row, masked attention still multiplies a broken span's NaN values by zero, which is NaN:
            # the step is run again padded, where rows never meet, so only the broken trial fails.
            means = self._slot_losses(self._padded_forward, active, step)
        stepped = torch.zeros(self.slots, dtype=torch.bool)
        total = torch.zeros((), device=means.device)
        for plan in active:
            loss = means[plan.slot]
            if not torch.isfinite(loss):
                plan.failed = f"the loss became {loss.item()} at step {step + 1}"
                continue
            plan.losses.append(loss.item())
            stepped[plan.slot] = True
            total = total + loss
        if not stepped.any():
            return
        total.backward()
        self._adamw(params, moments, counts, stepped.to(self.lm.device), lrs)

    def _slot_losses(self, forward: Callable, active: list[_Plan], step: int) -> torch.Tensor:
        """Each slot's mean loss over its labelled tokens in this step (zero for slots without rows)."""
        hidden, labels, owners = forward(active, step)
        # Logits only where a token is predicted for the loss: the output layer is most of a small model's work.
        where = labels != IGNORE
        logits = self.lm.model.get_output_embeddings()(hidden[:, :-1][where]).float()
        token_loss = nn.functional.cross_entropy(logits, labels[where], reduction="none")
        # Summed slot by slot: index_add is not deterministic on CUDA, and a product with a one-hot matrix would
        # spread one slot's NaN to all (NaN times zero is NaN).
        owner = owners[where]
        return torch.stack([token_loss[owner == slot].sum() / (owner == slot).sum().clamp(min=1)
                            for slot in range(self.slots)])

    def _padded_forward(self, active: list[_Plan], step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's hidden states over the step's rows padded to the longest, with the labels they predict
        (shifted) and the slot each label belongs to."""
        rows = [row for plan in active for row in plan.batches[step]]
        owners = torch.tensor([plan.slot for plan in active for _ in plan.batches[step]], device=self.lm.device)
        batch = collate(rows, self.lm.tokenizer.pad_token_id, self.lm.device)
        with self.using(owners.tolist()):
            hidden = self.lm.model.get_decoder()(input_ids=batch["input_ids"],
                                                 attention_mask=batch["attention_mask"]).last_hidden_state
        labels = batch["labels"][:, 1:]
        return hidden, labels, owners.unsqueeze(1).expand_as(labels)

    def _packed_forward(self, active: list[_Plan], step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same over one row holding the step's rows end to end: positions restart with each (transformers
        then keeps attention within each), and each row's first token predicts nothing, as alone."""
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        owners: list[int] = []
        spans = []
        for plan in active:
            start = len(ids)
            for row_ids, row_labels in plan.batches[step]:
                ids += row_ids
                labels += [IGNORE] + row_labels[1:]
                positions += range(len(row_ids))
            owners += [plan.slot] * (len(ids) - start)
            spans.append((plan.slot, start, len(ids)))
        device = self.lm.device
        self.rows.spans = spans
        try:
            hidden = self.lm.model.get_decoder()(input_ids=torch.tensor([ids], device=device),
                                                 position_ids=torch.tensor([positions], device=device),
                                                 use_cache=False).last_hidden_state
        finally:
            self.rows.spans = None
        return (hidden, torch.tensor([labels], device=device)[:, 1:], torch.tensor([owners], device=device)[:, 1:])

    @torch.no_grad()
    def _adamw(self, params: list[nn.Parameter], moments: list[tuple[torch.Tensor, torch.Tensor]],
               counts: torch.Tensor, stepped: torch.Tensor, lrs: torch.Tensor) -> None:
        """Clip each slot's gradient to its own norm, then AdamW (no weight decay) on the stepped slots only,
        with each slot's own step count and learning rate: what torch's clip_grad_norm_ and AdamW do to one
        adapter."""
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        squares = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        clip = (self.config.max_grad_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        counts += stepped.cpu().long()
        steps = counts.to(self.lm.device, torch.float32)
        correction1 = 1 - beta1 ** steps
        correction2_sqrt = (1 - beta2 ** steps).sqrt()
        for parameter, grad, (mean, square) in zip(params, grads, moments):
            shape = (-1,) + (1,) * (parameter.dim() - 1)
            mask = stepped.view(shape)
            grad = grad * clip.view(shape).to(grad.dtype)
            # A slot that is not stepped has finished for good (or failed): its moments no longer matter.
            mean.mul_(beta1).add_(grad, alpha=1 - beta1)
            square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = square.sqrt() / correction2_sqrt.view(shape).clamp(min=1e-12) + eps
            update = lrs.view(shape) / correction1.view(shape).clamp(min=1e-12) * mean / denominator
            parameter.sub_(torch.where(mask, update, torch.zeros_like(update)))
            parameter.grad = None

    def generate(self, prompts: list[str], slots: list[int], max_new_tokens: int, batch_size: int = 16) -> list[str]:
        """Greedy completions, each prompt through its own slot's adapter, batched across slots."""
        replies: list[str] = []
        for first in range(0, len(prompts), batch_size):
            with self.using(slots[first : first + batch_size]):
                replies += lm_ops.generate(self.lm, prompts[first : first + batch_size], max_new_tokens,
                                           batch_size=batch_size)
        return replies

    def adapter_state(self, slot: int) -> dict[str, torch.Tensor]:
        """Slot `slot` as peft names its LoRA weights in adapter_model.safetensors."""
        state = {}
        for name, layer in self.layers:
            state[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[slot].detach().clone()
            state[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[slot].detach().clone()
        return state

    def save_adapter(self, slot: int, folder: Path) -> None:
        """Slot `slot` as a peft adapter folder, which peft loads onto the base model."""
        folder.mkdir(parents=True, exist_ok=True)
        lora_config(self.config).save_pretrained(str(folder))
        save_file({name: weight.contiguous() for name, weight in self.adapter_state(slot).items()},
                  str(folder / "adapter_model.safetensors"))


@dataclass
class Update:
    """One trial: a fresh adapter trained on `sequences` (None: no update, the base model is asked), then every
    question of `items` asked through it."""

    sequences: list[Sequence] | None
    items: list[Item]
    seed: int = 0
    open_book: bool = False


@dataclass
class Updated:
    answers: list[list[dict]]  # graded, per item; a failed update's are empty replies
    outcome: Outcome | None  # None when nothing was trained


class UpdateRunner:
    """The base model loaded once with `slots` adapter slots: runs lists of independent updates, `slots` at a time,
    each batch's questions asked in one batched generation (every row through its own adapter)."""

    def __init__(self, model: str, device: str, update: UpdateConfig, slots: int, answer_tokens: int,
                 judge: RemoteJudge | None):
        if slots < 1:
            raise SealError("--batch-trials must be at least 1")
        self.lm = lm_ops.load(model, None, device)
        self.engine = Engine(self.lm, update, slots)
        self.answer_tokens = answer_tokens
        self.judge = judge
        self.batch = slots  # halved when a batch does not fit in memory
        self.answer_batch = 16 if self.lm.device.type == "cpu" else 128

    def run(self, updates: list[Update]) -> list[Updated]:
        trained = [i for i, u in enumerate(updates) if u.sequences is not None]
        waiting = [i for i, u in enumerate(updates) if u.sequences is None]  # asked along with the first batch
        results: dict[int, Updated] = {}
        first = 0
        while first < len(trained) or waiting:
            chunk = trained[first : first + self.batch]
            try:
                outcomes = self.engine.train([Job(updates[i].sequences or [], updates[i].seed) for i in chunk])
            except (torch.OutOfMemoryError, MemoryError):
                if self.batch == 1:
                    raise
                self.batch //= 2
                warnings.warn(f"a batch of {len(chunk)} trials did not fit in memory; going on with {self.batch}",
                              RuntimeWarning, stacklevel=2)
                continue
            slot_of = {i: slot for slot, i in enumerate(chunk)}
            outcome_of = dict(zip(chunk, outcomes))
            group, waiting = chunk + waiting, []
            prompts: list[str] = []
            rows: list[int] = []
            for i in group:
                if i in outcome_of and outcome_of[i].failed:
                    continue
                asked = question_prompts(self.lm, updates[i].items, updates[i].open_book)
                prompts += asked
                rows += [slot_of.get(i, BASE_SLOT)] * len(asked)
            replies = iter(self.engine.generate(prompts, rows, self.answer_tokens, self.answer_batch))
            for i in group:
                items = updates[i].items
                failed = i in outcome_of and outcome_of[i].failed
                texts = [("" if failed else next(replies)) for item in items for _ in item.questions]
                results[i] = Updated(graded(items, texts, self.judge), outcome_of.get(i))
            first += len(chunk)
        return [results[i] for i in range(len(updates))]
