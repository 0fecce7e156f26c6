"""Rolling updates and rollbacks, as a user of `docker service update` / `docker service ps` would notice them.

Each test drives `plan_update` step by step as the leader's control loop would (the updater's plan, then the
reconciler's, written back) and plays the agents by hand: tasks start, fail, stop, and the clock moves.
"""

from __future__ import annotations

import copy
import itertools

import pytest

from raftswarm.objects.tasks import TaskState, is_terminal
from raftswarm.manager.orchestrator import reconcile_global, reconcile_replicated
from raftswarm.objects.times import rfc3339
from raftswarm.manager.updater import STALLED_TASK_TIMEOUT, InvalidUpdateConfig, UpdatePlan, plan_update

START = 1_700_000_000.0  # when the update was started
SECOND = 1_000_000_000
OLD = {"ContainerSpec": {"Image": "app:1"}}
NEW = {"ContainerSpec": {"Image": "app:2"}}


def ids(prefix: str = "new"):
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def service(
    replicas: int | None = 4,
    *,
    update: dict | None = None,
    rollback: dict | None = None,
    state: str | None = "updating",
) -> dict:
    """A service whose TaskTemplate just went from OLD to NEW (`replicas=None`: a global service)."""
    spec: dict = {
        "Name": "web",
        "TaskTemplate": copy.deepcopy(NEW),
        "Mode": {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {"Monitor": 5 * SECOND, **(update or {})},
        "RollbackConfig": {"Monitor": 5 * SECOND, **(rollback or {})},
    }
    result = {"ID": "svc", "Spec": spec, "PreviousSpec": {**copy.deepcopy(spec), "TaskTemplate": copy.deepcopy(OLD)}}
    if state is not None:
        result["UpdateStatus"] = {"State": state, "StartedAt": rfc3339(START), "Message": "update in progress"}
    return result


def task(
    task_id: str,
    *,
    slot: int | None = None,
    node: str | None = None,
    spec: dict = OLD,
    state: str = "running",
    desired: str = "running",
    at: float = START - 3600,
    created: float | None = None,
) -> dict:
    result = {
        "ID": task_id,
        "ServiceID": "svc",
        "Spec": copy.deepcopy(spec),
        "DesiredState": desired,
        "CreatedAt": rfc3339(at if created is None else created),
        "Status": {"State": state, "Timestamp": rfc3339(at)},
    }
    if slot is not None:
        result["Slot"] = slot
    if node is not None:
        result["NodeID"] = node
    return result


def node(node_id: str) -> dict:
    return {"ID": node_id, "Spec": {"Role": "worker", "Availability": "active"}, "Status": {"State": "ready"}}


class Swarm:
    """The store as the control loop and the agents change it: one service, its tasks, the nodes, the clock."""

    def __init__(self, svc: dict, tasks: list[dict], nodes: list[dict] | None = None, *, reconcile: bool = True):
        self.service = svc
        self.tasks = tasks
        self.nodes = nodes or [node(f"n{index}") for index in range(1, 5)]
        self.now = START
        self.new_id = ids()
        self.reconcile = reconcile

    @classmethod
    def replicated(cls, replicas: int = 4, **settings) -> Swarm:
        old = [task(f"old{slot}", slot=slot, node=f"n{slot}") for slot in range(1, replicas + 1)]
        return cls(service(replicas, **settings), old)

    def plan(self) -> UpdatePlan:
        return plan_update(self.service, self.tasks, new_id=self.new_id, now=self.now)

    def step(self) -> UpdatePlan:
        """One pass of the control loop: the updater's plan, then the reconciler's, written back."""
        plan = self.plan()
        self.write(plan.create, plan.shutdown)
        if plan.service is not None:
            self.service = plan.service
        if self.reconcile:
            if "Global" in self.service["Spec"]["Mode"]:
                fill = reconcile_global(self.service, self.nodes, self.tasks, new_id=self.new_id, now=self.now)
            else:
                fill = reconcile_replicated(self.service, self.tasks, new_id=self.new_id, now=self.now)
            self.write(fill.create, fill.shutdown)
        return plan

    def write(self, create: tuple[dict, ...], shutdown: tuple[str, ...]) -> None:
        self.tasks.extend({**created, "CreatedAt": rfc3339(self.now)} for created in create)
        for existing in self.tasks:
            if existing["ID"] in shutdown:
                existing["DesiredState"] = "shutdown"

    def get(self, task_id: str) -> dict:
        return next(existing for existing in self.tasks if existing["ID"] == task_id)

    def report(self, task_id: str, state: str) -> None:
        self.get(task_id)["Status"] = {"State": state, "Timestamp": rfc3339(self.now)}

    def settle(self) -> None:
        """Well-behaved agents: tasks told to stop stop, new tasks run."""
        for existing in self.tasks:
            if is_terminal(existing["Status"]["State"]):
                continue
            if existing["DesiredState"] == "shutdown":
                self.report(existing["ID"], "shutdown")
            elif existing["Status"]["State"] != "running":
                self.report(existing["ID"], "running")

    def live(self, **where) -> list[dict]:
        return [
            existing
            for existing in self.tasks
            if not is_terminal(existing["Status"]["State"])
            and TaskState.of(existing["DesiredState"]) <= TaskState.RUNNING
            and all(existing.get(key) == value for key, value in where.items())
        ]

    def new_in(self, slot: int) -> dict:
        """The live task of the new spec in `slot`."""
        (found,) = [existing for existing in self.live(Slot=slot) if existing["Spec"] == NEW]
        return found

    @property
    def state(self) -> str:
        return self.service["UpdateStatus"]["State"]

    def drive(self, max_steps: int = 60) -> list[tuple[str, ...]]:
        """Run loop and agents until the update stops being in progress; the updater's shutdowns, in order."""
        shutdowns = []
        for _ in range(max_steps):
            plan = self.step()
            if plan.shutdown:
                shutdowns.append(plan.shutdown)
            if self.state not in ("updating", "rollback_started"):
                return shutdowns
            self.now = plan.wake_at if plan.wake_at is not None else self.now + 1
            self.settle()
        raise AssertionError(f"update still {self.state} after {max_steps} steps")


# --- when the updater acts -----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, "paused", "completed", "rollback_paused", "rollback_completed"])
def test_no_update_in_progress_plans_nothing(state):
    swarm = Swarm(service(state=state), [task(f"old{slot}", slot=slot) for slot in (1, 2)])
    assert swarm.plan() == UpdatePlan()


# --- batches -------------------------------------------------------------------------------------------


def test_stop_first_replaces_one_slot_at_a_time():
    swarm = Swarm.replicated(4)
    first = swarm.step()
    assert first == UpdatePlan(shutdown=("old1",))  # the reconciler, not the updater, refills the slot
    assert swarm.new_in(1)["Status"]["State"] == "new"

    assert swarm.step() == UpdatePlan()  # slot 1 is in flight until its new task runs
    swarm.now += 2
    swarm.settle()
    assert swarm.step().shutdown == ("old2",)
    swarm.settle()
    assert swarm.step().shutdown == ("old3",)
    swarm.settle()
    assert swarm.step().shutdown == ("old4",)
    assert [existing["Spec"] for existing in swarm.live()] == [NEW] * 4


def test_parallelism_two_replaces_two_slots_per_batch():
    assert Swarm.replicated(4, update={"Parallelism": 2}).drive() == [("old1", "old2"), ("old3", "old4")]


def test_parallelism_zero_replaces_every_slot_at_once():
    assert Swarm.replicated(4, update={"Parallelism": 0}).drive() == [("old1", "old2", "old3", "old4")]


def test_parallelism_defaults_to_one():
    swarm = Swarm.replicated(3)
    swarm.service["Spec"].pop("UpdateConfig")
    assert swarm.drive() == [("old1",), ("old2",), ("old3",)]


def test_next_batch_waits_for_delay_after_the_last_task_started_running():
    swarm = Swarm.replicated(2, update={"Delay": 10 * SECOND})
    assert swarm.step().shutdown == ("old1",)
    swarm.now += 3
    swarm.settle()
    started = swarm.now
    assert swarm.step() == UpdatePlan(wake_at=started + 10)
    swarm.now = started + 9.9
    assert swarm.step() == UpdatePlan(wake_at=started + 10)
    swarm.now = started + 10
    assert swarm.step().shutdown == ("old2",)


def test_update_of_an_unchanged_template_bumped_with_force_update_replaces_every_task():
    swarm = Swarm.replicated(2)
    swarm.service["Spec"]["TaskTemplate"] = {**OLD, "ForceUpdate": 1}
    assert swarm.drive() == [("old1",), ("old2",)]


# --- start-first ---------------------------------------------------------------------------------------


def test_start_first_keeps_the_old_task_until_the_new_one_runs():
    swarm = Swarm.replicated(2, update={"Order": "start-first"})
    plan = swarm.step()
    assert plan.shutdown == ()
    assert [(created["Slot"], created["Spec"]) for created in plan.create] == [(1, NEW)]
    assert {existing["ID"] for existing in swarm.live(Slot=1)} == {"old1", "new1"}  # the reconciler left both

    swarm.now += 1
    swarm.report("new1", "starting")
    assert swarm.step() == UpdatePlan()  # starting (perhaps until healthy) takes as long as it takes
    assert {existing["ID"] for existing in swarm.live(Slot=1)} == {"old1", "new1"}

    swarm.now += 1
    swarm.report("new1", "running")
    plan = swarm.step()
    assert plan.shutdown == ("old1",)
    assert [created["Slot"] for created in plan.create] == [2]  # no delay: the next batch starts at once


def test_start_first_replacement_is_created_once():
    swarm = Swarm.replicated(2, update={"Order": "start-first"})
    swarm.step()
    assert swarm.plan() == UpdatePlan()
    assert len(swarm.live(Slot=1)) == 2


def test_start_first_whose_replacement_failed_retires_the_old_task_when_the_update_goes_on():
    swarm = Swarm.replicated(2, update={"Order": "start-first", "FailureAction": "continue"})
    swarm.step()
    swarm.now += 1
    swarm.report("new1", "failed")
    plan = swarm.step()
    assert plan == UpdatePlan(shutdown=("old1",))  # no second replacement: the slot is refilled as stop-first
    assert swarm.new_in(1)["ID"] != "new1"


# --- idempotence ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["stop-first", "start-first"])
def test_same_state_gives_the_same_plan(order):
    swarm = Swarm.replicated(4, update={"Parallelism": 2, "Order": order})
    before = copy.deepcopy(swarm.tasks)
    first = plan_update(swarm.service, swarm.tasks, new_id=ids(), now=START)
    assert plan_update(swarm.service, swarm.tasks, new_id=ids(), now=START) == first
    assert swarm.tasks == before


def test_slot_being_stopped_is_in_flight_until_refilled():
    swarm = Swarm(service(2), [task("old1", slot=1), task("old2", slot=2)], reconcile=False)
    assert swarm.step().shutdown == ("old1",)
    assert swarm.step() == UpdatePlan()  # old1 is still stopping and nothing fills slot 1 yet


def test_slot_scaled_away_is_not_waited_for_while_its_task_has_yet_to_stop():
    # Told to stop before its agent acknowledged it; that agent may never answer (a leader change lost it).
    scaled_away = task("old3", slot=3, state="assigned", desired="shutdown")
    swarm = Swarm(service(2), [task("old1", slot=1), task("old2", slot=2), scaled_away])
    assert swarm.plan().shutdown == ("old1",)


def test_node_whose_task_was_shut_down_is_not_waited_for_in_a_global_update():
    on_down_node = task("old-n3", node="n3", desired="shutdown")  # still running as far as anyone heard
    swarm = Swarm(service(None), [task("old-n1", node="n1"), task("old-n2", node="n2"), on_down_node])
    assert swarm.plan().shutdown == ("old-n1",)


# --- monitoring and failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["failed", "rejected", "complete"])
@pytest.mark.parametrize("marked_by_restart_supervisor", [False, True])
def test_new_task_ending_within_monitor_pauses_the_update(ending, marked_by_restart_supervisor):
    swarm = Swarm.replicated(4)
    swarm.step()
    swarm.now += 1
    swarm.settle()
    replacement = swarm.new_in(1)["ID"]
    swarm.now += 2
    swarm.report(replacement, ending)
    if marked_by_restart_supervisor:  # it handles an ended task before the updater runs
        swarm.get(replacement)["DesiredState"] = "shutdown"
    plan = swarm.step()
    assert plan.create == () and plan.shutdown == ()
    assert swarm.service["UpdateStatus"] == {
        "State": "paused",
        "StartedAt": rfc3339(START),
        "Message": f"update paused due to failure or early termination of task {replacement}",
    }
    assert swarm.step() == UpdatePlan()
    assert [existing["ID"] for existing in swarm.live() if existing["Spec"] == OLD] == ["old2", "old3", "old4"]


def test_task_that_never_started_counts_as_failed():
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)["ID"]
    swarm.report(replacement, "rejected")
    swarm.step()
    assert swarm.state == "paused"
    assert replacement in swarm.service["UpdateStatus"]["Message"]


