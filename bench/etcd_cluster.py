"""etcd as `python -m bench raft` runs it: `EtcdCluster`, 3 members of Debian's `etcd-server` on 127.0.0.1.

Each member gets its own free client and peer port and a data directory under the bench's temporary
directory; everything else is etcd's default -- an fsync of the WAL before every commit, the default
`--snapshot-count`, no TLS (raftswarm's Raft runs over mutual TLS; etcd's default does not). The members
are started as child processes and ended by their PIDs: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import aiohttp

from raftswarm.localcluster.managers import free_port

INSTALL_HINT = "etcd is not installed: apt-get install etcd-server (Debian 12 has etcd 3.4)"

CLUSTER_TOKEN = "raftswarm-bench"

HEALTH_POLL = 0.05
"""Seconds between looks at the members while they start and elect a leader."""

PROBE_TIMEOUT = 2.0
"""Seconds one health or status request may take while the cluster starts."""

STOP_GRACE = 5.0
"""Seconds a member has to exit after SIGTERM before it gets SIGKILL."""

LOG_TAIL_LINES = 20


class EtcdFailed(Exception):
    """A member exited before the cluster elected a leader; `EtcdCluster.log_tails()` says why."""


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    """`3.4.23` from `etcd --version`, or what it printed if the format is not the expected one."""
    printed = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.search(r"etcd Version: (\S+)", printed)
    return found.group(1) if found else printed.strip()


@dataclass(frozen=True)
class EtcdMember:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path


class EtcdCluster:
    """`async with EtcdCluster(binary, directory, 3) as cluster:` starts the members and waits until they all
    answer healthy and agree on a leader; `leader_url` is then the leader's client URL."""

    def __init__(self, binary: str, directory: Path, size: int) -> None:
        self.binary = binary
        self.members = [
            EtcdMember(
                f"etcd{i + 1}", f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}",
                directory / f"etcd{i + 1}", directory / f"etcd{i + 1}.log",
            )
            for i in range(size)
        ]
        self.processes: list[asyncio.subprocess.Process] = []
        self.leader_url = ""

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def __aenter__(self) -> Self:
        try:
            await self._start()
            self.leader_url = await self._wait_for_leader()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _arguments(self, member: EtcdMember) -> list[str]:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", CLUSTER_TOKEN,
            "--logger", "zap",
            "--log-level", "warn",
        ]

    async def _start(self) -> None:
        for member in self.members:
            with open(member.log_path, "wb") as log:  # the child keeps its own descriptor
                self.processes.append(
                    await asyncio.create_subprocess_exec(
                        self.binary, *self._arguments(member),
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    )
                )

    async def _wait_for_leader(self) -> str:
        """Polls every member's `/v3/maintenance/status` until all answer and name the same leader; returns
        that leader's client URL. The caller bounds the wait."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session:
            while True:
                for process, member in zip(self.processes, self.members, strict=True):
                    if process.returncode is not None:
                        raise EtcdFailed(f"{member.name} exited with status {process.returncode}")
                statuses = [await _status(session, m.client_url) for m in self.members]
                if all(statuses):
                    leaders = {s["leader"] for s in statuses}
                    by_id = {s["header"]["member_id"]: m.client_url for s, m in zip(statuses, self.members)}
                    if len(leaders) == 1 and (leader := leaders.pop()) in by_id:
                        return by_id[leader]
                await asyncio.sleep(HEALTH_POLL)

    async def close(self) -> None:
        """SIGTERM to every member, then SIGKILL to those still running once the grace period is over."""
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    def log_tails(self) -> str:
        parts = []
        for member in self.members:
            try:
                tail = member.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except OSError:
                tail = ["(no log)"]
            parts.append(f"--- {member.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


async def _status(session: aiohttp.ClientSession, client_url: str) -> dict | None:
    """The member's status, or None while it does not answer or knows no leader yet."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.post(f"{client_url}/v3/maintenance/status", json={}) as response:
            if response.status == 200:
                status = json.loads(await response.read())
                if status.get("leader", "0") != "0":
                    return status
    return None
