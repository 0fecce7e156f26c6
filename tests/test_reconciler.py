"""The leader's control loop as a pure function: rounds over a store state, no network and no clock.

Each test drives `reconcile` over a real `ClusterState`, applying the operations a round returns as the
Reconciler would, and plays the agents' part by moving task states, as `docker service ps` would show.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from raftswarm.manager.allocator import allocate_network
from raftswarm.manager.reconciler import Reconciler, reconcile, view_of
from raftswarm.objects.kinds import SERVICES, TASKS
from raftswarm.objects.networks import ingress_network_spec, validate_network_spec
from raftswarm.store import ClusterState, Committed, Operation, create, delete, update
from raftswarm.store.state import encode_transaction
from raftswarm.store.store import ReplicatedStore

NOW = 1_700_000_000.0
SECOND = 1_000_000_000


def node(node_id: str, state: str = "ready", availability: str = "active", labels: dict | None = None) -> dict:
    return {
        "ID": node_id,
        "Spec": {"Role": "worker", "Availability": availability, "Labels": labels or {}},
        "Description": {"Hostname": node_id, "Platform": {"OS": "linux", "Architecture": "x86_64"}},
        "Status": {"State": state},
    }


def service(service_id: str = "svc", replicas: int | None = 3, **template: Any) -> dict:
    mode = {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}}
    return {
        "ID": service_id,
        "Spec": {
            "Name": service_id,
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1000"]}, **template},
            "Mode": mode,
        },
    }


class Swarm:
    """A ClusterState plus the loop's memory between rounds."""

    def __init__(self, *nodes: dict) -> None:
        self.state = ClusterState()
        self.index = itertools.count(1)
        self.ids = itertools.count(1)
        self.reconciled: dict[str, str] = {}
        self.nodes_seen: set[str] | None = None
        self.wake_at: float | None = None
        self.commit([create("nodes", n["ID"], n) for n in nodes])

    def commit(self, operations: list[Operation]) -> None:
        result = self.state.apply(next(self.index), encode_transaction(operations))
        assert isinstance(result, Committed), result

    def round(self, now: float = NOW, nodes_changed: bool | None = None) -> list[Operation]:
        view = view_of(self.state)
        if nodes_changed is None:
            seen = {f"{n.id}:{n.data['Status']['State']}:{n.data['Spec']}" for n in view.nodes.values()}
            nodes_changed, self.nodes_seen = seen != self.nodes_seen, seen
        outcome = reconcile(view, reconciled=self.reconciled, nodes_changed=nodes_changed, now=now, new_id=self.new_id)
        if outcome.operations:
            self.commit(outcome.operations)
        self.reconciled, self.wake_at = outcome.reconciled, outcome.wake_at
        return outcome.operations

    def new_id(self) -> str:
        return f"task{next(self.ids):03d}"

    def settle(self, now: float = NOW) -> None:
        for _ in range(10):
            if not self.round(now):
                return
        raise AssertionError("the loop did not settle: every round keeps changing something")

    def tasks(self, service_id: str = "svc") -> list[dict]:
        return [t.data for t in self.state.list(TASKS) if t.data.get("ServiceID") == service_id]

    def live(self, service_id: str = "svc") -> list[dict]:
        return [t for t in self.tasks(service_id) if t["DesiredState"] in ("running", "ready")]

    def report(self, task_id: str, state: str, **status: Any) -> None:
        stored = self.state.get(TASKS, task_id)
        data = {**stored.data, "Status": {**stored.data["Status"], "State": state, **status}}
        self.commit([update(TASKS, task_id, data)])

    def run_all(self) -> None:
        """Every assigned task starts, as agents would make it."""
        for task in self.tasks():
            if task["Status"]["State"] == "assigned" and task["DesiredState"] == "running":
                self.report(task["ID"], "running")

    def put_service(self, data: dict) -> None:
        current = self.state.get(SERVICES, data["ID"])
        self.commit([update(SERVICES, data["ID"], data) if current else create(SERVICES, data["ID"], data)])

    def set_node(self, node_id: str, **changes: Any) -> None:
        data = self.state.get("nodes", node_id).data
        spec = {**data["Spec"], **changes.get("Spec", {})}
        status = {**data["Status"], **changes.get("Status", {})}
        self.commit([update("nodes", node_id, {**data, "Spec": spec, "Status": status})])


def test_a_new_replicated_service_gets_one_task_per_replica_spread_over_ready_nodes():
    swarm = Swarm(node("n1"), node("n2"), node("n3", state="down"))
    swarm.put_service(service(replicas=3))
    swarm.settle()
    tasks = swarm.tasks()
    assert sorted(t["Slot"] for t in tasks) == [1, 2, 3]
    assert {t["Status"]["State"] for t in tasks} == {"assigned"}
    per_node = sorted(sum(1 for t in tasks if t["NodeID"] == n) for n in ("n1", "n2"))
    assert per_node == [1, 2]
    assert all(t["CreatedAt"] and t["DesiredState"] == "running" for t in tasks)


