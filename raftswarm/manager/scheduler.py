"""The scheduler: decides which node each unassigned task runs on. A pure function, as SwarmKit's is at heart.

`schedule(nodes, tasks_to_place, running_tasks)` takes plain Docker-API-shaped dicts and returns one
decision per task: an `Assignment` (task -> node) or a `Pending` with a Docker-worded reason. The control
loop that watches the store and writes the decisions back lives elsewhere; nothing here does I/O.

Filters run in SwarmKit's order, stopping at a node's first failure (manager/scheduler/pipeline.go):

1. ready        node Status.State is "ready" and Spec.Availability is "active" (pause/drain: no new tasks)
2. resources    the task's Reservations fit the node's Description.Resources minus what its tasks reserve
3. constraints  every Placement.Constraints entry matches (see `parse_constraint`): node fields, node labels
                (node.labels.<name>) and the labels its daemon was started with (engine.labels.<name>)
4. host ports   none of the task's host-mode published ports is already used on the node
5. max replicas fewer than Placement.MaxReplicas tasks of the service already on the node

Tasks of one service with the same placement-relevant spec are scheduled as a group (SwarmKit groups by
service and spec version): the eligible nodes are found once, arranged in a tree by the spread preferences
(Placement.Preferences, e.g. node.labels.zone), tasks are split evenly between the branches of each level,
counting the service's tasks already there, and inside a leaf a heap hands each task to the node with
the fewest tasks of the service, then fewest tasks overall, then the smallest node ID.

Input shapes beyond Docker's:

- A task to place may carry "HostPorts": [{"Protocol": "tcp"|"udp"|"sctp", "PublishedPort": 8080}], the
  service's EndpointSpec ports with PublishMode "host" (Protocol defaults to "tcp"; PublishedPort 0, a
  dynamic port, never conflicts). Running tasks carry the same field for the ports they hold.
- A node without Description.Resources, or without one of its NanoCPUs/MemoryBytes keys, is unlimited in
  that dimension.
- A task to place whose "NodeID" is already set (a global service's task) is only checked against that
  node, before the other tasks, as SwarmKit does with preassigned tasks.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..objects.placement import (
    ENGINE_LABEL_PREFIX,
    NODE_LABEL_PREFIX,
    node_fields,
    node_labels,
    parse_constraint,
    spread_label,
)

__all__ = ["Assignment", "Decision", "Pending", "schedule"]


@dataclass(frozen=True, slots=True)
class Assignment:
    """Run task `task_id` on node `node_id`."""

    task_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class Pending:
    """Task `task_id` fits no node now; `reason` says why, in Docker's words."""

    task_id: str
    reason: str


Decision = Assignment | Pending


class _NodeState:
    """A node as the scheduler sees it: static facts and what its tasks already use."""

    __slots__ = ("by_service", "fields", "free_cpus", "free_memory", "id", "labels", "ports", "ready", "tasks")

    def __init__(self, node: dict[str, Any]) -> None:
        spec = node.get("Spec") or {}
        description = node.get("Description") or {}
        self.id: str = node["ID"]
        self.ready = (node.get("Status") or {}).get("State") == "ready" and spec.get("Availability") == "active"
        self.fields = {name: value.casefold() for name, value in node_fields(node).items()}
        # Label values as they are (spread preferences group by them), by constraint prefix.
        self.labels: dict[str, dict[str, str]] = {
            prefix: node_labels(node, prefix) for prefix in (NODE_LABEL_PREFIX, ENGINE_LABEL_PREFIX)
        }
        resources = description.get("Resources") or {}
        self.free_cpus: int | None = resources.get("NanoCPUs")
        self.free_memory: int | None = resources.get("MemoryBytes")
        self.ports: set[tuple[str, int]] = set()
        self.tasks = 0
        self.by_service: dict[str, int] = {}

    def add(self, service_id: str, cpus: int, memory: int, ports: Iterable[tuple[str, int]]) -> None:
        if self.free_cpus is not None:
            self.free_cpus -= cpus
        if self.free_memory is not None:
            self.free_memory -= memory
        self.ports.update(ports)
        self.tasks += 1
        self.by_service[service_id] = self.by_service.get(service_id, 0) + 1


# Filter indices in pipeline order, with SwarmKit's explanation for `count` failing nodes.
_READY, _RESOURCES, _CONSTRAINTS, _HOST_PORTS, _MAX_REPLICAS = range(5)


