"""The embedded DNS server of service discovery: Docker's resolver at 127.0.0.11:53 inside each task.

Three layers, sans-I/O in the middle:

- `DnsRecords` is the view the resolver answers from. The agent updates it in place as the network-scoped
  gossip tables change; it knows services (VIP or endpoint mode dnsrr, aliases) and their tasks per network.
- `answer()` turns one query packet into a reply packet for names the records know, or None when the query
  must go to the host's resolvers. It never raises on bad input.
- `DnsServer` is the I/O edge: a UDP and a TCP listener on 127.0.0.11:53 created *inside* a task's network
  namespace, forwarding unknown names to upstream resolvers from that same namespace, as Docker does.

Answers follow libnetwork's resolver: `<service>` (or one of its aliases) -> the VIP, or every task IP with
endpoint mode dnsrr; `tasks.<service>` -> every task IP; `<task name>` -> that task's IP. Only networks the
asking task is attached to are visible. Names are case-insensitive. A known name asked for AAAA or MX gets an
empty NOERROR answer (the name exists, it has no such record) so resolvers do not go on to ask outside.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import errno
import ipaddress
import logging
import os
import random
import socket
import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Self

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord

from raftswarm.dataplane import DataplaneError
from raftswarm.supervision import TaskOwner

log = logging.getLogger(__name__)

RESOLVER_ADDRESS = "127.0.0.11"
DNS_PORT = 53
# libnetwork's respTTL: names change as tasks come and go, yet Docker answers with 600 s; we match it.
RECORD_TTL = 600
# RFC 1035 4.2.1: the UDP reply size a client without EDNS accepts; a larger answer is truncated (TC set).
UDP_REPLY_SIZE = 512
# The most an EDNS client may ask for over UDP that we honour; beyond it fragmentation is likely (DNS flag day).
MAX_UDP_REPLY_SIZE = 4096
# libnetwork's extIOTimeout: per upstream server, for connect + send + receive.
FORWARD_TIMEOUT = 4.0
# glibc's MAXNS and libnetwork's maxExtDNS: resolv.conf nameservers beyond the third are never tried.
MAX_UPSTREAMS = 3
# libnetwork's maxConcurrent: queries in flight to upstreams per task; past it a query gets SERVFAIL at once.
MAX_CONCURRENT_FORWARDS = 1024
# TCP is only for truncated answers, so a task needs few connections; each is closed when idle this long.
MAX_TCP_CONNECTIONS = 64
TCP_IDLE_TIMEOUT = 10.0

ENDPOINT_MODE_VIP = "vip"
ENDPOINT_MODE_DNSRR = "dnsrr"
TASKS_PREFIX = "tasks."

_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_RA = 0x0080
_OPCODE_QUERY = 0


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


def _ipv4(ip: str) -> str:
    return str(ipaddress.IPv4Address(ip))


@dataclass
class _Service:
    vip: str | None
    endpoint_mode: str


@dataclass
class _Network:
    services: dict[str, _Service] = field(default_factory=dict)  # normalized service name -> service
    names: dict[str, str] = field(default_factory=dict)  # normalized service name or alias -> service key
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)  # service key -> task key -> IP
    task_ips: dict[str, str] = field(default_factory=dict)  # normalized task name -> IP

    def service_key(self, name: str) -> str:
        return self.names.get(name, name)


class DnsRecords:
    """The names each network publishes, updated in place by whoever follows the gossip tables. No I/O.

    Tasks may arrive before their service (gossip gives no order across tables): `tasks.<service>` and the
    task's own name resolve as soon as the task is known; `<service>` needs the service's record.
    """

    def __init__(self) -> None:
        self._networks: dict[str, _Network] = {}

    def _network(self, network_id: str) -> _Network:
        return self._networks.setdefault(network_id, _Network())

    def set_service(
        self, network_id: str, name: str, aliases: Iterable[str], vip: str | None, endpoint_mode: str
    ) -> None:
        """Publish (or replace) a service on a network. `vip` is its virtual IP, None with endpoint mode dnsrr."""
        if endpoint_mode not in (ENDPOINT_MODE_VIP, ENDPOINT_MODE_DNSRR):
            modes = f"{ENDPOINT_MODE_VIP!r} or {ENDPOINT_MODE_DNSRR!r}"
            raise ValueError(f"endpoint mode must be {modes}, not {endpoint_mode!r}")
        if endpoint_mode == ENDPOINT_MODE_VIP and vip is None:
            raise ValueError(f"service {name!r} has endpoint mode vip but no VIP on network {network_id}")
        net = self._network(network_id)
        key = _normalize(name)
        self._forget_names(net, key)
        net.services[key] = _Service(_ipv4(vip) if vip is not None else None, endpoint_mode)
        for alias in aliases:
            net.names[_normalize(alias)] = key
        net.names[key] = key

    def remove_service(self, network_id: str, name: str) -> None:
        """Forget a service and its tasks on a network. Unknown names are ignored."""
        net = self._networks.get(network_id)
        if net is None:
            return
        key = _normalize(name)
        self._forget_names(net, key)
        net.services.pop(key, None)
        for task_key in net.tasks.pop(key, {}):
            net.task_ips.pop(task_key, None)
        self._drop_if_empty(network_id)

    def set_task(self, network_id: str, service_name: str, task_name: str, ip: str) -> None:
        """Publish a task's address on a network (a task has one address per network it is attached to)."""
        net = self._network(network_id)
        task_key = _normalize(task_name)
        address = _ipv4(ip)
        net.tasks.setdefault(_normalize(service_name), {})[task_key] = address
        net.task_ips[task_key] = address

    def remove_task(self, network_id: str, service_name: str, task_name: str) -> None:
        """Forget a task on a network. Unknown names are ignored."""
        net = self._networks.get(network_id)
        if net is None:
            return
        service_key, task_key = _normalize(service_name), _normalize(task_name)
        tasks = net.tasks.get(service_key, {})
        if tasks.pop(task_key, None) is not None:
            net.task_ips.pop(task_key, None)
        if not tasks:
            net.tasks.pop(service_key, None)
        self._drop_if_empty(network_id)

    def replace(self, other: DnsRecords) -> bool:
        """Hold exactly what `other` holds (records rebuilt from scratch, which the resolvers sharing this
        object then answer from); False if that is what this held already."""
        if other._networks == self._networks:
            return False
        self._networks = copy.deepcopy(other._networks)
        return True

    def lookup(self, name: str, networks: Iterable[str]) -> list[str] | None:
        """The IPv4 addresses `name` resolves to for a task attached to `networks`, or None if no such name.

        The first network (in the order given) that knows the name answers, as in Docker's sandbox. A name
        with no address right now (a dnsrr service with no task yet) counts as unknown, as in Docker.
        """
        wanted = _normalize(name)
        for network_id in networks:
            net = self._networks.get(network_id)
            if net is None:
                continue
            addresses = self._lookup_in(net, wanted)
            if addresses:
                return addresses
        return None

    @staticmethod
    def _lookup_in(net: _Network, name: str) -> list[str]:
        service = net.services.get(net.names.get(name, ""))
        if service is not None:
            if service.endpoint_mode == ENDPOINT_MODE_VIP and service.vip is not None:
                return [service.vip]
            return sorted(net.tasks.get(net.service_key(name), {}).values())
        if name.startswith(TASKS_PREFIX):
            tasks = net.tasks.get(net.service_key(name[len(TASKS_PREFIX):]), {})
            if tasks:
                return sorted(tasks.values())
        task_ip = net.task_ips.get(name)
        return [task_ip] if task_ip is not None else []

    @staticmethod
    def _forget_names(net: _Network, key: str) -> None:
        for alias in [alias for alias, target in net.names.items() if target == key]:
            del net.names[alias]

    def _drop_if_empty(self, network_id: str) -> None:
        net = self._networks[network_id]
        if not net.services and not net.tasks:
            del self._networks[network_id]


