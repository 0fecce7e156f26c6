"""`raftswarm cluster up/down`: a real swarm of node processes on this machine, formed through the nodes' API
with the swarm's own tokens, and removed without a trace -- also after an `up` that failed or was killed.

Every test names its cluster `t<pid><letter>` (so its namespaces and interfaces carry that prefix) and keeps
it under tmp_path; a fixture takes down whatever a test made, even when the test fails. The netns variants
run where this process may make network namespaces (as root; CI is root), the loopback ones everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftswarm.localcluster.processes import process_start_time
from raftswarm.localcluster.hostnet import ClusterError, netns_unavailable_reason
from raftswarm.localcluster.swarm import ClusterExists, SwarmCluster, interface_tag

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from raftswarm.cli.main import main; main()"]


class Clusters:
    """Names for a test's clusters and the directory they live in; `teardown` removes whatever is left."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.names: list[str] = []

    def name(self) -> str:
        name = f"t{os.getpid() % 100_000:05d}{string.ascii_lowercase[len(self.names)]}"
        self.names.append(name)
        return name

    def teardown(self) -> None:
        for name in self.names:
            if (self.base / name).exists():
                SwarmCluster.load(name, self.base).down()


@pytest.fixture
def clusters(tmp_path):
    made = Clusters(tmp_path / "clusters")
    try:
        yield made
    finally:
        made.teardown()


@pytest.fixture(scope="session")
def netns_reason():
    return netns_unavailable_reason()


@pytest.fixture(params=["loopback", "netns"])
def network(request, netns_reason):
    if request.param == "netns" and netns_reason is not None:
        pytest.skip(f"network namespaces are not available: {netns_reason}")
    return request.param


