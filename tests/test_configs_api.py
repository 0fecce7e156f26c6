"""Docker's `/configs` API on one in-process manager (`EmbeddedNode`, on loopback), through raftswarm's own client
and the docker SDK for Python: create, list with Docker's filters, inspect with the data, labels-only update,
remove refused while a service uses the config, services that must name existing configs, and the size limit.
Services here ask for no replicas: no task runs."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.embedding import EmbeddedNode

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory) -> AsyncIterator[Path]:
    """The manager's API socket."""
    state_dir: Path = tmp_path_factory.mktemp("configs-api")
    async with EmbeddedNode(state_dir, listen_addr=f"127.0.0.1:{_free_port()}", heartbeat_period=0.5) as embedded:
        await embedded.init_swarm()
        yield state_dir / "api.sock"


@pytest_asyncio.fixture(loop_scope="module")
async def api(node: Path) -> AsyncIterator[ApiClient]:
    async with ApiClient(str(node)) as client:
        yield client
        for service in await client.service_list():
            await client.service_remove(service["ID"])
        for config in await client.config_list():
            await client.config_remove(config["ID"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def service(name: str, *configs: dict[str, Any]) -> dict[str, Any]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1000"], "Configs": list(configs)}},
        "Mode": {"Replicated": {"Replicas": 0}},
    }


def reference(config: dict[str, Any], target: str = "/etc/app.conf") -> dict[str, Any]:
    return {
        "ConfigID": config["ID"],
        "ConfigName": config["Spec"]["Name"],
        "File": {"Name": target, "UID": "0", "GID": "0", "Mode": 0o444},
    }


async def test_a_config_is_created_listed_and_inspected_with_its_data(api):
    created = await api.config_create({"Name": "app.conf", "Labels": {"env": "prod"}, "Data": b64(b"x=1\n")})
    shown = await api.config_inspect("app.conf")
    assert shown["ID"] == created["ID"] and len(created["ID"]) == 25
    assert shown["Spec"] == {"Name": "app.conf", "Labels": {"env": "prod"}, "Data": b64(b"x=1\n")}
    assert shown["CreatedAt"] == shown["UpdatedAt"] and shown["Version"]["Index"] > 0
    assert "_Data" not in shown
    assert await api.config_inspect(created["ID"][:6]) == shown  # by ID prefix, as Docker's lookup
    assert await api.config_list() == [shown]
    with pytest.raises(ApiError) as missing:
        await api.config_inspect("nope")
    assert missing.value.status == 404 and str(missing.value) == "config nope not found"


async def test_configs_are_filtered_by_id_and_name_prefix_and_label_as_dockerd_does(api):
    one = await api.config_create({"Name": "web.conf", "Labels": {"tier": "front"}, "Data": b64(b"1")})
    two = await api.config_create({"Name": "web-extra.conf", "Labels": {"tier": "back"}, "Data": b64(b"2")})
    await api.config_create({"Name": "db.conf", "Data": b64(b"3")})

    async def names(filters: dict[str, list[str]]) -> list[str]:
        return sorted(c["Spec"]["Name"] for c in await api.config_list(filters))

    assert await names({"name": ["web"]}) == ["web-extra.conf", "web.conf"]
    assert await names({"id": [one["ID"][:8], two["ID"]]}) == ["web-extra.conf", "web.conf"]
    assert await names({"label": ["tier"]}) == ["web-extra.conf", "web.conf"]
    assert await names({"label": ["tier=back"]}) == ["web-extra.conf"]
    with pytest.raises(ApiError) as refused:
        await api.config_list({"driver": ["x"]})
    assert refused.value.status == 400 and str(refused.value) == "invalid filter 'driver'"


async def test_a_second_config_of_one_name_is_refused_with_409(api):
    await api.config_create({"Name": "once", "Data": b64(b"1")})
    with pytest.raises(ApiError) as refused:
        await api.config_create({"Name": "once", "Data": b64(b"2")})
    assert refused.value.status == 409 and str(refused.value) == "config once already exists"


async def test_a_config_over_the_size_limit_gets_a_clear_error_and_nothing_is_created(api):
    for size in (0, 1000 * 1024, 1000 * 1024 + 1):
        with pytest.raises(ApiError) as refused:
            await api.config_create({"Name": f"big{size}", "Data": b64(b"x" * size)})
        assert refused.value.status == 400
        assert str(refused.value) == (
            f"Data: config data must be larger than 0 and less than 1024000 bytes (1000 KiB); got {size} bytes"
        )
    assert await api.config_list() == []
    fits = await api.config_create({"Name": "just-fits", "Data": b64(b"x" * (1000 * 1024 - 1))})
    assert base64.b64decode((await api.config_inspect(fits["ID"]))["Spec"]["Data"]) == b"x" * (1000 * 1024 - 1)


async def test_only_the_labels_of_a_config_change(api):
    created = await api.config_create({"Name": "immutable", "Labels": {"a": "1"}, "Data": b64(b"v1")})
    current = await api.config_inspect(created["ID"])
    await api.config_update(created["ID"], current["Version"]["Index"], {**current["Spec"], "Labels": {"b": "2"}})
    updated = await api.config_inspect(created["ID"])
    assert updated["Spec"] == {"Name": "immutable", "Labels": {"b": "2"}, "Data": b64(b"v1")}
    assert updated["UpdatedAt"] > updated["CreatedAt"]

    version = updated["Version"]["Index"]
    for change in ({"Data": b64(b"v2")}, {"Name": "renamed"}):
        with pytest.raises(ApiError) as refused:
            await api.config_update(created["ID"], version, {**updated["Spec"], **change})
        assert refused.value.status == 400 and str(refused.value) == "only updates to Labels are allowed"
    with pytest.raises(ApiError) as stale:
        await api.config_update(created["ID"], current["Version"]["Index"], updated["Spec"])
    assert stale.value.status == 409 and "out of sequence" in str(stale.value)
    assert await api.config_inspect(created["ID"]) == updated


async def test_a_service_can_only_reference_configs_that_exist_by_their_own_name(api):
    config = await api.config_inspect((await api.config_create({"Name": "real", "Data": b64(b"1")}))["ID"])
    ghost = {**reference(config, "/ghost"), "ConfigID": "0" * 25, "ConfigName": "ghost"}
    misnamed = {**reference(config, "/misnamed"), "ConfigName": "other"}
    with pytest.raises(ApiError) as refused:
        await api.service_create(service("web", ghost))
    assert refused.value.status == 400 and str(refused.value) == "config not found: ghost"
    with pytest.raises(ApiError) as refused:
        await api.service_create(service("web", ghost, misnamed))
    assert str(refused.value) == "configs not found: ghost, other"
    assert await api.service_list() == []

    await api.service_create(service("web", reference(config)))
    current = await api.service_inspect("web")
    with pytest.raises(ApiError) as refused:
        await api.service_update(current["ID"], current["Version"]["Index"], service("web", reference(config), ghost))
    assert str(refused.value) == "config not found: ghost"


async def test_a_config_in_use_is_refused_removal_until_no_service_references_it(api):
    config = await api.config_inspect((await api.config_create({"Name": "shared.conf", "Data": b64(b"1")}))["ID"])
    await api.service_create(service("web", reference(config)))
    with pytest.raises(ApiError) as refused:
        await api.config_remove("shared.conf")
    assert refused.value.status == 400
    assert str(refused.value) == "config 'shared.conf' is in use by the following service: web"
    await api.service_create(service("api", reference(config)))
    with pytest.raises(ApiError) as refused:
        await api.config_remove(config["ID"])
    by_id = [s["Spec"]["Name"] for s in sorted(await api.service_list(), key=lambda s: s["ID"])]  # as SwarmKit's index
    assert str(refused.value) == f"config 'shared.conf' is in use by the following services: {', '.join(by_id)}"

    # Rotation: the services move to a new config (`--config-rm shared.conf --config-add shared.conf.v2`).
    rotated = await api.config_inspect((await api.config_create({"Name": "shared.conf.v2", "Data": b64(b"2")}))["ID"])
    for name in ("web", "api"):
        current = await api.service_inspect(name)
        await api.service_update(current["ID"], current["Version"]["Index"], service(name, reference(rotated)))
    await api.config_remove("shared.conf")
    assert [c["Spec"]["Name"] for c in await api.config_list()] == ["shared.conf.v2"]


async def test_configs_are_not_written_or_read_around_their_endpoints(api, node):
    await api.config_create({"Name": "raw", "Data": b64(b"1")})
    with pytest.raises(ApiError) as refused:
        await api.request("GET", "/raftswarm/store/configs")
    assert refused.value.status == 400 and "use /configs" in str(refused.value)
    for kind in ("configs", "config-names"):
        with pytest.raises(ApiError) as refused:
            await api.request("POST", "/raftswarm/store/transact", {"operations": [["put", kind, "x", {"Spec": 5}, -1]]})
        assert refused.value.status == 400 and "use /configs" in str(refused.value)


async def test_the_docker_sdk_creates_configs_and_a_service_with_configs(api, node):
    docker_sdk = pytest.importorskip("docker")

    def drive() -> dict[str, Any]:
        client = docker_sdk.DockerClient(base_url=f"unix://{node}", version="1.50")
        try:
            config = client.configs.create(name="sdk.conf", data=b"from the sdk\n", labels={"by": "sdk"})
            assert [c.name for c in client.configs.list(filters={"name": "sdk"})] == ["sdk.conf"]
            assert client.configs.get("sdk.conf").attrs["Spec"]["Data"] == b64(b"from the sdk\n")
            created = client.services.create(
                "busybox",
                ["sleep", "1000"],
                name="sdkweb",
                configs=[docker_sdk.types.ConfigReference(config.id, "sdk.conf", "/etc/sdk/sdk.conf", mode=0o440)],
                mode=docker_sdk.types.ServiceMode("replicated", replicas=0),
            )
            with pytest.raises(docker_sdk.errors.APIError) as in_use:
                config.remove()
            assert "config 'sdk.conf' is in use by the following service: sdkweb" in str(in_use.value)
            with pytest.raises(docker_sdk.errors.APIError) as too_big:
                client.configs.create(name="too-big", data=b"x" * 1000 * 1024)
            assert "config data must be larger than 0 and less than 1024000 bytes" in str(too_big.value)
            return client.services.get(created.id).attrs
        finally:
            client.close()

    attrs = await asyncio.to_thread(drive)
    config = await api.config_inspect("sdk.conf")
    assert config["Spec"]["Labels"] == {"by": "sdk"}
    assert attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"] == [
        {"ConfigID": config["ID"], "ConfigName": "sdk.conf", "File": {"Name": "/etc/sdk/sdk.conf", "UID": "0", "GID": "0", "Mode": 0o440}}
    ]
