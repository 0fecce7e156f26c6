"""Which nodes are alive, as the leader's dispatcher sees them: the decisions about heartbeats, sessions and
marking nodes down, as a pure state machine (in the manner of `raft.core`).

The dispatcher (`manager.dispatcher`) feeds `Heartbeats` its events -- a node's heartbeat, the periodic tick,
a node removed from the swarm, a down write finished -- each with the clock's value, the Raft term this
manager leads in (None when it does not lead), the heartbeat period and what the store says of the nodes.
It answers with decisions the dispatcher carries out. Nothing here reads a clock, the store or a socket, so
each rule below has a unit test that steps it (tests/test_dispatcher_core.py).

The rules, SwarmKit's dispatcher's with Docker's defaults:
- A node's session lasts one leadership. Its first heartbeat to a leader opens one; a heartbeat naming any
  other session (an earlier leader's, or one that ended when the node was marked down) is refused, and the
  node starts a new session by heartbeating without one.
- Each heartbeat is answered with the period to come back in, and the node is marked down once
  `DOWN_AFTER_MISSED` of the periods it was told have passed unheard (SwarmKit: period x grace multiplier 3).
  The period it was told counts, not the current one: lowering the period must not fault a node that was
  told to take longer.
- A new leader does not know when nodes were last heard: every node in the store gets the full allowance
  (`DOWN_AFTER_MISSED` periods) from the moment this leadership is first seen, by a heartbeat or a tick.
- A node marked down is marked ready again by its next heartbeat, and by a heartbeat that arrives while its
  down write is still in flight (the write lands after the heartbeat has read the store).
- Silence is counted only while this dispatcher could listen. A tick comes every period and heartbeats
  between ticks; a longer gap between two events means this process did not run (stopped, or its event
  loop blocked) while heartbeats waited unread in its sockets, so a gap counts as at most
  `MAX_COUNTED_GAP` periods. A clock that steps back counts as no time passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_HEARTBEAT_PERIOD = 5.0
"""Docker's `--dispatcher-heartbeat` default, in seconds."""
DOWN_AFTER_MISSED = 3
"""Periods a node may go unheard before it is marked down: SwarmKit's DefaultGracePeriodMultiplier."""
MAX_COUNTED_GAP = 2
"""Periods at most that one gap between two events counts for. Two, so that a node heard just before this
process stopped keeps one period after it resumes for its waiting heartbeat to be read."""

READY = "ready"
DOWN = "down"


@dataclass(frozen=True)
class NotLeader:
    """This manager does not lead: the node should heartbeat the leader."""


@dataclass(frozen=True)
class StaleSession:
    """The heartbeat named a session that has ended; the node should heartbeat without one to start anew."""

    session: str


@dataclass(frozen=True)
class Alive:
    """The heartbeat is recorded: answer it with `session` and `period`; if `record_ready`, the store does not
    say the node is ready and the dispatcher writes that it is."""

    session: str
    period: float
    record_ready: bool


HeartbeatDecision = NotLeader | StaleSession | Alive


@dataclass(frozen=True)
class Sweep:
    """What a tick decided: whether this manager leads, and the nodes to write down (in the store's order)."""

    leading: bool
    down: tuple[str, ...] = ()


@dataclass
class _Session:
    id: str
    heard: float
    """When the node was last heard, in listening time."""
    allowance: float
    """Seconds of silence it is allowed from then: the period it was told, times DOWN_AFTER_MISSED."""


class Heartbeats:
    """The leader's record of node sessions and heartbeats. Every method takes `now`, a reading of a monotonic
    clock in seconds; `term` is the Raft term this manager leads in, or None if it does not lead."""

    def __init__(self) -> None:
        self._term: int | None = None
        self._leading_since = 0.0
        """When the current leadership was first seen, in listening time: the start of every node's grace."""
        self._sessions: dict[str, _Session] = {}
        self._opened = 0
        """Sessions opened so far: the serial number in session IDs."""
        self._marking_down: dict[str, bool] = {}
        """Nodes decided down whose write is in flight -> whether they were heard since the decision."""
        self._clock: float | None = None
        self._listening = 0.0
        """Seconds this dispatcher has been able to listen (see the module's last rule): the time every
        deadline here is kept in."""
        self._period = DEFAULT_HEARTBEAT_PERIOD

    def session_of(self, node_id: str) -> str | None:
        """The node's session in this leadership, if it has one."""
        session = self._sessions.get(node_id)
        return session.id if session else None

    # -- events ----------------------------------------------------------------------------------------

    def heartbeat(
        self, node_id: str, session: str | None, *, now: float, term: int | None, period: float, recorded: str | None
    ) -> HeartbeatDecision:
        """A heartbeat from `node_id` naming `session` (None: open one). `period` is what the node will be
        told; `recorded` is the node's state in the store (None if the store has no such node yet)."""
        now = self._advance(now, period)
        if not self._lead(term, now):
            return NotLeader()
        current = self._sessions.get(node_id)
        if session is not None and (current is None or session != current.id):
            return StaleSession(session)
        if current is None:
            self._opened += 1
            current = self._sessions[node_id] = _Session(f"{term}.{self._opened}", now, 0.0)
        current.heard = now
        current.allowance = period * DOWN_AFTER_MISSED
        if node_id in self._marking_down:
            self._marking_down[node_id] = True
        return Alive(current.id, period, record_ready=recorded != READY)

    def tick(self, *, now: float, term: int | None, period: float, nodes: Mapping[str, str]) -> Sweep:
        """The periodic check. `nodes` maps every node in the store to its recorded state. Decides the nodes to
        mark down: those not already down whose allowance has run out; their sessions end."""
        now = self._advance(now, period)
        if not self._lead(term, now):
            return Sweep(leading=False)
        grace_ends = self._leading_since + period * DOWN_AFTER_MISSED
        down = []
        for node_id, state in nodes.items():
            if state == DOWN or node_id in self._marking_down:
                continue
            session = self._sessions.get(node_id)
            due = max(grace_ends, session.heard + session.allowance) if session else grace_ends
            if now > due:
                down.append(node_id)
                self._sessions.pop(node_id, None)
                self._marking_down[node_id] = False
        return Sweep(leading=True, down=tuple(down))

    def still_silent(self, node_id: str) -> bool:
        """Whether a node decided down is still unheard, so that its down write should go ahead."""
        return self._marking_down.get(node_id) is False

    def down_written(self, node_id: str) -> bool:
        """The down write for `node_id` is done, or failed (the next tick decides again). True if the node was
        heard while it was in flight: its heartbeat may have found the store still saying ready, and the
        dispatcher must record it ready again now."""
        return self._marking_down.pop(node_id, False)

    def remove(self, node_id: str) -> None:
        """The node was removed from the swarm: its session ends."""
        self._sessions.pop(node_id, None)
        self._marking_down.pop(node_id, None)

    # -- inner workings --------------------------------------------------------------------------------

    def _advance(self, now: float, period: float) -> float:
        """Listening time at clock reading `now`."""
        if self._clock is not None:
            gap = max(now - self._clock, 0.0)
            self._listening += min(gap, MAX_COUNTED_GAP * max(period, self._period))
        self._clock, self._period = now, period
        return self._listening

    def _lead(self, term: int | None, now: float) -> bool:
        """Note the leadership an event was seen in; a new one (or none) ends every session."""
        if term != self._term:
            self._term = term
            self._leading_since = now
            self._sessions.clear()
            self._marking_down.clear()
        return term is not None
