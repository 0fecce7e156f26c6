"""The dispatcher's decisions about heartbeats, sessions and marking nodes down (`manager.heartbeats`), stepped
with a clock of the test's own: no sockets, no sleeps. Each test names the rule it guards.

`Leader` plays the dispatcher's part around the core: it keeps a store view (node ID -> recorded state) and
writes the decisions into it at once, as `manager.dispatcher` does through Raft. The last tests run the real
dispatcher over an in-memory store, for what only its I/O shell can get wrong.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from instant_store import InstantLeader, instant_store

from raftswarm.ca.certificates import NodeIdentity, NodeRole
from raftswarm.agent.session import _next_heartbeat
from raftswarm.objects.kinds import NETWORKS, NODES
from raftswarm.manager.dispatcher import ATTACHMENT_WAIT_HEARTBEAT, ATTACHMENT_WAIT_LIMIT, SESSION_INVALID, Dispatcher
from raftswarm.manager.heartbeats import (
    DOWN_AFTER_MISSED,
    Alive,
    HeartbeatDecision,
    Heartbeats,
    NotLeader,
    StaleSession,
)
from raftswarm.rpc.channel import RpcError, RpcServer
from raftswarm.store import put
from raftswarm.store.state import encode_transaction

P = 1.0
"""The heartbeat period in these tests, in seconds of the test's clock."""
ALLOWANCE = DOWN_AFTER_MISSED * P
A = "7hxn0bmvu2zqk3c4e5ryw6jtd"
B = "x1cb2gf6p3lq7t9r8wkzvn4ha"


class Leader:
    """A dispatcher's shell in miniature: the core, a store view it writes to, the term it leads in."""

    def __init__(self, *nodes: str, term: int | None = 4, period: float = P) -> None:
        self.core = Heartbeats()
        self.store = dict.fromkeys(nodes, "ready")
        self.term = term
        self.period = period
        self.down_writes: list[tuple[str, float]] = []
        """Every node written down, with when."""

    def beat(self, node_id: str, now: float, session: str | None = None) -> HeartbeatDecision:
        decision = self.core.heartbeat(
            node_id, session, now=now, term=self.term, period=self.period, recorded=self.store.get(node_id)
        )
        if isinstance(decision, Alive) and decision.record_ready and node_id in self.store:
            self.store[node_id] = "ready"
        return decision

    def tick(self, now: float) -> list[str]:
        """One check; the nodes it marked down."""
        sweep = self.core.tick(now=now, term=self.term, period=self.period, nodes=dict(self.store))
        for node_id in sweep.down:
            if self.core.still_silent(node_id):
                self.store[node_id] = "down"
                self.down_writes.append((node_id, now))
            if self.core.down_written(node_id):
                self.store[node_id] = "ready"
        return list(sweep.down)

    def ticks(self, start: float, stop: float, step: float = P) -> list[tuple[str, float]]:
        """Ticks from `start` to `stop` inclusive; every node marked down, with when."""
        marked = []
        now = start
        while now <= stop + 1e-9:
            marked += [(node_id, now) for node_id in self.tick(now)]
            now += step
        return marked


def alive(decision: HeartbeatDecision) -> Alive:
    assert isinstance(decision, Alive), decision
    return decision


# -- missed heartbeats ----------------------------------------------------------------------------------------


def test_a_node_heartbeating_on_time_is_never_marked_down():
    leader = Leader(A)
    for second in range(200):
        leader.beat(A, second + 0.3)
        assert leader.tick(second + 0.9) == []
    assert leader.store[A] == "ready"


def test_a_node_whose_heartbeats_are_late_but_within_the_allowance_is_not_marked_down():
    leader = Leader(A)
    now = 0.0
    for _ in range(50):
        leader.beat(A, now)
        assert leader.ticks(now + 0.5, now + ALLOWANCE - 0.05, step=0.5) == []
        now += ALLOWANCE - 0.01  # the next heartbeat comes just inside the allowance
    assert leader.down_writes == []


