"""The orchestrator: decides which tasks a service should have. Pure functions, as SwarmKit's are at heart.

SwarmKit's manager/orchestrator keeps each service at its desired task count; this module holds the
decisions and a control loop elsewhere watches the store and writes them back. Everything here takes plain
Docker-API-shaped dicts and returns plans; nothing does I/O, reads the clock or draws random numbers (task
IDs and the time come from the caller).

- `reconcile_replicated(service, tasks)`: one live task per slot 1..n for Mode.Replicated.Replicas = n.
- `reconcile_global(service, nodes, tasks)`: one live task per eligible node.
- `reconcile_replicated_job(service, tasks)`: Mode.ReplicatedJob, tasks run to completion until
  TotalCompletions have completed, at most MaxConcurrent at once (SwarmKit's jobs/replicated reconciler).
- `reconcile_global_job(service, nodes, tasks)`: Mode.GlobalJob, one task run to completion per eligible node
  (SwarmKit's jobs/global reconciler). See `objects.jobs` for what a job is.
- `restart_decision(task, policy, previous_restarts, now)`: whether, and when, a task that ended is replaced.
- `tasks_to_reap(tasks)`: the old terminal tasks to delete so each slot keeps a short history.

A task is *live* when its observed state is not terminal and its desired state is at most running: it
holds its slot (or node). Terminal tasks and tasks already told to shut down are history, and their slot
is free to be filled again, as SwarmKit reuses "dead slots". A live task is *dirty* when its Spec is not
the service's current TaskTemplate: a rolling update (`updater.py`) is replacing it. During a start-first
update a slot briefly holds two live tasks, the dirty one and its replacement; the reconcilers leave that
pair alone until the replacement runs (SwarmKit's updater owns such slots too).

Reconciliation runs on service events (create, update, scale) and node events, as in SwarmKit, and a job's
also when one of its tasks completes. A task ending goes through `restart_decision` instead, so with restart
condition none a failed replica's slot stays empty until the service is next reconciled (a job's, until it
next is: a task of it completing, an update, a node change -- as in SwarmKit).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import RaftswarmError
from ..objects.jobs import (
    GLOBAL_JOB,
    REPLICATED_JOB,
    is_job,
    job_counts,
    job_iteration,
    task_iteration,
    version,
)
from ..objects.placement import parse_constraint
from ..objects.tasks import TaskState, desired_state, is_current, is_live, is_terminal, observed_state
from ..objects.defaults import DEFAULT_RESTART_CONDITION, DEFAULT_RESTART_DELAY_NS, DEFAULT_TASK_HISTORY_LIMIT, NANOSECONDS
from ..objects.times import parse_rfc3339, rfc3339

__all__ = [
    "InvalidRestartPolicy",
    "Plan",
    "RestartDecision",
    "WrongServiceMode",
    "new_task",
    "node_matches_constraints",
    "reconcile_global",
    "reconcile_global_job",
    "reconcile_replicated",
    "reconcile_replicated_job",
    "restart_decision",
    "rfc3339",
    "tasks_to_reap",
]

_RESTART_CONDITIONS = ("none", "on-failure", "any")


class WrongServiceMode(RaftswarmError):
    """A reconcile was asked of a service of another mode (a replicated one of a global service, ...)."""


_RECONCILERS = {
    REPLICATED_JOB: "reconcile_replicated_job",
    GLOBAL_JOB: "reconcile_global_job",
    "Global": "reconcile_global",
}


def _wrong_mode(service: dict[str, Any], is_not: str) -> WrongServiceMode:
    """The error for reconciling `service` as what it is not, naming the function that reconciles its mode."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    right = next((name for key, name in _RECONCILERS.items() if key in mode), "reconcile_replicated")
    return WrongServiceMode(f"service {service['ID']} is not {is_not}; reconcile it with {right}")


class InvalidRestartPolicy(RaftswarmError):
    """A service's RestartPolicy cannot be understood."""


