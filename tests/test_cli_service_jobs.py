"""Job services from the CLI (`--mode replicated-job|global-job`): the Mode sent, docker's refusals, the wait for
completion with docker's job progress ("job progress", "active tasks", "job complete"), `scale`, and how `ls`,
`ps` and `inspect --pretty` show jobs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_engine import SELF_ID, WORKER_ID, FakeEngine, standard_swarm

from raftswarm.cli.main import main
from raftswarm.cli.service import progress
from raftswarm.cli.service.progress import ConvergenceWatch

JOB_ID = "j0bq7ohwsy2kpjcbnlq1vjc0a"


@pytest.fixture
def engine(tmp_path: Path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        fake.reply("POST", "/services/create", {"ID": JOB_ID}, status=201)
        yield fake


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.005)


def run(engine: FakeEngine, *args: str) -> Result:
    return CliRunner(env={"RAFTSWARM_HOST": None, "DOCKER_HOST": None}).invoke(main, ["-H", engine.url, *args])


def job(mode: dict[str, Any], iteration: int = 0, **fields: Any) -> dict[str, Any]:
    """A job service `batch` as the node answers it: its JobStatus names the iteration its tasks run for."""
    return {
        "ID": JOB_ID,
        "Version": {"Index": 30},
        "Spec": {
            "Name": "batch",
            "Labels": {},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox:1.36"}, "ForceUpdate": 0},
            "Mode": mode,
        },
        "JobStatus": {"JobIteration": {"Index": iteration} if iteration else {}, "LastExecution": "2024-05-01T10:00:00Z"},
        **fields,
    }


REPLICATED_JOB = {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}


def job_task(
    task_id: str, slot: int, state: str, *, node: str = WORKER_ID, iteration: int = 0, err: str = ""
) -> dict[str, Any]:
    return {
        "ID": task_id,
        "ServiceID": JOB_ID,
        "NodeID": node,
        "Slot": slot,
        "CreatedAt": "2024-05-01T10:00:00Z",
        "DesiredState": "complete",
        "JobIteration": {"Index": iteration} if iteration else {},
        "Spec": {"ContainerSpec": {"Image": "busybox:1.36"}, "ForceUpdate": 0},
        "Status": {"State": state, "Err": err, "Timestamp": "2024-05-01T10:00:00Z"},
    }


# -- create ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        (["--mode", "replicated-job"], {"ReplicatedJob": {}}),
        (["--mode", "replicated-job", "--replicas", "5"], {"ReplicatedJob": {"MaxConcurrent": 5, "TotalCompletions": 5}}),
        (
            ["--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2"],
            {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}},
        ),
        (["--mode", "replicated-job", "--max-concurrent", "0"], {"ReplicatedJob": {"MaxConcurrent": 0}}),
        (["--mode", "global-job"], {"GlobalJob": {}}),
    ],
)
def test_create_sends_dockers_job_mode(engine, flags, mode):
    result = run(engine, "service", "create", "-d", "--no-resolve-image", *flags, "busybox:1.36", "true")

    assert result.exit_code == 0, result.output
    (created,) = engine.calls("POST", "/services/create")
    assert created.body["Mode"] == mode
    assert "UpdateConfig" not in created.body and "RollbackConfig" not in created.body


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode"),
        (["--mode", "global", "--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode"),
        (["--mode", "global-job", "--replicas", "2"], "replicas can only be used with replicated or replicated-job mode"),
        (
            ["--mode", "global-job", "--replicas-max-per-node", "1"],
            "replicas-max-per-node can only be used with replicated or replicated-job mode",
        ),
        (["--mode", "replicated-job", "--update-order", "start-first"], "update and rollback configuration is not supported for jobs"),
        (["--mode", "global-job", "--rollback-delay", "1s"], "update and rollback configuration is not supported for jobs"),
        (["--mode", "cron"], "Unknown mode: cron, only replicated and global supported"),
    ],
)
def test_create_refuses_what_docker_refuses_for_jobs_before_any_request(engine, flags, message):
    result = run(engine, "service", "create", "--no-resolve-image", *flags, "busybox:1.36")

    assert result.exit_code == 1, result.output
    assert result.stderr == message + "\n"
    assert engine.mutations() == []


def test_create_of_a_replicated_job_waits_until_its_tasks_complete(engine):
    engine.reply("GET", f"/services/{JOB_ID}", job(REPLICATED_JOB))
    engine.reply(
        "GET",
        "/tasks",
        [],
        [job_task("t1", 0, "pending"), job_task("t2", 1, "pending")],
        [job_task("t1", 0, "complete"), job_task("t2", 1, "running"), job_task("t3", 2, "pending")],
        [job_task("t1", 0, "complete"), job_task("t2", 1, "failed", err="task: non-zero exit (1)"), job_task("t3", 2, "running")],
        [job_task("t1", 0, "complete"), job_task("t4", 1, "complete"), job_task("t3", 2, "complete")],
    )

    result = run(engine, "service", "create", "--no-resolve-image", "--mode", "replicated-job", "--replicas", "3",
                 "--max-concurrent", "2", "busybox:1.36", "true")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        JOB_ID,
        "job progress: 0 out of 3 complete",
        "active tasks: 0 out of 2 tasks",
        "1/3: pending",
        "2/3: pending",
        "active tasks: 2 out of 2 tasks",
        "1/3: complete",
        "2/3: running",
        "3/3: pending",
        "job progress: 1 out of 3 complete",
        "2/3: task: non-zero exit (1)",
        "3/3: running",
        "active tasks: 1 out of 2 tasks",
        "2/3: complete",
        "3/3: complete",
        "job progress: 3 out of 3 complete",
        "active tasks: 0 out of 0 tasks",
        "job complete",
    ]


def test_a_global_job_waits_for_the_nodes_that_had_a_task_when_the_wait_began(engine):
    engine.reply("GET", f"/services/{JOB_ID}", job({"GlobalJob": {}}))
    late_node = "late0000000000000000000000"
    engine.reply(
        "GET",
        "/tasks",
        [],
        [job_task("t1", 0, "running", node=WORKER_ID), job_task("t2", 0, "pending", node=SELF_ID)],
        [
            job_task("t1", 0, "complete", node=WORKER_ID),
            job_task("t2", 0, "complete", node=SELF_ID),
            job_task("t3", 0, "pending", node=late_node),  # a node that joined later: not waited for
        ],
    )

    result = run(engine, "service", "create", "--no-resolve-image", "--mode", "global-job", "busybox:1.36")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        JOB_ID,
        "job progress: waiting for tasks",
        "job progress: 0 out of 2 complete",
        f"{WORKER_ID}: running",
        f"{SELF_ID}: pending",
        f"{WORKER_ID}: complete",
        f"{SELF_ID}: complete",
        "job progress: 2 out of 2 complete",
        "job complete",
    ]


def test_a_jobs_progress_counts_only_the_tasks_of_its_current_iteration():
    service = job({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}, iteration=2)
    watch = ConvergenceWatch("batch")
    earlier = job_task("old", 0, "complete", iteration=1)

    assert not watch.on_tasks(service, [earlier, job_task("new", 0, "running", iteration=2)], {WORKER_ID}, now=0.0)
    assert watch.take_lines() == [
        "job progress: 0 out of 1 complete",
        "active tasks: 0 out of 1 tasks",
        "1/1: running",
        "active tasks: 1 out of 1 tasks",
    ]
    assert watch.on_tasks(service, [earlier, job_task("new", 0, "complete", iteration=2)], {WORKER_ID}, now=1.0)
    assert watch.take_lines()[-1] == "job complete"


def test_job_counts_are_padded_to_the_width_of_the_totals_as_docker_pads_them():
    service = job({"ReplicatedJob": {"MaxConcurrent": 10, "TotalCompletions": 100}})
    watch = ConvergenceWatch("batch")

    watch.on_tasks(service, [job_task(f"t{slot}", slot, "running") for slot in range(3)], {WORKER_ID}, now=0.0)

    assert watch.take_lines() == [
        "job progress:   0 out of 100 complete",
        "active tasks:  0 out of 10 tasks",
        "active tasks:  3 out of 10 tasks",  # more than 20 tasks: no line per task
    ]


def test_waiting_for_a_job_gives_up_with_the_tasks_that_have_not_completed(engine, monkeypatch):
    monkeypatch.setattr(progress, "CONVERGENCE_TIMEOUT", 0.05)
    engine.reply("GET", f"/services/{JOB_ID}", job(REPLICATED_JOB))
    engine.reply("GET", "/tasks", [job_task("t1", 0, "complete"), job_task("t2", 1, "pending", err="no suitable node")])

    result = run(engine, "service", "create", "--no-resolve-image", "--mode", "replicated-job", "busybox:1.36")

    assert result.exit_code == 1
    assert result.stderr == f"service {JOB_ID} did not converge within 0.05s: 2/3: no suitable node\n"


# -- scale / update -------------------------------------------------------------------------------------------


def test_scale_of_a_replicated_job_sets_total_completions_and_waits_for_them(engine):
    service = job(REPLICATED_JOB)
    engine.reply("GET", "/services/batch", service)
    rerun = copy.deepcopy(service)
    rerun["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"] = 1
    rerun["JobStatus"]["JobIteration"] = {"Index": 1}
    engine.reply("POST", f"/services/{JOB_ID}/update", {"Warnings": []})
    engine.reply("GET", "/services/batch", service, rerun)
    engine.reply("GET", "/tasks", [job_task("old", 0, "complete"), job_task("t1", 0, "complete", iteration=1)])

    result = run(engine, "service", "scale", "batch=1")

    assert result.exit_code == 0, result.output
    (update,) = engine.mutations()
    assert update.body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 1}}
    assert result.stdout.splitlines() == [
        "batch scaled to 1",
        "job progress: 0 out of 1 complete",
        "active tasks: 0 out of 1 tasks",
        "1/1: complete",
        "job progress: 1 out of 1 complete",
        "active tasks: 0 out of 0 tasks",
        "job complete",
    ]


def test_scale_refuses_a_global_job(engine):
    engine.reply("GET", "/services/batch", job({"GlobalJob": {}}))

    result = run(engine, "service", "scale", "-d", "batch=2")

    assert result.exit_code == 1
    assert result.stderr == "batch: scale can only be used with replicated or replicated-job mode\n"
    assert engine.mutations() == []


def test_update_max_concurrent_changes_a_replicated_job_where_docker_would_ignore_it(engine):
    engine.reply("GET", "/services/batch", job(REPLICATED_JOB))
    engine.reply("POST", f"/services/{JOB_ID}/update", {"Warnings": []})

    result = run(engine, "service", "update", "-d", "--max-concurrent", "3", "batch")

    assert result.exit_code == 0, result.output
    (update,) = engine.mutations()
    assert update.body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}}


@pytest.mark.parametrize("mode", [{"GlobalJob": {}}, {"Replicated": {"Replicas": 2}}])
def test_update_max_concurrent_of_anything_but_a_replicated_job_is_refused(engine, mode):
    engine.reply("GET", "/services/batch", job(mode))

    result = run(engine, "service", "update", "-d", "--max-concurrent", "3", "batch")

    assert result.exit_code == 1
    assert result.stderr == "max-concurrent can only be used with replicated-job mode\n"
    assert engine.mutations() == []


def test_update_replicas_of_a_job_is_refused_as_docker_refuses_it(engine):
    engine.reply("GET", "/services/batch", job(REPLICATED_JOB))

    result = run(engine, "service", "update", "-d", "--replicas", "3", "batch")

    assert result.stderr == "replicas can only be used with replicated mode\n"
    assert engine.mutations() == []


# -- ls / ps / inspect ------------------------------------------------------------------------------------------


def test_service_ls_shows_a_jobs_mode_and_completions(engine):
    replicated = job(REPLICATED_JOB, ServiceStatus={"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 1})
    global_job = job({"GlobalJob": {}}, ServiceStatus={"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 1})
    global_job["ID"], global_job["Spec"]["Name"] = "g10bq7ohwsy2kpjcbnlq1vjc0", "sweep"
    engine.reply("GET", "/services", [replicated, global_job])

    result = run(engine, "service", "ls", "--format", "{{.Name}} {{.Mode}} {{.Replicas}}")

    assert result.stdout.splitlines() == [
        "batch replicated job 1/2 (1/3 completed)",
        "sweep global job 1/2 (1/3 completed)",
    ]


def test_service_ls_leaves_a_jobs_counts_at_zero_when_the_node_sends_no_status_as_docker_does(engine):
    engine.reply("GET", "/services", [job(REPLICATED_JOB)])
    engine.reply("GET", "/tasks", [job_task("t1", 0, "complete")])

    result = run(engine, "service", "ls", "--format", "{{.Replicas}}")

    assert result.stdout == "0/0 (0/3 completed)\n"
    assert engine.calls("GET", "/tasks") == []


def test_service_ps_shows_job_tasks_desired_complete_and_slot_0_by_node(engine):
    engine.reply("GET", "/services", [job(REPLICATED_JOB)])
    engine.reply("GET", f"/services/{JOB_ID}", job(REPLICATED_JOB))
    engine.reply("GET", "/tasks", [job_task("t1" + "x" * 23, 0, "complete"), job_task("t2" + "x" * 23, 1, "running")])

    result = run(engine, "service", "ps", "--format", "{{.Name}} {{.DesiredState}} {{.CurrentState}}", "batch")

    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["batch.1", "Complete"], [f"batch.{WORKER_ID}", "Complete"]]


def test_inspect_pretty_shows_no_mode_name_for_a_job_as_docker_does(engine):
    engine.reply("GET", "/services/batch", job(REPLICATED_JOB))

    result = run(engine, "service", "inspect", "--pretty", "batch")

    assert "\nService Mode:\nPlacement:\n" in result.stdout
