"""Bad input through the client API, sent as an attacker would (DESIGN.md, security property 6): every body,
field and query parameter of the wrong type or range gets a clear 4xx naming what is wrong and changes
nothing; the node keeps serving, and nothing stored can break the swarm or the clients that read it.

One in-process manager (`EmbeddedNode`, on loopback: no data plane) serves the module; its own node is
drained, so services stay pending and no task runs.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from raftswarm.api.server import SWARM_KINDS
from raftswarm.ca.certificates import NodeRole
from raftswarm.embedding import EmbeddedNode
from raftswarm.manager import serviceapi
from raftswarm.objects.kinds import NODES
from raftswarm.manager.controlapi import new_node_object
from raftswarm.objects.specs import MAX_REPLICAS
from raftswarm.store import create, delete

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECOND = 1_000_000_000
NODE_ADDRESS = "10.211.77.5"  # a node that joined from a private network, as `cluster up` nodes do as root


class Api:
    """Raw requests to the node's socket: any bytes, any status, nothing raised."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.session.request(
            method, f"http://raftswarm{path}", data=data, params=params, headers=headers
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def ok(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        status, answer = await self.send(method, path, body, params=params)
        assert status < 300, (method, path, status, answer)
        return answer

    async def refused(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> str:
        """The message of a 400 answer (anything else fails the test)."""
        status, answer = await self.send(method, path, body, raw=raw, params=params)
        assert status == 400, (method, path, status, answer)
        assert isinstance(answer, dict) and answer["message"], answer
        return answer["message"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory) -> AsyncIterator[tuple[EmbeddedNode, Api]]:
    state_dir: Path = tmp_path_factory.mktemp("security-api")
    async with EmbeddedNode(state_dir, listen_addr=f"127.0.0.1:{_free_port()}", heartbeat_period=0.5) as embedded:
        node_id = await embedded.init_swarm()
        connector = aiohttp.UnixConnector(path=str(state_dir / "api.sock"))
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            api = Api(session)
            await drain(api, node_id)
            yield embedded, api


async def drain(api: Api, node_id: str) -> None:
    for _ in range(20):  # the node's status changes as it comes up: read again after a version conflict
        own = await api.ok("GET", f"/nodes/{node_id}")
        params = {"version": str(own["Version"]["Index"])}
        status, answer = await api.send(
            "POST", f"/nodes/{node_id}/update", {**own["Spec"], "Availability": "drain"}, params=params
        )
        if status == 200:
            return
        assert status == 409, answer
    raise AssertionError(f"could not drain node {node_id}")


def service(name: str, replicas: int = 0) -> dict[str, Any]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1000"]}},
        "Mode": {"Replicated": {"Replicas": replicas}},
    }


def put(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `spec` with the field at dotted `path` (list items as Ports.0) set to `value`; the objects and
    lists on the way are made if missing."""
    spec = json.loads(json.dumps(spec))
    *parents, last = path.split(".")
    here: Any = spec
    for key, following in zip(parents, [*parents[1:], last]):
        here = here[int(key)] if isinstance(here, list) else here.setdefault(key, [] if following.isdigit() else {})
    if isinstance(here, list) and int(last) == len(here):
        here.append(value)
    else:
        here[int(last) if isinstance(here, list) else last] = value
    return spec


async def names(api: Api) -> list[str]:
    return sorted(s["Spec"]["Name"] for s in await api.ok("GET", "/services"))


# -- sizes no swarm can hold --------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [2**63 - 1, 2**64 - 1, MAX_REPLICAS + 1])
async def test_a_replica_count_no_swarm_can_hold_is_refused_and_nothing_is_stored(node, replicas):
    _, api = node
    services, tasks = await api.ok("GET", "/services"), await api.ok("GET", "/tasks")
    message = await api.refused("POST", "/services/create", service("huge", replicas))
    assert message.startswith("Mode.Replicated.Replicas:") and f"from 0 to {MAX_REPLICAS}" in message
    assert await api.ok("GET", "/services") == services
    assert await api.ok("GET", "/tasks") == tasks


async def test_scaling_an_existing_service_past_the_limit_is_refused_and_keeps_its_spec(node):
    _, api = node
    created = await api.ok("POST", "/services/create", service("scaled", 0))
    current = await api.ok("GET", f"/services/{created['ID']}")
    message = await api.refused(
        "POST",
        f"/services/{created['ID']}/update",
        put(current["Spec"], "Mode.replicated.replicas", 2**63 - 1),  # Go's decoding matches keys in any case
        params={"version": str(current["Version"]["Index"])},
    )
    assert f"from 0 to {MAX_REPLICAS}" in message
    assert await api.ok("GET", f"/services/{created['ID']}") == current
    await api.ok("DELETE", f"/services/{created['ID']}")


async def test_services_together_may_not_ask_for_more_tasks_than_the_swarm_holds(node, monkeypatch):
    _, api = node
    monkeypatch.setattr(serviceapi, "MAX_SWARM_TASKS", 5)  # the real cap is 100,000 tasks; the rule is the same
    first = await api.ok("POST", "/services/create", service("budget-a", 3))
    message = await api.refused("POST", "/services/create", service("budget-b", 3))
    assert "would ask for 6 tasks" in message and "more than the 5" in message
    assert await names(api) == ["budget-a"]
    current = await api.ok("GET", f"/services/{first['ID']}")
    version = {"version": str(current["Version"]["Index"])}
    assert "would ask for 6" in await api.refused(
        "POST", f"/services/{first['ID']}/update", put(current["Spec"], "Mode.Replicated.Replicas", 6), params=version
    )
    await api.ok(
        "POST", f"/services/{first['ID']}/update", put(current["Spec"], "Mode.Replicated.Replicas", 1), version
    )
    await api.ok("POST", "/services/create", {**service("budget-global"), "Mode": {"Global": {}}})  # one per node
    await api.ok("POST", "/services/create", service("budget-b", 3))
    for name in ("budget-a", "budget-b", "budget-global"):
        await api.ok("DELETE", f"/services/{name}")


# -- wrong types, anywhere Docker's clients read them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (put(service("logs"), "TaskTemplate.LogDriver", 5), "TaskTemplate.LogDriver"),
        (put(service("logs"), "TaskTemplate.LogDriver.Name", 5), "TaskTemplate.LogDriver.Name"),
        (
            put(service("logs"), "TaskTemplate.LogDriver.Options", {"max-size": 10}),
            "TaskTemplate.LogDriver.Options.max-size",
        ),
        (put(service("logs"), "TaskTemplate.logdriver", 5), "TaskTemplate.LogDriver"),  # Go matches keys in any case
        # Go folds the long s (U+017F) to s, so every Docker client would read this key as Options.
        (put(service("logs"), "TaskTemplate.LogDriver.Option\u017f", {"a": 1}), "TaskTemplate.LogDriver.Options.a"),
    ],
)
async def test_a_log_driver_of_the_wrong_type_is_refused_and_service_ls_keeps_working(node, body, field):
    _, api = node
    message = await api.refused("POST", "/services/create", body)
    assert message.split(":")[0] == field, message
    assert "logs" not in await names(api)


BAD_FIELDS = [
    ("Name", 5),
    ("Labels", {"tier": 1}),
    ("TaskTemplate.Runtime", 5),
    ("TaskTemplate.ForceUpdate", -1),
    ("TaskTemplate.ForceUpdate", "1"),
    ("TaskTemplate.ContainerSpec.Hostname", 5),
    ("TaskTemplate.ContainerSpec.Dir", ["/"]),
    ("TaskTemplate.ContainerSpec.User", 0),
    ("TaskTemplate.ContainerSpec.Groups", "wheel"),
    ("TaskTemplate.ContainerSpec.Groups", [0]),
    ("TaskTemplate.ContainerSpec.Init", "yes"),
    ("TaskTemplate.ContainerSpec.TTY", 1),
    ("TaskTemplate.ContainerSpec.OpenStdin", "true"),
    ("TaskTemplate.ContainerSpec.ReadOnly", 0),
    ("TaskTemplate.ContainerSpec.StopSignal", 9),
    ("TaskTemplate.ContainerSpec.StopGracePeriod", "10s"),
    ("TaskTemplate.ContainerSpec.Healthcheck", ["CMD", "true"]),
    ("TaskTemplate.ContainerSpec.Healthcheck.Test", "curl localhost"),
    ("TaskTemplate.ContainerSpec.Healthcheck.Interval", "30s"),
    ("TaskTemplate.ContainerSpec.Healthcheck.Interval", 5),  # 5 ns: SwarmKit wants 0 or at least 1 ms
    ("TaskTemplate.ContainerSpec.Healthcheck.Timeout", -SECOND),
    ("TaskTemplate.ContainerSpec.Healthcheck.StartPeriod", 1.5),
    ("TaskTemplate.ContainerSpec.Healthcheck.StartInterval", True),
    ("TaskTemplate.ContainerSpec.Healthcheck.Retries", -1),
    ("TaskTemplate.ContainerSpec.DNSConfig", "8.8.8.8"),
    ("TaskTemplate.ContainerSpec.DNSConfig.Nameservers", [8]),
    ("TaskTemplate.ContainerSpec.DNSConfig.Search", "example.com"),
    ("TaskTemplate.ContainerSpec.Hosts", {"db": "10.0.0.2"}),
    ("TaskTemplate.ContainerSpec.CapabilityAdd", "CAP_NET_ADMIN"),
    ("TaskTemplate.ContainerSpec.CapabilityDrop", [True]),
    ("TaskTemplate.ContainerSpec.Sysctls", {"net.core.somaxconn": 1024}),
    ("TaskTemplate.ContainerSpec.Ulimits", {"nofile": 1024}),
    ("TaskTemplate.ContainerSpec.Ulimits.0", {"Name": "nofile", "Soft": "1024"}),
    ("TaskTemplate.ContainerSpec.Ulimits.0", {"Name": 7}),
    ("TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges", "true"),
    ("TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode", "off"),
    ("TaskTemplate.ContainerSpec.Privileges.Seccomp.Profile", "not base64!"),  # Go's []byte is base64
    ("TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Disable", "yes"),
    ("TaskTemplate.ContainerSpec.Isolation", "vm"),
    ("TaskTemplate.ContainerSpec.OomScoreAdj", 5000),
    ("TaskTemplate.ContainerSpec.Mounts.0", {"Target": "/data", "Type": "nfs"}),
    ("TaskTemplate.ContainerSpec.Mounts.0", {"Target": "/data", "ReadOnly": "yes"}),
    ("TaskTemplate.ContainerSpec.Mounts.0", {"Target": "/t", "TmpfsOptions": {"SizeBytes": "1g"}}),
    ("TaskTemplate.ContainerSpec.Configs.0", {"ConfigID": 5}),
    ("TaskTemplate.Resources.Limits.Pids", "100"),
    ("TaskTemplate.Resources.Limits.Pids", -1),
    ("TaskTemplate.Resources.Reservations.GenericResources.0", {"DiscreteResourceSpec": {"Kind": "gpu", "Value": "2"}}),
    ("TaskTemplate.Resources.MemorySwappiness", 101),
    ("TaskTemplate.Placement.Platforms", {"OS": "linux"}),
    ("TaskTemplate.Placement.Platforms.0", {"OS": 5}),
    ("TaskTemplate.Placement.MaxReplicas", "2"),
    ("TaskTemplate.Networks.0", {"Target": "x", "DriverOpts": {"mtu": 1400}}),
    ("TaskTemplate.RestartPolicy.MaxAttempts", 1.0),
    ("Mode.Replicated.Replicas", "3"),
    ("Mode.Global", []),
    ("UpdateConfig.Parallelism", "1"),
    ("UpdateConfig.MaxFailureRatio", "0.5"),
    ("RollbackConfig.Order", 1),
    ("EndpointSpec.Ports", [{"Name": 5, "TargetPort": 80}]),
    ("EndpointSpec.Ports", [{"TargetPort": "80"}]),
    ("EndpointSpec.Ports", [{"TargetPort": 80, "PublishedPort": 65536}]),
    ("EndpointSpec.Mode", ["vip"]),
]


@pytest.mark.parametrize(("path", "value"), BAD_FIELDS)
async def test_a_field_of_the_wrong_type_or_range_is_refused_naming_it(node, path, value):
    _, api = node
    message = await api.refused("POST", "/services/create", put(service("typed"), path, value))
    named = message.split(":")[0].replace("[", ".").replace("]", "")
    assert named.startswith(path) or path.startswith(named), message
    assert "typed" not in await names(api)


async def test_docker_fields_of_the_right_types_are_accepted_and_shown_back(node):
    _, api = node
    spec = service("typed-ok")
    spec["TaskTemplate"].update(
        {
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}},
            "Runtime": "container",
            "ForceUpdate": 2**64 - 1,  # a uint64 counter
            "Placement": {"Platforms": [{"OS": "linux", "Architecture": "amd64"}]},
        }
    )
    spec["TaskTemplate"]["ContainerSpec"].update(
        {
            "Init": True,
            "TTY": False,
            "Groups": ["wheel"],
            "StopSignal": "SIGINT",
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": SECOND, "Retries": 3},
            "DNSConfig": {"Nameservers": ["10.0.0.2"], "Search": ["example.com"], "Options": ["ndots:2"]},
            "Sysctls": {"net.core.somaxconn": "1024"},
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
            "CapabilityAdd": ["CAP_NET_ADMIN"],
            "Privileges": {"NoNewPrivileges": True, "Seccomp": {"Mode": "default"}},
            "FutureField": {"kept": [1, "as", None]},  # unknown: kept as given, for newer clients
        }
    )
    created = await api.ok("POST", "/services/create", spec)
    shown = await api.ok("GET", f"/services/{created['ID']}")
    assert shown["Spec"]["TaskTemplate"]["LogDriver"] == spec["TaskTemplate"]["LogDriver"]
    assert shown["Spec"]["TaskTemplate"]["ContainerSpec"]["FutureField"] == {"kept": [1, "as", None]}
    assert "typed-ok" in await names(api)
    await api.ok("DELETE", f"/services/{created['ID']}")


# -- malformed JSON of any shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "deeper than 64 levels"),
        (b'{"Name": "x", "FutureField": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"}", "deeper than 64 levels"),
        (b'{"Name": "x", "FutureField": NaN}', "NaN is not a JSON number"),
        (b'{"Name": "x", "FutureField": 1e400}', "too large"),
        (b'{"Name": "x", "FutureField": 123456789012345678901234567890}', "does not fit in 64 bits"),
        (b'{"Name": "x", "FutureField": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"Name": "\xff"}', "not valid JSON"),
        (b'{"Name": ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'"web"', "must be a JSON object"),
    ],
)
async def test_malformed_json_of_any_shape_is_a_400_and_the_node_keeps_serving(node, raw, words):
    _, api = node
    for path in ("/services/create", "/networks/create", "/secrets/create", "/swarm/join"):
        assert words in await api.refused("POST", path, raw=raw), path
    assert await api.ok("GET", "/_ping") == "OK"


@pytest.mark.parametrize(
    "filters",
    ["{broken", "[" * 100 + "]" * 100, '{"name": [1]}', '{"name": "web"}', '{"name": {"web": "yes"}}', "NaN"],
)
@pytest.mark.parametrize("path", ["/services", "/tasks", "/nodes", "/networks", "/secrets"])
async def test_a_malformed_filters_parameter_is_a_400(node, path, filters):
    _, api = node
    assert "filters" in await api.refused("GET", path, params={"filters": filters})


@pytest.mark.parametrize("version", ["", "1e3", "-1", " 5", "5 ", "+5", "\u0665", "99999999999999999999"])
async def test_an_update_version_must_be_an_integer(node, version):
    _, api = node
    created = await api.ok("POST", "/services/create", service("versioned"))
    try:
        spec = (await api.ok("GET", f"/services/{created['ID']}"))["Spec"]
        params = {"version": version} if version else {}
        assert "version" in await api.refused("POST", f"/services/{created['ID']}/update", spec, params=params)
        current = await api.ok("GET", f"/services/{created['ID']}")
        assert "rollback" in await api.refused(
            "POST",
            f"/services/{created['ID']}/update",
            spec,
            params={"version": str(current["Version"]["Index"]), "rollback": "yes"},
        )
    finally:
        await api.ok("DELETE", f"/services/{created['ID']}")


async def test_a_handler_that_fails_unexpectedly_answers_500_logs_why_and_the_node_keeps_serving(
    node, monkeypatch, caplog
):
    _, api = node

    async def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(serviceapi.ServiceApi, "services", broken)
    with caplog.at_level(logging.ERROR, logger="raftswarm.api.server"):
        status, answer = await api.send("GET", "/services")
    assert status == 500 and answer == {"message": "internal error (RuntimeError); the node logged the details"}
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    assert isinstance(await api.ok("GET", "/services"), list)


# -- the other bodies of the API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Role": "admin"}, "Role"),
        ({"Availability": "paused"}, "Availability"),
        ({"Availability": ["drain"]}, "Availability"),
        ({"Labels": {"zone": 1}}, "Labels.zone"),
        ({"Labels": ["zone=a"]}, "Labels"),
        ({"Name": 5}, "Name"),
        ({"role": 5}, "Role"),
    ],
)
async def test_a_bad_node_spec_is_refused_and_the_node_is_unchanged(node, body, field):
    _, api = node
    (own,) = await api.ok("GET", "/nodes")
    message = await api.refused(
        "POST", f"/nodes/{own['ID']}/update", {**own["Spec"], **body}, params={"version": str(own["Version"]["Index"])}
    )
    assert message.split(":")[0] == field, message
    assert (await api.ok("GET", f"/nodes/{own['ID']}"))["Spec"] == own["Spec"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Orchestration": {"TaskHistoryRetentionLimit": "5"}}, "Orchestration.TaskHistoryRetentionLimit"),
        ({"Orchestration": 5}, "Orchestration"),
        ({"Dispatcher": {"HeartbeatPeriod": "5s"}}, "Dispatcher.HeartbeatPeriod"),
        ({"CAConfig": {"NodeCertExpiry": 1.5}}, "CAConfig.NodeCertExpiry"),
        ({"CAConfig": {"ExternalCAs": [{"Protocol": "acme"}]}}, "CAConfig.ExternalCAs[0].Protocol"),
        ({"CAConfig": {"ForceRotate": -1}}, "CAConfig.ForceRotate"),
        ({"Raft": {"SnapshotInterval": "10000"}}, "Raft.SnapshotInterval"),
        ({"Raft": {"ElectionTick": 2**32}}, "Raft.ElectionTick"),
        ({"EncryptionConfig": {"AutoLockManagers": "true"}}, "EncryptionConfig.AutoLockManagers"),
        ({"TaskDefaults": {"LogDriver": {"Name": 5}}}, "TaskDefaults.LogDriver.Name"),
        ({"Labels": {"env": 1}}, "Labels.env"),
        ({"Name": []}, "Name"),
    ],
)
async def test_a_bad_swarm_spec_is_refused_and_the_swarm_is_unchanged(node, body, field):
    _, api = node
    swarm = await api.ok("GET", "/swarm")
    message = await api.refused(
        "POST", "/swarm/update", {**swarm["Spec"], **body}, params={"version": str(swarm["Version"]["Index"])}
    )
    assert message.split(":")[0] == field, message
    assert await api.ok("GET", "/swarm") == swarm


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/swarm/init", {"ListenAddr": 2377}, "ListenAddr"),
        ("/swarm/init", {"AdvertiseAddr": ["127.0.0.1"]}, "AdvertiseAddr"),
        ("/swarm/init", {"ForceNewCluster": "yes"}, "ForceNewCluster"),
        ("/swarm/init", {"AutoLockManagers": 1}, "AutoLockManagers"),
        ("/swarm/init", {"DataPathPort": 70000}, "DataPathPort"),
        ("/swarm/init", {"DefaultAddrPool": "10.0.0.0/8"}, "DefaultAddrPool"),
        ("/swarm/init", {"SubnetSize": 30}, "SubnetSize"),
        ("/swarm/init", {"Spec": {"CAConfig": {"NodeCertExpiry": "90d"}}}, "Spec.CAConfig.NodeCertExpiry"),
        ("/swarm/join", {"RemoteAddrs": "127.0.0.1:2377", "JoinToken": "x"}, "RemoteAddrs"),
        ("/swarm/join", {"RemoteAddrs": [2377], "JoinToken": "x"}, "RemoteAddrs[0]"),
        ("/swarm/join", {"RemoteAddrs": ["127.0.0.1:2377"], "JoinToken": 5}, "JoinToken"),
        ("/swarm/join", {"RemoteAddrs": ["127.0.0.1:2377"]}, "JoinToken"),
        ("/swarm/join", {"RemoteAddrs": ["127.0.0.1:2377"], "JoinToken": "x", "Availability": "on"}, "Availability"),
    ],
)
async def test_bad_swarm_init_and_join_bodies_are_refused_by_type_before_anything_else(node, standalone, path, body, field):
    # A node already in a swarm refuses any init as dockerd does ("already part of a swarm"), so inits go to one
    # that is not, which must stay out of any swarm.
    api = standalone if path == "/swarm/init" else node[1]
    message = await api.refused("POST", path, body)
    assert message.split(":")[0] == field, message
    if path == "/swarm/init":
        assert (await api.ok("GET", "/info"))["Swarm"]["LocalNodeState"] == "inactive"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def standalone(tmp_path_factory) -> AsyncIterator[Api]:
    """A node daemon that is in no swarm, as dockerd before `swarm init`."""
    state_dir: Path = tmp_path_factory.mktemp("security-api-standalone")
    async with EmbeddedNode(state_dir, listen_addr=f"127.0.0.1:{_free_port()}"):
        connector = aiohttp.UnixConnector(path=str(state_dir / "api.sock"))
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield Api(session)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Name": "s", "Data": "aGk=", "Labels": {"a": 1}}, "Labels.a"),
        ({"Name": "s", "Data": "aGk=", "labels": 5}, "Labels"),
        ({"Name": "s", "Data": 5}, "Data"),
        ({"Name": 5, "Data": "aGk="}, "Name"),
        ({"Name": "s", "Data": "aGk=", "Templating": {"Name": "golang", "Options": {"a": 1}}}, "Templating.Options.a"),
    ],
)
async def test_a_bad_secret_is_refused_and_secret_ls_keeps_working(node, body, field):
    _, api = node
    message = await api.refused("POST", "/secrets/create", body)
    assert message.split(":")[0] == field, message
    assert await api.ok("GET", "/secrets") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Name": 5}, "Name"),
        ({"Name": "n", "Driver": 5}, "Driver"),
        ({"Name": "n", "Options": {"mtu": 1400}}, "Options.mtu"),
        ({"Name": "n", "Labels": {"a": 1}}, "Labels.a"),
        ({"Name": "n", "Attachable": "yes"}, "Attachable"),
        ({"Name": "n", "Internal": 1}, "Internal"),
        ({"Name": "n", "Ingress": "false"}, "Ingress"),
        ({"Name": "n", "IPAM": {"Config": [{"Subnet": 10}]}}, "IPAM.Config[0].Subnet"),
        (
            {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": ["10.9.0.1"]}]}},
            "IPAM.Config[0].Gateway",
        ),
        ({"Name": "n", "ipam": {"config": [{"subnet": "10.9.0.0/33"}]}}, "IPAM.Config[0].Subnet"),
    ],
)
async def test_a_bad_network_body_is_refused_naming_the_field(node, body, field):
    _, api = node
    message = await api.refused("POST", "/networks/create", body)
    assert message.split(":")[0] == field, message
    assert [n["Name"] for n in await api.ok("GET", "/networks")] == ["ingress"]


# -- overlay subnets ------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def node_on_a_private_network(node) -> AsyncIterator[str]:
    """A worker that joined from NODE_ADDRESS, as recorded in the store (written in-process: the API refuses it)."""
    embedded, _ = node
    node_id = "private0node0address000005"
    worker = new_node_object(node_id, NodeRole.WORKER, f"{NODE_ADDRESS}:2377", "private-worker")
    await embedded.store.transact([create(NODES, node_id, worker)])
    yield node_id
    await embedded.store.transact([delete(NODES, node_id)])


@pytest.mark.parametrize("subnet", ["10.211.77.0/24", "10.211.0.0/16", "10.0.0.0/8", "10.211.77.0/29"])
async def test_an_overlay_subnet_holding_a_nodes_address_is_refused(node, node_on_a_private_network, subnet):
    _, api = node
    message = await api.refused(
        "POST", "/networks/create", {"Name": "shadow", "IPAM": {"Config": [{"Subnet": subnet}]}}
    )
    assert message.startswith("IPAM.Config[0].Subnet:")
    assert f"overlaps the network of node private-worker ({NODE_ADDRESS})" in message
    assert [n["Name"] for n in await api.ok("GET", "/networks")] == ["ingress"]


async def test_an_overlay_subnet_beside_the_nodes_addresses_is_accepted(node, node_on_a_private_network):
    _, api = node
    created = await api.ok(
        "POST", "/networks/create", {"Name": "beside", "IPAM": {"Config": [{"Subnet": "10.211.78.0/24"}]}}
    )
    await api.ok("DELETE", f"/networks/{created['Id']}")


@pytest.mark.parametrize(
    ("subnet", "words"),
    [
        ("127.0.0.0/8", "is loopback"),
        ("239.1.0.0/16", "is multicast"),
        ("0.0.0.0/8", '"this network"'),
        ("169.254.0.0/16", "is link-local"),
        ("8.8.8.0/24", "not a private range"),
        ("10.9.0.1/24", "it should be 10.9.0.0/24"),
        ("10.9.0.0/30", "from /8 to /29"),
        ("10.9.0.0", "give the prefix length"),
        ("fd00::/64", "IPv4 only"),
        ("ten.nine/24", "invalid CIDR"),
    ],
)
async def test_a_nonsense_overlay_subnet_is_refused(node, subnet, words):
    _, api = node
    message = await api.refused(
        "POST", "/networks/create", {"Name": "nonsense", "IPAM": {"Config": [{"Subnet": subnet}]}}
    )
    assert message.startswith("IPAM.Config[0].Subnet:") and words in message, message


async def test_an_overlay_subnet_overlapping_another_overlay_is_refused(node):
    _, api = node
    first = await api.ok("POST", "/networks/create", {"Name": "first", "IPAM": {"Config": [{"Subnet": "10.9.0.0/16"}]}})
    status, answer = await api.send(
        "POST", "/networks/create", {"Name": "second", "IPAM": {"Config": [{"Subnet": "10.9.4.0/24"}]}}
    )
    assert status == 409 and "overlaps with network first" in answer["message"]
    await api.ok("DELETE", f"/networks/{first['Id']}")


# -- the raw store --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SWARM_KINDS))
@pytest.mark.parametrize("action", ["create", "put", "update", "delete"])
async def test_raw_store_writes_to_the_swarms_own_kinds_are_refused(node, kind, action):
    embedded, api = node
    before = {o.id: (o.version, o.data) for o in embedded.store.state.list(kind)}
    object_id = next(iter(before), "injected")
    message = await api.refused(
        "POST",
        "/raftswarm/store/transact",
        {"operations": [["put", "chaos-registers", "x", 1, -1], [action, kind, object_id, {"Spec": 5}, -1]]},
    )
    assert message.startswith(f"kind '{kind}' belongs to the swarm; use /")
    assert {o.id: (o.version, o.data) for o in embedded.store.state.list(kind)} == before
    assert embedded.store.state.get("chaos-registers", "x") is None  # all or nothing


async def test_raw_store_still_serves_other_kinds_checks_and_reads_but_no_keys_or_secret_data(node):
    _, api = node
    await api.ok(
        "POST", "/raftswarm/store/transact", {"operations": [["put", "chaos-registers", "y", {"value": 1}, -1]]}
    )
    assert (await api.ok("GET", "/raftswarm/store/chaos-registers/y"))["data"] == {"value": 1}
    (own,) = await api.ok("GET", "/raftswarm/store/nodes")
    await api.ok(
        "POST", "/raftswarm/store/transact", {"operations": [[None, "nodes", own["id"], None, own["version"]]]}
    )
    assert "holds secret data" in await api.refused("GET", "/raftswarm/store/secrets")
    assert "holds secret data" in await api.refused("GET", "/raftswarm/store/secrets/any")
    assert "root CA key" in await api.refused("GET", "/raftswarm/store/cluster/default")


# -- fuzzing the service create body --------------------------------------------------------------------------

KNOWN_PATHS = sorted(
    {path for path, _ in BAD_FIELDS}
    | {
        "Mode.Replicated.Replicas",
        "Mode",
        "TaskTemplate",
        "TaskTemplate.ContainerSpec",
        "TaskTemplate.ContainerSpec.Image",
        "TaskTemplate.ContainerSpec.Env",
        "TaskTemplate.ContainerSpec.Secrets",
        "TaskTemplate.ContainerSpec.Mounts",
        "TaskTemplate.Networks",
        "TaskTemplate.Placement.Constraints",
        "TaskTemplate.Placement.Preferences",
        "TaskTemplate.Resources",
        "EndpointSpec",
        "EndpointSpec.Ports.0.PublishedPort",
        "UpdateConfig",
        "Networks",
        "Labels",
        "FutureField",
    }
)
FIELD_NAMES = sorted({part for path in KNOWN_PATHS for part in path.split(".") if not part.isdigit()})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["busybox", "node.role==worker", "tcp", "host", "vip", "dnsrr", "ingress", "10.0.0.0/24"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.lists(st.tuples(st.sampled_from(KNOWN_PATHS), json_values), min_size=1, max_size=4).map(
        lambda changes: _changed(service("fuzzed"), changes)
    ),
)


def _changed(spec: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    for path, value in changes:
        try:
            spec = put(spec, path, value)
        except (AttributeError, IndexError, TypeError, ValueError):  # a change on the way replaced by a scalar
            continue
    return spec


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
# Found by this fuzz: the registry credentials' path through the body must not assume its shape.
@example(body={"TaskTemplate": True})
@example(body={"TaskTemplate": {"ContainerSpec": []}})
async def test_any_service_create_body_gets_a_4xx_or_a_201_never_a_5xx(node, monkeypatch, body):
    _, api = node
    monkeypatch.setattr(serviceapi, "MAX_SWARM_TASKS", 10)  # accepted bodies stay cheap; the rule is the same
    raw = json.dumps(body, allow_nan=True).encode()  # NaN and Infinity too: Python's json reads them
    status, answer = await api.send("POST", "/services/create", raw=raw)
    assert status == 201 or 400 <= status < 500, (status, answer, body)
    event(f"answered {status}")  # --hypothesis-show-statistics: how many bodies were accepted
    if status == 201:
        await api.ok("DELETE", f"/services/{answer['ID']}")
    assert await api.ok("GET", "/_ping") == "OK"
