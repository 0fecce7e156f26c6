"""Task states in SwarmKit's order, and what a task's states say about it."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class TaskState(IntEnum):
    """A task's observed state, in SwarmKit's order. States only move forward; COMPLETE and after are
    terminal. The Docker API spells each as the lower-case name (`TaskState.RUNNING.api == "running"`)."""

    NEW = 0
    PENDING = 1
    ASSIGNED = 2
    ACCEPTED = 3
    PREPARING = 4
    READY = 5
    STARTING = 6
    RUNNING = 7
    COMPLETE = 8
    SHUTDOWN = 9
    FAILED = 10
    REJECTED = 11
    REMOVE = 12
    ORPHANED = 13

    @property
    def api(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, state: TaskState | str) -> TaskState:
        """The state named by a Docker API string such as "running" (or the state itself)."""
        if isinstance(state, TaskState):
            return state
        found = _BY_API.get(state)  # the API's own spelling, in one look: a reconciler pass asks 10,000s of times
        if found is not None:
            return found
        try:
            return cls[state.upper()]
        except KeyError:
            raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(s.api for s in cls)}") from None


_BY_API: dict[str, TaskState] = {state.api: state for state in TaskState}


def can_move(from_state: TaskState | str, to_state: TaskState | str) -> bool:
    """Whether a task may go from `from_state` to `to_state`: only strictly forward."""
    return TaskState.of(to_state) > TaskState.of(from_state)


def is_terminal(state: TaskState | str) -> bool:
    """Whether a task in `state` has finished for good (COMPLETE or any later state)."""
    if state.__class__ is TaskState:
        return state >= _COMPLETE
    return TaskState.of(state) >= _COMPLETE


# The three below run several times per task in every reconciler round (10,000s of calls): the API's own
# spelling is found in one dictionary look, anything else goes the long way through `TaskState.of`.
_COMPLETE = TaskState.COMPLETE
_of_api = _BY_API.get


def observed_state(task: dict[str, Any]) -> TaskState:
    """The task's Status.State (new when it has none)."""
    status = task.get("Status")
    state = status.get("State") if status else None
    if state.__class__ is str and (found := _of_api(state)) is not None:
        return found
    return TaskState.of(state or "new")


def desired_state(task: dict[str, Any]) -> TaskState:
    """The task's DesiredState (running when it has none)."""
    state = task.get("DesiredState")
    if state.__class__ is str and (found := _of_api(state)) is not None:
        return found
    return TaskState.of(state or "running")


def is_live(task: dict[str, Any]) -> bool:
    """Whether the task holds its slot (or node): not ended, and not told to stop."""
    return not is_terminal(observed_state(task)) and desired_state(task) <= TaskState.RUNNING


def is_current(task: dict[str, Any], template: dict[str, Any]) -> bool:
    """Whether `task` was made from `template`, the service's current TaskTemplate (compared whole, so a
    bumped ForceUpdate makes every older task dirty)."""
    return (task.get("Spec") or {}) == (template or {})
