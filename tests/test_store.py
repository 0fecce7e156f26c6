"""The replicated store: atomic compare-and-set transactions, gap-free watches, linearizable reads, snapshots."""

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftswarm.store import (
    ABSENT,
    Action,
    ClusterState,
    Conflict,
    ReplicatedStore,
    StoreError,
    WatchCompacted,
    check,
    create,
    delete,
    put,
    update,
)
from raftswarm.store.state import encode_transaction


async def test_transactions_are_atomic_and_a_stale_version_changes_nothing(cluster):
    c = await cluster(3, ReplicatedStore)
    leader = await c.leader()
    store = c.machines[leader.id]
    first = await store.transact([create("services", "web", {"replicas": 1}), create("secrets", "s1", {"n": 1})])
    web = await store.get("services", "web")
    assert web.version == first.version and web.data == {"replicas": 1}
    await store.transact([update("services", "web", {"replicas": 3}, expect=web.version)])
    with pytest.raises(Conflict, match="changed meanwhile"):
        # a stale writer also deleting the secret: neither happens
        await store.transact([update("services", "web", {"replicas": 9}, expect=web.version), delete("secrets", "s1")])
    assert (await store.get("services", "web")).data == {"replicas": 3}
    assert await store.get("secrets", "s1") is not None
    with pytest.raises(Conflict, match="already exists"):
        await store.transact([create("services", "web", {})])


async def test_a_follower_forwards_writes_and_reads_linearizably(cluster):
    c = await cluster(3, ReplicatedStore)
    leader = await c.leader()
    follower_id = next(i for i in c.network.drivers if i != leader.id)
    follower = c.machines[follower_id]
    await follower.transact([create("nodes", "n1", {"role": "worker"})])
    await c.machines[leader.id].transact([update("nodes", "n1", {"role": "manager"})])
    # The follower may not have applied the leader's write yet; a linearizable read waits until it has.
    assert (await follower.get("nodes", "n1")).data == {"role": "manager"}


async def test_watch_streams_every_change_in_order_across_a_leader_change(cluster):
    c = await cluster(3, ReplicatedStore)
    leader = await c.leader()
    watcher_id = next(i for i in c.network.drivers if i != leader.id)
    watched = c.machines[watcher_id]
    seen = []

    async def consume():
        async for change in watched.watch(0):
            seen.append((change.object.id, change.action))
            if len(seen) == 40:
                return

    consumer = asyncio.create_task(consume())
    for i in range(10):
        await c.machines[leader.id].transact([create("tasks", f"a{i}", {}), create("tasks", f"b{i}", {})])
    c.network.down.add(leader.id)
    new_leader = await c.leader()
    for i in range(10):
        await c.machines[new_leader.id].transact([create("tasks", f"c{i}", {}), create("tasks", f"d{i}", {})])
    await asyncio.wait_for(consumer, 10)
    expected = [(f"{p}{i}", Action.CREATE) for half in ("ab", "cd") for i in range(10) for p in half]
    assert seen == expected


async def test_watch_resumes_from_a_version(cluster):
    c = await cluster(1, ReplicatedStore)
    store = c.machines[(await c.leader()).id]
    versions = [(await store.transact([create("k", str(i), i)])).version for i in range(5)]
    resumed = []
    async for change in store.watch(versions[2]):
        resumed.append(change.object.data)
        if len(resumed) == 2:
            break
    assert resumed == [3, 4]


async def test_a_watch_of_some_kinds_sees_only_them_and_other_commits_do_not_wake_it(cluster):
    c = await cluster(1, ReplicatedStore)
    store = c.machines[(await c.leader()).id]
    since = (await store.transact([create("tasks", "t0", 0), create("secrets", "s0", 0)])).version
    seen = []

    async def consume():
        async for change in store.watch(since - 1, frozenset({"tasks"})):
            seen.append(change.object.id)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    assert seen == ["t0"]
    (watcher,) = store._watchers
    for i in range(1, 4):
        await store.transact([create("secrets", f"s{i}", i)])
        assert not watcher.wakeup.is_set(), "a commit of no watched kind does not wake the watcher"
    await store.transact([create("secrets", "s4", 4), create("tasks", "t1", 1)])
    await asyncio.sleep(0.01)
    assert seen == ["t0", "t1"]
    consumer.cancel()


def test_watch_from_before_the_kept_history_says_to_relist():
    state = ClusterState()
    state.apply(5, encode_transaction([create("k", "a", 1)]))
    state.restore(state.snapshot())
    with pytest.raises(WatchCompacted, match="list the objects again"):
        state.committed_since(1)


@pytest.mark.parametrize(
    "payload",
    [b"\xc1", encode_transaction([create("k", "a", 1)])[:-1], b"\x90"],
)
def test_malformed_transactions_are_refused_and_change_nothing(payload):
    state = ClusterState()
    result = state.apply(1, payload)
    assert isinstance(result, StoreError)
    assert state.list("k") == []


def test_invalid_operations_are_refused():
    state = ClusterState()
    assert isinstance(state.apply(1, encode_transaction([create("", "a", 1)])), StoreError)
    assert isinstance(state.apply(2, encode_transaction([create("k", "x" * 300, 1)])), StoreError)
    assert isinstance(state.apply(3, encode_transaction([create("k", "a", 1), update("k", "a", 2)])), StoreError)
    assert state.list("k") == []


def test_unserializable_data_is_refused_before_proposing():
    with pytest.raises(StoreError, match="msgpack-serializable"):
        encode_transaction([create("k", "a", 1 << 70)])
    with pytest.raises(StoreError, match="msgpack-serializable"):
        encode_transaction([create("k", "a", object())])


keys = st.sampled_from(["a", "b", "c"])
values = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
operations = st.one_of(
    st.builds(create, st.just("k"), keys, values),
    st.builds(update, st.just("k"), keys, values, st.sampled_from([-1, 0, 1, 2, 3, 4, 5])),
    st.builds(delete, st.just("k"), keys, st.sampled_from([-1, 0, 1, 2, 3])),
    st.builds(put, st.just("k"), keys, values, st.sampled_from([-1, 0, 1, 2, 3])),
    st.builds(check, st.just("k"), keys, st.sampled_from([-1, ABSENT, 1, 2, 3])),
)


@given(st.lists(st.lists(operations, min_size=1, max_size=3), max_size=25))
def test_state_machine_matches_a_simple_model_and_survives_snapshots(transactions):
    state = ClusterState()
    model: dict[str, tuple[int, int]] = {}  # id -> (version, value)
    for index, ops in enumerate(transactions, start=1):
        result = state.apply(index, encode_transaction(ops))
        # Every expectation is checked against the state the transaction starts from, then all apply.
        ok = len({o.id for o in ops if o.action}) == len([o for o in ops if o.action])
        for op in ops:
            version = model[op.id][0] if op.id in model else 0
            if op.expect != -1 and version != op.expect:
                ok = False
            if op.action in (Action.UPDATE, Action.DELETE) and op.id not in model:
                ok = False
            if op.action is Action.CREATE and op.id in model:
                ok = False
        if ok:
            for op in ops:
                if op.action is Action.DELETE:
                    del model[op.id]
                elif op.action is not None:
                    model[op.id] = (index, op.data)
        assert isinstance(result, StoreError) != ok
        assert {o.id: (o.version, o.data) for o in state.list("k")} == model
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.list("k") == state.list("k")
