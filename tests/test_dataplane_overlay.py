"""The overlay data plane on real kernel devices: two "nodes" are two network namespaces joined by a veth
(the underlay, a private /30), each builds the overlay of the same network, "tasks" are namespaces attached
to it, and traffic between tasks must cross the VXLAN tunnel.

Needs root, network namespaces and the vxlan module; skipped otherwise. Every namespace carries a prefix
unique to the run, nothing is made in the host's namespace, and the fixture deletes whatever carries the
prefix even when a test fails. Traffic goes only to addresses inside these namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VNI = 4097
OTHER_VNI = 4098
SUBNET = "10.77.0.0/24"
GATEWAY = "10.77.0.1"
UNDERLAY_MTU = 1500


def _run(*argv: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def _unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and VXLAN devices"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "needs pyroute2"
    probe = f"rsprobe{secrets.token_hex(3)}"
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


_REASON = _unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

if _REASON is None:
    from raftswarm.dataplane import DataplaneError
    from raftswarm.dataplane.overlay import OverlayNetwork, mac_for_ip


_PING = """
import os, socket, struct, sys, time
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
ident = os.getpid() & 0xFFFF
header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
packet = struct.pack("!BBHHH", 8, 0, checksum(header + b"raftswarm-ping"), ident, 1) + b"raftswarm-ping"
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(packet, (sys.argv[1], 0))
deadline = time.monotonic() + 1
while (left := deadline - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        reply, (source, _) = s.recvfrom(1500)
    except TimeoutError:
        break
    kind, _, _, got_ident, _ = struct.unpack("!BBHHH", reply[20:28])
    if source == sys.argv[1] and kind == 0 and got_ident == ident:
        sys.exit(0)
sys.exit(1)
"""


def _private_underlay() -> tuple[str, str]:
    """A /30 in 10.250.0.0/16 that no address of the host's namespace falls into."""
    host = [
        ipaddress.ip_interface(word)
        for line in _run("ip", "-o", "-4", "addr").stdout.splitlines()
        for word in line.split()[3:4]
    ]
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.250.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}/30")
        if not any(iface.network.overlaps(net) for iface in host):
            a, b = list(net.hosts())
            return str(a), str(b)
    pytest.skip("no free /30 in 10.250.0.0/16")


