"""SWIM membership, driven through the deterministic simulated network (simulated time, seeded rng)."""

import random

import pytest

from raftswarm.gossip.membership import Membership, MembershipConfig, retransmit_limit, suspicion_timeout
from raftswarm.gossip.simulation import Simulation
from raftswarm.gossip.wire import MemberState, Message, MessageType

CONFIG = MembershipConfig()


def cluster(n, seed=0, **kw):
    sim = Simulation(seed=seed, **kw)
    first = sim.add("n00", meta=b"10.0.0.0")
    addrs = [first] + [sim.add(f"n{i:02}", [first], meta=f"10.0.0.{i}".encode()) for i in range(1, n)]
    # Gossip spreads joins in well under a second; a node that missed one gets it at the next push/pull.
    assert sim.run_until(lambda: everyone_sees(sim, n), timeout=sim.config.push_pull_interval + 5) is not None
    return sim, addrs


def everyone_sees(sim, n):
    return all(len(sim.node(a).membership.alive_members()) == n for a in sim.live())


def state_of(sim, observer, name):
    m = sim.node(observer).membership.members.get(name)
    return None if m is None else m.state


def events(sim, addr, kind, name=None):
    return [e for _, e in sim.node(addr).member_events if e.kind == kind and (name is None or e.name == name)]


@pytest.mark.parametrize("n", [5, 20])
def test_members_joining_through_one_seed_all_see_each_other_with_meta(n):
    sim, addrs = cluster(n, seed=n)
    for a in addrs:
        members = sim.node(a).membership.members
        assert set(members) == {f"n{i:02}" for i in range(n)}
        assert members["n03"].meta == b"10.0.0.3"  # meta (the data-plane address) travels with alive
        assert len(events(sim, a, "join")) == n - 1


