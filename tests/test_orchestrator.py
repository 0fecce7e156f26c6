"""The orchestrator's rules, as a user of `docker service scale` / `docker service ps` would notice them."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftswarm.manager.orchestrator import (
    InvalidRestartPolicy,
    Plan,
    WrongServiceMode,
    new_task,
    reconcile_global,
    reconcile_replicated,
    restart_decision,
    tasks_to_reap,
)
from raftswarm.objects.tasks import TaskState, can_move, is_terminal
from raftswarm.objects.placement import InvalidPlacement

NOW = 1_700_000_000.0
SECOND = 1_000_000_000


def ids(prefix: str = "new"):
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def replicated(replicas: int, service_id: str = "svc") -> dict:
    return {
        "ID": service_id,
        "Spec": {
            "Name": "web",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
            "Mode": {"Replicated": {"Replicas": replicas}},
        },
    }


def global_service(constraints: list[str] | None = None) -> dict:
    template: dict = {"ContainerSpec": {"Image": "agent"}}
    if constraints:
        template["Placement"] = {"Constraints": constraints}
    return {"ID": "glb", "Spec": {"Name": "agent", "TaskTemplate": template, "Mode": {"Global": {}}}}


def task(
    task_id: str,
    *,
    slot: int | None = None,
    node: str | None = None,
    state: str = "running",
    desired: str = "running",
    service: str = "svc",
    at: str = "2024-01-01T00:00:00Z",
) -> dict:
    result = {
        "ID": task_id,
        "ServiceID": service,
        "DesiredState": desired,
        "Status": {"State": state, "Timestamp": at},
    }
    if slot is not None:
        result["Slot"] = slot
    if node is not None:
        result["NodeID"] = node
    return result


def node(node_id: str, *, availability: str = "active", state: str = "ready", labels: dict | None = None) -> dict:
    return {
        "ID": node_id,
        "Spec": {"Role": "worker", "Availability": availability, "Labels": labels or {}},
        "Description": {"Hostname": f"host-{node_id}", "Platform": {"OS": "linux", "Architecture": "x86_64"}},
        "Status": {"State": state},
    }


def reconcile(service: dict, tasks: list[dict]) -> Plan:
    return reconcile_replicated(service, tasks, new_id=ids(), now=NOW)


def created_slots(plan: Plan) -> list[int]:
    return [created["Slot"] for created in plan.create]


# --- task states ---------------------------------------------------------------------------------------


def test_states_follow_swarmkit_order():
    assert [state.api for state in TaskState] == [
        "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
        "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
    ]  # fmt: skip


def test_states_only_move_forward():
    assert can_move("new", "pending")
    assert can_move(TaskState.ASSIGNED, TaskState.RUNNING)
    assert can_move("running", "failed")
    assert not can_move("running", "running")
    assert not can_move("running", "starting")
    assert not can_move("failed", "running")


def test_complete_and_later_states_are_terminal():
    assert [state.api for state in TaskState if is_terminal(state)] == [
        "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
    ]  # fmt: skip
    assert not is_terminal("running")


def test_unknown_state_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="expected one of new, pending"):
        is_terminal("exploded")


# --- new tasks -----------------------------------------------------------------------------------------


def test_new_task_has_docker_shape():
    service = replicated(1)
    created = new_task(service, slot=3, task_id="t1", now=0.0)
    assert created == {
        "ID": "t1",
        "ServiceID": "svc",
        "Slot": 3,
        "Spec": {"ContainerSpec": {"Image": "nginx"}},
        "ServiceAnnotations": {"Name": "web"},
        "DesiredState": "running",
        "Status": {"State": "new", "Timestamp": "1970-01-01T00:00:00Z", "Message": "created"},
    }
    created["Spec"]["ContainerSpec"]["Image"] = "changed"
    assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx"


def test_global_task_is_pinned_to_its_node():
    created = new_task(global_service(), node_id="n1", task_id="t1", now=NOW)
    assert created["NodeID"] == "n1"
    assert "Slot" not in created


def test_task_needs_exactly_one_of_slot_and_node():
    with pytest.raises(ValueError):
        new_task(replicated(1), task_id="t", now=NOW)
    with pytest.raises(ValueError):
        new_task(replicated(1), slot=1, node_id="n1", task_id="t", now=NOW)


# --- replicated services -------------------------------------------------------------------------------


def test_new_service_gets_one_task_per_slot():
    plan = reconcile(replicated(3), [])
    assert created_slots(plan) == [1, 2, 3]
    assert [created["ID"] for created in plan.create] == ["new1", "new2", "new3"]
    assert plan.shutdown == ()


def test_scale_up_creates_only_the_missing_slots():
    tasks = [task("a", slot=1, node="n1"), task("b", slot=3, node="n2")]
    plan = reconcile(replicated(4), tasks)
    assert created_slots(plan) == [2, 4]
    assert plan.shutdown == ()


def test_steady_state_plans_nothing():
    tasks = [task("a", slot=1, node="n1"), task("b", slot=2, node="n2")]
    assert reconcile(replicated(2), tasks) == Plan()


def test_scale_down_removes_the_highest_slots():
    tasks = [task(f"t{slot}", slot=slot, node=f"n{slot % 2}") for slot in range(1, 6)]
    plan = reconcile(replicated(2), tasks)
    assert plan.shutdown == ("t3", "t4", "t5")
    assert plan.create == ()


def test_scale_down_removes_tasks_not_yet_running_first():
    tasks = [task("t1", slot=1, state="pending"), task("t2", slot=2, node="n1"), task("t3", slot=3, node="n2")]
    plan = reconcile(replicated(2), tasks)
    assert plan.shutdown == ("t1",)


def test_scale_down_takes_from_the_most_loaded_node():
    tasks = [task("t1", slot=1, node="n1"), task("t2", slot=2, node="n1"), task("t3", slot=3, node="n2")]
    plan = reconcile(replicated(2), tasks)
    assert plan.shutdown == ("t2",)


def test_scale_to_zero_shuts_everything_down():
    tasks = [task("t1", slot=1), task("t2", slot=2)]
    assert reconcile(replicated(0), tasks) == Plan(shutdown=("t1", "t2"))


def test_failed_task_does_not_count_and_its_slot_is_refilled():
    tasks = [task("a", slot=1), task("b", slot=2, state="failed")]
    plan = reconcile(replicated(2), tasks)
    assert created_slots(plan) == [2]
    assert plan.shutdown == ()


def test_task_being_shut_down_does_not_hold_its_slot():
    tasks = [task("a", slot=1), task("b", slot=2, desired="shutdown")]
    assert created_slots(reconcile(replicated(2), tasks)) == [2]


def test_slot_with_two_live_tasks_keeps_the_one_furthest_along():
    tasks = [task("old", slot=1, state="running"), task("dup", slot=1, state="pending")]
    assert reconcile(replicated(1), tasks) == Plan(shutdown=("dup",))


def test_other_services_tasks_are_ignored():
    tasks = [task("x", slot=1, service="other")]
    assert created_slots(reconcile(replicated(1), tasks)) == [1]


def test_replicas_default_to_one():
    service = replicated(1)
    service["Spec"]["Mode"] = {"Replicated": {}}
    assert created_slots(reconcile(service, [])) == [1]


def test_global_service_is_not_reconciled_as_replicated():
    with pytest.raises(WrongServiceMode, match="reconcile_global"):
        reconcile(global_service(), [])


def test_replicated_plan_does_not_depend_on_task_order():
    tasks = [task(f"t{index}", slot=index % 7 + 1, node=f"n{index % 3}", state="running") for index in range(12)]
    expected = reconcile(replicated(4), tasks)
    for seed in range(5):
        shuffled = tasks[:]
        random.Random(seed).shuffle(shuffled)
        assert reconcile(replicated(4), shuffled) == expected


LIVE_OR_NOT = st.sampled_from([state.api for state in TaskState])


@settings(max_examples=200, deadline=None)
@given(
    replicas=st.integers(0, 8),
    existing=st.lists(
        st.tuples(st.integers(1, 10), LIVE_OR_NOT, st.sampled_from(["ready", "running", "shutdown"]),
                  st.sampled_from(["n1", "n2", "n3", None])),
        max_size=20,
    ),
)  # fmt: skip
def test_applied_replicated_plan_leaves_exactly_one_live_task_per_wanted_slot(replicas, existing):
    tasks = [
        task(f"t{index}", slot=slot, state=state, desired=desired, node=node_id)
        for index, (slot, state, desired, node_id) in enumerate(existing)
    ]
    plan = reconcile(replicated(replicas), tasks)
    for existing_task in tasks:
        if existing_task["ID"] in plan.shutdown:
            existing_task["DesiredState"] = "shutdown"
    after = tasks + list(plan.create)

    live_per_slot: dict[int, int] = {}
    for candidate in after:
        if (
            not is_terminal(candidate["Status"]["State"])
            and TaskState.of(candidate["DesiredState"]) <= TaskState.RUNNING
        ):
            live_per_slot[candidate["Slot"]] = live_per_slot.get(candidate["Slot"], 0) + 1
    assert len(live_per_slot) == replicas
    assert set(live_per_slot.values()) <= {1}
    assert reconcile(replicated(replicas), after) == Plan()


# --- during a rolling update ----------------------------------------------------------------------------


def of_spec(image: str, created: dict) -> dict:
    """`created` (a task) made from a TaskTemplate running `image`; "nginx" is `replicated`'s current one."""
    return {**created, "Spec": {"ContainerSpec": {"Image": image}}}