def _reply_skeleton(query: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    # RA set and AA clear, as libnetwork replies: we are a recursive front for the task, not an authority.
    header = DNSHeader(id=query.header.id, qr=1, opcode=query.header.opcode, rd=query.header.rd, ra=1, rcode=rcode)
    return DNSRecord(header, q=query.q)


def _parse(query_bytes: bytes) -> DNSRecord | None:
    try:
        return DNSRecord.parse(query_bytes)
    except (DNSError, ValueError, IndexError, UnicodeError, struct.error):
        return None


def _error_reply(query_bytes: bytes, rcode: int) -> bytes:
    """An error reply to a query (which `is_query` accepted). It echoes the question when readable, since
    glibc ignores a reply whose question differs from its query; else it is the bare header with the ID."""
    query = _parse(query_bytes)
    if query is not None:
        return _reply_skeleton(query, rcode).pack()
    query_id, flags = _HEADER.unpack_from(query_bytes)[:2]
    opcode_and_rd = flags & 0x7900
    return _HEADER.pack(query_id, _FLAG_QR | opcode_and_rd | _FLAG_RA | rcode, 0, 0, 0, 0)


def is_query(packet: bytes) -> bool:
    """Whether a packet is worth answering at all: a full header with QR clear. Anything else is dropped
    silently -- in particular replies, or two resolvers could answer each other forever."""
    return len(packet) >= _HEADER.size and not _HEADER.unpack_from(packet)[1] & _FLAG_QR


def reply_size_limit(query: DNSRecord, tcp: bool) -> int:
    """How big a reply the client takes: 64 KiB over TCP; over UDP 512 bytes, or its EDNS payload size."""
    if tcp:
        return 0xFFFF
    edns_sizes = [rr.rclass for rr in query.ar if rr.rtype == QTYPE.OPT]
    return min(max([UDP_REPLY_SIZE, *edns_sizes]), MAX_UDP_REPLY_SIZE)


def answer(query_bytes: bytes, networks: Iterable[str], records: DnsRecords, *, tcp: bool = False) -> bytes | None:
    """The reply to a DNS query from a task attached to `networks`, or None if it must be forwarded upstream.

    `query_bytes` must pass `is_query` (the caller drops other packets); it then always gets a reply or None.
    Malformed queries get FORMERR, opcodes other than QUERY get NOTIMP. Over UDP, an answer larger than the
    client accepts is cut to fit with the TC bit set, so the client retries over TCP.
    """
    query = _parse(query_bytes)
    if query is None:
        return _error_reply(query_bytes, RCODE.FORMERR)
    if query.header.opcode != _OPCODE_QUERY:
        return _error_reply(query_bytes, RCODE.NOTIMP)
    if len(query.questions) != 1:
        return _error_reply(query_bytes, RCODE.FORMERR)
    question = query.q
    qname = str(question.qname)
    addresses = records.lookup(qname, networks)
    if addresses is None:
        return None
    if question.qtype == QTYPE.A:
        reply = _reply_skeleton(query)
        for address in random.sample(addresses, len(addresses)):  # shuffled: crude client-side balancing, as Docker
            reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=RECORD_TTL))
        return _fit(reply, reply_size_limit(query, tcp), tcp)
    if question.qtype in (QTYPE.AAAA, QTYPE.MX):
        return _reply_skeleton(query).pack()
    return None