def test_a_settled_swarm_gives_empty_rounds():
    swarm = Swarm(node("n1"))
    swarm.put_service(service(replicas=2))
    swarm.settle()
    swarm.run_all()
    assert swarm.round() == []
    assert swarm.round(NOW + 3600) == []


def test_a_constraint_no_node_meets_leaves_tasks_pending_with_dockers_reason():
    swarm = Swarm(node("n1", labels={"zone": "b"}), node("n2", state="down"))
    swarm.put_service(service(replicas=1, Placement={"Constraints": ["node.labels.zone==a"]}))
    swarm.settle()
    (task,) = swarm.tasks()
    assert task["Status"]["State"] == "pending"
    assert task["Status"]["Err"] == (
        "no suitable node (1 node not available for new tasks; scheduling constraints not satisfied on 1 node)"
    )
    swarm.set_node("n1", Spec={"Labels": {"zone": "a"}})
    swarm.settle()
    assert swarm.tasks()[0]["Status"]["State"] == "assigned"


def test_scaling_down_shuts_down_the_extra_replicas_and_up_creates_new_slots():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(service(replicas=3))
    swarm.settle()
    swarm.run_all()
    swarm.put_service(service(replicas=1))
    swarm.settle()
    assert len(swarm.live()) == 1
    swarm.put_service(service(replicas=4))
    swarm.settle()
    assert sorted(t["Slot"] for t in swarm.live()) == [1, 2, 3, 4]


def test_a_failed_task_is_replaced_in_its_slot_after_the_restart_delay():
    swarm = Swarm(node("n1"))
    swarm.put_service(service(replicas=1, RestartPolicy={"Condition": "on-failure", "Delay": 5 * SECOND}))
    swarm.settle()
    (first,) = swarm.tasks()
    swarm.report(first["ID"], "failed", Err="task: non-zero exit (1)")
    swarm.settle(NOW + 1)
    replacement = [t for t in swarm.tasks() if t["ID"] != first["ID"]]
    assert len(replacement) == 1 and replacement[0]["Slot"] == first["Slot"]
    assert replacement[0]["DesiredState"] == "ready"  # assigned, but not started before the delay
    assert swarm.wake_at == pytest.approx(NOW + 6)
    assert swarm.state.get(TASKS, first["ID"]).data["DesiredState"] == "shutdown"
    swarm.settle(NOW + 6)
    assert swarm.state.get(TASKS, replacement[0]["ID"]).data["DesiredState"] == "running"


@pytest.mark.parametrize("condition, ended, replaced", [("none", "failed", False), ("on-failure", "complete", False), ("any", "complete", True)])
def test_the_restart_condition_decides_whether_an_ended_task_is_replaced(condition, ended, replaced):
    swarm = Swarm(node("n1"))
    swarm.put_service(service(replicas=1, RestartPolicy={"Condition": condition, "Delay": 0}))
    swarm.settle()
    (first,) = swarm.tasks()
    swarm.report(first["ID"], ended)
    swarm.settle(NOW + 1)
    assert len(swarm.tasks()) == (2 if replaced else 1)
    swarm.settle(NOW + 100)  # and later rounds do not fill the slot behind the policy's back
    assert len(swarm.tasks()) == (2 if replaced else 1)


def test_max_attempts_stops_restarting_a_crashing_task():
    swarm = Swarm(node("n1"))
    swarm.put_service(service(replicas=1, RestartPolicy={"Condition": "any", "Delay": 0, "MaxAttempts": 2}))
    swarm.settle()
    for attempt in range(4):
        (task,) = [t for t in swarm.tasks() if t["DesiredState"] == "running"] or [None]
        if task is None:
            break
        swarm.report(task["ID"], "failed")
        swarm.settle(NOW + attempt + 1)
    assert len(swarm.tasks()) == 3  # the first run and two restarts


def test_tasks_of_a_node_that_goes_down_are_shut_down_and_placed_elsewhere():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(service(replicas=2))
    swarm.settle()
    swarm.run_all()
    swarm.set_node("n1", Status={"State": "down"})
    swarm.settle(NOW + 1)
    live = swarm.live()
    assert len(live) == 2 and {t["NodeID"] for t in live} == {"n2"}
    old = [t for t in swarm.tasks() if t["DesiredState"] == "shutdown"]
    assert old and all(t["NodeID"] == "n1" and "node is down" in t["Status"]["Message"] for t in old)


