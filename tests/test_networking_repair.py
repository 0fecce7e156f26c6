"""Level-triggered node networking (issue 18, item 2): whatever a node's kernel lost, or never got because a
step failed, comes back by itself.

Without a kernel: the diff of an overlay (`plan_repair`) and of an nftables table (`repair_script`), the
backoff and reporting of failed steps (`Repairs`), and the repair pass of `NodeNetworks` over a simulated
kernel (what it reads, when, and what it shows).

On real kernel devices (root, nft, VXLAN): an nftables table read back equals what was programmed; and two
"nodes" -- network namespaces joined by a veth underlay, each running a `NodeNetworks` in a process of its
own with real gossip between them, as a node started by `cluster up` does -- with a task each. The tests
delete what a node's kernel holds (the routing mesh's table, an FDB and a neighbour entry, an overlay's
namespace, an element of a task's VIP map, the gateway bridge) and see it come back with no event at all,
and traffic flow again. Every name carries a prefix unique to the run; teardown removes it all and checks
that the host's namespaces, links and nftables tables are as before. Traffic goes only to addresses inside
the test's namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from raftswarm.dataplane import DataplaneError
from raftswarm.dataplane.loadbalancer import (
    LoadBalancer,
    LoadBalancerState,
    held_state,
    read_tables,
    render_ruleset,
    repair_script,
)
from raftswarm.dataplane.overlay import OverlayNetwork, OverlayRepair, OverlayState, Peer, mac_for_ip, plan_repair
from raftswarm.dataplane.repair import Repairs
from raftswarm.objects.networks import VXLAN_ID_OPTION
from raftswarm.node.networking import (
    ENDPOINTS,
    MESH_TABLE,
    TASK_TABLE,
    NodeNetworks,
    _Endpoint,
    _held_after,
    _LocalTask,
)

REPO = Path(__file__).resolve().parent.parent

# -- the diff of an overlay ------------------------------------------------------------------------------

TASK = "10.77.0.2"
A = Peer("10.77.0.3", mac_for_ip("10.77.0.3"), "10.250.0.2")
B = Peer("10.77.0.4", mac_for_ip("10.77.0.4"), "10.250.0.3")
HEALTHY = OverlayState(
    built=True,
    endpoints=frozenset({TASK}),
    neighbours=frozenset({(A.ip, A.mac), (B.ip, B.mac)}),
    forwarding=frozenset({(A.mac, A.underlay_ip), (B.mac, B.underlay_ip)}),
)


def test_an_overlay_that_holds_what_it_should_needs_nothing():
    assert not plan_repair(HEALTHY, {TASK}, {A, B})


def test_a_deleted_fdb_or_neighbour_entry_brings_back_its_peer_and_nothing_else():
    lost_fdb = replace(HEALTHY, forwarding=HEALTHY.forwarding - {(A.mac, A.underlay_ip)})
    assert plan_repair(lost_fdb, {TASK}, {A, B}) == OverlayRepair(add_peers=frozenset({A}))
    lost_neighbour = replace(HEALTHY, neighbours=HEALTHY.neighbours - {(B.ip, B.mac)})
    assert plan_repair(lost_neighbour, {TASK}, {A, B}) == OverlayRepair(add_peers=frozenset({B}))


def test_the_entries_of_a_peer_that_left_or_moved_to_another_node_go():
    moved = Peer(B.ip, B.mac, "10.250.0.9")
    plan = plan_repair(HEALTHY, {TASK}, {moved})
    assert plan.stale_neighbours == {(A.ip, A.mac)}
    assert plan.stale_forwarding == {(A.mac, A.underlay_ip), (B.mac, B.underlay_ip)}
    assert plan.add_peers == {moved}
    assert not plan.create and not plan.attach


def test_an_overlay_whose_namespace_or_device_is_gone_is_built_and_filled_anew():
    everything = OverlayRepair(create=True, attach=frozenset({TASK}), add_peers=frozenset({A, B}))
    assert plan_repair(OverlayState(), {TASK}, {A, B}) == everything
    # A half-built overlay's entries are not trusted: its VXLAN device is made anew, without them.
    assert plan_repair(replace(HEALTHY, built=False), {TASK}, {A, B}) == everything


def test_a_task_whose_veth_is_gone_is_plugged_in_again():
    unplugged = replace(HEALTHY, endpoints=frozenset())
    assert plan_repair(unplugged, {TASK}, {A, B}) == OverlayRepair(attach=frozenset({TASK}))


# -- the diff of an nftables table -------------------------------------------------------------------------

DESIRED = (
    LoadBalancerState().with_vip("10.9.0.5", ["10.9.0.7", "10.9.0.8"]).with_published(8080, "tcp", ["10.255.0.3:80"])
)


def test_a_missing_or_damaged_table_is_written_whole_a_missing_element_alone():
    assert repair_script("t", None, DESIRED) == render_ruleset("t", DESIRED)
    script = repair_script("t", DESIRED.without_vip("10.9.0.5"), DESIRED)
    assert "add element ip t vips { 10.9.0.5 : goto vip-10_9_0_5 }" in script
    assert "8080" not in script  # the published port was not lost: not touched
    assert repair_script("t", DESIRED, DESIRED) == ""


# -- backoff and reporting --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_step_waits_out_a_doubling_capped_backoff_and_is_shown_until_it_succeeds(caplog):
    clock = Clock()
    repairs = Repairs(first=1.0, most=4.0, clock=clock)
    step, what = ("mesh",), "the routing mesh"
    caplog.set_level(logging.DEBUG, logger="raftswarm.dataplane.repair")
    waits = []
    for _ in range(4):
        repairs.failed(step, what, "cannot run nft: install nftables (nft) and util-linux")
        assert not repairs.due(step)
        waits.append(repairs.next_due() - clock.now)
        clock.now = repairs.next_due()
        assert repairs.due(step)
    assert waits == [1.0, 2.0, 4.0, 4.0]
    assert repairs.problems() == [
        "the routing mesh: cannot run nft: install nftables (nft) and util-linux (failed 4 times; retrying)"
    ]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # once per distinct error
    repairs.failed(step, what, "nft refused a change")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    repairs.succeeded(step)
    assert repairs.problems() == [] and repairs.due(step) and repairs.next_due() is None
    assert any("repaired after 5 failed attempt(s)" in r.getMessage() for r in caplog.records)


def test_a_step_no_longer_wanted_is_no_longer_shown():
    repairs = Repairs()
    repairs.failed(("table", "t1"), "the VIP table of task t1", "no such namespace")
    repairs.retain([("mesh",)])
    assert repairs.problems() == []


# -- the repair pass over a simulated kernel --------------------------------------------------------------


class FakeGossip:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, bytes]] = {}

    def entries(self, network: str, table: str) -> dict[str, bytes]:
        assert table == ENDPOINTS
        return dict(self.tables.get(network, {}))


class SimulatedNode(NodeNetworks):
    """A node whose kernel is a dict (step -> what that part holds), and whose reads are recorded."""

    def __init__(self, netns_path: str, clock: Clock) -> None:
        super().__init__("node1", "192.0.2.1", "rsxsim", dns_upstreams=[])
        self.repairs = Repairs(first=1.0, most=8.0, clock=clock)
        self.gossip = FakeGossip()
        self.kernel: dict = {}
        self.reads: list[set] = []
        self.applied: list = []
        self.refused: dict = {}
        self.overlays["net1"] = OverlayNetwork("rsxsim", "net1", 4097, "10.77.0.0/24", "10.77.0.1", "192.0.2.1")
        own = _endpoint("t1", TASK, "192.0.2.1", vip="10.77.0.9")
        self.local["t1"] = _LocalTask("t1", netns_path, [own], {"net1": "eth0"}, has_table=True)
        self.local["t1"].host_ports.append(("tcp", 9090, 80))
        self.local["t1"].gateway_address = ipaddress.IPv4Address("172.18.0.2")
        self.gossip.tables["net1"] = {"t1": own.encode()}

    def _read(self, steps, wanted):
        self.reads.append(set(steps))
        return {step: self.kernel.get(step) for step in steps}

    def _apply(self, step, held, wanted):
        self.applied.append(step)
        if step in self.refused:
            raise DataplaneError(self.refused[step])
        if held == _held_after(step, wanted):
            return ""
        self.kernel[step] = _held_after(step, wanted)
        return "applied"


def _endpoint(task_id: str, ip: str, node_ip: str, vip: str | None = None) -> _Endpoint:
    return _Endpoint("net1", task_id, ip, mac_for_ip(ip), node_ip, "svc", "web", f"web.1.{task_id}", vip, "vip")


@pytest.fixture
def simulated(tmp_path):
    clock = Clock()
    return SimulatedNode(str(tmp_path), clock), clock


async def test_the_pass_follows_gossips_table_as_it_is_not_the_events_it_was_given(simulated):
    node, _ = simulated
    remote = _endpoint("t2", A.ip, A.underlay_ip, vip="10.77.0.9")
    node.gossip.tables["net1"]["t2"] = remote.encode()
    await node._repair(full=True)
    assert node.kernel[("overlay", "net1")].forwarding == {(A.mac, A.underlay_ip)}
    assert node.kernel[("table", "t1")].vips == {"10.77.0.9": (TASK, A.ip)}
    assert node.records.lookup("tasks.web", ["net1"]) == sorted([TASK, A.ip])

    del node.gossip.tables["net1"]["t2"]  # no event: a pass still sees it gone
    await node._repair(full=False)
    assert node.kernel[("overlay", "net1")].forwarding == frozenset()
    assert node.kernel[("table", "t1")].vips == {"10.77.0.9": (TASK,)}
    assert node.records.lookup("tasks.web", ["net1"]) == [TASK]


async def test_what_the_kernel_lost_comes_back_at_the_next_periodic_pass_which_alone_reads_it_all(simulated):
    node, _ = simulated
    await node._repair(full=True)
    everything = {("forwarding",), ("mesh",), ("overlay", "net1"), ("table", "t1")}
    assert node.reads == [everything]
    healthy = dict(node.kernel)

    node.kernel[("mesh",)] = None  # the table was deleted behind the node's back
    node.kernel[("overlay", "net1")] = replace(healthy[("overlay", "net1")], forwarding=frozenset())
    await node._repair(full=False)  # a pass after an event trusts what it read and did before
    assert node.reads == [everything] and node.kernel[("mesh",)] is None

    await node._repair(full=True)
    assert node.reads[-1] == everything
    assert node.kernel == healthy


async def test_a_failing_step_is_retried_with_backoff_and_shown_while_the_others_go_on(simulated):
    node, clock = simulated
    node.refused[("mesh",)] = "cannot run nft: install nftables (nft) and util-linux"
    await node._repair(full=True)
    assert ("table", "t1") in node.kernel and ("mesh",) not in node.kernel
    assert node.problems() == [
        f"the routing mesh (nftables table {MESH_TABLE}): cannot run nft: install nftables (nft) and util-linux "
        "(failed 1 time; retrying)"
    ]

    node.applied.clear()
    await node._repair(full=True)  # within the backoff: not tried
    assert ("mesh",) not in node.applied

    del node.refused[("mesh",)]  # nftables installed
    clock.now += 1.0
    await node._repair(full=False)
    assert node.kernel[("mesh",)] == LoadBalancerState().with_host_port(9090, "tcp", "172.18.0.2", 80)
    assert node.problems() == []


# -- on real kernel devices -------------------------------------------------------------------------------


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=15, input=input)


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces, VXLAN devices and nftables tables"
    for tool in ("ip", "bridge", "nsenter", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command"
    probe = f"rsrprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create network namespaces: {exc}"
    try:
        _run("ip", "-n", probe, "link", "add", "vxprobe", "type", "vxlan", "id", "42", "dstport", "4789")
    except subprocess.CalledProcessError as exc:
        return f"no VXLAN support: {exc.stderr.strip()}"
    finally:
        _run("ip", "netns", "delete", probe, check=False)
    return None


_KERNEL = _kernel_unavailable()
kernel = pytest.mark.skipif(_KERNEL is not None, reason=_KERNEL or "")


@kernel
def test_a_table_read_back_is_what_was_programmed_and_a_damaged_one_reads_as_missing():
    name = f"rsr{secrets.token_hex(3)}-lb"
    _run("ip", "netns", "add", name)
    try:
        path = f"/run/netns/{name}"
        balancer = LoadBalancer(path, "rsrtest")
        balancer.set_vip("10.9.0.5", ["10.9.0.8", "10.9.0.7"])
        balancer.set_vip("10.9.0.6", [])
        balancer.set_service("10.9.0.5", 53, "udp", ["10.9.0.7"])
        balancer.set_service("10.9.0.5", 54, "tcp", [])
        balancer.set_published(8080, "tcp", ["10.255.0.3:80", "10.255.0.4:80"])
        balancer.set_published(8081, "udp", [])
        balancer.set_host_port(9090, "tcp", "172.18.0.2", 80)
        assert held_state(read_tables(path)["rsrtest"]) == balancer.state

        _run("nsenter", f"--net={path}", "nft", "delete element ip rsrtest vips { 10.9.0.5 }")
        held = held_state(read_tables(path)["rsrtest"])
        assert held == balancer.state.without_vip("10.9.0.5")
        assert "8080" not in repair_script("rsrtest", held, balancer.state)

        _run("nsenter", f"--net={path}", "nft", "flush chain ip rsrtest nat-output")  # VIPs unreachable from the task
        assert held_state(read_tables(path)["rsrtest"]) is None
        assert held_state(read_tables(path).get("nosuchtable")) is None
    finally:
        _run("ip", "netns", "delete", name, check=False)


INGRESS_VNI, APP_VNI = 4301, 4302
INGRESS = {
    "ID": "rsringress000001",
    "Spec": {"Name": "ingress", "Ingress": True},
    "IPAMOptions": {"Configs": [{"Subnet": "10.248.0.0/24", "Gateway": "10.248.0.1"}]},
    "DriverState": {"Options": {VXLAN_ID_OPTION: str(INGRESS_VNI)}},
}
APP = {
    "ID": "rsrapp0000000001",
    "Spec": {"Name": "app"},
    "IPAMOptions": {"Configs": [{"Subnet": "10.247.0.0/24", "Gateway": "10.247.0.1"}]},
    "DriverState": {"Options": {VXLAN_ID_OPTION: str(APP_VNI)}},
}
NODE_INGRESS = {"a": "10.248.0.10/24", "b": "10.248.0.11/24"}
WEB_INGRESS, WEB_APP, WEB_VIP = "10.248.0.3", "10.247.0.3", "10.247.0.2"
CLIENT_APP = "10.247.0.4"
PUBLISHED = 8080


def _task(task_id: str, service: str, attachments: list, vips: list, ports: list, netns_path: str) -> dict:
    return {
        "ID": task_id,
        "ServiceID": f"svc-{service}",
        "ServiceAnnotations": {"Name": service},
        "Slot": 1,
        "NetworksAttachments": [{"Network": network, "Addresses": [address]} for network, address in attachments],
        "Endpoint": {
            "Spec": {"Mode": "vip"},
            "VirtualIPs": [{"NetworkID": network["ID"], "Addr": address} for network, address in vips],
            "Ports": ports,
        },
        "netns_path": netns_path,
    }


DRIVER = """
import asyncio, json, logging, sys, types
from raftswarm.node.networking import NodeNetworks

config = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")

async def main():
    networks = NodeNetworks(config["node_id"], config["ip"], config["prefix"], dns_upstreams=[], repair_interval=0.5)
    networks.repairs.first, networks.repairs.most = 0.2, 1.0
    await networks.configure([bytes.fromhex(config["key"])], [config["peer"] + ":2377"], [config["ingress"]])
    for task in config["tasks"]:
        await networks.attach(task, types.SimpleNamespace(netns_path=task["netns_path"]))
    while True:
        print(json.dumps({"problems": networks.problems()}), flush=True)
        await asyncio.sleep(0.2)

asyncio.run(main())
"""

SERVER = """
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 80))
server.listen()
print("ready", flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"web")
    connection.close()
"""

FETCH = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as connection:
    print(connection.recv(100).decode())
"""


def _private_underlay() -> tuple[str, str]:
    """A /30 in 10.249.0.0/16 that no address of the host's namespace falls into."""
    host = [ipaddress.ip_interface(line.split()[3]) for line in _run("ip", "-o", "-4", "addr").stdout.splitlines()]
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.249.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}/30")
        if not any(iface.network.overlaps(net) for iface in host):
            a, b = list(net.hosts())
            return str(a), str(b)
    pytest.skip("no free /30 in 10.249.0.0/16")