@pytest.mark.parametrize("silent_in", ["assigned", "accepted", "ready"])
def test_new_task_its_node_is_silent_about_is_a_failure_once_stalled(silent_in):
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)["ID"]
    swarm.report(replacement, silent_in)
    stalls = swarm.now + STALLED_TASK_TIMEOUT
    swarm.now = stalls - 0.1
    assert swarm.step() == UpdatePlan(wake_at=stalls)  # still in flight, until it stalls
    swarm.now += 0.1
    swarm.step()
    assert swarm.state == "paused"
    assert swarm.service["UpdateStatus"]["Message"] == (
        f"update paused due to failure or early termination of task {replacement} (it did not start: its node"
        f" has not reported on it for {STALLED_TASK_TIMEOUT:g} s since it became {silent_in})"
    )


@pytest.mark.parametrize(
    ("state", "desired"),
    [("preparing", "running"), ("pending", "running"), ("new", "running"), ("ready", "ready"), ("starting", "running")],
    ids=["pulling its image", "waiting for a node", "not scheduled yet", "waiting for its restart delay",
         "waiting to be healthy"],
)
def test_new_task_on_its_way_is_waited_for_however_long(state, desired):
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)
    replacement["DesiredState"] = desired
    swarm.report(replacement["ID"], state)
    swarm.now += 10 * STALLED_TASK_TIMEOUT
    assert swarm.step() == UpdatePlan()
    assert swarm.state == "updating"


