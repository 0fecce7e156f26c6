"""`DockerSwarm`: real Docker swarm mode on this machine, to measure raftswarm against (the conformance tests,
benchmarks): one dockerd per network namespace on a private bridge, formed as a user forms one, with `docker
swarm init` on the first manager and `docker swarm join` with the swarm's own tokens on the others, and the
sample images (`images.samples`, built from Debian packages: Docker Hub is out of reach) loaded into every node.

dockerd is Debian's `docker.io` (20.10, API 1.41, starting its own containerd). Each runs as

    nsenter --net=/run/netns/dsw-<tag>-<n> unshare --uts <sethostname> env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
        dockerd --config-file D/daemon.json --data-root D/root --exec-root D/exec -H unix://D/docker.sock ...

`nsenter`, not `ip netns exec`: that one remounts /sys, and dockerd then finds no cgroups. The environment
variable makes a worker use the image it has instead of asking Docker Hub first; the docker CLI must say
`--no-resolve-image` (`stack deploy --resolve-image never`) for the same reason.

What a dockerd touches outside its directory, as measured with 20.10.24, and how `down` removes it:

- iptables rules, sysctls, `docker_gwbridge`, the ingress sandbox, VXLAN devices: inside its own namespace
  (namespaces have their own netfilter tables; the host's iptables and nftables stay as they were), gone with
  it. `--iptables` stays on, since the routing mesh needs it there; `--bridge none`: nothing uses docker0.
- mounts in the host's mount namespace: its data root bind-mounted onto itself (left behind by a dockerd
  killed with -9), each container's overlay, each sandbox's nsfs: all under the node's directory, unmounted.
- processes that outlive it: its containerd, a containerd-shim per container, the containers' processes:
  found by the node's directory in their command line or by the node's own cgroup parent, and killed by PID.
- cgroups: `--cgroup-parent /dsw-<tag>-<n>` (instead of the shared `/docker`), removed.
- paths it makes whatever its flags say: /run/containerd/s (containerd 1.6's shim sockets), /run/docker/plugins,
  /var/lib/docker/network (libnetwork's default store): removed if they were not there before `up` and no
  other dockerd or containerd runs by then.
- /etc/docker/key.json (the engine ID): kept in the node's directory instead (`deprecated-key-path`).

Every namespace, interface and node process is written to `dockerswarm.json` before it is made, so `down`
removes all of it even after an `up` that failed halfway, from this process or (through `DockerSwarm.load`)
another one:

    python3 -m raftswarm.localcluster.dockerswarm up DIR [--managers 3 --workers 2]   # prints the nodes' DOCKER_HOSTs
    python3 -m raftswarm.localcluster.dockerswarm down DIR/dsw-<tag>
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ..images.samples import SAMPLES
from .hostnet import (
    BridgedNamespace,
    ClusterError,
    choose_subnet,
    host_networks,
    make_bridged_namespaces,
    netns_unavailable_reason,
    record_before_making,
    remove_recorded,
)
from .processes import NodeProcess, NodeStartError, log_tail, process_start_time, spawn, stop_all, wait_for_api

API_VERSION = "1.41"
"""dockerd 20.10's API version. The docker CLI is told it (DOCKER_API_VERSION), so a newer CLI speaks it too."""

SWARM_PORT = 2377
PREFIX = "dsw"
"""Of every namespace, interface, cgroup and directory a `DockerSwarm` makes (raftswarm's own are `rsw`)."""
RECORD_FILE = "dockerswarm.json"

# Interface names hold at most 15 characters; the longest is a node's veth, "dswv" + 2 digits + "-" + tag.
TAG_LENGTH = 6
MAX_NODES = 99
# sun_path holds 108 bytes. The longest socket is containerd's debug socket under the node's exec root.
SOCKET_PATH_MAX = 107
_LONGEST_SOCKET = "exec/containerd/containerd-debug.sock"