def test_a_node_that_misses_three_periods_is_marked_down_then_and_exactly_once():
    leader = Leader(A)
    leader.beat(A, 0.0)
    assert leader.ticks(1.0, 3.0) == []  # three periods missed, not more: not yet
    assert leader.tick(3.01) == [A]
    assert leader.ticks(4.0, 60.0) == []
    assert leader.down_writes == [(A, 3.01)]
    assert leader.store[A] == "down"


def test_a_down_write_that_failed_is_decided_again_at_the_next_tick():
    leader = Leader(A)
    leader.beat(A, 0.0)
    assert leader.ticks(1.0, 3.0) == []
    sweep = leader.core.tick(now=3.5, term=4, period=P, nodes={A: "ready"})
    assert sweep.down == (A,)
    assert leader.core.down_written(A) is False  # the write failed; the store still says ready
    assert leader.core.tick(now=4.5, term=4, period=P, nodes={A: "ready"}).down == (A,)


def test_nodes_are_judged_each_by_its_own_heartbeats():
    leader = Leader(A, B)
    for second in range(10):
        leader.beat(A, float(second))
        if second < 2:
            leader.beat(B, float(second))
        leader.tick(second + 0.5)
    assert leader.down_writes == [(B, 4.5)]
    assert leader.store == {A: "ready", B: "down"}


# -- leader changes -------------------------------------------------------------------------------------------


def test_a_manager_that_does_not_lead_answers_not_leader_and_marks_nobody_down():
    follower = Leader(A, B, term=None)
    assert isinstance(follower.beat(A, 0.0), NotLeader)
    assert follower.ticks(1.0, 100.0) == []
    assert follower.core.tick(now=101.0, term=None, period=P, nodes={A: "ready"}).leading is False


def test_after_a_leader_change_every_known_node_gets_the_grace_period_before_being_marked_down():
    leader = Leader(A, B)
    leader.beat(A, 0.0)  # A heard by the old leadership; B never heard at all
    leader.tick(0.5)
    leader.term = 5
    assert leader.tick(2.0) == []  # the new leadership is first seen here
    assert leader.ticks(3.0, 5.0) == []  # A's old heartbeat (due at 3) does not count against it
    assert sorted(leader.tick(5.01)) == [A, B]


def test_a_node_silent_since_before_the_change_is_marked_down_only_after_the_new_leaders_grace():
    leader = Leader(A)
    leader.beat(A, 0.0)
    leader.term = None  # lost the lead at 1 ...
    leader.tick(1.0)
    leader.term = 6  # ... and won it back at 2.5: a full grace from then, whatever was known before
    assert leader.tick(2.5) == []
    assert leader.ticks(3.5, 5.5) == []
    assert leader.tick(5.6) == [A]


def test_a_leadership_lost_and_won_back_between_two_ticks_still_restarts_the_grace():
    leader = Leader(A)
    leader.beat(A, 0.0)
    leader.tick(1.0)
    leader.term = 7  # terms 5 and 6 came and went between ticks; the tick at 2 sees only the new term
    assert leader.ticks(2.0, 5.0) == []
    assert leader.tick(5.01) == [A]


def test_a_new_leader_seen_first_by_a_heartbeat_starts_the_grace_there():
    leader = Leader(A, B)
    leader.term = 5
    alive(leader.beat(A, 10.0))  # the first event of term 5
    assert leader.ticks(10.5, 12.5) == []
    alive(leader.beat(A, 12.9))
    assert leader.tick(13.01) == [B]  # B, never heard: the grace from 10


# -- sessions -------------------------------------------------------------------------------------------------


def test_a_heartbeat_with_a_session_from_an_old_term_is_refused_and_the_node_starts_a_new_one():
    leader = Leader(A)
    old = alive(leader.beat(A, 0.0)).session
    assert alive(leader.beat(A, 1.0, old)).session == old  # the same session while the leadership lasts
    leader.term = 5
    assert leader.beat(A, 2.0, old) == StaleSession(old)
    new = alive(leader.beat(A, 2.1)).session  # heartbeating without a session starts one
    assert new != old
    assert alive(leader.beat(A, 3.0, new)).session == new


