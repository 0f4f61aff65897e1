"""One base model in memory for every tenant: each served version is only its adapters, put on that model under
names of their own, so one decoding batch mixes requests of several tenants and versions (each row with its own
adapter). A version of the modules lineage shares the modules of its ancestors: serving the next version adds one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from peft import PeftModel

from seal import model as lm_ops
from seal.errors import SealError
from seal.learn import version_adapters
from seal.model import LM
from seal.routing import BASE, Router
from seal.store import BASE_VERSION, Store
from seal.tenants import model_id

# An adapter no longer served is taken off only after this long: a request that read the old version just before a
# swap still finds its adapter when it joins the batch.
GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Served:
    """What answers a tenant's requests: the shared model, the version, and the adapter per prompt. Replaced whole
    on a swap, never changed in place."""

    lm: LM
    version: str
    model: str  # the id clients name it by: `seal` or `seal:TENANT`
    adapter: str = BASE  # the adapter answering every prompt (a version built by replay; BASE: the base model)
    router: Router | None = None  # or, for a version made of modules, the module per prompt

    def adapter_for(self, prompt: str) -> str:
        return self.router.pick(prompt) if self.router is not None else self.adapter

    @property
    def adapters(self) -> set[str]:
        names = set(self.router.modules) if self.router is not None else {self.adapter}
        return names - {BASE}


class SharedBase:
    """The base model and the adapters on it; changed only under `lock` (the scheduler's `model_lock`)."""

    def __init__(self, lm: LM, lock: threading.Lock):
        self.lm, self.lock = lm, lock
        self.retired: dict[str, float] = {}  # adapter -> when it stopped being served

    def serve(self, store: Store, tenant: str | None, version_id: str) -> Served:
        """`version_id` of `tenant`'s store, its adapters put on the shared model (those already on it reused)."""
        model = model_id(tenant)
        prefix = f"t-{tenant}__" if tenant is not None else "seal__"  # a tenant's adapter names never clash
        version = store.get(version_id) if version_id != BASE_VERSION or store.has_versions() else None
        if version is not None and version.status == "rolled_back":
            raise SealError(f"{version.id} was rolled back by its checks and has no weights to serve")
        if version is None or version.adapter_dir is None:
            return Served(self.lm, version_id, model)
        paths, router = version_adapters(store, self.lm, version, prefix)
        adapter = BASE if router is not None else next(iter(paths))
        served = Served(self.lm, version.id, model, adapter=adapter, router=router)
        with self.lock:
            on = set(self.lm.model.peft_config) if isinstance(self.lm.model, PeftModel) else set()
            lm_ops.attach_modules(self.lm, {name: path for name, path in paths.items() if name not in on})
            for name in paths:
                self.retired.pop(name, None)
        return served

    def retire(self, previous: Served, now_served: list[Served]) -> None:
        """`previous` is no longer served: its adapters that nothing served now uses are taken off later."""
        in_use = set().union(*(served.adapters for served in now_served))
        for name in previous.adapters - in_use:
            self.retired.setdefault(name, time.monotonic())

    def collect(self, in_use: set[str]) -> None:
        """Take off the adapters retired for longer than the grace period that no request needs; call it holding
        `lock`. The model keeps at least one adapter (peft's model cannot be left with none)."""
        if not isinstance(self.lm.model, PeftModel):
            return
        for name, since in list(self.retired.items()):
            if time.monotonic() - since < GRACE_SECONDS or name in in_use:
                continue
            if len(self.lm.model.peft_config) > 1:
                self.lm.model.delete_adapter(name)
                del self.retired[name]
