"""Network-scoped tables: entries live exactly on the nodes of their network, converge by Lamport time,
vanish with their owner, and tombstones are reaped."""

import random

import pytest

from raftswarm.gossip.membership import MemberEvent
from raftswarm.gossip.simulation import Simulation
from raftswarm.gossip.table import NetworkTables, TableConfig
from raftswarm.gossip.wire import Message, MessageType

CFG = TableConfig(reap_after=60.0, sync_interval=5.0)


def cluster(n, seed=0):
    sim = Simulation(seed=seed, table_config=CFG)
    first = sim.add("n0")
    addrs = [first] + [sim.add(f"n{i}", [first]) for i in range(1, n)]
    sim.run_until(lambda: all(len(sim.node(a).membership.alive_members()) == n for a in addrs), 40)
    return sim, addrs


def do(sim, addr, method, *args):
    tables = sim.node(addr).tables
    sim.step_tables(addr, getattr(tables, method)(*args, sim.now))


def view(sim, addr, net="net1", table="endpoints"):
    return sim.node(addr).tables.get(net, table)


@pytest.fixture
def five():
    sim, addrs = cluster(5, seed=1)
    for a in addrs[:3]:  # n0, n1, n2 on net1; n3, n4 not
        do(sim, a, "join_network", "net1")
    sim.run(1)
    return sim, addrs


def test_entries_reach_exactly_the_nodes_on_the_network(five):
    sim, addrs = five
    do(sim, addrs[1], "create", "net1", "endpoints", "task-a", b"10.0.1.5")
    sim.run(1)
    for a in addrs[:3]:
        assert view(sim, a) == {"task-a": b"10.0.1.5"}
        assert [e.kind for _, e in sim.node(a).table_events] == ["create"]
    for a in addrs[3:]:
        assert sim.node(a).tables.entries == {}  # a node off the network holds none of its entries
        assert sim.node(a).table_events == []
    assert sim.node(addrs[4]).tables.nodes_on("net1") == {"n0", "n1", "n2"}


def test_update_and_delete_propagate_and_tombstones_are_reaped(five):
    sim, addrs = five
    do(sim, addrs[0], "create", "net1", "endpoints", "k", b"v1")
    sim.run(1)
    do(sim, addrs[2], "update", "net1", "endpoints", "k", b"v2")  # anyone on the network may update
    sim.run(1)
    assert all(view(sim, a) == {"k": b"v2"} for a in addrs[:3])
    do(sim, addrs[1], "delete", "net1", "endpoints", "k")
    sim.run(1)
    for a in addrs[:3]:
        assert view(sim, a) == {}
        assert sim.node(a).tables.entries[("net1", "endpoints", "k")].deleted  # kept as a tombstone
        assert [e.kind for _, e in sim.node(a).table_events] == ["create", "update", "delete"]
    sim.run(CFG.reap_after)
    assert all(sim.node(a).tables.entries == {} for a in addrs)


def test_concurrent_writes_converge_newer_lamport_time_then_owner_name_wins(five):
    sim, addrs = five
    do(sim, addrs[0], "create", "net1", "endpoints", "k", b"from-n0")
    do(sim, addrs[2], "create", "net1", "endpoints", "k", b"from-n2")  # same Lamport time, no message between
    sim.run(1)
    assert all(view(sim, a) == {"k": b"from-n2"} for a in addrs[:3])


def test_dead_nodes_entries_are_deleted_everywhere(five):
    sim, addrs = five
    do(sim, addrs[2], "create", "net1", "endpoints", "task-on-n2", b"10.0.1.9")
    do(sim, addrs[0], "create", "net1", "endpoints", "task-on-n0", b"10.0.1.2")
    sim.run(1)
    sim.kill(addrs[2])
    sim.run(15)
    for a in addrs[:2]:
        assert view(sim, a) == {"task-on-n0": b"10.0.1.2"}
        deletes = [e for _, e in sim.node(a).table_events if e.kind == "delete"]
        assert [(e.key, e.owner) for e in deletes] == [("task-on-n2", "n2")]
        assert "n2" not in sim.node(a).tables.nodes_on("net1")


def test_leaving_a_network_drops_its_entries_there_and_here(five):
    sim, addrs = five
    do(sim, addrs[1], "create", "net1", "endpoints", "mine", b"1")
    do(sim, addrs[0], "create", "net1", "endpoints", "theirs", b"2")
    sim.run(1)
    do(sim, addrs[1], "leave_network", "net1")
    sim.run(1)
    assert sim.node(addrs[1]).tables.entries == {}
    assert view(sim, addrs[0]) == view(sim, addrs[2]) == {"theirs": b"2"}
    do(sim, addrs[0], "update", "net1", "endpoints", "theirs", b"3")
    sim.run(sim.table_config.sync_interval * 2)
    assert sim.node(addrs[1]).tables.entries == {}  # it no longer receives nor stores anything of net1


