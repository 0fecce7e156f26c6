"""raftswarm measured against real Docker swarm: the same scenario of docker CLI and docker SDK steps
(`conformance_scenario.py`) runs against Docker's swarm (`DockerSwarm`: dockerd 20.10 from Debian's docker.io,
one network namespace per node) and against raftswarm's (`SwarmCluster`), each one manager and one worker, at
API 1.41 (dockerd 20.10's) on both. Exit codes, HTTP status codes, messages and plain output (normalised), the
keys and value types of every JSON answer and the values of every listing must be the same, unless the
difference is on `ALLOWED` with its reason. The table of differences is printed (`pytest -s`) and is the
failure's message; RAFTSWARM_CONFORMANCE_REPORT=FILE also writes them to FILE as JSON.

As root only (both swarms need network namespaces). Where Docker swarm cannot run (no docker.io) the tests
skip, unless RAFTSWARM_REQUIRE_CONFORMANCE=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from conformance_outcomes import Allowed, Difference, Outcome, differences, table
from conformance_scenario import SCENARIO, write_files
from conformance_steps import Target, running

from raftswarm.localcluster.dockerswarm import API_VERSION, DockerSwarm, other_daemons, unavailable_reason
from raftswarm.localcluster.swarm import SwarmCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def docker_swarm_runs_here() -> None:
    """Skips where Docker swarm cannot run (no docker.io, not root), unless RAFTSWARM_REQUIRE_CONFORMANCE=1."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("RAFTSWARM_REQUIRE_CONFORMANCE") == "1":
            pytest.fail(f"Docker swarm cannot run here, and RAFTSWARM_REQUIRE_CONFORMANCE=1: {reason}")
        pytest.skip(f"Docker swarm cannot run here: {reason}")


