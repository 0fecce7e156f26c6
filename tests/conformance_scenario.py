"""The conformance scenario: one list of docker CLI and docker SDK steps, run in order against a swarm of one
manager and one worker -- real Docker's, then raftswarm's -- with the files it needs (`write_files`).

Objects are named `cf-*`. Steps that change things use `-d` and are followed by a step that waits (`until`) for
what a user would wait for, so both swarms are compared in the same settled state. `{worker}` is the worker's
node ID, `{workdir}` the directory of the files.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from conformance_steps import Cli, Sdk, Step, empty, running, succeeds

SECRET_LIMIT = 500 * 1024
"""Docker's (SwarmKit's) limit on secret data: less than 500 KiB."""
CONFIG_LIMIT = 1000 * 1024
"""and on config data: less than 1000 KiB."""

IMAGE = ("--init", "--no-resolve-image", "busybox")
"""Services run the busybox image every node has (Docker Hub is out of reach: no digest to resolve), under an
init, so their `sleep` stops at SIGTERM and removals converge in moments on both swarms. (Asked per service:
dockerd 20.10's own `--init` does not reach swarm tasks, raftswarm-node's does.)"""

COMPOSE = """\
version: "3.8"
services:
  app:
    image: busybox
    command: ["sleep", "1000"]
    init: true
    environment: [CF=1]
    networks: [front]
    secrets: [stack-secret]
    configs: [stack-config]
    deploy:
      replicas: 1
      labels: [cf=1]
      restart_policy: {condition: on-failure}
      update_config: {parallelism: 1, delay: 1s}
      # On the manager on both swarms, so that `network inspect` there has Peers and `stack ps` the same node.
      placement: {constraints: [node.role == manager]}
networks:
  front:
    driver: overlay
secrets:
  stack-secret:
    file: ./stack-secret.txt
configs:
  stack-config:
    file: ./stack-config.txt
"""

RICH_COMPOSE = """\
version: "3.8"
services:
  web:
    image: busybox
    command: ["sleep", "1000"]
    init: true
    hostname: "web-{{.Task.Slot}}"
    environment:
      MODE: rich
      EMPTY: ""
    labels: {cf.container: "1"}
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      timeout: 1s
      retries: 2
      start_period: 1s
    stop_grace_period: 3s
    stop_signal: SIGTERM
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    logging:
      driver: json-file
      options: {max-size: "1m"}
    ports:
      - target: 80
        published: 8090
        protocol: tcp
        mode: ingress
    volumes:
      - type: volume
        source: data
        target: /data
      - type: tmpfs
        target: /cache
        tmpfs: {size: 1048576}
    networks:
      back:
        aliases: [rich-web]
    deploy:
      mode: replicated
      replicas: 2
      endpoint_mode: vip
      labels: {cf.service: "1"}
      resources:
        limits: {cpus: "0.5", memory: 64M}
        reservations: {cpus: "0.1", memory: 16M}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 30s}
      update_config: {parallelism: 2, delay: 1s, failure_action: rollback, monitor: 2s, max_failure_ratio: 0.3, order: start-first}
      rollback_config: {parallelism: 1, delay: 1s, failure_action: pause, order: stop-first}
      placement:
        constraints: [node.role == worker]
        preferences: [{spread: node.labels.cf}]
        max_replicas_per_node: 2
volumes:
  data:
    driver: local
    labels: {cf: "1"}
networks:
  back:
    driver: overlay
    attachable: true
    labels: {cf: "1"}
"""

# Valid YAML and a valid compose file, so the CLI sends it: the manager must refuse the constraint.
BAD_COMPOSE = """\
version: "3.8"
services:
  app:
    image: busybox
    deploy:
      placement:
        constraints: ["node.role=manager"]
"""


def ps_until_running(name: str, command: str, target: str, count: int) -> Cli:
    """`docker service ps` or `docker stack ps` of `target`'s tasks meant to run, asked until `count` run."""
    return Cli(
        name,
        (command, "ps", target, "--filter", "desired-state=running", *JSON),
        output="listing",
        until=running(count),
        within=60,
    )


def create(title: str, name: str, *flags: str) -> Cli:
    """`docker service create -d --name NAME FLAGS` of the busybox image, for input one swarm may refuse."""
    return Cli(title, ("service", "create", "-d", "--name", name, *flags, *IMAGE))