def test_a_session_from_another_manager_or_made_up_is_refused():
    leader = Leader(A)
    alive(leader.beat(A, 0.0))
    assert isinstance(leader.beat(A, 1.0, "9.1"), StaleSession)
    assert isinstance(leader.beat(B, 1.0, "4.1"), StaleSession)  # B never opened one


def test_a_node_marked_down_has_its_session_ended():
    leader = Leader(A)
    session = alive(leader.beat(A, 0.0)).session
    assert leader.ticks(1.0, 4.0) == [(A, 4.0)]
    assert leader.beat(A, 4.5, session) == StaleSession(session)


def test_a_heartbeat_arriving_during_a_term_change_is_not_lost():
    leader = Leader(A)
    alive(leader.beat(A, 0.0))
    leader.tick(0.5)
    leader.term = 5  # re-elected; the first to see it is A's heartbeat, before any tick
    heard = alive(leader.beat(A, 1.0))
    assert leader.tick(1.2) == []  # the tick sees term 5 too, and keeps what was heard in it
    again = alive(leader.beat(A, 2.0, heard.session))
    assert again.session == heard.session and not again.record_ready
    assert leader.core.session_of(A) == heard.session


def test_a_removed_node_has_its_session_ended():
    leader = Leader(A)
    session = alive(leader.beat(A, 0.0)).session
    leader.core.remove(A)
    assert leader.beat(A, 1.0, session) == StaleSession(session)


# -- coming back ----------------------------------------------------------------------------------------------


def test_a_node_that_comes_back_is_marked_ready_and_stays_so_while_it_heartbeats():
    leader = Leader(A)
    leader.beat(A, 0.0)
    assert leader.ticks(1.0, 4.0) == [(A, 4.0)]
    assert alive(leader.beat(A, 10.0)).record_ready
    assert leader.store[A] == "ready"
    for second in range(11, 30):
        assert not alive(leader.beat(A, float(second))).record_ready
        assert leader.tick(second + 0.5) == []


def test_a_heartbeat_seeing_the_store_say_down_writes_ready_even_inside_a_session():
    # Another leader marked the node down while this one was away (`chaos run --scenario partition-one-way`).
    leader = Leader(A)
    session = alive(leader.beat(A, 0.0)).session
    leader.store[A] = "down"
    assert alive(leader.beat(A, 1.0, session)).record_ready


def test_a_node_heard_while_its_down_write_is_in_flight_is_recorded_ready_again_after_it():
    core = Heartbeats()
    core.heartbeat(A, None, now=0.0, term=4, period=P, recorded="ready")
    for second in (1.0, 2.0, 3.0):
        core.tick(now=second, term=4, period=P, nodes={A: "ready", B: "ready"})
    assert core.tick(now=3.5, term=4, period=P, nodes={A: "ready", B: "ready"}).down == (A, B)
    assert core.still_silent(A)  # the down write starts ...
    # ... and before it lands, A's heartbeat reads the store, which still says ready: no write of its own.
    assert not alive(core.heartbeat(A, None, now=3.6, term=4, period=P, recorded="ready")).record_ready
    assert core.down_written(A) is True  # so the dispatcher writes ready straight after the down
    assert core.down_written(B) is False


def test_a_node_heard_after_the_decision_but_before_its_down_write_is_not_written_down():
    leader = Leader(A)
    leader.beat(A, 0.0)
    assert leader.ticks(1.0, 3.0) == []
    sweep = leader.core.tick(now=3.5, term=4, period=P, nodes={A: "ready"})
    assert sweep.down == (A,)
    leader.beat(A, 3.6)  # heard while earlier nodes of the same sweep were being written
    assert not leader.core.still_silent(A)
    assert leader.core.down_written(A) is True  # already ready in the store: the write of ready is a no-op