def _fit(reply: DNSRecord, limit: int, tcp: bool) -> bytes:
    packed = reply.pack()
    if len(packed) <= limit:
        return packed
    if not tcp:
        reply.header.tc = 1
    while reply.rr and len(packed) > limit:
        reply.rr.pop()
        packed = reply.pack()
    return packed


def _reply_is_final(reply: bytes) -> bool:
    """Whether an upstream's reply ends the search (libnetwork: SERVFAIL, REFUSED and other errors, and
    non-authoritative NXDOMAIN, move on to the next upstream; RFC 8020 makes an authoritative NXDOMAIN final)."""
    flags = _HEADER.unpack_from(reply)[1]
    rcode = flags & 0x000F
    if rcode == RCODE.NOERROR:
        return True
    return rcode == RCODE.NXDOMAIN and bool(flags & _FLAG_AA)


def parse_resolv_conf(text: str) -> list[tuple[str, int]]:
    """The upstream resolvers a task's DNS server may use from a resolv.conf text: its nameservers minus
    loopback ones (they are only reachable from the host's namespace, not the task's), the first three."""
    upstreams = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local:  # link-local ones name the host's interfaces
            continue
        upstreams.append((str(address), DNS_PORT))
    return upstreams[:MAX_UPSTREAMS]


# systemd-resolved's stub listens on 127.0.0.53 and names its real upstreams in this file (Docker reads it too).
_RESOLVED_STUB = "127.0.0.53"
_RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"