def test_healthy_cluster_raises_no_suspicion():
    sim, addrs = cluster(8, seed=3)
    sim.run(60)
    assert not any(events(sim, a, "suspect") or events(sim, a, "dead") for a in addrs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_member_is_declared_dead_by_all_within_a_bound_of_probe_intervals(seed):
    n = 12
    sim, addrs = cluster(n, seed=seed)
    victim = addrs[5]
    sim.kill(victim)
    # Someone probes it within a couple of intervals; suspicion then runs its course; the dead update
    # spreads within a couple more intervals.
    bound = 2 * CONFIG.probe_interval + suspicion_timeout(CONFIG, n) + 2 * CONFIG.probe_interval
    took = sim.run_until(lambda: all(state_of(sim, a, "n05") == MemberState.DEAD for a in sim.live()), bound)
    assert took is not None, f"not all members declared n05 dead within {bound:.1f} simulated seconds"
    for a in sim.live():
        assert [e.kind for e in events(sim, a, "dead")] == ["dead"]


def test_suspicion_timeout_grows_with_log_of_cluster_size():
    assert suspicion_timeout(CONFIG, 5) == CONFIG.suspicion_mult * CONFIG.probe_interval
    assert suspicion_timeout(CONFIG, 100) == pytest.approx(2 * suspicion_timeout(CONFIG, 10))
    assert retransmit_limit(CONFIG, 9) == CONFIG.retransmit_mult
    assert retransmit_limit(CONFIG, 99) == 2 * CONFIG.retransmit_mult


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_member_whose_packets_drop_briefly_is_suspected_then_refutes_no_false_dead(seed):
    sim, addrs = cluster(8, seed=seed)
    victim = addrs[2]
    sim.silenced.add(victim)
    assert sim.run_until(lambda: any(events(sim, a, "suspect", "n02") for a in addrs), 5) is not None
    sim.heal()
    sim.run(20)
    assert sim.node(victim).membership.incarnation > 0  # it refuted with a higher incarnation
    for a in addrs:
        assert not events(sim, a, "dead", "n02"), f"{a} declared n02 dead"
        assert state_of(sim, a, "n02") == MemberState.ALIVE


def test_failed_probe_asks_others_to_ping_indirectly_before_suspecting():
    cfg = MembershipConfig()
    m = Membership("a", "a:1", cfg)
    rng = random.Random(0)
    for name in "bcde":
        m.receive(f"{name}:1", push(name), 0.0, rng)
    out = m.tick(1.0, rng)
    pings = [(addr, msg) for addr, msg in out.packets if msg.type == MessageType.PING]
    assert len(pings) == 1
    target = pings[0][1]["target"]
    out = m.tick(1.0 + cfg.probe_timeout, rng)
    reqs = [(addr, msg) for addr, msg in out.packets if msg.type == MessageType.PING_REQ]
    assert len(reqs) == cfg.indirect_checks and all(msg["target"] == target for _, msg in reqs)
    assert f"{target}:1" not in [addr for addr, _ in reqs]
    out = m.tick(1.0 + cfg.probe_interval, rng)
    assert [(e.kind, e.name) for e in out.events] == [("suspect", target)]


def test_indirect_ack_through_a_helper_completes_the_probe():
    sim, addrs = cluster(4, seed=9)
    # n01 cannot reach n02 directly, but n00 and n03 can: no suspicion of n02 ever.
    sim._blocked = lambda src, dst: {src, dst} == {"n01:7946", "n02:7946"}
    sim.run(30)
    assert not any(events(sim, a, "suspect", "n02") for a in addrs)


def push(name, inc=0, state=MemberState.ALIVE, meta=b""):
    members = [{"node": name, "addr": f"{name}:1", "inc": inc, "meta": meta, "state": state}]
    return Message(MessageType.PUSH_PULL, {"join": True, "reply": True, "members": members})


def gossip(kind, name, inc, frm="x", meta=b""):
    u = {"t": kind, "node": name, "addr": f"{name}:1", "inc": inc, "meta": meta, "from": frm}
    return Message(MessageType.GOSSIP, {"updates": [u]})


def test_incarnation_orders_alive_suspect_and_dead():
    m = Membership("a", "a:1")
    rng = random.Random(0)
    m.receive("b:1", push("b", inc=5), 0, rng)
    m.receive("x:1", gossip(MessageType.SUSPECT, "b", 4), 1, rng)
    assert m.members["b"].state == MemberState.ALIVE  # suspicion of an older incarnation is stale
    m.receive("x:1", gossip(MessageType.SUSPECT, "b", 5), 1, rng)
    assert m.members["b"].state == MemberState.SUSPECT
    m.receive("x:1", gossip(MessageType.ALIVE, "b", 5), 1, rng)
    assert m.members["b"].state == MemberState.SUSPECT  # same incarnation does not clear a suspicion
    step = m.receive("b:1", gossip(MessageType.ALIVE, "b", 6, "b"), 1, rng)
    assert m.members["b"].state == MemberState.ALIVE and [e.kind for e in step.events] == ["update"]
    m.receive("x:1", gossip(MessageType.DEAD, "b", 5), 2, rng)
    assert m.members["b"].state == MemberState.ALIVE  # a dead about an older life is ignored
    m.receive("x:1", gossip(MessageType.DEAD, "b", 6), 2, rng)
    assert m.members["b"].state == MemberState.DEAD
    m.receive("x:1", gossip(MessageType.ALIVE, "b", 6), 3, rng)
    assert m.members["b"].state == MemberState.DEAD  # a late alive does not resurrect the dead


def test_dead_member_is_forgotten_after_retention_and_can_rejoin():
    m = Membership("a", "a:1")
    rng = random.Random(0)
    m.receive("b:1", push("b", inc=1), 0, rng)
    m.receive("x:1", gossip(MessageType.DEAD, "b", 1), 1, rng)
    m.tick(1 + CONFIG.dead_retention - 0.1, rng)
    assert "b" in m.members
    m.tick(1 + CONFIG.dead_retention, rng)
    assert "b" not in m.members
    step = m.receive("b:1", push("b", inc=0), 40, rng)
    assert [e.kind for e in step.events] == ["join"]


def test_member_hearing_itself_suspected_or_dead_refutes_with_higher_incarnation():
    m = Membership("a", "a:1")
    rng = random.Random(0)
    step = m.receive("x:1", gossip(MessageType.SUSPECT, "a", 0), 1, rng)
    assert m.incarnation == 1 and not step.events
    m.receive("x:1", gossip(MessageType.DEAD, "a", 7), 2, rng)
    assert m.incarnation == 8
    m.receive("b:1", push("b"), 2, rng)
    out = m.tick(3, rng)
    sent = [u for _, msg in out.packets for u in msg.body.get("updates", ())]
    assert {"t": MessageType.ALIVE, "node": "a", "inc": 8}.items() <= next(u for u in sent if u["node"] == "a").items()


def test_updates_are_piggybacked_a_bounded_number_of_times():
    m = Membership("a", "a:1")
    rng = random.Random(0)
    m.receive("b:1", push("b"), 0, rng)
    limit = retransmit_limit(CONFIG, len(m.members))
    carried = 0
    for i in range(200):
        for _, msg in m.tick(i * CONFIG.gossip_interval, rng).packets:
            carried += sum(1 for u in msg.body.get("updates", ()) if u["node"] == "b" and u["t"] == MessageType.ALIVE)
    assert carried == limit


def test_graceful_leave_is_a_leave_not_a_failure():
    sim, addrs = cluster(6, seed=11)
    sim._apply(addrs[4], sim.node(addrs[4]).membership.leave(sim.now))
    sim.run(5)
    for a in addrs:
        if a != addrs[4]:
            assert [e.kind for e in events(sim, a, "leave")] == ["leave"]
            assert not events(sim, a, "dead")
            assert state_of(sim, a, "n04") == MemberState.LEFT


def test_meta_change_reaches_everyone_as_an_update():
    sim, addrs = cluster(6, seed=12)
    sim._apply(addrs[1], sim.node(addrs[1]).membership.set_meta(b"10.9.9.9", sim.now))
    sim.run(5)
    for a in addrs[2:]:
        assert sim.node(a).membership.members["n01"].meta == b"10.9.9.9"
        assert [e.meta for e in events(sim, a, "update", "n01")] == [b"10.9.9.9"]


def test_partition_heals_through_push_pull_and_refutation():
    # Rejoining a seed after a partition is the daemon's job (networkdb retries its bootstrap nodes);
    # push/pull then makes each side hear it was declared dead, and refute.
    cfg = MembershipConfig(push_pull_interval=5.0)
    sim, addrs = cluster(6, seed=13, config=cfg)
    left, right = set(addrs[:3]), set(addrs[3:])
    sim.partition(left, right)
    sim.run(20)
    assert state_of(sim, addrs[0], "n05") == MemberState.DEAD
    sim.heal()
    sim._apply(addrs[5], sim.node(addrs[5]).membership.join([addrs[0]], sim.now))
    assert sim.run_until(lambda: everyone_sees(sim, 6), 4 * cfg.push_pull_interval) is not None
