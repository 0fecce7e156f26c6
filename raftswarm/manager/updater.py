"""The updater: rolling updates and rollbacks of a service's tasks, as pure decisions.

SwarmKit's manager/orchestrator/update runs a goroutine per update that remembers which tasks it made and
when each started running. Here the leader's control loop calls `plan_update(service, tasks, now=...)`
after store changes and at the `wake_at` it was given, and writes the plan back in one transaction; every
decision is derived again from the store, so calling twice with the same state gives the same plan.

- The update in progress is the service's UpdateStatus: "updating" follows Spec.UpdateConfig,
  "rollback_started" Spec.RollbackConfig (Docker's defaults for missing fields); other states plan nothing.
- A slot is a replicated task's Slot, or a global task's NodeID. A live task is *dirty* when its Spec is not
  the service's TaskTemplate. Slots are updated in batches of Parallelism (0: all at once), in slot (node
  ID) order. Stop-first: the updater shuts the dirty task down and `reconcile_replicated` /
  `reconcile_global`, run by the loop after it, fill the slot. Start-first: the updater creates the new
  task and retires the dirty one once the new one runs.
- A slot is *in flight* from then until its current-spec task is RUNNING. The next batch starts when
  nothing is in flight and Delay has passed since the last of them started running.
- The update covers the slots the service holds, as SwarmKit's covers the slots with a runnable task: a slot
  whose tasks were all told to stop (scaled away; its node down, drained or gone) is not waited on, even while
  a task of it has yet to report that it stopped -- its node may never answer again. Only while a replicated
  service has fewer slots than replicas (the reconciler has yet to refill one the updater freed) is such a
  slot in flight.
- The update's tasks are current-spec tasks created (CreatedAt; without it Status.Timestamp, which is the
  creation time while a task is still new and later afterwards) at or after UpdateStatus.StartedAt. One
  that ends on its own (complete, failed, rejected), or ends any other way while desired running, is a
  failure of its slot; one the swarm told to stop (shutdown) is not. A live one that *stalled* is a failure
  too: its node has not reported on it for `STALLED_TASK_TIMEOUT` in a state an agent leaves at once
  (assigned, accepted, ready to start), as a task assigned around a leader change whose agent
  never acknowledged it. No slot waits on a stalled task; a task still pulling its image (preparing), waiting
  for its restart delay or for a node to take it (pending) is not stalled, however long it takes. When failed
  slots / slots (those with a live task or a failure) exceed MaxFailureRatio, FailureAction applies: pause
  ("paused", or "rollback_paused" for a rollback), rollback (Spec and PreviousSpec swap, "rollback_started";
  a rollback is never rolled back, it pauses), or continue.
- The update completes when no dirty task is live (but one beside a stalled start-first replacement, left
  running as SwarmKit leaves it), nothing is in flight, and every running current-spec task has been
  RUNNING for Monitor; until then `wake_at` is the end of the last monitor window.

Where this differs from SwarmKit, because the store keeps no memory of the update:

- SwarmKit ignores a task that ends after it has been running for Monitor. The store only knows when an
  ended task ended, not when it started running, so any ending of an update's task before the update
  completes counts. This errs towards stopping a bad rollout.
- SwarmKit waits for each new task to reach RUNNING with no bound ("TODO: consider adding a timeout"), so a
  task whose agent never reports on it holds the update for ever; here it is a failure once stalled.
- SwarmKit counts only the tasks its updater created, one per slot; here restarts of them are the update's
  tasks too, so failures are counted per slot, which gives the same ratio.
- Batches are whole: SwarmKit's Parallelism workers each move on after their own slot (and Delay).
- A start-first replacement that ends without running is not retried by the updater (the restart supervisor
  replaces it); unless the failure stops the update, the dirty task is then retired as in stop-first, so
  the slot converges. SwarmKit leaves the old task running and the slot not updated.
- An automatic rollback keeps the spec being left as PreviousSpec and restarts StartedAt, as a user's
  `docker service rollback` does; SwarmKit clears PreviousSpec and keeps StartedAt.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RaftswarmError
from ..objects.times import parse_rfc3339, rfc3339
from .orchestrator import new_task
from ..objects.tasks import TaskState, desired_state, is_current, is_live, is_terminal, observed_state
from ..objects.defaults import NANOSECONDS, effective_update_config

__all__ = ["STALLED_TASK_TIMEOUT", "InvalidUpdateConfig", "UpdatePlan", "plan_update"]

STALLED_TASK_TIMEOUT = 60.0
"""Seconds a task of the update may go unreported in a state its agent leaves at once before it counts as a
failure. SwarmKit bounds its wait for a task that may never answer at one minute (the restart supervisor's
old-task timeout). Twice what a leader change costs an agent here at worst: calls held by a deposed leader
time out within 30 s, and the agent then talks to the new one."""
_FAILURE_ACTIONS = ("pause", "continue", "rollback")
_ORDERS = ("stop-first", "start-first")

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"
IN_PROGRESS = (UPDATING, ROLLBACK_STARTED)
"""The states in which the updater moves an update on."""


class InvalidUpdateConfig(RaftswarmError):
    """A service's UpdateConfig or RollbackConfig cannot be understood."""


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """What to write back for one service's update.

    `create`: new tasks (start-first replacements). `shutdown`: IDs of tasks whose DesiredState becomes
    "shutdown". `service`: the service's new data when it changes (UpdateStatus; Spec and PreviousSpec for
    an automatic rollback), None when unchanged. `wake_at`: Unix time at which to plan again even if the
    store does not change (Delay, Monitor, a task that would stall), None to wait for changes only.
    """

    create: tuple[dict[str, Any], ...] = ()
    shutdown: tuple[str, ...] = ()
    service: dict[str, Any] | None = None
    wake_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Rollout:
    """An UpdateConfig or RollbackConfig with Docker's defaults filled in; durations in seconds."""

    parallelism: int
    delay: float
    failure_action: str
    monitor: float
    max_failure_ratio: float
    order: str