ALLOWED: list[Allowed] = [
    Allowed(
        "*", "rpc", "",
        "dockerd passes SwarmKit's gRPC status through in its messages (`rpc error: code = AlreadyExists desc = "
        "...`); raftswarm has no gRPC between its API and its manager: the same words, the same HTTP status",
    ),
    Allowed(
        "*", "message+", "",
        "raftswarm's message holds every word of Docker's, in order, and adds the field or the value it refuses",
    ),
    Allowed("node ls*", "value", "*.EngineVersion", "the engine is raftswarm, not dockerd: it names itself"),
    Allowed(
        "network ls", "row", "bridge|host|none|docker_gwbridge",
        "raftswarm has no container API, so no node-local networks (bridge, host, none); its gateway bridge is "
        "not an API object as dockerd's docker_gwbridge is",
    ),
    Allowed(
        "network inspect*|sdk networks*", "key|type", "[].Containers*",
        "Containers lists the answering node's own containers on the network (dockerd adds its IPVS load "
        "balancers' sandboxes, `ingress-sbox` and `lb-<network>`); raftswarm has no container API: {} (dockerd: "
        "null when it has none)",
    ),
    Allowed(
        "sdk networks*", "type", "[].Labels",
        "dockerd gives null for the ingress network's empty labels and {} for others; raftswarm {} for all",
    ),
    Allowed(
        "service create (documented flags)|service update|service scale|service rollback", "message", "",
        "raftswarm has no container API, so container labels have nowhere to appear: it keeps them in the spec "
        "and says so in the answer's Warnings (the CLI prints them)",
        raftswarm="TaskTemplate.ContainerSpec.Labels is ignored*",
    ),
    Allowed(
        "service ps until 1 running", "row", "cf-web.*",
        "which slot survives a scale-down is the orchestrator's choice; SwarmKit's is in effect random among "
        "tasks that are alike",
    ),
    Allowed(
        "sdk create_service bad constraint|sdk create_network bad subnet", "exit", "",
        "dockerd answers 500 where its validation error has no type (SwarmKit's gRPC code Unknown, libnetwork's "
        "plain error); invalid input gets 400 everywhere else, in dockerd too",
    ),
    Allowed(
        "swarm init again|sdk init_swarm again", "message", "",
        "raftswarm names its own command to leave the swarm (`raftswarm swarm leave`)",
    ),
    Allowed(
        "network rm in use|sdk remove_network in use", "message", "",
        "the same sentence, with the network's and the service's names where dockerd gives their IDs",
    ),
    Allowed("sdk version", "key", ".GoVersion|.GitCommit|.BuildTime", "raftswarm is not a Go build of moby"),
    Allowed(
        "service ps runtime options*|service ps after --force*|service ps after update*", "value", "cf-opts.1.Ports",
        "dockerd publishes a host-mode port on IPv4 and IPv6 and reports each binding (the CLI prints "
        "`*:8081->80/tcp` twice); raftswarm publishes it on IPv4 (its DNAT is an `ip` nftables table) and reports one",
        raftswarm="[*]:8081->80/tcp",
    ),
    Allowed(
        "service ps runtime options*|service ps after --force*|service ps after update*|service ps job*", "value|row",
        "cf-opts.1.Node|cf-job.*",
        "which of two nodes the scheduler finds equal gets a task (the manager and the worker, neither holding the "
        "service's tasks): SwarmKit takes them in Go's map order, raftswarm the node with the fewest tasks, then "
        "the smaller ID; a job's task in slot 0 is named after its node, so its row's name follows the choice",
    ),
    Allowed(
        "service create bind without source", "exit|message|output", "",
        "raftswarm refuses at create the bind mount Docker's executor refuses on the node "
        "(daemon/cluster/executor/container/validate.go), where Docker swarm accepts the service and rejects "
        "each of its tasks; DESIGN: bad input gets a clear error and changes nothing",
    ),
    Allowed(
        "service rm what bad input made", "message|output", "",
        "follows from `service create bind without source`: raftswarm made no cf-bad-mount to remove",
    ),
    Allowed(
        "secret rm in use|config rm in use|sdk remove_secret in use", "message", "",
        "the same services in another order: both list them by service ID, as SwarmKit's store index gives "
        "them, and IDs are random",
        raftswarm="*in use by the following services: cf-web, cf-opts|*in use by the following services: cf-opts, cf-web",
    ),
    Allowed(
        "network ls --filter name", "row", "cf-internal",
        "dockerd 20.10 matches a swarm network's name filter against the whole name only (it hands the filter to "
        "SwarmKit's exact Names); raftswarm matches part of the name, as Docker documents `--filter name` and "
        "does for local networks",
    ),
    Allowed(
        "network create bridge scope swarm|network rm bridge scope swarm", "exit|message|output", "",
        "raftswarm's swarm networks are overlays: a swarm-scoped bridge network (a local bridge on every node) "
        "is refused with a clear message rather than accepted and not provided",
    ),
    Allowed(
        "config create unknown template driver", "exit|message|output", "",
        "Docker swarm stores a config with a template driver it does not have and fails each task that uses it; "
        "raftswarm refuses it at create (DESIGN: bad input gets a clear error and changes nothing)",
    ),
    Allowed(
        "service create bad hostname template", "message", "",
        "SwarmKit's check, with the template engine's own words after `expanding hostname failed`: Go's "
        "text/template names a position and a Go type (`template: expansion:1:2: ... in type *template.Context`), "
        "raftswarm the template and the fields there are",
        raftswarm="*expanding the hostname*failed*can't evaluate field Nope*",
    ),
]  # fmt: skip
"""Differences that stay, each with its reason. Keep it short: anything else gets fixed in raftswarm."""


def _cli_env(host: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / "docker-config"),
        "DOCKER_HOST": host,
        "DOCKER_API_VERSION": API_VERSION,
    }


def _run_scenario(target: Target) -> list[Outcome]:
    write_files(target.workdir)
    target.learn()
    try:
        return [step.run(target) for step in SCENARIO]
    finally:
        target.close()