def test_start_first_pair_in_a_slot_is_left_to_the_updater():
    tasks = [of_spec("nginx:old", task("old", slot=1)), of_spec("nginx", task("new", slot=1, state="starting"))]
    assert reconcile(replicated(1), tasks) == Plan()


def test_start_first_pair_keeps_the_new_task_once_it_runs():
    tasks = [of_spec("nginx:old", task("old", slot=1)), of_spec("nginx", task("new", slot=1))]
    assert reconcile(replicated(1), tasks) == Plan(shutdown=("old",))


def test_slot_keeps_a_current_spec_task_over_a_dirty_one_further_along():
    tasks = [
        of_spec("nginx:old", task("old", slot=1)),
        of_spec("nginx", task("a", slot=1, state="pending")),
        of_spec("nginx", task("b", slot=1, state="assigned")),
    ]
    assert reconcile(replicated(1), tasks) == Plan(shutdown=("a", "old"))


def test_scale_down_removes_both_tasks_of_a_start_first_slot():
    tasks = [
        of_spec("nginx", task("a", slot=1, node="n1")),
        of_spec("nginx:old", task("old", slot=2, node="n2")),
        of_spec("nginx", task("new", slot=2, node="n1", state="pending")),
    ]
    assert reconcile(replicated(1), tasks) == Plan(shutdown=("new", "old"))


