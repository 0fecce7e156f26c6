"""Configs in the store, and the operations `config ...` commands map to (Docker's `/configs` API).

A config is kept and delivered like a secret though it is not one: its data is stored under "_Data" (so it is
in the encrypted Raft log and out of the raw store reads), and the dispatcher sends it only to the nodes whose
tasks use it. Unlike a secret's, its data is shown: `GET /configs/{id}` answers with Spec.Data, as Docker's.

The data is immutable; only the labels change. A new version is a new config, rotated into a service with
`service update --config-rm old --config-add new`. A config a service references cannot be removed, and a
service cannot reference a config that does not exist (`config_checks`, called by `serviceapi`). Names are unique
through name index objects (`config-names/<name>`), created in the same transaction as the config.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ControlError
from ..objects.kinds import CONFIG_NAMES, CONFIGS, SERVICES, new_object_id
from ..objects.specs import referenced_configs, validate_config_spec
from ..objects.stored import StoredObject, config_data, resolve, spec_name
from ..objects.times import now_iso
from ..store import Conflict, Operation, ReplicatedStore, check, create, delete, update
from .allocator import ALLOCATION_RETRIES, allocation_lock


class ConfigApi:
    """Config operations over a manager's replicated store."""

    def __init__(self, store: ReplicatedStore) -> None:
        self.store = store

    async def configs(self) -> list[StoredObject]:
        return await self.store.list(CONFIGS)

    async def config(self, ref: str) -> StoredObject:
        return resolve(await self.configs(), ref, "config", spec_name)

    async def create_config(self, spec: Any) -> str:
        """Docker's `POST /configs/create`."""
        checked, data = validate_config_spec(spec)
        config_id = new_object_id()
        stamp = now_iso()
        obj = {"ID": config_id, "CreatedAt": stamp, "UpdatedAt": stamp, "Spec": checked, "_Data": data}
        try:
            await self.store.transact(
                [create(CONFIG_NAMES, checked["Name"], {"ID": config_id}), create(CONFIGS, config_id, obj)]
            )
        except Conflict:
            raise ControlError(f"config {checked['Name']} already exists", 409) from None
        return config_id

    async def update_config(self, ref: str, version: int, spec: Any) -> None:
        """Docker's `POST /configs/{id}/update?version=N`: only Labels may change; the data is immutable."""
        current = await self.config(ref)
        if current.version != version:
            raise ControlError(
                f"update out of sequence: config {current.id} is at version {current.version}, not {version}", 409
            )
        if not isinstance(spec, dict):
            raise ControlError("the config spec must be a JSON object")
        old = current.data["Spec"]
        renamed = spec.get("Name", old["Name"]) != old["Name"]
        if renamed or (spec.get("Data") and _decoded(spec["Data"]) != config_data(current)):
            raise ControlError("only updates to Labels are allowed", 400)
        labels = spec.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ControlError("Labels: must map strings to strings")
        data = {**current.data, "Spec": {**old, "Labels": labels}, "UpdatedAt": now_iso()}
        await self.store.transact([update(CONFIGS, current.id, data, expect=current.version)])

    async def remove_config(self, ref: str) -> None:
        """Docker's `DELETE /configs/{id}`: refused while a service references the config."""
        await remove_unreferenced(
            self.store, await self.config(ref), kind=CONFIGS, names=CONFIG_NAMES, noun="config",
            referenced=referenced_configs,
        )  # fmt: skip


async def remove_unreferenced(
    store: ReplicatedStore,
    current: StoredObject,
    *,
    kind: str,
    names: str,
    noun: str,
    referenced: Callable[[dict[str, Any]], Iterable[str]],
) -> None:
    """Delete a config or secret (`current`, with its name index in `names`) unless a service references it
    (`referenced(service spec)` gives the IDs a spec references), in Docker's words if one does."""
    for _ in range(ALLOCATION_RETRIES):
        # Every service create and update takes the allocation lock: holding it from before the services are
        # read, this delete fails if one committed meanwhile (it may reference the object), and reads again.
        # One that commits after this delete finds the object gone (`config_checks`, `_secret_checks`).
        lock = await allocation_lock(store)
        # By service ID, as SwarmKit's store index gives them (Docker's order: not the names').
        users = [
            s.data["Spec"]["Name"]
            for s in sorted(await store.list(SERVICES), key=lambda s: s.id)
            if current.id in referenced(s.data["Spec"])
        ]
        if users:
            plural = "s" if len(users) > 1 else ""
            raise ControlError(
                f"{noun} '{spec_name(current)}' is in use by the following service{plural}: {', '.join(users)}", 400
            )
        try:
            await store.transact(
                [lock, delete(kind, current.id, expect=current.version), delete(names, spec_name(current))]
            )
            return
        except Conflict:
            found = await store.get(kind, current.id)
            if found is None:
                raise ControlError(f"{noun} {current.id} not found", 404) from None
            current = found
    raise ControlError("too many concurrent changes to services; retry", 503)


def _decoded(text: Any) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except ValueError:
        return None


async def config_checks(store: ReplicatedStore, spec: dict[str, Any]) -> list[Operation]:
    """Version checks pinning every config a service spec references, so that a concurrent `config rm` loses.
    Refuses, with SwarmKit's words, references to configs that do not exist or go by another name."""
    operations = []
    missing = []
    for reference in (spec["TaskTemplate"].get("ContainerSpec") or {}).get("Configs") or []:
        found = await store.get(CONFIGS, reference["ConfigID"])
        if found is None or spec_name(found) != reference["ConfigName"]:
            missing.append(reference["ConfigName"])
        else:
            operations.append(check(CONFIGS, found.id, found.version))
    if missing:
        raise ControlError(f"config{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}", 400)
    return operations
