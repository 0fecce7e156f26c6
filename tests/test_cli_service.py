"""`raftswarm service ...` and `raftswarm secret ...` against a fake node: each command sends the bodies docker's
sends (only what the flags set, plus what docker always sends), prints what docker prints, and fails with
docker's messages: one line on stderr and exit status 1, or a usage error (exit status 2) before any request."""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_engine import SELF_ID, WORKER_ID, FakeEngine, standard_swarm

from raftswarm.api.stdcopy import encode_frame
from raftswarm.cli.main import main
from raftswarm.cli.options import parse_cpus, ram_in_bytes
from raftswarm.cli.output import go_duration
from raftswarm.cli.service import progress
from raftswarm.cli.service.flags import parse_network, parse_port, parse_secret
from raftswarm.cli.service.progress import ConvergenceWatch

CLEAN_ENV = {"RAFTSWARM_HOST": None, "DOCKER_HOST": None}

SERVICE_ID = "kzqr6fwm5rh7fzjxvfhqxn1zv"
GLOBAL_ID = "a8dbnwg2lt0rymctj7e1gt3qr"
DB_PASS_ID = "3hv39ehbbb4hdozo7spod9ftn"
API_KEY_ID = "mtc3i44r1awdoziy2iceg73z8"
NOT_FOUND = "service nope not found"


@pytest.fixture
def engine(tmp_path: Path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        yield fake


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.005)


def run(engine: FakeEngine, *args: str, input: str | bytes | None = None) -> Result:
    return CliRunner(env=CLEAN_ENV).invoke(main, ["-H", engine.url, *args], input=input)


def assert_fails(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr == message + "\n"


def assert_usage_error(engine: FakeEngine, result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert engine.requests == []


def secret_ref(name: str, secret_id: str, target: str | None = None, mode: int = 0o444) -> dict[str, Any]:
    return {
        "File": {"Name": target or name, "UID": "0", "GID": "0", "Mode": mode},
        "SecretID": secret_id,
        "SecretName": name,
    }


def secret_object(name: str, secret_id: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "ID": secret_id,
        "Version": {"Index": 11},
        "CreatedAt": "2024-05-01T10:00:00.123456789Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": {"Name": name, "Labels": labels or {}},
    }


def template(image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "ContainerSpec": {
            "Image": image,
            "Env": ["A=1", "B=2"],
            "Secrets": [secret_ref("db_pass", DB_PASS_ID)],
        },
        "Resources": {"Limits": {}, "Reservations": {}},
        "Placement": {"Constraints": ["node.role==worker"]},
        "ForceUpdate": 0,
    }


def web_service(**fields: Any) -> dict[str, Any]:
    """A replicated service `web` (2 replicas) as the node answers GET /services/web."""
    service = {
        "ID": SERVICE_ID,
        "Version": {"Index": 17},
        "CreatedAt": "2024-05-01T10:00:00Z",
        "UpdatedAt": "2024-05-01T10:05:00Z",
        "Spec": {
            "Name": "web",
            "Labels": {"tier": "front"},
            "TaskTemplate": template(),
            "Mode": {"Replicated": {"Replicas": 2}},
            "EndpointSpec": {"Mode": "vip"},
        },
        "Endpoint": {"Spec": {"Mode": "vip"}},
    }
    service.update(fields)
    return service


def global_service() -> dict[str, Any]:
    service = web_service(ID=GLOBAL_ID)
    service["Spec"] = {**service["Spec"], "Name": "agent", "Mode": {"Global": {}}}
    return service


def task(
    task_id: str,
    slot: int,
    state: str,
    err: str = "",
    image: str = "nginx:1.27",
    desired: str = "running",
) -> dict[str, Any]:
    return {
        "ID": task_id,
        "ServiceID": SERVICE_ID,
        "NodeID": WORKER_ID,
        "Slot": slot,
        "CreatedAt": "2024-05-01T10:00:00Z",
        "DesiredState": desired,
        "Spec": template(image),
        "Status": {"State": state, "Err": err, "Timestamp": "2024-05-01T10:00:00Z"},
    }


# -- service create -----------------------------------------------------------------------------------------


def test_create_sends_the_service_spec_docker_sends_for_the_flags_given(engine):
    engine.reply("GET", "/secrets", [secret_object("db_pass", DB_PASS_ID), secret_object("api_key", API_KEY_ID)])
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID, "Warnings": []}, status=201)

    result = run(
        engine,
        "service",
        "create",
        "--detach",
        "--name", "web",
        "--replicas", "3",
        "--secret", "source=db_pass,target=db,mode=0400",
        "--secret", "api_key",
        "--constraint", "node.role==worker",
        "--constraint", "node.labels.zone==a",
        "--placement-pref", "spread=node.labels.zone",
        "--replicas-max-per-node", "2",
        "--reserve-memory", "64MiB",
        "--reserve-cpu", "0.5",
        "--limit-memory", "1g",
        "--limit-pids", "100",
        "--update-delay", "10s",
        "--update-parallelism", "2",
        "--rollback-order", "start-first",
        "--restart-condition", "on-failure",
        "--restart-window", "2m",
        "--stop-grace-period", "1m30s",
        "-e", "A=1", "-e", "B=2", "-e", "A=3",
        "-l", "tier=front",
        "--container-label", "c=1",
        "-p", "8080:80",
        "-p", "published=53,target=53,protocol=udp,mode=host",
        "--network", "name=backend,alias=web",
        "--network", "frontend",
        "-w", "/srv",
        "-u", "www",
        "--hostname", "web-host",
        "--init",
        "--endpoint-mode", "dnsrr",
        "nginx:1.27",
        "nginx", "-g", "daemon off;",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{SERVICE_ID}\n"
    (lookup,) = engine.calls("GET", "/secrets")
    assert lookup.filters == {"name": ["db_pass", "api_key"]}
    (created,) = engine.calls("POST", "/services/create")
    assert created.body == {
        "Name": "web",
        "Labels": {"tier": "front"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:1.27",
                "Args": ["nginx", "-g", "daemon off;"],
                "Env": ["B=2", "A=3"],
                "Labels": {"c": "1"},
                "Hostname": "web-host",
                "Init": True,
                "Dir": "/srv",
                "User": "www",
                "StopGracePeriod": 90 * 10**9,
                "Secrets": [secret_ref("db_pass", DB_PASS_ID, "db", 0o400), secret_ref("api_key", API_KEY_ID)],
            },
            "Resources": {
                "Limits": {"MemoryBytes": 1024**3, "Pids": 100},
                "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024**2},
            },
            "Placement": {
                "Constraints": ["node.role==worker", "node.labels.zone==a"],
                "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                "MaxReplicas": 2,
            },
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5 * 10**9, "MaxAttempts": 0, "Window": 120 * 10**9},
            "Networks": [{"Target": "backend", "Aliases": ["web"]}, {"Target": "frontend"}],
            "ForceUpdate": 0,
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "UpdateConfig": {
            "Parallelism": 2,
            "Delay": 10 * 10**9,
            "FailureAction": "pause",
            "Monitor": 5 * 10**9,
            "MaxFailureRatio": 0,
            "Order": "stop-first",
        },
        "RollbackConfig": {
            "Parallelism": 1,
            "FailureAction": "pause",
            "Monitor": 5 * 10**9,
            "MaxFailureRatio": 0,
            "Order": "start-first",
        },
        "EndpointSpec": {
            "Mode": "dnsrr",
            "Ports": [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "host"},
            ],
        },
    }


