"""VIP load balancing and the routing mesh with nftables (raftswarm.dataplane.loadbalancer).

The rendering tests need nothing. The kernel tests need root and nft: they build a private lab of
network namespaces (every name carries this run's prefix), a bridge in a "switch" namespace, a client, a
node and three backends running tiny TCP servers that answer with their own name and the peer address
they saw. Traffic only goes to addresses inside those namespaces; teardown removes the servers (by PID)
and the namespaces (with their tables and interfaces) even when a test fails.
"""

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from raftswarm.dataplane.loadbalancer import (
    LoadBalancer,
    LoadBalancerError,
    LoadBalancerState,
    apply_nft,
    render_delta,
    render_ruleset,
)

TABLE = "rstestlb"

# ---------------------------------------------------------------------------------------------------------
# Rendering (no root)
# ---------------------------------------------------------------------------------------------------------

WEB = ("10.9.0.5", 80, "tcp")
DNS = ("10.9.0.6", 53, "udp")


def test_service_picks_a_backend_with_numgen_per_new_connection():
    state = LoadBalancerState().with_service(*WEB, ["10.9.0.11", "10.9.0.12", "10.9.0.13"])
    script = render_ruleset(TABLE, state)
    assert "dnat to numgen random mod 3 map { 0 : 10.9.0.11, 1 : 10.9.0.12, 2 : 10.9.0.13 }" in script
    assert f"add element ip {TABLE} service-ips {{ 10.9.0.5 . tcp . 80 : goto svc-10_9_0_5-tcp-80 }}" in script
    assert "ip daddr . meta l4proto . th dport vmap @service-ips" in script


def test_full_render_replaces_only_its_own_table():
    script = render_ruleset(TABLE, LoadBalancerState())
    assert script.startswith(f"add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip {TABLE}\n")
    assert "flush ruleset" not in script
    assert all(f" ip {TABLE} " in line or line.endswith(f" ip {TABLE}") for line in script.splitlines())


def test_updating_one_service_touches_only_its_chain_and_elements():
    old = LoadBalancerState().with_service(*WEB, ["10.9.0.11", "10.9.0.12"]).with_service(*DNS, ["10.9.0.21"])
    new = old.with_service(*WEB, ["10.9.0.12"])
    delta = render_delta(TABLE, old, new)
    assert "flush chain ip rstestlb svc-10_9_0_5-tcp-80" in delta
    assert "dnat to numgen random mod 1 map { 0 : 10.9.0.12 }" in delta
    assert "10.9.0.6" not in delta and "udp" not in delta
    assert "delete table" not in delta and "flush ruleset" not in delta


def test_unchanged_state_renders_an_empty_delta():
    state = LoadBalancerState().with_service(*WEB, ["10.9.0.11"]).with_published(8080, "tcp", ["10.9.0.11:80"])
    assert render_delta(TABLE, state, state) == ""
    assert render_delta(TABLE, state, state.with_service(*WEB, ["10.9.0.11", "10.9.0.11"])) == ""


def test_zero_backends_rejects_instead_of_dnat():
    old = LoadBalancerState().with_service(*WEB, ["10.9.0.11"])
    delta = render_delta(TABLE, old, old.with_service(*WEB, []))
    assert "add element ip rstestlb no-endpoint-services { 10.9.0.5 . tcp . 80 }" in delta
    assert "delete element ip rstestlb service-ips { 10.9.0.5 . tcp . 80 }" in delta
    assert "dnat" not in delta
    assert "@no-endpoint-services reject" in render_ruleset(TABLE, LoadBalancerState())


def test_removal_is_written_to_succeed_whether_or_not_the_entry_exists():
    old = LoadBalancerState().with_service(*WEB, ["10.9.0.11"])
    lines = render_delta(TABLE, old, old.without_service(*WEB)).splitlines()
    chain = "svc-10_9_0_5-tcp-80"
    # Each delete is preceded by an add of the same object (nft 1.0.6 has no `destroy`).
    assert lines.index(f"add chain ip {TABLE} {chain}") < lines.index(f"delete chain ip {TABLE} {chain}")
    add_element = f"add element ip {TABLE} service-ips {{ 10.9.0.5 . tcp . 80 : goto {chain} }}"
    delete_element = f"delete element ip {TABLE} service-ips {{ 10.9.0.5 . tcp . 80 }}"
    assert lines.index(add_element) < lines.index(delete_element) < lines.index(f"delete chain ip {TABLE} {chain}")


