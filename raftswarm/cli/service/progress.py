"""Waiting for a service to converge after `create`, `update`, `scale`, `rollback` or `stack deploy`, with
docker's progress lines in their non-terminal form (one line per change).

`ConvergenceWatch` is docker/cli's ServiceProgress without I/O; `wait_for_service` polls the node and feeds it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import click

from ...api.client import ApiClient
from ...objects.defaults import effective_update_config
from ...objects.jobs import REPLICATED_JOB, is_job, job_counts, job_iteration, task_iteration
from ...objects.tasks import TaskState, desired_state, is_terminal, observed_state
from .. import output
from ..errors import CommandError
from ..nodelookup import active_node_ids
from ..shapes import replicated_mode, spec_of, status_of, task_state

# docker/cli's progress polls every 200 ms and counts a service converged once its tasks have stayed running
# for UpdateConfig.Monitor.
POLL_INTERVAL = 0.2
# docker waits until Ctrl-C; a script should not hang forever on a service whose tasks cannot start.
CONVERGENCE_TIMEOUT = 300.0
# docker draws one progress line per task only up to this many tasks.
MAX_PROGRESS_BARS = 20
# docker cuts task errors in progress lines to this many characters.
PROGRESS_ERROR_LENGTH = 75

# The states docker's progress knows (its numberedStates; raftswarm's nodes never report docker's "allocated"):
# a task in any other state (remove, orphaned) is left out of the progress.
_PROGRESS_STATES = {state.api for state in TaskState if state <= TaskState.REJECTED}


def _in_progress(task: dict[str, Any]) -> bool:
    """Whether docker's progress counts the task at all: it knows both its desired and its observed state."""
    return task.get("DesiredState") in _PROGRESS_STATES and task_state(task) in _PROGRESS_STATES


def _running(task: dict[str, Any]) -> bool:
    """A task docker's progress counts as running: running, and not told to stop."""
    return not is_terminal(desired_state(task)) and observed_state(task) == TaskState.RUNNING


def _truncate_error(message: str) -> str:
    message = message.replace("\n", " ")
    if len(message) > PROGRESS_ERROR_LENGTH:
        message = message[: PROGRESS_ERROR_LENGTH - 1] + "…"
    return message


def _preferred(existing: dict[str, Any] | None, task: dict[str, Any]) -> bool:
    """Whether `task` rather than `existing` stands for its slot (or node): the lower desired state wins, then
    the lower observed state (two tasks of a slot meet during restarts and start-first updates)."""
    if existing is None:
        return True
    if desired_state(existing) != desired_state(task):
        return desired_state(task) < desired_state(existing)
    return observed_state(task) < observed_state(existing)


def _monitor_ns(service: dict[str, Any]) -> int:
    """How long tasks must stay running before the service counts as converged: UpdateConfig.Monitor."""
    return effective_update_config(spec_of(service).get("UpdateConfig"))["Monitor"]


