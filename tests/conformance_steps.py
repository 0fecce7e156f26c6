"""The two kinds of conformance step -- a docker CLI invocation, a docker SDK call -- and the `Target` they run
against: one swarm (real Docker's or raftswarm's) seen through the docker CLI and the docker SDK, both at the
same API version.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from conformance_outcomes import Normaliser, Outcome, outcome_of_json, outcome_of_listing

CLI_TIMEOUT = 60.0


@dataclass
class Target:
    """A swarm to run the scenario on, by its API socket. `env`: the docker CLI's environment (DOCKER_HOST,
    DOCKER_API_VERSION; the SDK uses the same);
    `workdir`: where the scenario's files are; `values`: what `{name}` in a step's arguments becomes (the
    worker's node ID, ...); `facts`: literal strings of this swarm and their placeholders, for `Normaliser`."""

    env: dict[str, str]
    workdir: Path
    values: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    _sdk: docker.APIClient | None = None

    def docker(
        self, args: list[str], stdin: str | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], input=stdin, check=False, capture_output=True, text=True, env=self.env, timeout=timeout
        )

    @property
    def sdk(self) -> docker.APIClient:
        if self._sdk is None:
            self._sdk = docker.APIClient(
                base_url=self.env["DOCKER_HOST"], version=self.env["DOCKER_API_VERSION"], timeout=CLI_TIMEOUT
            )
        return self._sdk

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()

    def learn(self) -> None:
        """The swarm's own names and addresses, to be replaced in what it says."""
        nodes = json.loads(self.docker(["node", "inspect", *self.docker(["node", "ls", "-q"]).stdout.split()]).stdout)
        for node in nodes:
            role = node["Spec"]["Role"]
            self.values[role] = node["ID"]
            self.facts[node["ID"]] = f"<{role.upper()}-ID>"
            self.facts[node["Description"]["Hostname"]] = f"<{role.upper()}-HOSTNAME>"
            self.facts[node["Status"]["Addr"]] = f"<{role.upper()}-ADDR>"
        self.facts[str(self.workdir)] = "<WORKDIR>"
        self.values["workdir"] = str(self.workdir)

    def normaliser(self) -> Normaliser:
        return Normaliser(self.facts)


def _fill(arg: str, values: dict[str, str]) -> str:
    """`{worker}` -> the worker's node ID, ...; Go templates' `{{...}}` are left alone."""
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


@dataclass(frozen=True)
class Cli:
    """`docker ARGS`. `output`: "text" (stdout compared, normalised), "json" (keys and types), "listing" (one
    JSON object per line: rows of normalised values) or "none" (progress output: not compared).
    `until`: repeat the step (every 0.3 s, at most `within` seconds) until the predicate holds for its result;
    what is compared is the last try."""

    title: str
    args: tuple[str, ...]
    stdin: str | None = None
    output: str = "text"
    until: Callable[[subprocess.CompletedProcess[str]], bool] | None = None
    within: float = 30.0

    def run(self, target: Target) -> Outcome:
        args = [_fill(arg, target.values) for arg in self.args]
        deadline = time.monotonic() + self.within
        while True:
            done = target.docker(args, self.stdin)
            if self.until is None or self.until(done) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        normalise = target.normaliser()
        if self.output == "json" and done.stdout.strip():
            return outcome_of_json(done.returncode, done.stderr, done.stdout, normalise)
        if self.output == "listing":
            return outcome_of_listing(done.returncode, done.stderr, done.stdout, normalise)
        if self.output == "none":
            return Outcome(done.returncode, normalise(done.stderr))
        return Outcome(done.returncode, normalise(done.stderr), output=normalise(done.stdout))


@dataclass(frozen=True)
class Sdk:
    """A docker SDK (`docker.APIClient`) call; its answer is compared as JSON, an `APIError` by its HTTP status
    and message."""

    title: str
    call: Callable[[docker.APIClient, dict[str, str]], Any]

    def run(self, target: Target) -> Outcome:
        normalise = target.normaliser()
        try:
            answer = self.call(target.sdk, target.values)
        except docker.errors.APIError as exc:
            return Outcome(exc.status_code or "no status", normalise(str(exc.explanation or exc)))
        except docker.errors.DockerException as exc:
            return Outcome(type(exc).__name__, normalise(str(exc)))
        return outcome_of_json(0, "", answer, normalise)


Step = Cli | Sdk


def running(count: int) -> Callable[[subprocess.CompletedProcess[str]], bool]:
    """For `service ps/stack ps --format '{{json .}}'`: exactly `count` tasks, all Running."""

    def holds(done: subprocess.CompletedProcess[str]) -> bool:
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return len(lines) == count and all(line.get("CurrentState", "").startswith("Running") for line in lines)

    return holds


def succeeds(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode == 0


def empty(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode == 0 and not done.stdout.strip()