def _explain(filter_index: int, count: int) -> str:
    nodes = "1 node" if count == 1 else f"{count} nodes"
    return (
        f"{nodes} not available for new tasks",
        f"insufficient resources on {nodes}",
        f"scheduling constraints not satisfied on {nodes}",
        f"host-mode port already in use on {nodes}",
        "max replicas per node limit exceed",
    )[filter_index]


class _Placement:
    """What the filters need to know about one group of identical tasks."""

    def __init__(self, task: dict[str, Any]) -> None:
        spec = task.get("Spec") or {}
        placement = spec.get("Placement") or {}
        reservations = (spec.get("Resources") or {}).get("Reservations") or {}
        self.service_id: str = task.get("ServiceID", "")
        self.constraints = [parse_constraint(text) for text in placement.get("Constraints") or ()]
        self.matchers = [(c.operator == "==", *c.subject, c.value.casefold()) for c in self.constraints]
        self.spread = [spread_label(preference) for preference in placement.get("Preferences") or ()]
        self.max_replicas: int = placement.get("MaxReplicas") or 0
        self.cpus: int = reservations.get("NanoCPUs") or 0
        self.memory: int = reservations.get("MemoryBytes") or 0
        self.ports = _host_ports(task)

    def first_failure(self, node: _NodeState) -> int | None:
        """The index of the first filter `node` fails, or None if it can take the task."""
        if not node.ready:
            return _READY
        if (node.free_cpus is not None and self.cpus > node.free_cpus) or (
            node.free_memory is not None and self.memory > node.free_memory
        ):
            return _RESOURCES
        for equal, prefix, name, value in self.matchers:
            actual = node.labels[prefix].get(name, "").casefold() if prefix else node.fields[name]
            if (actual == value) != equal:
                return _CONSTRAINTS
        if self.ports and not self.ports.isdisjoint(node.ports):
            return _HOST_PORTS
        if self.max_replicas and node.by_service.get(self.service_id, 0) >= self.max_replicas:
            return _MAX_REPLICAS
        return None

    def assign(self, node: _NodeState) -> None:
        node.add(self.service_id, self.cpus, self.memory, self.ports)

    def no_suitable_node(self, nodes: Iterable[_NodeState]) -> str:
        """Docker's "no suitable node (...)" message: failures per filter, most frequent first."""
        failures = [0] * 5
        for node in nodes:
            failed = self.first_failure(node)
            if failed is not None:
                failures[failed] += 1
        ranked = sorted((index for index in range(5) if failures[index]), key=lambda index: -failures[index])
        if not ranked:
            return "no suitable node"
        return f"no suitable node ({'; '.join(_explain(index, failures[index]) for index in ranked)})"


def _host_ports(task: dict[str, Any]) -> frozenset[tuple[str, int]]:
    return frozenset(
        ((port.get("Protocol") or "tcp").lower(), port["PublishedPort"])
        for port in task.get("HostPorts") or ()
        if port.get("PublishedPort")
    )


def _reservations(task: dict[str, Any]) -> tuple[int, int]:
    reservations = ((task.get("Spec") or {}).get("Resources") or {}).get("Reservations") or {}
    return reservations.get("NanoCPUs") or 0, reservations.get("MemoryBytes") or 0


def _group_key(task: dict[str, Any]) -> tuple[str, str]:
    """Tasks with equal keys are interchangeable to every filter and preference."""
    spec = task.get("Spec") or {}
    relevant = [spec.get("Placement"), (spec.get("Resources") or {}).get("Reservations"), task.get("HostPorts")]
    return task.get("ServiceID", ""), json.dumps(relevant, sort_keys=True)


def _task_order(task: dict[str, Any]) -> tuple[int, str]:
    return task.get("Slot") or 0, task["ID"]


class _Branch:
    """One value of a spread preference (or the whole cluster): its subtrees or, at a leaf, a node heap."""

    __slots__ = ("children", "heap", "tasks")

    def __init__(self) -> None:
        self.tasks = 0
        self.children: dict[str, _Branch] = {}
        self.heap: list[tuple[int, int, str, _NodeState]] = []


def _build_tree(placement: _Placement, eligible: list[_NodeState]) -> _Branch:
    root = _Branch()
    for node in eligible:
        service_tasks = node.by_service.get(placement.service_id, 0)
        branch = root
        branch.tasks += service_tasks
        # A node without the label spreads as the value "", as in SwarmKit.
        for label in placement.spread:
            branch = branch.children.setdefault(node.labels[NODE_LABEL_PREFIX].get(label, ""), _Branch())
            branch.tasks += service_tasks
        branch.heap.append((service_tasks, node.tasks, node.id, node))
    return root


