"""Job-mode services (`docker service create --mode replicated-job|global-job`), as `docker service ps` and
`docker service ls` would show them, following SwarmKit's manager/orchestrator/jobs reconcilers.

The orchestrator's decisions are checked on plain dicts, the control loop on a real `ClusterState` (the
`Swarm` harness of test_reconciler), with the test playing the agents' part. No network, no clock.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from raftswarm.manager.orchestrator import (
    WrongServiceMode,
    reconcile_global_job,
    reconcile_replicated,
    reconcile_replicated_job,
    restart_decision,
)
from raftswarm.objects.jobs import (
    holds_slot,
    job_counts,
    next_job_status,
    service_status,
    started_job_status,
    version,
)
from raftswarm.objects.kinds import CLUSTER, CLUSTER_KEY
from raftswarm.objects.specs import InvalidSpec, validate_service_spec
from raftswarm.store import create, delete

from test_reconciler import NOW, SECOND, Swarm, node

TEMPLATE = {"ContainerSpec": {"Image": "busybox", "Args": ["true"]}}


def replicated_job(
    service_id: str = "job", max_concurrent: int | None = 2, total: int | None = 3, iteration: int = 0, **template: Any
) -> dict:
    counts = {k: v for k, v in (("MaxConcurrent", max_concurrent), ("TotalCompletions", total)) if v is not None}
    return {
        "ID": service_id,
        "Spec": {"Name": service_id, "TaskTemplate": {**TEMPLATE, **template}, "Mode": {"ReplicatedJob": counts}},
        "JobStatus": {"JobIteration": version(iteration), "LastExecution": "2024-01-01T00:00:00Z"},
    }


def global_job(service_id: str = "gjob", iteration: int = 0, **template: Any) -> dict:
    service = replicated_job(service_id, iteration=iteration, **template)
    service["Spec"]["Mode"] = {"GlobalJob": {}}
    return service


def ids():
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


def job_task(
    task_id: str, *, slot: int | None = 0, node_id: str = "n1", state: str = "running", desired: str = "complete",
    iteration: int = 0, service: str = "job",
) -> dict:
    task = {
        "ID": task_id,
        "ServiceID": service,
        "NodeID": node_id,
        "DesiredState": desired,
        "Status": {"State": state, "Timestamp": "2024-01-01T00:00:00Z"},
        "JobIteration": version(iteration),
        "Spec": TEMPLATE,
    }
    if slot is not None:
        task["Slot"] = slot
    return task


# -- the replicated job orchestrator ---------------------------------------------------------------------


def test_a_new_replicated_job_starts_max_concurrent_tasks_meant_to_complete():
    plan = reconcile_replicated_job(replicated_job(max_concurrent=2, total=3), [], new_id=ids(), now=NOW)
    assert [t["Slot"] for t in plan.create] == [0, 1]  # SwarmKit numbers a job's slots from 0
    assert all(t["DesiredState"] == "complete" and t["JobIteration"] == {} for t in plan.create)
    assert plan.shutdown == plan.remove == ()


def test_each_completion_lets_the_next_task_start_until_total_completions():
    service = replicated_job(max_concurrent=2, total=3)
    one_done = [job_task("a", slot=0, state="complete"), job_task("b", slot=1)]
    assert [t["Slot"] for t in reconcile_replicated_job(service, one_done, new_id=ids(), now=NOW).create] == [2]
    two_done_one_running = [*one_done[:1], job_task("b", slot=1, state="complete"), job_task("c", slot=2)]
    assert reconcile_replicated_job(service, two_done_one_running, new_id=ids(), now=NOW).create == ()
    all_done = [job_task(i, slot=s, state="complete") for s, i in enumerate("abc")]
    assert reconcile_replicated_job(service, all_done, new_id=ids(), now=NOW) == reconcile_replicated_job(
        service, all_done, new_id=ids(), now=NOW
    )
    assert reconcile_replicated_job(service, all_done, new_id=ids(), now=NOW).create == ()


def test_a_task_that_failed_holds_its_slot_until_the_restart_policy_has_handled_it():
    service = replicated_job(max_concurrent=1, total=2)
    unhandled = [job_task("a", slot=0, state="failed")]  # still desired complete: the restart supervisor's
    assert reconcile_replicated_job(service, unhandled, new_id=ids(), now=NOW).create == ()
    handled = [job_task("a", slot=0, state="failed", desired="shutdown")]  # not replaced (condition none)
    assert [t["Slot"] for t in reconcile_replicated_job(service, handled, new_id=ids(), now=NOW).create] == [0]


def test_a_new_iteration_removes_the_earlier_ones_unfinished_tasks_and_leaves_the_finished_ones():
    service = replicated_job(max_concurrent=2, total=2, iteration=1)
    earlier = [
        job_task("done", slot=0, state="complete"),
        job_task("running", slot=1, state="running"),
        job_task("failed", slot=1, state="failed", desired="shutdown"),
    ]
    plan = reconcile_replicated_job(service, earlier, new_id=ids(), now=NOW)
    assert plan.remove == ("running",)
    assert [(t["Slot"], t["JobIteration"]) for t in plan.create] == [(0, {"Index": 1}), (1, {"Index": 1})]


def test_dockerd_defaults_max_concurrent_to_one_and_total_completions_to_max_concurrent():
    assert job_counts(replicated_job(max_concurrent=None, total=None)["Spec"]) == (1, 1)
    assert job_counts(replicated_job(max_concurrent=4, total=None)["Spec"]) == (4, 4)
    plan = reconcile_replicated_job(replicated_job(max_concurrent=None, total=5), [], new_id=ids(), now=NOW)
    assert len(plan.create) == 1


def test_job_reconcilers_refuse_services_of_other_modes():
    with pytest.raises(WrongServiceMode):
        reconcile_replicated_job(global_job(), [], new_id=ids(), now=NOW)
    with pytest.raises(WrongServiceMode):
        reconcile_global_job(replicated_job(), [], [], new_id=ids(), now=NOW)
    with pytest.raises(WrongServiceMode):
        reconcile_replicated(replicated_job(), [], new_id=ids(), now=NOW)


# -- the global job orchestrator -------------------------------------------------------------------------


def test_a_global_job_runs_once_on_each_eligible_node():
    nodes = [
        node("n1"),
        node("n2"),
        node("paused", availability="pause"),
        node("drained", availability="drain"),
        node("down", state="down"),
    ]
    plan = reconcile_global_job(global_job(), nodes, [], new_id=ids(), now=NOW)
    assert [(t["NodeID"], t["DesiredState"]) for t in plan.create] == [("n1", "complete"), ("n2", "complete")]
    done = [job_task("a", slot=None, node_id="n1", state="complete", service="gjob")]
    plan = reconcile_global_job(global_job(), nodes, done, new_id=ids(), now=NOW)
    assert [t["NodeID"] for t in plan.create] == ["n2"]  # n1 has done its part


def test_a_global_job_follows_engine_label_constraints():
    labelled = node("ssd")
    labelled["Description"]["Engine"] = {"EngineVersion": "raftswarm", "Labels": {"disk": "ssd"}}
    service = global_job(Placement={"Constraints": ["engine.labels.disk==ssd"]})
    plan = reconcile_global_job(service, [node("n1"), labelled], [], new_id=ids(), now=NOW)
    assert [t["NodeID"] for t in plan.create] == ["ssd"]


def test_a_global_job_stops_unfinished_tasks_on_nodes_it_may_no_longer_use_but_keeps_completions():
    tasks = [
        job_task("drained-running", slot=None, node_id="drained", service="gjob"),
        job_task("drained-done", slot=None, node_id="drained", state="complete", service="gjob"),
        job_task("gone-running", slot=None, node_id="gone", service="gjob"),
        job_task("paused-running", slot=None, node_id="paused", service="gjob"),
    ]
    nodes = [node("drained", availability="drain"), node("paused", availability="pause")]
    plan = reconcile_global_job(global_job(), nodes, tasks, new_id=ids(), now=NOW)
    assert plan.shutdown == ("drained-running", "gone-running")
    assert plan.create == ()


def test_a_global_jobs_new_iteration_removes_every_earlier_task():
    tasks = [job_task("old", slot=None, state="complete", service="gjob")]
    plan = reconcile_global_job(global_job(iteration=1), [node("n1")], tasks, new_id=ids(), now=NOW)
    assert plan.remove == ("old",)
    assert [(t["NodeID"], t["JobIteration"]) for t in plan.create] == [("n1", {"Index": 1})]


# -- restarts --------------------------------------------------------------------------------------------


def test_a_jobs_completed_task_is_never_restarted_even_with_restart_condition_any():
    done = job_task("a", state="complete")
    assert not restart_decision(done, {"Condition": "any"}, [], NOW).restart
    failed = job_task("b", state="failed")
    decision = restart_decision(failed, {"Condition": "any", "Delay": 0}, [], NOW)
    assert decision.restart and decision.not_before == NOW
    assert not restart_decision(job_task("c", state="failed", desired="shutdown"), {}, [], NOW).restart


# -- the control loop ------------------------------------------------------------------------------------


def job_tasks(swarm: Swarm, service_id: str = "job") -> list[dict]:
    return sorted(swarm.tasks(service_id), key=lambda t: t["ID"])


def unfinished(swarm: Swarm, service_id: str = "job") -> list[dict]:
    """The job's tasks still to run: not ended, and not told to stop."""
    return [t for t in swarm.tasks(service_id) if holds_slot(t)]