def write_files(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "stack.yml").write_text(COMPOSE)
    (workdir / "bad-stack.yml").write_text(BAD_COMPOSE)
    (workdir / "rich-stack.yml").write_text(RICH_COMPOSE)
    (workdir / "stack-secret.txt").write_text("stack secret\n")
    (workdir / "stack-config.txt").write_text("stack config\n")
    (workdir / "big-secret").write_bytes(b"s" * (SECRET_LIMIT + 1024))
    (workdir / "big-config").write_bytes(b"c" * (CONFIG_LIMIT + 1024))


JSON = ("--format", "{{json .}}")


def _only_ingress(done: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0 and len(lines) == 1 and '"Name":"ingress"' in lines[0]


def _has_peers(done: subprocess.CompletedProcess[str]) -> bool:
    """dockerd joins the ingress network as the swarm forms; a raftswarm node once its first heartbeat after
    the join brings its ingress address (up to a heartbeat period later): `network inspect` shows Peers then."""
    return done.returncode == 0 and '"Peers"' in done.stdout


SWARM_AND_NODES: list[Step] = [
    Cli("info .Swarm", ("info", "--format", "{{json .Swarm}}"), output="json"),
    Sdk("sdk inspect_swarm", lambda api, v: api.inspect_swarm()),
    Sdk("sdk version", lambda api, v: api.version()),
    Cli("swarm join-token worker", ("swarm", "join-token", "worker")),
    Cli("swarm join-token -q manager", ("swarm", "join-token", "-q", "manager")),
    Cli("node ls", ("node", "ls", *JSON), output="listing"),
    Cli("node inspect self", ("node", "inspect", "self"), output="json"),
    Cli("node inspect worker", ("node", "inspect", "{worker}"), output="json"),
    Cli("node update --label-add", ("node", "update", "--label-add", "cf=1", "{worker}")),
    Sdk("sdk nodes", lambda api, v: api.nodes()),
    Cli("node inspect unknown", ("node", "inspect", "cf-nonode"), output="json"),
    Sdk("sdk inspect_node unknown", lambda api, v: api.inspect_node("cf-nonode")),
]

NETWORKS: list[Step] = [
    Cli(
        "network create overlay",
        (
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--label",
            "cf=1",
            "--subnet",
            "10.99.0.0/24",
            "--gateway",
            "10.99.0.254",
            "cf-net",
        ),
    ),
    Cli("network create duplicate", ("network", "create", "-d", "overlay", "cf-net")),
    Cli("network create bad subnet", ("network", "create", "-d", "overlay", "--subnet", "10.98.0.0/33", "cf-badnet")),
    Cli("network ls", ("network", "ls", *JSON), output="listing"),
    Cli("network ls driver=overlay", ("network", "ls", "--filter", "driver=overlay", *JSON), output="listing"),
    Cli("network inspect", ("network", "inspect", "cf-net"), output="json"),
    Cli("network inspect ingress", ("network", "inspect", "ingress"), output="json", until=_has_peers, within=15),
    Sdk("sdk networks driver=overlay", lambda api, v: api.networks(filters={"driver": "overlay"})),
    Cli("network inspect unknown", ("network", "inspect", "cf-nonet"), output="json"),
    Cli("network create second", ("network", "create", "-d", "overlay", "cf-net2")),
    Cli("network rm", ("network", "rm", "cf-net2")),
    Cli("network rm unknown", ("network", "rm", "cf-nonet")),
    Cli("network create internal", ("network", "create", "-d", "overlay", "--internal", "--label", "cf=2", "cf-internal")),
    Cli("network inspect internal", ("network", "inspect", "cf-internal"), output="json"),
    Cli("network ls --filter label", ("network", "ls", "--filter", "label=cf=2", *JSON), output="listing"),
    Cli("network ls --filter name", ("network", "ls", "--filter", "name=cf-int", *JSON), output="listing"),
    Cli("network rm internal", ("network", "rm", "cf-internal")),
    Cli("network create bridge scope swarm", ("network", "create", "-d", "bridge", "--scope", "swarm", "cf-bridge")),
    Cli("network rm bridge scope swarm", ("network", "rm", "cf-bridge")),
]

SECRETS_AND_CONFIGS: list[Step] = [
    Cli("secret create", ("secret", "create", "--label", "cf=1", "cf-secret", "-"), stdin="hunter2"),
    Cli("secret create duplicate", ("secret", "create", "cf-secret", "-"), stdin="other"),
    Cli("secret create 501 KiB", ("secret", "create", "cf-bigsecret", "{workdir}/big-secret")),
    Cli("secret create empty", ("secret", "create", "cf-emptysecret", "-"), stdin=""),
    Cli("secret create bad name", ("secret", "create", "cf bad", "-"), stdin="x"),
    Sdk("sdk create_secret 501 KiB", lambda api, v: api.create_secret("cf-bigsecret", b"s" * (SECRET_LIMIT + 1024))),
    Cli("secret ls", ("secret", "ls", *JSON), output="listing"),
    Cli("secret inspect", ("secret", "inspect", "cf-secret"), output="json"),
    Sdk("sdk secrets", lambda api, v: api.secrets()),
    Cli("secret inspect unknown", ("secret", "inspect", "cf-nosecret"), output="json"),
    Cli("config create", ("config", "create", "--label", "cf=1", "cf-config", "-"), stdin="setting=1\n"),
    Cli("config create duplicate", ("config", "create", "cf-config", "-"), stdin="setting=2\n"),
    Cli("config create 1001 KiB", ("config", "create", "cf-bigconfig", "{workdir}/big-config")),
    Sdk("sdk create_config 1001 KiB", lambda api, v: api.create_config("cf-bigconfig", b"c" * (CONFIG_LIMIT + 1024))),
    Cli("config ls", ("config", "ls", *JSON), output="listing"),
    Cli("config inspect", ("config", "inspect", "cf-config"), output="json"),
    Sdk("sdk configs", lambda api, v: api.configs()),
    Cli("config inspect unknown", ("config", "inspect", "cf-noconfig"), output="json"),
    Cli("config create scratch", ("config", "create", "cf-config2", "-"), stdin="x"),
    Cli("config rm", ("config", "rm", "cf-config2")),
    Cli("secret ls --filter label", ("secret", "ls", "--filter", "label=cf", *JSON), output="listing"),
    Cli("config ls --filter name", ("config", "ls", "--filter", "name=cf-conf", *JSON), output="listing"),
    Cli(
        "config create template",
        ("config", "create", "--template-driver", "golang", "cf-tmpl", "-"),
        stdin="service {{.Service.Name}}\n",
    ),
    Cli("config inspect template", ("config", "inspect", "cf-tmpl"), output="json"),
    Cli("config create unknown template driver", ("config", "create", "--template-driver", "jinja", "cf-badtmpl", "-"), stdin="x"),
    Cli("swarm unlock-key without autolock", ("swarm", "unlock-key")),
    Cli("secret create scratch", ("secret", "create", "cf-secret2", "-"), stdin="x"),
    Cli("secret rm", ("secret", "rm", "cf-secret2")),
]

WEB_FLAGS = (
    "--name", "cf-web", "--replicas", "2", "--env", "CF=1", "--label", "cf=1", "--container-label", "cf=2",
    "--constraint", "node.role==worker", "--publish", "published=8080,target=80",
    "--mount", "type=volume,source=cf-vol,target=/data", "--config", "source=cf-config,target=/etc/cf.conf",
    "--secret", "cf-secret", "--network", "cf-net", "--health-cmd", "true", "--health-interval", "1s",
    "--update-parallelism", "2", "--update-delay", "1s", "--restart-condition", "on-failure",
    "--restart-max-attempts", "3", "--limit-memory", "64M", "--reserve-cpu", "0.1", "--stop-grace-period", "2s",
)  # fmt: skip

SERVICES: list[Step] = [
    Cli("service create (documented flags)", ("service", "create", "-d", *WEB_FLAGS, *IMAGE, "sleep", "1000")),
    ps_until_running("service ps until 2 running", "service", "cf-web", 2),
    Cli("service ls", ("service", "ls", *JSON), output="listing"),
    Cli("service inspect", ("service", "inspect", "cf-web"), output="json"),
    Sdk("sdk inspect_service", lambda api, v: api.inspect_service("cf-web")),
    Sdk("sdk tasks", lambda api, v: api.tasks(filters={"service": "cf-web", "desired-state": "running"})),
    Cli("node ps worker", ("node", "ps", "{worker}", "--filter", "desired-state=running", *JSON), output="listing"),
    Cli(
        "service update",
        (
            "service",
            "update",
            "-d",
            "--env-add",
            "CF2=2",
            "--label-add",
            "cf2=2",
            "--update-parallelism",
            "1",
            "cf-web",
        ),
    ),
    Cli("service scale", ("service", "scale", "-d", "cf-web=1")),
    ps_until_running("service ps until 1 running", "service", "cf-web", 1),
    Cli("service rollback", ("service", "rollback", "-d", "cf-web")),
    Cli(
        "service rollback completes",
        ("service", "inspect", "cf-web", "--format", "{{.UpdateStatus.State}}"),
        until=lambda done: "rollback_completed" in done.stdout,
    ),
    Cli("service inspect after rollback", ("service", "inspect", "cf-web"), output="json"),
    Cli("service create (waits)", ("service", "create", "--name", "cf-once", *IMAGE, "sleep", "1000"), output="none"),
    Cli(
        "service create global",
        ("service", "create", "-d", "--name", "cf-global", "--mode", "global", *IMAGE, "sleep", "1000"),
    ),
    ps_until_running("service ps global until 2 running", "service", "cf-global", 2),
    # A sysctl of the task's eth0: its interfaces come after the container is made (moby#47619).
    Cli(
        "service create interface sysctl",
        (
            "service", "create", "-d", "--name", "cf-tuned", "--network", "cf-net",
            "--sysctl", "net.ipv4.conf.eth0.rp_filter=2", *IMAGE, "sleep", "1000",
        ),
    ),
    ps_until_running("service ps interface sysctl until 1 running", "service", "cf-tuned", 1),
    Cli("service ls (4 services)", ("service", "ls", *JSON), output="listing"),
]

def _completed(count: int) -> Callable[[subprocess.CompletedProcess[str]], bool]:
    """For `service ps --format '{{json .}}'` of a job: exactly `count` tasks, all Complete."""

    def holds(done: subprocess.CompletedProcess[str]) -> bool:
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return len(lines) == count and all(line.get("CurrentState", "").startswith("Complete") for line in lines)

    return holds


OPTS_FLAGS = (
    "--name", "cf-opts", "--replicas", "1", "--hostname", "cf-{{.Task.Slot}}", "--workdir", "/tmp",
    "--entrypoint", "sleep", "--read-only", "--cap-add", "CAP_NET_ADMIN", "--cap-drop", "CAP_CHOWN",
    "--ulimit", "nofile=1024:2048", "--limit-pids", "100", "--dns", "10.0.0.2", "--host", "cf.example:10.1.2.3",
    "--endpoint-mode", "dnsrr", "--network", "cf-net", "--publish", "mode=host,published=8081,target=80",
    "--replicas-max-per-node", "1", "--placement-pref", "spread=node.labels.cf", "--tty", "--stop-signal", "SIGINT",
    "--secret", "source=cf-secret,target=custom,mode=0400", "--config", "source=cf-config,target=/cf.conf,uid=0,mode=0440",
    "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m",
)  # fmt: skip

MORE_SERVICES: list[Step] = [
    Cli("service create (runtime options)", ("service", "create", "-d", *OPTS_FLAGS, *IMAGE, "1000")),
    ps_until_running("service ps runtime options until 1 running", "service", "cf-opts", 1),
    Cli("service inspect (runtime options)", ("service", "inspect", "cf-opts"), output="json"),
    Cli("service update --force", ("service", "update", "-d", "--force", "cf-opts")),
    ps_until_running("service ps after --force until 1 running", "service", "cf-opts", 1),
    Cli(
        "service create replicated-job",
        ("service", "create", "-d", "--name", "cf-job", "--mode", "replicated-job", "--replicas", "2", *IMAGE, "true"),
    ),
    Cli(
        "service ps job until 2 complete",
        ("service", "ps", "cf-job", *JSON),
        output="listing",
        until=_completed(2),
        within=60,
    ),
    Cli("service ls (with a job)", ("service", "ls", "--filter", "name=cf-job", *JSON), output="listing"),
    Cli("service inspect job", ("service", "inspect", "cf-job"), output="json"),
    Cli("node update --availability pause", ("node", "update", "--availability", "pause", "{worker}")),
    Cli("node inspect paused", ("node", "inspect", "{worker}", "--format", "{{json .Spec}}"), output="json"),
    Cli("node update --availability active", ("node", "update", "--availability", "active", "{worker}")),
    Cli(
        "service update (flags that add and remove)",
        (
            "service", "update", "-d", "--env-add", "CF3=3", "--env-rm", "CF2", "--label-rm", "cf",
            "--mount-add", "type=tmpfs,target=/more", "--mount-rm", "/scratch", "--publish-add", "published=8082,target=81",
            "--secret-rm", "cf-secret", "--update-order", "start-first", "--update-failure-action", "continue",
            "--rollback-parallelism", "2", "--replicas-max-per-node", "2", "--health-cmd", "true", "--no-healthcheck=false",
            "cf-opts",
        ),
    ),
    ps_until_running("service ps after update until 1 running", "service", "cf-opts", 1),
    Cli("service inspect after update", ("service", "inspect", "cf-opts"), output="json"),
    Cli("service ls --filter mode=global", ("service", "ls", "--filter", "mode=global", *JSON), output="listing"),
    Cli("service ls --filter label=cf", ("service", "ls", "--filter", "label=cf", *JSON), output="listing"),
    Cli("node ls --filter role=manager", ("node", "ls", "--filter", "role=manager", *JSON), output="listing"),
    Cli("service logs (exit only)", ("service", "logs", "--tail", "1", "cf-web"), output="none"),
    Cli("swarm update --task-history-limit", ("swarm", "update", "--task-history-limit", "3")),
    Cli("info .Swarm after update", ("info", "--format", "{{json .Swarm.Cluster}}"), output="json"),
    Sdk("sdk inspect_swarm after update", lambda api, v: api.inspect_swarm()["Spec"]),
    Cli("swarm update back", ("swarm", "update", "--task-history-limit", "5")),
]

MORE_BAD_INPUT: list[Step] = [
    create("service create published port in use", "cf-bad-port", "--publish", "8080:80"),
    create("service create reservation over limit", "cf-bad-res", "--reserve-memory", "100M", "--limit-memory", "50M"),
    create("service create bad hostname template", "cf-bad-tmpl", "--hostname", "{{.Nope}}"),
    create("service create bind without source", "cf-bad-mount", "--mount", "type=bind,target=/x"),
    create("service create job with max replicas", "cf-bad-job", "--mode", "global-job", "--replicas-max-per-node", "1"),
    create("service create bad update order", "cf-bad-order", "--update-order", "sideways"),
    create("service create negative replicas max", "cf-bad-max", "--replicas-max-per-node", "-1"),
    create("service create same target twice", "cf-bad-twice", "--mount", "type=tmpfs,target=/t", "--mount", "type=tmpfs,target=/t"),
    create("service create unknown config", "cf-bad-cfg", "--config", "cf-noconfig"),
    create("service create two ports alike", "cf-bad-ports", "--publish", "9090:80", "--publish", "9090:81"),
    Cli("service update unknown flag value", ("service", "update", "-d", "--update-delay", "-1s", "cf-web")),
    Cli("service update network-add unknown", ("service", "update", "-d", "--network-add", "cf-nonet", "cf-web")),
    Cli("service update job replicas", ("service", "update", "-d", "--replicas", "3", "cf-job")),
    Cli(
        "service rm what bad input made",
        (
            "service", "rm", "cf-bad-port", "cf-bad-res", "cf-bad-tmpl", "cf-bad-mount", "cf-bad-job", "cf-bad-order",
            "cf-bad-max", "cf-bad-twice", "cf-bad-cfg", "cf-bad-ports",
        ),
    ),
]

BAD_INPUT: list[Step] = [
    Cli("service create duplicate name", ("service", "create", "-d", "--name", "cf-web", *IMAGE, "sleep", "1")),
    create("service create bad constraint", "cf-bad", "--constraint", "node.role=worker"),
    create("service create unknown secret", "cf-bad", "--secret", "cf-nosecret"),
    create("service create unknown network", "cf-bad", "--network", "cf-nonet"),
    create("service create bad name", "cf_bad!"),
    Cli("service inspect unknown", ("service", "inspect", "cf-nosvc"), output="json"),
    Cli("service ps unknown", ("service", "ps", "cf-nosvc")),
    Cli("service update unknown", ("service", "update", "-d", "--replicas", "2", "cf-nosvc")),
    Cli("service scale unknown", ("service", "scale", "-d", "cf-nosvc=2")),
    Cli("service rm unknown", ("service", "rm", "cf-nosvc")),
    Sdk("sdk inspect_service unknown", lambda api, v: api.inspect_service("cf-nosvc")),
    Sdk(
        "sdk create_service duplicate name",
        lambda api, v: api.create_service(
            {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1"]}}, name="cf-web"
        ),
    ),
    Sdk("sdk remove_network unknown", lambda api, v: api.remove_network("cf-nonet")),
    Sdk("sdk remove_network in use", lambda api, v: api.remove_network("cf-net")),
    Sdk(
        "sdk create_network bad subnet",
        lambda api, v: api.create_network(
            "cf-badnet", driver="overlay", ipam={"Driver": "default", "Config": [{"Subnet": "10.98.0.0/33"}]}
        ),
    ),
    Sdk(
        "sdk create_service bad constraint",
        lambda api, v: api.create_service(
            {"ContainerSpec": {"Image": "busybox"}, "Placement": {"Constraints": ["node.role=worker"]}}, name="cf-bad"
        ),
    ),
    Sdk("sdk remove_secret in use", lambda api, v: api.remove_secret("cf-secret")),
    Cli("secret rm in use", ("secret", "rm", "cf-secret")),
    Cli("config rm in use", ("config", "rm", "cf-config")),
    Cli("network rm in use", ("network", "rm", "cf-net")),
]

STACKS: list[Step] = [
    Cli("stack deploy", ("stack", "deploy", "--resolve-image", "never", "-c", "{workdir}/stack.yml", "cf-st")),
    Cli("stack ls", ("stack", "ls", *JSON), output="listing"),
    Cli("stack services", ("stack", "services", "cf-st", *JSON), output="listing"),
    ps_until_running("stack ps until running", "stack", "cf-st", 1),
    Cli("service inspect (stack's)", ("service", "inspect", "cf-st_app"), output="json"),
    Cli("network inspect (stack's)", ("network", "inspect", "cf-st_front"), output="json"),
    Cli(
        "stack deploy bad constraint",
        ("stack", "deploy", "--resolve-image", "never", "-c", "{workdir}/bad-stack.yml", "cf-bad"),
    ),
    Cli("stack deploy (rich)", ("stack", "deploy", "--resolve-image", "never", "-c", "{workdir}/rich-stack.yml", "cf-rich")),
    Cli("stack services (rich)", ("stack", "services", "cf-rich", *JSON), output="listing"),
    ps_until_running("stack ps (rich) until running", "stack", "cf-rich", 2),
    Cli("service inspect (rich)", ("service", "inspect", "cf-rich_web"), output="json"),
    Cli("network inspect (rich)", ("network", "inspect", "cf-rich_back"), output="json"),
    Cli("stack deploy (rich) again", ("stack", "deploy", "--resolve-image", "never", "-c", "{workdir}/rich-stack.yml", "cf-rich")),
    Cli("stack rm (rich)", ("stack", "rm", "cf-rich")),
    Cli("stack rm", ("stack", "rm", "cf-st")),
    Cli("stack rm (the failed one)", ("stack", "rm", "cf-bad")),
    Cli("stack ls after rm", ("stack", "ls", *JSON), output="listing", until=empty),
]

CLEANUP: list[Step] = [
    Cli("service rm", ("service", "rm", "cf-web", "cf-once", "cf-global", "cf-tuned", "cf-opts", "cf-job")),
    Cli("service ls after rm", ("service", "ls", *JSON), output="listing", until=empty),
    Cli("network rm after its services", ("network", "rm", "cf-net"), until=succeeds),
    Cli("secret rm after its services", ("secret", "rm", "cf-secret")),
    Cli("config rm after its services", ("config", "rm", "cf-config", "cf-tmpl")),
    Cli("secret ls after rm", ("secret", "ls", *JSON), output="listing", until=empty, within=10),
    Cli(
        "network ls driver=overlay after rm",
        ("network", "ls", "--filter", "driver=overlay", *JSON),
        output="listing",
        until=_only_ingress,
    ),
]

# Last: a swarm that got these wrong would not be the same swarm afterwards.
REFUSED: list[Step] = [
    Cli("swarm init again", ("swarm", "init")),
    Sdk("sdk init_swarm again", lambda api, v: api.init_swarm()),
    Cli("node rm a manager", ("node", "rm", "self")),
    Cli("node rm a live worker", ("node", "rm", "{worker}")),
]

SCENARIO: list[Step] = (
    SWARM_AND_NODES + NETWORKS + SECRETS_AND_CONFIGS + SERVICES + MORE_SERVICES + BAD_INPUT + MORE_BAD_INPUT + STACKS
    + CLEANUP + REFUSED
)
