"""Job-mode services (Docker's Mode.ReplicatedJob and Mode.GlobalJob) as SwarmKit runs them: the words the
orchestrator, the API's ServiceStatus and the CLI share.

A job runs its tasks to completion instead of keeping them running. Its tasks' DesiredState is "complete"
(`docker service ps` shows it); a task that completes stays complete and is never restarted, whatever the
restart condition (SwarmKit's restart supervisor treats `any` as `on-failure` for jobs), and one that fails
is replaced per the RestartPolicy. A replicated job runs until TotalCompletions tasks have completed, at most
MaxConcurrent at once, one slot per completion (slots 0 .. TotalCompletions-1, numbered as SwarmKit does). A
global job runs one task to completion on each eligible node, nodes that join later included.

Each run of a job is an *iteration*: the service's JobStatus.JobIteration, which the control API bumps on
every update of the service (a ForceUpdate too), and every task carries the iteration it was made for
(Task.JobIteration). Only the current iteration's tasks count. JobIteration is Docker's Version object,
`{"Index": n}` with Index left out when 0 (Go's omitempty), as `docker service inspect` shows it.

Sources: SwarmKit's manager/orchestrator/jobs/{replicated,global}/reconciler.go, restart/restart.go and
controlapi/service.go (JobStatus, ListServiceStatuses); moby's daemon/cluster/convert/service.go (defaults).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .tasks import TaskState, desired_state, observed_state

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "GLOBAL_JOB",
    "JOB_MODES",
    "REPLICATED_JOB",
    "holds_slot",
    "is_job",
    "job_counts",
    "job_iteration",
    "job_mode",
    "next_job_status",
    "run_state",
    "service_status",
    "started_job_status",
    "task_iteration",
    "version",
]

REPLICATED_JOB = "ReplicatedJob"
GLOBAL_JOB = "GlobalJob"
JOB_MODES = (REPLICATED_JOB, GLOBAL_JOB)

DEFAULT_MAX_CONCURRENT = 1
"""dockerd's default for a ReplicatedJob without MaxConcurrent; TotalCompletions defaults to MaxConcurrent."""


def is_job(spec: dict[str, Any]) -> bool:
    """Whether a ServiceSpec's Mode is ReplicatedJob or GlobalJob."""
    return any(name in (spec.get("Mode") or {}) for name in JOB_MODES)


def job_mode(mode: dict[str, Any]) -> dict[str, Any]:
    """A job's Mode as dockerd stores it: a ReplicatedJob's MaxConcurrent (default 1) and TotalCompletions
    (default MaxConcurrent) filled in; a GlobalJob as it is. Any other mode is returned unchanged."""
    if REPLICATED_JOB not in mode:
        return mode
    given = mode[REPLICATED_JOB] or {}
    concurrent = given.get("MaxConcurrent", DEFAULT_MAX_CONCURRENT)
    total = given.get("TotalCompletions", concurrent)
    return {REPLICATED_JOB: {**given, "MaxConcurrent": concurrent, "TotalCompletions": total}}


def job_counts(spec: dict[str, Any]) -> tuple[int, int]:
    """(MaxConcurrent, TotalCompletions) of a replicated job's spec, with dockerd's defaults."""
    counts = job_mode(spec.get("Mode") or {}).get(REPLICATED_JOB) or {}
    return counts.get("MaxConcurrent", DEFAULT_MAX_CONCURRENT), counts.get("TotalCompletions", DEFAULT_MAX_CONCURRENT)


def version(index: int) -> dict[str, int]:
    """Docker's Version object: Index left out when 0, as Go's omitempty writes it."""
    return {"Index": index} if index else {}


def job_iteration(service: dict[str, Any]) -> int:
    """The iteration a job service is on: its JobStatus.JobIteration.Index (0 before any JobStatus, as SwarmKit
    reads a job created before it had one)."""
    return ((service.get("JobStatus") or {}).get("JobIteration") or {}).get("Index", 0)


def task_iteration(task: dict[str, Any]) -> int | None:
    """The job iteration a task was made for; None for a task of a replicated or global service."""
    if "JobIteration" not in task:
        return None
    return (task["JobIteration"] or {}).get("Index", 0)


def started_job_status(now: str) -> dict[str, Any]:
    """The JobStatus a job service is created with (SwarmKit's CreateService): iteration 0, run at `now`
    (an RFC 3339 timestamp)."""
    return {"JobIteration": version(0), "LastExecution": now}


def next_job_status(service: dict[str, Any], now: str) -> dict[str, Any]:
    """The JobStatus of a job service after an update (SwarmKit's UpdateService, a rollback too): the next
    iteration, run at `now`. Tasks of the earlier iteration no longer count."""
    return {"JobIteration": version(job_iteration(service) + 1), "LastExecution": now}


def run_state(task: dict[str, Any]) -> TaskState:
    """The DesiredState that lets a task run: complete for a job's task, which runs to completion, running for
    any other (what a delayed restart is released to)."""
    return TaskState.COMPLETE if task_iteration(task) is not None else TaskState.RUNNING


def holds_slot(task: dict[str, Any]) -> bool:
    """Whether a task holds its slot (or node): not ended, and not told to stop. As `tasks.is_live`, but a
    job's task, whose DesiredState is complete, is not told to stop either."""
    return observed_state(task) < TaskState.COMPLETE and desired_state(task) <= TaskState.COMPLETE


def service_status(service: dict[str, Any], tasks: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Docker's ServiceStatus (`GET /services?status=true`, the REPLICAS column of `docker service ls`) of a
    service, from `tasks` (other services' are skipped), as SwarmKit's ListServiceStatuses counts:

    - RunningTasks: tasks running and not told to stop; of a job, those of its current iteration.
    - DesiredTasks: Replicas (replicated); MaxConcurrent (replicated job); tasks not told to stop (global);
      tasks of the current iteration yet to complete (global job).
    - CompletedTasks: a job's tasks of its current iteration that completed; 0 for other services.

    `docker service ls` shows a replicated job as "running/desired (completed/TotalCompletions completed)"
    and a global job as "running/desired (completed/desired+completed completed)".
    """
    spec = service.get("Spec") or {}
    mode = spec.get("Mode") or {}
    own = [task for task in tasks if task.get("ServiceID") == service["ID"]]
    if is_job(spec):
        iteration = job_iteration(service)
        own = [task for task in own if task_iteration(task) == iteration]
    running = sum(1 for t in own if observed_state(t) == TaskState.RUNNING and desired_state(t) < TaskState.SHUTDOWN)
    completed = sum(1 for t in own if observed_state(t) == TaskState.COMPLETE) if is_job(spec) else 0
    if REPLICATED_JOB in mode:
        desired = job_counts(spec)[0]
    elif GLOBAL_JOB in mode:
        desired = sum(1 for task in own if holds_slot(task))
    elif "Global" in mode:
        desired = sum(1 for task in own if desired_state(task) <= TaskState.RUNNING)
    else:
        desired = (mode.get("Replicated") or {}).get("Replicas", 1)
    return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}