# dockerd answers on its socket within a second or two (it boots its containerd first); joining a manager
# is a Raft membership change of a few seconds on a loaded machine.
API_START_TIMEOUT = 30.0
UP_TIMEOUT_BASE = 60.0
UP_TIMEOUT_PER_NODE = 5.0
POLL_INTERVAL = 0.2
CLI_TIMEOUT = 60.0
# dockerd stops its containers before it exits, a swarm task's after its own stop grace period (10 s unless
# the service says otherwise); `down` kills the containers first, so dockerd has nothing to wait for.
SHUTDOWN_TIMEOUT = 2
STOP_GRACE = 20.0
KILL_ROUNDS = 5

HOST_PATHS = (
    "/run/containerd/s",
    "/run/containerd",
    "/run/docker/plugins",
    "/run/docker",
    "/var/lib/docker/network",
    "/var/lib/docker",
)
"""What dockerd and containerd make outside their flags' directories (deepest first)."""
_REMOVED_WHOLE = {"/run/containerd/s", "/var/lib/docker/network"}
"""Of `HOST_PATHS`, those removed with their contents (the sockets of shims killed with SIGKILL, libnetwork's
local-kv.db); the others only when empty."""
CGROUP_ROOT = Path("/sys/fs/cgroup")

# `unshare --uts` gives dockerd a UTS namespace of its own (so `node ls` tells the nodes apart); this sets
# the hostname in it, then becomes dockerd (exec keeps the PID the harness recorded).
_EXEC_WITH_HOSTNAME = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"


class DockerUnavailable(ClusterError):
    """Docker swarm cannot run here; the message says what is missing."""


def unavailable_reason(cli: str | None = None) -> str | None:
    """Why a `DockerSwarm` cannot run on this machine, or None if it can."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (apt-get install docker.io)"
    if (cli or shutil.which("docker")) is None:
        return "the docker CLI is not installed (apt-get install docker.io)"
    for tool in ("nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is not installed"
    return netns_unavailable_reason()


@dataclass(eq=False)
class DockerNode:
    """One dockerd: `manager1`, ..., `worker1`, ...; `number` counts from 1 across both."""

    name: str
    role: str
    number: int
    ip: str
    directory: Path
    namespace: str
    hostname: str
    node_id: str = ""
    process: NodeProcess | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def host(self) -> str:
        """What DOCKER_HOST says to reach this node."""
        return f"unix://{self.socket}"

    @property
    def addr(self) -> str:
        return f"{self.ip}:{SWARM_PORT}"

    @property
    def log_path(self) -> Path:
        return self.directory / "dockerd.log"

    @property
    def pidfile(self) -> Path:
        """Ours ("PID START_TIME", written by the child before it execs); dockerd's own is docker.pid."""
        return self.directory / "node.pid"

    @property
    def cgroup_parent(self) -> str:
        return self.namespace

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "number": self.number,
            "ip": self.ip,
            "namespace": self.namespace,
            "hostname": self.hostname,
            "node_id": self.node_id,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], directory: Path) -> DockerNode:
        node = cls(
            record["name"], record["role"], record["number"], record["ip"], directory / str(record["number"]),
            record["namespace"], record["hostname"], record.get("node_id", ""),
        )  # fmt: skip
        node.process = NodeProcess.from_pidfile(node.pidfile)
        return node


