"""SWIM membership (after hashicorp/memberlist's state.go), as a pure state machine.

Every `probe_interval` a node pings one member, walking a shuffled list round-robin. No ack within
`probe_timeout` -> it asks `indirect_checks` other members to ping the target for it (PING_REQ). Still
no ack by the end of the interval -> the target is suspected. A suspicion that nobody refutes within
`suspicion_timeout` (which grows with log10 of the cluster size, memberlist's SuspicionMult scaling)
makes the member dead. A member that hears itself suspected or declared dead refutes by announcing
itself alive with a higher incarnation; for any member, a message with a higher incarnation supersedes
one with a lower. State changes are broadcast by piggybacking them on pings, acks and GOSSIP packets,
each retransmitted `retransmit_mult * ceil(log10(n + 1))` times. Dead members are remembered for
`dead_retention` seconds so that a late, stale alive does not resurrect them, then forgotten. PUSH_PULL
(over TCP) exchanges full state: on join, and every `push_pull_interval` for anti-entropy.

The core owns no socket, clock or randomness: `join`, `tick`, `receive` and `leave` take the time (and
an `random.Random`), and return a `Step` of packets to send and `MemberEvent`s to act on. Packets whose
type is in `wire.STREAM_TYPES` go over TCP, the rest over UDP.

Left out of memberlist: Lifeguard's awareness (local health) and suspicion confirmations, NACKs, the TCP
fallback ping, and address reclaim of dead names.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import msgpack

from .wire import MAX_META_BYTES, MAX_PACKET_BYTES, MemberState, Message, MessageType

PIGGYBACK_BUDGET = MAX_PACKET_BYTES - 200
"""Bytes of piggybacked updates per packet: the UDP limit less room for the message's own fields and the
seal's 32 bytes of key id, nonce and tag."""


@dataclass(frozen=True)
class MembershipConfig:
    """memberlist's DefaultLANConfig numbers. Tests run them in simulated time, so they cost nothing."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    push_pull_interval: float = 30.0
    dead_retention: float = 30.0  # memberlist's GossipToTheDeadTime


@dataclass(frozen=True)
class MemberEvent:
    """kind: "join" (new or back from dead), "update" (new meta/address, or a suspicion refuted),
    "suspect", "dead" (failed), "leave" (left gracefully)."""

    kind: Literal["join", "update", "suspect", "dead", "leave"]
    name: str
    addr: str
    incarnation: int
    meta: bytes


@dataclass
class Step:
    """What one input produced: packets to send as (address, message), and events to act on."""

    packets: list[tuple[str, Message]] = field(default_factory=list)
    events: list[MemberEvent] = field(default_factory=list)


@dataclass
class Member:
    name: str
    addr: str
    meta: bytes
    incarnation: int
    state: MemberState
    state_changed: float
    suspect_deadline: float = 0.0


@dataclass
class _Probe:
    target: str
    seq: int
    sent: float
    indirect_sent: bool = False


@dataclass
class _Relay:
    """A PING we send on behalf of a PING_REQ: its ack is forwarded to `requester` with `seq`."""

    requester: str
    seq: int
    expires: float


def suspicion_timeout(config: MembershipConfig, n: int) -> float:
    """memberlist's suspicionTimeout: SuspicionMult probe intervals, scaled by log10 of the cluster size."""
    return config.suspicion_mult * max(1.0, math.log10(max(1, n))) * config.probe_interval


def retransmit_limit(config: MembershipConfig, n: int) -> int:
    """memberlist's retransmitLimit: how many times each update is piggybacked before it is dropped."""
    return config.retransmit_mult * math.ceil(math.log10(n + 1))


