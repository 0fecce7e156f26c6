"""A stored object (kind, ID, version, creation index, data) and how Docker's API shows one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ControlError


@dataclass(frozen=True, slots=True)
class StoredObject:
    kind: str
    id: str
    version: int
    created: int
    data: Any


def views(objects: list[StoredObject]) -> dict[str, dict[str, Any]]:
    """ID -> object data: the allocator's view of one kind."""
    return {o.id: o.data for o in objects}


def api_view(stored: StoredObject) -> dict[str, Any]:
    """A stored object as Docker's API shows it: with Version.Index, without raftswarm's "_" keys."""
    view = {key: value for key, value in stored.data.items() if not key.startswith("_")}
    view["Version"] = {"Index": stored.version}
    return view


def secret_data(stored: StoredObject) -> bytes:
    return stored.data["_Data"]


def config_data(stored: StoredObject) -> bytes:
    """A config's data, kept as a secret's is: out of its API view, which shows it as Spec.Data."""
    return stored.data["_Data"]


def resolve(objects: list[StoredObject], ref: str, kind: str, name_of: Callable[[StoredObject], str]) -> StoredObject:
    """Docker's lookup order: full ID, then exact name, then a unique ID prefix."""
    for o in objects:
        if o.id == ref:
            return o
    named = [o for o in objects if name_of(o) == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [o for o in objects if o.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise ControlError(f"{kind} {ref} is ambiguous ({len(prefixed)} matches found)", 400)
    raise ControlError(f"{kind} {ref} not found", 404)


def spec_name(o: StoredObject) -> str:
    return o.data["Spec"]["Name"]