def test_draining_moves_tasks_away_and_pause_keeps_them_but_takes_no_new_ones():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(service(replicas=2))
    swarm.settle()
    swarm.run_all()
    swarm.set_node("n2", Spec={"Availability": "pause"})
    swarm.settle(NOW + 1)
    assert sorted(t["NodeID"] for t in swarm.live()) == ["n1", "n2"]
    swarm.put_service(service(replicas=3))
    swarm.settle(NOW + 2)
    assert sorted(t["NodeID"] for t in swarm.live()) == ["n1", "n1", "n2"]
    swarm.set_node("n1", Spec={"Availability": "drain"})
    swarm.settle(NOW + 3)
    assert [t["Status"]["State"] for t in swarm.live() if t.get("NodeID") != "n2"] == ["pending", "pending"]


def test_a_global_service_follows_nodes_joining_draining_and_leaving():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(service("glb", replicas=None))
    swarm.settle()
    assert sorted(t["NodeID"] for t in swarm.live("glb")) == ["n1", "n2"]
    swarm.commit([create("nodes", "n3", node("n3"))])
    swarm.settle(NOW + 1)
    assert sorted(t["NodeID"] for t in swarm.live("glb")) == ["n1", "n2", "n3"]
    swarm.set_node("n2", Spec={"Availability": "drain"})
    swarm.commit([delete("nodes", "n3")])
    swarm.settle(NOW + 2)
    assert sorted(t["NodeID"] for t in swarm.live("glb")) == ["n1"]


def test_removing_a_service_reaps_its_stopped_tasks():
    swarm = Swarm(node("n1"), node("n2", state="down"))
    swarm.put_service(service(replicas=2))
    swarm.settle()
    swarm.run_all()
    running = swarm.tasks()
    swarm.commit([delete(SERVICES, "svc")])
    swarm.settle(NOW + 1)
    assert len(swarm.tasks()) == 2  # still running: the agent has yet to stop them
    for task in running:
        swarm.report(task["ID"], "shutdown")
    swarm.settle(NOW + 2)
    assert swarm.tasks() == []


def test_each_slot_keeps_the_history_limit_of_ended_tasks():
    swarm = Swarm(node("n1"))
    swarm.put_service(service(replicas=1, RestartPolicy={"Condition": "any", "Delay": 0}))
    swarm.settle()
    for attempt in range(8):
        (task,) = [t for t in swarm.tasks() if t["DesiredState"] == "running"]
        swarm.report(task["ID"], "failed", Timestamp=f"2023-11-14T22:13:{20 + attempt:02d}Z")
        swarm.settle(NOW + attempt + 1)
    ended = [t for t in swarm.tasks() if t["Status"]["State"] == "failed"]
    assert len(ended) == 5
    assert len(swarm.live()) == 1



def test_nodes_a_full_ingress_subnet_leaves_without_an_address_are_one_warning_logged_once(caplog):
    spec = {**ingress_network_spec(), "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.9.0/29"}]}}
    ingress = {**allocate_network(validate_network_spec(spec), {}), "ID": "ingress1"}
    swarm = Swarm(*(node(f"node{i:02d}") for i in range(12)))
    swarm.commit([create("networks", "ingress1", ingress)])
    outcome = reconcile(view_of(swarm.state), reconciled={}, nodes_changed=True, now=NOW, new_id=swarm.new_id)
    swarm.commit(outcome.operations)
    addressed = [n for n in view_of(swarm.state).nodes.values() if n.data.get("Attachments")]
    assert len(addressed) == 5  # a /29 without its network, broadcast and gateway addresses
    (warning,) = outcome.warnings
    assert warning.startswith("7 nodes get no ingress address (node05 ...): no available addresses on network ingress")
    # The loop says it when it first appears, not every round (thousands of rounds, with 1,000 nodes on a /24).
    loop = Reconciler(ReplicatedStore(), driver=None)
    with caplog.at_level("INFO", logger="raftswarm.manager.reconciler"):
        for warnings in [outcome.warnings, outcome.warnings, outcome.warnings, (), ()]:
            loop._say(warnings)
    assert [r.getMessage() for r in caplog.records] == [warning, "the control loops have nothing to warn of any more"]


def test_after_a_change_the_next_round_waits_as_long_as_the_last_one_planned_within_bounds():
    from raftswarm.manager.reconciler import _DEBOUNCE, _PAUSE_LIMIT, _pause

    assert _pause(0.0002) == _DEBOUNCE  # a small swarm: rounds of ~1 ms answer a burst within the debounce
    assert _pause(0.05) == 0.05  # 10,000 tasks: the loop gets as much time for everything else as the round took
    assert _pause(30.0) == _PAUSE_LIMIT  # however slow a round, a change is planned for within the limit
