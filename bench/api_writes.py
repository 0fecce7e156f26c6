"""The one client of `python -m bench raft`'s client-API path: every system it measures over HTTP gets the same
aiohttp session code, the same window of writes in flight and the same clock (`bench.workload`).

A system is an `HttpWrites`: the URL a write is POSTed to and the JSON body of one write. raftswarm's is its
node API's store endpoint on the node's Unix socket, as the CLI reaches it (`raftswarm_transact`); etcd's is
its v3 JSON gateway on its client URL (`etcd_put`). The client runs in the bench's own process, on the same
CPUs as the members, and each line says how much CPU the client and the members used, so a reader sees
when the client, not the system, was what ran out.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from raftswarm.store.state import put

from .workload import (
    PAYLOAD_BYTES,
    SEQUENTIAL,
    WRITE_TIMEOUT,
    Measurement,
    WorkloadPlan,
    Write,
    WriteFailed,
    in_flight_scenario,
    sequential_writes,
    windowed_writes,
)

RAFTSWARM_KIND = "bench"
"""A store kind of the benchmark's own: the node API refuses writes to the kinds the swarm keeps."""

KEEPALIVE_SECONDS = 60.0
"""How long an idle connection stays pooled: the window's connections idle through the whole sequential
scenario (at most `max_seconds`, 20 s by default) and must still be open for the in-flight one."""

RESPONSE_EXCERPT = 300
"""Characters of an error answer quoted in the failure message."""


@dataclass(frozen=True)
class HttpWrites:
    """How one system takes a write over HTTP: the URL to POST to and the JSON body that writes `value` at
    `key`. With `socket_path` the client connects to that Unix socket instead of the URL's host."""

    url: str
    body: Callable[[str, str], dict]
    socket_path: str | None = None

    @property
    def transport(self) -> str:
        return "unix" if self.socket_path else "tcp"


def raftswarm_transact(socket_path: Path) -> HttpWrites:
    """`POST /raftswarm/store/transact` with one `put`, encoded as the store encodes it."""

    def body(key: str, value: str) -> dict:
        return {"operations": [put(RAFTSWARM_KIND, key, value).encode()], "timeout": WRITE_TIMEOUT}

    return HttpWrites("http://localhost/raftswarm/store/transact", body, str(socket_path))


def etcd_put(client_url: str) -> HttpWrites:
    """`POST /v3/kv/put`: the gRPC-gateway's JSON form of `Put`, keys and values base64-encoded."""

    def body(key: str, value: str) -> dict:
        return {"key": _base64(key), "value": _base64(value)}

    return HttpWrites(f"{client_url}/v3/kv/put", body)


async def measure_api(system: str, endpoint: HttpWrites, plan: WorkloadPlan, member_pids: list[int]) -> list[dict]:
    """Warm up, then the sequential and in-flight scenarios, through `endpoint`; one record each, with the
    CPU seconds this process (the client) and the members spent on it."""
    value = secrets.token_hex(PAYLOAD_BYTES // 2)  # PAYLOAD_BYTES characters, stored as that many bytes
    async with _session(endpoint, plan.in_flight) as session:
        write = _writer(system, session, endpoint, value)
        # With the whole window, so every connection the in-flight scenario uses is open before it starts.
        await windowed_writes(system, "warmup", write, plan.warmup, plan.in_flight, plan.max_seconds)
        return [
            await _costed(
                sequential_writes(system, SEQUENTIAL, write, plan.writes, plan.max_seconds), endpoint, member_pids
            ),
            await _costed(
                windowed_writes(
                    system, in_flight_scenario(plan.in_flight), write, plan.pipelined_writes, plan.in_flight,
                    plan.max_seconds,
                ),
                endpoint, member_pids,
            ),
        ]


async def _costed(scenario: Awaitable[Measurement], endpoint: HttpWrites, member_pids: list[int]) -> dict:
    client_before, members_before = time.process_time(), cpu_seconds(member_pids)
    measurement = await scenario
    return {
        **measurement.record(),
        "transport": endpoint.transport,
        "client_cpu_s": round(time.process_time() - client_before, 3),
        "members_cpu_s": round(cpu_seconds(member_pids) - members_before, 3),
    }


def _session(endpoint: HttpWrites, connections: int) -> aiohttp.ClientSession:
    options = {"limit": connections, "keepalive_timeout": KEEPALIVE_SECONDS}
    if endpoint.socket_path is not None:
        connector = aiohttp.UnixConnector(path=endpoint.socket_path, **options)
    else:
        connector = aiohttp.TCPConnector(**options)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=WRITE_TIMEOUT))


def _writer(system: str, session: aiohttp.ClientSession, endpoint: HttpWrites, value: str) -> Write:
    async def write(key: str) -> None:
        try:
            async with session.post(endpoint.url, json=endpoint.body(key, value)) as response:
                answer = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WriteFailed(f"{system} at {endpoint.url}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            excerpt = answer[:RESPONSE_EXCERPT].decode(errors="replace")
            raise WriteFailed(f"{system} answered {response.status} at {endpoint.url}: {excerpt}")
        json.loads(answer)  # as any client would, to read the committed revision or version

    return write


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far (0 for one that has exited)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
