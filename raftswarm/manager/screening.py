"""What the leader's control loops accept from the store: each object checked by shape before a round reads
it, so one broken object is skipped and reported instead of stopping reconciliation for the whole swarm.

Every path into the store validates at the edge (`specs`, the CA server's join checks, the dispatcher's
status checks), so a broken object means a bug, an older version's data, or a write around the API. Either
way the rule is the same as for bad input: one bad object must not stop the loop for everything else (a
join whose hostname was an int once stopped every leader's scheduler for good).

Pure: no I/O. `Screen` remembers verdicts by (kind, ID, version), so a round re-checks only what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..objects.stored import StoredObject
from ..objects.tasks import TaskState
from ..objects.validation import InvalidSpec
from ..objects.specs import validate_service_spec

_ROLES = ("manager", "worker")
_AVAILABILITIES = ("active", "pause", "drain")
_TASK_STATES = frozenset(state.api for state in TaskState)


class Broken(Exception):
    """Why an object cannot be read by the control loops (internal to this module)."""


def _map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Broken(f"{path} must be an object")
    return value


def _string(value: Any, path: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise Broken(f"{path} must be a string")


def _labels(value: Any, path: str) -> None:
    if value is None:
        return
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in _map(value, path).items()):
        raise Broken(f"{path} must map strings to strings")


def check_node(data: Any) -> None:
    """Raise `Broken` unless a Node object has what the scheduler and orchestrators read."""
    node = _map(data, "node")
    _string(node.get("ID"), "ID")
    spec = _map(node.get("Spec"), "Spec")
    if spec.get("Role") not in _ROLES:
        raise Broken(f"Spec.Role must be one of {', '.join(_ROLES)}")
    if spec.get("Availability") not in _AVAILABILITIES:
        raise Broken(f"Spec.Availability must be one of {', '.join(_AVAILABILITIES)}")
    _labels(spec.get("Labels"), "Spec.Labels")
    description = _map(node.get("Description") or {}, "Description")
    _string(description.get("Hostname"), "Description.Hostname", optional=True)
    platform = _map(description.get("Platform") or {}, "Description.Platform")
    for key in ("OS", "Architecture"):
        _string(platform.get(key), f"Description.Platform.{key}", optional=True)
    resources = _map(description.get("Resources") or {}, "Description.Resources")
    for key in ("NanoCPUs", "MemoryBytes"):
        value = resources.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise Broken(f"Description.Resources.{key} must be an integer")
    status = _map(node.get("Status"), "Status")
    _string(status.get("State"), "Status.State")
    attachments = node.get("Attachments") or []
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise Broken("Attachments must be a list of objects")


def check_service(data: Any) -> None:
    """Raise `Broken` unless a Service object's spec passes the same validation the API applies."""
    service = _map(data, "service")
    _string(service.get("ID"), "ID")
    try:
        validate_service_spec(service.get("Spec"))
    except InvalidSpec as exc:
        raise Broken(f"Spec.{exc}") from None
    _map(service.get("Endpoint") or {}, "Endpoint")
    _map(service.get("UpdateStatus") or {}, "UpdateStatus")


def check_task(data: Any) -> None:
    """Raise `Broken` unless a Task object has states the orchestrators can order and the fields they key on."""
    task = _map(data, "task")
    _string(task.get("ID"), "ID")
    status = _map(task.get("Status"), "Status")
    if status.get("State") not in _TASK_STATES:
        raise Broken("Status.State must be a task state")
    if task.get("DesiredState") not in _TASK_STATES:
        raise Broken("DesiredState must be a task state")
    for key in ("ServiceID", "NodeID"):
        _string(task.get(key), key, optional=True)
    slot = task.get("Slot")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
        raise Broken("Slot must be an integer")
    _map(task.get("Spec") or {}, "Spec")


_CHECKS: dict[str, Callable[[Any], None]] = {"nodes": check_node, "services": check_service, "tasks": check_task}


@dataclass
class Screen:
    """Checks the objects a round reads, remembering each verdict for the object's version; `report` is called
    once per broken (kind, ID, version) with the reason, for the log (and whatever else the caller wants)."""

    report: Callable[[str, str, str], None]
    _verdicts: dict[tuple[str, str], tuple[int, str | None]] = field(default_factory=dict)

    def passed(self, kind: str, objects: Mapping[str, StoredObject]) -> dict[str, StoredObject]:
        """The objects of `kind` the control loops may read; the others are reported (once) and left out."""
        check = _CHECKS[kind]
        kept = {}
        seen = set()
        for object_id, stored in objects.items():
            key = (kind, object_id)
            seen.add(key)
            verdict = self._verdicts.get(key)
            if verdict is None or verdict[0] != stored.version:
                try:
                    check(stored.data)
                    problem = None
                except Broken as exc:
                    problem = str(exc)
                    self.report(kind, object_id, problem)
                except Exception as exc:  # a check must never be what stops the loop
                    problem = f"unreadable: {type(exc).__name__}: {exc}"
                    self.report(kind, object_id, problem)
                verdict = self._verdicts[key] = (stored.version, problem)
            if verdict[1] is None:
                kept[object_id] = stored
        for key in [key for key in self._verdicts if key[0] == kind and key not in seen]:
            del self._verdicts[key]
        return kept

    def broken(self, kind: str) -> set[str]:
        """IDs of the objects of `kind` left out by the last `passed`."""
        return {object_id for (k, object_id), (_, problem) in self._verdicts.items() if k == kind and problem}

    def problems(self) -> dict[tuple[str, str], str]:
        """(kind, ID) -> why the object is left out, for every object left out by the last `passed` of its kind."""
        return {key: problem for key, (_, problem) in self._verdicts.items() if problem}