def test_stall_counts_from_the_leaders_last_change_of_the_task():
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)
    swarm.report(replacement["ID"], "ready")  # prepared long ago, held by a restart delay until now
    swarm.now += 600
    replacement["UpdatedAt"] = rfc3339(swarm.now)  # released: desired running from now on
    stalls = swarm.now + STALLED_TASK_TIMEOUT
    swarm.now = stalls - 0.1
    assert swarm.step() == UpdatePlan(wake_at=stalls)
    assert swarm.state == "updating"


def test_a_stall_already_past_asks_for_no_wake_up():
    # Slot 1 waits for its new task; beside it, a task of the same spec from before the update stalled long ago.
    stalled_before = task("before", slot=1, spec=NEW, state="assigned", at=START - 3600)
    swarm = Swarm(service(2), [stalled_before, task("new1", slot=1, spec=NEW, state="new", at=START)], reconcile=False)
    swarm.now = START + 10
    assert swarm.plan() == UpdatePlan()  # no wake-up in the past: the loop would spin


def test_with_failure_action_continue_a_stalled_task_does_not_hold_up_the_next_batch():
    swarm = Swarm.replicated(2, update={"FailureAction": "continue"})
    swarm.step()
    swarm.report(swarm.new_in(1)["ID"], "assigned")
    swarm.now += STALLED_TASK_TIMEOUT
    assert swarm.step().shutdown == ("old2",)