def test_a_node_not_yet_in_the_store_is_answered_and_written_once_it_is():
    leader = Leader()
    assert alive(leader.beat(A, 0.0)).record_ready  # the dispatcher's write finds no node and is retried ...
    assert leader.tick(5.0) == []  # ... and a node the store does not have is never marked down
    leader.store[A] = "unknown"  # `swarm init` wrote it
    assert alive(leader.beat(A, 5.5)).record_ready


# -- the period -----------------------------------------------------------------------------------------------


def test_a_raised_heartbeat_period_applies_from_each_nodes_next_heartbeat():
    leader = Leader(A)
    leader.beat(A, 0.0)
    leader.period = 10.0  # the operator raised it; A learns it at its next heartbeat
    assert alive(leader.beat(A, 1.0)).period == 10.0
    assert leader.ticks(11.0, 31.0, step=10.0) == []
    assert leader.tick(31.5) == [A]


def test_a_lowered_heartbeat_period_does_not_fault_a_node_told_to_take_longer():
    leader = Leader(A, period=10.0)
    alive(leader.beat(A, 0.0))  # told: come back in 10 s
    leader.period = 1.0
    assert leader.ticks(1.0, 9.0) == []  # at the new period it would have been down at 3
    assert alive(leader.beat(A, 9.5)).period == 1.0  # from now on, 1 s
    assert leader.ticks(10.0, 12.5, step=0.5) == []
    assert leader.tick(12.6) == [A]


def test_a_new_leaders_grace_is_that_of_the_current_period():
    leader = Leader(A, period=2.0)
    leader.term = 5
    assert leader.ticks(0.0, 6.0, step=2.0) == []
    assert leader.tick(6.01) == [A]


# -- clock jumps ----------------------------------------------------------------------------------------------


def test_silence_while_the_dispatcher_itself_was_stopped_is_not_held_against_nodes():
    leader = Leader(A, B)
    for second in range(6):
        leader.beat(A, float(second))
        leader.beat(B, float(second))
        leader.tick(second + 0.5)
    # The process was stopped (SIGSTOP, a blocked event loop) from 5.5 to 1000: A's heartbeat waited unread.
    assert leader.tick(1000.0) == []
    leader.beat(A, 1000.1)
    assert leader.tick(1000.4) == []  # B was heard at 5; 0.5 + 2 (the gap's most) + 0.4 periods counted since
    assert leader.tick(1001.0) == [B]
    assert leader.ticks(1002.0, 1002.0) == [] and leader.store[A] == "ready"


def test_a_long_gap_still_counts_so_that_a_dead_node_is_found_after_a_pause():
    leader = Leader(A)
    leader.beat(A, 0.0)
    assert leader.tick(500.0) == []  # the gap counts as two periods
    assert leader.tick(501.01) == [A]


def test_a_clock_that_steps_back_counts_as_no_time_passed():
    leader = Leader(A)
    leader.beat(A, 100.0)
    assert leader.tick(50.0) == []  # stepped back 50 s: A is not thought silent for longer ...
    assert leader.ticks(51.0, 53.0) == []
    assert leader.tick(53.01) == [A]  # ... nor given 50 s more


def test_heartbeats_between_late_ticks_keep_the_clock_counting():
    # A busy event loop makes ticks late; that is not a stopped process as long as other events keep coming.
    leader = Leader(A, B)
    for second in range(9):
        leader.beat(A, float(second))
        if second in (4, 8):
            leader.tick(float(second))  # ticks four periods apart
    assert leader.down_writes == [(B, 4.0)]  # B, never heard: down at the first tick after its grace


# -- the dispatcher's I/O shell -------------------------------------------------------------------------------


def _dispatcher(period: float, *nodes: str) -> tuple[Dispatcher, InstantLeader]:
    store, driver = instant_store()
    for node_id in nodes:
        data = {"ID": node_id, "Spec": {"Role": "worker"}, "Status": {"State": "ready"}}
        store.apply(store.state.version + 1, encode_transaction([put(NODES, node_id, data)]))
    return Dispatcher(store, driver, RpcServer(), period), driver  # type: ignore[arg-type]