@settings(max_examples=200, deadline=None)
@given(
    replicas=st.integers(0, 5),
    existing=st.lists(
        st.tuples(st.integers(1, 6), LIVE_OR_NOT, st.sampled_from(["running", "shutdown"]), st.booleans()),
        max_size=16,
    ),
)
def test_applied_plan_leaves_one_task_or_a_start_first_pair_per_wanted_slot(replicas, existing):
    tasks = [
        of_spec("nginx" if current else "nginx:old", task(f"t{index}", slot=slot, state=state, desired=desired))
        for index, (slot, state, desired, current) in enumerate(existing)
    ]
    plan = reconcile(replicated(replicas), tasks)
    for existing_task in tasks:
        if existing_task["ID"] in plan.shutdown:
            existing_task["DesiredState"] = "shutdown"
    after = tasks + list(plan.create)

    live_per_slot: dict[int, list[dict]] = {}
    for candidate in after:
        if (
            not is_terminal(candidate["Status"]["State"])
            and TaskState.of(candidate["DesiredState"]) <= TaskState.RUNNING
        ):
            live_per_slot.setdefault(candidate["Slot"], []).append(candidate)
    assert len(live_per_slot) == replicas
    for live in live_per_slot.values():
        current = [candidate for candidate in live if candidate["Spec"]["ContainerSpec"]["Image"] == "nginx"]
        pair = len(current) == 1 and TaskState.of(current[0]["Status"]["State"]) < TaskState.RUNNING
        assert len(live) == 1 or pair
    assert reconcile(replicated(replicas), after) == Plan()


# --- global services -----------------------------------------------------------------------------------


def reconcile_g(service: dict, nodes: list[dict], tasks: list[dict]) -> Plan:
    return reconcile_global(service, nodes, tasks, new_id=ids(), now=NOW)


def g_task(task_id: str, node_id: str, **kwargs) -> dict:
    return task(task_id, node=node_id, service="glb", **kwargs)


def test_global_service_runs_one_task_per_ready_node():
    plan = reconcile_g(global_service(), [node("n2"), node("n1")], [])
    assert [created["NodeID"] for created in plan.create] == ["n1", "n2"]
    assert plan.shutdown == ()