def test_create_with_only_an_image_sends_what_docker_always_sends(engine):
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)

    run(engine, "service", "create", "-d", "nginx")

    (created,) = engine.calls("POST", "/services/create")
    assert created.body == {
        "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "nginx"},
            "Resources": {"Limits": {}, "Reservations": {}},
            "Placement": {},
            "ForceUpdate": 0,
        },
        "Mode": {"Replicated": {}},
        "EndpointSpec": {"Mode": "vip"},
    }
    assert engine.calls("GET", "/secrets") == []


DIGEST = "sha256:" + "ab" * 32


def test_create_pins_the_image_to_the_digest_the_registry_has_as_docker_does(engine):
    engine.reply("GET", "/distribution/busybox/json", {"Descriptor": {"digest": DIGEST}, "Platforms": []})
    engine.reply("POST", "/services/create", {"ID": GLOBAL_ID}, status=201)

    run(engine, "service", "create", "-d", "--name", "pinned", "busybox", "sleep", "1")

    (created,) = engine.calls("POST", "/services/create")
    assert created.body["TaskTemplate"]["ContainerSpec"]["Image"] == f"busybox:latest@{DIGEST}"


def test_an_image_the_registry_cannot_tell_about_stays_as_given_with_dockers_warning(engine):
    engine.reply("POST", "/services/create", {"ID": GLOBAL_ID}, status=201)

    result = run(engine, "service", "create", "-d", "--name", "unpinned", "myorg/app:1", "serve")

    (created,) = engine.calls("POST", "/services/create")
    assert created.body["TaskTemplate"]["ContainerSpec"]["Image"] == "myorg/app:1"
    assert result.stderr.startswith("image myorg/app:1 could not be accessed on a registry to record\nits digest.")


def test_update_pins_only_a_new_image_and_no_resolve_image_asks_nothing(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.reply("GET", "/distribution/nginx:1.28/json", {"Descriptor": {"digest": DIGEST}, "Platforms": []})
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    run(engine, "service", "update", "-d", "--image", "nginx:1.28", "web")
    run(engine, "service", "update", "-d", "--no-resolve-image", "--image", "nginx:1.29", "web")
    run(engine, "service", "update", "-d", "--replicas", "4", "web")

    images = [call.body["TaskTemplate"]["ContainerSpec"]["Image"] for call in engine.calls("POST", f"/services/{SERVICE_ID}/update")]
    assert images[:2] == [f"nginx:1.28@{DIGEST}", "nginx:1.29"]
    assert len(engine.calls("GET", "/distribution/nginx:1.28/json")) == 1
    assert not [c for c in engine.requests if c.path.startswith("/distribution/") and "1.28" not in c.path]


def test_create_global_and_options_after_the_image_belong_to_the_command(engine):
    engine.reply("POST", "/services/create", {"ID": GLOBAL_ID, "Warnings": ["image is not pinned"]}, status=201)

    result = run(
        engine, "service", "create", "-d", "--no-resolve-image", "--mode", "global", "--name", "agent", "alpine", "ls", "-l"
    )

    (created,) = engine.calls("POST", "/services/create")
    assert created.body["Mode"] == {"Global": {}}
    assert created.body["TaskTemplate"]["ContainerSpec"] == {"Image": "alpine", "Args": ["ls", "-l"]}
    assert result.stdout == f"{GLOBAL_ID}\n"
    assert result.stderr == "image is not pinned\n"  # the node's warnings, on stderr as docker prints them


def test_create_with_a_missing_secret_says_so_and_creates_nothing(engine):
    engine.reply("GET", "/secrets", [secret_object("db_pass", DB_PASS_ID)])

    result = run(engine, "service", "create", "-d", "--secret", "db_pass", "--secret", "source=nope", "nginx")

    assert_fails(result, "secret not found: nope")
    assert engine.mutations() == []


def test_create_refuses_two_secrets_with_one_target(engine):
    result = run(
        engine, "service", "create", "-d", "--secret", "source=a,target=x", "--secret", "source=b,target=x", "nginx"
    )

    assert_fails(result, "duplicate secret target for b not allowed")
    assert engine.requests == []


def test_create_global_with_replicas_is_refused_before_any_request(engine):
    result = run(engine, "service", "create", "--mode", "global", "--replicas", "2", "nginx")

    assert_fails(result, "replicas can only be used with replicated or replicated-job mode")
    assert engine.requests == []


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--update-delay", "10", 'invalid duration "10"'),
        ("--restart-delay", "5 seconds", 'invalid duration "5 seconds"'),
        ("--reserve-memory", "64x", "invalid suffix: 'x'"),
        ("--limit-cpu", "lots", "failed to parse lots as a rational number"),
        ("--limit-cpu", "0.0000000001", "value is too precise"),
        ("--publish", "80:http", "invalid containerPort: http"),
        ("--publish", "10.0.0.1:80:80", "hostip is not supported"),
        ("--publish", "published=80", 'missing mandatory field "target"'),
        ("--secret", "source=,target=x", "source is required"),
        ("--secret", "source=s,mode=rwx", "invalid mode specified"),
        ("--restart-condition", "sometimes", "'sometimes' is not one of"),
        ("--placement-pref", "pack=node.id", "unsupported placement preference pack (only spread is supported)"),
        ("--replicas", "-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("--label", "=x", "invalid label '=x': empty name"),
    ],
)
def test_create_with_a_bad_flag_value_is_a_usage_error_before_any_request(engine, flag, value, message):
    assert_usage_error(engine, run(engine, "service", "create", flag, value, "nginx"), message)