# -- what "nothing left" means ---------------------------------------------------------------------------


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (a cluster's directory is in every node's command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and process_start_time(int(entry.name)) is not None:
                found.append(int(entry.name))
    return found


def ip_output(*args: str) -> str:
    """What `ip ARGS` prints ("" where iproute2 is not installed: then nothing could have made namespaces)."""
    if shutil.which("ip") is None:
        return ""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def assert_nothing_left(name: str, directory: Path, pids: list[tuple[int, int]] = ()) -> None:
    """No node process, namespace, interface, mount or state directory of cluster `name` remains."""
    for pid, start_time in pids:
        assert process_start_time(pid) != start_time, f"node process {pid} still runs"
    assert processes_mentioning(str(directory)) == []
    assert f"rsw-{name}-" not in ip_output("netns", "list")
    interfaces = ip_output("-o", "link")
    tag = interface_tag(name)
    assert f"rswb-{tag}" not in interfaces and f"-{tag}:" not in interfaces and f"-{tag}@" not in interfaces
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"rsw-{name}-" not in mounts and str(directory) not in mounts
    if shutil.which("nft"):  # the registry's DNAT table
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"rswreg-{tag}" not in tables
    assert not directory.exists()


def recorded_processes(cluster: SwarmCluster) -> list[tuple[int, int]]:
    return [(n.process.pid, n.process.start_time) for n in cluster.nodes if n.process is not None]


def cli(base: Path, config_home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The `raftswarm` command in a process of its own, with this test's clusters dir and CLI config."""
    env = {**os.environ, "RAFTSWARM_CLUSTERS_DIR": str(base), "XDG_CONFIG_HOME": str(config_home)}
    for variable in ("RAFTSWARM_HOST", "DOCKER_HOST"):
        env.pop(variable, None)
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=180, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


# -- up and down -----------------------------------------------------------------------------------------


async def test_up_forms_a_swarm_of_ready_nodes_and_down_leaves_nothing(clusters, network):
    name = clusters.name()
    started = time.monotonic()
    cluster = await SwarmCluster.up(name, managers=3, workers=2, base_dir=clusters.base, network=network)
    print(f"cluster up ({network}, 3 managers + 2 workers): {time.monotonic() - started:.2f}s")
    assert cluster.network == network

    async with cluster.client(cluster.managers[0]) as api:
        nodes = await api.node_list()
    assert len(nodes) == 5
    assert {n["ID"] for n in nodes} == {node.node_id for node in cluster.nodes}
    assert all(n["Status"]["State"] == "ready" for n in nodes)
    managers = [n for n in nodes if n.get("ManagerStatus")]
    assert len(managers) == 3
    assert sum(n["ManagerStatus"]["Leader"] for n in managers) == 1
    # Every node has its own address, and the swarm knows it by that address.
    assert len({n["Status"]["Addr"] for n in nodes}) == 5
    assert {n["ManagerStatus"]["Addr"] for n in managers} == {m.addr for m in cluster.managers}
    if network == "netns":
        assert all(node.ip.startswith(cluster.subnet.rsplit(".", 2)[0]) for node in cluster.nodes)
        namespaces = ip_output("netns", "list")
        assert all(node.namespace in namespaces for node in cluster.nodes)
        assert sorted(n["Description"]["Hostname"] for n in nodes) == sorted(f"{name}-{x.name}" for x in cluster.nodes)
    else:
        assert all(node.ip.startswith("127.0.0.") and node.namespace is None for node in cluster.nodes)

    # Another process finds the cluster from its record: `cluster env` names the first manager's socket.
    env = cli(clusters.base, clusters.base.parent / "config", "cluster", "env", "--name", name).stdout
    assert f"export DOCKER_HOST=unix://{cluster.managers[0].socket}\n" in env
    assert f"export RAFTSWARM_HOST=unix://{cluster.managers[0].socket}\n" in env

    pids = recorded_processes(cluster)
    assert len(pids) == 5
    SwarmCluster.load(name, clusters.base).down()
    assert_nothing_left(name, cluster.directory, pids)


async def test_down_with_keep_state_ends_everything_but_keeps_each_nodes_state_and_log(clusters, network):
    name = clusters.name()
    cluster = await SwarmCluster.up(name, managers=1, workers=1, base_dir=clusters.base, network=network)
    pids = recorded_processes(cluster)
    cluster.down(keep_state=True)
    assert all(process_start_time(pid) != start for pid, start in pids)
    assert processes_mentioning(str(cluster.directory)) == []
    for node in cluster.nodes:
        assert (node.state_dir / "certificates").is_dir()
        assert node.log_path.read_text()
    assert SwarmCluster.load(name, clusters.base).state == "down"
    SwarmCluster.load(name, clusters.base).down()
    assert_nothing_left(name, cluster.directory, pids)


async def test_up_refuses_a_name_that_exists_and_leaves_that_cluster_alone(clusters):
    name = clusters.name()
    cluster = await SwarmCluster.up(name, managers=1, workers=0, base_dir=clusters.base, network="loopback")
    with pytest.raises(ClusterExists, match=f"a cluster named '{name}' already exists"):
        await SwarmCluster.up(name, managers=1, workers=0, base_dir=clusters.base, network="loopback")
    assert cluster.managers[0].running()
    async with cluster.client(cluster.managers[0]) as api:
        assert len(await api.node_list()) == 1
    cluster.down()


async def test_without_root_auto_falls_back_to_loopback_and_says_why(clusters, monkeypatch):
    monkeypatch.setattr("raftswarm.localcluster.hostnet.os.geteuid", lambda: 1000)
    with pytest.raises(ClusterError, match="cannot give nodes network namespaces: not running as root"):
        await SwarmCluster.up(clusters.name(), managers=1, workers=0, base_dir=clusters.base, network="netns")
    cluster = await SwarmCluster.up(clusters.name(), managers=1, workers=0, base_dir=clusters.base)
    assert cluster.network == "loopback" and cluster.managers[0].ip.startswith("127.0.0.")
    assert "not running as root" in cluster.note
    cluster.down()


# -- failures halfway ------------------------------------------------------------------------------------


async def test_a_failed_up_removes_everything_it_made_and_says_which_node_failed(clusters, network):
    name = clusters.name()
    directory = clusters.base / name
    with pytest.raises(ClusterError, match=r"worker2 exited: (.|\n)*--tick-ms"):
        await SwarmCluster.up(
            name,
            managers=3,
            workers=2,
            base_dir=clusters.base,
            network=network,
            node_args={"worker2": ["--tick-ms", "not-a-number"]},
        )
    assert_nothing_left(name, directory)


async def test_down_removes_what_a_failed_up_left_behind(clusters, network):
    name = clusters.name()
    directory = clusters.base / name
    with pytest.raises(ClusterError, match="worker2 exited"):
        await SwarmCluster.up(
            name,
            managers=3,
            workers=2,
            base_dir=clusters.base,
            network=network,
            node_args={"worker2": ["--tick-ms", "not-a-number"]},
            keep_on_failure=True,
        )
    left = SwarmCluster.load(name, clusters.base)
    assert left.state == "failed"
    assert sum(node.running() for node in left.nodes) == 4  # everyone but worker2 was started and still runs
    if network == "netns":
        # The registry, the nodes' execution-root tmpfs, the bridge, a namespace and a veth per node, and the
        # registry's DNAT table.
        assert len(left.resources) == 1 + 1 + 1 + 2 * 5 + 1
    pids = recorded_processes(left)
    left.down()
    assert_nothing_left(name, directory, pids)


def test_down_removes_everything_after_up_was_killed_halfway(clusters, netns_reason):
    """`cluster up` dies by SIGKILL after starting some nodes: its record is all `cluster down` has."""
    name = clusters.name()
    directory = clusters.base / name
    config = clusters.base.parent / "config"
    env = {**os.environ, "RAFTSWARM_CLUSTERS_DIR": str(clusters.base), "XDG_CONFIG_HOME": str(config)}
    up = subprocess.Popen(
        [*CLI, "cluster", "up", "--name", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        record: dict = {}
        while time.monotonic() < deadline and up.poll() is None:
            try:
                record = json.loads((directory / "cluster.json").read_text())
            except (OSError, ValueError):
                record = {}
            if any(node.get("pid") for node in record.get("nodes", [])):
                break
            time.sleep(0.01)
        assert up.poll() is None, "cluster up finished before it could be killed halfway"
        up.send_signal(signal.SIGKILL)
    finally:
        up.kill()
        up.wait()
    left = SwarmCluster.load(name, clusters.base)
    assert left.state == "creating"
    assert processes_mentioning(str(directory)), "the killed `up` had started node processes"
    if netns_reason is None:
        assert left.resources
    cli(clusters.base, config, "cluster", "down", "--name", name)
    assert_nothing_left(name, directory)


# -- the CLI, as a user runs it --------------------------------------------------------------------------


def test_cli_up_makes_the_cluster_the_current_target_and_down_forgets_it(clusters):
    name = clusters.name()
    config = clusters.base.parent / "config"
    started = time.monotonic()
    up = cli(clusters.base, config, "cluster", "up", "--name", name).stdout
    print(f"raftswarm cluster up (auto network, 3 managers + 2 workers): {time.monotonic() - started:.2f}s\n{up}")
    assert f'Cluster "{name}" is up: 3 manager(s) and 2 worker(s)' in up
    cluster = SwarmCluster.load(name, clusters.base)
    current = config / "raftswarm" / "current-host"
    assert current.read_text().strip() == f"unix://{cluster.managers[0].socket}"

    # No -H: the CLI talks to the new cluster.
    node_ls = cli(clusters.base, config, "node", "ls").stdout
    assert node_ls.count("Ready") == 5 and node_ls.count("Leader") == 1 and node_ls.count("Reachable") == 2

    listed = cli(clusters.base, config, "cluster", "ls").stdout
    assert f"{name} *" in listed and "5/5" in listed

    status = cli(clusters.base, config, "cluster", "status", "--name", name).stdout
    assert status.count("leader") == 2  # the header's "leader managerN" and the leader's RAFT column
    assert status.count("follower") == 2 and status.count("ready") == 2

    pids = recorded_processes(cluster)
    down = cli(clusters.base, config, "cluster", "down", "--name", name).stdout
    assert f'Cluster "{name}" is down: stopped 5 node process(es)' in down
    assert not current.exists()
    assert_nothing_left(name, cluster.directory, pids)


def test_cli_down_of_a_cluster_that_does_not_exist_says_so(clusters):
    result = cli(clusters.base, clusters.base.parent / "config", "cluster", "down", "--name", "nosuch", check=False)
    assert result.returncode == 1
    assert result.stderr == f"Error: there is no cluster named 'nosuch' in {clusters.base}\n"


# -- what chaos runs do with it --------------------------------------------------------------------------


async def test_killing_the_leader_elects_another_and_a_restarted_manager_catches_up(clusters, network):
    name = clusters.name()
    cluster = await SwarmCluster.up(name, managers=3, workers=1, base_dir=clusters.base, network=network)
    old = (await cluster.status()).leader
    assert old is not None
    cluster.kill(old)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = await cluster.status()
        if status.leader is not None and status.leader is not old:
            break
        await asyncio.sleep(0.1)
    assert status.leader is not None and status.leader is not old
    assert next(m for m in status.managers if m.node is old).error == "not running"

    await cluster.restart(old)
    while time.monotonic() < deadline:
        status = await cluster.status()
        states = {m.node.name: m for m in status.managers}
        if states[old.name].raft_role == "follower" and states[old.name].lag == 0:
            break
        await asyncio.sleep(0.1)
    assert states[old.name].raft_role == "follower" and states[old.name].lag == 0
    assert [w.state for w in status.workers] == ["ready"]
    cluster.down()