def test_global_service_follows_a_node_joining():
    plan = reconcile_g(global_service(), [node("n1"), node("n2")], [g_task("a", "n1")])
    assert [created["NodeID"] for created in plan.create] == ["n2"]


def test_global_task_on_drained_node_is_shut_down():
    plan = reconcile_g(global_service(), [node("n1", availability="drain"), node("n2")], [g_task("a", "n1")])
    assert plan.shutdown == ("a",)
    assert [created["NodeID"] for created in plan.create] == ["n2"]


def test_paused_node_keeps_its_task_but_gets_none_new():
    nodes = [node("n1", availability="pause"), node("n2", availability="pause")]
    assert reconcile_g(global_service(), nodes, [g_task("a", "n1")]) == Plan()


def test_down_node_gets_no_new_task_and_keeps_its_old_one():
    nodes = [node("n1", state="down"), node("n2", state="down")]
    assert reconcile_g(global_service(), nodes, [g_task("a", "n1")]) == Plan()


def test_global_task_of_a_node_that_left_is_shut_down():
    assert reconcile_g(global_service(), [node("n1")], [g_task("a", "n1"), g_task("b", "gone")]) == Plan(
        shutdown=("b",)
    )


def test_global_failed_task_is_replaced_on_its_node():
    plan = reconcile_g(global_service(), [node("n1")], [g_task("a", "n1", state="failed")])
    assert [created["NodeID"] for created in plan.create] == ["n1"]


def test_global_service_respects_constraints():
    service = global_service(["node.labels.zone==east"])
    nodes = [node("n1", labels={"zone": "east"}), node("n2", labels={"zone": "west"}), node("n3")]
    plan = reconcile_g(service, nodes, [])
    assert [created["NodeID"] for created in plan.create] == ["n1"]
    assert plan.create[0]["Spec"]["Placement"] == {"Constraints": ["node.labels.zone==east"]}


def test_global_task_leaves_a_node_that_no_longer_matches():
    service = global_service(["node.labels.zone!=west"])
    plan = reconcile_g(service, [node("n1", labels={"zone": "west"})], [g_task("a", "n1")])
    assert plan == Plan(shutdown=("a",))


def test_global_constraint_on_node_fields():
    service = global_service(["node.hostname==HOST-n2"])
    plan = reconcile_g(service, [node("n1"), node("n2")], [])
    assert [created["NodeID"] for created in plan.create] == ["n2"]


def test_global_invalid_constraint_raises_the_schedulers_error():
    with pytest.raises(InvalidPlacement):
        reconcile_g(global_service(["node.lables.zone==a"]), [node("n1")], [])


def test_replicated_service_is_not_reconciled_as_global():
    with pytest.raises(WrongServiceMode, match="reconcile_replicated"):
        reconcile_g(replicated(1), [node("n1")], [])


def test_global_plan_is_deterministic():
    nodes = [node(f"n{index}") for index in range(6)]
    tasks = [g_task("a", "n3"), g_task("b", "n3", state="pending")]
    first = reconcile_g(global_service(), nodes, tasks)
    assert reconcile_g(global_service(), list(reversed(nodes)), list(reversed(tasks))) == first
    assert first.shutdown == ("b",)


def test_global_start_first_pair_on_a_node_is_left_to_the_updater():
    tasks = [of_spec("agent:old", g_task("old", "n1")), of_spec("agent", g_task("new", "n1", state="pending"))]
    assert reconcile_g(global_service(), [node("n1")], tasks) == Plan()


def test_global_node_keeps_its_current_spec_task_once_it_runs():
    tasks = [of_spec("agent:old", g_task("old", "n1")), of_spec("agent", g_task("new", "n1"))]
    assert reconcile_g(global_service(), [node("n1")], tasks) == Plan(shutdown=("old",))


def test_drained_node_loses_both_tasks_of_a_start_first_pair():
    tasks = [of_spec("agent:old", g_task("old", "n1")), of_spec("agent", g_task("new", "n1", state="pending"))]
    assert reconcile_g(global_service(), [node("n1", availability="drain")], tasks) == Plan(shutdown=("new", "old"))


# --- restart supervision -------------------------------------------------------------------------------


def test_default_policy_restarts_any_ended_task_after_five_seconds():
    decision = restart_decision(task("a", slot=1, state="complete"), None, [], NOW)
    assert decision.restart
    assert decision.not_before == NOW + 5


