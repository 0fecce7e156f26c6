"""`raftswarm stack deploy` against a fake node: several -c files (or one "a,b" value) merged, `-c -` read from
stdin, the node's Warnings printed once each, a broken file creating nothing, and a redeploy of unchanged files
touching nothing, whatever the node filled in when it stored the services (defaults, a forced update's count)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine, standard_swarm
from test_cli_service import run

from raftswarm.objects.specs import validate_service_spec


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(tmp_path / "engine.sock") as fake:
        standard_swarm(fake)
        fake.reply("GET", "/networks", [])
        fake.reply("POST", "/networks/create", {"Id": "n1", "Warning": ""}, status=201)
        fake.reply("GET", "/secrets", [])
        fake.reply("GET", "/configs", [])
        fake.reply("GET", "/services", [])
        fake.reply("POST", "/services/create", {"ID": "s1", "Warnings": ["LogDriver is ignored"]}, status=201)
        yield fake


def deployed_specs(engine: FakeEngine) -> dict[str, dict]:
    return {call.body["Name"]: call.body for call in engine.calls("POST", "/services/create")}


@pytest.mark.parametrize("flags", [("-c", "{a}", "-c", "{b}"), ("-c", "{a},{b}")])
def test_stack_deploy_merges_every_compose_file(engine: FakeEngine, tmp_path: Path, flags: tuple[str, ...]) -> None:
    a = write(tmp_path, "a.yml", "services: {web: {image: busybox, environment: {A: '1'}}}")
    b = write(tmp_path, "b.yml", "services: {web: {environment: {B: '2'}, logging: {driver: syslog}}}")
    args = [flag.format(a=a, b=b) for flag in flags]
    result = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", *args, "shop")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Creating network shop_default", "Creating service shop_web"]
    assert result.stderr.splitlines() == ["LogDriver is ignored"]  # the node's Warnings
    assert deployed_specs(engine)["shop_web"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1", "B=2"]


def test_stack_deploy_reads_dash_from_stdin(engine: FakeEngine) -> None:
    compose = "services: {web: {image: busybox, stop_signal: SIGINT}}\n"
    result = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", "-", "shop", input=compose)
    assert result.exit_code == 0, result.output
    assert deployed_specs(engine)["shop_web"]["TaskTemplate"]["ContainerSpec"]["StopSignal"] == "SIGINT"


def test_a_broken_second_file_creates_nothing(engine: FakeEngine, tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "services: {web: {image: busybox}}")
    b = write(tmp_path, "b.yml", "services: {web: {privileged: true}}")
    result = run(engine, "stack", "deploy", "--detach", "-c", str(a), "-c", str(b), "shop")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{b}: services.web.privileged: unsupported option: swarm services do not run")
    assert engine.mutations() == []


def stored_service(spec: dict[str, Any], force_update: int = 0) -> dict[str, Any]:
    """A service as the node stores and shows it: its spec checked (defaults filled in), a forced update counted,
    and what dockerd shows for fields not given (Runtime, Isolation, a restart policy's MaxAttempts)."""
    stored = validate_service_spec(copy.deepcopy(spec))
    stored["TaskTemplate"]["Runtime"] = "container"
    stored["TaskTemplate"]["ContainerSpec"]["Isolation"] = "default"
    if "RestartPolicy" in stored["TaskTemplate"]:
        stored["TaskTemplate"]["RestartPolicy"].setdefault("MaxAttempts", 0)
    stored["Mode"] = {"Replicated": {"Replicas": 1}} if stored["Mode"] == {"Replicated": {}} else stored["Mode"]
    if stored["Mode"] == {"ReplicatedJob": {}}:
        stored["Mode"] = {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    if force_update:
        stored["TaskTemplate"]["ForceUpdate"] = force_update
    return {"ID": "s1", "Version": {"Index": 9}, "Spec": stored}


@pytest.mark.parametrize(
    "service",
    [
        "deploy: {update_config: {parallelism: 2}, restart_policy: {delay: 5s}}",  # FailureAction, Order, Condition
        "deploy: {mode: replicated-job}",  # MaxConcurrent and TotalCompletions
        "ports: [{target: 80}]",
    ],
)
def test_a_redeploy_of_an_unchanged_file_touches_nothing(engine: FakeEngine, tmp_path: Path, service: str) -> None:
    compose = write(tmp_path, "stack.yml", f"services:\n  web:\n    image: busybox\n    {service}\n")
    first = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop")
    assert first.exit_code == 0, first.output
    created = deployed_specs(engine)["shop_web"]
    engine.reply("GET", "/networks", [{"Name": "shop_default"}])
    engine.reply("GET", "/services", [stored_service(created, force_update=3)])
    engine.requests.clear()

    again = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop")

    assert again.exit_code == 0, again.output
    assert again.output == ""
    assert engine.mutations() == []


def test_a_redeploy_keeps_the_count_of_a_forced_update(engine: FakeEngine, tmp_path: Path) -> None:
    compose = write(tmp_path, "stack.yml", "services: {web: {image: busybox}}")
    assert run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop").exit_code == 0
    created = deployed_specs(engine)["shop_web"]
    engine.reply("GET", "/services", [stored_service(created, force_update=3)])
    engine.reply("POST", "/services/s1/update", {"Warnings": []})
    compose.write_text("services: {web: {image: busybox, environment: {A: '1'}}}")

    changed = run(engine, "stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "shop")

    assert changed.exit_code == 0, changed.output
    (update,) = engine.calls("POST", "/services/s1/update")
    assert update.body["TaskTemplate"]["ForceUpdate"] == 3  # not 0: that would be a change of its own
    assert update.body["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1"]