def test_late_joiner_gets_the_full_network_state(five):
    sim, addrs = five
    do(sim, addrs[0], "create", "net1", "endpoints", "a", b"1")
    do(sim, addrs[1], "create", "net1", "endpoints", "b", b"2")
    do(sim, addrs[1], "delete", "net1", "endpoints", "b")
    sim.run(1)
    do(sim, addrs[4], "join_network", "net1")
    sim.run(1)
    assert view(sim, addrs[4]) == {"a": b"1"}
    assert [e.kind for _, e in sim.node(addrs[4]).table_events] == ["create"]


def test_lost_table_event_is_repaired_by_periodic_network_sync(five):
    sim, addrs = five
    sim.silenced.add(addrs[2])
    do(sim, addrs[0], "create", "net1", "endpoints", "k", b"v")
    sim.run(0.5)
    sim.heal()
    assert view(sim, addrs[2]) == {}
    sim.run(2 * CFG.sync_interval)
    assert view(sim, addrs[2]) == {"k": b"v"}


def member(kind, name):
    return MemberEvent(kind, name, f"{name}:1", 0, b"")


def table_event(owner, ltime, value=b"v", network="net1", deleted=False):
    return Message(
        MessageType.TABLE_EVENT,
        {
            "network": network,
            "table": "t",
            "key": "k",
            "value": value,
            "owner": owner,
            "ltime": ltime,
            "deleted": deleted,
        },
    )


def test_node_off_the_network_ignores_its_events_and_state():
    t = NetworkTables("a")
    t.on_member_event(member("join", "b"), 0)
    t.receive(
        "b:1", Message(MessageType.NETWORK_EVENT, {"node": "b", "network": "net1", "ltime": 1, "leaving": False}), 0
    )
    step = t.receive("b:1", table_event("b", 1), 0)
    assert t.entries == {} and step.events == [] and step.packets == []
    with pytest.raises(KeyError):
        t.network_state("net1")  # it does not hand out state of a network it is not on


def test_older_lamport_time_loses_and_clock_moves_past_what_it_saw():
    t = NetworkTables("a")
    t.on_member_event(member("join", "b"), 0)
    t.join_network("net1", 0)
    t.receive(
        "b:1", Message(MessageType.NETWORK_EVENT, {"node": "b", "network": "net1", "ltime": 5, "leaving": False}), 0
    )
    t.receive("b:1", table_event("b", 7, b"new"), 0)
    step = t.receive("b:1", table_event("b", 6, b"old"), 0)
    assert t.get("net1", "t") == {"k": b"new"} and step.events == []
    t.update("net1", "t", "k", b"mine", 1)
    assert t.entries[("net1", "t", "k")].ltime == 8


def test_stale_copy_of_a_departed_owners_entry_is_not_resurrected():
    t = NetworkTables("a")
    for name in "bc":
        t.on_member_event(member("join", name), 0)
    t.join_network("net1", 0)
    t.receive(
        "b:1", Message(MessageType.NETWORK_EVENT, {"node": "b", "network": "net1", "ltime": 1, "leaving": False}), 0
    )
    t.receive("b:1", table_event("b", 1), 0)
    step = t.on_member_event(member("dead", "b"), 1)
    assert [e.kind for e in step.events] == ["delete"]
    step = t.receive("c:1", table_event("b", 1), 2)  # a slow peer relays b's old entry
    assert t.get("net1", "t") == {} and step.events == []


def test_table_entry_that_cannot_fit_a_packet_is_refused_locally():
    t = NetworkTables("a")
    t.join_network("net1", 0)
    with pytest.raises(ValueError, match="1400"):
        t.create("net1", "t", "k", b"x" * 2000, 0)
    assert t.entries == {}


def test_sync_is_only_sent_to_nodes_sharing_the_network():
    t = NetworkTables("a", CFG)
    for name in "bc":
        t.on_member_event(member("join", name), 0)
    t.join_network("net1", 0)
    t.receive(
        "b:1", Message(MessageType.NETWORK_EVENT, {"node": "b", "network": "net1", "ltime": 1, "leaving": False}), 0
    )
    rng = random.Random(0)
    syncs = [
        addr
        for now in range(0, 60, 5)
        for addr, m in t.tick(float(now), rng).packets
        if m.type == MessageType.NETWORK_SYNC
    ]
    assert syncs and set(syncs) == {"b:1"}