def host_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The host's resolvers as `parse_resolv_conf` gives them; behind systemd-resolved, the ones it uses."""
    try:
        with open(path, encoding="utf-8", errors="replace") as conf:
            text = conf.read()
    except OSError:
        return []
    if f"nameserver {_RESOLVED_STUB}" in text and os.path.exists(_RESOLVED_UPSTREAMS):
        return host_upstreams(_RESOLVED_UPSTREAMS)
    return parse_resolv_conf(text)


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class _NamespaceSockets:
    """Creates sockets inside a network namespace, from one worker thread that has entered it.

    setns(2) moves only the calling thread, so the event loop's thread (and the rest of the process) stays in
    its own namespace. A socket belongs for life to the namespace it was created in; binding, connecting and
    all I/O then happen on the event loop as usual.
    """

    def __init__(self, netns_path: str) -> None:
        self._netns_path = netns_path
        self._entry_error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dns-netns", initializer=self._enter)

    def _enter(self) -> None:
        try:
            fd = os.open(self._netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._entry_error = f"cannot open network namespace {self._netns_path}: {exc.strerror}"
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                reason = os.strerror(ctypes.get_errno())
                self._entry_error = f"cannot enter network namespace {self._netns_path}: {reason} (needs root)"
        finally:
            os.close(fd)

    def _create(self, family: int, kind: int) -> socket.socket:
        if self._entry_error is not None:
            raise DataplaneError(self._entry_error)
        sock = socket.socket(family, kind)
        sock.setblocking(False)
        return sock

    async def create(self, family: int, kind: int) -> socket.socket:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._create, family, kind)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server._on_udp_query(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP listener error: %s", exc)


class DnsServer:
    """The resolver at 127.0.0.11:53 (UDP and TCP) inside one task's network namespace.

    `networks` is what the task is attached to; assign a new value when it changes. `upstreams` defaults to
    the host's resolvers (`host_upstreams()`); they are contacted from inside the task's namespace, the way
    the task itself would. Start with `await start()` (or `async with`), stop with `await close()`.
    """

    def __init__(
        self,
        netns_path: str,
        networks: Iterable[str],
        records: DnsRecords,
        *,
        upstreams: Sequence[tuple[str, int]] | None = None,
        forward_timeout: float = FORWARD_TIMEOUT,
        listen: tuple[str, int] = (RESOLVER_ADDRESS, DNS_PORT),
    ) -> None:
        self.networks: tuple[str, ...] = tuple(networks)
        self.records = records
        self.upstreams: list[tuple[str, int]] = list(upstreams if upstreams is not None else host_upstreams())
        self.forward_timeout = forward_timeout
        self._listen = listen
        self._sockets = _NamespaceSockets(netns_path)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks = TaskOwner(f"DNS server in {netns_path}", log)
        self._forwards_in_flight = 0
        self._tcp_connections = 0
        self._closed = False

    async def start(self) -> None:
        """Open both listeners inside the namespace. Raises DataplaneError if that is not possible."""
        loop = asyncio.get_running_loop()
        try:
            udp_sock = await self._sockets.create(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp_sock.bind(self._listen)
            except OSError as exc:
                udp_sock.close()
                raise DataplaneError(self._bind_error("UDP", exc)) from exc
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpListener(self), sock=udp_sock)
            tcp_sock = await self._sockets.create(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp_sock.bind(self._listen)
            except OSError as exc:
                tcp_sock.close()
                raise DataplaneError(self._bind_error("TCP", exc)) from exc
            self._tcp = await asyncio.start_server(self._accept_tcp, sock=tcp_sock, limit=0x10000 + 2)
        except BaseException:
            await self.close()
            raise

    def _bind_error(self, proto: str, exc: OSError) -> str:
        host, port = self._listen
        hint = " (is loopback up in the task's namespace?)" if exc.errno == errno.EADDRNOTAVAIL else ""
        return f"cannot listen for DNS on {proto} {host}:{port}: {exc.strerror}{hint}"

    async def close(self) -> None:
        """Stop listening, cancel forwards in flight, and release the namespace thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        await self._tasks.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._sockets.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_udp_query(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed or not is_query(data):
            return
        reply = answer(data, self.networks, self.records)
        if reply is not None:
            self._send_udp(reply, addr)
            return
        if not self._begin_forward():
            self._send_udp(_error_reply(data, RCODE.SERVFAIL), addr)
            return
        self._tasks.spawn(self._forward_udp_query(data, addr), "dns-forward-udp")

    def _send_udp(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    def _begin_forward(self) -> bool:
        if self._forwards_in_flight >= MAX_CONCURRENT_FORWARDS:
            log.warning("more than %d DNS queries in flight to upstream resolvers; answering SERVFAIL",
                        MAX_CONCURRENT_FORWARDS)
            return False
        self._forwards_in_flight += 1
        return True

    async def _forward_udp_query(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.forward(data, tcp=False)
        finally:
            self._forwards_in_flight -= 1
        self._send_udp(reply, addr)

    async def forward(self, query: bytes, *, tcp: bool) -> bytes:
        """Ask the upstreams in turn; their first final reply, else the last reply, else SERVFAIL."""
        last_reply = None
        for upstream in self.upstreams[:MAX_UPSTREAMS]:
            try:
                async with asyncio.timeout(self.forward_timeout):
                    reply = await self._ask(upstream, query, tcp)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("DNS upstream %s:%d failed: %s", *upstream, exc or type(exc).__name__)
                continue
            if reply is None:
                continue
            last_reply = reply
            if _reply_is_final(reply):
                break
        return last_reply if last_reply is not None else _error_reply(query, RCODE.SERVFAIL)

    async def _ask(self, upstream: tuple[str, int], query: bytes, tcp: bool) -> bytes | None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        sock = await self._sockets.create(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        with sock:
            await loop.sock_connect(sock, upstream)
            query_id = query[:2]
            if tcp:
                await loop.sock_sendall(sock, struct.pack("!H", len(query)) + query)
                (size,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
                reply = await _recv_exactly(loop, sock, size)
                return reply if self._is_reply_to(reply, query_id) else None
            await loop.sock_sendall(sock, query)
            while True:  # a connected UDP socket only hears the upstream; still skip stale or forged IDs
                reply = await loop.sock_recv(sock, 0xFFFF)
                if self._is_reply_to(reply, query_id):
                    return reply

    @staticmethod
    def _is_reply_to(reply: bytes, query_id: bytes) -> bool:
        if len(reply) < _HEADER.size or reply[:2] != query_id:
            return False
        return bool(_HEADER.unpack_from(reply)[1] & _FLAG_QR)

    def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed or self._tcp_connections >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._tcp_connections += 1
        task = self._tasks.spawn(self._serve_tcp(reader, writer), "dns-tcp")
        # Not in _serve_tcp's own cleanup: a task cancelled before it first ran never runs that.
        task.add_done_callback(lambda _: self._end_tcp(writer))

    def _end_tcp(self, writer: asyncio.StreamWriter) -> None:
        self._tcp_connections -= 1
        writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        (size,) = struct.unpack("!H", await reader.readexactly(2))
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        query = await reader.readexactly(size)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = await self._tcp_reply(query)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except ConnectionError:
            return

    async def _tcp_reply(self, query: bytes) -> bytes | None:
        if not is_query(query):
            return None
        reply = answer(query, self.networks, self.records, tcp=True)
        if reply is not None:
            return reply
        if not self._begin_forward():
            return _error_reply(query, RCODE.SERVFAIL)
        try:
            return await self.forward(query, tcp=True)
        finally:
            self._forwards_in_flight -= 1


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = await loop.sock_recv(sock, size - len(buffer))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buffer), size)
        buffer += chunk
    return bytes(buffer)