def _state(dispatcher: Dispatcher, node_id: str) -> str:
    return dispatcher.control.store.state.get(NODES, node_id).data["Status"]["State"]


async def test_the_dispatcher_keeps_marking_nodes_down_after_a_read_fails_during_an_election():
    dispatcher, driver = _dispatcher(0.02, A)
    driver.failing_reads = 2  # the node list cannot be read for two rounds (before: the dispatcher stopped)
    running = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(500):
            if _state(dispatcher, A) == "down":
                break
            assert not running.done(), running.exception()
            await asyncio.sleep(0.01)
        assert _state(dispatcher, A) == "down"
        assert not running.done()
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_a_heartbeat_answers_its_session_and_an_ended_one_is_refused_with_session_invalid():
    dispatcher, driver = _dispatcher(5.0, A)
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    first = await dispatcher.heartbeat(identity, {})
    assert (await dispatcher.heartbeat(identity, {"session": first["session"]}))["session"] == first["session"]
    driver.core.term = 4  # a new leadership
    with pytest.raises(RpcError) as refused:
        await dispatcher.heartbeat(identity, {"session": first["session"]})
    assert refused.value.code == SESSION_INVALID
    assert (await dispatcher.heartbeat(identity, {}))["session"] != first["session"]


async def test_a_node_whose_ingress_address_is_being_allocated_is_told_to_heartbeat_again_soon():
    dispatcher, driver = _dispatcher(5.0, A)
    store = driver.store

    def write(kind: str, object_id: str, data: dict[str, Any]) -> None:
        store.apply(store.state.version + 1, encode_transaction([put(kind, object_id, data)]))

    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    first = await dispatcher.heartbeat(identity, {})
    assert "next" not in first  # the swarm has no ingress network: there is nothing to wait for
    ingress = {"ID": "ingress1", "Spec": {"Name": "ingress", "Ingress": True}}
    write(NETWORKS, "ingress1", ingress)
    waiting = await dispatcher.heartbeat(identity, {"session": first["session"]})
    assert (waiting["next"], waiting["period"], waiting["attachments"]) == (ATTACHMENT_WAIT_HEARTBEAT, 5.0, [])
    assert _next_heartbeat(waiting, waiting["period"]) == ATTACHMENT_WAIT_HEARTBEAT
    attachment = {"Network": ingress, "Addresses": ["10.0.0.3/24"]}
    write(NODES, A, {**store.state.get(NODES, A).data, "Attachments": [attachment]})
    allocated = await dispatcher.heartbeat(identity, {"session": first["session"]})
    assert "next" not in allocated and allocated["attachments"] == [attachment]
    assert _next_heartbeat(allocated, allocated["period"]) == 5.0
    assert dispatcher.heartbeats.session_of(A) == first["session"]  # its period and session stay as they were


async def test_a_node_whose_ingress_address_does_not_come_heartbeats_soon_only_for_a_while():
    now = [100.0]
    dispatcher, driver = _dispatcher(5.0, A)
    dispatcher._clock = lambda: now[0]
    store = driver.store
    ingress = {"ID": "ingress1", "Spec": {"Name": "ingress", "Ingress": True}}
    store.apply(store.state.version + 1, encode_transaction([put(NETWORKS, "ingress1", ingress)]))
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    session = (await dispatcher.heartbeat(identity, {}))["session"]
    now[0] += ATTACHMENT_WAIT_LIMIT - 0.5
    assert "next" in await dispatcher.heartbeat(identity, {"session": session})
    now[0] += 1.0  # the allocator cannot give it an address (a full subnet): back to its period
    assert "next" not in await dispatcher.heartbeat(identity, {"session": session})