def test_ending_of_a_task_from_before_the_update_is_not_a_failure():
    early = task("early", slot=2, spec=NEW, state="failed", at=START + 1, created=START - 60)
    swarm = Swarm(service(2), [task("old1", slot=1), early])
    assert swarm.plan() == UpdatePlan(shutdown=("old1",))


def test_task_the_orchestrator_shut_down_is_not_a_failure():
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)["ID"]
    swarm.get(replacement)["DesiredState"] = "shutdown"
    swarm.report(replacement, "shutdown")
    swarm.step()
    assert swarm.state == "updating"


def test_update_completes_once_every_new_task_ran_for_monitor():
    swarm = Swarm.replicated(2)
    swarm.step()
    swarm.settle()
    swarm.step()
    swarm.now += 1
    swarm.settle()
    last_started = swarm.now
    assert swarm.step() == UpdatePlan(wake_at=last_started + 5)
    swarm.now = last_started + 4.9
    assert swarm.step() == UpdatePlan(wake_at=last_started + 5)
    swarm.now = last_started + 5
    plan = swarm.step()
    assert plan.service["UpdateStatus"] == {
        "State": "completed",
        "StartedAt": rfc3339(START),
        "CompletedAt": rfc3339(last_started + 5),
        "Message": "update completed",
    }
    assert swarm.step() == UpdatePlan()