def test_create_waits_for_the_tasks_and_explains_what_holds_them(engine, fast_polls):
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)
    service = web_service()
    service["Spec"]["UpdateConfig"] = {"Parallelism": 1, "Monitor": 1_000_000}  # 1 ms of watching, for the test
    engine.reply("GET", f"/services/{SERVICE_ID}", service)
    unschedulable = "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    engine.reply(
        "GET",
        "/tasks",
        [task("t1", 1, "pending", err=unschedulable), task("t2", 2, "pending")],
        [task("t1", 1, "running"), task("t2", 2, "starting")],
        [task("t1", 1, "running"), task("t2", 2, "running")],
    )

    result = run(engine, "service", "create", "--name", "web", "nginx:1.27")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        SERVICE_ID,
        "overall progress: 0 out of 2 tasks",
        f"1/2: {unschedulable}",
        "2/2: pending",
        "1/2: running",
        "2/2: starting",
        "overall progress: 1 out of 2 tasks",
        "2/2: running",
        "overall progress: 2 out of 2 tasks",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
        f"verify: Service {SERVICE_ID} converged",
    ]
    up_to_date = {"service": [SERVICE_ID], "_up-to-date": ["true"]}  # the node tells which tasks are current
    assert {json.dumps(r.filters) for r in engine.calls("GET", "/tasks")} == {json.dumps(up_to_date)}


def test_the_wait_counts_the_tasks_the_node_calls_up_to_date_even_if_their_spec_differs(
    engine, fast_polls, monkeypatch
):
    """SwarmKit keeps a task through a change of placement constraints its node still meets: the node lists it
    as up to date though its Spec has the old constraints. The wait counts what the node says, as docker's does,
    rather than comparing specs itself (which would wait for a replacement that never comes)."""
    monkeypatch.setattr(progress, "CONVERGENCE_TIMEOUT", 2.0)
    service = web_service()
    service["Spec"]["UpdateConfig"] = {"Monitor": 1_000_000}
    service["Spec"]["TaskTemplate"]["Placement"] = {"Constraints": ["node.role==worker", "node.platform.os==linux"]}
    engine.reply("GET", "/services/web", service)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    engine.reply("GET", "/tasks", [task("t1", 1, "running"), task("t2", 2, "running")])

    result = run(engine, "service", "update", "--constraint-add", "node.platform.os==linux", "web")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        "overall progress: 2 out of 2 tasks",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
        "verify: Service web converged",
    ]


def test_create_quiet_waits_without_printing_progress(engine, fast_polls):
    engine.reply("POST", "/services/create", {"ID": SERVICE_ID}, status=201)
    service = web_service()
    service["Spec"]["UpdateConfig"] = {"Monitor": 1_000_000}
    engine.reply("GET", f"/services/{SERVICE_ID}", service)
    engine.reply("GET", "/tasks", [task("t1", 1, "running"), task("t2", 2, "running")])

    result = run(engine, "service", "create", "-q", "nginx:1.27")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{SERVICE_ID}\n"
    assert engine.calls("GET", "/tasks")


def test_waiting_gives_up_after_the_timeout_with_what_keeps_the_tasks_from_running(engine, fast_polls, monkeypatch):
    monkeypatch.setattr(progress, "CONVERGENCE_TIMEOUT", 0.05)
    engine.reply("GET", "/services/web", web_service())
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    unschedulable = "no suitable node (insufficient resources on 3 nodes)"
    engine.reply("GET", "/tasks", [task("t1", 1, "running"), task("t2", 2, "pending", err=unschedulable)])

    result = run(engine, "service", "update", "--force", "web")

    assert result.stdout.splitlines()[-2:] == [
        "Operation continuing in background.",
        "Use `raftswarm service ps web` to check progress.",
    ]
    assert_fails(result, f"service web did not converge within 0.05s: 2/2: {unschedulable}")


# -- service ls / ps / inspect ---------------------------------------------------------------------------------


def listed(service_id: str, name: str, mode: dict[str, Any], running: int, desired: int, **spec: Any) -> dict[str, Any]:
    service = web_service(ID=service_id, ServiceStatus={"RunningTasks": running, "DesiredTasks": desired})
    service["Spec"] = {**service["Spec"], "Name": name, "Mode": mode}
    service["Spec"]["TaskTemplate"] = {**service["Spec"]["TaskTemplate"], **spec}
    return service


def test_service_ls_shows_dockers_columns_sorted_by_name(engine):
    web = listed(SERVICE_ID, "web", {"Replicated": {"Replicas": 3}}, 2, 3)
    web["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] = "docker.io/library/nginx:1.27@sha256:0123abcd"
    web["Endpoint"]["Ports"] = [
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 9000, "PublishedPort": 9000, "PublishMode": "host"},
    ]
    agent = listed(GLOBAL_ID, "agent", {"Global": {}}, 3, 3)
    db10 = listed(
        "p0t7rs2cwkdyvqz3m1e8c4x5n", "db-10", {"Replicated": {"Replicas": 2}}, 2, 2, Placement={"MaxReplicas": 1}
    )
    db2 = listed("q0t7rs2cwkdyvqz3m1e8c4x5n", "db-2", {"Replicated": {"Replicas": 1}}, 0, 1)
    engine.reply("GET", "/services", [web, db10, agent, db2])

    result = run(engine, "service", "ls")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ID             NAME      MODE         REPLICAS               IMAGE        PORTS",
        "a8dbnwg2lt0r   agent     global       3/3                    nginx:1.27   ",
        "q0t7rs2cwkdy   db-2      replicated   0/1                    nginx:1.27   ",
        "p0t7rs2cwkdy   db-10     replicated   2/2 (max 1 per node)   nginx:1.27   ",
        "kzqr6fwm5rh7   web       replicated   2/3                    nginx:1.27   *:8080-8081->80-81/tcp, *:53->53/udp",
    ]
    (listing,) = engine.calls("GET", "/services")
    assert listing.query == {"status": "true"}


def test_service_ls_quiet_and_filters(engine):
    engine.reply("GET", "/services", [listed(SERVICE_ID, "web", {"Replicated": {}}, 1, 1)])

    result = run(engine, "service", "ls", "-q", "-f", "mode=replicated", "--filter", "label=tier")

    assert result.stdout == "kzqr6fwm5rh7\n"
    (listing,) = engine.calls("GET", "/services")
    assert listing.filters == {"mode": ["replicated"], "label": ["tier"]}
    assert "status" not in listing.query