def _rollout(config: dict[str, Any] | None, *, rollback: bool) -> _Rollout:
    config = effective_update_config(config)
    flag = "--rollback" if rollback else "--update"
    failure_action = config["FailureAction"]
    if failure_action not in _FAILURE_ACTIONS:
        raise InvalidUpdateConfig(
            f"failure action {failure_action!r} is not one of {', '.join(_FAILURE_ACTIONS)};"
            f" fix the service's {flag}-failure-action"
        )
    order = config["Order"]
    if order not in _ORDERS:
        raise InvalidUpdateConfig(f"order {order!r} is not one of {', '.join(_ORDERS)}; fix the service's {flag}-order")
    return _Rollout(
        parallelism=config["Parallelism"],
        delay=config["Delay"] / NANOSECONDS,
        failure_action=failure_action,
        monitor=config["Monitor"] / NANOSECONDS,
        max_failure_ratio=config["MaxFailureRatio"],
        order=order,
    )


def _seconds(text: str | None) -> float:
    """Unix time of an RFC 3339 timestamp; a missing one is before everything."""
    if not text:
        return -math.inf
    return parse_rfc3339(text).timestamp()


def _created(task: dict[str, Any]) -> float:
    return _seconds(task.get("CreatedAt") or (task.get("Status") or {}).get("Timestamp"))


def _since(task: dict[str, Any]) -> float:
    """When the task entered its current state."""
    return _seconds((task.get("Status") or {}).get("Timestamp"))


def _is_running(task: dict[str, Any]) -> bool:
    return observed_state(task) == TaskState.RUNNING


# States an agent reports when a task ends on its own (exit 0, other exit, could not start); a task the swarm
# told to stop ends SHUTDOWN. The restart supervisor may already have set DesiredState to shutdown on these.
_ENDED_ON_ITS_OWN = (TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED)


def _is_failure(task: dict[str, Any]) -> bool:
    """Whether a task that ended counts against the update: SwarmKit's "failure or early termination"."""
    state = observed_state(task)
    if not is_terminal(state):
        return False
    return state in _ENDED_ON_ITS_OWN or desired_state(task) <= TaskState.RUNNING


# States an agent moves a task out of at once, so that a long silence in one means the store lost track of
# the task (an assignment or a report lost around a leader change). Not PREPARING: an image pull takes as long
# as it takes. Not NEW or PENDING: no node has the task yet; it waits for the scheduler, as in Docker. Not
# STARTING: a task with a healthcheck (its image's, which the manager cannot see) stays there until healthy,
# as long as its start period and probes take; an unhealthy one ends FAILED from its node.
_LEFT_AT_ONCE = (TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.READY)


def _stalls_at(task: dict[str, Any]) -> float | None:
    """When a live task counts as stalled (see the module docstring) if nothing is heard of it before, or None
    if it cannot stall in its state."""
    if observed_state(task) not in _LEFT_AT_ONCE or desired_state(task) != TaskState.RUNNING:
        return None  # a delayed restart waits in READY while its desired state is READY
    # UpdatedAt too: the leader's last change of it, such as the release of a delayed start.
    return max(_since(task), _seconds(task.get("UpdatedAt"))) + STALLED_TASK_TIMEOUT