def test_vip_forwards_every_port_to_a_backend_ip_with_the_port_unchanged():
    state = LoadBalancerState().with_vip("10.9.0.5", ["10.9.0.11", "10.9.0.12", "10.9.0.13"])
    script = render_ruleset(TABLE, state)
    # Address only: the destination port is left as the client sent it.
    rule = f"add rule ip {TABLE} vip-10_9_0_5 dnat to numgen random mod 3 map {{ 0 : 10.9.0.11, 1 : 10.9.0.12, 2 : 10.9.0.13 }}"
    assert rule in script
    assert f"add element ip {TABLE} vips {{ 10.9.0.5 : goto vip-10_9_0_5 }}" in script
    assert "meta l4proto { tcp, udp } " in next(line for line in script.splitlines() if "@vips" in line)


def test_a_per_port_service_on_the_vip_takes_precedence_for_its_port():
    state = LoadBalancerState().with_vip("10.9.0.5", ["10.9.0.11"]).with_service(*WEB, [])
    lines = render_ruleset(TABLE, state).splitlines()
    per_port = lines.index(f"add rule ip {TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips")
    (all_ports,) = [i for i, line in enumerate(lines) if "vmap @vips" in line]
    assert per_port < all_ports
    # A per-port service with zero backends must be refused, not forwarded by the VIP's all-ports rule.
    assert "ip daddr . meta l4proto . th dport != @no-endpoint-services ip daddr vmap @vips" in lines[all_ports]


def test_vip_without_backends_is_refused_and_removal_leaves_no_trace():
    old = LoadBalancerState().with_vip("10.9.0.5", ["10.9.0.11"]).with_service(*DNS, ["10.9.0.21"])
    emptied = old.with_vip("10.9.0.5", [])
    delta = render_delta(TABLE, old, emptied)
    assert f"add element ip {TABLE} no-endpoint-vips {{ 10.9.0.5 }}" in delta
    assert f"delete element ip {TABLE} vips {{ 10.9.0.5 }}" in delta
    assert "dnat" not in delta and "10.9.0.6" not in delta
    assert "ip daddr @no-endpoint-vips reject" in render_ruleset(TABLE, LoadBalancerState())

    lines = render_delta(TABLE, emptied, emptied.without_vip("10.9.0.5")).splitlines()
    assert f"delete chain ip {TABLE} vip-10_9_0_5" in lines
    assert lines[-1] == f"delete element ip {TABLE} no-endpoint-vips {{ 10.9.0.5 }}"
    assert render_delta(TABLE, old, old.with_vip("10.9.0.5", ["10.9.0.11", "10.9.0.11"])) == ""


def test_published_port_masquerades_and_dnats_to_task_ip_and_port():
    state = LoadBalancerState().with_published(8080, "tcp", ["10.9.0.11:80", ("10.9.0.12", 81)])
    script = render_ruleset(TABLE, state)
    assert "meta mark set meta mark | 0x4000" in script
    assert "dnat ip addr . port to numgen random mod 2 map { 0 : 10.9.0.11 . 80, 1 : 10.9.0.12 . 81 }" in script
    assert "fib daddr type local meta l4proto . th dport vmap @node-ports" in script
    assert "masquerade" in script


def test_host_port_dnats_to_its_one_task_without_masquerade():
    script = render_delta(TABLE, LoadBalancerState(), LoadBalancerState().with_host_port(9090, "tcp", "10.9.0.11", 80))
    assert "meta l4proto tcp dnat to 10.9.0.11:80" in script
    assert "mark" not in script


def test_a_port_is_published_in_one_mode_only():
    with pytest.raises(LoadBalancerError, match="host mode"):
        LoadBalancerState().with_host_port(8080, "tcp", "10.9.0.11", 80).with_published(8080, "tcp", [])
    with pytest.raises(LoadBalancerError, match="ingress mode"):
        LoadBalancerState().with_published(8080, "tcp", []).with_host_port(8080, "tcp", "10.9.0.11", 80)
    # Same number, other protocol: no conflict.
    LoadBalancerState().with_published(8080, "tcp", []).with_host_port(8080, "udp", "10.9.0.11", 80)


