"""Joining a swarm for real: standalone node processes, `swarm init`, token joins, and everything that must
be refused (rotated tokens, another swarm's token, a worker speaking Raft, a removed node coming back).

Each test starts its own node processes on 127.0.0.1 with ports of its own and ends them by PID.
"""

import asyncio
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.ca.certificates import cert_to_pem, certificate_issuer_key_id, client_ssl_context, subject_key_id
from raftswarm.ca.unlockkey import unlock_key_kek
from raftswarm.rpc.channel import RpcClient, RpcError
from raftswarm.localcluster.managers import free_port
from raftswarm.node.state_dir import StateDir
from raftswarm.raft.transport import PREAMBLE_RAFT

pytestmark = pytest.mark.slow

HEARTBEAT = 0.3

DOCKER_CLI_INIT_BODY = {
    "ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "", "DataPathAddr": "", "DataPathPort": 0, "ForceNewCluster": False,
    "Spec": {"Labels": None, "Orchestration": {}, "Raft": {"ElectionTick": 0, "HeartbeatTick": 0}, "Dispatcher": {},
             "CAConfig": {}, "TaskDefaults": {}, "EncryptionConfig": {"AutoLockManagers": False}},
    "AutoLockManagers": False, "Availability": "", "DefaultAddrPool": [], "SubnetSize": 24,
}  # fmt: skip
"""`docker swarm init` with no flags, as docker CLI 28 sends it."""


