"""Services, tasks and secrets in the store, and the operations `service ...` and `secret ...` commands map to.

Like `controlapi`, every operation is a read plus one transaction with version checks, so concurrent
requests never overwrite each other. Names are unique per kind through name index objects
(`service-names/<name>`, `secret-names/<name>`) created in the same transaction as the object, so two
managers creating `web` at once cannot both succeed.

Stored objects keep Docker's API shapes. Keys starting with "_" are raftswarm's bookkeeping (a secret's
data, a task's restart history) and never leave the manager through the API (`api_view`).
"""

from __future__ import annotations

import base64
import copy
import secrets as random_source
from typing import Any

from ..store import Conflict, Operation, ReplicatedStore, check, create, delete, update
from ..objects.stored import StoredObject, resolve, secret_data, spec_name, views, without_shown_defaults
from .allocator import ALLOCATION_RETRIES, addresses_in_use, allocate_endpoint, allocation_lock
from .configapi import config_checks, remove_unreferenced
from ..objects.kinds import NETWORKS, NODES, SECRETS, SECRET_NAMES, SERVICES, SERVICE_NAMES, TASKS, new_object_id
from ..objects.times import now_iso
from ..errors import ControlError
from ..objects.tasks import TaskState, is_terminal
from ..objects.specs import referenced_secrets, validate_secret_spec, validate_service_spec
from ..objects.jobs import GLOBAL_JOB, is_job, job_counts, job_mode, next_job_status, started_job_status
from .updater import IN_PROGRESS


MAX_OPERATIONS_PER_TRANSACTION = 500
"""Bulk changes (removing a service with thousands of tasks) go in several transactions of at most this
many operations, so no Raft entry comes near the transport's frame limit."""
REMOVE_RETRIES = 20
"""How often a service's removal reads it again after the control loops changed it under the removal; each of
their writes is one round apart, so this many in a row means something is wrong."""
MAX_SWARM_TASKS = 100_000
"""The most tasks all services together may ask for: the replicas of every replicated service, plus one per
node for every global service. Every manager keeps every task in memory, about 2 KiB each in the store
(measured), and up to TaskHistoryRetentionLimit ended tasks per slot besides; Docker's own published test of a
whole swarm, Swarm3k, ran about 100,000 containers. A create or scale past this is refused, where it would
otherwise leave the leader making tasks until the swarm falls over. (`specs.MAX_REPLICAS` bounds one service.)"""


_NAME_ADJECTIVES = ("admiring", "brave", "clever", "eager", "focused", "gifted", "jolly", "keen", "lucid", "nifty",
                    "quirky", "serene", "vibrant", "wizardly", "zealous")
_NAME_SCIENTISTS = ("lamport", "liskov", "lovelace", "hopper", "dijkstra", "ongaro", "ousterhout", "shamir",
                    "turing", "knuth", "hamilton", "noether", "babbage", "curie", "feynman")


def random_service_name() -> str:
    """A name like dockerd gives a service created without one: adjective_scientist."""
    return f"{random_source.choice(_NAME_ADJECTIVES)}_{random_source.choice(_NAME_SCIENTISTS)}"


def desired_tasks(spec: dict[str, Any], node_count: int) -> int:
    """How many tasks a service spec asks for: its replicas, or one per node for a global service."""
    mode = spec.get("Mode") or {}
    if "Global" in mode or GLOBAL_JOB in mode:
        return node_count
    if is_job(spec):
        return job_counts(spec)[1]  # a replicated job keeps its completed tasks: TotalCompletions of them
    replicas = (mode.get("Replicated") or {}).get("Replicas", 1)
    # A stored spec that no longer validates (see `screening`) must not make every create fail.
    return replicas if type(replicas) is int else 0