def test_switching_a_port_between_modes_frees_the_key_before_reusing_it():
    old = LoadBalancerState().with_host_port(8080, "tcp", "10.9.0.11", 80)
    new = old.without_host_port(8080, "tcp").with_published(8080, "tcp", ["10.9.0.12:80"])
    lines = render_delta(TABLE, old, new).splitlines()
    freed = lines.index(f"delete element ip {TABLE} node-ports {{ tcp . 8080 }}")
    reused = lines.index(f"add element ip {TABLE} node-ports {{ tcp . 8080 : goto ingress-tcp-8080 }}")
    assert freed < reused


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.with_service("10.9.0.5", 80, "sctp", []),
        lambda s: s.with_service("10.9.0.5", 0, "tcp", []),
        lambda s: s.with_service("fd00::1", 80, "tcp", []),
        lambda s: s.with_service("10.9.0.5", 80, "tcp", ["not-an-ip"]),
        lambda s: s.with_published(8080, "tcp", ["10.9.0.11"]),
        lambda s: s.with_host_port(8080, "tcp", "10.9.0.11", 70000),
        lambda s: s.with_vip("web", ["10.9.0.11"]),
        lambda s: s.with_vip("10.9.0.5", ["10.9.0.11:80"]),
    ],
)
def test_invalid_requests_raise_one_clear_error(change):
    with pytest.raises(LoadBalancerError):
        change(LoadBalancerState())


def test_table_names_are_checked_before_reaching_nft():
    with pytest.raises(LoadBalancerError, match="table name"):
        render_ruleset("bad name; flush ruleset", LoadBalancerState())


# ---------------------------------------------------------------------------------------------------------
# In the kernel (root, nft)
# ---------------------------------------------------------------------------------------------------------

needs_kernel = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="needs root, nft and ip to build network namespaces and program nftables",
)

SUBNET = "10.231.0"  # only ever configured inside this test's namespaces
CLIENT_IP, NODE_IP, VIP, OTHER_VIP = f"{SUBNET}.10", f"{SUBNET}.20", f"{SUBNET}.100", f"{SUBNET}.101"
BACKEND_IPS = {"b1": f"{SUBNET}.11", "b2": f"{SUBNET}.12", "b3": f"{SUBNET}.13"}
SERVER_PORT = 80
# Backends also listen here under the name "<backend>@8081", so an answer proves which port was reached.
SECOND_PORT = 8081
CONNECT_TIMEOUT = 2.0

ANSWER_WITH_NAME = """
import socketserver, sys
name = sys.argv[1]
class Answer(socketserver.StreamRequestHandler):
    def handle(self):
        for _ in self.rfile:
            self.wfile.write(f"{name} {self.client_address[0]}\\n".encode())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[2])), Answer).serve_forever()
"""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def socket_in(netns_path: str) -> socket.socket:
    """A TCP socket that lives in `netns_path` (a socket keeps the namespace it was created in).
    Created on a short-lived thread so this process's other threads never change namespace."""
    made: list = []

    def create() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns_path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                _setns(own)
        except OSError as error:
            made.append(error)
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]