class TwoNodes:
    """Nodes a and b (namespaces `<p>na`, `<p>nb` joined by `u0`), each running `NodeNetworks` in a process
    inside its namespace. Task `<p>tb` on b is service web on the ingress and app networks and publishes
    port 8080 (routing mesh); task `<p>ta` on a is service client on the app network."""

    def __init__(self) -> None:
        self.prefix = f"rsr{secrets.token_hex(3)}-"
        self.ip = dict(zip("ab", _private_underlay(), strict=True))
        self.processes: list[subprocess.Popen[str]] = []
        self.reports: dict[str, list[dict]] = {"a": [], "b": []}
        self.errors: dict[str, list[str]] = {"a": [], "b": []}
        self.drivers: dict[str, subprocess.Popen[str]] = {}

    def node(self, name: str) -> str:
        return f"{self.prefix}n{name}"

    def task(self, name: str) -> str:
        return f"{self.prefix}t{name}"

    def overlay(self, node: str, vni: int) -> str:
        return f"{self.prefix}{node}-ov-{vni}"

    def build(self) -> None:
        for name in ("a", "b"):
            _run("ip", "netns", "add", self.node(name))
            _run("ip", "netns", "add", self.task(name))
            _run("ip", "-n", self.task(name), "link", "set", "lo", "up")
        _run(*f"ip -n {self.node('a')} link add u0 type veth peer name u0 netns {self.node('b')}".split())
        for name in ("a", "b"):
            _run("ip", "-n", self.node(name), "addr", "add", f"{self.ip[name]}/30", "dev", "u0")
            _run("ip", "-n", self.node(name), "link", "set", "u0", "up")
            _run("ip", "-n", self.node(name), "link", "set", "lo", "up")
        server = self._spawn(self.task("b"), ["-c", SERVER])
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        key = secrets.token_bytes(32).hex()
        web = _task(
            "rsrtaskweb001",
            "web",
            [(INGRESS, f"{WEB_INGRESS}/24"), (APP, f"{WEB_APP}/24")],
            [(INGRESS, "10.248.0.2/24"), (APP, f"{WEB_VIP}/24")],
            [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": PUBLISHED, "PublishMode": "ingress"}],
            f"/run/netns/{self.task('b')}",
        )
        client = _task(
            "rsrtaskcli001",
            "client",
            [(APP, f"{CLIENT_APP}/24")],
            [(APP, "10.247.0.5/24")],
            [],
            f"/run/netns/{self.task('a')}",
        )
        for name, other, task in (("a", "b", client), ("b", "a", web)):
            config = {
                "node_id": f"rsrnode{name}{secrets.token_hex(8)}",
                "ip": self.ip[name],
                "prefix": f"{self.prefix}{name}-",
                "key": key,
                "peer": self.ip[other],
                "ingress": {"Network": INGRESS, "Addresses": [NODE_INGRESS[name]]},
                "tasks": [task],
            }
            driver = self.drivers[name] = self._spawn(self.node(name), ["-c", DRIVER, json.dumps(config)])
            threading.Thread(target=self._follow, args=(name, driver), daemon=True).start()

    def _spawn(self, namespace: str, argv: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.processes.append(process)
        return process

    def _follow(self, name: str, driver: subprocess.Popen[str]) -> None:
        assert driver.stdout is not None and driver.stderr is not None
        threading.Thread(target=lambda: self.errors[name].extend(driver.stderr), daemon=True).start()
        for line in driver.stdout:
            self.reports[name].append(json.loads(line))

    @contextlib.contextmanager
    def paused(self, node: str):
        """Node `node`'s driver stopped (SIGSTOP; nsenter execs it, so the PID is the driver's) for a change
        it must not race with, and continued afterwards."""
        driver = self.drivers[node]
        os.kill(driver.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(driver.pid, signal.SIGCONT)

    def problems(self, node: str) -> list[str] | None:
        """What the node's `problems()` said last, or None before it said anything."""
        return self.reports[node][-1]["problems"] if self.reports[node] else None

    def fetch(self, namespace: str, ip: str, port: int) -> str:
        done = _run("nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-c", FETCH, ip, str(port), check=False)
        return done.stdout.strip()

    def healthy(self) -> bool:
        """Everything the tests break is in place on node a, traffic flows, and neither node has a problem."""
        return (
            self.problems("a") == [] == self.problems("b")
            and f"{WEB_INGRESS} . 80" in _table(self.node("a"), MESH_TABLE)
            and (mac_for_ip(WEB_INGRESS), self.ip["b"]) in _fdb(self.overlay("a", INGRESS_VNI))
            and (mac_for_ip(WEB_APP), self.ip["b"]) in _fdb(self.overlay("a", APP_VNI))
            and WEB_VIP in _table(self.task("a"), TASK_TABLE)
            and self.fetch(self.node("a"), self.ip["a"], PUBLISHED) == "web"
            and self.fetch(self.task("a"), WEB_VIP, 80) == "web"
        )

    def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for name in sorted(os.listdir("/run/netns")):
            if name.startswith(self.prefix):
                _run("ip", "netns", "delete", name, check=False)

    def log(self) -> str:
        return "\n".join(f"node {name}: {line.rstrip()}" for name in "ab" for line in self.errors[name][-40:])


def _fdb(namespace: str) -> set[tuple[str, str]]:
    """vxlan0's FDB entries towards other nodes: (MAC, underlay IP)."""
    done = _run("bridge", "-n", namespace, "fdb", "show", "dev", "vxlan0", check=False)
    entries = (line.split() for line in done.stdout.splitlines())
    return {(words[0], words[words.index("dst") + 1]) for words in entries if "dst" in words}


def _neighbours(namespace: str) -> set[tuple[str, str]]:
    done = _run("ip", "-n", namespace, "neigh", "show", "dev", "vxlan0", check=False)
    entries = (line.split() for line in done.stdout.splitlines())
    return {(words[0], words[words.index("lladdr") + 1]) for words in entries if "lladdr" in words}


def _table(namespace: str, table: str) -> str:
    done = _run("nsenter", f"--net=/run/netns/{namespace}", "nft", "list", "table", "ip", table, check=False)
    return done.stdout


def _links(namespace: str | None = None) -> set[str]:
    argv = ["ip", "-o", "link"] if namespace is None else ["ip", "-n", namespace, "-o", "link"]
    return {line.split(":")[1].strip().split("@")[0] for line in _run(*argv).stdout.splitlines()}


def _eventually(check, what: str, lab: TwoNodes, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within:.0f} s; the nodes logged:\n{lab.log()}")
        time.sleep(0.2)


def _host_traces(lab: TwoNodes) -> tuple[set[str], set[str]]:
    """The links and nftables tables in the host's own namespace that the lab could have left there: none
    of its nodes' devices or tables may land outside their namespaces."""
    transit = {
        OverlayNetwork(f"{lab.prefix}{node}-", "x", vni, "10.0.0.0/24", "10.0.0.1", "10.0.0.2").vxlan_transit_ifname
        for node in "ab"
        for vni in (INGRESS_VNI, APP_VNI)
    }
    links = {name for name in _links() if name.startswith(lab.prefix) or name in transit | {"rswgw0", "rswingress0"}}
    tables = {line.split()[-1] for line in _run("nft", "list", "tables").stdout.splitlines()}
    return links, tables & {MESH_TABLE, TASK_TABLE, "raftswarm-gw"}


@pytest.fixture(scope="module")
def lab():
    if _KERNEL is not None:
        pytest.skip(_KERNEL)
    lab = TwoNodes()
    host_before = _host_traces(lab)
    try:
        lab.build()
        _eventually(lab.healthy, "the two nodes' networking", lab, within=60)
        yield lab
    finally:
        lab.teardown()
        assert not [name for name in os.listdir("/run/netns") if name.startswith(lab.prefix)]
        assert _host_traces(lab) == host_before


@pytest.fixture
def healthy_lab(lab):
    _eventually(lab.healthy, "the two nodes' networking", lab)
    return lab


@kernel
def test_a_deleted_mesh_table_and_fdb_entry_come_back_without_any_event(healthy_lab):
    """Issue 18's test: node a loses its routing mesh's nftables table and the FDB and neighbour entries
    that send the published port's task across the ingress overlay; its periodic pass restores both, and
    the published port answers on node a again."""
    lab = healthy_lab
    ingress = lab.overlay("a", INGRESS_VNI)
    mac = mac_for_ip(WEB_INGRESS)
    _run("nsenter", f"--net=/run/netns/{lab.node('a')}", "nft", "delete", "table", "ip", MESH_TABLE)
    _run("bridge", "-n", ingress, "fdb", "del", mac, "dev", "vxlan0", "dst", lab.ip["b"])
    _run("ip", "-n", ingress, "neigh", "del", WEB_INGRESS, "dev", "vxlan0")

    element = f"tcp . {PUBLISHED} : goto ingress-tcp-{PUBLISHED}"
    _eventually(lambda: element in _table(lab.node("a"), MESH_TABLE), "the mesh table", lab)
    assert f"{WEB_INGRESS} . 80" in _table(lab.node("a"), MESH_TABLE)
    _eventually(lambda: (mac, lab.ip["b"]) in _fdb(ingress), "the FDB entry", lab)
    _eventually(lambda: (WEB_INGRESS, mac) in _neighbours(ingress), "the neighbour entry", lab)
    assert lab.fetch(lab.node("a"), lab.ip["a"], PUBLISHED) == "web"
    assert lab.problems("a") == []


@kernel
def test_a_deleted_overlay_namespace_and_vip_element_come_back_and_the_task_reaches_its_service(healthy_lab):
    lab = healthy_lab
    app = lab.overlay("a", APP_VNI)
    _run("ip", "netns", "delete", app)  # the bridge, the VXLAN device, its entries and the task's veth go with it
    _run("nsenter", f"--net=/run/netns/{lab.task('a')}", "nft", f"delete element ip {TASK_TABLE} vips {{ {WEB_VIP} }}")

    _eventually(lambda: (mac_for_ip(WEB_APP), lab.ip["b"]) in _fdb(app), "the app overlay and its peer", lab)
    _eventually(lambda: "eth0" in _links(lab.task("a")), "the task's interface on the app network", lab)
    _eventually(lambda: f"{WEB_VIP} : goto" in _table(lab.task("a"), TASK_TABLE), "the VIP's map element", lab)
    _eventually(lambda: lab.fetch(lab.task("a"), WEB_VIP, 80) == "web", "the client reaching web through its VIP", lab)


@kernel
def test_a_step_that_keeps_failing_is_shown_and_retried_until_it_succeeds(healthy_lab):
    """Something that is no bridge takes the gateway bridge's name: plugging the task back into it fails,
    node a says so in `problems()`, and once the name is free again the bridge and the task's port are back
    without anything else happening."""
    lab = healthy_lab
    node = lab.node("a")
    squatter = f"{lab.prefix}sq"
    _run("ip", "-n", node, "link", "add", squatter, "type", "veth", "peer", "name", f"{lab.prefix}sp")
    with lab.paused("a"):  # else its repair may bring the bridge back between the two commands
        _run("ip", "-n", node, "-batch", "-", input=f"link del rswgw0\nlink set {squatter} name rswgw0\n")

    def shown() -> bool:
        return any(p.startswith("the gateway bridge rswgw0") and "retrying" in p for p in lab.problems("a") or [])

    _eventually(shown, "the failure to show in problems()", lab)
    _run("ip", "-n", node, "link", "del", "rswgw0")
    _eventually(lambda: lab.problems("a") == [], "the repair", lab)
    ports = _run("ip", "-n", node, "-o", "link", "show", "master", "rswgw0").stdout
    assert "rswgwrsrtaskcl" in ports  # the task is plugged into the real bridge again
    assert "bridge" in _run("ip", "-n", node, "-d", "link", "show", "rswgw0").stdout
