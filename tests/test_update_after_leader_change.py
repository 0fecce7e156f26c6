"""A rolling update must finish after a leader change (chaos suite, bug 3: `python -m chaos run --scenario
partition-leader` / `leader-pause` left the churned service "updating" for good, old tasks running and none
of the new generation).

The rule these tests guard is SwarmKit's: an update covers the slots the service still holds and waits only for
tasks that can still get somewhere. A task whose node will not answer -- shut down on a node that is down, or
assigned around a leader change and never acknowledged by its agent -- is not waited on for ever: a slot that
the service no longer holds (scaled away, its node gone) is not part of the update, and a new task that does not
start is a failure of the update, for its failure action to handle.

Each test runs the leader's real control loop (`reconciler.reconcile`, which calls the updater) over a real
`ClusterState` with an injected clock, no network: a leader change is a fresh loop with no memory, which must
rebuild the update's progress from the store alone. The agents are played by `Swarm.agents`: a task delivered
to a ready node runs, or stops when told to, except the tasks the test says were lost around the leader change.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Collection
from typing import Any

from raftswarm.objects.tasks import TaskState, is_live, observed_state
from raftswarm.objects.times import rfc3339
from raftswarm.manager.reconciler import PREDECESSOR_STOP_TIMEOUT, reconcile, view_of
from raftswarm.objects.kinds import SERVICES, TASKS
from raftswarm.manager.updater import STALLED_TASK_TIMEOUT
from raftswarm.store import ClusterState, Committed, Operation, create, update
from raftswarm.store.state import encode_transaction

START = 1_700_000_000.0
SECOND = 1_000_000_000
TICK = 0.25
"""Seconds between two rounds of the loop (each followed by the agents' reports)."""


def worker(node_id: str) -> dict:
    return {
        "ID": node_id,
        "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
        "Description": {"Hostname": node_id, "Platform": {"OS": "linux", "Architecture": "x86_64"}},
        "Status": {"State": "ready"},
    }


def churn_spec(generation: int, replicas: int | None, **update_config: Any) -> dict:
    """The chaos run's churned service (`chaos.cluster.workload.ServiceChurn`); `replicas=None`: global."""
    return {
        "Name": "chaos-churn",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "3600"], "Env": [f"GENERATION={generation}"]},
            "Placement": {"Constraints": ["node.role==worker"]},
            "RestartPolicy": {"Condition": "any", "Delay": SECOND // 2},
        },
        "Mode": {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {"Parallelism": 2, "Order": "stop-first", "Monitor": SECOND // 2, **update_config},
    }


def generation(task: dict) -> int:
    (env,) = task["Spec"]["ContainerSpec"]["Env"]
    return int(env.removeprefix("GENERATION="))


class Swarm:
    """The store, the clock, the leader's control loop and the agents."""

    def __init__(self, *nodes: dict) -> None:
        self.state = ClusterState()
        self.index = itertools.count(1)
        self.ids = (f"task{n:03d}" for n in itertools.count(1))
        self.now = START
        self.elect()
        self.commit([create("nodes", n["ID"], n) for n in nodes])

    def elect(self) -> None:
        """A new leader: its control loop starts with no memory of earlier rounds."""
        self.reconciled: dict[str, str] = {}
        self.nodes_seen: tuple | None = None
        self.planned_at_version: int | None = None
        self.wake_at: float | None = None

    def commit(self, operations: list[Operation]) -> None:
        result = self.state.apply(next(self.index), encode_transaction(operations))
        assert isinstance(result, Committed), result

    def round(self) -> None:
        """A round, if the loop would run one now: after a store change (its own last commit included), or at
        the time the last one asked for (`Reconciler._wait`); a new leader runs one at once."""
        idle = self.planned_at_version == self.state.version
        if idle and (self.wake_at is None or self.now < self.wake_at):
            return
        self.planned_at_version = self.state.version
        view = view_of(self.state)
        nodes_now = tuple((o.id, o.version) for o in view.nodes.values())
        outcome = reconcile(
            view,
            reconciled=self.reconciled,
            nodes_changed=nodes_now != self.nodes_seen,
            now=self.now,
            new_id=lambda: next(self.ids),
        )
        if outcome.operations:
            self.commit(outcome.operations)
        self.reconciled, self.nodes_seen = outcome.reconciled, nodes_now
        self.wake_at = outcome.wake_at

    def agents(self, lost: Collection[str] = ()) -> None:
        """Every agent of a ready node reports its delivered tasks (ASSIGNED to RUNNING) as started, or as
        stopped once told to; the tasks in `lost` stay as the store last heard of them."""
        ready = {o.id for o in self.state.list("nodes") if o.data["Status"]["State"] == "ready"}
        reports = []
        for stored in self.state.list(TASKS):
            task = stored.data
            state = observed_state(task)
            if task["ID"] in lost or task.get("NodeID") not in ready:
                continue
            if not TaskState.ASSIGNED <= state <= TaskState.RUNNING:
                continue
            if task["DesiredState"] == "shutdown":
                reached = TaskState.SHUTDOWN
            elif task["DesiredState"] == "running" and state < TaskState.RUNNING:
                reached = TaskState.RUNNING
            else:
                continue
            status = {"State": reached.api, "Message": reached.api, "Timestamp": rfc3339(self.now)}
            reports.append(update(TASKS, task["ID"], {**task, "Status": status}, expect=stored.version))
        if reports:
            self.commit(reports)

    def run(self, seconds: float, lost: Collection[str] = ()) -> None:
        """The loop and the agents for `seconds` of the injected clock."""
        for _ in range(round(seconds / TICK)):
            self.round()
            self.agents(lost)
            self.now += TICK

    def create_service(self, spec: dict) -> None:
        self.commit([create(SERVICES, "svc", {"ID": "svc", "Spec": spec})])

    def update_service(self, spec: dict) -> None:
        """What `POST /services/svc/update` stores (serviceapi.update_service): a new TaskTemplate starts a
        rolling update; a scale alone leaves the one in progress going."""
        stored = self.state.get(SERVICES, "svc")
        data = {**copy.deepcopy(stored.data), "Spec": spec, "PreviousSpec": stored.data["Spec"]}
        if spec["TaskTemplate"] != stored.data["Spec"]["TaskTemplate"]:
            started = rfc3339(self.now)
            data["UpdateStatus"] = {"State": "updating", "Message": "update in progress", "StartedAt": started}
        self.commit([update(SERVICES, "svc", data, expect=stored.version)])

    @property
    def update_status(self) -> dict:
        return self.state.get(SERVICES, "svc").data.get("UpdateStatus") or {}

    def tasks(self) -> list[dict]:
        return [o.data for o in self.state.list(TASKS)]

    def task(self, task_id: str) -> dict:
        return self.state.get(TASKS, task_id).data

    def live(self) -> list[dict]:
        return [task for task in self.tasks() if is_live(task)]

    def running(self, of_generation: int) -> list[dict]:
        return [t for t in self.live() if observed_state(t) == TaskState.RUNNING and generation(t) == of_generation]


def two_workers_running(replicas: int, **update_config: Any) -> Swarm:
    swarm = Swarm(worker("w1"), worker("w2"))
    swarm.create_service(churn_spec(1, replicas, **update_config))
    swarm.run(2)
    assert len(swarm.running(1)) == replicas
    return swarm


# --- a slot the service no longer holds --------------------------------------------------------------------


def test_slots_scaled_away_while_their_tasks_were_never_acknowledged_do_not_hold_up_the_update():
    swarm = two_workers_running(4)
    swarm.update_service(churn_spec(1, 6))
    swarm.round()  # the old leader places two more replicas ...
    assigned = [t["ID"] for t in swarm.live() if observed_state(t) == TaskState.ASSIGNED]
    assert len(assigned) == 2
    swarm.elect()  # ... and loses the lead before their agents acknowledge them: they never will
    lost = set(assigned)

    swarm.update_service(churn_spec(1, 4))  # scaled back: the replicas not running yet go first
    swarm.run(1, lost)
    assert {swarm.task(task_id)["DesiredState"] for task_id in assigned} == {"shutdown"}
    swarm.update_service(churn_spec(2, 4))
    swarm.run(10, lost)

    assert swarm.update_status["State"] == "completed"
    assert len(swarm.running(2)) == 4 and len(swarm.live()) == 4
    assert {observed_state(swarm.task(task_id)) for task_id in assigned} == {TaskState.ASSIGNED}


def test_a_global_update_finishes_on_the_nodes_up_while_a_node_is_down():
    swarm = Swarm(worker("w1"), worker("w2"), worker("w3"))
    swarm.create_service(churn_spec(1, None))
    swarm.run(2)
    swarm.elect()
    w3 = swarm.state.get("nodes", "w3").data
    swarm.commit([update("nodes", "w3", {**w3, "Status": {"State": "down", "Message": "heartbeat failure"}})])
    swarm.update_service(churn_spec(2, None))
    swarm.run(10)

    assert swarm.update_status["State"] == "completed"
    assert sorted(t["NodeID"] for t in swarm.running(2)) == ["w1", "w2"]
    swarm.commit([update("nodes", "w3", w3)])  # back: the global orchestrator gives it the new spec
    swarm.run(2)
    assert sorted(t["NodeID"] for t in swarm.running(2)) == ["w1", "w2", "w3"]


def test_a_replicated_update_finishes_while_a_scaled_away_task_waits_on_a_node_that_is_down():
    swarm = two_workers_running(2)
    (on_w2,) = [t["ID"] for t in swarm.live() if t["NodeID"] == "w2"]
    swarm.elect()
    w2 = swarm.state.get("nodes", "w2").data
    swarm.commit([update("nodes", "w2", {**w2, "Status": {"State": "down", "Message": "heartbeat failure"}})])
    swarm.update_service(churn_spec(1, 1))
    swarm.update_service(churn_spec(2, 1))
    swarm.run(10)

    assert swarm.update_status["State"] == "completed"
    assert [t["NodeID"] for t in swarm.running(2)] == ["w1"]
    assert swarm.task(on_w2)["DesiredState"] == "shutdown"  # it stops when w2 answers again


# --- a new task that does not start ------------------------------------------------------------------------


def test_a_new_task_never_acknowledged_after_a_leader_change_pauses_the_update_instead_of_hanging_it():
    swarm = two_workers_running(4)
    swarm.update_service(churn_spec(2, 4))
    swarm.round()  # the first batch: two old tasks shut down, two new ones placed ...
    first_batch = sorted(t["ID"] for t in swarm.live() if generation(t) == 2)
    assert len(first_batch) == 2
    swarm.elect()  # ... and the lead moves before one of them is acknowledged
    lost = {first_batch[0]}

    swarm.run(STALLED_TASK_TIMEOUT - 1, lost)
    assert swarm.update_status["State"] == "updating"  # a while to answer, as after any leader change
    swarm.run(2, lost)

    assert swarm.update_status["State"] == "paused"
    assert swarm.update_status["Message"] == (
        f"update paused due to failure or early termination of task {first_batch[0]} (it did not start:"
        f" its node has not reported on it for {STALLED_TASK_TIMEOUT:g} s since it became assigned)"
    )
    assert len(swarm.running(1)) == 2  # the update stopped where a failure stops it


def test_with_failure_action_continue_a_new_task_that_never_starts_does_not_hold_up_the_rest():
    swarm = two_workers_running(4, FailureAction="continue")
    swarm.update_service(churn_spec(2, 4, FailureAction="continue"))
    swarm.round()
    first_batch = sorted(t["ID"] for t in swarm.live() if generation(t) == 2)
    swarm.elect()
    lost = {first_batch[0]}
    swarm.run(STALLED_TASK_TIMEOUT + 10, lost)

    assert swarm.update_status["State"] == "completed"
    assert len(swarm.running(2)) == 3 and not swarm.running(1)


def test_with_failure_action_rollback_a_new_task_that_never_starts_rolls_the_update_back():
    swarm = two_workers_running(4, FailureAction="rollback")
    swarm.update_service(churn_spec(2, 4, FailureAction="rollback"))
    swarm.round()
    first_batch = sorted(t["ID"] for t in swarm.live() if generation(t) == 2)
    swarm.elect()
    lost = {first_batch[0]}
    swarm.run(STALLED_TASK_TIMEOUT + 30, lost)

    assert swarm.update_status["State"] == "rollback_completed"
    assert len(swarm.running(1)) == 4 and len(swarm.live()) == 4


def test_a_new_task_pulling_its_image_is_waited_for_however_long():
    """Pulling an image takes as long as it takes, the agent reporting progress when it has some: not a failure."""
    swarm = two_workers_running(2)
    swarm.update_service(churn_spec(2, 2))
    swarm.round()
    new = sorted(t["ID"] for t in swarm.live() if generation(t) == 2)
    for task_id in new:
        stored = swarm.state.get(TASKS, task_id)
        status = {"State": "preparing", "Message": "preparing", "Timestamp": rfc3339(swarm.now)}
        swarm.commit([update(TASKS, task_id, {**stored.data, "Status": status}, expect=stored.version)])
    swarm.run(3 * STALLED_TASK_TIMEOUT, lost=set(new))

    assert swarm.update_status["State"] == "updating"


def test_a_new_task_no_node_can_take_yet_is_waited_for_however_long():
    """As in Docker: the task stays pending with the reason, and the update waits for a node."""
    swarm = two_workers_running(2)
    for node_id in ("w1", "w2"):
        stored = swarm.state.get("nodes", node_id)
        spec = {**stored.data["Spec"], "Availability": "pause"}
        swarm.commit([update("nodes", node_id, {**stored.data, "Spec": spec}, expect=stored.version)])
    swarm.update_service(churn_spec(2, 2))
    swarm.run(3 * STALLED_TASK_TIMEOUT)

    assert swarm.update_status["State"] == "updating"
    assert {t["Status"]["State"] for t in swarm.live() if generation(t) == 2} == {"pending"}


# --- stop-first: the replacement waits for the task it replaces ---------------------------------------------


def test_a_stop_first_replacement_starts_only_once_the_task_it_replaces_has_stopped():
    """SwarmKit creates it READY and its restart supervisor starts it once the old task stopped (DelayStart
    with waitStop): the old and the new container of a slot never run at once (a host port, a volume)."""
    swarm = two_workers_running(1)
    (old,) = swarm.running(1)
    swarm.update_service(churn_spec(2, 1))
    swarm.run(5, lost={old["ID"]})  # its agent takes its time to stop it
    (new,) = [task for task in swarm.live() if generation(task) == 2]
    assert swarm.task(old["ID"])["DesiredState"] == "shutdown"
    assert new["DesiredState"] == "ready" and observed_state(new) < TaskState.STARTING
    swarm.run(2)  # it stops
    assert observed_state(swarm.task(old["ID"])) == TaskState.SHUTDOWN
    assert [task["ID"] for task in swarm.running(2)] == [new["ID"]]


def test_a_replacement_whose_predecessor_never_reports_stopping_starts_after_the_timeout():
    swarm = two_workers_running(1)
    (old,) = swarm.running(1)
    swarm.update_service(churn_spec(2, 1))
    swarm.run(PREDECESSOR_STOP_TIMEOUT - 5, lost={old["ID"]})
    assert not swarm.running(2)
    swarm.run(10, lost={old["ID"]})
    assert len(swarm.running(2)) == 1

