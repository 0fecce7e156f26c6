"""The embedded DNS server of service discovery (Docker's 127.0.0.11).

Pure tests of the records and of `answer()`; then, as root, a real server inside a network namespace this
test makes, queried from inside it, forwarding to a fake upstream that also runs inside it. No DNS traffic
leaves the test's namespace.
"""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest
from dnslib import EDNS0, RCODE, DNSRecord

from raftswarm.dataplane import DataplaneError
from raftswarm.dataplane.dns import (
    RECORD_TTL,
    UDP_REPLY_SIZE,
    DnsRecords,
    DnsServer,
    answer,
    is_query,
    parse_resolv_conf,
)

FRONT, BACK = "net-front", "net-back"


@pytest.fixture
def records() -> DnsRecords:
    """web (VIP 10.0.1.2, alias www) with two tasks on FRONT; db (dnsrr) with two tasks on BACK."""
    r = DnsRecords()
    r.set_service(FRONT, "web", ["www"], "10.0.1.2", "vip")
    r.set_task(FRONT, "web", "web.1.aaa", "10.0.1.5")
    r.set_task(FRONT, "web", "web.2.bbb", "10.0.1.6")
    r.set_service(BACK, "db", [], None, "dnsrr")
    r.set_task(BACK, "db", "db.1.ccc", "10.0.2.5")
    r.set_task(BACK, "db", "db.2.ddd", "10.0.2.6")
    return r


def ask(records: DnsRecords, name: str, qtype: str = "A", networks=(FRONT, BACK), **kw) -> DNSRecord | None:
    reply = answer(DNSRecord.question(name, qtype).pack(), networks, records, **kw)
    return None if reply is None else DNSRecord.parse(reply)