def _stalled_at(task: dict[str, Any], now: float) -> float | None:
    """When a live task became stalled, or None if it is not stalled at `now`."""
    stalls = _stalls_at(task)
    return stalls if stalls is not None and now >= stalls else None


@dataclass(frozen=True, slots=True)
class _Failure:
    """A task of the update that failed, when (it ended, or stalled), and the words for a stalled one."""

    task: dict[str, Any]
    at: float
    detail: str = ""

    @property
    def order(self) -> tuple[float, str]:
        return self.at, self.task["ID"]


def _failure(task: dict[str, Any], now: float) -> _Failure | None:
    if _is_failure(task):
        return _Failure(task, _since(task))
    if (stalled := _stalled_at(task, now)) is not None:
        silence = f"its node has not reported on it for {STALLED_TASK_TIMEOUT:g} s"
        return _Failure(task, stalled, f" (it did not start: {silence} since it became {observed_state(task).api})")
    return None


@dataclass(slots=True)
class _Slot:
    """One slot's (or node's) tasks, as the update sees them at one moment."""

    key: Any
    dirty: list[dict[str, Any]] = field(default_factory=list)  # live tasks of another spec
    current: list[dict[str, Any]] = field(default_factory=list)  # live tasks of the current spec
    updated: list[dict[str, Any]] = field(default_factory=list)  # the update's tasks, in any state
    stopping: bool = False  # a dirty task was told to shut down and has not stopped yet
    failure: _Failure | None = None  # the slot's first failure in this update (by when, then ID)
    stalled: bool = False  # it has current-spec tasks, none running, all stalled: nothing to wait for

    @property
    def running(self) -> list[dict[str, Any]]:
        return [task for task in self.current if _is_running(task)]


def _slots(
    service: dict[str, Any],
    tasks: Iterable[dict[str, Any]],
    template: dict[str, Any],
    started: float,
    is_global: bool,
    now: float,
) -> list[_Slot]:
    slots: dict[Any, _Slot] = {}
    for task in tasks:
        if task.get("ServiceID") != service["ID"]:
            continue
        key = (task.get("NodeID") or "") if is_global else (task.get("Slot") or 0)
        slot = slots.setdefault(key, _Slot(key))
        current = is_current(task, template)
        if is_live(task):
            (slot.current if current else slot.dirty).append(task)
        elif not current and not is_terminal(observed_state(task)):
            slot.stopping = True
        if current and _created(task) >= started:
            slot.updated.append(task)
    for slot in slots.values():
        failures = [failure for task in slot.updated if (failure := _failure(task, now)) is not None]
        slot.failure = min(failures, key=lambda failure: failure.order, default=None)
        slot.stalled = bool(slot.current) and all(_stalled_at(task, now) is not None for task in slot.current)
    return [slots[key] for key in sorted(slots)]


def _tipping_failure(slots: list[_Slot], max_ratio: float) -> _Failure | None:
    """The failure that took failed slots / slots over `max_ratio`, or None if the ratio is not exceeded."""
    failures = sorted(
        (failure for slot in slots if (failure := slot.failure) is not None),
        key=lambda failure: failure.order,
    )
    total = sum(1 for slot in slots if slot.dirty or slot.current or slot.failure is not None)
    for count, failure in enumerate(failures, start=1):
        if count / total > max_ratio:
            return failure
    return None


def _after_failure(
    service: dict[str, Any], failure: _Failure, action: str, rolling_back: bool, now: float
) -> dict[str, Any]:
    """The service once FailureAction "pause" or "rollback" has been applied because of `failure`."""
    changed = copy.deepcopy(service)
    status = changed.get("UpdateStatus") or {}
    reason = f"due to failure or early termination of task {failure.task['ID']}{failure.detail}"
    if action == "rollback" and not rolling_back and changed.get("PreviousSpec"):
        changed["Spec"], changed["PreviousSpec"] = changed["PreviousSpec"], changed["Spec"]
        changed["UpdateStatus"] = {
            "State": ROLLBACK_STARTED,
            "StartedAt": rfc3339(now),
            "Message": f"update rolled back {reason}",
        }
        return changed
    if rolling_back:
        message = f"rollback paused {reason}"
    elif action == "rollback":
        message = f"update paused {reason}; there is no previous spec to roll back to"
    else:
        message = f"update paused {reason}"
    changed["UpdateStatus"] = {**status, "State": ROLLBACK_PAUSED if rolling_back else PAUSED, "Message": message}
    return changed


