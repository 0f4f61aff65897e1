"""Tenants: lineages of their own over one base model, for the users or organisations sharing a seal.

The store at $SEAL_HOME is the default tenant, served as the model `seal`. Tenant NAME has a store of its own in
$SEAL_HOME/tenants/NAME (versions, jobs, uploads), is served as `seal:NAME`, and has its own API key, of which only
a SHA-256 digest is kept in its store: the key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from seal.errors import NotFound, SealError
from seal.store import Store

DEFAULT_MODEL = "seal"
# Lower-case words joined by single hyphens: safe as a folder name and in a model id, and never holding "__", which
# joins a tenant and a version in the name of a served adapter.
NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
KEY_DIGEST = "api_key_sha256"  # the state entry holding the digest of the tenant's key


def tenants_dir(home: Path) -> Path:
    return home / "tenants"


def tenant_home(home: Path, tenant: str | None) -> Path:
    """Where `tenant`'s store lives (None: the default tenant's, `home` itself)."""
    if tenant is None:
        return home
    if len(tenant) > 32 or not NAME.fullmatch(tenant):
        raise SealError(f"bad tenant name {tenant!r}: use up to 32 lower-case letters and digits, words joined by '-'")
    return tenants_dir(home) / tenant


def tenant_names(home: Path) -> list[str]:
    """Every tenant made with `seal tenant add`, by name."""
    folder = tenants_dir(home)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if NAME.fullmatch(p.name) and (p / "store.sqlite").exists())


def open_tenant(home: Path, tenant: str | None) -> Store:
    """`tenant`'s store (None: the default tenant's); a tenant that was never added is an error, not a new store."""
    path = tenant_home(home, tenant)
    if tenant is not None and not (path / "store.sqlite").exists():
        raise NotFound(f"no tenant {tenant!r}: add it with `seal tenant add {tenant}`")
    return Store(path)


def model_id(tenant: str | None) -> str:
    """The `model` a client names to be answered by `tenant`."""
    return DEFAULT_MODEL if tenant is None else f"{DEFAULT_MODEL}:{tenant}"


def tenant_of(model: str) -> str | None:
    """The tenant a `model` id names (None: the default tenant); NotFound for an id that names none."""
    if model == DEFAULT_MODEL:
        return None
    prefix, _, name = model.partition(":")
    if prefix != DEFAULT_MODEL or not NAME.fullmatch(name):
        raise NotFound(f"the model {model!r} does not exist")
    return name


def add_tenant(home: Path, name: str) -> str:
    """Make tenant `name` (its store) and return its new API key."""
    path = tenant_home(home, name)
    if (path / "store.sqlite").exists():
        raise SealError(f"the tenant {name!r} exists already (`seal tenant key {name}` gives it a new key)")
    return new_key(Store(path))


def new_key(store: Store) -> str:
    """A fresh API key for the tenant of `store`; its previous key stops working."""
    key = f"seal-{secrets.token_urlsafe(24)}"
    store.set_state(KEY_DIGEST, digest(key))
    return key


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_opens(store: Store, key_digest: str) -> bool:
    """Whether a key, given by its digest, is the key of the tenant of `store`."""
    kept = store.get_state(KEY_DIGEST)
    return kept is not None and hmac.compare_digest(kept, key_digest)