def test_service_ls_format_json_and_template(engine):
    engine.reply("GET", "/services", [listed(SERVICE_ID, "web", {"Replicated": {"Replicas": 2}}, 1, 2)])

    (line,) = run(engine, "service", "ls", "--format", "json").stdout.splitlines()
    assert json.loads(line) == {
        "ID": "kzqr6fwm5rh7",
        "Image": "nginx:1.27",
        "Mode": "replicated",
        "Name": "web",
        "Ports": "",
        "Replicas": "1/2",
    }
    assert run(engine, "service", "ls", "--format", "{{.Name}}: {{.Replicas}}").stdout == "web: 1/2\n"


def test_service_ls_counts_tasks_itself_when_the_node_sends_no_service_status(engine):
    engine.reply("GET", "/services", [web_service()])
    engine.reply(
        "GET",
        "/tasks",
        [task("t1", 1, "running"), task("t2", 2, "pending"), task("t0", 1, "shutdown", desired="shutdown")],
    )

    result = run(engine, "service", "ls", "--format", "{{.Replicas}}")

    assert result.stdout == "1/2\n"
    assert engine.calls("GET", "/tasks")[0].filters == {"service": [SERVICE_ID]}


def test_service_ps_lists_the_services_tasks_like_node_ps(engine):
    engine.reply("GET", "/services", [web_service()])
    engine.reply("GET", f"/services/{SERVICE_ID}", web_service())
    engine.reply(
        "GET",
        "/tasks",
        [task("t2xxxxxxxxxxxxxxxxxxxxxxx", 2, "running"), task("t1xxxxxxxxxxxxxxxxxxxxxxx", 1, "running")],
    )

    result = run(engine, "service", "ps", "-f", "desired-state=running", "web")

    assert result.exit_code == 0, result.output
    by_id, by_name = engine.calls("GET", "/services")
    assert (by_id.filters, by_name.filters) == ({"id": ["web"]}, {"name": ["web"]})
    (tasks,) = engine.calls("GET", "/tasks")
    assert tasks.filters == {"desired-state": ["running"], "service": [SERVICE_ID]}
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]
    assert [row.split()[:5] for row in rows] == [
        ["t1xxxxxxxxxx", "web.1", "nginx:1.27", "node-10", "Running"],
        ["t2xxxxxxxxxx", "web.2", "nginx:1.27", "node-10", "Running"],
    ]


def test_service_ps_quiet_prints_full_task_ids(engine):
    engine.reply("GET", "/services", [web_service()])
    engine.reply("GET", "/tasks", [task("t1xxxxxxxxxxxxxxxxxxxxxxx", 1, "running")])

    assert run(engine, "service", "ps", "-q", SERVICE_ID[:4]).stdout == "t1xxxxxxxxxxxxxxxxxxxxxxx\n"


def test_service_ps_of_unknown_services(engine):
    engine.reply("GET", "/services", [web_service()])
    engine.reply("GET", "/tasks", [])

    result = run(engine, "service", "ps", "web", "nope")
    assert result.stdout.startswith("ID ")  # the services found are listed first
    assert_fails(result, "no such service: nope")

    engine.reply("GET", "/services", [])
    engine.requests.clear()
    assert_fails(run(engine, "service", "ps", "nope"), "no such service: nope")
    assert engine.calls("GET", "/tasks") == []