def test_failure_action_continue_ignores_failures():
    swarm = Swarm.replicated(4, update={"FailureAction": "continue"})
    swarm.step()
    swarm.settle()
    swarm.report(swarm.new_in(1)["ID"], "failed")
    swarm.drive()
    assert swarm.state == "completed"
    assert [existing["Spec"] for existing in swarm.live()] == [NEW] * 4


def test_max_failure_ratio_half_tolerates_failures_up_to_half_the_slots():
    swarm = Swarm.replicated(4, update={"MaxFailureRatio": 0.5})
    failed = []
    for slot in (1, 2, 3):
        swarm.step()
        assert swarm.state == "updating"
        swarm.now += 1
        swarm.settle()
        failed.append(swarm.new_in(slot)["ID"])
        swarm.report(failed[-1], "failed")
    swarm.step()
    assert swarm.service["UpdateStatus"]["State"] == "paused"
    assert swarm.service["UpdateStatus"]["Message"].endswith(f"task {failed[2]}")


def test_one_failing_slot_counts_once_however_often_it_is_restarted():
    swarm = Swarm.replicated(4, update={"MaxFailureRatio": 0.25})
    swarm.step()
    for _ in range(3):  # the restart supervisor replaces the crashing task (here: the reconciler refills)
        swarm.now += 1
        swarm.settle()
        swarm.report(swarm.new_in(1)["ID"], "failed")
        swarm.step()
    assert swarm.state == "updating"


# --- rollback ------------------------------------------------------------------------------------------


def test_failure_action_rollback_restores_the_previous_spec_and_rolls_back_with_rollback_config():
    swarm = Swarm.replicated(
        4, update={"Parallelism": 3, "FailureAction": "rollback"}, rollback={"Parallelism": 1, "Monitor": 0}
    )
    assert swarm.step().shutdown == ("old1", "old2", "old3")
    swarm.now += 1
    swarm.settle()
    new1, new2, new3 = (swarm.new_in(slot)["ID"] for slot in (1, 2, 3))
    swarm.now += 1
    swarm.report(new3, "failed")

    swarm.step()
    assert swarm.service["Spec"]["TaskTemplate"] == OLD
    assert swarm.service["PreviousSpec"]["TaskTemplate"] == NEW
    assert swarm.service["UpdateStatus"] == {
        "State": "rollback_started",
        "StartedAt": rfc3339(swarm.now),
        "Message": f"update rolled back due to failure or early termination of task {new3}",
    }
    # RollbackConfig's parallelism of 1, not UpdateConfig's 3; slot 3 was refilled with the old spec.
    assert swarm.drive() == [(new1,), (new2,)]
    assert swarm.service["UpdateStatus"]["State"] == "rollback_completed"
    assert swarm.service["UpdateStatus"]["Message"] == "rollback completed"
    assert swarm.service["UpdateStatus"]["CompletedAt"] == rfc3339(swarm.now)
    assert [existing["Spec"] for existing in swarm.live()] == [OLD] * 4