def addresses(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


# --- records ---------------------------------------------------------------------------------------------


def test_service_name_resolves_to_its_vip(records):
    assert records.lookup("web", [FRONT]) == ["10.0.1.2"]
    assert records.lookup("www", [FRONT]) == ["10.0.1.2"]


def test_dnsrr_service_resolves_to_every_task_ip(records):
    assert records.lookup("db", [BACK]) == ["10.0.2.5", "10.0.2.6"]


def test_tasks_name_resolves_to_every_task_ip_even_with_a_vip(records):
    assert records.lookup("tasks.web", [FRONT]) == ["10.0.1.5", "10.0.1.6"]
    assert records.lookup("tasks.www", [FRONT]) == ["10.0.1.5", "10.0.1.6"]


def test_task_name_resolves_to_that_task(records):
    assert records.lookup("web.2.bbb", [FRONT]) == ["10.0.1.6"]


def test_names_on_networks_the_task_is_not_on_are_invisible(records):
    assert records.lookup("db", [FRONT]) is None
    assert records.lookup("tasks.web", [BACK]) is None
    assert records.lookup("web.1.aaa", []) is None


def test_lookup_is_case_insensitive_and_ignores_the_root_dot(records):
    assert records.lookup("WeB.", [FRONT]) == ["10.0.1.2"]
    assert records.lookup("Tasks.DB", [BACK]) == ["10.0.2.5", "10.0.2.6"]


def test_removed_tasks_and_services_stop_resolving(records):
    records.remove_task(BACK, "db", "db.1.ccc")
    assert records.lookup("db", [BACK]) == ["10.0.2.6"]
    assert records.lookup("db.1.ccc", [BACK]) is None
    records.remove_task(BACK, "db", "db.2.ddd")
    assert records.lookup("db", [BACK]) is None  # nothing to answer with: forwarded, as in Docker
    records.remove_service(FRONT, "web")
    for name in ("web", "www", "tasks.web", "web.1.aaa"):
        assert records.lookup(name, [FRONT]) is None


def test_replacing_a_service_drops_its_old_aliases(records):
    records.set_service(FRONT, "web", ["site"], "10.0.1.3", "vip")
    assert records.lookup("www", [FRONT]) is None
    assert records.lookup("site", [FRONT]) == ["10.0.1.3"]


def test_a_task_seen_before_its_service_already_resolves():
    r = DnsRecords()
    r.set_task(FRONT, "api", "api.1.x", "10.0.1.9")
    assert r.lookup("tasks.api", [FRONT]) == ["10.0.1.9"]
    assert r.lookup("api", [FRONT]) is None


def test_vip_mode_needs_a_vip():
    with pytest.raises(ValueError, match="no VIP"):
        DnsRecords().set_service(FRONT, "web", [], None, "vip")


# --- answer() ----------------------------------------------------------------------------------------------


def test_a_query_for_a_service_gets_its_vip_with_dockers_ttl(records):
    reply = ask(records, "web")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.qr and reply.header.ra
    assert addresses(reply) == ["10.0.1.2"]
    assert [rr.ttl for rr in reply.rr] == [RECORD_TTL] == [600]


def test_reply_echoes_the_query_id_and_question(records):
    query = DNSRecord.question("TASKS.db")
    reply = DNSRecord.parse(answer(query.pack(), [BACK], records))
    assert reply.header.id == query.header.id
    assert str(reply.q.qname) == "TASKS.db."
    assert addresses(reply) == ["10.0.2.5", "10.0.2.6"]


def test_unknown_or_foreign_names_are_left_for_forwarding(records):
    assert ask(records, "example.com") is None
    assert ask(records, "db", networks=[FRONT]) is None


def test_aaaa_for_a_known_name_is_empty_noerror_not_forwarded(records):
    reply = ask(records, "web", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and reply.rr == []
    assert ask(records, "example.com", "AAAA") is None


def test_other_types_for_known_names_are_forwarded(records):
    assert ask(records, "web", "TXT") is None


@pytest.mark.parametrize(
    "packet",
    [b"\x12\x34" + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3fweb", b"\xab\xcd" + b"\x00" * 10],
    ids=["truncated-question", "no-question"],
)
def test_malformed_queries_get_formerr(records, packet):
    assert is_query(packet)
    reply = DNSRecord.parse(answer(packet, [FRONT], records))
    assert reply.header.rcode == RCODE.FORMERR
    assert reply.header.id == int.from_bytes(packet[:2], "big")


def test_random_bytes_never_raise(records):
    rng = random.Random(7)
    for _ in range(2000):
        packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(12, 80)))
        if is_query(packet):
            reply = answer(packet, [FRONT, BACK], records)
            assert reply is None or DNSRecord.parse(reply).header.qr


def test_replies_and_short_packets_are_not_queries():
    reply = DNSRecord.question("web").reply().pack()
    assert not is_query(reply)
    assert not is_query(b"\x00" * 11)


def test_large_udp_answers_are_truncated_and_complete_over_tcp():
    r = DnsRecords()
    r.set_service(BACK, "big", [], None, "dnsrr")
    for i in range(100):
        r.set_task(BACK, "big", f"big.{i}.x", f"10.0.3.{i + 1}")
    udp = answer(DNSRecord.question("big").pack(), [BACK], r)
    assert len(udp) <= UDP_REPLY_SIZE and DNSRecord.parse(udp).header.tc
    tcp = DNSRecord.parse(answer(DNSRecord.question("big").pack(), [BACK], r, tcp=True))
    assert not tcp.header.tc and len(tcp.rr) == 100
    edns = DNSRecord.question("big")
    edns.add_ar(EDNS0(udp_len=4096))
    assert len(DNSRecord.parse(answer(edns.pack(), [BACK], r)).rr) == 100


def test_resolv_conf_upstreams_skip_loopback_and_keep_three():
    text = textwrap.dedent("""\
        # comment
        nameserver 127.0.0.53
        nameserver 10.0.0.2
        search example.com
        nameserver fe80::1%eth0
        nameserver 2001:db8::1
        nameserver ::1
        nameserver 10.0.0.3
        nameserver 10.0.0.4
    """)
    assert parse_resolv_conf(text) == [("10.0.0.2", 53), ("2001:db8::1", 53), ("10.0.0.3", 53)]


# --- a real server inside a network namespace --------------------------------------------------------------

RUN_PREFIX = f"rstdns-{uuid.uuid4().hex[:6]}-"
GOOD_UPSTREAM = ("127.0.0.53", 53)
SILENT_UPSTREAM = ("127.0.0.54", 53)
UPSTREAM_ANSWER = "192.0.2.53"

# Answers A 192.0.2.53 for any name over UDP and TCP on GOOD_UPSTREAM; reads and drops on SILENT_UPSTREAM.
FAKE_UPSTREAM = f"""
import socket, struct, threading
from dnslib import DNSRecord, RR, A, QTYPE
def reply(data):
    q = DNSRecord.parse(data)
    r = q.reply(aa=0)
    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A({UPSTREAM_ANSWER!r}), ttl=5))
    return r.pack()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind({GOOD_UPSTREAM!r})
tcp = socket.socket(); tcp.bind({GOOD_UPSTREAM!r}); tcp.listen()
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); silent.bind({SILENT_UPSTREAM!r})
def serve_udp():
    while True:
        data, addr = udp.recvfrom(65535)
        udp.sendto(reply(data), addr)
def serve_tcp():
    while True:
        conn, _ = tcp.accept()
        with conn:
            size = struct.unpack("!H", conn.recv(2))[0]
            out = reply(conn.recv(size))
            conn.sendall(struct.pack("!H", len(out)) + out)
threading.Thread(target=serve_udp, daemon=True).start()
threading.Thread(target=serve_tcp, daemon=True).start()
print("ready", flush=True)
while silent.recv(65535): pass
"""

# A stub resolver inside the namespace: one query to 127.0.0.11:53, the outcome as JSON.
CLIENT = """
import json, socket, struct, sys, time
from dnslib import DNSRecord
name, qtype, proto = sys.argv[1:4]
query = DNSRecord.question(name, qtype).pack()
start = time.monotonic()
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(8)
    s.sendto(query, ("127.0.0.11", 53)); data = s.recv(65535)
else:
    s = socket.create_connection(("127.0.0.11", 53), timeout=8)
    s.sendall(struct.pack("!H", len(query)) + query)
    size = struct.unpack("!H", s.recv(2))[0]; data = b""
    while len(data) < size: data += s.recv(size - len(data))
r = DNSRecord.parse(data)
print(json.dumps({"rcode": r.header.rcode, "addresses": sorted(str(rr.rdata) for rr in r.rr),
                  "seconds": time.monotonic() - start}))
"""


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    return None


@pytest.fixture(scope="module")
def namespace():
    """A fresh namespace with loopback up and the fake upstream running in it; removed even on failure."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"{RUN_PREFIX}ns"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    upstream = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        upstream = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", FAKE_UPSTREAM], stdout=subprocess.PIPE, text=True
        )
        assert upstream.stdout.readline().strip() == "ready"
        yield name
    finally:
        if upstream is not None:
            upstream.kill()
            upstream.wait()
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


async def query_inside(namespace: str, name: str, qtype: str = "A", proto: str = "udp") -> dict:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, "-c", CLIENT, name, qtype, proto,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


def server(namespace: str, records: DnsRecords, upstreams, **kw) -> DnsServer:
    return DnsServer(f"/run/netns/{namespace}", [FRONT], records, upstreams=upstreams, **kw)


async def test_server_in_a_namespace_answers_service_names_over_udp_and_tcp(namespace, records):
    own_namespace = os.readlink("/proc/thread-self/ns/net")
    async with server(namespace, records, [GOOD_UPSTREAM]):
        assert os.readlink("/proc/thread-self/ns/net") == own_namespace  # only the helper thread moved
        udp, tcp = await asyncio.gather(
            query_inside(namespace, "web"), query_inside(namespace, "TASKS.web", proto="tcp")
        )
        hidden = await query_inside(namespace, "db")  # on BACK, which this task is not attached to: forwarded
    assert udp["addresses"] == ["10.0.1.2"]
    assert tcp["addresses"] == ["10.0.1.5", "10.0.1.6"]
    assert hidden["addresses"] == [UPSTREAM_ANSWER]


async def test_unknown_names_are_forwarded_to_the_upstream_inside_the_namespace(namespace, records):
    async with server(namespace, records, [GOOD_UPSTREAM]):
        udp = await query_inside(namespace, "example.test")
        tcp = await query_inside(namespace, "example.test", proto="tcp")
    assert udp["rcode"] == tcp["rcode"] == RCODE.NOERROR
    assert udp["addresses"] == tcp["addresses"] == [UPSTREAM_ANSWER]


async def test_an_upstream_that_never_answers_gives_servfail_after_the_timeout(namespace, records):
    async with server(namespace, records, [SILENT_UPSTREAM], forward_timeout=0.5):
        result = await query_inside(namespace, "example.test")
    assert result["rcode"] == RCODE.SERVFAIL
    assert 0.4 < result["seconds"] < 3


async def test_a_silent_upstream_is_skipped_for_the_next_one(namespace, records):
    async with server(namespace, records, [SILENT_UPSTREAM, GOOD_UPSTREAM], forward_timeout=0.5):
        result = await query_inside(namespace, "example.test")
    assert result["addresses"] == [UPSTREAM_ANSWER]


async def test_close_releases_the_address_for_the_next_task_server(namespace, records):
    first = server(namespace, records, [])
    await first.start()
    await first.close()
    async with server(namespace, records, []):
        forwarded = await query_inside(namespace, "example.test")
        known = await query_inside(namespace, "web")
    assert forwarded["rcode"] == RCODE.SERVFAIL  # no upstreams at all
    assert known["addresses"] == ["10.0.1.2"]


async def test_a_missing_namespace_is_a_clear_error(namespace, records):
    with pytest.raises(DataplaneError, match="cannot open network namespace"):
        await server(f"{namespace}-missing", records, []).start()