@pytest.mark.parametrize("sooner", [None, 0, -1, 7.5, True, "0.1", float("nan")])
def test_a_heartbeat_answer_without_a_usable_sooner_time_means_the_period(sooner):
    assert _next_heartbeat({"next": sooner}, 5.0) == 5.0


async def test_a_heartbeat_with_a_bad_issuer_is_refused_and_changes_nothing():
    dispatcher, _ = _dispatcher(5.0, A)
    await dispatcher.control.set_node_status(A, "down", "heartbeat failure")
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    with pytest.raises(RpcError, match="issuer"):
        await dispatcher.heartbeat(identity, {"issuer": "x" * 1000})
    assert _state(dispatcher, A) == "down"
    assert dispatcher.heartbeats.session_of(A) is None
    await dispatcher.heartbeat(identity, {"issuer": "ab" * 20})
    assert _state(dispatcher, A) == "ready"


async def test_a_heartbeat_that_meets_the_nodes_own_raft_join_still_records_it_ready_at_once():
    """A joining manager's first heartbeat and its Raft join (ManagerStatus) write the same node object at the
    same moment. The one that loses the race reads it again and writes: the node is Ready at once, with its
    ManagerStatus, not a heartbeat period later (`cluster up` waited 5 s for the last manager)."""
    dispatcher, driver = _dispatcher(5.0, A)
    await dispatcher.control.set_node_status(A, "unknown")
    propose = driver.propose
    raced = []

    async def join_first(payload: bytes, timeout: float | None = None) -> Any:
        if not raced:  # the join lands between the heartbeat's read of the node and its write
            raced.append(True)
            await dispatcher.control.set_manager_status(A, "10.0.0.2:2377")
        return await propose(payload, timeout)

    driver.propose = join_first  # type: ignore[method-assign]
    await dispatcher.heartbeat(NodeIdentity(A, NodeRole.MANAGER, "cluster"), {})
    node = dispatcher.control.store.state.get(NODES, A).data
    assert raced and node["Status"]["State"] == "ready"
    assert node["ManagerStatus"]["Addr"] == "10.0.0.2:2377"


async def test_a_report_on_a_task_this_manager_has_not_applied_yet_is_recorded_after_catching_up():
    """A new leader may not have applied a task's assignment yet; "unknown task" is final for the agent (it
    drops the report), so it is answered only from state a read barrier confirmed, and here the barrier
    brings the task in and the report is recorded."""
    dispatcher, driver = _dispatcher(5.0, A)
    task = {"ID": "t1", "NodeID": A, "DesiredState": "running", "Status": {"State": "assigned", "Timestamp": "2026-12-07T00:00:00Z"}}
    lagging = encode_transaction([put("tasks", "t1", task)])
    caught_up = driver.read_barrier

    async def barrier(timeout: float | None = None) -> int:
        if dispatcher.control.store.state.get("tasks", "t1") is None:
            driver.store.apply(driver.store.state.version + 1, lagging)  # what the leader had committed
        return await caught_up(timeout)

    driver.read_barrier = barrier
    running = asyncio.create_task(dispatcher.run())
    try:
        identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
        status = {"State": "running", "Message": "started", "Timestamp": "2026-12-07T00:00:01Z"}
        answer = await dispatcher.update_task_status(identity, {"updates": [{"ID": "t1", "Status": status}]})
        assert answer == {"t1": "ok"}
        assert dispatcher.control.store.state.get("tasks", "t1").data["Status"]["State"] == "running"
        gone = await dispatcher.update_task_status(identity, {"updates": [{"ID": "nope", "Status": status}]})
        assert gone == {"nope": "unknown task"}  # confirmed by the barrier: truly unknown
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_a_node_that_reports_problems_with_its_heartbeat_shows_them_in_its_status_until_they_clear():
    dispatcher, _ = _dispatcher(5.0, A)
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    failing = ["this node's agent loop keeps failing: failed 3 time(s) in 2 s, last: OSError: disk full"]
    await dispatcher.heartbeat(identity, {"problems": failing})
    status = dispatcher.control.store.state.get(NODES, A).data["Status"]
    assert status == {**status, "State": "ready", "Message": failing[0]}  # `node inspect` says what is wrong
    await dispatcher.heartbeat(identity, {"problems": []})
    assert dispatcher.control.store.state.get(NODES, A).data["Status"]["Message"] == ""
    with pytest.raises(RpcError, match="problems"):
        await dispatcher.heartbeat(identity, {"problems": "not a list"})