@dataclass(eq=False)
class DockerSwarm:
    """A Docker swarm of `managers` + `workers` dockerd processes; `docker(node, ...)` runs the docker CLI
    against one of them."""

    tag: str
    directory: Path
    subnet: str = ""
    bridge: str = ""
    nodes: list[DockerNode] = field(default_factory=list)
    resources: list[dict[str, str]] = field(default_factory=list)
    host_paths: list[str] = field(default_factory=list)
    """Of `HOST_PATHS`, those that did not exist before `up`: `down` removes them."""
    cli: str = "docker"
    up_seconds: float | None = None
    form_seconds: float | None = None
    """Of `up_seconds`, from `swarm init` to every node Ready (the rest: dockerds starting, images loaded)."""

    # -- making one ------------------------------------------------------------------------------------

    @classmethod
    async def up(
        cls,
        base_dir: Path | str,
        managers: int = 3,
        workers: int = 2,
        images: Sequence[str] = ("busybox",),
        cli: str | None = None,
        timeout: float | None = None,
    ) -> DockerSwarm:
        """Start the dockerds, load `images` (names of `images.samples`) into each, form the swarm and wait
        until every node is Ready. Everything lives in a new directory `base_dir/dsw-<tag>`, `<tag>` unique per
        run. If anything fails, everything made so far is removed and the error raised."""
        reason = unavailable_reason(cli)
        if reason is not None:
            raise DockerUnavailable(f"cannot run Docker swarm here: {reason}")
        if managers < 1 or workers < 0 or managers + workers > MAX_NODES:
            raise ClusterError(f"a Docker swarm here holds 1 to {MAX_NODES} nodes, at least one a manager")
        unknown = [name for name in images if name not in SAMPLES]
        if unknown:
            raise ClusterError(f"no sample image {unknown[0]!r}: choose from {', '.join(sorted(SAMPLES))}")
        tag = secrets.token_hex(TAG_LENGTH // 2)
        directory = Path(base_dir).resolve() / f"{PREFIX}-{tag}"
        longest = directory / str(managers + workers) / _LONGEST_SOCKET
        if len(str(longest).encode()) > SOCKET_PATH_MAX:
            raise ClusterError(
                f"{longest} is longer than a unix socket address can hold ({SOCKET_PATH_MAX} bytes): use a shorter base_dir"
            )
        directory.mkdir(parents=True)
        swarm = cls(tag, directory, cli=cli or shutil.which("docker") or "docker")
        swarm.host_paths = [path for path in HOST_PATHS if not os.path.lexists(path)]
        started = time.monotonic()
        deadline = started + (timeout or UP_TIMEOUT_BASE + UP_TIMEOUT_PER_NODE * (managers + workers))
        try:
            swarm._plan(managers, workers)
            swarm._create_network()
            for node in swarm.nodes:
                swarm._start(node)
            for node in swarm.nodes:
                try:
                    await wait_for_api(
                        node.name, node.socket, node.running, node.log_path, min(API_START_TIMEOUT, _left(deadline))
                    )
                except NodeStartError as exc:
                    raise ClusterError(f"dockerd of {node.name} did not start: {exc}") from None
            await asyncio.to_thread(swarm._load_images, images)
            forming = time.monotonic()
            await asyncio.to_thread(swarm._form, deadline)
            swarm.form_seconds = round(time.monotonic() - forming, 2)
        except BaseException as failure:
            try:
                swarm.down()
            except ClusterError as cleanup:
                failure.add_note(str(cleanup))
            raise
        swarm.up_seconds = round(time.monotonic() - started, 2)
        swarm.save()
        return swarm

    def _plan(self, managers: int, workers: int) -> None:
        subnet = choose_subnet(host_networks())
        self.subnet = str(subnet)
        self.bridge = f"{PREFIX}b-{self.tag}"
        addresses = list(subnet.hosts())[1:]  # .1 is the host's, on the bridge
        names = [f"manager{i}" for i in range(1, managers + 1)] + [f"worker{i}" for i in range(1, workers + 1)]
        for number, name in enumerate(names, start=1):
            namespace = f"{PREFIX}-{self.tag}-{number}"
            self.nodes.append(
                DockerNode(
                    name,
                    name.rstrip("0123456789"),
                    number,
                    str(addresses[number - 1]),
                    self.directory / str(number),
                    namespace,
                    f"{PREFIX}-{self.tag}-{name}",
                )
            )
        self.save()

    def _create_network(self) -> None:
        """The bridge with the host's address, then per node: namespace, veth pair with `eth0` inside."""
        make_bridged_namespaces(
            self.bridge,
            ipaddress.IPv4Network(self.subnet),
            [BridgedNamespace(n.namespace, f"{PREFIX}v{n.number}-{self.tag}", n.ip) for n in self.nodes],
            self._make,
        )

    def _make(self, kind: str, name: str, existing: set[str]) -> None:
        record_before_making(self.resources, self.save, kind, name, existing, "it is not this swarm's")

    def _argv(self, node: DockerNode) -> list[str]:
        config = node.directory / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(node.directory / "key.json")}) + "\n")
        dockerd = [
            shutil.which("dockerd") or "dockerd",
            "--config-file", str(config),
            "--data-root", str(node.directory / "root"),
            "--exec-root", str(node.directory / "exec"),
            "--pidfile", str(node.directory / "docker.pid"),
            "-H", node.host,
            "--bridge", "none",
            "--cgroup-parent", f"/{node.cgroup_parent}",
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
        ]  # fmt: skip
        environment = [shutil.which("env") or "/usr/bin/env", "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"]
        return [
            "nsenter", f"--net=/run/netns/{node.namespace}",
            "unshare", "--uts", sys.executable, "-c", _EXEC_WITH_HOSTNAME, node.hostname,
            *environment, *dockerd,
        ]  # fmt: skip

    def _start(self, node: DockerNode) -> None:
        node.directory.mkdir(exist_ok=True)
        node.process = NodeProcess.started(spawn(self._argv(node), node.log_path, detach=True, pidfile=node.pidfile))

    def _load_images(self, images: Sequence[str]) -> None:
        for name in images:
            sample = SAMPLES[name]()
            for node in self.nodes:
                self.docker(node, "load", "--quiet", "--input", str(sample.tarball))

    def _form(self, deadline: float) -> None:
        """`swarm init` on the first manager, `swarm join` with the tokens on the others (managers one at a
        time: each is a Raft membership change), then wait until every node is Ready."""
        first, *rest = self.nodes
        self.docker(first, "swarm", "init", "--advertise-addr", first.ip, "--listen-addr", first.addr)
        tokens = {
            role: self.docker(first, "swarm", "join-token", "-q", role).stdout.strip() for role in ("manager", "worker")
        }
        for node in rest:
            self.docker(
                node, "swarm", "join", "--token", tokens[node.role], "--advertise-addr", node.ip,
                "--listen-addr", node.addr, first.addr,
            )  # fmt: skip
        for node in self.nodes:
            node.node_id = self.docker(node, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        self.save()
        wanted = {node.node_id for node in self.nodes}
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            listed = self.docker(first, "node", "ls", "--format", "{{json .}}", check=False)
            seen = (
                [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
                if listed.returncode == 0
                else []
            )
            if _swarm_ready(seen, wanted):
                return
            time.sleep(POLL_INTERVAL)
        raise ClusterError(f"the Docker swarm was not ready in time: `docker node ls` shows {seen}")

    # -- using one -------------------------------------------------------------------------------------

    @property
    def managers(self) -> list[DockerNode]:
        return [node for node in self.nodes if node.role == "manager"]

    @property
    def workers(self) -> list[DockerNode]:
        return [node for node in self.nodes if node.role == "worker"]

    def node(self, name: str) -> DockerNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"this Docker swarm has no node {name!r}")

    def env(self, node: DockerNode) -> dict[str, str]:
        """The environment for the docker CLI (or SDK) to talk to `node` at dockerd's API version; the CLI's
        configuration is kept in the swarm's directory."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "DOCKER_CONFIG": str(self.directory / "docker-config"),
            "DOCKER_HOST": node.host,
            "DOCKER_API_VERSION": API_VERSION,
        }

    def docker(
        self, node: DockerNode, *args: str, stdin: str | None = None, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against `node`; with `check`, a failure raises `ClusterError` with its output."""
        done = subprocess.run(
            [self.cli, *args],
            input=stdin,
            check=False,
            capture_output=True,
            text=True,
            env=self.env(node),
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"`docker {' '.join(args)}` on {node.name} failed ({done.returncode}): {done.stderr.strip()}\n"
                f"{node.name}'s log:\n{log_tail(node.log_path)}"
            )
        return done

    def kill(self, node: DockerNode) -> None:
        """kill -9 the node's dockerd (its containerd, shims and containers live on, as they would)."""
        if node.process is not None:
            node.process.kill()

    async def restart(self, node: DockerNode, timeout: float = API_START_TIMEOUT) -> None:
        """Start a node whose dockerd was killed again (on its data root: it comes back in the swarm) and wait
        until its API answers."""
        if node.running():
            raise ClusterError(f"the dockerd of {node.name} still runs")
        self._start(node)
        try:
            await wait_for_api(node.name, node.socket, node.running, node.log_path, timeout)
        except NodeStartError as exc:
            raise ClusterError(f"dockerd of {node.name} did not start again: {exc}") from None

    # -- records ---------------------------------------------------------------------------------------

    def save(self) -> None:
        record = {
            "tag": self.tag,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "cli": self.cli,
            "up_seconds": self.up_seconds,
            "resources": self.resources,
            "host_paths": self.host_paths,
            "nodes": [node.record() for node in self.nodes],
        }
        staging = self.directory / (RECORD_FILE + ".tmp")
        staging.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(staging, self.directory / RECORD_FILE)

    @classmethod
    def load(cls, directory: Path | str) -> DockerSwarm:
        """The swarm recorded in `directory` (by this process or another), to bring down."""
        directory = Path(directory).resolve()
        try:
            record = json.loads((directory / RECORD_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no Docker swarm recorded in {directory}: {exc}") from None
        return cls(
            record["tag"],
            directory,
            record["subnet"],
            record["bridge"],
            [DockerNode.from_record(n, directory) for n in record["nodes"]],
            record["resources"],
            record["host_paths"],
            record["cli"],
            record.get("up_seconds"),
        )

    # -- removing it -----------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every dockerd (SIGTERM, SIGKILL after a grace), kill what outlived them by PID, unmount, remove
        namespaces, interfaces, cgroups, the host paths dockerd made, and the directory. What could not be
        removed is listed in the error (and stays recorded, so `down` again retries)."""
        failures: list[str] = []
        for node in self.nodes:
            if node.process is None:  # started by another process, or `up` died before recording it
                node.process = NodeProcess.from_pidfile(node.pidfile)
        _kill(self._container_processes())
        stuck = stop_all([node.process for node in self.nodes if node.process is not None], STOP_GRACE)
        failures += [
            f"dockerd of {n.name} (PID {n.process.pid}) is still running" for n in self.nodes if n.process in stuck
        ]
        failures += self._kill_leftovers()
        failures += _unmount_under(self.directory)
        failures += self._remove_network()
        failures += self._remove_cgroups()
        failures += self._remove_host_paths()
        if failures:
            self.save()
            raise ClusterError(
                f"the Docker swarm in {self.directory} is not completely down:\n"
                + "\n".join(failures)
                + f"\nrun `python3 -m raftswarm.localcluster.dockerswarm down {self.directory}` to retry"
            )
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.directory.exists():
            raise ClusterError(f"could not remove {self.directory}")

    def _container_processes(self) -> list[NodeProcess]:
        """The processes of the nodes' containers: those in a node's cgroup."""
        pids = set()
        for node in self.nodes:
            for procs in _cgroup_dirs(node.cgroup_parent, "cgroup.procs"):
                try:
                    pids.update(int(pid) for pid in procs.read_text().split())
                except OSError:
                    continue  # the container's cgroup went away meanwhile
        return _live(pids)

    def _leftover_processes(self) -> list[NodeProcess]:
        """What outlived the dockerds: containerd, shims and the like (the swarm's directory in their command
        line) and containers."""
        marker = str(self.directory).encode()
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
                except OSError:
                    continue
        return _live(pids) + self._container_processes()

    def _kill_leftovers(self) -> list[str]:
        for _ in range(KILL_ROUNDS):  # a shim killed may leave its container to a later round
            leftovers = self._leftover_processes()
            if not leftovers:
                return []
            _kill(leftovers)
        return [f"process {p.pid} ({_command(p.pid)}) outlived SIGKILL" for p in self._leftover_processes()]

    def _remove_network(self) -> list[str]:
        self.resources, failures = remove_recorded(self.resources)
        return failures

    def _remove_cgroups(self) -> list[str]:
        failures = []
        for node in self.nodes:
            for top in _cgroup_dirs(node.cgroup_parent):
                for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                    try:
                        directory.rmdir()
                    except OSError as exc:
                        failures.append(f"cgroup {directory}: {exc.strerror}")
        return failures

    def _remove_host_paths(self) -> list[str]:
        if not self.host_paths:
            return []
        others = other_daemons()
        if others:
            return []  # theirs now, perhaps; an empty directory or a stale store is all that is left of ours
        failures = []
        for path in self.host_paths:
            try:
                if path in _REMOVED_WHOLE:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if path in _REMOVED_WHOLE or not os.path.isdir(path) or os.listdir(path) == []:
                    failures.append(f"{path}: {exc.strerror}")
        return failures

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _swarm_ready(nodes: list[dict[str, Any]], wanted: set[str]) -> bool:
    """`docker node ls` shows exactly the wanted nodes, each Ready, managers Reachable, and one Leader."""
    leaders = sum(node.get("ManagerStatus") == "Leader" for node in nodes)
    return (
        {node.get("ID") for node in nodes} == wanted
        and all(node.get("Status") == "Ready" for node in nodes)
        and all(node.get("ManagerStatus") in ("", "Leader", "Reachable") for node in nodes)
        and leaders == 1
    )


def _cgroup_dirs(parent: str, inside: str = "") -> list[Path]:
    """The node's cgroup in every hierarchy (each cgroup v1 controller, or the one v2 tree); with `inside`, that
    file of it and of every cgroup below it instead."""
    candidates = [CGROUP_ROOT / parent] + [
        hierarchy / parent for hierarchy in CGROUP_ROOT.iterdir() if hierarchy.is_dir()
    ]
    tops = [top for top in dict.fromkeys(candidates) if top.is_dir()]
    if not inside:
        return tops
    return [found for top in tops for found in sorted(top.rglob(inside))]


def _unmount_under(directory: Path) -> list[str]:
    """Unmount every mount at or below `directory`, deepest first (lazily: a busy one goes once unused)."""
    prefix = str(directory) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # octal escapes (\040 for a space)
        if point == str(directory) or point.startswith(prefix):
            points.append(point)
    failures = []
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        done = subprocess.run(["umount", "--lazy", point], check=False, capture_output=True, text=True)
        if done.returncode != 0 and os.path.ismount(point):
            failures.append(f"could not unmount {point}: {done.stderr.strip()}")
    return failures


def other_daemons() -> list[int]:
    """PIDs of dockerd and containerd processes still running (after ours have ended: someone else's). Ours
    may linger as zombies until init reaps them; those do not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("dockerd", "containerd"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if process_start_time(pid) is not None]


def _live(pids: set[int]) -> list[NodeProcess]:
    processes = [NodeProcess(pid, process_start_time(pid) or -1) for pid in pids]
    return [process for process in processes if process.running()]


def _kill(processes: list[NodeProcess]) -> None:
    for process in processes:
        process.signal(signal.SIGKILL)
    for process in processes:
        process.wait(5.0)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "gone"


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m raftswarm.localcluster.dockerswarm", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a Docker swarm in a new directory under DIR")
    up.add_argument("base_dir", metavar="DIR")
    up.add_argument("--managers", type=int, default=3)
    up.add_argument("--workers", type=int, default=2)
    down = commands.add_parser("down", help="remove the Docker swarm recorded in DIR (what `up` printed)")
    down.add_argument("directory", metavar="DIR")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            swarm = asyncio.run(DockerSwarm.up(args.base_dir, args.managers, args.workers))
            print(f"# Docker swarm in {swarm.directory}, up in {swarm.up_seconds} s")
            for node in swarm.nodes:
                print(f"# {node.name} {node.ip} {node.node_id}")
            print(f"export DOCKER_HOST={swarm.managers[0].host} DOCKER_API_VERSION={API_VERSION}")
        else:
            DockerSwarm.load(args.directory).down()
    except ClusterError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