class Lab:
    """Two node namespaces `<p>na`/`<p>nb` joined by `u0` (underlay), plus task namespaces on demand."""

    def __init__(self) -> None:
        self.prefix = f"rst{secrets.token_hex(3)}-"
        self.node_a, self.node_b = self.prefix + "na", self.prefix + "nb"
        self.ip_a, self.ip_b = _private_underlay()
        self.processes: list[subprocess.Popen[str]] = []

    def build(self) -> None:
        self.netns(self.node_a)
        self.netns(self.node_b)
        _run(*f"ip -n {self.node_a} link add u0 mtu {UNDERLAY_MTU} type veth peer name u0 netns {self.node_b}".split())
        for node, ip in ((self.node_a, self.ip_a), (self.node_b, self.ip_b)):
            _run("ip", "-n", node, "addr", "add", f"{ip}/30", "dev", "u0")
            _run("ip", "-n", node, "link", "set", "u0", "up")
            _run("ip", "-n", node, "link", "set", "lo", "up")

    def netns(self, name: str) -> str:
        _run("ip", "netns", "add", name)
        return name

    def task(self, suffix: str) -> str:
        """A task's namespace; returned as the path the runtime would give (/proc/<pid>/ns/net)."""
        name = self.netns(self.prefix + suffix)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def overlay(self, node: str, vni: int = VNI, subnet: str = SUBNET, gateway: str = GATEWAY) -> OverlayNetwork:
        """The overlay as seen from the test process, naming the node's namespace as the underlay."""
        return OverlayNetwork(**self.overlay_args(node, vni, subnet, gateway), underlay_netns=node)

    def overlay_args(self, node: str, vni: int = VNI, subnet: str = SUBNET, gateway: str = GATEWAY) -> dict:
        underlay_ip = self.ip_a if node == self.node_a else self.ip_b
        return {
            "name_prefix": node + "-",
            "network_id": f"net{vni}",
            "vni": vni,
            "subnet": subnet,
            "gateway": gateway,
            "underlay_ip": underlay_ip,
        }

    def call_inside(self, node: str, method: str, *args: str, vni: int = VNI) -> object:
        """Run an OverlayNetwork method in a process that lives in the node's namespace (as a node started
        by `raftswarm cluster up` does), with the underlay being that process's own namespace."""
        script = (
            "import json, sys\n"
            "from raftswarm.dataplane.overlay import OverlayNetwork\n"
            "kwargs, method, args = json.loads(sys.argv[1])\n"
            "print(json.dumps(getattr(OverlayNetwork(**kwargs), method)(*args)))\n"
        )
        payload = json.dumps([self.overlay_args(node, vni), method, list(args)])
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node}", sys.executable, "-c", script, payload],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def ping(self, task_path: str, ip: str) -> bool:
        """One ICMP echo from the task to `ip`, answered within a second (`ping -c1 -W1`, which this
        machine may lack, done with a raw socket)."""
        done = subprocess.run(
            ["ip", "netns", "exec", os.path.basename(task_path), sys.executable, "-c", _PING, ip],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.returncode == 0

    def tcp_echo(self, server_path: str, server_ip: str, client_path: str, payload: bytes) -> bytes:
        """Send `payload` from the client task to an upper-casing server in the server task; what came back."""
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                os.path.basename(server_path),
                sys.executable,
                "-c",
                (
                    "import socket\n"
                    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                    f"s.bind(({server_ip!r}, 5000)); s.listen(1); s.settimeout(10); print('ready', flush=True)\n"
                    "c, _ = s.accept(); data = b''\n"
                    "while chunk := c.recv(65536): data += chunk\n"
                    "c.sendall(data.upper()); c.close()\n"
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                os.path.basename(client_path),
                sys.executable,
                "-c",
                (
                    "import socket, sys\n"
                    f"c = socket.create_connection(({server_ip!r}, 5000), timeout=5)\n"
                    "c.sendall(sys.stdin.buffer.read()); c.shutdown(socket.SHUT_WR); data = b''\n"
                    "while chunk := c.recv(65536): data += chunk\n"
                    "sys.stdout.buffer.write(data)\n"
                ),
            ],
            check=False,
            input=payload,
            capture_output=True,
            timeout=15,
        )
        server.wait(timeout=5)
        assert client.returncode == 0, client.stderr
        return client.stdout

    def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for name in sorted(os.listdir("/run/netns")):
            if name.startswith(self.prefix):
                _run("ip", "netns", "delete", name, check=False)


def _netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _links(namespace: str | None = None) -> set[str]:
    argv = ["ip", "-o", "link"] if namespace is None else ["ip", "-n", namespace, "-o", "link"]
    return {line.split(":")[1].strip().split("@")[0] for line in _run(*argv).stdout.splitlines()}


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


def test_tasks_on_two_nodes_talk_over_the_vxlan_tunnel_only_while_peered(lab):
    """A task on node A reaches a task on node B (ICMP and TCP) once each node has programmed the other's
    endpoint; the overlay is built from inside the node namespaces; removing the peer cuts the path."""
    task_a, task_b = lab.task("ta"), lab.task("tb")
    for node in (lab.node_a, lab.node_b):
        lab.call_inside(node, "create")
        lab.call_inside(node, "create")  # idempotent
    mac_a = lab.call_inside(lab.node_a, "attach", task_a, "10.77.0.2/24")
    mac_b = lab.call_inside(lab.node_b, "attach", task_b, "10.77.0.3/24")
    assert mac_a == mac_for_ip("10.77.0.2") == "02:42:0a:4d:00:02"

    assert not lab.ping(task_a, "10.77.0.3"), "reachable before any peer was programmed"
    lab.call_inside(lab.node_a, "add_peer", "10.77.0.3", mac_b, lab.ip_b)
    lab.call_inside(lab.node_a, "add_peer", "10.77.0.3", mac_b, lab.ip_b)  # idempotent
    lab.call_inside(lab.node_b, "add_peer", "10.77.0.2", mac_a, lab.ip_a)

    assert lab.ping(task_a, "10.77.0.3")
    assert lab.ping(task_b, "10.77.0.2")
    # Larger than one frame: only works if the task MTU leaves room for the VXLAN headers.
    payload = os.urandom(20000).hex().encode()
    assert lab.tcp_echo(task_b, "10.77.0.3", task_a, payload) == payload.upper()
    mtu = _run("ip", "netns", "exec", os.path.basename(task_a), "cat", "/sys/class/net/eth0/mtu").stdout
    assert int(mtu) == UNDERLAY_MTU - 50

    lab.call_inside(lab.node_a, "remove_peer", "10.77.0.3", mac_b, lab.ip_b)
    lab.call_inside(lab.node_a, "remove_peer", "10.77.0.3", mac_b, lab.ip_b)  # idempotent
    assert not lab.ping(task_a, "10.77.0.3")