class Membership:
    """One node's view of the cluster. `members` maps names to `Member`s, this node included."""

    def __init__(self, name: str, addr: str, config: MembershipConfig | None = None, meta: bytes = b""):
        if len(meta) > MAX_META_BYTES:
            raise ValueError(f"member meta is limited to {MAX_META_BYTES} bytes")
        self.name = name
        self.addr = addr
        self.config = config or MembershipConfig()
        self.members: dict[str, Member] = {name: Member(name, addr, meta, 0, MemberState.ALIVE, 0.0)}
        self.left = False
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._next_probe = 0.0
        self._next_gossip = 0.0
        self._next_push_pull: float | None = None
        self._relays: dict[int, _Relay] = {}
        self._broadcasts: dict[str, tuple[dict, int]] = {}  # member name -> (update record, times sent)
        self._step = Step()

    # -- inputs ------------------------------------------------------------------------------------------

    def join(self, seed_addrs: list[str], now: float) -> Step:
        """Announce ourselves and ask each seed for its full state (PUSH_PULL with join set)."""
        me = self.members[self.name]
        me.state_changed = now
        self._queue(self._update(MessageType.ALIVE, me, self.name))
        self._next_push_pull = now + self.config.push_pull_interval
        for addr in seed_addrs:
            if addr != self.addr:
                self._send(addr, self._push_pull(join=True, reply=False))
        return self._flush()

    def leave(self, now: float) -> Step:
        """Leave gracefully: tell every member we are gone (a DEAD about ourselves, from ourselves)."""
        me = self.members[self.name]
        me.incarnation += 1
        me.state, me.state_changed = MemberState.LEFT, now
        self.left = True
        updates = [self._update(MessageType.DEAD, me, self.name)]
        for m in self._live_others():
            self._send(m.addr, Message(MessageType.GOSSIP, {"updates": updates}))
        return self._flush()

    def set_meta(self, meta: bytes, now: float) -> Step:
        """Change this node's meta and announce it with a new incarnation."""
        if len(meta) > MAX_META_BYTES:
            raise ValueError(f"member meta is limited to {MAX_META_BYTES} bytes")
        me = self.members[self.name]
        me.meta = meta
        self._refute(me.incarnation)
        return self._flush()

    def tick(self, now: float, rng: random.Random) -> Step:
        """Advance timers: probe, indirect probe, suspicion expiry, gossip, push/pull, forgetting the dead."""
        if self.left:
            return self._flush()
        self._advance_probe(now, rng)
        for m in list(self.members.values()):
            if m.state == MemberState.SUSPECT and now >= m.suspect_deadline:
                self._mark_dead(m, m.incarnation, self.name, now)
            elif (
                m.state in (MemberState.DEAD, MemberState.LEFT)
                and m.name != self.name
                and now - m.state_changed >= self.config.dead_retention
            ):
                del self.members[m.name]
        self._relays = {s: r for s, r in self._relays.items() if r.expires > now}
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip(now, rng)
        if self._next_push_pull is not None and now >= self._next_push_pull:
            self._next_push_pull = now + self.config.push_pull_interval
            live = self._live_others()
            if live:
                self._send(rng.choice(live).addr, self._push_pull(join=False, reply=False))
        return self._flush()

    def receive(self, from_addr: str, message: Message, now: float, rng: random.Random) -> Step:
        """Handle one message (already opened by `wire.Keyring.open`) from `from_addr`."""
        if self.left:
            return self._flush()
        t = message.type
        for u in message.body.get("updates", ()):
            self._apply_update(u, now)
        if t == MessageType.PING:
            if message["target"] == self.name:
                self._send(from_addr, self._with_updates(MessageType.ACK, {"seq": message["seq"]}))
        elif t == MessageType.PING_REQ:
            self._seq += 1
            self._relays[self._seq] = _Relay(from_addr, message["seq"], now + self.config.probe_interval)
            ping = self._with_updates(MessageType.PING, {"seq": self._seq, "target": message["target"]})
            self._send(message["target_addr"], ping)
        elif t == MessageType.ACK:
            seq = message["seq"]
            if self._probe is not None and self._probe.seq == seq:
                self._probe = None
            relay = self._relays.pop(seq, None)
            if relay is not None:
                self._send(relay.requester, self._with_updates(MessageType.ACK, {"seq": relay.seq}))
        elif t == MessageType.PUSH_PULL:
            self._merge_state(message["members"], now)
            if not message["reply"]:
                self._send(from_addr, self._push_pull(join=False, reply=True))
        return self._flush()

    # -- full state (TCP push/pull) ----------------------------------------------------------------------

    def state_sync(self) -> list[dict]:
        """Every member we know, as wire MEMBER records."""
        return [
            {"node": m.name, "addr": m.addr, "inc": m.incarnation, "meta": m.meta, "state": m.state}
            for m in self.members.values()
        ]

    def merge_state(self, members: list[dict], now: float) -> Step:
        """Merge a peer's `state_sync()`. As in memberlist, a peer's "dead" only makes us suspect (we give
        the member the chance to refute); "left" is taken as is."""
        self._merge_state(members, now)
        return self._flush()

    def _merge_state(self, members: list[dict], now: float) -> None:
        for r in members:
            kind = {
                MemberState.ALIVE: MessageType.ALIVE,
                MemberState.SUSPECT: MessageType.SUSPECT,
                MemberState.DEAD: MessageType.SUSPECT,
                MemberState.LEFT: MessageType.DEAD,
            }[MemberState(r["state"])]
            self._apply_update(
                {
                    "t": kind,
                    "node": r["node"],
                    "addr": r["addr"],
                    "inc": r["inc"],
                    "meta": r["meta"],
                    "from": r["node"] if kind == MessageType.DEAD else self.name,
                },
                now,
            )

    # -- queries -----------------------------------------------------------------------------------------

    def alive_members(self) -> list[Member]:
        """Members not known to be dead or gone (suspects included), this node included."""
        return [m for m in self.members.values() if m.state in (MemberState.ALIVE, MemberState.SUSPECT)]

    @property
    def incarnation(self) -> int:
        return self.members[self.name].incarnation

    # -- updates: the alive / suspect / dead rules -------------------------------------------------------

    def _apply_update(self, u: dict, now: float) -> None:
        kind = MessageType(u["t"])
        if kind == MessageType.ALIVE:
            self._on_alive(u, now)
        elif kind == MessageType.SUSPECT:
            self._on_suspect(u, now)
        else:
            self._on_dead(u, now)

    def _on_alive(self, u: dict, now: float) -> None:
        name, inc = u["node"], u["inc"]
        m = self.members.get(name)
        if name == self.name:
            me = self.members[self.name]
            if inc > me.incarnation or (inc == me.incarnation and (u["addr"], u["meta"]) != (me.addr, me.meta)):
                self._refute(inc)  # someone claims to be us, or an old life of ours: say who we are now
            return
        if m is None:
            m = Member(name, u["addr"], u["meta"], inc, MemberState.ALIVE, now)
            self.members[name] = m
            self._event("join", m)
        elif inc > m.incarnation:
            before = (m.state, m.addr, m.meta)
            m.addr, m.meta, m.incarnation = u["addr"], u["meta"], inc
            m.state, m.state_changed = MemberState.ALIVE, now
            if before[0] in (MemberState.DEAD, MemberState.LEFT):
                self._event("join", m)
            elif before != (m.state, m.addr, m.meta):
                self._event("update", m)
        else:
            return
        self._queue(dict(u))

    def _on_suspect(self, u: dict, now: float) -> None:
        name, inc = u["node"], u["inc"]
        m = self.members.get(name)
        if name == self.name:
            self._answer_accusation(inc)
            return
        if m is None or inc < m.incarnation:
            return
        if m.state != MemberState.ALIVE and not (m.state == MemberState.SUSPECT and inc > m.incarnation):
            return
        self._mark_suspect(m, inc, u["from"], now)

    def _on_dead(self, u: dict, now: float) -> None:
        name, inc = u["node"], u["inc"]
        m = self.members.get(name)
        if name == self.name:
            self._answer_accusation(inc)
            return
        if m is None or inc < m.incarnation or m.state in (MemberState.DEAD, MemberState.LEFT):
            return
        self._mark_dead(m, inc, u["from"], now)

    def _mark_suspect(self, m: Member, inc: int, accuser: str, now: float) -> None:
        m.state, m.incarnation, m.state_changed = MemberState.SUSPECT, inc, now
        m.suspect_deadline = now + suspicion_timeout(self.config, len(self.alive_members()))
        self._event("suspect", m)
        self._queue(self._update(MessageType.SUSPECT, m, accuser))

    def _mark_dead(self, m: Member, inc: int, accuser: str, now: float) -> None:
        # A DEAD about a member sent by that member itself is a graceful leave.
        graceful = accuser == m.name
        m.state = MemberState.LEFT if graceful else MemberState.DEAD
        m.incarnation, m.state_changed = inc, now
        if self._probe is not None and self._probe.target == m.name:
            self._probe = None
        self._event("leave" if graceful else "dead", m)
        self._queue(self._update(MessageType.DEAD, m, accuser))

    def _answer_accusation(self, inc: int) -> None:
        if inc >= self.incarnation:
            self._refute(inc)
        else:
            # A stale accusation: the accuser missed our refutation. Announce our current incarnation
            # again (it goes out first, on the very ack that answers the accuser's probe).
            self._queue(self._update(MessageType.ALIVE, self.members[self.name], self.name))

    def _refute(self, accused_incarnation: int) -> None:
        me = self.members[self.name]
        me.incarnation = max(me.incarnation, accused_incarnation) + 1
        me.state = MemberState.ALIVE
        self._queue(self._update(MessageType.ALIVE, me, self.name))

    # -- probing -----------------------------------------------------------------------------------------

    def _advance_probe(self, now: float, rng: random.Random) -> None:
        p = self._probe
        if p is not None:
            target = self.members.get(p.target)
            if target is None:
                self._probe = None
            elif not p.indirect_sent and now >= p.sent + self.config.probe_timeout:
                p.indirect_sent = True
                helpers = [m for m in self._live_others() if m.name != p.target and m.state == MemberState.ALIVE]
                for h in rng.sample(helpers, min(self.config.indirect_checks, len(helpers))):
                    body = {"seq": p.seq, "target": p.target, "target_addr": target.addr}
                    self._send(h.addr, self._with_updates(MessageType.PING_REQ, body))
            elif now >= p.sent + self.config.probe_interval:
                self._probe = None
                if target.state == MemberState.ALIVE:
                    self._mark_suspect(target, target.incarnation, self.name, now)
        if self._probe is None and now >= self._next_probe:
            target = self._next_probe_target(rng)
            if target is not None:
                self._next_probe = now + self.config.probe_interval
                self._seq += 1
                self._probe = _Probe(target.name, self._seq, now)
                ping = self._with_updates(MessageType.PING, {"seq": self._seq, "target": target.name})
                if target.state == MemberState.SUSPECT:
                    # Lifeguard's buddy system (memberlist does it too): tell a suspect it is suspected,
                    # so it refutes even if the gossip about it never reached it.
                    ping.body["updates"].insert(0, self._update(MessageType.SUSPECT, target, self.name))
                self._send(target.addr, ping)

    def _next_probe_target(self, rng: random.Random) -> Member | None:
        for _ in range(2):  # at most one reshuffle per call
            while self._probe_index < len(self._probe_order):
                m = self.members.get(self._probe_order[self._probe_index])
                self._probe_index += 1
                if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                    return m
            self._probe_order = sorted(m.name for m in self._live_others())
            rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    # -- broadcasting ------------------------------------------------------------------------------------

    def _gossip(self, now: float, rng: random.Random) -> None:
        if not self._broadcasts:
            return
        # The recently dead get gossip too, so a member wrongly declared dead hears it and refutes.
        targets = [
            m
            for m in self.members.values()
            if m.name != self.name
            and (m.state != MemberState.LEFT)
            and (m.state != MemberState.DEAD or now - m.state_changed < self.config.dead_retention)
        ]
        for m in rng.sample(targets, min(self.config.gossip_nodes, len(targets))):
            updates = self._take_updates()
            if not updates:
                return
            self._send(m.addr, Message(MessageType.GOSSIP, {"updates": updates}))

    def _queue(self, update: dict) -> None:
        self._broadcasts[update["node"]] = (update, 0)  # a newer update about a member replaces the older

    def _take_updates(self) -> list[dict]:
        limit = retransmit_limit(self.config, len(self.members))
        taken, used = [], 0
        for name, (u, sent) in sorted(self._broadcasts.items(), key=lambda kv: kv[1][1]):
            size = len(msgpack.packb(u, use_bin_type=True))
            if used + size > PIGGYBACK_BUDGET:
                continue
            used += size
            taken.append(u)
            if sent + 1 >= limit:
                del self._broadcasts[name]
            else:
                self._broadcasts[name] = (u, sent + 1)
        return taken

    def _with_updates(self, kind: MessageType, body: dict) -> Message:
        return Message(kind, {**body, "updates": self._take_updates()})

    def _push_pull(self, join: bool, reply: bool) -> Message:
        return Message(MessageType.PUSH_PULL, {"join": join, "reply": reply, "members": self.state_sync()})

    def _update(self, kind: MessageType, m: Member, accuser: str) -> dict:
        return {"t": kind, "node": m.name, "addr": m.addr, "inc": m.incarnation, "meta": m.meta, "from": accuser}

    # -- plumbing ----------------------------------------------------------------------------------------

    def _live_others(self) -> list[Member]:
        return [m for m in self.alive_members() if m.name != self.name]

    def _send(self, addr: str, message: Message) -> None:
        self._step.packets.append((addr, message))

    def _event(self, kind: str, m: Member) -> None:
        self._step.events.append(MemberEvent(kind, m.name, m.addr, m.incarnation, m.meta))  # type: ignore[arg-type]

    def _flush(self) -> Step:
        step, self._step = self._step, Step()
        return step