class ServiceApi:
    """Service, task and secret operations over a manager's replicated store."""

    def __init__(self, store: ReplicatedStore) -> None:
        self.store = store

    # -- secrets ---------------------------------------------------------------------------------------

    async def secrets(self) -> list[StoredObject]:
        return await self.store.list(SECRETS)

    async def secret(self, ref: str) -> StoredObject:
        return resolve(await self.secrets(), ref, "secret", spec_name)

    async def create_secret(self, spec: Any) -> str:
        """Docker's `POST /secrets/create`: the data is kept only in the (encrypted) Raft log."""
        checked, data = validate_secret_spec(spec)
        secret_id = new_object_id()
        stamp = now_iso()
        obj = {"ID": secret_id, "CreatedAt": stamp, "UpdatedAt": stamp, "Spec": checked, "_Data": data}
        try:
            await self.store.transact(
                [create(SECRET_NAMES, checked["Name"], {"ID": secret_id}), create(SECRETS, secret_id, obj)]
            )
        except Conflict:
            raise ControlError(f"secret {checked['Name']} already exists", 409) from None
        return secret_id

    async def update_secret(self, ref: str, version: int, spec: Any) -> None:
        """Docker's `POST /secrets/{id}/update`: only Labels may change; the data is immutable."""
        current = await self.secret(ref)
        _check_version("secret", current, version)
        if not isinstance(spec, dict):
            raise ControlError("the secret spec must be a JSON object")
        old = current.data["Spec"]
        renamed = spec.get("Name", old["Name"]) != old["Name"]
        if renamed or (spec.get("Data") and _decode(spec["Data"]) != secret_data(current)):
            raise ControlError("only updates to Labels are allowed", 400)
        labels = spec.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ControlError("Labels: must map strings to strings")
        data = {**current.data, "Spec": {**old, "Labels": labels}, "UpdatedAt": now_iso()}
        await self.store.transact([update(SECRETS, current.id, data, expect=current.version)])

    async def remove_secret(self, ref: str) -> None:
        """Docker's `DELETE /secrets/{id}`: refused while a service references the secret."""
        await remove_unreferenced(
            self.store, await self.secret(ref), kind=SECRETS, names=SECRET_NAMES, noun="secret",
            referenced=referenced_secrets,
        )  # fmt: skip

    async def _secret_checks(self, spec: dict[str, Any]) -> list[Operation]:
        """Version checks pinning every secret the spec references (so a concurrent `secret rm` loses)."""
        operations = []
        for reference in (spec["TaskTemplate"].get("ContainerSpec") or {}).get("Secrets") or []:
            found = await self.store.get(SECRETS, reference["SecretID"])
            if found is None:
                raise ControlError(f"secret not found: {reference['SecretID']} ({reference.get('SecretName', '')})", 404)
            if found.data["Spec"]["Name"] != reference["SecretName"]:
                raise ControlError(
                    f"secret name {reference['SecretName']!r} does not match secret {found.id}, "
                    f"which is named {found.data['Spec']['Name']!r}",
                    400,
                )
            operations.append(check(SECRETS, found.id, found.version))
        return operations

    # -- services --------------------------------------------------------------------------------------

    async def services(self) -> list[StoredObject]:
        return await self.store.list(SERVICES)

    async def service(self, ref: str) -> StoredObject:
        return resolve(await self.services(), ref, "service", spec_name)

    async def create_service(self, spec: Any) -> str:
        """Docker's `POST /services/create`; the orchestrator makes its tasks once this commits."""
        # As dockerd does for `service create` without --name, a service without a name gets a random one.
        checked = _as_stored(validate_service_spec(spec, default_name=random_service_name))
        service_id = new_object_id()
        stamp = now_iso()
        obj = {"ID": service_id, "CreatedAt": stamp, "UpdatedAt": stamp, "Spec": checked}
        if is_job(checked):
            obj["JobStatus"] = started_job_status(stamp)
        for _ in range(ALLOCATION_RETRIES):
            # again after a conflict: a secret or config may have gone
            operations = await self._secret_checks(checked) + await config_checks(self.store, checked)
            lock, obj["Endpoint"] = await self._allocated_endpoint(obj)
            await self._check_task_budget(checked, None)
            try:
                await self.store.transact(
                    [
                        *operations,
                        lock,
                        create(SERVICE_NAMES, checked["Name"], {"ID": service_id}),
                        create(SERVICES, service_id, obj),
                    ]
                )
                return service_id
            except Conflict:
                if await self.store.get(SERVICE_NAMES, checked["Name"]) is not None:
                    # SwarmKit's words (dockerd adds its gRPC status: `rpc error: code = AlreadyExists desc = ...`)
                    raise ControlError(
                        f"name conflicts with an existing object: service {checked['Name']} already exists", 409
                    ) from None
        raise ControlError("too many concurrent allocations; retry", 503)

    async def _check_task_budget(self, spec: dict[str, Any], current: StoredObject | None) -> None:
        """Refuse a spec (for a new service, or to replace `current`'s) that would have all services ask for
        more than MAX_SWARM_TASKS tasks, unless it asks for no more than before (a scale down always passes).
        Called after the allocation lock is read: every service create and update takes that lock, so two
        requests that fit alone cannot both commit."""
        nodes = len(await self.store.list(NODES))
        wanted = desired_tasks(spec, nodes)
        if current is not None and wanted <= desired_tasks(current.data["Spec"], nodes):
            return
        others = sum(
            desired_tasks(s.data["Spec"], nodes) for s in await self.services() if current is None or s.id != current.id
        )
        if others + wanted > MAX_SWARM_TASKS:
            raise ControlError(
                f"the swarm's services would ask for {others + wanted} tasks ({wanted} for this one), more than"
                f" the {MAX_SWARM_TASKS} one swarm runs; scale other services down or remove some first",
                400,
            )

    async def _allocated_endpoint(self, service: dict[str, Any]) -> tuple[Operation, dict[str, Any]]:
        """The allocation lock and the service's Endpoint (virtual IPs, published ports) decided under it."""
        lock = await allocation_lock(self.store)
        networks = views(await self.store.list(NETWORKS))
        services = views(await self.services())
        book = addresses_in_use(networks, services, views(await self.tasks()))
        return lock, allocate_endpoint(service, networks, services, book)

    async def update_service(self, ref: str, version: int, spec: Any, rollback: bool = False) -> StoredObject:
        """Docker's `POST /services/{id}/update?version=N[&rollback=previous]`. A stale version is refused,
        not merged. A change of the task template starts a rolling update (the updater carries it out);
        `rollback` returns to the previous spec, itself as a rolling update."""
        current = await self.service(ref)
        _check_version("service", current, version)
        old = current.data["Spec"]
        if rollback:
            if "PreviousSpec" not in current.data:
                raise ControlError(f"service {old['Name']} does not have a previous spec", 400)
            checked = copy.deepcopy(current.data["PreviousSpec"])
        else:
            checked = _as_stored(validate_service_spec(spec))
        if checked["Name"] != old["Name"]:
            raise ControlError("renaming services is not supported", 400)
        if set(checked["Mode"]) != set(old.get("Mode") or {"Replicated": {}}):
            raise ControlError("service mode change is not allowed", 400)
        data = {**current.data, "Spec": checked, "PreviousSpec": old, "UpdatedAt": now_iso()}
        # A rollback always starts one; an update starts one if the tasks must change. Any other change (a
        # scale) leaves a rolling update in progress going: SwarmKit's orchestrator would restart one for the
        # tasks still dirty, and here the updater acts only while the status says so (found by `chaos run`).
        # Otherwise it clears the status of the previous update.
        if is_job(checked):
            # A job is never rolled out: any update (a rollback too) starts its next iteration (SwarmKit).
            data["JobStatus"] = next_job_status(current.data, now_iso())
            data.pop("UpdateStatus", None)
        elif rollback:
            data["UpdateStatus"] = {"State": "rollback_started", "Message": "manually requested rollback", "StartedAt": now_iso()}
        elif checked.get("TaskTemplate") != old.get("TaskTemplate"):
            data["UpdateStatus"] = {"State": "updating", "Message": "update in progress", "StartedAt": now_iso()}
        elif (current.data.get("UpdateStatus") or {}).get("State") not in IN_PROGRESS:
            data.pop("UpdateStatus", None)
        for _ in range(ALLOCATION_RETRIES):
            operations = await self._secret_checks(checked) + await config_checks(self.store, checked)
            lock, data["Endpoint"] = await self._allocated_endpoint(data)
            await self._check_task_budget(checked, current)
            try:
                await self.store.transact([*operations, lock, update(SERVICES, current.id, data, expect=current.version)])
                return await self.store.get(SERVICES, current.id, linearizable=False) or current
            except Conflict:
                found = await self.store.get(SERVICES, current.id)
                if found is None or found.version != current.version:
                    raise ControlError(
                        f"update out of sequence: service {current.id} changed meanwhile; read it again", 409
                    ) from None
        raise ControlError("too many concurrent allocations; retry", 503)

    async def remove_service(self, ref: str) -> None:
        """Docker's `DELETE /services/{id}`: the service goes at once; its tasks are told to stop and are
        deleted by the reaper once they have. The request names no version: a service the control loops write
        meanwhile (a rolling update's status, its endpoint) is read again, not refused."""
        for _ in range(REMOVE_RETRIES):
            current = await self.service(ref)
            try:
                await self.store.transact(
                    [delete(SERVICES, current.id, expect=current.version), delete(SERVICE_NAMES, spec_name(current))]
                )
                break
            except Conflict:
                continue
        else:
            raise ControlError(f"service {ref} kept changing while it was being removed; retry", 503)
        await self._remove_tasks(current.id)

    async def _remove_tasks(self, service_id: str) -> None:
        while True:
            operations = []
            for task in await self.store.list(TASKS):
                data = task.data
                if data.get("ServiceID") == service_id and TaskState.of(data["DesiredState"]) < TaskState.REMOVE:
                    changed = {**data, "DesiredState": TaskState.REMOVE.api, "UpdatedAt": now_iso()}
                    if not data.get("NodeID") or is_terminal(data["Status"]["State"]):
                        operations.append(delete(TASKS, task.id, expect=task.version))
                    else:
                        operations.append(update(TASKS, task.id, changed, expect=task.version))
            if not operations:
                return
            try:
                for start in range(0, len(operations), MAX_OPERATIONS_PER_TRANSACTION):
                    await self.store.transact(operations[start : start + MAX_OPERATIONS_PER_TRANSACTION])
                return
            except Conflict:
                continue  # a task changed under us (an agent's report): read again

    # -- tasks -----------------------------------------------------------------------------------------

    async def tasks(self) -> list[StoredObject]:
        return await self.store.list(TASKS)

    async def task(self, task_id: str) -> StoredObject:
        return resolve(await self.tasks(), task_id, "task", lambda o: "")


def _decode(text: Any) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except ValueError:
        return None


def _as_stored(spec: dict[str, Any]) -> dict[str, Any]:
    """A checked spec as the store keeps it: with a mode, without what its API view always adds."""
    return without_shown_defaults(_with_mode(spec))


def _with_mode(spec: dict[str, Any]) -> dict[str, Any]:
    """Docker's default mode: replicated, one replica (a Go client sends `"Mode": {}` for it)."""
    mode = spec.get("Mode") or {}
    if is_job(spec):
        spec["Mode"] = job_mode(mode)
    elif "Global" not in mode:
        replicated = mode.get("Replicated") or {}
        spec["Mode"] = {"Replicated": {**replicated, "Replicas": replicated.get("Replicas", 1)}}
    return spec


def _check_version(kind: str, current: StoredObject, version: int) -> None:
    if current.version != version:
        raise ControlError(
            f"update out of sequence: {kind} {current.id} is at version {current.version}, not {version}", 409
        )