def finish(swarm: Swarm, task: dict, state: str = "complete", now: float = NOW) -> None:
    swarm.report(task["ID"], "running")
    swarm.report(task["ID"], state, Timestamp="2023-11-14T22:13:20Z")
    swarm.settle(now)


def test_a_replicated_job_runs_total_completions_tasks_at_most_max_concurrent_at_once():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(replicated_job(max_concurrent=2, total=3))
    swarm.settle()
    seen_at_once = []
    while pending := unfinished(swarm):
        seen_at_once.append(len(pending))
        assert all(t["Status"]["State"] == "assigned" and t["DesiredState"] == "complete" for t in pending)
        finish(swarm, pending[0])
    assert seen_at_once == [2, 2, 1]
    tasks = job_tasks(swarm)
    assert sorted(t["Slot"] for t in tasks) == [0, 1, 2]
    assert {(t["Status"]["State"], t["DesiredState"]) for t in tasks} == {("complete", "complete")}
    assert swarm.round(NOW + 3600) == []  # done: nothing restarts a completed task
    status = service_status(swarm.state.get("services", "job").data, tasks)
    assert status == {"RunningTasks": 0, "DesiredTasks": 2, "CompletedTasks": 3}  # `0/2 (3/3 completed)`


def test_a_failed_job_task_is_replaced_in_its_slot_after_the_restart_delay_and_runs_to_completion():
    swarm = Swarm(node("n1"))
    swarm.put_service(replicated_job(max_concurrent=1, total=1, RestartPolicy={"Delay": 5 * SECOND}))
    swarm.settle()
    (first,) = job_tasks(swarm)
    finish(swarm, first, "failed", now=NOW + 1)
    (replacement,) = unfinished(swarm)
    assert replacement["Slot"] == first["Slot"] == 0
    assert replacement["DesiredState"] == "ready" and swarm.wake_at == pytest.approx(NOW + 6)
    swarm.settle(NOW + 6)
    assert swarm.state.get("tasks", replacement["ID"]).data["DesiredState"] == "complete"
    assert swarm.state.get("tasks", first["ID"]).data["DesiredState"] == "shutdown"
    finish(swarm, replacement, now=NOW + 7)
    assert unfinished(swarm) == []