@pytest.mark.usefixtures("docker_swarm_runs_here")
def test_raftswarm_answers_the_docker_cli_and_sdk_as_docker_swarm_does(tmp_path_factory):
    base = tmp_path_factory.mktemp("conformance")
    seconds: dict[str, float] = {}
    mark = time.monotonic()
    docker_swarm = asyncio.run(DockerSwarm.up(base, managers=1, workers=1))
    try:
        seconds["Docker swarm up"] = time.monotonic() - mark
        mark = time.monotonic()
        host = docker_swarm.managers[0].host
        theirs = _run_scenario(Target(_cli_env(host, base / "docker-home"), base / "docker-files"))
        seconds["scenario on Docker"] = time.monotonic() - mark
    finally:
        mark = time.monotonic()
        docker_swarm.down()
        seconds["Docker swarm down"] = time.monotonic() - mark

    mark = time.monotonic()
    name = f"cf{secrets.token_hex(3)}"  # its namespaces and interfaces are named after it: unique per run
    cluster = asyncio.run(
        SwarmCluster.up(name, managers=1, workers=1, base_dir=base / "clusters", heartbeat_period=0.5)
    )
    try:
        seconds["raftswarm up"] = time.monotonic() - mark
        mark = time.monotonic()
        host = f"unix://{cluster.node('manager1').socket}"
        ours = _run_scenario(Target(_cli_env(host, base / "raftswarm-home"), base / "raftswarm-files"))
        seconds["scenario on raftswarm"] = time.monotonic() - mark
    finally:
        mark = time.monotonic()
        cluster.down()
        seconds["raftswarm down"] = time.monotonic() - mark

    found: list[Difference] = []
    for step, docker_outcome, raftswarm_outcome in zip(SCENARIO, theirs, ours, strict=True):
        found += differences(step.title, docker_outcome, raftswarm_outcome)
    unexplained = [d for d in found if not any(entry.covers(d) for entry in ALLOWED)]
    print(f"\n{len(SCENARIO)} steps; {len(found)} differences, {len(unexplained)} not on the allow list")
    print("; ".join(f"{name} {value:.1f} s" for name, value in seconds.items()))
    print(table(found, ALLOWED))
    if os.environ.get("RAFTSWARM_CONFORMANCE_REPORT"):
        report = [dataclasses.asdict(d) | {"allowed": d not in unexplained} for d in found]
        Path(os.environ["RAFTSWARM_CONFORMANCE_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    assert not unexplained, f"{len(unexplained)} differences from Docker swarm:\n{table(unexplained)}"


def _traces(swarm: DockerSwarm) -> list[str]:
    """What of the swarm is still on the host: namespaces, interfaces, mounts, cgroups, processes, files."""
    namespace = f"dsw-{swarm.tag}-"  # and the nodes' cgroups
    namespaces = subprocess.run(["ip", "netns"], check=False, capture_output=True, text=True).stdout.splitlines()
    found = [f"netns {line}" for line in namespaces if namespace in line]
    interfaces = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True, text=True).stdout.splitlines()
    found += [f"link {line}" for line in interfaces if f"-{swarm.tag}" in line]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line}" for line in mounts if str(swarm.directory) in line or namespace in line]
    found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"*/{namespace}*")]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(swarm.directory).encode() in (entry / "cmdline").read_bytes():
                found.append(f"process {entry.name}: {(entry / 'cmdline').read_bytes()[:100]!r}")
        except OSError:
            continue
    if swarm.directory.exists():
        found.append(f"directory {swarm.directory}")
    return found


def _docker_chains() -> list[str]:
    """dockerd's iptables chains in the host's own tables (it must keep them in its namespace)."""
    chains = []
    for table_name in ("filter", "nat"):
        listed = subprocess.run(
            ["iptables", "-t", table_name, "-S"], check=False, capture_output=True, text=True
        ).stdout
        chains += [line for line in listed.splitlines() if "DOCKER" in line]
    return chains


@pytest.mark.usefixtures("docker_swarm_runs_here")
def test_a_docker_swarm_leaves_nothing_on_the_host_even_after_a_kill_9(tmp_path_factory):
    swarm = asyncio.run(DockerSwarm.up(tmp_path_factory.mktemp("dsw"), managers=1, workers=1))
    try:
        manager, worker = swarm.managers[0], swarm.workers[0]
        swarm.docker(
            manager, "service", "create", "-d", "--name", "t", "--replicas", "2", "--publish", "8080:80",
            "--no-resolve-image", "busybox", "sleep", "1000",
        )  # fmt: skip
        listing = ("service", "ps", "t", "--filter", "desired-state=running", "--format", "{{json .}}")
        deadline = time.monotonic() + 60
        while not running(2)(swarm.docker(manager, *listing)):
            assert time.monotonic() < deadline, swarm.docker(manager, "service", "ps", "--no-trunc", "t").stdout
            time.sleep(0.3)
        assert _docker_chains() == []
        swarm.kill(worker)  # its containers, their shims and its data root's bind mount stay behind
        assert any(
            str(worker.directory / "root") in line for line in Path("/proc/self/mountinfo").read_text().splitlines()
        )
    finally:
        swarm.down()
    assert _traces(swarm) == []
    assert _docker_chains() == []
    if not other_daemons():  # else what dockerd made outside its directories may be theirs now, and stays
        assert [path for path in swarm.host_paths if os.path.lexists(path)] == []
