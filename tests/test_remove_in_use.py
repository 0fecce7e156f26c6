"""`secret rm` and `config rm` against a service create that commits between their read of the services and
their delete: the removal is refused in Docker's words and the object stays (before, a secret was deleted
from under the new service). An in-memory store whose proposals apply at once; no sockets."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from instant_store import instant_store

from raftswarm.errors import ControlError
from raftswarm.manager.configapi import ConfigApi
from raftswarm.manager.serviceapi import ServiceApi
from raftswarm.objects.kinds import CONFIGS, SECRETS, SERVICES
from raftswarm.store import update
from raftswarm.store.state import Action


def _file(name: str) -> dict[str, Any]:
    return {"Name": name, "UID": "0", "GID": "0", "Mode": 0o444}


@pytest.mark.parametrize("kind", ["secret", "config"])
async def test_a_removal_overtaken_by_a_service_that_references_the_object_is_refused(kind):
    store, _ = instant_store()
    services, configs = ServiceApi(store), ConfigApi(store)
    spec = {"Name": "shared", "Data": base64.b64encode(b"x").decode()}
    if kind == "secret":
        object_id, stored_kind, remove = await services.create_secret(spec), SECRETS, services.remove_secret
        reference = {"SecretID": object_id, "SecretName": "shared", "File": _file("shared")}
    else:
        object_id, stored_kind, remove = await configs.create_config(spec), CONFIGS, configs.remove_config
        reference = {"ConfigID": object_id, "ConfigName": "shared", "File": _file("shared")}
    list_services = store.list
    overtaken = []

    async def a_service_commits_meanwhile(listed_kind: str, *args: Any, **kwargs: Any) -> Any:
        listed = await list_services(listed_kind, *args, **kwargs)
        if listed_kind == SERVICES and not overtaken:
            overtaken.append("web")  # first: the create lists services itself
            await services.create_service(
                {"Name": "web", "TaskTemplate": {"ContainerSpec": {
                    "Image": "busybox", "Secrets" if kind == "secret" else "Configs": [reference]}}}
            )  # fmt: skip
        return listed

    store.list = a_service_commits_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ControlError, match=f"{kind} 'shared' is in use by the following service: web"):
        await remove("shared")
    assert overtaken and await store.get(stored_kind, object_id) is not None


async def test_a_service_the_control_loops_change_while_it_is_removed_is_still_removed():
    """`service rm` names no version: a write of the service between the removal's read and its delete (the
    updater recording a rolling update's progress) makes it read again, not fail (found by CI: the teardown of
    a test that rotated a config during an update)."""
    store, _ = instant_store()
    services = ServiceApi(store)
    service_id = await services.create_service({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})
    transact = store.transact
    written = []

    async def the_updater_writes_first(operations: Any, *args: Any, **kwargs: Any) -> Any:
        if not written and any(op.kind == SERVICES and op.action is Action.DELETE for op in operations):
            current = await store.get(SERVICES, service_id)
            written.append(current.version)
            await transact([update(SERVICES, current.id, {**current.data, "UpdateStatus": {"State": "updating"}})])
        return await transact(operations, *args, **kwargs)

    store.transact = the_updater_writes_first  # type: ignore[method-assign]
    await services.remove_service("web")
    assert written and await store.get(SERVICES, service_id) is None