def test_with_restart_condition_none_a_failed_slot_is_refilled_only_when_the_job_is_next_reconciled():
    swarm = Swarm(node("n1"))
    swarm.put_service(replicated_job(max_concurrent=2, total=2, RestartPolicy={"Condition": "none"}))
    swarm.settle()
    first, second = job_tasks(swarm)
    finish(swarm, first, "failed")
    assert [t["ID"] for t in unfinished(swarm)] == [second["ID"]]  # no restart, no new task yet
    finish(swarm, second)  # a completion reconciles the job (SwarmKit: a task event): the slot is free
    (rerun,) = unfinished(swarm)
    assert rerun["Slot"] == first["Slot"]


def test_updating_a_job_starts_a_new_iteration_and_removes_the_old_ones_unfinished_tasks():
    swarm = Swarm(node("n1"))
    service = replicated_job(max_concurrent=1, total=2)
    swarm.put_service(service)
    swarm.settle()
    (done,) = job_tasks(swarm)
    finish(swarm, done)
    (running,) = unfinished(swarm)
    swarm.report(running["ID"], "running")
    swarm.put_service({**service, "JobStatus": next_job_status(service, "2024-01-01T00:00:01Z")})  # an update
    swarm.settle(NOW + 1)
    assert swarm.state.get("tasks", running["ID"]).data["DesiredState"] == "remove"
    (new,) = unfinished(swarm)
    assert new["JobIteration"] == {"Index": 1} and new["Slot"] == 0
    swarm.report(running["ID"], "shutdown")
    swarm.settle(NOW + 2)
    assert swarm.state.get("tasks", running["ID"]) is None  # stopped, then deleted, as SwarmKit's reaper does
    assert swarm.state.get("tasks", done["ID"]).data["Status"]["State"] == "complete"  # left as it was


def test_a_jobs_completed_tasks_are_never_reaped_even_with_no_task_history():
    swarm = Swarm(node("n1"))
    swarm.commit([create(CLUSTER, CLUSTER_KEY, {"Spec": {"Orchestration": {"TaskHistoryRetentionLimit": 0}}})])
    swarm.put_service(replicated_job(max_concurrent=1, total=1))
    swarm.settle()
    (task,) = job_tasks(swarm)
    finish(swarm, task)
    swarm.settle(NOW + 60)
    assert [t["ID"] for t in job_tasks(swarm)] == [task["ID"]]  # else the job would run again