def test_detach_and_remove_leave_nothing_behind(lab):
    task = lab.task("ta")
    netns_before, host_links_before = _netns_names(), _links()
    node_links_before, task_links_before = _links(lab.node_a), _links(os.path.basename(task))
    overlay = lab.overlay(lab.node_a)

    overlay.create()
    overlay.attach(task, "10.77.0.2")
    overlay.attach(task, "10.77.0.2")  # idempotent
    overlay.add_peer("10.77.0.3", mac_for_ip("10.77.0.3"), lab.ip_b)
    assert "eth0" in _links(os.path.basename(task))
    assert _links(overlay.netns) >= {"br0", "vxlan0"}

    overlay.detach("10.77.0.2")
    overlay.detach("10.77.0.2")  # idempotent
    assert _links(os.path.basename(task)) == task_links_before
    overlay.remove()
    overlay.remove()  # idempotent

    assert _netns_names() == netns_before
    assert _links() == host_links_before
    assert _links(lab.node_a) == node_links_before


def test_a_half_created_network_is_removed_completely(lab):
    """A second network asking for a VNI the node already uses fails after its namespace and bridge exist;
    remove() must still take all of it away and leave the first network working."""
    first = lab.overlay(lab.node_a)
    first.create()
    netns_before, node_links_before = _netns_names(), _links(lab.node_a)

    clash = OverlayNetwork(
        **{**lab.overlay_args(lab.node_a), "name_prefix": lab.prefix + "other-"}, underlay_netns=lab.node_a
    )
    with pytest.raises(DataplaneError, match=f"VNI {VNI}.*already used"):
        clash.create()
    clash.remove()

    assert _netns_names() == netns_before
    assert _links(lab.node_a) == node_links_before
    assert _links(first.netns) >= {"br0", "vxlan0"}


def test_underlay_address_must_be_local(lab):
    wrong = OverlayNetwork(**{**lab.overlay_args(lab.node_a), "underlay_ip": lab.ip_b}, underlay_netns=lab.node_a)
    netns_before = _netns_names()
    with pytest.raises(DataplaneError, match=f"underlay address {lab.ip_b} is not assigned"):
        wrong.create()
    assert _netns_names() == netns_before


def test_networks_with_different_vnis_are_isolated(lab):
    """Two networks with the same subnet on the same nodes: frames sent on one VNI never reach the other's
    tasks, even when a peer entry of the first network has leaked into the second's table."""
    a1, b1, a2, b2 = lab.task("a1"), lab.task("b1"), lab.task("a2"), lab.task("b2")
    net1 = {node: lab.overlay(node, VNI) for node in (lab.node_a, lab.node_b)}
    net2 = {node: lab.overlay(node, OTHER_VNI) for node in (lab.node_a, lab.node_b)}
    for overlay in (*net1.values(), *net2.values()):
        overlay.create()
    mac_a1 = net1[lab.node_a].attach(a1, "10.77.0.2/24")
    mac_b1 = net1[lab.node_b].attach(b1, "10.77.0.3/24")
    mac_a2 = net2[lab.node_a].attach(a2, "10.77.0.4/24")
    mac_b2 = net2[lab.node_b].attach(b2, "10.77.0.5/24")
    net1[lab.node_a].add_peer("10.77.0.3", mac_b1, lab.ip_b)
    net1[lab.node_b].add_peer("10.77.0.2", mac_a1, lab.ip_a)
    net2[lab.node_a].add_peer("10.77.0.5", mac_b2, lab.ip_b)
    net2[lab.node_b].add_peer("10.77.0.4", mac_a2, lab.ip_a)
    net2[lab.node_a].add_peer("10.77.0.3", mac_b1, lab.ip_b)  # the leak

    assert lab.ping(a1, "10.77.0.3")
    assert lab.ping(a2, "10.77.0.5")
    assert not lab.ping(a2, "10.77.0.3")

    for overlay in (*net1.values(), *net2.values()):
        overlay.remove()