def _place(placement: _Placement, branch: _Branch, wanted: int, out: list[_NodeState]) -> int:
    """Put up to `wanted` tasks under `branch`, appending the chosen nodes to `out`; return how many."""
    if not branch.children:
        placed = _place_on_nodes(placement, branch.heap, wanted, out)
    else:
        placed = 0
        open_children = sorted(branch.children.items())
        while placed < wanted and open_children:
            quotas = _even_split([child.tasks for _, child in open_children], wanted - placed)
            still_open = []
            for (value, child), quota in zip(open_children, quotas):
                got = _place(placement, child, quota, out) if quota else 0
                placed += got
                if got == quota:
                    still_open.append((value, child))
            open_children = still_open
    branch.tasks += placed
    return placed


def _even_split(current: list[int], extra: int) -> list[int]:
    """How many of `extra` new tasks each branch gets so the branches' totals come out as even as possible
    (water-filling: the least loaded branches are topped up first, ties to the earlier branch)."""
    quotas = [0] * len(current)
    heap = [(count, index) for index, count in enumerate(current)]
    heapq.heapify(heap)
    for _ in range(extra):
        count, index = heap[0]
        quotas[index] += 1
        heapq.heapreplace(heap, (count + 1, index))
    return quotas


def _place_on_nodes(
    placement: _Placement, heap: list[tuple[int, int, str, _NodeState]], wanted: int, out: list[_NodeState]
) -> int:
    heapq.heapify(heap)
    placed = 0
    while placed < wanted and heap:
        _, _, node_id, node = heap[0]
        placement.assign(node)
        out.append(node)
        placed += 1
        if placement.first_failure(node) is None:
            heapq.heapreplace(heap, (node.by_service[placement.service_id], node.tasks, node_id, node))
        else:
            heapq.heappop(heap)
    return placed


def schedule(
    nodes: list[dict[str, Any]], tasks_to_place: list[dict[str, Any]], running_tasks: list[dict[str, Any]]
) -> list[Decision]:
    """Decide a node for every task in `tasks_to_place`; return one decision per task, in input order.

    `nodes` are node objects; `running_tasks` are tasks already on a node and not terminal: they count
    toward each node's load, reserved resources, used host ports and per-service replicas. The result is
    deterministic: it depends on the contents of the inputs, not on their order or on chance.
    Raises `InvalidPlacement` before deciding anything if a constraint or preference cannot be parsed.
    """
    states = {node["ID"]: _NodeState(node) for node in nodes}
    for task in running_tasks:
        state = states.get(task.get("NodeID") or "")
        if state is not None:
            state.add(task.get("ServiceID", ""), *_reservations(task), _host_ports(task))

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in tasks_to_place:
        groups.setdefault(_group_key(task), []).append(task)
    placements = {key: _Placement(tasks[0]) for key, tasks in groups.items()}

    decisions: dict[str, Decision] = {}
    ordered_states = [states[node_id] for node_id in sorted(states)]

    # Preassigned tasks first: they were pinned to their node, and must not lose it to a replica.
    for key in sorted(groups):
        placement = placements[key]
        for task in sorted(groups[key], key=_task_order):
            node_id = task.get("NodeID")
            if not node_id:
                continue
            state = states.get(node_id)
            if state is None:
                decisions[task["ID"]] = Pending(task["ID"], f"no suitable node (node {node_id} does not exist)")
            elif placement.first_failure(state) is None:
                placement.assign(state)
                decisions[task["ID"]] = Assignment(task["ID"], node_id)
            else:
                decisions[task["ID"]] = Pending(task["ID"], placement.no_suitable_node([state]))

    for key in sorted(groups):
        placement = placements[key]
        unplaced = sorted((task for task in groups[key] if not task.get("NodeID")), key=_task_order)
        if not unplaced:
            continue
        eligible = [state for state in ordered_states if placement.first_failure(state) is None]
        chosen: list[_NodeState] = []
        _place(placement, _build_tree(placement, eligible), len(unplaced), chosen)
        for task, node in zip(unplaced, chosen):
            decisions[task["ID"]] = Assignment(task["ID"], node.id)
        if len(chosen) < len(unplaced):
            reason = placement.no_suitable_node(ordered_states)
            for task in unplaced[len(chosen) :]:
                decisions[task["ID"]] = Pending(task["ID"], reason)

    return [decisions[task["ID"]] for task in tasks_to_place]
