"""The faults a chaos run injects into a live local cluster, and how each one is undone.

Every fault acts only on what the run's own `SwarmCluster` made: its node processes (by PID), the network
namespaces it created per node (nftables tables named after the cluster go inside them), and its nodes' state
directories. `Nemesis.heal()` undoes whatever is still in force (resumes paused nodes, lifts partitions, resets
disk delays, starts killed nodes), so a run always ends on a whole cluster, and `teardown()` removes the tables
even when the run failed.

- processes: `kill` (SIGKILL), `pause`/`resume` (SIGSTOP/SIGCONT), `start`;
- network: `partition` (groups that cannot reach each other), `one_way` (packets from some nodes to one node
  dropped, the other direction intact); rules live in the receiving/sending node's own namespace;
- disk: `slow_disk` (a delay after every WAL fdatasync, through the node's test hook: `raftswarm.raft.wal`
  reads it from `<state-dir>/raft/test-fsync-delay` when the node runs with RAFTSWARM_TEST_HOOKS=1),
  `tear_wal_tail` (a record cut short at the end of the newest segment: a crash during a write that was never
  acknowledged) and `flip_wal_byte` (one bit flipped inside an acknowledged record: corruption a node must
  refuse to start with);
- membership: `replace_manager` (demote, remove, wipe and join again with the manager token).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterable
from pathlib import Path

from raftswarm.images.store import ImageStore
from raftswarm.node.state_dir import StateDir
from raftswarm.node.networking import namespace_prefix
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster
from raftswarm.localcluster.hostnet import network_namespaces
from raftswarm.raft.wal import FSYNC_DELAY_FILE, SegmentHeader
from raftswarm.runtime.containers import release_all

TEST_HOOKS_ENV = "RAFTSWARM_TEST_HOOKS"
"""Set to 1 in the nodes' environment by the chaos runner; the nodes then honour the hook files below."""

CALL_TIMEOUT = 5.0
REJOIN_TIMEOUT = 60.0
POLL = 0.1


class FaultError(Exception):
    """A fault could not be injected or undone (the cluster is not in the state the run expected)."""


async def find_leader(cluster: SwarmCluster, timeout: float = 10.0) -> ClusterNode:
    """The leader, waiting out an election of up to `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (leader := await cluster.leader()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise FaultError(f"no manager leads after {timeout:g} s")
        await asyncio.sleep(POLL)
    return leader


class Nemesis:
    """Injects faults into one cluster and remembers what to undo."""

    def __init__(self, cluster: SwarmCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.table = "rswchaos_" + cluster.name.replace("-", "_")
        self.paused: set[ClusterNode] = set()
        self.killed: set[ClusterNode] = set()
        self.slowed: set[ClusterNode] = set()
        self._drops: dict[ClusterNode, set[tuple[str, str]]] = {}
        """node -> (direction, peer IP) rules in force in its namespace; direction "in" or "out"."""

    # -- processes -------------------------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        self.cluster.kill(node)
        self.paused.discard(node)
        self.killed.add(node)

    def pause(self, node: ClusterNode) -> None:
        if node.process is None or not node.running():
            raise FaultError(f"{node.name} is not running: nothing to pause")
        node.process.signal(signal.SIGSTOP)
        self.paused.add(node)

    def resume(self, node: ClusterNode) -> None:
        if node.process is not None:
            node.process.signal(signal.SIGCONT)
        self.paused.discard(node)

    async def start(self, node: ClusterNode) -> None:
        """Start a killed node again and wait until its API answers."""
        self.cluster.start(node)
        self.killed.discard(node)
        await self.cluster.wait_ready(node)

    # -- network ---------------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[ClusterNode]) -> None:
        """No packet between nodes of different groups (both directions); nodes in no group are untouched."""
        sets = [set(group) for group in groups]
        for i, group in enumerate(sets):
            others = set().union(*(g for j, g in enumerate(sets) if j != i))
            for node in group:
                self._drops.setdefault(node, set()).update(
                    [("in", peer.ip) for peer in others] + [("out", peer.ip) for peer in others]
                )
        self._apply(set().union(*sets))

    def isolate(self, node: ClusterNode) -> None:
        self.partition([node], [n for n in self.cluster.nodes if n is not node])

    def one_way(self, receiver: ClusterNode, senders: Iterable[ClusterNode]) -> None:
        """Packets from `senders` to `receiver` are lost; `receiver`'s own packets still reach them."""
        self._drops.setdefault(receiver, set()).update(("in", peer.ip) for peer in senders)
        self._apply({receiver})

    def heal_network(self) -> None:
        touched = set(self._drops)
        self._drops.clear()
        self._apply(touched)

    def _apply(self, nodes: Iterable[ClusterNode]) -> None:
        for node in nodes:
            if node.namespace is None:
                raise FaultError("network faults need a network namespace per node (run as root)")
            rules = self._drops.get(node, set())
            # Creating the table first makes the delete succeed whether or not it existed; one `nft -f` is
            # one transaction, so the node never sees a half-written rule set.
            script = f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
            if rules:
                script += f"table inet {self.table} {{\n"
                for chain, hook, match in (("input", "input", "saddr"), ("output", "output", "daddr")):
                    direction = "in" if chain == "input" else "out"
                    peers = sorted(ip for d, ip in rules if d == direction)
                    script += f"  chain {chain} {{\n    type filter hook {hook} priority -10; policy accept;\n"
                    if peers:
                        script += f"    ip {match} {{ {', '.join(peers)} }} drop\n"
                    script += "  }\n"
                script += "}\n"
            _nft(node.namespace, script)
            if not rules:
                self._drops.pop(node, None)

    # -- disk ------------------------------------------------------------------------------------------

    def slow_disk(self, node: ClusterNode, delay: float) -> None:
        (node.state_dir / "raft" / FSYNC_DELAY_FILE).write_text(f"{delay}\n")
        self.slowed.add(node)

    def fast_disk(self, node: ClusterNode) -> None:
        (node.state_dir / "raft" / FSYNC_DELAY_FILE).unlink(missing_ok=True)
        self.slowed.discard(node)

    def tear_wal_tail(self, node: ClusterNode) -> str:
        """On a stopped node: append a record whose body was cut short, as a crash in the middle of writing
        the next (never acknowledged) record leaves it. The node must cut it off and start."""
        self._require_stopped(node)
        segment = newest_segment(node)
        body_length = self.rng.randrange(64, 4096)
        header = struct.pack(">I", body_length)
        written = self.rng.randrange(0, body_length)
        with segment.open("ab") as wal:
            wal.write(header + struct.pack(">I", zlib.crc32(header)) + os.urandom(written))
        return f"{segment.name}: a {body_length}-byte record cut after {written} bytes"

    def flip_wal_byte(self, node: ClusterNode) -> str:
        """On a stopped node: flip one bit in the middle of the newest WAL segment's records (acknowledged
        data). The node must refuse to start rather than serve what is left."""
        self._require_stopped(node)
        segment = newest_segment(node)
        size = segment.stat().st_size
        header_size = SegmentHeader.SIZE  # flip inside the records, not the header
        if size <= header_size + 64:
            raise FaultError(f"{segment} holds too little to corrupt")
        offset = self.rng.randrange(header_size + (size - header_size) // 4, header_size + (size - header_size) // 2)
        with segment.open("r+b") as wal:
            wal.seek(offset)
            byte = wal.read(1)[0]
            wal.seek(offset)
            wal.write(bytes([byte ^ (1 << self.rng.randrange(8))]))
        return f"{segment.name}: bit flipped at byte {offset} of {size}"

    def _require_stopped(self, node: ClusterNode) -> None:
        if node.running():
            raise FaultError(f"{node.name} is running: its WAL is only changed while it is stopped")

    # -- membership ------------------------------------------------------------------------------------

    async def replace_manager(self, node: ClusterNode, via: ClusterNode) -> None:
        """Take a manager out of the swarm and put a fresh one (empty state, new node ID) in its place, the
        way an operator replaces a broken manager: demote and remove it through `via`, wipe its state, join
        it again with the manager token."""
        cluster = self.cluster
        old_id = node.node_id
        async with cluster.client(via, CALL_TIMEOUT) as api:
            current = await api.node_inspect(old_id)
            await api.node_update(old_id, current["Version"]["Index"], {**current["Spec"], "Role": "worker"})
            tokens = (await api.swarm_inspect())["JoinTokens"]
        await _until(lambda: _not_a_voter(cluster, via, node), REJOIN_TIMEOUT, f"{node.name} was not demoted")
        if node.running():
            cluster.kill(node)
        self.killed.discard(node)
        async with cluster.client(via, CALL_TIMEOUT) as api:
            await api.node_remove(old_id, force=True)
        state = StateDir(node.state_dir)
        if state.worker_containers.is_dir():
            release_all(state.worker_containers, ImageStore(state.images), exec_root=cluster.exec_root(node))
        # The old identity's overlay namespaces: `cluster down` only knows the nodes' current IDs.
        for namespace in network_namespaces():
            if namespace.startswith(f"{namespace_prefix(old_id)}ov-"):
                subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        shutil.rmtree(node.state_dir)
        node.state_dir.mkdir(mode=0o700)
        cluster.start(node)
        await cluster.wait_ready(node)
        async with cluster.client(node, REJOIN_TIMEOUT) as api:
            await api.swarm_join(
                {"ListenAddr": node.addr, "AdvertiseAddr": node.addr, "RemoteAddrs": [via.addr], "JoinToken": tokens["Manager"]}
            )
            node.node_id = (await api.info())["Swarm"]["NodeID"]
        cluster.save()

    # -- undoing ---------------------------------------------------------------------------------------

    async def heal(self) -> None:
        """Undo every fault still in force: the cluster is whole again (nodes may still be catching up)."""
        for node in list(self.paused):
            self.resume(node)
        for node in list(self.slowed):
            self.fast_disk(node)
        self.heal_network()
        for node in list(self.killed):
            await self.start(node)

    def teardown(self) -> None:
        """Best effort, for a run that failed half-way: let paused nodes run (so they can be stopped) and drop
        the nftables tables (they would go with the namespaces anyway)."""
        for node in list(self.paused):
            self.resume(node)
        try:
            self.heal_network()
        except (FaultError, subprocess.CalledProcessError, OSError):
            pass


def newest_segment(node: ClusterNode) -> Path:
    segments = sorted((node.state_dir / "raft" / "wal").glob("*.wal"))
    if not segments:
        raise FaultError(f"{node.name} has no WAL segment")
    return segments[-1]


def _nft(namespace: str, script: str) -> None:
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{namespace}", "nft", "-f", "-"], input=script, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise FaultError(f"nft in {namespace} failed: {done.stderr.strip()}\n{script}")


async def _not_a_voter(cluster: SwarmCluster, via: ClusterNode, node: ClusterNode) -> bool:
    status = await cluster.raft_status(via)
    return status is not None and node.raft_id not in status["voters"] and node.raft_id not in status["learners"]


async def _until(condition, timeout: float, failure: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise FaultError(failure)
        await asyncio.sleep(POLL)