class Node:
    def __init__(self, base: Path, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.state_dir = base / name / "state"
        self.socket = base / name / "api.sock"
        self.log = base / name / "node.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "raftswarm.node", "--state-dir", str(self.state_dir), "--listen-addr", self.addr,
                 "--socket", str(self.socket), "--heartbeat-period", str(HEARTBEAT), "--tick-ms", "50",
                 # Docker Hub names go to a closed loopback port: a task's image pull never leaves the machine.
                 "--registry-alias", "docker.io=127.0.0.1:1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> ApiClient:
        return ApiClient(str(self.socket), 30.0)

    async def ready(self) -> None:
        for _ in range(200):
            if self.socket.exists():
                try:
                    async with self.client() as client:
                        await client.ping()
                    return
                except (OSError, ApiError):
                    pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")


@pytest.fixture
def nodes(tmp_path):
    started: list[Node] = []

    async def make(count: int) -> list[Node]:
        fresh = [Node(tmp_path, f"node{len(started) + i + 1}") for i in range(count)]
        for node in fresh:
            node.start()
            started.append(node)
        for node in fresh:
            await node.ready()
        return fresh

    yield make
    for node in started:
        node.stop()


async def init(node: Node) -> dict:
    async with node.client() as client:
        await client.request("POST", "/swarm/init", {"ListenAddr": node.addr, "AdvertiseAddr": node.addr})
        return (await client.request("GET", "/swarm"))["JoinTokens"]


async def join(node: Node, manager: Node, token: str) -> None:
    async with node.client() as client:
        await client.request("POST", "/swarm/join", {"RemoteAddrs": [manager.addr], "JoinToken": token, "ListenAddr": node.addr})


async def wait_for(predicate, what: str, within: float = 20.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def node_list(node: Node) -> list[dict]:
    async with node.client() as client:
        return await client.request("GET", "/nodes")


async def test_init_and_token_joins_give_managers_and_workers_their_roles(nodes):
    first, second, third = await nodes(3)
    tokens = await init(first)
    await join(second, first, tokens["Manager"])
    await join(third, first, tokens["Worker"])

    async def all_ready():
        listed = await node_list(first)
        return len(listed) == 3 and all(n["Status"]["State"] == "ready" for n in listed) and listed

    listed = await wait_for(all_ready, "three ready nodes")
    roles = sorted(n["Spec"]["Role"] for n in listed)
    assert roles == ["manager", "manager", "worker"]
    assert sum(1 for n in listed if n.get("ManagerStatus", {}).get("Leader")) == 1
    assert {n["ID"] for n in await node_list(second)} == {n["ID"] for n in listed}  # the other manager agrees
    async with third.client() as client:
        with pytest.raises(ApiError, match="Worker nodes can't be used"):
            await client.request("GET", "/nodes")
        info = await client.request("GET", "/info")
    assert info["Swarm"]["LocalNodeState"] == "active" and info["Swarm"]["ControlAvailable"] is False
    async with second.client() as client:
        with pytest.raises(ApiError, match="already part of a swarm"):
            await client.request("POST", "/swarm/join", {"RemoteAddrs": [first.addr], "JoinToken": tokens["Worker"]})
        # What `docker swarm init` (CLI 28) sends: the node's membership is refused first, as dockerd does, and
        # the "" the CLI sends for an Availability not given is no error.
        with pytest.raises(ApiError, match="already part of a swarm") as refused:
            await client.request("POST", "/swarm/init", DOCKER_CLI_INIT_BODY)
        assert refused.value.status == 503


async def test_every_node_shows_the_swarms_tls_info_so_docker_shows_it_ready(nodes):
    manager, worker = await nodes(2)
    tokens = await init(manager)
    await join(worker, manager, tokens["Worker"])
    await wait_for(lambda: _all_ready(manager, 2), "both nodes ready")
    async with manager.client() as client:
        cluster = (await client.request("GET", "/info"))["Swarm"]["Cluster"]
        swarm = await client.request("GET", "/swarm")
    assert cluster["TLSInfo"] == swarm["TLSInfo"] and all(swarm["TLSInfo"].values())
    root, _ = StateDir(worker.state_dir).load_certificates()
    assert swarm["TLSInfo"]["TrustRoot"].encode() == cert_to_pem(root)  # the root the nodes trust
    for listed in await node_list(manager):
        assert listed["Description"]["TLSInfo"] == cluster["TLSInfo"], listed["Description"]["Hostname"]


async def test_a_rotated_token_and_another_swarms_token_are_refused(nodes):
    first, other, joiner = await nodes(3)
    tokens = await init(first)
    foreign_tokens = await init(other)
    async with first.client() as client:
        swarm = await client.request("GET", "/swarm")
        await client.request(
            "POST", f"/swarm/update?version={swarm['Version']['Index']}&rotateWorkerToken=true&rotateManagerToken=false"
        )
        rotated = (await client.request("GET", "/swarm"))["JoinTokens"]["Worker"]
    assert rotated != tokens["Worker"]
    with pytest.raises(ApiError, match="rotated or is invalid"):
        await join(joiner, first, tokens["Worker"])
    with pytest.raises(ApiError, match="does not match"):
        await join(joiner, first, foreign_tokens["Worker"])  # the root CA it fetches is not the token's
    with pytest.raises(ApiError, match="invalid join token"):
        await join(joiner, first, "SWMTKN-1-nonsense")
    assert not StateDir(joiner.state_dir).has_swarm()  # nothing was changed by any refusal
    await join(joiner, first, rotated)
    assert StateDir(joiner.state_dir).has_swarm()


async def test_a_worker_certificate_cannot_speak_raft_or_manage_the_cluster(nodes):
    manager, worker = await nodes(2)
    tokens = await init(manager)
    await join(worker, manager, tokens["Worker"])
    root, certificate = StateDir(worker.state_dir).load_certificates()
    context = client_ssl_context(root, certificate)

    reader, writer = await asyncio.open_connection("127.0.0.1", manager.port, ssl=context, server_hostname="swarm-manager")
    writer.write(PREAMBLE_RAFT + b"\x00\x00\x00\x05hello")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed: a worker may not open a Raft stream
    writer.close()

    client = await RpcClient.connect("127.0.0.1", manager.port, context, server_hostname="swarm-manager")
    try:
        with pytest.raises(RpcError, match="may not call raft.join"):
            await client.call("raft.join", {"addr": worker.addr})
        assert (await client.call("dispatcher.heartbeat"))["period"] == HEARTBEAT  # what a worker may do
    finally:
        await client.close()
    async with worker.client() as api:
        with pytest.raises(ApiError, match="not a swarm manager"):
            await api.request("GET", "/raftswarm/store/nodes")


async def test_a_removed_node_is_refused_when_it_comes_back(nodes):
    manager, worker = await nodes(2)
    tokens = await init(manager)
    await join(worker, manager, tokens["Worker"])
    await wait_for(lambda: _state_of(manager, worker, "ready"), "the worker to be ready")
    worker_id = (await _find(manager, worker))["ID"]
    worker.stop()
    await wait_for(lambda: _state_of(manager, worker_id, "down"), "the worker to be down", within=30)
    async with manager.client() as client:
        await client.request("DELETE", f"/nodes/{worker_id}?force=false")
    root, certificate = StateDir(worker.state_dir).load_certificates()
    context = client_ssl_context(root, certificate)
    with pytest.raises((RpcError, ssl.SSLError, ConnectionError)):
        client = await RpcClient.connect("127.0.0.1", manager.port, context, server_hostname="swarm-manager")
        try:
            await client.call("dispatcher.heartbeat")
        finally:
            await client.close()
    assert [n for n in await node_list(manager) if n["ID"] == worker_id] == []
    async with manager.client() as client:
        assert (await client.raft_status())["listener_refused"].get("removed", 0) >= 1


async def _find(manager: Node, node: Node | str) -> dict | None:
    for listed in await node_list(manager):
        if isinstance(node, str):
            if listed["ID"] == node:
                return listed
        elif listed["Status"].get("Addr") == "127.0.0.1" and listed.get("ManagerStatus") is None:
            return listed
    return None


async def _state_of(manager: Node, node, state: str) -> bool:
    found = await _find(manager, node)
    return found is not None and found["Status"]["State"] == state


async def _roles(manager: Node) -> dict[str, str]:
    return {n["ID"]: n["Spec"]["Role"] for n in await node_list(manager)}


async def _set_role(via: Node, node_id: str, role: str) -> None:
    async with via.client() as client:
        node = await client.request("GET", f"/nodes/{node_id}")
        spec = {**node["Spec"], "Role": role}
        await client.request("POST", f"/nodes/{node_id}/update?version={node['Version']['Index']}", spec)


async def _raft_voters(manager: Node) -> int:
    async with manager.client() as client:
        return len((await client.raft_status())["voters"])


async def test_promote_and_demote_change_certificates_and_raft_membership(nodes):
    first, second = await nodes(2)
    tokens = await init(first)
    await join(second, first, tokens["Worker"])
    await wait_for(lambda: _all_ready(first, 2), "both nodes ready")
    second_id = next(i for i, role in (await _roles(first)).items() if role == "worker")

    await _set_role(first, second_id, "manager")

    async def promoted():
        try:
            async with second.client() as client:
                return len((await client.raft_status())["voters"]) == 2
        except ApiError:
            return False

    await wait_for(promoted, "the promoted node to serve as a Raft voter", within=30)
    assert StateDir(second.state_dir).load_certificates()[1].identity.role.value == "swarm-manager"
    assert await _raft_voters(first) == 2

    await _set_role(second, StateDir(first.state_dir).load_node_state().node_id, "worker")  # demote the other one

    async def demoted():
        try:
            async with first.client() as client:
                await client.raft_status()
            return False
        except ApiError as exc:
            return "not a swarm manager" in str(exc)

    await wait_for(demoted, "the demoted node to stop its manager role", within=30)
    assert StateDir(first.state_dir).load_certificates()[1].identity.role.value == "swarm-worker"
    assert not (first.state_dir / "raft").exists()  # a worker keeps no Raft log
    assert await _raft_voters(second) == 1
    with pytest.raises(ApiError, match="last manager"):
        await _set_role(second, StateDir(second.state_dir).load_node_state().node_id, "worker")


async def _all_ready(manager: Node, count: int) -> bool:
    listed = await node_list(manager)
    return len(listed) == count and all(n["Status"]["State"] == "ready" for n in listed)


async def test_certificates_are_renewed_before_they_expire(nodes):
    manager, worker = await nodes(2)
    async with manager.client() as client:
        spec = {"CAConfig": {"NodeCertExpiry": 60 * 10**9}}  # one minute, the shortest allowed
        await client.request("POST", "/swarm/init", {"ListenAddr": manager.addr, "AdvertiseAddr": manager.addr, "Spec": spec})
        tokens = (await client.request("GET", "/swarm"))["JoinTokens"]
    await join(worker, manager, tokens["Worker"])
    first = StateDir(worker.state_dir).load_certificates()[1].certificate
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert lifetime.total_seconds() <= 60 + 3600  # backdated by an hour, valid for a minute from issue

    async def renewed():
        current = StateDir(worker.state_dir).load_certificates()[1].certificate
        return current.serial_number != first.serial_number and current

    # Renewal is due between 50% and 80% of the lifetime: 30 to 48 seconds after issue.
    current = await wait_for(renewed, "the worker's certificate to be renewed", within=60)
    assert current.not_valid_after_utc > first.not_valid_after_utc
    root, certificate = StateDir(worker.state_dir).load_certificates()
    client = await RpcClient.connect(
        "127.0.0.1", manager.port, client_ssl_context(root, certificate), server_hostname="swarm-manager"
    )
    try:
        assert (await client.call("dispatcher.heartbeat"))["role"] == "worker"  # the new certificate is honoured
    finally:
        await client.close()
    await wait_for(lambda: _all_ready(manager, 2), "both nodes ready after the renewal")


async def test_an_autolocked_manager_restarts_locked_until_unlocked(nodes):
    (manager,) = await nodes(1)
    async with manager.client() as client:
        await client.request("POST", "/swarm/init", {"ListenAddr": manager.addr, "AdvertiseAddr": manager.addr, "AutoLockManagers": True})
        key = (await client.request("GET", "/swarm/unlockkey"))["UnlockKey"]
        await client.transact([["put", "kv", "before-restart", "kept", -1]])
    assert key.startswith("SWMKEY-1-")
    assert not StateDir(manager.state_dir).kek.exists()
    raw_key = unlock_key_kek(key)
    for path in manager.state_dir.rglob("*"):  # the unlock key never touches the disk
        if path.is_file():
            assert key.encode() not in path.read_bytes() and raw_key not in path.read_bytes(), path

    manager.stop()
    manager.start()
    await manager.ready()
    async with manager.client() as client:
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "locked"
        with pytest.raises(ApiError, match="needs to be unlocked"):
            await client.request("GET", "/nodes")
        wrong = "SWMKEY-1-" + "A" * 43
        with pytest.raises(ApiError, match="invalid unlock key"):
            await client.request("POST", "/swarm/unlock", {"UnlockKey": wrong})
        await client.request("POST", "/swarm/unlock", {"UnlockKey": key})
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "active"
        assert (await client.get("kv", "before-restart"))["data"] == "kept"

        swarm = await client.request("GET", "/swarm")
        spec = {**swarm["Spec"], "EncryptionConfig": {"AutoLockManagers": False}}
        await client.request("POST", f"/swarm/update?version={swarm['Version']['Index']}", spec)
    await wait_for(lambda: _exists(StateDir(manager.state_dir).kek), "the KEK to be back on disk")
    manager.stop()
    manager.start()
    await manager.ready()
    async with manager.client() as client:
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "active"
        assert (await client.get("kv", "before-restart"))["data"] == "kept"


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_root_ca_rotation_moves_every_node_to_the_new_root_without_downtime(nodes):
    manager, worker, newcomer = await nodes(3)
    old_tokens = await init(manager)
    await join(worker, manager, old_tokens["Worker"])
    await wait_for(lambda: _all_ready(manager, 2), "both nodes ready")
    async with manager.client() as client:
        swarm = await client.request("GET", "/swarm")
        old_root = x509.load_pem_x509_certificates(swarm["TLSInfo"]["TrustRoot"].encode())[0]
        spec = {**swarm["Spec"], "CAConfig": {**swarm["Spec"]["CAConfig"], "ForceRotate": 1}}
        await client.request("POST", f"/swarm/update?version={swarm['Version']['Index']}", spec)

    async def rotated():
        async with manager.client() as client:
            current = await client.request("GET", "/swarm")
        return not current["RootRotationInProgress"] and current["TLSInfo"]["TrustRoot"] != swarm["TLSInfo"]["TrustRoot"] and current

    current = await wait_for(rotated, "the rotation to finish", within=30)
    new_root = x509.load_pem_x509_certificates(current["TLSInfo"]["TrustRoot"].encode())[0]
    for listed in await node_list(manager):  # what the docker CLI shows as TLS STATUS "Ready"
        assert listed["Description"]["TLSInfo"] == current["TLSInfo"] != swarm["TLSInfo"]
    assert subject_key_id(new_root) != subject_key_id(old_root)
    for node in (manager, worker):
        leaf = StateDir(node.state_dir).load_certificates()[1].certificate
        assert certificate_issuer_key_id(leaf) == subject_key_id(new_root), node.name
    with pytest.raises(ApiError, match="does not match"):  # old tokens pin the old root
        await join(newcomer, manager, old_tokens["Worker"])
    await join(newcomer, manager, current["JoinTokens"]["Worker"])
    await wait_for(lambda: _all_ready(manager, 3), "all three nodes ready after the rotation")


async def test_joining_through_an_unreachable_manager_fails_cleanly(nodes):
    manager, joiner = await nodes(2)
    tokens = await init(manager)
    nobody = f"127.0.0.1:{free_port()}"
    async with joiner.client() as client:
        with pytest.raises(ApiError, match="cannot reach the manager"):
            await client.request("POST", "/swarm/join", {"RemoteAddrs": [nobody], "JoinToken": tokens["Worker"], "ListenAddr": joiner.addr})
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "inactive"
    assert not StateDir(joiner.state_dir).has_swarm()


async def test_leaving_the_swarm(nodes):
    manager, worker = await nodes(2)
    tokens = await init(manager)
    await join(worker, manager, tokens["Worker"])
    await wait_for(lambda: _all_ready(manager, 2), "both nodes ready")
    worker_id = next(i for i, role in (await _roles(manager)).items() if role == "worker")
    async with manager.client() as client:
        with pytest.raises(ApiError, match="participating as a manager"):
            await client.request("POST", "/swarm/leave?force=false")
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "active"
    async with worker.client() as client:
        await client.request("POST", "/swarm/leave?force=false")
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "inactive"
    # Certificates and all: nothing of the swarm is left on the worker; its images and volumes stay, as dockerd's do.
    assert sorted(p.name for p in worker.state_dir.iterdir()) == ["images", "volumes"]

    await wait_for(lambda: _state_of(manager, worker_id, "down"), "the departed worker to be down", within=30)


async def test_malformed_requests_get_a_clear_400_and_change_nothing(nodes):
    (node,) = await nodes(1)
    await init(node)
    # Its first heartbeat writes the node ready: that change is not one of the requests'.
    await wait_for(lambda: _all_ready(node, 1), "the node ready")
    bad = [
        ("POST", "/swarm/join", "not json"),
        ("POST", "/swarm/join", {"RemoteAddrs": "127.0.0.1:2377", "JoinToken": "x"}),
        ("POST", "/swarm/unlock", ["a", "list"]),
        ("POST", "/raftswarm/store/transact", {"operations": "nope"}),
        ("POST", "/raftswarm/store/transact", {"operations": [["put", "k", "a", 1, -1]], "timeout": "soon"}),
        ("POST", "/raftswarm/raft/members", {"action": "add-voter", "raft_id": True, "addr": "x:1"}),
        ("POST", "/raftswarm/raft/members", {"action": "add-voter", "raft_id": 7, "addr": "no-port"}),
        ("GET", "/nodes?filters=%7Bbroken", None),
        ("GET", "/raftswarm/store/k?consistency=eventually", None),
    ]
    async with node.client() as client:
        before = await client.request("GET", "/nodes")
        for method, path, body in bad:
            if isinstance(body, str):
                async with client._session.request(method, f"http://raftswarm{path}", data=body) as response:
                    assert response.status == 400, path
                    assert (await response.json())["message"]
                continue
            with pytest.raises(ApiError) as refused:
                await client.request(method, path, body)
            assert refused.value.status == 400, (path, body, str(refused.value))
            assert str(refused.value), path
        swarm = await client.request("GET", "/swarm")
        with pytest.raises(ApiError, match="NodeCertExpiry"):
            await client.request("POST", f"/swarm/update?version={swarm['Version']['Index']}", {"CAConfig": {"NodeCertExpiry": "1h"}})
        assert await client.request("GET", "/nodes") == before  # nothing changed, and the node still answers
        assert (await client.request("GET", "/swarm"))["Version"] == swarm["Version"]


async def test_a_second_daemon_on_a_live_nodes_state_dir_or_socket_is_refused_and_touches_nothing(nodes, tmp_path):
    (live,) = await nodes(1)
    await init(live)
    before = sorted(str(p.relative_to(live.state_dir)) for p in live.state_dir.rglob("*"))
    same_dir = [sys.executable, "-m", "raftswarm.node", "--state-dir", str(live.state_dir), "--listen-addr",
                f"127.0.0.1:{free_port()}", "--socket", str(tmp_path / "other.sock")]
    same_socket = [sys.executable, "-m", "raftswarm.node", "--state-dir", str(tmp_path / "other-state"),
                   "--listen-addr", f"127.0.0.1:{free_port()}", "--socket", str(live.socket)]
    for argv, words in ((same_dir, "in use by another raftswarm-node"), (same_socket, "another process serves an API")):
        refused = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and words in refused.stderr, refused.stderr
    # The live node still answers on its socket, and its state dir holds what it held.
    assert live.socket.exists()
    async with live.client() as client:
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "active"
    assert sorted(str(p.relative_to(live.state_dir)) for p in live.state_dir.rglob("*")) == before
    assert not (tmp_path / "other.sock").exists()


async def test_init_takes_the_spec_and_availability_given_and_join_its_availability(nodes):
    """`swarm init --dispatcher-heartbeat 2s --task-history-limit 3 --availability drain` and `swarm join
    --availability pause`: what is set is applied, as dockerd's init merges it (what the CLI leaves at zero
    keeps the default); options raftswarm cannot honour are refused and change nothing."""
    first, second = await nodes(2)
    unsupported = [
        ({"DataPathPort": 4790}, "VXLAN port 4789"),
        ({"DefaultAddrPool": ["10.20.0.0/16"]}, "default pool"),
        ({"SubnetSize": 26}, "/24"),
        ({"DataPathAddr": "127.0.0.1"}, "advertise address"),
        ({"ForceNewCluster": True}, "--force-new-cluster"),
        ({"Spec": {"Name": "other"}}, 'named "default"'),
    ]
    async with first.client() as client:
        for extra, message in unsupported:
            with pytest.raises(ApiError, match=message) as refused:
                await client.request("POST", "/swarm/init", {**DOCKER_CLI_INIT_BODY, "ListenAddr": first.addr, **extra})
            assert refused.value.status == 400
        assert (await client.request("GET", "/info"))["Swarm"]["LocalNodeState"] == "inactive"
        body = {
            **DOCKER_CLI_INIT_BODY, "ListenAddr": first.addr, "AdvertiseAddr": first.addr, "Availability": "drain",
            "Spec": {
                **DOCKER_CLI_INIT_BODY["Spec"],
                "Orchestration": {"TaskHistoryRetentionLimit": 3},
                "Dispatcher": {"HeartbeatPeriod": 2_000_000_000},
            },
        }
        await client.request("POST", "/swarm/init", body)
        swarm = await client.request("GET", "/swarm")
    spec = swarm["Spec"]
    assert spec["Orchestration"]["TaskHistoryRetentionLimit"] == 3
    assert spec["Dispatcher"]["HeartbeatPeriod"] == 2_000_000_000
    assert (spec["Raft"]["ElectionTick"], spec["Raft"]["HeartbeatTick"]) == (10, 1)  # the CLI's zeros: defaults
    async with second.client() as client:
        await client.request(
            "POST", "/swarm/join",
            {"RemoteAddrs": [first.addr], "JoinToken": swarm["JoinTokens"]["Worker"], "ListenAddr": second.addr,
             "Availability": "pause"},
        )
    await wait_for(lambda: _all_ready(first, 2), "two ready nodes")
    assert sorted(n["Spec"]["Availability"] for n in await node_list(first)) == ["drain", "pause"]