def test_a_job_task_on_a_node_that_goes_down_is_shut_down_and_run_elsewhere():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(replicated_job(max_concurrent=1, total=1))
    swarm.settle()
    (first,) = job_tasks(swarm)
    swarm.report(first["ID"], "running")
    swarm.set_node(first["NodeID"], Status={"State": "down"})
    swarm.settle(NOW + 1)
    (moved,) = unfinished(swarm)
    assert moved["NodeID"] != first["NodeID"] and moved["Slot"] == 0
    assert swarm.state.get("tasks", first["ID"]).data["DesiredState"] == "shutdown"


def test_a_global_job_completes_once_per_node_and_runs_on_nodes_that_join_later():
    swarm = Swarm(node("n1"), node("n2"))
    swarm.put_service(global_job())
    swarm.settle()
    for task in unfinished(swarm, "gjob"):
        finish(swarm, task)
    assert sorted(t["NodeID"] for t in swarm.tasks("gjob")) == ["n1", "n2"]
    swarm.commit([create("nodes", "n3", node("n3"))])
    swarm.settle(NOW + 1)
    (late,) = unfinished(swarm, "gjob")
    assert late["NodeID"] == "n3" and late["DesiredState"] == "complete"
    service = swarm.state.get("services", "gjob").data
    assert service_status(service, swarm.tasks("gjob")) == {"RunningTasks": 0, "DesiredTasks": 1, "CompletedTasks": 2}
    finish(swarm, late, now=NOW + 2)
    swarm.commit([delete("nodes", "n3")])
    swarm.settle(NOW + 3)
    assert len([t for t in swarm.tasks("gjob") if t["Status"]["State"] == "complete"]) == 3


# -- what the API shows ----------------------------------------------------------------------------------


def test_service_status_counts_only_the_current_iteration_of_a_job_and_no_completions_for_services():
    job = replicated_job(max_concurrent=2, total=4, iteration=1)
    tasks = [
        job_task("old-done", state="complete"),
        job_task("old-running", state="running", desired="remove"),
        job_task("done", state="complete", iteration=1),
        job_task("running", slot=1, state="running", iteration=1),
    ]
    assert service_status(job, tasks) == {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 1}
    web = {"ID": "web", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 3}}}}
    finished = {"ID": "t", "ServiceID": "web", "DesiredState": "shutdown", "Status": {"State": "complete"}}
    assert service_status(web, [finished]) == {"RunningTasks": 0, "DesiredTasks": 3, "CompletedTasks": 0}


def test_a_job_starts_at_iteration_zero_and_each_update_moves_it_on():
    status = started_job_status("2024-01-01T00:00:00Z")
    assert status == {"JobIteration": {}, "LastExecution": "2024-01-01T00:00:00Z"}  # Index 0 left out, as Docker
    updated = next_job_status({"JobStatus": status}, "2024-01-02T00:00:00Z")
    assert updated == {"JobIteration": {"Index": 1}, "LastExecution": "2024-01-02T00:00:00Z"}


# -- the spec check --------------------------------------------------------------------------------------


def spec(mode: Any) -> dict:
    return {"Name": "job", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": mode}


def test_job_modes_are_accepted_with_dockers_spelling_and_types():
    checked = validate_service_spec(spec({"replicatedjob": {"maxconcurrent": 2, "TotalCompletions": 3}}))
    assert checked["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}
    assert validate_service_spec(spec({"GlobalJob": {}}))["Mode"] == {"GlobalJob": {}}


@pytest.mark.parametrize(
    ("mode", "where", "complaint"),
    [
        ({"ReplicatedJob": {}, "Global": {}}, "Mode", "only one service mode"),
        ({"GlobalJob": {}, "ReplicatedJob": {}}, "Mode", "only one service mode"),
        ({"ReplicatedJob": {"MaxConcurrent": -1}}, "Mode.ReplicatedJob.MaxConcurrent", "from 0 to 100000"),
        ({"ReplicatedJob": {"TotalCompletions": 100_001}}, "Mode.ReplicatedJob.TotalCompletions", "from 0 to 100000"),
        ({"ReplicatedJob": {"TotalCompletions": "3"}}, "Mode.ReplicatedJob.TotalCompletions", "integer"),
        ({"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 3}}, "Mode.ReplicatedJob.MaxConcurrent", "never"),
        ({"GlobalJob": []}, "Mode.GlobalJob", "JSON object"),
    ],
)
def test_bad_job_modes_are_refused_naming_the_field(mode, where, complaint):
    with pytest.raises(InvalidSpec) as refused:
        validate_service_spec(spec(mode))
    assert str(refused.value).startswith(f"{where}: ") and complaint in str(refused.value)