def _timestamp(task: dict[str, Any]) -> datetime:
    text = (task.get("Status") or {}).get("Timestamp")
    if not text:
        return datetime.min.replace(tzinfo=UTC)
    return parse_rfc3339(text)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write back: new tasks to store, IDs of tasks whose DesiredState becomes "shutdown", and IDs of
    tasks whose DesiredState becomes "remove" (a job's earlier iteration: stopped, then deleted)."""

    create: tuple[dict[str, Any], ...] = ()
    shutdown: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


def new_task(
    service: dict[str, Any],
    slot: int | None = None,
    node_id: str | None = None,
    *,
    task_id: str,
    now: float,
) -> dict[str, Any]:
    """A new task of `service`: for slot `slot` (replicated) or pinned to node `node_id` (global).

    A job's task is made for the job's current iteration (JobIteration) and is meant to run to completion
    (DesiredState "complete"), as SwarmKit makes it. `now` is Unix time in seconds, written as the RFC 3339
    Status.Timestamp. Version is the store's to set.
    """
    if (slot is None) == (node_id is None):
        raise ValueError("a task belongs to exactly one of a slot (replicated) or a node (global)")
    spec = service.get("Spec") or {}
    task: dict[str, Any] = {
        "ID": task_id,
        "ServiceID": service["ID"],
        "Spec": copy.deepcopy(spec.get("TaskTemplate") or {}),
        "ServiceAnnotations": {"Name": spec.get("Name", ""), **({"Labels": dict(spec["Labels"])} if spec.get("Labels") else {})},
        "DesiredState": TaskState.RUNNING.api,
        "Status": {"State": TaskState.NEW.api, "Timestamp": rfc3339(now), "Message": "created"},
    }
    if is_job(spec):
        task["DesiredState"] = TaskState.COMPLETE.api
        task["JobIteration"] = version(job_iteration(service))
    if slot is not None:
        task["Slot"] = slot
    else:
        task["NodeID"] = node_id
    return task


def _keep_order(task: dict[str, Any]) -> tuple[int, datetime, str]:
    """Sorts the task most worth keeping last: furthest along, then newest, then largest ID."""
    return observed_state(task), _timestamp(task), task["ID"]


def _one_per_key(
    live: dict[Any, list[dict[str, Any]]], template: dict[str, Any]
) -> tuple[dict[Any, list[dict[str, Any]]], list[str]]:
    """Per slot or node, the live tasks to keep (furthest along first) and the extras to shut down.

    Normally one task is kept: one of the current spec if there is any, else the one furthest along. A
    start-first update in progress keeps all: exactly one current-spec task not yet running beside dirty
    ones; the updater retires the dirty ones once the new one runs.
    """
    kept: dict[Any, list[dict[str, Any]]] = {}
    extras: list[str] = []
    for key, group in live.items():
        group = sorted(group, key=_keep_order, reverse=True)
        current = [task for task in group if is_current(task, template)]
        if len(current) == 1 and len(group) > 1 and observed_state(current[0]) < TaskState.RUNNING:
            kept[key] = group
            continue
        best = current[0] if current else group[0]
        kept[key] = [best]
        extras.extend(task["ID"] for task in group if task is not best)
    return kept, extras


def _service_tasks(service: dict[str, Any], tasks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [task for task in tasks if task.get("ServiceID") == service["ID"]]


def reconcile_replicated(
    service: dict[str, Any],
    tasks: Iterable[dict[str, Any]],
    *,
    new_id: Callable[[], str],
    now: float,
    max_create: int | None = None,
) -> Plan:
    """Plan the tasks that bring a replicated service to Mode.Replicated.Replicas live tasks, one per slot.

    Terminal tasks and tasks already told to shut down are ignored. A slot with several live tasks keeps
    one of the current spec, else the one furthest along; but a slot in a start-first update (one
    current-spec task not yet running beside dirty ones) is left as it is. Missing replicas get the lowest
    free slot numbers. On scale down the slots to remove are picked one at a time, SwarmKit-like: first
    tasks not yet running (they serve nobody), then tasks on the node holding most of the service's
    remaining tasks (to keep the spread), then the highest slot; a slot's tasks all go together. `new_id`
    names each new task; `now` (Unix seconds) stamps it. At most `max_create` tasks are created (the lowest
    free slots): a caller working in bounded batches plans again for the rest.
    """
    mode = (service.get("Spec") or {}).get("Mode") or {"Replicated": {}}
    if "Replicated" not in mode:
        raise _wrong_mode(service, "replicated")
    replicas = (mode["Replicated"] or {}).get("Replicas", 1)

    by_slot: dict[int, list[dict[str, Any]]] = {}
    for task in _service_tasks(service, tasks):
        if is_live(task):
            by_slot.setdefault(task.get("Slot") or 0, []).append(task)
    kept, shutdown = _one_per_key(by_slot, (service.get("Spec") or {}).get("TaskTemplate") or {})

    # A slot counts once, on the node of its task furthest along (the old one, in a start-first pair).
    load: dict[str, int] = {}
    for first, *_ in kept.values():
        node = first.get("NodeID") or ""
        load[node] = load.get(node, 0) + 1

    def removal_order(slot: int) -> tuple[bool, int, int]:
        first = kept[slot][0]
        return observed_state(first) == TaskState.RUNNING, -load.get(first.get("NodeID") or "", 0), -slot

    # A heap with lazy updates instead of a scan per removal (quadratic for a large scale-down): removing a
    # slot only lowers its node's load, so the other keys of that node only grow; a popped key that grew
    # since it was pushed goes back in with its current value.
    if len(kept) > replicas:
        heap = [(removal_order(slot), slot) for slot in kept]
        heapq.heapify(heap)
        while len(kept) > replicas:
            order, slot = heapq.heappop(heap)
            if order != (current := removal_order(slot)):
                heapq.heappush(heap, (current, slot))
                continue
            removed = kept.pop(slot)
            load[removed[0].get("NodeID") or ""] -= 1
            shutdown.extend(task["ID"] for task in removed)

    create = [
        new_task(service, slot=slot, task_id=new_id(), now=now)
        for slot in _free_slots(kept, 1, _at_most(replicas - len(kept), max_create))
    ]
    return Plan(tuple(create), tuple(sorted(shutdown)))


def _at_most(count: int, max_create: int | None) -> int:
    """How many of `count` tasks to create when at most `max_create` may be (None: no limit)."""
    return max(0, count if max_create is None else min(count, max_create))


def _free_slots(taken: Container[int], first: int, count: int) -> list[int]:
    """The `count` lowest slot numbers from `first` up that `taken` does not hold, in order."""
    slots: list[int] = []
    slot = first
    while len(slots) < count:
        if slot not in taken:
            slots.append(slot)
        slot += 1
    return slots


def _nodes_to_fill_and_clear(
    spec: dict[str, Any],
    nodes: Iterable[dict[str, Any]],
    holders: Mapping[str, Any],
    max_create: int | None,
    *,
    clear_down: bool,
) -> tuple[list[str], list[str]]:
    """Node by node, for a service with one task per node (global, global job): the IDs of the nodes to give
    a task, the first `max_create` in ID order of those active and ready, matching Placement.Constraints and
    not among `holders`; and the IDs of `holders` whose tasks must go: drained, constraints no longer
    matched, removed from the swarm, and with `clear_down` down. Any other node -- paused, or not ready --
    keeps what it has and gets nothing."""
    constraints = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or ()
    nodes_by_id = {node["ID"]: node for node in nodes}
    fill: list[str] = []
    clear = [node_id for node_id in holders if node_id not in nodes_by_id]
    for node_id in sorted(nodes_by_id):
        node = nodes_by_id[node_id]
        availability = (node.get("Spec") or {}).get("Availability") or "active"
        state = (node.get("Status") or {}).get("State")
        if (
            availability == "drain"
            or (clear_down and state == "down")
            or not node_matches_constraints(node, constraints)
        ):
            if node_id in holders:
                clear.append(node_id)
        elif availability == "active" and state == "ready" and node_id not in holders:
            fill.append(node_id)
    return fill[: _at_most(len(fill), max_create)], clear


def node_matches_constraints(node: dict[str, Any], constraints: Iterable[str]) -> bool:
    """Whether `node` satisfies every placement constraint text, with the scheduler's syntax and rules
    (`placement.Constraint.matches`): values compare case-insensitively and whole, label names are
    case-sensitive. Raises `InvalidPlacement` on bad text."""
    return all(parse_constraint(text).matches(node) for text in constraints)


def reconcile_global(
    service: dict[str, Any],
    nodes: Iterable[dict[str, Any]],
    tasks: Iterable[dict[str, Any]],
    *,
    new_id: Callable[[], str],
    now: float,
    max_create: int | None = None,
) -> Plan:
    """Plan the tasks that give a global service one live task on every eligible node.

    Per node, by its Spec.Availability and Status.State:

    - active and ready, matching Placement.Constraints: keep one task (as `reconcile_replicated` keeps
      one per slot, a start-first pair included), or create one;
    - drain, constraints no longer matched, or node removed from the swarm: shut its tasks down;
    - pause, or not ready (down, disconnected): keep existing tasks, add none; the dispatcher decides the
      fate of tasks on a node that stopped reporting.

    New tasks are created in node ID order, at most `max_create` of them; `new_id` names each one, `now`
    (Unix seconds) stamps it.
    """
    spec = service.get("Spec") or {}
    if "Global" not in (spec.get("Mode") or {}):
        raise _wrong_mode(service, "global")

    by_node: dict[str, list[dict[str, Any]]] = {}
    for task in _service_tasks(service, tasks):
        if is_live(task):
            by_node.setdefault(task.get("NodeID") or "", []).append(task)
    kept, shutdown = _one_per_key(by_node, spec.get("TaskTemplate") or {})

    fill, clear = _nodes_to_fill_and_clear(spec, nodes, kept, max_create, clear_down=False)
    create = [new_task(service, node_id=node_id, task_id=new_id(), now=now) for node_id in fill]
    shutdown.extend(task["ID"] for node_id in clear for task in kept[node_id])
    return Plan(tuple(create), tuple(sorted(shutdown)))


def _job_tasks(
    service: dict[str, Any], tasks: Iterable[dict[str, Any]], *, earlier: Callable[[dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], list[str]]:
    """A job's tasks of its current iteration, and the IDs of its earlier iterations' tasks to remove: those
    `earlier` picks that are not yet to be removed. Tasks without a JobIteration are not a job's: ignored."""
    iteration = job_iteration(service)
    current, remove = [], []
    for task in _service_tasks(service, tasks):
        made_for = task_iteration(task)
        if made_for == iteration:
            current.append(task)
        elif made_for is not None and earlier(task) and desired_state(task) != TaskState.REMOVE:
            remove.append(task["ID"])
    return current, remove


def reconcile_replicated_job(
    service: dict[str, Any],
    tasks: Iterable[dict[str, Any]],
    *,
    new_id: Callable[[], str],
    now: float,
    max_create: int | None = None,
) -> Plan:
    """Plan the tasks that move a replicated job (Mode.ReplicatedJob) toward TotalCompletions completed tasks,
    as SwarmKit's jobs/replicated reconciler does.

    Of the job's current iteration, a task that completed counts toward TotalCompletions, and a task not
    completed and not told to stop is running (one that ended is the restart policy's to replace). New tasks:
    min(MaxConcurrent - running, TotalCompletions - completed - running), each in the lowest slot from 0 that
    neither holds; at most `max_create` of them. Tasks of earlier iterations that have not got past running
    are removed (DesiredState remove: stopped, then deleted); those that ended are left as they are. Nothing is
    shut down: a job's running tasks are never too many, an update starts a new iteration.
    """
    spec = service.get("Spec") or {}
    if REPLICATED_JOB not in (spec.get("Mode") or {}):
        raise _wrong_mode(service, "a replicated job")
    max_concurrent, total = job_counts(spec)
    current, remove = _job_tasks(service, tasks, earlier=lambda task: observed_state(task) <= TaskState.RUNNING)
    completed = running = 0
    taken: set[int] = set()
    for task in current:
        if observed_state(task) == TaskState.COMPLETE:
            completed += 1
        elif desired_state(task) <= TaskState.COMPLETE:
            running += 1
        else:
            continue
        taken.add(task.get("Slot") or 0)
    wanted = max(0, min(max_concurrent - running, total - completed - running))
    create = [
        new_task(service, slot=slot, task_id=new_id(), now=now)
        for slot in _free_slots(taken, 0, _at_most(wanted, max_create))
    ]
    return Plan(tuple(create), (), tuple(sorted(remove)))


def reconcile_global_job(
    service: dict[str, Any],
    nodes: Iterable[dict[str, Any]],
    tasks: Iterable[dict[str, Any]],
    *,
    new_id: Callable[[], str],
    now: float,
    max_create: int | None = None,
) -> Plan:
    """Plan the tasks that give a global job (Mode.GlobalJob) one task run to completion on every eligible
    node, as SwarmKit's jobs/global reconciler does.

    A node has the job's task when a task of the current iteration on it completed or is not told to stop.
    Per node, by its Spec.Availability and Status.State:

    - active and ready, matching Placement.Constraints, without the task: one is created (a node that joins
      later too; at most `max_create` in all, in node ID order);
    - down or drained, its constraints no longer matched, or removed from the swarm: its task is shut down
      unless it completed (a completed task stays: the node has done its part);
    - pause, or not ready otherwise: nothing changes.

    Every task of an earlier iteration is removed (DesiredState remove), completed ones included.
    """
    spec = service.get("Spec") or {}
    if GLOBAL_JOB not in (spec.get("Mode") or {}):
        raise _wrong_mode(service, "a global job")
    current, remove = _job_tasks(service, tasks, earlier=lambda task: True)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for task in current:
        if desired_state(task) <= TaskState.COMPLETE:
            by_node.setdefault(task.get("NodeID") or "", []).append(task)

    fill, clear = _nodes_to_fill_and_clear(spec, nodes, by_node, max_create, clear_down=True)
    create = [new_task(service, node_id=node_id, task_id=new_id(), now=now) for node_id in fill]
    shutdown = [
        task["ID"] for node_id in clear for task in by_node[node_id] if not is_terminal(observed_state(task))
    ]
    return Plan(tuple(create), tuple(sorted(shutdown)), tuple(sorted(remove)))


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Whether to replace a task that ended; if so, the earliest Unix time (`not_before`) its replacement
    may start. `reason` says why, in words fit for `docker service ps`."""

    restart: bool
    not_before: float | None
    reason: str


def restart_decision(
    task: dict[str, Any], policy: dict[str, Any] | None, previous_restarts: Sequence[float], now: float
) -> RestartDecision:
    """Apply a service's TaskTemplate.RestartPolicy to `task`, which has ended.

    `policy` is Docker-shaped: Condition none|on-failure|any (default any), Delay and Window in
    nanoseconds (Delay defaults to 5 s), MaxAttempts (0: unlimited). `previous_restarts` are the Unix
    times of the slot's (or node's) earlier restarts; with a Window only those within the last Window
    seconds count against MaxAttempts, without one all do. Failure means state failed or rejected.
    A task the orchestrator itself shut down (desired state shutdown or remove) is never restarted, nor is
    a job's task that completed: for a job, condition any means on-failure (SwarmKit's restart supervisor).
    """
    policy = policy or {}
    condition = policy.get("Condition") or DEFAULT_RESTART_CONDITION
    if condition not in _RESTART_CONDITIONS:
        raise InvalidRestartPolicy(
            f"restart condition {condition!r} is not one of {', '.join(_RESTART_CONDITIONS)};"
            " fix the service's --restart-condition"
        )
    delay_ns = policy.get("Delay")
    delay = (DEFAULT_RESTART_DELAY_NS if delay_ns is None else delay_ns) / NANOSECONDS
    max_attempts = policy.get("MaxAttempts") or 0
    window = (policy.get("Window") or 0) / NANOSECONDS

    state = observed_state(task)
    if not is_terminal(state):
        return RestartDecision(False, None, f"task is still {state.api}; only a task that ended is restarted")
    if desired_state(task) >= TaskState.SHUTDOWN:
        return RestartDecision(False, None, "task was shut down by the orchestrator; not restarting")
    failed = state in (TaskState.FAILED, TaskState.REJECTED)
    if state == TaskState.COMPLETE and task_iteration(task) is not None:
        return RestartDecision(False, None, "task complete; a job's task that completed is never restarted")
    if condition == "none":
        return RestartDecision(False, None, f"task {state.api}; restart condition is none")
    if condition == "on-failure" and not failed:
        return RestartDecision(False, None, f"task {state.api} without failing; restart condition is on-failure")
    if max_attempts:
        counted = [when for when in previous_restarts if not window or when > now - window]
        if len(counted) >= max_attempts:
            within = f" within {window:g}s" if window else ""
            return RestartDecision(
                False, None, f"task {state.api}; restart policy max attempts ({max_attempts}) reached{within}"
            )
    return RestartDecision(True, now + delay, f"task {state.api}; restarting after {delay:g}s delay")


def tasks_to_reap(tasks: Iterable[dict[str, Any]], history_limit: int = DEFAULT_TASK_HISTORY_LIMIT) -> list[str]:
    """IDs of terminal tasks to delete: per service slot (or node, for a global service's tasks) the
    newest `history_limit` terminal tasks are kept, by Status.Timestamp; live tasks are never reaped.
    A replicated job's slots start at 0 (SwarmKit's numbering): its tasks' place is their slot, 0 too."""
    history: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for task in tasks:
        if is_terminal(observed_state(task)):
            if "Slot" in task and task_iteration(task) is not None:
                place = task["Slot"]
            else:
                place = task.get("Slot") or task.get("NodeID") or ""
            history.setdefault((task.get("ServiceID", ""), place), []).append(task)
    reaped: list[str] = []
    for group in history.values():
        newest_first = sorted(group, key=lambda task: (_timestamp(task), task["ID"]), reverse=True)
        reaped.extend(task["ID"] for task in newest_first[max(history_limit, 0) :])
    return sorted(reaped)