def _completed(service: dict[str, Any], rolling_back: bool, now: float) -> dict[str, Any]:
    changed = copy.deepcopy(service)
    changed["UpdateStatus"] = {
        **(changed.get("UpdateStatus") or {}),
        "State": ROLLBACK_COMPLETED if rolling_back else COMPLETED,
        "CompletedAt": rfc3339(now),
        "Message": "rollback completed" if rolling_back else "update completed",
    }
    return changed


def plan_update(
    service: dict[str, Any], tasks: Iterable[dict[str, Any]], *, new_id: Callable[[], str], now: float
) -> UpdatePlan:
    """Plan the next step of `service`'s rolling update (or rollback) from its tasks, at Unix time `now`.

    Returns an empty plan unless UpdateStatus.State is "updating" or "rollback_started". `tasks` may hold
    other services' tasks; `new_id` names each task created. Raises `InvalidUpdateConfig` for a
    FailureAction or Order it does not know. See the module docstring for the rules.
    """
    status = service.get("UpdateStatus") or {}
    if status.get("State") not in (UPDATING, ROLLBACK_STARTED):
        return UpdatePlan()
    rolling_back = status["State"] == ROLLBACK_STARTED
    spec = service.get("Spec") or {}
    rollout = _rollout(spec.get("RollbackConfig" if rolling_back else "UpdateConfig"), rollback=rolling_back)
    started = _seconds(status.get("StartedAt"))
    is_global = "Global" in (spec.get("Mode") or {})
    slots = _slots(service, tasks, spec.get("TaskTemplate") or {}, started, is_global, now)
    # The reconciler, run after the updater in the same round, refills a slot the updater freed; a replicated
    # service with fewer slots than replicas is one it has yet to refill (it creates a bounded number a round).
    # A global service's node is refilled in that round or not at all (the node is down, drained or gone).
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
    refilling = not is_global and sum(1 for slot in slots if slot.dirty or slot.current) < replicas

    if rollout.failure_action != "continue":
        failure = _tipping_failure(slots, rollout.max_failure_ratio)
        if failure is not None:
            return UpdatePlan(service=_after_failure(service, failure, rollout.failure_action, rolling_back, now))

    shutdown: list[str] = []
    in_flight: list[_Slot] = []
    waiting: list[_Slot] = []
    for slot in slots:
        if slot.dirty and slot.running:
            shutdown.extend(task["ID"] for task in slot.dirty)  # start-first: the replacement runs
        elif slot.current and not slot.running:
            if not slot.stalled:  # nothing to wait for in a stalled task (the update's own is a failure, above)
                in_flight.append(slot)
        elif slot.dirty and slot.updated:
            shutdown.extend(task["ID"] for task in slot.dirty)  # start-first replacement ended: stop-first now
            in_flight.append(slot)
        elif slot.dirty:
            waiting.append(slot)
        elif slot.stopping and not slot.current and refilling:
            in_flight.append(slot)  # stop-first: the reconciler has yet to refill it

    if in_flight:
        # No store change announces that a task went on being silent: plan again when the next one would stall.
        stalls = [_stalls_at(task) for slot in in_flight for task in slot.current]
        wake_at = min((when for when in stalls if when is not None and when > now), default=None)
        return UpdatePlan(shutdown=tuple(sorted(shutdown)), wake_at=wake_at)
    if waiting:
        started_running = [_since(task) for slot in slots for task in slot.running if _created(task) >= started]
        next_batch = max(started_running, default=-math.inf) + rollout.delay
        if now < next_batch:
            return UpdatePlan(shutdown=tuple(sorted(shutdown)), wake_at=next_batch)
        batch = waiting if rollout.parallelism == 0 else waiting[: rollout.parallelism]
        create: list[dict[str, Any]] = []
        for slot in batch:
            if rollout.order == "start-first":
                place = {"node_id": slot.key} if is_global else {"slot": slot.key}
                create.append(new_task(service, **place, task_id=new_id(), now=now))
            else:
                shutdown.extend(task["ID"] for task in slot.dirty)
        return UpdatePlan(create=tuple(create), shutdown=tuple(sorted(shutdown)))

    monitored_until = max(
        (_since(task) + rollout.monitor for slot in slots for task in slot.running), default=-math.inf
    )
    if now < monitored_until:
        return UpdatePlan(shutdown=tuple(sorted(shutdown)), wake_at=monitored_until)
    return UpdatePlan(shutdown=tuple(sorted(shutdown)), service=_completed(service, rolling_back, now))