def test_condition_none_never_restarts():
    decision = restart_decision(task("a", slot=1, state="failed"), {"Condition": "none"}, [], NOW)
    assert not decision.restart
    assert "restart condition is none" in decision.reason


def test_on_failure_restarts_only_failed_tasks():
    policy = {"Condition": "on-failure", "Delay": 0}
    assert restart_decision(task("a", slot=1, state="failed"), policy, [], NOW).restart
    assert restart_decision(task("a", slot=1, state="rejected"), policy, [], NOW).restart
    completed = restart_decision(task("a", slot=1, state="complete"), policy, [], NOW)
    assert not completed.restart
    assert "on-failure" in completed.reason


def test_delay_sets_when_the_replacement_may_start():
    decision = restart_decision(task("a", slot=1, state="failed"), {"Delay": 30 * SECOND}, [], NOW)
    assert decision.not_before == NOW + 30
    assert restart_decision(task("a", slot=1, state="failed"), {"Delay": 0}, [], NOW).not_before == NOW


def test_max_attempts_stop_restarts():
    policy = {"MaxAttempts": 2}
    failed = task("a", slot=1, state="failed")
    assert restart_decision(failed, policy, [NOW - 100], NOW).restart
    decision = restart_decision(failed, policy, [NOW - 1000, NOW - 100], NOW)
    assert not decision.restart
    assert "max attempts (2) reached" in decision.reason


def test_max_attempts_count_only_restarts_within_the_window():
    policy = {"MaxAttempts": 2, "Window": 60 * SECOND}
    failed = task("a", slot=1, state="failed")
    assert restart_decision(failed, policy, [NOW - 1000, NOW - 100, NOW - 10], NOW).restart
    decision = restart_decision(failed, policy, [NOW - 30, NOW - 10], NOW)
    assert not decision.restart
    assert "within 60s" in decision.reason


def test_zero_max_attempts_means_unlimited():
    assert restart_decision(task("a", slot=1, state="failed"), {"MaxAttempts": 0}, [NOW] * 100, NOW).restart


def test_task_shut_down_by_the_orchestrator_is_not_restarted():
    decision = restart_decision(task("a", slot=1, state="shutdown", desired="shutdown"), None, [], NOW)
    assert not decision.restart


def test_running_task_is_not_restarted():
    decision = restart_decision(task("a", slot=1, state="running"), None, [], NOW)
    assert not decision.restart
    assert "still running" in decision.reason


def test_unknown_restart_condition_is_rejected():
    with pytest.raises(InvalidRestartPolicy, match="--restart-condition"):
        restart_decision(task("a", slot=1, state="failed"), {"Condition": "always"}, [], NOW)


# --- task reaper ---------------------------------------------------------------------------------------


def history(slot: int, count: int, *, service: str = "svc") -> list[dict]:
    return [
        task(f"{service}.{slot}.{minute:02d}", slot=slot, state="failed", service=service,
             at=f"2024-01-01T00:{minute:02d}:00.123456789Z")
        for minute in range(count)
    ]  # fmt: skip


def test_reaper_keeps_the_five_newest_terminal_tasks_per_slot():
    tasks = history(1, 8) + history(2, 3) + [task("live", slot=1)]
    assert tasks_to_reap(tasks) == ["svc.1.00", "svc.1.01", "svc.1.02"]


def test_reaper_keeps_history_per_node_for_global_services():
    tasks = [g_task(f"g{minute}", "n1", state="complete", at=f"2024-01-01T00:{minute:02d}:00Z") for minute in range(7)]
    tasks += [g_task("other", "n2", state="complete")]
    assert tasks_to_reap(tasks) == ["g0", "g1"]


def test_reaper_separates_services_and_honours_the_limit():
    tasks = history(1, 3) + history(1, 3, service="api")
    assert tasks_to_reap(tasks, history_limit=1) == ["api.1.00", "api.1.01", "svc.1.00", "svc.1.01"]
    assert len(tasks_to_reap(tasks, history_limit=0)) == 6


def test_reaper_orders_by_time_not_by_text():
    tasks = [
        task("later", slot=1, state="failed", at="2024-01-01T00:00:05.5Z"),
        task("earlier", slot=1, state="failed", at="2024-01-01T00:00:05Z"),
    ]
    assert tasks_to_reap(tasks, history_limit=1) == ["earlier"]