class Conversation:
    """One TCP connection from a namespace; every `ask` returns (server name, peer address it saw)."""

    def __init__(self, netns_path: str, ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> None:
        self.sock = socket_in(netns_path)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((ip, port))
        except OSError:
            self.sock.close()
            raise
        self.lines = self.sock.makefile("rb")

    def ask(self) -> tuple[str, str]:
        self.sock.sendall(b"who\n")
        name, peer = self.lines.readline().decode().split()
        return name, peer

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def ask_once(netns_path: str, ip: str, port: int) -> tuple[str, str]:
    conversation = Conversation(netns_path, ip, port)
    try:
        return conversation.ask()
    finally:
        conversation.close()


class Lab:
    """Namespaces on one bridge: client, node, b1..b3; servers answering their name on port 80 in the
    backends and the node, and "<name>@8081" on port 8081 in the backends."""

    def __init__(self) -> None:
        self.prefix = f"rslb{os.getpid()}x{secrets.token_hex(2)}"
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen] = []

    def path(self, name: str) -> str:
        return f"/run/netns/{self.prefix}-{name}"

    def build(self) -> None:
        switch = self._namespace("sw")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts = {"client": CLIENT_IP, "node": NODE_IP, **BACKEND_IPS}
        for index, (name, address) in enumerate(hosts.items()):
            ns = self._namespace(name)
            port = f"p{index}"
            _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # The routing mesh forwards from the node to the backends; enabling it is the namespace owner's job.
        _run("ip", "netns", "exec", f"{self.prefix}-node", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        servers = [(name, name, SERVER_PORT) for name in [*BACKEND_IPS, "node"]]
        servers += [(name, f"{name}@{SECOND_PORT}", SECOND_PORT) for name in BACKEND_IPS]
        for namespace, answer, port in servers:
            self.servers.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        f"{self.prefix}-{namespace}",
                        sys.executable,
                        "-c",
                        ANSWER_WITH_NAME,
                        answer,
                        str(port),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for address in [*BACKEND_IPS.values(), NODE_IP]:
            self._wait_for_server(address, SERVER_PORT)
        for address in BACKEND_IPS.values():
            self._wait_for_server(address, SECOND_PORT)

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def _namespace(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        return ns

    def _wait_for_server(self, address: str, port: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                ask_once(self.path("client"), address, port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def _ip(*args: str) -> None:
    _run("ip", *args)


@pytest.fixture(scope="module")
def lab():
    built = Lab()
    try:
        built.build()
        yield built
    finally:
        built.close()


@pytest.fixture
def client_lb(lab):
    balancer = LoadBalancer(lab.path("client"), f"{lab.prefix}-lb")
    yield balancer
    balancer.close()


@pytest.fixture
def node_lb(lab):
    balancer = LoadBalancer(lab.path("node"), f"{lab.prefix}-lb")
    yield balancer
    balancer.close()


def names_reached(lab: Lab, ip: str, port: int, connections: int) -> set[str]:
    # 45 draws: the chance that one of 3 equally likely backends never shows up is 3 * (2/3)**45 < 1e-7.
    return {ask_once(lab.path("client"), ip, port)[0] for _ in range(connections)}


@needs_kernel
def test_vip_connections_spread_over_every_backend(lab, client_lb):
    client_lb.set_service(VIP, SERVER_PORT, "tcp", list(BACKEND_IPS.values()))
    client_lb.set_service(VIP, SERVER_PORT, "tcp", list(BACKEND_IPS.values()))  # idempotent
    assert names_reached(lab, VIP, SERVER_PORT, 45) == {"b1", "b2", "b3"}


@needs_kernel
def test_backend_update_steers_new_connections_and_keeps_established_ones(lab, client_lb):
    client_lb.set_service(VIP, SERVER_PORT, "tcp", list(BACKEND_IPS.values()))
    established = Conversation(lab.path("client"), VIP, SERVER_PORT)
    try:
        removed, _ = established.ask()
        remaining = {name: ip for name, ip in BACKEND_IPS.items() if name != removed}

        client_lb.set_service(VIP, SERVER_PORT, "tcp", list(remaining.values()))
        assert names_reached(lab, VIP, SERVER_PORT, 30) == set(remaining)
        assert established.ask()[0] == removed  # conntrack keeps it on its backend

        client_lb.set_service(OTHER_VIP, SERVER_PORT, "tcp", [BACKEND_IPS[removed]])
        client_lb.set_service(OTHER_VIP, SERVER_PORT, "tcp", list(remaining.values()))
        assert established.ask()[0] == removed  # an unrelated service's update disturbs nothing
        assert names_reached(lab, VIP, SERVER_PORT, 30) == set(remaining)
    finally:
        established.close()


@needs_kernel
def test_service_without_backends_refuses_connections(lab, client_lb):
    client_lb.set_service(VIP, SERVER_PORT, "tcp", [BACKEND_IPS["b1"]])
    client_lb.set_service(VIP, SERVER_PORT, "tcp", [])
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        ask_once(lab.path("client"), VIP, SERVER_PORT)
    assert time.monotonic() - started < 1.0

    client_lb.remove_service(VIP, SERVER_PORT, "tcp")
    client_lb.remove_service(VIP, SERVER_PORT, "tcp")  # idempotent
    with pytest.raises(OSError):  # nobody owns the VIP any more: unreachable, never a backend's answer
        Conversation(lab.path("client"), VIP, SERVER_PORT, timeout=0.5)
    assert VIP not in _table_text(lab.path("client"), client_lb.table)


@needs_kernel
def test_vip_forwards_every_port_to_the_same_port_on_its_tasks(lab, client_lb):
    client_lb.set_vip(VIP, list(BACKEND_IPS.values()))
    client_lb.set_vip(VIP, list(BACKEND_IPS.values()))  # idempotent
    assert names_reached(lab, VIP, SERVER_PORT, 45) == {"b1", "b2", "b3"}
    seen = [ask_once(lab.path("client"), VIP, SECOND_PORT) for _ in range(45)]
    assert {name for name, _ in seen} == {f"{name}@{SECOND_PORT}" for name in BACKEND_IPS}
    assert {peer for _, peer in seen} == {CLIENT_IP}  # not masqueraded: tasks see the real client

    client_lb.set_vip(VIP, [BACKEND_IPS["b2"]])
    assert names_reached(lab, VIP, SERVER_PORT, 10) == {"b2"}
    assert names_reached(lab, VIP, SECOND_PORT, 10) == {f"b2@{SECOND_PORT}"}

    client_lb.set_vip(VIP, [])
    for port in (SERVER_PORT, SECOND_PORT):
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            ask_once(lab.path("client"), VIP, port)
        assert time.monotonic() - started < 1.0

    client_lb.remove_vip(VIP)
    client_lb.remove_vip(VIP)  # idempotent
    with pytest.raises(OSError):  # nobody owns the VIP any more: unreachable, never a backend's answer
        Conversation(lab.path("client"), VIP, SECOND_PORT, timeout=0.5)
    assert VIP not in _table_text(lab.path("client"), client_lb.table)


@needs_kernel
def test_a_per_port_service_overrides_the_vip_for_its_port_only(lab, client_lb):
    client_lb.set_vip(VIP, list(BACKEND_IPS.values()))
    client_lb.set_service(VIP, SERVER_PORT, "tcp", [BACKEND_IPS["b3"]])
    assert names_reached(lab, VIP, SERVER_PORT, 10) == {"b3"}
    assert names_reached(lab, VIP, SECOND_PORT, 45) == {f"{name}@{SECOND_PORT}" for name in BACKEND_IPS}

    client_lb.set_service(VIP, SERVER_PORT, "tcp", [])
    with pytest.raises(ConnectionRefusedError):
        ask_once(lab.path("client"), VIP, SERVER_PORT)
    assert names_reached(lab, VIP, SECOND_PORT, 5) <= {f"{name}@{SECOND_PORT}" for name in BACKEND_IPS}

    client_lb.remove_service(VIP, SERVER_PORT, "tcp")
    assert names_reached(lab, VIP, SERVER_PORT, 45) == {"b1", "b2", "b3"}


@needs_kernel
def test_routing_mesh_forwards_a_published_port_to_tasks_on_other_namespaces(lab, node_lb):
    published = 8080
    node_lb.set_published(published, "tcp", [f"{ip}:{SERVER_PORT}" for ip in BACKEND_IPS.values()])
    seen = [ask_once(lab.path("client"), NODE_IP, published) for _ in range(45)]
    assert {name for name, _ in seen} == {"b1", "b2", "b3"}
    # Masqueraded: the tasks saw the node, so their replies came back through it.
    assert {peer for _, peer in seen} == {NODE_IP}

    node_lb.set_published(published, "tcp", [])
    with pytest.raises(ConnectionRefusedError):
        ask_once(lab.path("client"), NODE_IP, published)
    node_lb.remove_published(published, "tcp")
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the node's own port 8080
        ask_once(lab.path("client"), NODE_IP, published)


@needs_kernel
def test_host_mode_port_reaches_the_local_task_without_masquerade(lab, node_lb):
    node_lb.set_host_port(9090, "tcp", NODE_IP, SERVER_PORT)
    assert ask_once(lab.path("client"), NODE_IP, 9090) == ("node", CLIENT_IP)
    node_lb.remove_host_port(9090, "tcp")
    with pytest.raises(ConnectionRefusedError):
        ask_once(lab.path("client"), NODE_IP, 9090)


@needs_kernel
def test_nft_errors_carry_nfts_message_and_close_is_idempotent(lab):
    balancer = LoadBalancer(lab.path("client"), f"{lab.prefix}-errors")
    with pytest.raises(LoadBalancerError, match="No such file or directory"):
        apply_nft(lab.path("client"), f"add rule ip {lab.prefix}-missing nowhere accept\n")
    balancer.close()
    balancer.close()
    assert f"{lab.prefix}-errors" not in _table_text(lab.path("client"), None)


def _table_text(netns_path: str, table: str | None) -> str:
    command = ["nsenter", f"--net={netns_path}", "nft", "list"]
    command += ["table", "ip", table] if table else ["tables"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout
