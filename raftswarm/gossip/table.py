"""Network-scoped tables (after libnetwork's networkdb), as a pure state machine.

An entry is keyed by (network, table, key) and holds (value, owner node, Lamport time, deleted flag).
Only nodes attached to a network store its entries; which node is on which network is itself gossiped
as attachments ordered by their own Lamport clock. A local change bumps the table clock and is sent
(TABLE_EVENT) to every node on that network; a received entry wins if its (Lamport time, owner) is
greater than the one held, so every node settles on the same value whatever the order of arrival.
Deletes are tombstones, kept `reap_after` seconds so that a late, older create cannot resurrect the
entry, then reaped. When a node leaves a network or is declared dead, every node deletes that node's
entries in that network locally -- this is how a dead task's address disappears from DNS.

Anti-entropy: a node that joins a network announces it (NETWORK_EVENT) and each node on the network
answers with its full state for it (NETWORK_SYNC, over TCP); every `sync_interval` each node also
syncs each of its networks with one random peer on that network. A member that appears is sent every
attachment known (ATTACHMENTS). Addresses come from membership: feed each `MemberEvent` to
`on_member_event`. Outputs are `TableStep`s of (address, message) packets and `TableEvent`s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from .membership import MemberEvent
from .wire import MAX_PACKET_BYTES, SEAL_OVERHEAD, Message, MessageType, encode


@dataclass(frozen=True)
class TableConfig:
    reap_after: float = 1800.0  # networkdb's reapEntryInterval: 30 minutes
    sync_interval: float = 30.0  # networkdb's bulk sync period


@dataclass(frozen=True)
class TableEvent:
    kind: Literal["create", "update", "delete"]
    network: str
    table: str
    key: str
    value: bytes
    owner: str


@dataclass
class TableStep:
    packets: list[tuple[str, Message]] = field(default_factory=list)
    events: list[TableEvent] = field(default_factory=list)


@dataclass
class Entry:
    value: bytes
    owner: str
    ltime: int
    deleted: bool = False
    deleted_at: float = 0.0


@dataclass
class Attachment:
    ltime: int
    leaving: bool
    changed: float


class LamportClock:
    def __init__(self) -> None:
        self.time = 0

    def tick(self) -> int:
        self.time += 1
        return self.time

    def witness(self, seen: int) -> None:
        self.time = max(self.time, seen)


class NetworkTables:
    """One node's tables for the networks it is attached to, and its view of who is on which network."""

    def __init__(self, name: str, config: TableConfig | None = None):
        self.name = name
        self.config = config or TableConfig()
        self.network_clock = LamportClock()
        self.table_clock = LamportClock()
        self.attachments: dict[tuple[str, str], Attachment] = {}  # (node, network) -> attachment
        self.entries: dict[tuple[str, str, str], Entry] = {}  # (network, table, key) -> entry
        self._addrs: dict[str, str] = {}  # live members other than us -> address
        self._next_sync = 0.0
        self._step = TableStep()

    # -- queries -----------------------------------------------------------------------------------------

    def networks(self) -> set[str]:
        """The networks this node is on."""
        return self._networks_of(self.name)

    def nodes_on(self, network: str) -> set[str]:
        return {n for (n, net), a in self.attachments.items() if net == network and not a.leaving}

    def get(self, network: str, table: str) -> dict[str, bytes]:
        """The live entries of one table: key -> value."""
        return {
            k: e.value for (net, t, k), e in self.entries.items() if net == network and t == table and not e.deleted
        }

    # -- local changes -----------------------------------------------------------------------------------

    def join_network(self, network: str, now: float) -> TableStep:
        if network not in self.networks():
            rec = {"node": self.name, "network": network, "ltime": self.network_clock.tick(), "leaving": False}
            self.attachments[(self.name, network)] = Attachment(rec["ltime"], False, now)
            for addr in self._addrs.values():
                self._send(addr, Message(MessageType.NETWORK_EVENT, rec))
        return self._flush()

    def leave_network(self, network: str, now: float) -> TableStep:
        """Detach: tell everyone, and forget the network's entries (a node off a network holds none)."""
        if network in self.networks():
            rec = {"node": self.name, "network": network, "ltime": self.network_clock.tick(), "leaving": True}
            self.attachments[(self.name, network)] = Attachment(rec["ltime"], True, now)
            for addr in self._addrs.values():
                self._send(addr, Message(MessageType.NETWORK_EVENT, rec))
            for k in [k for k in self.entries if k[0] == network]:
                e = self.entries.pop(k)
                if not e.deleted:
                    self._event("delete", k, e)
            for k in [k for k in self.attachments if k[1] == network and k[0] != self.name]:
                del self.attachments[k]
        return self._flush()

    def create(self, network: str, table: str, key: str, value: bytes, now: float) -> TableStep:
        current = self.entries.get((network, table, key))
        if current is not None and not current.deleted:
            raise KeyError(f"entry {key!r} already exists in table {table!r} of network {network!r}")
        return self._local(network, table, key, value, False, now)

    def update(self, network: str, table: str, key: str, value: bytes, now: float) -> TableStep:
        self._require(network, table, key)
        return self._local(network, table, key, value, False, now)

    def delete(self, network: str, table: str, key: str, now: float) -> TableStep:
        value = self._require(network, table, key).value
        return self._local(network, table, key, value, True, now)

    # -- inputs ------------------------------------------------------------------------------------------

    def on_member_event(self, event: MemberEvent, now: float) -> TableStep:
        """Track member addresses; send a new member our attachments; clean up after a gone member."""
        if event.name == self.name:
            return self._flush()
        if event.kind in ("join", "update"):
            new = event.name not in self._addrs
            self._addrs[event.name] = event.addr
            if new:
                self._send(event.addr, self._attachments_message())
        elif event.kind in ("dead", "leave"):
            self._addrs.pop(event.name, None)
            for node, net in [k for k in self.attachments if k[0] == event.name]:
                del self.attachments[(node, net)]
                self._drop_owner(event.name, net, now)
        return self._flush()

    def receive(self, from_addr: str, message: Message, now: float) -> TableStep:
        t = message.type
        if t == MessageType.TABLE_EVENT:
            body = dict(message.body)
            self._merge_entry(body.pop("network"), body, now)
        elif t == MessageType.NETWORK_EVENT:
            changed = self._merge_attachment(message.body, now)
            node, net = message["node"], message["network"]
            if changed and not message["leaving"] and net in self.networks() and node in self._addrs:
                self._send(self._addrs[node], self.network_state(net, reply=True))
        elif t == MessageType.NETWORK_SYNC:
            self._merge_network_state(message, now)
            net = message["network"]
            if not message["reply"] and net in self.networks():
                self._send(from_addr, self.network_state(net, reply=True))
        elif t == MessageType.ATTACHMENTS:
            for rec in message["attachments"]:
                self._merge_attachment(rec, now)
        return self._flush()

    def tick(self, now: float, rng: random.Random) -> TableStep:
        """Reap old tombstones and departures; periodically sync each network with a random peer on it."""
        for k in [k for k, e in self.entries.items() if e.deleted and now - e.deleted_at >= self.config.reap_after]:
            del self.entries[k]
        for k in [k for k, a in self.attachments.items() if a.leaving and now - a.changed >= self.config.reap_after]:
            del self.attachments[k]
        if now >= self._next_sync:
            self._next_sync = now + self.config.sync_interval
            for net in sorted(self.networks()):
                peers = sorted(n for n in self.nodes_on(net) if n in self._addrs)
                if peers:
                    self._send(self._addrs[rng.choice(peers)], self.network_state(net, reply=False))
        return self._flush()

    # -- full state of one network (TCP) -----------------------------------------------------------------

    def network_state(self, network: str, reply: bool = False) -> Message:
        """A NETWORK_SYNC carrying every entry (tombstones too) and attachment of `network`."""
        if network not in self.networks():
            raise KeyError(f"this node is not on network {network!r}; only its members exchange its state")
        entries = [
            {"table": t, "key": k, "value": e.value, "owner": e.owner, "ltime": e.ltime, "deleted": e.deleted}
            for (net, t, k), e in sorted(self.entries.items())
            if net == network
        ]
        nodes = [
            {"node": n, "network": net, "ltime": a.ltime, "leaving": a.leaving}
            for (n, net), a in sorted(self.attachments.items())
            if net == network
        ]
        return Message(
            MessageType.NETWORK_SYNC, {"network": network, "reply": reply, "entries": entries, "nodes": nodes}
        )

    def merge_network_state(self, message: Message, now: float) -> TableStep:
        """Merge a peer's `network_state`: attachments first (entries are only taken from attached owners)."""
        self._merge_network_state(message, now)
        return self._flush()

    def _merge_network_state(self, message: Message, now: float) -> None:
        net = message["network"]
        for rec in message["nodes"]:
            if rec["network"] == net:
                self._merge_attachment(rec, now)
        for rec in message["entries"]:
            self._merge_entry(net, rec, now)

    # -- merging -----------------------------------------------------------------------------------------

    def _merge_entry(self, network: str, rec: dict, now: float) -> None:
        if network not in self.networks():
            return  # a node not on the network never stores (or relays) its entries
        self.table_clock.witness(rec["ltime"])
        owner = rec["owner"]
        if not rec["deleted"] and owner not in self.nodes_on(network):
            return  # from a node that left the network or died: it must not come back through a stale copy
        key = (network, rec["table"], rec["key"])
        current = self.entries.get(key)
        if current is not None and (rec["ltime"], owner) <= (current.ltime, current.owner):
            return
        entry = Entry(rec["value"], owner, rec["ltime"], rec["deleted"], now if rec["deleted"] else 0.0)
        self.entries[key] = entry
        if entry.deleted:
            if current is not None and not current.deleted:
                self._event("delete", key, entry)
        else:
            self._event("create" if current is None or current.deleted else "update", key, entry)

    def _merge_attachment(self, rec: dict, now: float) -> bool:
        self.network_clock.witness(rec["ltime"])
        node, net = rec["node"], rec["network"]
        if node == self.name or node not in self._addrs:
            return False  # we are the authority on our own attachments; the dead have none
        current = self.attachments.get((node, net))
        if current is not None and rec["ltime"] <= current.ltime:
            return False
        self.attachments[(node, net)] = Attachment(rec["ltime"], rec["leaving"], now)
        if rec["leaving"]:
            self._drop_owner(node, net, now)
        return True

    def _drop_owner(self, owner: str, network: str, now: float) -> None:
        """Tombstone every entry `owner` holds in `network` (kept at its Lamport time, so the owner's own
        copy of that version is not taken back)."""
        for key, e in self.entries.items():
            if key[0] == network and e.owner == owner and not e.deleted:
                e.deleted, e.deleted_at = True, now
                self._event("delete", key, e)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _local(self, network: str, table: str, key: str, value: bytes, deleted: bool, now: float) -> TableStep:
        if network not in self.networks():
            raise KeyError(f"this node is not on network {network!r}; join it first")
        body = {
            "network": network,
            "table": table,
            "key": key,
            "value": value,
            "owner": self.name,
            "ltime": self.table_clock.time + 1,
            "deleted": deleted,
        }
        message = Message(MessageType.TABLE_EVENT, body)
        if len(encode(message)) + SEAL_OVERHEAD > MAX_PACKET_BYTES:
            raise ValueError(f"table entry {key!r} does not fit in one {MAX_PACKET_BYTES}-byte gossip packet")
        self.table_clock.tick()
        current = self.entries.get((network, table, key))
        entry = Entry(value, self.name, body["ltime"], deleted, now if deleted else 0.0)
        self.entries[(network, table, key)] = entry
        kind = "delete" if deleted else ("create" if current is None or current.deleted else "update")
        self._event(kind, (network, table, key), entry)
        for node in sorted(self.nodes_on(network)):
            if node in self._addrs:
                self._send(self._addrs[node], message)
        return self._flush()

    def _require(self, network: str, table: str, key: str) -> Entry:
        e = self.entries.get((network, table, key))
        if e is None or e.deleted:
            raise KeyError(f"no entry {key!r} in table {table!r} of network {network!r}")
        return e

    def _networks_of(self, node: str) -> set[str]:
        return {net for (n, net), a in self.attachments.items() if n == node and not a.leaving}

    def _attachments_message(self) -> Message:
        recs = [
            {"node": n, "network": net, "ltime": a.ltime, "leaving": a.leaving}
            for (n, net), a in sorted(self.attachments.items())
        ]
        return Message(MessageType.ATTACHMENTS, {"attachments": recs})

    def _send(self, addr: str, message: Message) -> None:
        self._step.packets.append((addr, message))

    def _event(self, kind: str, key: tuple[str, str, str], e: Entry) -> None:
        self._step.events.append(TableEvent(kind, key[0], key[1], key[2], e.value, e.owner))  # type: ignore[arg-type]

    def _flush(self) -> TableStep:
        step, self._step = self._step, TableStep()
        return step