async def test_a_node_restarted_with_other_engine_labels_shows_them_and_bad_labels_change_nothing():
    """`raftswarm-node --label` (dockerd's) is read at every start: the heartbeats of a daemon restarted with other
    labels put them in Description.Engine.Labels, where `engine.labels.*` constraints find them, as dockerd's
    new session does; with none left, the key goes, as Docker's omitempty leaves it out."""
    dispatcher, _ = _dispatcher(5.0, A)
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")

    def engine() -> dict:
        return dispatcher.control.store.state.get(NODES, A).data["Description"]["Engine"]

    await dispatcher.heartbeat(identity, {"engine_labels": {"disk": "ssd"}})
    assert engine()["Labels"] == {"disk": "ssd"} and engine()["EngineVersion"] == "raftswarm"
    version = dispatcher.control.store.state.get(NODES, A).version
    await dispatcher.heartbeat(identity, {"engine_labels": {"disk": "ssd"}})
    assert dispatcher.control.store.state.get(NODES, A).version == version  # unchanged: nothing written
    for bad in ({"disk": 1}, ["disk=ssd"], {"": "x"}, {"disk": "s\nsd"}):
        with pytest.raises(RpcError, match="labels must map printable strings"):
            await dispatcher.heartbeat(identity, {"engine_labels": bad})
    assert engine()["Labels"] == {"disk": "ssd"}
    await dispatcher.heartbeat(identity, {})  # a node that does not say (an older one) keeps what it had
    assert engine()["Labels"] == {"disk": "ssd"}
    await dispatcher.heartbeat(identity, {"engine_labels": {}})
    assert engine() == {"EngineVersion": "raftswarm"}


async def test_a_running_report_keeps_the_host_ports_the_node_published_and_bad_ones_change_nothing():
    """Docker's task Status.PortStatus (`service ps`: PORTS), a port published as 0 with the node's choice."""
    dispatcher, driver = _dispatcher(5.0, A)
    task = {"ID": "t1", "NodeID": A, "DesiredState": "running", "Status": {"State": "starting", "Timestamp": "2026-12-07T00:00:00Z"}}
    driver.store.apply(driver.store.state.version + 1, encode_transaction([put("tasks", "t1", task)]))
    running = asyncio.create_task(dispatcher.run())
    identity = NodeIdentity(A, NodeRole.WORKER, "cluster")
    ports = [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 32768, "PublishMode": "host"}]

    async def report(port_status: Any) -> dict:
        status = {"State": "running", "Message": "started", "PortStatus": port_status}
        return await dispatcher.update_task_status(identity, {"updates": [{"ID": "t1", "Status": status}]})

    try:
        for bad in (
            [], {"Ports": "80"}, {"Ports": [{**ports[0], "PublishedPort": 0}]}, {"Ports": [{**ports[0], "Protocol": "icmp"}]},
            {"Ports": [{**ports[0], "PublishMode": "ingress"}]}, {"Ports": [{**ports[0], "TargetPort": True}]},
            {"Ports": ports * 1025},
        ):
            with pytest.raises(RpcError, match="Status.PortStatus must be"):
                await report(bad)
            assert dispatcher.control.store.state.get("tasks", "t1").data["Status"]["State"] == "starting"
        assert await report({"Ports": [{**ports[0], "Name": "dropped"}]}) == {"t1": "ok"}
        status = dispatcher.control.store.state.get("tasks", "t1").data["Status"]
        assert status["State"] == "running" and status["PortStatus"] == {"Ports": ports}
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
