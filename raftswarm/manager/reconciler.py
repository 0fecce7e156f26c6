"""The leader's control loop: from the store's state, the transaction that moves the swarm toward its specs.

`reconcile(view, ...)` is pure: it takes a snapshot of services, tasks and nodes and returns the
operations to commit (each with the version it read, so a concurrent agent report makes it fail and be
recomputed rather than overwritten) and when to run again if nothing changes before. It composes the
decisions of `orchestrator` (replicated, global and the two job modes), the restart supervisor, `updater`,
`scheduler` and the task reaper, in SwarmKit's order:

1. delayed starts are released (DesiredState ready -> running, or complete for a job's task): restarts whose
   delay has passed, and replacements whose predecessor in the slot has stopped (or its node went away, or
   `PREDECESSOR_STOP_TIMEOUT` passed);
2. tasks on nodes that are down, drained or gone are shut down; their services are reconciled;
3. tasks that ended on their own go through the restart policy (SwarmKit's restart supervisor): the old
   task is marked shut down and, if the policy says so, a replacement takes its slot after the delay; a
   job's task that completed stays as it is (complete, desired complete): it is the job's progress;
4. rolling updates and rollbacks advance (`updater.plan_update`; never for a job, which has none);
5. services whose spec changed since they were last reconciled, jobs of which a task completed since, or
   all services after a node change, are reconciled (`reconcile_replicated` / `reconcile_global` /
   `reconcile_replicated_job` / `reconcile_global_job`); a new task of a service whose slot (or node) still
   holds a task told to stop but not stopped -- a stop-first update, a scale down and up -- waits READY for it,
   as SwarmKit's restart supervisor (DelayStart with waitStop) holds it, so the two never run at once;
6. tasks not yet placed get an address on each of their networks (`allocator.allocate_task_networks`;
   the round's transaction then takes the allocation lock of `serviceapi.allocation_lock`), or stay
   PENDING with the reason when a network has none left;
7. tasks without a node are scheduled (`scheduler.schedule`): ASSIGNED, or PENDING with the reason;
8. old tasks are reaped: beyond the history limit per slot (never the completed tasks of a job's current
   iteration: they are its progress), those of removed services once stopped, and those told to be removed
   (a job's earlier iteration) once stopped or if they never reached a node, as SwarmKit's task reaper does.

`Reconciler` runs it on the elected leader only: after each batch of store changes and at the wake-up
times it returns, starting over whenever this manager becomes leader again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProposalDropped
from ..raft.driver import RaftDriver, Timeout
from ..store import ClusterState, Conflict, Operation, ReplicatedStore, WatchCompacted, create, delete, update
from ..objects.stored import StoredObject
from .allocator import (
    AllocationError,
    addresses_in_use,
    allocate_node_attachments,
    allocate_task_networks,
    ingress_network,
)
from ..objects.kinds import CLUSTER, CLUSTER_KEY, NODES
from ..objects.defaults import DEFAULT_TASK_HISTORY_LIMIT
from .orchestrator import (
    Plan,
    new_task,
    reconcile_global,
    reconcile_global_job,
    reconcile_replicated,
    reconcile_replicated_job,
    restart_decision,
    tasks_to_reap,
)
from ..objects.times import rfc3339
from ..objects.jobs import GLOBAL_JOB, REPLICATED_JOB, holds_slot, is_job, job_iteration, run_state, task_iteration
from ..objects.tasks import TaskState, desired_state, is_terminal, observed_state
from .scheduler import Assignment, schedule
from ..objects.kinds import ALLOCATIONS, ALLOCATIONS_KEY, NETWORKS, SERVICES, TASKS, new_object_id
from .serviceapi import MAX_OPERATIONS_PER_TRANSACTION
from .screening import Screen
from ..objects.specs import restart_policy
from .updater import IN_PROGRESS, plan_update

log = logging.getLogger(__name__)

__all__ = ["ClusterView", "Reconciler", "Round", "reconcile", "view_of"]

_WATCHED_KINDS = frozenset({SERVICES, TASKS, NODES, CLUSTER, NETWORKS})
_DEBOUNCE = 0.005
"""After a change, wait this long for more before planning: agents report in bursts and one round can
answer them all."""
_PAUSE_LIMIT = 0.25
"""After a change, wait at least as long as the last round's planning took (up to this): a round holds the
event loop for its whole pass over every task (~50 ms with 10,000), and agents reporting one after another
would otherwise keep it planning nearly all the time, starving the API, the dispatcher and Raft, whose
work the next round needs. With a few hundred tasks a round takes ~1 ms and the pause stays at `_DEBOUNCE`."""
_LEADERSHIP_CHECK = 0.5
MAX_NEW_TASKS_PER_ROUND = 1_000
"""Tasks reconciliation creates in one round. A round is synchronous work over every task, so creating a
service's tasks all at once would stall the leader (its API, heartbeats, Raft) for as long as that takes;
1,000 takes well under 100 ms here, and a 100-replica service, the common case, still needs one round."""
_FAILED_ROUND_RETRY = (0.1, 5.0)
"""Seconds before a round that raised is tried again: doubling from the first to the second."""
PREDECESSOR_STOP_TIMEOUT = 60.0
"""Seconds a new task waits READY for the task it replaces in its slot to stop before it starts anyway
(SwarmKit's defaultOldTaskTimeout)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What a round reads: services, tasks, nodes and networks as stored (with versions), the allocation
    lock's object, and the history limit."""

    services: Mapping[str, StoredObject]
    tasks: Mapping[str, StoredObject]
    nodes: Mapping[str, StoredObject]
    history_limit: int = DEFAULT_TASK_HISTORY_LIMIT
    networks: Mapping[str, StoredObject] = field(default_factory=dict)
    allocations: StoredObject | None = None


def view_of(state: ClusterState, screen: Screen | None = None) -> ClusterView:
    """What a round reads from `state`. With a `screen`, objects the control loops cannot read are left out
    (and reported by it), and so are the tasks of a left-out service: nothing acts on them until it is fixed."""
    cluster = state.get(CLUSTER, CLUSTER_KEY)
    limit = DEFAULT_TASK_HISTORY_LIMIT
    if cluster is not None:
        limit = ((cluster.data.get("Spec") or {}).get("Orchestration") or {}).get("TaskHistoryRetentionLimit", limit)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        limit = DEFAULT_TASK_HISTORY_LIMIT
    services = {o.id: o for o in state.list(SERVICES)}
    tasks = {o.id: o for o in state.list(TASKS)}
    nodes = {o.id: o for o in state.list(NODES)}
    if screen is not None:
        services = screen.passed(SERVICES, services)
        broken_services = screen.broken(SERVICES)
        tasks = screen.passed(TASKS, tasks)
        if broken_services:
            tasks = {task_id: o for task_id, o in tasks.items() if o.data.get("ServiceID") not in broken_services}
        nodes = screen.passed(NODES, nodes)
    return ClusterView(
        services=services,
        tasks=tasks,
        nodes=nodes,
        history_limit=limit,
        networks={o.id: o for o in state.list(NETWORKS)},
        allocations=state.get(ALLOCATIONS, ALLOCATIONS_KEY),
    )


@dataclass(frozen=True, slots=True)
class Round:
    """One round's outcome: the operations to commit, when to run again at the latest (None: only on a
    change), and the spec fingerprints of the services it reconciled, for the next round's `reconciled`."""

    operations: list[Operation]
    wake_at: float | None
    reconciled: dict[str, str]
    warnings: tuple[str, ...] = ()
    """What the round could not do and an operator should hear of, such as nodes a full ingress subnet leaves
    without an address; the loop logs each once, when it first appears, not every round."""


def spec_fingerprint(service: dict[str, Any]) -> str:
    return json.dumps(service.get("Spec"), sort_keys=True)


def _fingerprint(service: dict[str, Any], completed: int) -> str:
    """What a service was reconciled at: its spec; a job's also its iteration and how many of that iteration's
    tasks had completed (a completion lets the next task start, as SwarmKit reconciles a job on task events)."""
    if not is_job(service.get("Spec") or {}):
        return spec_fingerprint(service)
    return json.dumps([service.get("Spec"), job_iteration(service), completed], sort_keys=True)


def _completed_job_tasks(work: _Working) -> dict[str, int]:
    """Per job service, how many tasks of its current iteration have completed."""
    iterations = {sid: job_iteration(service) for sid, service in work.services.items() if is_job(service["Spec"])}
    completed: dict[str, int] = {}
    if not iterations:
        return completed
    for task in work.tasks.values():
        service_id = task.get("ServiceID", "")
        if service_id in iterations and observed_state(task) == TaskState.COMPLETE:
            if task_iteration(task) == iterations[service_id]:
                completed[service_id] = completed.get(service_id, 0) + 1
    return completed


def _node_usable(node: dict[str, Any]) -> bool:
    return node["Spec"].get("Availability") == "active" and node["Status"].get("State") == "ready"


@dataclass
class _Working:
    """The round's copy of the tasks and services, with what it changed."""

    view: ClusterView
    now: float
    new_id: Callable[[], str]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    changed_services: set[str] = field(default_factory=set)
    changed_nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    unallocated: set[str] = field(default_factory=set)
    """Tasks that could not get their network addresses this round: not scheduled."""
    warnings: list[str] = field(default_factory=list)
    """What `Round.warnings` will say."""
    allocated: bool = False
    wake_at: float | None = None

    def __post_init__(self) -> None:
        self.tasks = {task_id: o.data for task_id, o in self.view.tasks.items()}
        self.services = {service_id: o.data for service_id, o in self.view.services.items()}

    def wake(self, when: float | None) -> None:
        if when is not None and (self.wake_at is None or when < self.wake_at):
            self.wake_at = when

    def edit(self, task_id: str) -> dict[str, Any]:
        """The task's data, copied on first change so the view stays untouched."""
        if task_id not in self.changed and task_id not in self.created:
            task = copy.deepcopy(self.tasks[task_id])
            self.tasks[task_id] = task
            self.changed.add(task_id)
        task = self.tasks[task_id]
        task["UpdatedAt"] = rfc3339(self.now)
        return task

    def add(self, task: dict[str, Any]) -> None:
        task.setdefault("CreatedAt", task["Status"]["Timestamp"])
        task.setdefault("UpdatedAt", task["Status"]["Timestamp"])
        self.tasks[task["ID"]] = task
        self.created.add(task["ID"])

    def remove(self, task_id: str) -> None:
        del self.tasks[task_id]
        if task_id in self.created:
            self.created.discard(task_id)
        else:
            self.changed.discard(task_id)
            self.deleted.add(task_id)

    def shut_down(self, task_id: str, message: str | None = None, state: TaskState = TaskState.SHUTDOWN) -> None:
        """Tell the task to stop (DesiredState shutdown, or `state`, remove), unless it already was."""
        task = self.tasks[task_id]
        if desired_state(task) < state:
            task = self.edit(task_id)
            task["DesiredState"] = state.api
            if message:
                task["Status"] = {**task["Status"], "Message": message}

    def set_status(self, task_id: str, state: TaskState, message: str, err: str = "") -> None:
        task = self.edit(task_id)
        status = {"State": state.api, "Message": message, "Timestamp": rfc3339(self.now)}
        if err:
            status["Err"] = err
        task["Status"] = status

    def by_service(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for task in self.tasks.values():
            grouped.setdefault(task.get("ServiceID", ""), []).append(task)
        return grouped

    def operations(self) -> list[Operation]:
        view = self.view
        ops = []
        if self.allocated:
            lock = view.allocations
            if lock is None:
                ops.append(create(ALLOCATIONS, ALLOCATIONS_KEY, {"Writes": 1}))
            else:
                ops.append(update(ALLOCATIONS, ALLOCATIONS_KEY, {"Writes": lock.data["Writes"] + 1}, expect=lock.version))
        ops += [create(TASKS, task_id, self.tasks[task_id]) for task_id in sorted(self.created)]
        ops += [update(TASKS, task_id, self.tasks[task_id], expect=view.tasks[task_id].version) for task_id in sorted(self.changed)]
        ops += [delete(TASKS, task_id, expect=view.tasks[task_id].version) for task_id in sorted(self.deleted)]
        ops += [
            update(SERVICES, service_id, self.services[service_id], expect=view.services[service_id].version)
            for service_id in sorted(self.changed_services)
        ]
        ops += [update(NODES, node_id, data, expect=view.nodes[node_id].version) for node_id, data in sorted(self.changed_nodes.items())]
        return ops


def reconcile(
    view: ClusterView,
    *,
    reconciled: Mapping[str, str],
    nodes_changed: bool,
    now: float,
    new_id: Callable[[], str],
    max_new_tasks: int = MAX_NEW_TASKS_PER_ROUND,
) -> Round:
    """One round of the control loop over `view` (see the module docstring for the steps).

    `reconciled` maps service IDs to the spec fingerprint they were last reconciled at; a service whose
    spec differs (or every service, when `nodes_changed`) is reconciled this round. A task that ended is
    not replaced by reconciliation but by its restart policy, so with condition none its slot stays empty
    until the service is next updated, as in Docker.

    At most `max_new_tasks` tasks are created by reconciliation in one round: a service left short is not
    marked reconciled, and the round asks to run again at once, after its transaction (which yields).
    """
    work = _Working(view, now, new_id)
    nodes = {node_id: o.data for node_id, o in view.nodes.items()}
    completed = _completed_job_tasks(work)
    to_reconcile = {
        service_id
        for service_id, service in work.services.items()
        if nodes_changed or reconciled.get(service_id) != _fingerprint(service, completed.get(service_id, 0))
    }

    _release_delayed_starts(work, nodes)
    to_reconcile |= _leave_unavailable_nodes(work, nodes)
    _restart_ended_tasks(work, nodes)
    to_reconcile |= _advance_updates(work)

    grouped = work.by_service()
    fingerprints = dict(reconciled)
    for service_id in sorted(to_reconcile):
        service = work.services[service_id]
        tasks = grouped.get(service_id, [])
        budget = max(max_new_tasks - len(work.created), 0)
        plan = _plan(service, nodes, tasks, new_id=new_id, now=now, max_create=budget)
        for task_id in plan.shutdown:
            work.shut_down(task_id)
        for task_id in plan.remove:
            work.shut_down(task_id, state=TaskState.REMOVE)
        for task in plan.create:
            _wait_for_predecessors(work, service, tasks, task, nodes)
            work.add(task)
        if len(plan.create) >= budget:
            work.wake(now)  # perhaps more to create: the next round, not this one
        else:
            fingerprints[service_id] = _fingerprint(service, completed.get(service_id, 0))
    for service_id in set(fingerprints) - set(work.services):
        del fingerprints[service_id]

    _allocate_networks(work)
    _schedule(work, nodes)
    _stop_unassigned(work)
    _reap(work, nodes)
    return Round(work.operations(), work.wake_at, fingerprints, tuple(work.warnings))


def _plan(
    service: dict[str, Any],
    nodes: Mapping[str, dict[str, Any]],
    tasks: list[dict[str, Any]],
    *,
    new_id: Callable[[], str],
    now: float,
    max_create: int,
) -> Plan:
    """The orchestrator's plan for `service`, by its mode."""
    mode = service["Spec"].get("Mode") or {}
    if REPLICATED_JOB in mode:
        return reconcile_replicated_job(service, tasks, new_id=new_id, now=now, max_create=max_create)
    if GLOBAL_JOB in mode:
        return reconcile_global_job(service, nodes.values(), tasks, new_id=new_id, now=now, max_create=max_create)
    if "Global" in mode:
        return reconcile_global(service, nodes.values(), tasks, new_id=new_id, now=now, max_create=max_create)
    return reconcile_replicated(service, tasks, new_id=new_id, now=now, max_create=max_create)


def _release_delayed_starts(work: _Working, nodes: Mapping[str, dict[str, Any]]) -> None:
    ready = TaskState.READY.api
    for task_id, task in list(work.tasks.items()):
        if task["DesiredState"] != ready or "_StartAfter" not in task:
            continue
        waiting_for = [
            other for other in task.get("_StartAfterStopped") or () if _still_stopping(work.tasks.get(other), nodes)
        ]
        if task["_StartAfter"] <= work.now or ("_StartAfterStopped" in task and not waiting_for):
            edited = work.edit(task_id)
            edited["DesiredState"] = run_state(task).api
            del edited["_StartAfter"]
            edited.pop("_StartAfterStopped", None)
        else:
            work.wake(task["_StartAfter"])


def _still_stopping(task: dict[str, Any] | None, nodes: Mapping[str, dict[str, Any]]) -> bool:
    """Whether a task a replacement waits for may still run: started (STARTING or later) and not ended, on a
    node that is there and not down. One that never started, was never placed, or whose node is gone runs
    nowhere; SwarmKit waits for those too (up to its timeout), which holds a rollback of a task whose agent
    never answered for a minute."""
    if task is None or is_terminal(observed_state(task)) or observed_state(task) < TaskState.STARTING:
        return False
    node = nodes.get(task.get("NodeID") or "")
    return node is not None and node["Status"].get("State") != "down"


def _wait_for_predecessors(work: _Working, service: dict[str, Any], tasks: list[dict[str, Any]],
                           created: dict[str, Any], nodes: Mapping[str, dict[str, Any]]) -> None:  # fmt: skip
    """Hold a new task READY while its slot (or node) still holds one of the service's tasks told to stop."""
    if is_job(service["Spec"]):
        return
    place = ("Slot", created["Slot"]) if "Slot" in created else ("NodeID", created.get("NodeID"))
    predecessors = sorted(
        task["ID"]
        for task in tasks
        if task.get(place[0]) == place[1] and desired_state(task) >= TaskState.SHUTDOWN and _still_stopping(task, nodes)
    )
    if predecessors and created["DesiredState"] == TaskState.RUNNING.api:
        created["DesiredState"] = TaskState.READY.api
        created["_StartAfterStopped"] = predecessors
        created["_StartAfter"] = work.now + PREDECESSOR_STOP_TIMEOUT
        work.wake(created["_StartAfter"])


def _leave_unavailable_nodes(work: _Working, nodes: Mapping[str, dict[str, Any]]) -> set[str]:
    """Shut down the live tasks of nodes that are down, drained or removed; their services need new ones."""
    affected = set()
    unavailable = {}
    for node_id, node in nodes.items():
        if node["Status"].get("State") == "down":
            unavailable[node_id] = "node is down"
        elif node["Spec"].get("Availability") == "drain":
            unavailable[node_id] = "node is drained"
    for task_id, task in list(work.tasks.items()):  # the node first: most tasks are on a usable one
        node_id = task.get("NodeID")
        if not node_id or (node_id in nodes and node_id not in unavailable):
            continue
        if not holds_slot(task) or task.get("ServiceID") not in work.services:
            continue
        reason = unavailable.get(node_id, "node removed from the swarm")
        work.shut_down(task_id, f"task shut down: {reason}")
        affected.add(task["ServiceID"])
    return affected


def _restart_ended_tasks(work: _Working, nodes: Mapping[str, dict[str, Any]]) -> None:
    """SwarmKit's restart supervisor: each task that ended while meant to run is handled once (its desired
    state becomes shutdown) and replaced in its slot if the restart policy says so. A job's task that
    completed is not handled: it stays complete, the job's progress. One of a job's earlier iteration is
    not replaced."""
    for task_id, task in list(work.tasks.items()):
        state = observed_state(task)
        if state < TaskState.COMPLETE or desired_state(task) >= TaskState.SHUTDOWN:  # not ended, or handled
            continue
        made_for = task_iteration(task)
        if made_for is not None and state == TaskState.COMPLETE:
            continue
        service = work.services.get(task.get("ServiceID", ""))
        work.shut_down(task_id)
        if service is None or (made_for is not None and made_for != job_iteration(service)):
            continue
        history = list(task.get("_Restarts") or [])
        decision = restart_decision(task, restart_policy(service["Spec"]), history, work.now)
        if not decision.restart:
            continue
        if "Slot" in task:
            replacement = new_task(service, slot=task["Slot"], task_id=work.new_id(), now=work.now)
        else:
            node = nodes.get(task.get("NodeID", ""))
            if node is None or not _node_usable(node):
                continue  # the global reconciler places one when the node is usable again
            replacement = new_task(service, node_id=node["ID"], task_id=work.new_id(), now=work.now)
        replacement["_Restarts"] = [*history, work.now][-64:]
        assert decision.not_before is not None
        if decision.not_before > work.now:
            replacement["DesiredState"] = TaskState.READY.api
            replacement["_StartAfter"] = decision.not_before
            work.wake(decision.not_before)
        work.add(replacement)


def _advance_updates(work: _Working) -> set[str]:
    """Let the updater move each rolling update on. A service under update is reconciled every round: the
    slots the updater frees (stop-first) are refilled with the new spec, and an automatic rollback changes
    the spec itself."""
    respec = set()
    grouped = work.by_service()
    for service_id in sorted(work.services):
        service = work.services[service_id]
        if (service.get("UpdateStatus") or {}).get("State") not in IN_PROGRESS or is_job(service["Spec"]):
            continue  # a job is never rolled out: its update starts a new iteration
        plan = plan_update({**service, "ID": service_id}, grouped.get(service_id, []), new_id=work.new_id, now=work.now)
        respec.add(service_id)
        for task_id in plan.shutdown:
            work.shut_down(task_id)
        for task in plan.create:
            work.add(task)
        if plan.service is not None:
            work.services[service_id] = plan.service
            work.changed_services.add(service_id)
        work.wake(plan.wake_at)
    return respec


def _host_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    ports = ((service["Spec"].get("EndpointSpec") or {}).get("Ports")) or []
    return [
        {"Protocol": p.get("Protocol", "tcp"), "PublishedPort": p.get("PublishedPort", 0)}
        for p in ports
        if p.get("PublishMode") == "host"
    ]


def _allocate_networks(work: _Working) -> None:
    """Every node's address on the ingress network (the routing mesh's source address), then an address
    on each of its networks for every task not yet placed (SwarmKit allocates before the scheduler sees a
    task)."""
    networks = {network_id: o.data for network_id, o in work.view.networks.items()}
    nodes = {node_id: o.data for node_id, o in work.view.nodes.items()}
    book = None
    ingress = ingress_network(networks)
    unaddressed: list[str] = []
    for node_id, node in sorted(nodes.items()):
        if ingress is None or any(a["Network"]["ID"] == ingress["ID"] for a in node.get("Attachments") or ()):
            continue
        if book is None:
            book = addresses_in_use(networks, work.services, work.tasks, nodes)
        try:
            attachments = allocate_node_attachments(node, networks, book)
        except AllocationError as exc:
            unaddressed.append(node_id)
            failure = exc
            continue
        if attachments != (node.get("Attachments") or []):
            work.changed_nodes[node_id] = {**node, "Attachments": attachments}
            work.allocated = True
    if unaddressed:  # one line, not one per node: a full ingress subnet leaves hundreds without
        work.warnings.append(f"{len(unaddressed)} nodes get no ingress address ({unaddressed[0]} ...): {failure}")
    unplaced = sorted(task_id for task_id, task in work.tasks.items() if observed_state(task) <= TaskState.PENDING)
    for task_id in unplaced:
        task = work.tasks[task_id]
        service = work.services.get(task.get("ServiceID", ""))
        if service is None or not holds_slot(task):
            continue
        if book is None:
            book = addresses_in_use(networks, work.services, work.tasks, nodes)
        try:
            attachments = allocate_task_networks(task, service.get("Endpoint") or {}, networks, book)
        except AllocationError as exc:
            work.unallocated.add(task_id)
            if task["Status"].get("Err") != str(exc):
                work.set_status(task_id, TaskState.PENDING, "pending task allocation", str(exc))
            continue
        endpoint = service.get("Endpoint") or {}
        published = bool(endpoint.get("Ports") or endpoint.get("VirtualIPs"))
        if attachments != (task.get("NetworksAttachments") or []) or (published and task.get("Endpoint") != endpoint):
            edited = work.edit(task_id)
            edited["NetworksAttachments"] = attachments
            edited["Endpoint"] = copy.deepcopy(endpoint)  # as SwarmKit's tasks carry it: their VIPs, ports
            work.allocated = True


def _schedule(work: _Working, nodes: Mapping[str, dict[str, Any]]) -> None:
    if all(observed_state(task) > TaskState.PENDING for task in work.tasks.values()):
        return  # most rounds: nothing to place, and no copy of every task made for the scheduler
    live = []
    for task in work.tasks.values():
        service = work.services.get(task.get("ServiceID", ""))
        if service is None or not holds_slot(task) or task["ID"] in work.unallocated:
            continue
        live.append((task, service, observed_state(task) <= TaskState.PENDING))
    if not any(unplaced for _, _, unplaced in live):
        return
    ports: dict[str, list[dict[str, Any]]] = {}
    to_place, running = [], []
    for task, service, unplaced in live:
        if (host_ports := ports.get(service["ID"])) is None:
            host_ports = ports[service["ID"]] = _host_ports(service)  # read, never changed, by the scheduler
        (to_place if unplaced else running).append({**task, "HostPorts": host_ports})
    for decision in schedule(nodes.values(), to_place, running):
        task = work.tasks[decision.task_id]
        if isinstance(decision, Assignment):
            work.set_status(decision.task_id, TaskState.ASSIGNED, "scheduler assigned task to node")
            work.tasks[decision.task_id]["NodeID"] = decision.node_id
        elif task["Status"]["State"] != TaskState.PENDING.api or task["Status"].get("Err") != decision.reason:
            work.set_status(decision.task_id, TaskState.PENDING, "pending task scheduling", decision.reason)


def _stop_unassigned(work: _Working) -> None:
    """A task told to stop before it reached a node never runs: it is shut down on the spot."""
    for task_id, task in list(work.tasks.items()):
        if observed_state(task) < TaskState.ASSIGNED and desired_state(task) >= TaskState.SHUTDOWN:
            work.set_status(task_id, TaskState.SHUTDOWN, "shut down before it was assigned to a node")


def _reap(work: _Working, nodes: Mapping[str, dict[str, Any]]) -> None:
    gone = []
    history = []  # tasks that ended and stay, but for the history limit
    for task_id, task in work.tasks.items():
        state = observed_state(task)
        service = work.services.get(task.get("ServiceID", ""))
        if service is None:
            node = nodes.get(task.get("NodeID") or "")
            if is_terminal(state) or node is None or node["Status"].get("State") == "down":
                gone.append(task_id)
                continue
        elif desired_state(task) == TaskState.REMOVE and (is_terminal(state) or state < TaskState.ASSIGNED):
            gone.append(task_id)
            continue
        elif state == TaskState.COMPLETE and task_iteration(task) == job_iteration(service) and is_job(service["Spec"]):
            continue  # a job's progress: kept whatever the history limit
        if is_terminal(state):
            history.append(task)
    for task_id in gone:
        work.remove(task_id)
    for task_id in tasks_to_reap(history, work.view.history_limit):
        work.remove(task_id)


class Reconciler:
    """Runs `reconcile` on the leader: after store changes (debounced) and at the wake-up times rounds ask
    for, committing each round's operations in transactions of bounded size. A round that loses a race
    (Conflict) is simply computed again from the newer state."""

    def __init__(
        self,
        store: ReplicatedStore,
        driver: RaftDriver,
        *,
        new_id: Callable[[], str] = new_object_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.driver = driver
        self._new_id = new_id
        self._clock = clock
        self._changed = asyncio.Event()
        self.rounds = 0
        self.failed_rounds = 0
        self._planning_seconds = 0.0
        """How long the last round's planning (`view_of` and `reconcile`) held the event loop."""
        self._warned: tuple[str, ...] = ()
        self._screen = Screen(_report_skipped)

    @property
    def skipped(self) -> dict[tuple[str, str], str]:
        """(kind, ID) -> why the control loops skip that object, for as long as they do."""
        return self._screen.problems()

    async def run(self) -> None:
        while True:
            while not self.driver.is_leader:
                await asyncio.sleep(_LEADERSHIP_CHECK / 5)
            try:
                await self._lead()
            except (ProposalDropped, Timeout) as exc:
                log.info("reconciler paused: %s", exc)
                await asyncio.sleep(_LEADERSHIP_CHECK / 5)

    async def _lead(self) -> None:
        """Reconcile until this manager stops leading."""
        await self.driver.read_barrier()  # everything committed before this term is applied here
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(self._watch(), name="reconciler-watch")
            try:
                await self._rounds()
            finally:
                watcher.cancel()

    async def _watch(self) -> None:
        while True:
            try:
                async for _ in self.store.watch(self.store.state.version, _WATCHED_KINDS):
                    self._changed.set()
            except WatchCompacted:
                self._changed.set()

    async def _rounds(self) -> None:
        reconciled: dict[str, str] = {}
        nodes_seen: tuple[tuple[str, int], ...] | None = None
        retry = _FAILED_ROUND_RETRY[0]
        while self.driver.is_leader:
            self._changed.clear()
            try:
                started = time.perf_counter()
                view = view_of(self.store.state, self._screen)
                nodes_now = _nodes_fingerprint(view.nodes.values())
                outcome = reconcile(
                    view, reconciled=reconciled, nodes_changed=nodes_now != nodes_seen, now=self._clock(), new_id=self._new_id
                )
                self._planning_seconds = time.perf_counter() - started
            except Exception:
                # A bug, not bad data (the screen keeps that out): say so loudly and try again, never stop
                # reconciling for good.
                self.failed_rounds += 1
                log.exception("a reconcile round failed; trying again in %.1f s", retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, _FAILED_ROUND_RETRY[1])
                continue
            retry = _FAILED_ROUND_RETRY[0]
            self.rounds += 1
            try:
                for start in range(0, len(outcome.operations), MAX_OPERATIONS_PER_TRANSACTION):
                    await self.store.transact(outcome.operations[start : start + MAX_OPERATIONS_PER_TRANSACTION])
            except Conflict as exc:
                log.debug("reconcile round lost a race, planning again: %s", exc)
                await asyncio.sleep(_DEBOUNCE)
                continue
            reconciled, nodes_seen = outcome.reconciled, nodes_now
            self._say(outcome.warnings)
            await self._wait(outcome.wake_at)

    def _say(self, warnings: tuple[str, ...]) -> None:
        """Log the warnings a round gave that the last one did not; and once, when there are none any more."""
        for warning in warnings:
            if warning not in self._warned:
                log.warning("%s", warning)
        if self._warned and not warnings:
            log.info("the control loops have nothing to warn of any more")
        self._warned = warnings

    async def _wait(self, wake_at: float | None) -> None:
        """Until the store changes or `wake_at` passes; returns early, with nothing to do, only if this
        manager stops leading (checked every `_LEADERSHIP_CHECK` s). Idle rounds would cost a full pass
        over every task."""
        while self.driver.is_leader:
            timeout = _LEADERSHIP_CHECK
            if wake_at is not None:
                timeout = min(timeout, wake_at - self._clock())
                if timeout <= 0:
                    return
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                continue
            await asyncio.sleep(_pause(self._planning_seconds))
            return


def _pause(planning_seconds: float) -> float:
    """How long to wait after a change before the next round plans, given how long the last one's planning
    took: `_DEBOUNCE`, or as long as that planning up to `_PAUSE_LIMIT`."""
    return min(max(_DEBOUNCE, planning_seconds), _PAUSE_LIMIT)


def _report_skipped(kind: str, object_id: str, problem: str) -> None:
    log.error("the control loops skip %s %s until it is fixed: %s", kind.rstrip("s"), object_id, problem)


def _nodes_fingerprint(nodes: Iterable[StoredObject]) -> tuple[tuple[str, int], ...]:
    """Which nodes exist, at which versions: any change to a node (its spec, its state) changes its version.
    Cheap enough for every round, unlike comparing the nodes' contents."""
    return tuple((n.id, n.version) for n in nodes)