def test_user_rollback_follows_rollback_config():
    swarm = Swarm.replicated(4, rollback={"Parallelism": 2})
    swarm.service["UpdateStatus"]["State"] = "rollback_started"
    assert swarm.drive() == [("old1", "old2"), ("old3", "old4")]
    assert swarm.state == "rollback_completed"


def test_failing_rollback_is_paused_not_rolled_back():
    swarm = Swarm.replicated(2, rollback={"FailureAction": "rollback"})
    swarm.service["UpdateStatus"]["State"] = "rollback_started"
    swarm.step()
    replacement = swarm.new_in(1)["ID"]
    swarm.report(replacement, "failed")
    swarm.step()
    assert swarm.service["Spec"]["TaskTemplate"] == NEW
    assert swarm.service["UpdateStatus"]["State"] == "rollback_paused"
    assert swarm.service["UpdateStatus"]["Message"] == (
        f"rollback paused due to failure or early termination of task {replacement}"
    )


def test_rollback_without_a_previous_spec_pauses():
    swarm = Swarm.replicated(2, update={"FailureAction": "rollback"})
    del swarm.service["PreviousSpec"]
    swarm.step()
    swarm.report(swarm.new_in(1)["ID"], "failed")
    swarm.step()
    assert swarm.state == "paused"
    assert "no previous spec to roll back to" in swarm.service["UpdateStatus"]["Message"]


# --- global services -----------------------------------------------------------------------------------


def global_swarm(**settings) -> Swarm:
    nodes = [node("n1"), node("n2"), node("n3")]
    return Swarm(service(None, **settings), [task(f"old-{n['ID']}", node=n["ID"]) for n in nodes], nodes)


def test_global_service_is_updated_node_by_node():
    swarm = global_swarm()
    assert swarm.drive() == [("old-n1",), ("old-n2",), ("old-n3",)]
    assert sorted((existing["NodeID"], existing["Spec"] == NEW) for existing in swarm.live()) == [
        ("n1", True),
        ("n2", True),
        ("n3", True),
    ]


def test_global_start_first_pins_the_replacement_to_the_node():
    swarm = global_swarm(update={"Order": "start-first"})
    plan = swarm.step()
    assert [(created["NodeID"], "Slot" in created) for created in plan.create] == [("n1", False)]
    assert {existing["ID"] for existing in swarm.live(NodeID="n1")} == {"old-n1", plan.create[0]["ID"]}


# --- edges ---------------------------------------------------------------------------------------------


def test_service_scaled_to_zero_completes_at_once():
    swarm = Swarm(service(0), [])
    assert swarm.step().service["UpdateStatus"]["State"] == "completed"


def test_created_at_missing_falls_back_to_the_status_timestamp():
    swarm = Swarm.replicated(2)
    swarm.step()
    replacement = swarm.new_in(1)
    del replacement["CreatedAt"]
    swarm.report(replacement["ID"], "failed")  # Status.Timestamp is after StartedAt: one of the update's tasks
    swarm.step()
    assert swarm.state == "paused"


@pytest.mark.parametrize(
    ("setting", "flag"),
    [({"FailureAction": "explode"}, "--update-failure-action"), ({"Order": "sideways"}, "--update-order")],
)
def test_unknown_update_settings_are_rejected(setting, flag):
    with pytest.raises(InvalidUpdateConfig, match=flag):
        Swarm.replicated(1, update=setting).plan()