def test_service_inspect_prints_a_json_array_then_what_was_not_found(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.fail("GET", "/services/nope", 404, NOT_FOUND)

    result = run(engine, "service", "inspect", "web", "nope")

    assert json.loads(result.stdout) == [web_service()]
    assert result.stdout.startswith('[\n    {\n        "ID"')
    assert_fails(result, "Error: no such service: nope")


def test_service_inspect_pretty(engine):
    service = web_service(
        UpdateStatus={"State": "updating", "StartedAt": "2000-01-01T00:00:00Z", "Message": "update in progress"}
    )
    spec = service["Spec"]
    spec["TaskTemplate"]["ContainerSpec"].update(Args=["-g", "daemon off;"], Dir="/srv", User="www")
    spec["TaskTemplate"]["Resources"] = {
        "Limits": {"NanoCPUs": 1_500_000_000, "MemoryBytes": 64 * 1024**2, "Pids": 20},
        "Reservations": {},
    }
    spec["TaskTemplate"]["Placement"] = {
        "Constraints": ["node.role==worker", "node.labels.zone==a"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }
    spec["TaskTemplate"]["Networks"] = [{"Target": "backend"}]
    spec["UpdateConfig"] = {
        "Parallelism": 2,
        "Delay": 90 * 10**9,
        "FailureAction": "pause",
        "Monitor": 5 * 10**9,
        "MaxFailureRatio": 0.25,
        "Order": "stop-first",
    }
    service["Endpoint"]["Ports"] = [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]
    engine.reply("GET", "/services/web", service)

    result = run(engine, "service", "inspect", "--pretty", "web")

    assert result.exit_code == 0, result.output
    assert re.sub(r"Started:\t\d+ years ago", "Started:\tN years ago", result.stdout) == (
        "\n"
        f"ID:\t\t{SERVICE_ID}\n"
        "Name:\t\tweb\n"
        "Labels:\n"
        " tier=front\n"
        "Service Mode:\tReplicated\n"
        " Replicas:\t2\n"
        "UpdateStatus:\n"
        " State:\t\tupdating\n"
        " Started:\tN years ago\n"
        " Message:\tupdate in progress\n"
        "Placement:\n"
        " Constraints:\t[node.role==worker node.labels.zone==a]\n"
        " Preferences:   [spread=node.labels.zone]\n"
        "UpdateConfig:\n"
        " Parallelism:\t2\n"
        " Delay:\t\t1m30s\n"
        " On failure:\tpause\n"
        " Monitoring Period: 5s\n"
        " Max failure ratio: 0.25\n"
        " Update order:      stop-first\n"
        "ContainerSpec:\n"
        " Image:\t\tnginx:1.27\n"
        " Args:\t\t-g daemon off; \n"
        " Env:\t\tA=1 B=2 \n"
        " Dir:\t\t/srv\n"
        " User: www\n"
        "Secrets:\n"
        " Target:\tdb_pass\n"
        "  Source:\tdb_pass\n"
        "Resources:\n"
        " Limits:\n"
        "  CPU:\t\t1.5\n"
        "  Memory:\t64MiB\n"
        "  PIDs:\t\t20\n"
        "Networks: backend \n"
        "Endpoint Mode:\tvip\n"
        "Ports:\n"
        " PublishedPort = 8080\n"
        "  Protocol = tcp\n"
        "  TargetPort = 80\n"
        "  PublishMode = ingress \n"
        "\n"
    )


# -- service logs -----------------------------------------------------------------------------------------------

TASK1_ID = "1xf8aqbh2z9u7kwt6c5mr3nyd"
TASK2_ID = "b7pz3w1qk9e2m5r8t4y6u0ioa"
TASK10_ID = "q2w3e4r5t6y7u8i9o0p1a2s3d"
STAMP = "2024-05-01T10:00:00.123456789Z"


def log_frame(stream: str, task_id: str, node_id: str, line: str, when: str = "", extra: str = "") -> bytes:
    """One frame as dockerd sends it with details=1 (and timestamps=1 when `when` is given)."""
    details = f"com.docker.swarm.node.id={node_id},com.docker.swarm.service.id={SERVICE_ID},com.docker.swarm.task.id={task_id}"
    if extra:
        details = f"{extra},{details}"
    text = f"{when} {details} {line}\n" if when else f"{details} {line}\n"
    return encode_frame(1 if stream == "stdout" else 2, text.encode())


def serve_logs(engine: FakeEngine, frames: list[bytes], service: dict[str, Any] | None = None) -> None:
    """`web` with task 1 on node-10 (the worker) and task 2 on node-1, answering its logs with `frames`."""
    service = service or web_service()
    engine.reply("GET", "/services/web", service)
    engine.reply("GET", f"/services/{SERVICE_ID}", service)
    engine.reply("GET", f"/tasks/{TASK1_ID}", task(TASK1_ID, 1, "running"))
    engine.reply("GET", f"/tasks/{TASK2_ID}", {**task(TASK2_ID, 2, "running"), "NodeID": SELF_ID})
    engine.reply("GET", f"/tasks/{TASK10_ID}", task(TASK10_ID, 10, "running"))
    engine.stream("GET", "/services/web/logs", b"".join(frames))


def test_service_logs_prints_each_line_after_its_task_and_node_as_docker_does(engine):
    serve_logs(
        engine,
        [
            log_frame("stdout", TASK1_ID, WORKER_ID, "hello"),
            log_frame("stderr", TASK1_ID, WORKER_ID, "oops"),
            log_frame("stdout", TASK2_ID, SELF_ID, "world"),
        ],
    )

    result = run(engine, "service", "logs", "web")

    assert result.exit_code == 0, result.output
    assert result.stdout == "web.1.1xf8aqbh2z9u@node-10    | hello\nweb.2.b7pz3w1qk9e2@node-1    | world\n"
    assert result.stderr == "web.1.1xf8aqbh2z9u@node-10    | oops\n"
    (request,) = engine.calls("GET", "/services/web/logs")
    assert request.query == {"stdout": "1", "stderr": "1", "tail": "all", "details": "1"}
    assert len(engine.calls("GET", "/nodes")) == 1  # node names looked up once
    assert len(engine.calls("GET", f"/tasks/{TASK1_ID}")) == 1  # and each task once


def test_service_logs_pads_short_slots_to_the_width_of_the_replica_count(engine):
    ten = web_service()
    ten["Spec"] = {**ten["Spec"], "Mode": {"Replicated": {"Replicas": 10}}}
    serve_logs(
        engine,
        [log_frame("stdout", TASK1_ID, WORKER_ID, "a"), log_frame("stdout", TASK10_ID, WORKER_ID, "b")],
        service=ten,
    )

    assert run(engine, "service", "logs", "web").stdout == (
        "web.1.1xf8aqbh2z9u@node-10     | a\nweb.10.q2w3e4r5t6y7@node-10    | b\n"
    )


@pytest.mark.parametrize(
    ("flags", "frame", "printed"),
    [
        (["--no-task-ids"], log_frame("stdout", TASK1_ID, WORKER_ID, "hi"), "web.1@node-10    | hi\n"),
        (["--no-trunc"], log_frame("stdout", TASK1_ID, WORKER_ID, "hi"), f"web.1.{TASK1_ID}@node-10    | hi\n"),
        (
            ["--no-resolve"],
            log_frame("stdout", TASK1_ID, WORKER_ID, "hi"),
            f"{SERVICE_ID}.1.1xf8aqbh2z9u@{WORKER_ID}    | hi\n",
        ),
        (
            ["-t"],
            log_frame("stdout", TASK1_ID, WORKER_ID, "hi there", when=STAMP),
            f"{STAMP} web.1.1xf8aqbh2z9u@node-10    | hi there\n",
        ),
        (
            ["--details"],
            log_frame("stdout", TASK1_ID, WORKER_ID, "hi", extra="zone=a%2Cb,env=prod"),
            "web.1.1xf8aqbh2z9u@node-10    | env=prod,zone=a,b hi\n",
        ),
    ],
)
def test_service_logs_formatting_flags(engine, flags, frame, printed):
    serve_logs(engine, [frame])

    result = run(engine, "service", "logs", *flags, "web")

    assert result.exit_code == 0, result.output
    assert result.stdout == printed
    (request,) = engine.calls("GET", "/services/web/logs")
    assert (request.query.get("timestamps") == "1") == ("-t" in flags)
    if "--no-resolve" in flags:
        assert engine.calls("GET", "/nodes") == []


def test_service_logs_raw_prints_the_nodes_lines_as_they_are(engine):
    serve_logs(engine, [encode_frame(1, b"plain line\n"), encode_frame(2, b"to stderr\n")])

    result = run(engine, "service", "logs", "--raw", "--tail", "5", "web")

    assert (result.stdout, result.stderr) == ("plain line\n", "to stderr\n")
    (request,) = engine.calls("GET", "/services/web/logs")
    assert request.query == {"stdout": "1", "stderr": "1", "tail": "5"}  # no details asked for


def test_service_logs_of_a_task_asks_the_task_endpoint(engine):
    engine.fail("GET", f"/services/{TASK1_ID}", 404, f"service {TASK1_ID} not found")
    engine.reply("GET", f"/services/{SERVICE_ID}", web_service())
    engine.reply("GET", f"/tasks/{TASK1_ID}", task(TASK1_ID, 1, "running"))
    engine.stream("GET", f"/tasks/{TASK1_ID}/logs", log_frame("stdout", TASK1_ID, WORKER_ID, "just this task"))

    result = run(engine, "service", "logs", "-f", "-n", "3", TASK1_ID)

    assert result.exit_code == 0, result.output
    assert result.stdout == "web.1.1xf8aqbh2z9u@node-10    | just this task\n"
    (request,) = engine.calls("GET", f"/tasks/{TASK1_ID}/logs")
    assert request.query == {"stdout": "1", "stderr": "1", "tail": "3", "follow": "1", "details": "1"}


def test_service_logs_of_neither_a_service_nor_a_task(engine):
    engine.fail("GET", "/services/nope", 404, "service nope not found")
    engine.fail("GET", "/tasks/nope", 404, "task nope not found")

    assert_fails(run(engine, "service", "logs", "nope"), "no such task or service: nope")


def test_service_logs_since_is_sent_as_unix_seconds(engine):
    serve_logs(engine, [])

    assert run(engine, "service", "logs", "--since", "2013-01-02T13:23:37Z", "web").exit_code == 0
    assert run(engine, "service", "logs", "--since", "1357133017.5", "web").exit_code == 0
    before = time.time()
    assert run(engine, "service", "logs", "--since", "10m", "web").exit_code == 0
    absolute, unix, relative = [r.query["since"] for r in engine.calls("GET", "/services/web/logs")]
    assert (absolute, unix) == ("1357133017.000000000", "1357133017.5")
    assert before - 600 - 1 <= int(relative) <= time.time() - 600


def test_service_logs_with_an_unreadable_since_fails_before_asking_for_logs(engine):
    serve_logs(engine, [])

    assert_fails(
        run(engine, "service", "logs", "--since", "soon", "web"), 'failed to parse value as time or duration: "soon"'
    )
    assert engine.calls("GET", "/services/web/logs") == []


def test_service_logs_ends_with_the_error_the_node_sends_in_the_stream(engine):
    reason = f"node {SELF_ID} is not available"
    serve_logs(
        engine,
        [
            log_frame("stdout", TASK1_ID, WORKER_ID, "from the live node"),
            encode_frame(
                3,
                b"Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for the "
                + f"following reasons: {reason}\n".encode(),
            ),
        ],
    )

    result = run(engine, "service", "logs", "web")

    assert result.stdout == "web.1.1xf8aqbh2z9u@node-10    | from the live node\n"
    assert_fails(
        result,
        "error from daemon in stream: Error grabbing logs: warning: incomplete log stream. some logs could not be "
        f"retrieved for the following reasons: {reason}",
    )


# -- service update ---------------------------------------------------------------------------------------------


def test_update_sends_the_read_version_and_only_the_changes_asked_for(engine):
    service = web_service()
    service["Spec"]["EndpointSpec"]["Ports"] = [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]
    engine.reply("GET", "/services/web", service)
    engine.reply("GET", "/secrets", [secret_object("api_key", API_KEY_ID)])
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    result = run(
        engine,
        "service",
        "update",
        "-d",
        "--image", "nginx:1.28",
        "--env-add", "B=3",
        "--env-add", "C=4",
        "--env-rm", "A",
        "--label-add", "owner=ops",
        "--label-rm", "tier",
        "--constraint-add", "node.labels.zone==a",
        "--replicas", "5",
        "--secret-rm", "db_pass",
        "--secret-add", "source=api_key,target=key",
        "--publish-add", "9090:90",
        "--publish-rm", "80",
        "--reserve-cpu", "2",
        "--update-order", "start-first",
        "--force",
        "web",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == "web\n"
    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert update.query == {"version": "17"}
    expected = copy.deepcopy(service["Spec"])
    expected["Labels"] = {"owner": "ops"}
    container = expected["TaskTemplate"]["ContainerSpec"]
    container["Image"] = "nginx:1.28"
    container["Env"] = ["B=3", "C=4"]
    container["Secrets"] = [secret_ref("api_key", API_KEY_ID, "key")]
    expected["TaskTemplate"]["Placement"]["Constraints"] = ["node.labels.zone==a", "node.role==worker"]
    expected["TaskTemplate"]["Resources"]["Reservations"] = {"NanoCPUs": 2 * 10**9}
    expected["TaskTemplate"]["ForceUpdate"] = 1
    expected["Mode"] = {"Replicated": {"Replicas": 5}}
    expected["UpdateConfig"] = {
        "Parallelism": 1,
        "FailureAction": "pause",
        "Monitor": 5 * 10**9,
        "MaxFailureRatio": 0,
        "Order": "start-first",
    }
    expected["EndpointSpec"]["Ports"] = [
        {"Protocol": "tcp", "TargetPort": 90, "PublishedPort": 9090, "PublishMode": "ingress"}
    ]
    assert update.body == expected


def test_update_without_flags_writes_the_spec_back_unchanged(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    run(engine, "service", "update", "-d", "web")

    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert update.body == web_service()["Spec"]
    assert engine.calls("GET", "/secrets") == []


def test_update_args_are_split_like_a_shell(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    run(engine, "service", "update", "-d", "--args", "nginx -g 'daemon off;'", "web")

    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert update.body["TaskTemplate"]["ContainerSpec"]["Args"] == ["nginx", "-g", "daemon off;"]


def test_update_out_of_sequence_prints_the_nodes_message(engine):
    engine.reply("GET", "/services/web", web_service())
    message = f"update out of sequence: service {SERVICE_ID} is at version 18, not 17"
    engine.fail("POST", f"/services/{SERVICE_ID}/update", 409, message)

    assert_fails(
        run(engine, "service", "update", "-d", "--image", "nginx:1.28", "web"), f"Error response from daemon: {message}"
    )


def test_update_of_an_unknown_service_prints_the_nodes_message(engine):
    engine.fail("GET", "/services/nope", 404, NOT_FOUND)

    assert_fails(run(engine, "service", "update", "-d", "--force", "nope"), f"Error response from daemon: {NOT_FOUND}")
    assert engine.mutations() == []


def test_update_rollback_asks_the_node_for_the_previous_spec(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    result = run(engine, "service", "update", "--rollback", "-d", "web")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert update.query == {"version": "17", "rollback": "previous"}
    assert update.body == web_service()["Spec"]


def test_update_rollback_with_other_changes_is_refused(engine):
    result = run(engine, "service", "update", "--rollback", "--image", "nginx:1.28", "web")

    assert_fails(result, "other flags may not be combined with --rollback")
    assert engine.requests == []


def test_update_replicas_of_a_global_service_is_refused(engine):
    engine.reply("GET", "/services/agent", global_service())

    assert_fails(
        run(engine, "service", "update", "--replicas", "3", "agent"), "replicas can only be used with replicated mode"
    )
    assert engine.mutations() == []


def test_update_with_a_bad_duration_is_a_usage_error(engine):
    assert_usage_error(
        engine, run(engine, "service", "update", "--update-monitor", "soon", "web"), 'invalid duration "soon"'
    )


# -- service scale / rollback / rm ------------------------------------------------------------------------------


def test_scale_posts_the_replica_count_and_refuses_global_services(engine):
    engine.reply("GET", "/services/web", web_service())
    engine.reply("GET", "/services/agent", global_service())
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    result = run(engine, "service", "scale", "-d", "web=5", "agent=2", "db=many")

    (update,) = engine.mutations()
    assert (update.path, update.query) == (f"/services/{SERVICE_ID}/update", {"version": "17"})
    assert update.body == {**web_service()["Spec"], "Mode": {"Replicated": {"Replicas": 5}}}
    assert result.stdout == "web scaled to 5\n"
    assert_fails(
        result,
        "agent: scale can only be used with replicated or replicated-job mode\n"
        'db: invalid replicas value many: strconv.ParseUint: parsing "many": invalid syntax',
    )


def test_scale_needs_service_equals_replicas(engine):
    assert_usage_error(engine, run(engine, "service", "scale", "web"), "Invalid scale specifier 'web'.")


def test_scale_of_an_unknown_service_prints_the_nodes_message(engine):
    engine.fail("GET", "/services/nope", 404, NOT_FOUND)

    assert_fails(run(engine, "service", "scale", "nope=2"), f"nope: Error response from daemon: {NOT_FOUND}")


def test_scale_waits_ignoring_the_status_of_an_earlier_update(engine, fast_polls):
    earlier = {"State": "completed", "StartedAt": "2024-05-01T10:00:00Z", "Message": "update completed"}
    service = web_service(UpdateStatus=earlier)
    service["Spec"]["UpdateConfig"] = {"Monitor": 1_000_000}
    engine.reply("GET", "/services/web", service)
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    engine.reply("GET", "/tasks", [task("t1", 1, "running")], [task("t1", 1, "running"), task("t2", 2, "running")])

    result = run(engine, "service", "scale", "web=2")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "web scaled to 2",
        "overall progress: 0 out of 2 tasks",
        "1/2: running",
        "overall progress: 1 out of 2 tasks",
        "2/2: running",
        "overall progress: 2 out of 2 tasks",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
        "verify: Service web converged",
    ]


def test_rollback_posts_rollback_previous_and_shows_the_rollback_progress(engine, fast_polls):
    def at(status: dict[str, Any]) -> dict[str, Any]:
        service = web_service(UpdateStatus=status)
        service["Spec"]["UpdateConfig"] = {"Monitor": 1_000_000}
        return service

    engine.reply(
        "GET",
        "/services/web",
        at({"State": "completed", "Message": "update completed"}),
        at({"State": "rollback_started", "Message": "manually requested rollback"}),
        at({"State": "rollback_completed", "Message": "rollback completed"}),
    )
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})
    engine.reply(
        "GET",
        "/tasks",
        [task("t1", 1, "running"), task("t2", 2, "starting")],
        [task("t1", 1, "running"), task("t2", 2, "running")],
    )

    result = run(engine, "service", "rollback", "web")

    assert result.exit_code == 0, result.output
    (update,) = engine.calls("POST", f"/services/{SERVICE_ID}/update")
    assert update.query == {"version": "17", "rollback": "previous"}
    assert result.stdout.splitlines() == [
        "web",
        "rollback: manually requested rollback",
        "overall progress: rolling back update: 0 out of 2 tasks",
        "1/2: running",
        "2/2: starting",
        "overall progress: rolling back update: 1 out of 2 tasks",
        "2/2: running",
        "overall progress: rolling back update: 2 out of 2 tasks",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
        "verify: Service web converged",
        "rollback: rollback completed",
    ]


def test_a_paused_update_ends_the_wait_with_the_nodes_reason(engine, fast_polls):
    engine.reply(
        "GET",
        "/services/web",
        web_service(),
        web_service(
            UpdateStatus={"State": "paused", "Message": "update paused due to failure or early termination of task t2"}
        ),
    )
    engine.reply("POST", f"/services/{SERVICE_ID}/update", {"Warnings": []})

    result = run(engine, "service", "update", "--no-resolve-image", "--image", "nginx:1.28", "web")

    assert_fails(result, "service update paused: update paused due to failure or early termination of task t2")


def test_service_rm_removes_each_and_reports_failures_after_the_others(engine):
    engine.fail("DELETE", "/services/nope", 404, NOT_FOUND)
    engine.reply("DELETE", "/services/web")

    result = run(engine, "service", "rm", "nope", "web")

    assert [r.path for r in engine.calls("DELETE")] == ["/services/nope", "/services/web"]
    assert result.stdout == "web\n"
    assert_fails(result, f"Error response from daemon: {NOT_FOUND}")


def test_service_list_and_remove_are_aliases_as_in_docker(engine):
    engine.reply("GET", "/services", [listed(SERVICE_ID, "web", {"Replicated": {}}, 1, 1)])
    engine.reply("DELETE", "/services/web")

    assert run(engine, "service", "list", "-q").stdout == "kzqr6fwm5rh7\n"
    assert run(engine, "service", "remove", "web").stdout == "web\n"


# -- secrets ----------------------------------------------------------------------------------------------------


def test_secret_create_from_a_file_sends_name_labels_and_base64_data(engine, tmp_path):
    engine.reply("POST", "/secrets/create", {"ID": DB_PASS_ID}, status=201)
    source = tmp_path / "password.txt"
    source.write_bytes(b"s3cret\n\x00")

    result = run(engine, "secret", "create", "-l", "env=prod", "--label", "team", "db_pass", str(source))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{DB_PASS_ID}\n"
    (created,) = engine.calls("POST", "/secrets/create")
    assert created.body == {
        "Name": "db_pass",
        "Labels": {"env": "prod", "team": ""},
        "Data": base64.b64encode(b"s3cret\n\x00").decode(),
    }


def test_secret_create_reads_stdin_for_dash(engine):
    engine.reply("POST", "/secrets/create", {"ID": API_KEY_ID}, status=201)

    run(engine, "secret", "create", "api_key", "-", input="from a pipe")

    (created,) = engine.calls("POST", "/secrets/create")
    assert base64.b64decode(created.body["Data"]) == b"from a pipe"
    assert created.body["Labels"] == {}


def test_secret_create_with_a_missing_file_says_so_without_a_request(engine, tmp_path):
    missing = tmp_path / "missing.txt"

    result = run(engine, "secret", "create", "db_pass", str(missing))

    assert_fails(result, f'Error reading content from "{missing}": open {missing}: no such file or directory')
    assert engine.requests == []


def test_secret_create_refused_by_the_node(engine, tmp_path):
    message = "rpc error: code = AlreadyExists desc = secret db_pass already exists"
    engine.fail("POST", "/secrets/create", 409, message)
    (tmp_path / "v").write_text("x")

    assert_fails(
        run(engine, "secret", "create", "db_pass", str(tmp_path / "v")), f"Error response from daemon: {message}"
    )


def test_secret_ls_table_quiet_and_filters(engine):
    engine.reply(
        "GET",
        "/secrets",
        [secret_object("db_pass", DB_PASS_ID, {"env": "prod"}), secret_object("api_key", API_KEY_ID)],
    )

    result = run(engine, "secret", "ls", "-f", "label=env")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    assert [row.split()[:2] for row in rows] == [[API_KEY_ID, "api_key"], [DB_PASS_ID, "db_pass"]]
    assert re.fullmatch(rf"{API_KEY_ID}   api_key   \s+\d+ \w+ ago\s+\d+ \w+ ago", rows[0])
    assert engine.calls("GET", "/secrets")[0].filters == {"label": ["env"]}
    assert run(engine, "secret", "ls", "-q").stdout.splitlines() == [API_KEY_ID, DB_PASS_ID]
    assert run(engine, "secret", "ls", "--format", "{{.Name}} {{.Labels}}").stdout.splitlines() == [
        "api_key ",
        "db_pass env=prod",
    ]


def test_secret_inspect_json_pretty_and_missing(engine):
    secret = secret_object("db_pass", DB_PASS_ID, {"env": "prod"})
    engine.reply("GET", "/secrets/db_pass", secret)
    engine.fail("GET", "/secrets/nope", 404, "secret nope not found")

    result = run(engine, "secret", "inspect", "db_pass", "nope")
    assert json.loads(result.stdout) == [secret]
    assert_fails(result, "Error response from daemon: secret nope not found")

    pretty = run(engine, "secret", "inspect", "--pretty", "db_pass")
    assert pretty.stdout == (
        f"ID:              {DB_PASS_ID}\n"
        "Name:              db_pass\n"
        "Labels:\n"
        " - env=prod\n"
        "Driver:            \n"
        "Created at:        2024-05-01 10:00:00.123456789 +0000 utc\n"
        "Updated at:        2024-05-01 10:05:00 +0000 utc\n"
    )


def test_secret_rm_removes_each_and_reports_failures(engine):
    engine.reply("DELETE", "/secrets/db_pass")
    message = "rpc error: code = InvalidArgument desc = secret 'api_key' is in use by the following service: web"
    engine.fail("DELETE", "/secrets/api_key", 400, message)

    result = run(engine, "secret", "rm", "api_key", "db_pass")

    assert result.stdout == "db_pass\n"
    assert_fails(result, f"Error response from daemon: {message}")


# -- flag values parsed as docker parses them --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ports"),
    [
        ("80", [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress"}]),
        ("8080:80/udp", [{"Protocol": "udp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]),
        (
            "8000-8001:80-81",
            [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8000, "PublishMode": "ingress"},
                {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8001, "PublishMode": "ingress"},
            ],
        ),
        ("target=80,mode=host", [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host"}]),
    ],
)
def test_publish_values(value, ports):
    assert parse_port(value) == ports


def test_secret_network_and_size_values():
    assert parse_secret("source=s,target=t,uid=1000,gid=1000,mode=0o440") == {
        "File": {"Name": "t", "UID": "1000", "GID": "1000", "Mode": 0o440},
        "SecretName": "s",
    }
    assert parse_network("name=backend,alias=a,alias=b,driver-opt=com.docker.network.x=1") == {
        "Target": "backend",
        "Aliases": ["a", "b"],
        "DriverOpts": {"com.docker.network.x": "1"},
    }
    assert [ram_in_bytes(v) for v in ("64MiB", "1g", "512k", "1.5GB", "100", "10b")] == [
        64 * 1024**2,
        1024**3,
        512 * 1024,
        1536 * 1024**2,
        100,
        10,
    ]
    assert [parse_cpus(v) for v in ("0.5", "2", "3/2")] == [500_000_000, 2 * 10**9, 1_500_000_000]
    assert [go_duration(n) for n in (0, 500 * 10**6, 10**10, 90 * 10**9, 3600 * 10**9)] == [
        "0s",
        "500ms",
        "10s",
        "1m30s",
        "1h0m0s",
    ]


def test_a_global_service_converges_when_every_node_with_a_task_runs_it():
    service = global_service()
    watch = ConvergenceWatch("agent")
    node_a, node_b = "nodeaaaaaaaaaaaaaaaaaaaaa", "nodebbbbbbbbbbbbbbbbbbbbb"
    tasks = [{**task("t1", 0, "running"), "NodeID": node_a}, {**task("t2", 0, "preparing"), "NodeID": node_b}]

    assert not watch.on_service(service, now=0.0)
    watch.on_tasks(service, tasks, {node_a, node_b}, now=0.0)
    assert watch.take_lines() == [
        "overall progress: 0 out of 2 tasks",
        "nodeaaaaaaaa: running",
        "nodebbbbbbbb: preparing",
        "overall progress: 1 out of 2 tasks",
    ]
    assert not watch.converged

    tasks[1]["Status"] = {"State": "running"}
    watch.on_tasks(service, tasks, {node_a, node_b}, now=1.0)
    assert watch.converged
    assert watch.take_lines() == [
        "nodebbbbbbbb: running",
        "overall progress: 2 out of 2 tasks",
        "verify: Waiting 5 seconds to verify that tasks are stable...",  # docker's default monitor period
    ]
    assert not watch.on_service(service, now=2.0)  # running, but not yet for the 5 s monitor period
    assert watch.on_service(service, now=6.0)
    assert watch.take_lines()[-1] == "verify: Service agent converged"
