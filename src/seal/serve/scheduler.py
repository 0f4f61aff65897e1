"""Continuous batching: every request in flight decodes in one batch, one token per step, on one thread.

A request joins at the next step (its prompt is read in one forward pass, which also gives its first token) and
leaves the batch when it ends or its client goes away, so a request never waits for others to finish. Rows are
left-padded: each row's positions count its own tokens only and the padding is masked, which is what lets rows of
different lengths share the keys and values of one cache. Each request samples with its own settings and its own
random generator (seeded by its `seed`, else at random), so no request touches global state. Each row carries the
name of the adapter that answers it (peft's mixed-adapter batches), so requests of several tenants and versions on
one shared base model decode together; adapters are put on and taken off that model under `model_lock`, between
steps. Requests on different model objects decode in separate batches.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import DynamicCache

from seal.errors import SealError
from seal.model import LM
from seal.routing import BASE

_END = object()


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random draw, as OpenAI samples afresh


class Generation:
    """One request's new tokens as the scheduler produces them: iterate to read them as they come, `cancel()` to
    give up the batch slot (a client that went away)."""

    def __init__(self, lm: LM, prompt_ids: list[int], sampling: Sampling, adapter: str | None = None):
        self.lm, self.prompt_ids, self.sampling, self.adapter = lm, prompt_ids, sampling, adapter
        self.generator = torch.Generator(device=lm.device)
        self.generator.manual_seed(sampling.seed if sampling.seed is not None else secrets.randbits(63))
        self.tokens: list[int] = []
        # "stop" (end of sequence), "length" (max_tokens reached), "cancelled" (given up) or "error"; None while it runs
        self.finish_reason: str | None = None
        self.submitted = time.perf_counter()
        self.cancelled = threading.Event()
        self._out: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self) -> Iterator[int]:
        while (item := self._out.get()) is not _END:
            if isinstance(item, BaseException):
                raise SealError(f"generation failed: {type(item).__name__}: {item}") from item
            yield item

    def wait(self) -> list[int]:
        """Every token, once the request has ended."""
        for _ in self:
            pass
        return self.tokens

    def cancel(self) -> None:
        self.cancelled.set()

    def _emit(self, token: int, stop_ids: set[int]) -> None:
        """Take one sampled token; `finish_reason` is set when the request has ended with it."""
        if token in stop_ids:
            self._end("stop")
            return
        self.tokens.append(token)
        self._out.put(token)
        if len(self.tokens) >= self.sampling.max_tokens:
            self._end("length")

    def _end(self, reason: str) -> None:
        self.finish_reason = reason
        self._out.put(_END)

    def _fail(self, error: BaseException) -> None:
        self.finish_reason = "error"
        self._out.put(error)


@dataclass
class _Batch:
    """The rows decoding together on one model: their key/value cache, attention mask and last tokens."""

    lm: LM
    rows: list[Generation] = field(default_factory=list)
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None  # [rows, cached positions], 0 on the left padding
    last: torch.Tensor | None = None  # [rows, 1]: each row's newest token, the next step's input


class Scheduler:
    """Owns every forward pass of serving: `submit` from any thread, a single decoding thread does the rest."""

    def __init__(self, max_batch: int = 16, on_step: Callable[[int], None] | None = None,
                 on_end: Callable[[str], None] | None = None):
        self.max_batch = max_batch
        self.on_step = on_step  # told each step's batch size (metrics)
        self.on_end = on_end  # told how each request ended: stop, length, cancelled or error (metrics)
        self._waiting: list[Generation] = []
        self._batches: dict[int, _Batch] = {}  # id(LM) -> its batch
        self._wake = threading.Condition()
        # Held by the decoding thread over each round of forward passes: whoever holds it may change the models'
        # adapters, and sees every batch between steps.
        self.model_lock = threading.Lock()
        self._stopped = False
        self.in_flight = 0  # rows decoding, as of the last step (read by other threads)
        self._thread = threading.Thread(target=self._run, name="seal-decode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, lm: LM, prompt_ids: list[int], sampling: Sampling, adapter: str | None = None) -> Generation:
        """Queue a request; `adapter` names the adapter of `lm` that answers it (None or `BASE`: the base model)."""
        if not prompt_ids:
            raise SealError("the prompt has no tokens")
        generation = Generation(lm, prompt_ids, sampling, adapter)
        with self._wake:
            self._waiting.append(generation)
            self._wake.notify()
        return generation

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self._waiting and not self._batches:
                    self._wake.wait()
                if self._stopped:
                    break
                for gone in [g for g in self._waiting if g.cancelled.is_set()]:
                    self._end(gone, "cancelled")
                self._waiting = [g for g in self._waiting if not g.cancelled.is_set()]
                room = self.max_batch - sum(len(batch.rows) for batch in self._batches.values())
                joining, self._waiting = self._waiting[:room], self._waiting[room:]
            by_model: dict[int, list[Generation]] = {}
            for generation in joining:
                by_model.setdefault(id(generation.lm), []).append(generation)
            with self.model_lock:
                for key, rows in by_model.items():
                    self._guarded(key, rows[0].lm, lambda batch, rows=rows: self._join(batch, rows), rows)
                for key, batch in list(self._batches.items()):
                    self._guarded(key, batch.lm, self._step, batch.rows)
                self.in_flight = sum(len(batch.rows) for batch in self._batches.values())
        for row in [*self._waiting, *(row for batch in self._batches.values() for row in batch.rows)]:
            row._fail(SealError("the server is shutting down"))

    def adapters_in_use(self) -> set[str]:
        """The adapters that requests waiting or decoding need; call it holding `model_lock`."""
        with self._wake:
            rows = [*self._waiting, *(row for batch in self._batches.values() for row in batch.rows)]
        return {row.adapter for row in rows if row.adapter is not None}

    def _guarded(self, key: int, lm: LM, work: Callable[[_Batch], None], rows: list[Generation]) -> None:
        """Run `work` on the model's batch; a failure ends that batch's requests (and these `rows`) with the error
        instead of killing the decoding thread."""
        batch = self._batches.setdefault(key, _Batch(lm))
        try:
            work(batch)
        except Exception as error:  # noqa: BLE001 - handed to each request's reader
            for row in {id(r): r for r in [*batch.rows, *rows] if r.finish_reason is None}.values():
                self._fail(row, error)
            batch.rows = []
        if not batch.rows:
            del self._batches[key]

    @torch.inference_mode()
    def _join(self, batch: _Batch, rows: list[Generation]) -> None:
        """Read the newcomers' prompts in one pass, sample their first tokens, and merge them into the batch."""
        lm = batch.lm
        loaded = set(lm.model.peft_config) if isinstance(lm.model, PeftModel) else set()
        for row in [r for r in rows if r.adapter not in (None, BASE) and r.adapter not in loaded]:
            # Its version was swapped out and its adapter taken off between reading what was served and joining.
            self._fail(row, SealError(f"the adapter {row.adapter} is no longer served; send the request again"))
        rows = [r for r in rows if r.adapter in (None, BASE) or r.adapter in loaded]
        if not rows:
            return
        width = max(len(row.prompt_ids) for row in rows)
        pad = lm.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=lm.device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows],
                            device=lm.device)
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       cache=DynamicCache(), use_cache=True, **_adapters(rows))
        tokens = _sample(out.logits[:, -1].float(), rows)
        layers = [(layer.keys, layer.values) for layer in out.cache.layers]
        if batch.rows:  # both sides left-padded to one width, then stacked
            mine = [(layer.keys, layer.values) for layer in batch.cache.layers]
            span = max(batch.mask.shape[1], width)
            layers = [(torch.cat([_pad_left(k0, span), _pad_left(k1, span)]),
                       torch.cat([_pad_left(v0, span), _pad_left(v1, span)]))
                      for (k0, v0), (k1, v1) in zip(mine, layers)]
            mask = torch.cat([_pad_left(batch.mask, span), _pad_left(mask, span)])
            last = torch.cat([batch.last, tokens[:, None]])
        else:
            last = tokens[:, None]
        batch.rows = batch.rows + rows
        batch.cache, batch.mask, batch.last = DynamicCache(ddp_cache_data=layers), mask, last
        self._emit(batch, tokens, rows)

    @torch.inference_mode()
    def _step(self, batch: _Batch) -> None:
        """One new token for every row of the batch."""
        lm = batch.lm
        mask = torch.cat([batch.mask, torch.ones_like(batch.last)], dim=1)
        position = mask.sum(-1, keepdim=True) - 1
        out = lm.model(input_ids=batch.last, attention_mask=mask, position_ids=position, cache=batch.cache,
                       use_cache=True, **_adapters(batch.rows))
        batch.cache, batch.mask = out.cache, mask
        tokens = _sample(out.logits[:, -1].float(), batch.rows)
        batch.last = tokens[:, None]
        if self.on_step is not None:
            self.on_step(len(batch.rows))
        self._emit(batch, tokens, batch.rows)

    def _emit(self, batch: _Batch, tokens: torch.Tensor, rows: list[Generation]) -> None:
        """Hand each of `rows` (the batch's last rows) its token, then drop the rows that ended or were given up,
        and the padding no remaining row needs."""
        tok = batch.lm.tokenizer
        stop_ids = {tok.eos_token_id, tok.pad_token_id}
        for row, token in zip(rows, tokens.tolist()):
            if row.cancelled.is_set():
                self._end(row, "cancelled")
            else:
                row._emit(token, stop_ids)
                if row.finish_reason is not None and self.on_end is not None:
                    self.on_end(row.finish_reason)
        keep = [i for i, row in enumerate(batch.rows) if row.finish_reason is None]
        if len(keep) == len(batch.rows):
            return
        batch.rows = [batch.rows[i] for i in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=batch.mask.device)
        mask = batch.mask[index]
        start = int((mask.sum(0) > 0).int().argmax())  # the first position some remaining row uses
        batch.mask, batch.last = mask[:, start:], batch.last[index]
        batch.cache = DynamicCache(ddp_cache_data=[(layer.keys[index, :, start:], layer.values[index, :, start:])
                                                   for layer in batch.cache.layers])

    def _end(self, row: Generation, reason: str) -> None:
        row._end(reason)
        if self.on_end is not None:
            self.on_end(reason)

    def _fail(self, row: Generation, error: BaseException) -> None:
        row._fail(error)
        if self.on_end is not None:
            self.on_end("error")


def _adapters(rows: list[Generation]) -> dict:
    """Each row's adapter, when the model carries adapters (a row without one is answered by the base model)."""
    if not isinstance(rows[0].lm.model, PeftModel):
        return {}
    return {"adapter_names": [row.adapter or BASE for row in rows]}


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the position dimension (the last but one of keys and values, the last of a mask) on the left."""
    dim = -2 if tensor.dim() == 4 else -1
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _sample(logits: torch.Tensor, rows: list[Generation]) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else from the row's own generator within its top-p nucleus."""
    tokens = logits.argmax(-1)
    for i, row in enumerate(rows):
        sampling = row.sampling
        if sampling.temperature <= 0:
            continue
        probs = torch.softmax(logits[i] / sampling.temperature, dim=-1)
        ordered, order = probs.sort(descending=True)
        ordered[(ordered.cumsum(0) - ordered) >= sampling.top_p] = 0  # the nucleus: the first always stays
        tokens[i] = order[torch.multinomial(ordered, 1, generator=row.generator)]
    return tokens