class ConvergenceWatch:
    """docker/cli's ServiceProgress as a state machine without I/O. Each poll feeds it the service
    (`on_service`), then, unless that said the wait is over, the service's up-to-date tasks and the nodes that
    are not down (`on_tasks`); `take_lines` gives the progress lines to print, each only when its text changed.

    Which tasks are up to date (made from the service's current spec) is the node's to say: `wait_for_service`
    lists them with docker's `_up-to-date` filter, and the node compares each task with the spec it stores.
    The service has converged when every slot (replicated) or every node with a task (global) has a running
    up-to-date task; docker then waits UpdateConfig.Monitor more to see them stay up.
    A job is done when its current iteration's tasks have completed: TotalCompletions of them (replicated job),
    or one on each node that had one at the start (global job); `on_tasks` says so, and "job complete".
    """

    def __init__(self, ref: str, stale_status: dict[str, Any] | None = None) -> None:
        self.ref = ref
        # The UpdateStatus the service had before this command changed it: it says nothing about this change.
        self.stale_status = stale_status
        self.converged = False
        self.converged_at: float | None = None
        self.rollback = False
        self.final_line: str | None = None
        self.problems: list[str] = []  # "1/3: no suitable node ...", for the timeout message
        self._initialized = False
        self._done = False
        self._slots: dict[int, int] = {}  # task slot -> progress line number 1..n
        self._job_nodes: set[str] = set()  # a global job's nodes when the wait began
        self._lines: list[str] = []
        self._shown: dict[str, str] = {}

    def take_lines(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines

    def _emit(self, progress_id: str, text: str) -> None:
        line = f"{progress_id}: {text}"
        if self._shown.get(progress_id) != line:
            self._shown[progress_id] = line
            self._lines.append(line)

    def on_service(self, service: dict[str, Any], now: float) -> bool:
        """Read the service's UpdateStatus; True when the wait is over. Raises CommandError if the update or
        rollback paused."""
        status = service.get("UpdateStatus") or {}
        state = status.get("State") if status != (self.stale_status or {}) else None
        message = status.get("Message", "")
        if state == "updating":
            self.rollback = False
        elif state == "completed" and not self.converged:
            return True
        elif state == "paused":
            raise CommandError(f"service update paused: {message}")
        elif state == "rollback_started":
            if not self.rollback and message:
                self._emit("rollback", message)
            self.rollback = True
        elif state == "rollback_paused":
            raise CommandError(f"service rollback paused: {message}")
        elif state == "rollback_completed":
            if not self.converged:
                self.final_line = f"rollback: {message}"
            self.rollback = True
        if self.converged and self.converged_at is not None and now - self.converged_at >= _monitor_ns(service) / 1e9:
            self._emit("verify", f"Service {self.ref} converged")
            if self.final_line:
                self._lines.append(self.final_line)
            return True
        return False

    def on_tasks(
        self, service: dict[str, Any], tasks: list[dict[str, Any]], active_nodes: set[str], now: float
    ) -> bool:
        """Read the service's up-to-date tasks (as the node lists them for `_up-to-date`); True when the wait
        is over (a job has completed)."""
        spec = spec_of(service)
        if is_job(spec):
            return self._job(service, tasks, active_nodes)
        replicated = replicated_mode(spec)
        if replicated is not None:
            self.converged = self._replicated(replicated.get("Replicas", 1), tasks, active_nodes)
        elif (spec.get("Mode") or {}).get("Global") is not None:
            self.converged = self._global(tasks, active_nodes)
        else:
            raise CommandError("unrecognized service mode")
        if self.converged:
            if self.converged_at is None:
                self.converged_at = now
            wait = _monitor_ns(service) / 1e9 - (now - self.converged_at)
            if wait >= 0:
                seconds = max(1, math.ceil(wait))  # docker: whole seconds left, rounded up
                self._emit("verify", f"Waiting {seconds} seconds to verify that tasks are stable...")
        else:
            if self.converged_at is not None:
                self._emit("verify", "Detected task failure")
            self.converged_at = None
        return False

    def _overall(self, running: int, total: int) -> None:
        text = f"{running} out of {total} tasks"
        self._emit("overall progress", f"rolling back update: {text}" if self.rollback else text)

    def _task(self, progress_id: str, task: dict[str, Any], shown: bool) -> None:
        """One task's line: its error if it has one, else its state while it is on its way to running."""
        status = status_of(task)
        text = _truncate_error(status["Err"]) if status.get("Err") else status["State"]
        if not (task["DesiredState"] == TaskState.RUNNING.api and status["State"] == TaskState.RUNNING.api):
            self.problems.append(f"{progress_id}: {text}")
        finished = is_terminal(desired_state(task)) or is_terminal(observed_state(task))
        if shown and (status.get("Err") or not finished):
            self._emit(progress_id, text)

    def _replicated(self, replicas: int, tasks: list[dict[str, Any]], active_nodes: set[str]) -> bool:
        if not self._initialized:
            self._overall(0, replicas)
            self._initialized = True
        by_slot: dict[int, dict[str, Any]] = {}
        for task in tasks:
            if not _in_progress(task):
                continue
            if task.get("NodeID") and task["NodeID"] not in active_nodes:
                continue
            slot = task.get("Slot") or 0
            if _preferred(by_slot.get(slot), task):
                by_slot[slot] = task
        if self._done and any(observed_state(t) != TaskState.RUNNING for t in by_slot.values()):
            self._done = False
        running = 0
        self.problems = []
        for slot, task in sorted(by_slot.items()):
            line_number = self._slots.setdefault(slot, len(self._slots) + 1)
            if _running(task):
                running += 1
            shown = not self._done and replicas <= MAX_PROGRESS_BARS and line_number <= replicas
            self._task(f"{line_number}/{replicas}", task, shown)
        if not self._done:
            self._overall(running, replicas)
            self._done = running == replicas
        return running == replicas

    def _global(self, tasks: list[dict[str, Any]], active_nodes: set[str]) -> bool:
        by_node: dict[str, dict[str, Any]] = {}
        for task in tasks:
            if not _in_progress(task):
                continue
            node_id = task.get("NodeID", "")
            if _preferred(by_node.get(node_id), task):
                by_node[node_id] = task
        nodes = len(by_node)
        if not self._initialized:
            if nodes == 0:
                self._emit("overall progress", "waiting for new tasks")
                self.problems = ["no tasks yet"]
                return False
            self._overall(0, nodes)
            self._initialized = True
        if self._done and any(observed_state(t) != TaskState.RUNNING for t in by_node.values()):
            self._done = False
        running = 0
        self.problems = []
        for node_id, task in sorted(by_node.items()):
            if node_id not in active_nodes:
                continue
            if _running(task):
                running += 1
            self._task(node_id[: output.SHORT_ID_LENGTH], task, not self._done and nodes <= MAX_PROGRESS_BARS)
        if not self._done:
            self._overall(running, nodes)
            self._done = running == nodes
        return running == nodes

    # -- jobs: docker's replicatedJobProgressUpdater and globalJobProgressUpdater

    def _job(self, service: dict[str, Any], tasks: list[dict[str, Any]], active_nodes: set[str]) -> bool:
        iteration = job_iteration(service)
        current = [t for t in tasks if task_iteration(t) == iteration and _in_progress(t)]
        spec = spec_of(service)
        if REPLICATED_JOB in (spec.get("Mode") or {}):
            done = self._replicated_job(*job_counts(spec), current)
        else:
            done = self._global_job(current, active_nodes)
        if done:
            self._lines.append("job complete")
        return done

    def _job_task(self, progress_id: str, task: dict[str, Any]) -> None:
        status = status_of(task)
        text = _truncate_error(status["Err"]) if status.get("Err") else status.get("State", "")
        if observed_state(task) != TaskState.COMPLETE:
            self.problems.append(f"{progress_id}: {text}")
        self._emit(progress_id, text)

    def _replicated_job(self, concurrent: int, total: int, tasks: list[dict[str, Any]]) -> bool:
        """TotalCompletions tasks to complete, at most MaxConcurrent at once: "job progress" counts the
        completed ones, "active tasks" those under way out of as many as may run now."""
        if not self._initialized:
            self._replicated_job_overall(0, 0, concurrent, total)
            self._initialized = True
        by_slot: dict[int, dict[str, Any]] = {}
        for task in tasks:
            slot = task.get("Slot") or 0
            if slot not in by_slot or observed_state(task) < observed_state(by_slot[slot]):
                by_slot[slot] = task
        self.problems = []
        for slot, task in sorted(by_slot.items()):
            if total <= MAX_PROGRESS_BARS:
                self._job_task(f"{slot + 1}/{total}", task)
        active = sum(1 for t in by_slot.values() if observed_state(t) < TaskState.COMPLETE)
        completed = sum(1 for t in by_slot.values() if observed_state(t) == TaskState.COMPLETE)
        self._replicated_job_overall(active, completed, concurrent, total)
        return completed == total

    def _replicated_job_overall(self, active: int, completed: int, concurrent: int, total: int) -> None:
        # docker pads the counts to the width of the total, so that its progress bars do not move
        self._emit("job progress", f"{completed:>{len(str(total))}} out of {total} complete")
        width = len(str(concurrent))
        self._emit("active tasks", f"{active:>{width}} out of {min(total - completed, concurrent):>{width}} tasks")

    def _global_job(self, tasks: list[dict[str, Any]], active_nodes: set[str]) -> bool:
        """One task to complete on each node that had one when the wait began (nodes that join later run the job
        too, but are not waited for)."""
        if not self._initialized:
            if not tasks and active_nodes:
                self._emit("job progress", "waiting for tasks")
                self.problems = ["no tasks yet"]
                return False
            self._job_nodes = {t.get("NodeID", "") for t in tasks}
            self._global_job_overall(0)
            self._initialized = True
        by_node: dict[str, dict[str, Any]] = {}
        for task in tasks:
            node_id = task.get("NodeID", "")
            if node_id in self._job_nodes and (
                node_id not in by_node or observed_state(task) < observed_state(by_node[node_id])
            ):
                by_node[node_id] = task
        self.problems = []
        for node_id, task in sorted(by_node.items()):
            if len(self._job_nodes) <= MAX_PROGRESS_BARS:
                self._job_task(node_id, task)
        complete = sum(1 for t in by_node.values() if observed_state(t) == TaskState.COMPLETE)
        self._global_job_overall(complete)
        return complete == len(self._job_nodes)

    def _global_job_overall(self, complete: int) -> None:
        total = len(self._job_nodes)
        self._emit("job progress", f"{complete:>{len(str(total))}} out of {total} complete")


async def wait_for_service(api: ApiClient, ref: str, quiet: bool, stale_status: dict[str, Any] | None = None) -> None:
    """docker's WaitOnService: poll the service and its tasks until it converges, printing progress unless
    `quiet`. Gives up after CONVERGENCE_TIMEOUT with what keeps the tasks from running."""
    watch = ConvergenceWatch(ref, stale_status)
    deadline = time.monotonic() + CONVERGENCE_TIMEOUT

    def show(lines: list[str]) -> None:
        if not quiet:
            for line in lines:
                click.echo(line)

    def background() -> None:
        show(["Operation continuing in background.", f"Use `raftswarm service ps {ref}` to check progress."])

    try:
        while True:
            service_now = await api.service_inspect(ref)
            try:
                finished = watch.on_service(service_now, time.monotonic())
                if not finished:
                    tasks = await api.task_list({"service": [service_now["ID"]], "_up-to-date": ["true"]})
                    finished = watch.on_tasks(service_now, tasks, await active_node_ids(api), time.monotonic())
            finally:
                show(watch.take_lines())
            if finished:
                return
            if time.monotonic() >= deadline:
                background()
                reasons = f": {'; '.join(watch.problems)}" if watch.problems else ""
                raise CommandError(f"service {ref} did not converge within {CONVERGENCE_TIMEOUT:g}s{reasons}")
            await asyncio.sleep(POLL_INTERVAL)
    except asyncio.CancelledError:  # Ctrl-C: the node carries on; say so, as docker does
        if not watch.converged:
            background()
        raise
