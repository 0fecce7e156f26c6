"""`raftswarm service ...`: create, ls, ps, logs, inspect, update, scale, rollback, rm.

A SERVICE argument goes to the node as given (ID, unique ID prefix or name) and the node resolves it, as
dockerd does. A command that changes a service reads it, changes a copy of its spec, and writes the whole spec
back at the version it read, so a concurrent change makes the write fail ("update out of sequence") rather
than be lost.

create, update, scale and rollback then wait, unless --detach, until the service converges, printing docker's
progress lines in their non-terminal form (one line per change): see `ConvergenceWatch`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import csv
import ipaddress
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote_plus

import click

from ..api.client import ApiClient, ApiError
from ..api.stdcopy import StreamFormatError
from ..objects.registryauth import encode_auth
from ..objects.reference import InvalidReference
from ..objects.reference import parse as parse_reference
from . import output
from .daemon import daemon_command, daemon_message, remove_each
from .errors import CommandError
from .node import NodeResolver, print_tasks, task_list_options
from .options import (
    GoDuration,
    MemoryBytes,
    NanoCPUs,
    check_env,
    check_labels,
    docker_timestamp,
    parse_filters,
    parse_labels,
)

SERVICE_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Mode": "MODE",
    "Replicas": "REPLICAS",
    "Image": "IMAGE",
    "Ports": "PORTS",
}

# SwarmKit's defaults (api/defaults), which docker's CLI fills in when a flag changes part of a config.
DEFAULT_UPDATE_CONFIG: dict[str, Any] = {
    "Parallelism": 1,
    "FailureAction": "pause",
    "Monitor": 5 * 10**9,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}
DEFAULT_RESTART_POLICY: dict[str, Any] = {"Condition": "any", "Delay": 5 * 10**9, "MaxAttempts": 0}

# docker/cli's progress polls every 200 ms and counts a service converged once its tasks have stayed running
# for UpdateConfig.Monitor (5 s unless set).
POLL_INTERVAL = 0.2
DEFAULT_MONITOR_NS = 5 * 10**9
# docker waits until Ctrl-C; a script should not hang forever on a service whose tasks cannot start.
CONVERGENCE_TIMEOUT = 300.0
# docker draws one progress line per task only up to this many tasks.
MAX_PROGRESS_BARS = 20
# docker cuts task errors in progress lines to this many characters.
PROGRESS_ERROR_LENGTH = 75

# SwarmKit's task states in order; progress ignores states it does not know.
TASK_STATE_ORDER = {
    state: rank
    for rank, state in enumerate(
        [
            "new",
            "allocated",
            "pending",
            "assigned",
            "accepted",
            "preparing",
            "ready",
            "starting",
            "running",
            "complete",
            "shutdown",
            "failed",
            "rejected",
        ],
        start=1,
    )
}
_RUNNING = TASK_STATE_ORDER["running"]


class DockerGroup(click.Group):
    """A command group that also answers to docker's aliases: `list` for `ls`, `remove` for `rm`."""

    ALIASES: ClassVar[dict[str, str]] = {"list": "ls", "remove": "rm"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))


@click.group(cls=DockerGroup)
def service() -> None:
    """Manage Swarm services."""


# -- flag values, parsed as docker's opts package parses them ----------------------------------------------


def parse_port(value: str) -> list[dict[str, Any]]:
    """docker's PortOpt: `published=8080,target=80,protocol=udp,mode=host`, or the short
    `[published[-end]:]target[-end][/protocol]`. A range gives one PortConfig per port."""
    if re.search(r"\w+=\w+(,\w+=\w+)*", value):
        return [_long_port(value)]
    parts = value.split(":")
    if len(parts) > 2:
        host_ip = ":".join(parts[:-2])
        try:
            ipaddress.ip_address(host_ip.strip("[]"))
        except ValueError:
            raise ValueError(f"invalid IP address: {host_ip}") from None
        raise ValueError("hostip is not supported")
    published = parts[0] if len(parts) == 2 else ""
    target, _, protocol = parts[-1].partition("/")
    protocol = (protocol or "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {protocol}")
    if not target:
        raise ValueError(f"no port specified: {value}<empty>")
    targets = _port_range(target, "containerPort")
    base = {"Protocol": protocol, "PublishMode": "ingress"}
    if not published:
        return [{**base, "TargetPort": t} for t in targets]
    publisheds = _port_range(published, "hostPort")
    if len(publisheds) == len(targets):
        return [{**base, "TargetPort": t, "PublishedPort": p} for t, p in zip(targets, publisheds, strict=True)]
    if len(targets) == 1:
        return [{**base, "TargetPort": targets[0], "PublishedPort": p} for p in publisheds]
    raise ValueError(f"invalid ranges specified for container and host Ports: {target} and {published}")


def _long_port(value: str) -> dict[str, Any]:
    port: dict[str, Any] = {}
    for field in next(csv.reader([value])):
        key, sep, val = field.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid field {field}")
        if key == "protocol":
            if val not in ("tcp", "udp", "sctp"):
                raise ValueError(f"invalid protocol value {val}")
            port["Protocol"] = val
        elif key == "mode":
            if val not in ("ingress", "host"):
                raise ValueError(f"invalid publish mode value {val}")
            port["PublishMode"] = val
        elif key in ("target", "published"):
            number = _port_number(val)
            port["TargetPort" if key == "target" else "PublishedPort"] = number
        else:
            raise ValueError(f"invalid field key {key}")
    if not port.get("TargetPort"):
        raise ValueError('missing mandatory field "target"')
    port.setdefault("PublishMode", "ingress")
    port.setdefault("Protocol", "tcp")
    if not port.get("PublishedPort"):
        port.pop("PublishedPort", None)  # 0 means "pick one", which Go's omitempty leaves out
    return port


def _port_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


def _port_range(text: str, what: str) -> list[int]:
    start, sep, end = text.partition("-")
    try:
        first = _port_number(start)
        last = _port_number(end) if sep else first
    except ValueError:
        raise ValueError(f"invalid {what}: {text}") from None
    if last < first:
        raise ValueError(f"invalid {what}: {text}")
    return list(range(first, last + 1))


def parse_secret(value: str) -> dict[str, Any]:
    """docker's SecretOpt: `name`, or `source=name,target=file,uid=0,gid=0,mode=0444` -> a SecretReference
    without its SecretID (the CLI looks that up by name before sending)."""
    reference: dict[str, Any] = {"File": {"Name": "", "UID": "0", "GID": "0", "Mode": 0o444}, "SecretName": ""}
    fields = next(csv.reader([value]), [])
    if len(fields) == 1 and "=" not in fields[0]:
        reference["File"]["Name"] = reference["SecretName"] = fields[0]
        return reference
    for field in fields:
        key, sep, val = field.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        key = key.lower()
        if key in ("source", "src"):
            reference["SecretName"] = val
        elif key == "target":
            reference["File"]["Name"] = val
        elif key in ("uid", "gid"):
            reference["File"][key.upper()] = val
        elif key == "mode":
            reference["File"]["Mode"] = _file_mode(val)
        else:
            raise ValueError(f"invalid field in secret request: {key}")
    if not reference["SecretName"]:
        raise ValueError("source is required")
    reference["File"]["Name"] = reference["File"]["Name"] or reference["SecretName"]
    return reference


def _file_mode(text: str) -> int:
    """Go's strconv.ParseUint(text, 0, 32): "0444" and "0o444" are octal, "0x1a4" hex, "292" decimal."""
    try:
        return int(text, 8) if re.fullmatch(r"0[0-7]+", text) else int(text, 0)
    except ValueError:
        raise ValueError(f'invalid mode specified: strconv.ParseUint: parsing "{text}": invalid syntax') from None


def parse_network(value: str) -> dict[str, Any]:
    """docker's NetworkOpt: `name`, or `name=net,alias=web,driver-opt=key=value` -> a NetworkAttachmentConfig."""
    if not re.search(r"\w+=\w+(,\w+=\w+)*", value):
        return {"Target": value}
    attachment: dict[str, Any] = {}
    for field in next(csv.reader([value])):
        key, sep, val = field.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not sep or not key:
            raise ValueError(f"invalid field {field}")
        if key == "name":
            attachment["Target"] = val
        elif key == "alias":
            attachment.setdefault("Aliases", []).append(val)
        elif key == "driver-opt":
            opt_key, opt_sep, opt_value = val.partition("=")
            if not opt_sep or not opt_key:
                raise ValueError("invalid key value pair format in driver options")
            attachment.setdefault("DriverOpts", {})[opt_key.strip().lower()] = opt_value.strip()
        else:
            raise ValueError(f"invalid field key {key}")
    if not attachment.get("Target"):
        raise ValueError("network name/id is not specified")
    return attachment


def parse_placement_pref(value: str) -> dict[str, Any]:
    """docker's placementPrefOpts: `spread=node.labels.zone` -> {"Spread": {"SpreadDescriptor": ...}}."""
    strategy, sep, argument = value.partition("=")
    if not sep or not strategy:
        raise ValueError('placement preference must be of the format "<strategy>=<arg>"')
    if strategy != "spread":
        raise ValueError(f"unsupported placement preference {strategy} (only spread is supported)")
    return {"Spread": {"SpreadDescriptor": argument}}


class _Parsed(click.ParamType):
    """A flag whose value one of the parsers above turns into API objects; its ValueError is a usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


PORT = _Parsed("port", parse_port)
SECRET = _Parsed("secret", parse_secret)
NETWORK = _Parsed("network", parse_network)
PLACEMENT_PREF = _Parsed("pref", parse_placement_pref)


# -- the options `create` and `update` share (docker's addServiceFlags) -------------------------------------


def _with_default(help_text: str, default: str, create: bool) -> str:
    # docker shows SwarmKit's defaults on `create` only: on `update` an absent flag keeps the current value.
    return f"{help_text}  [default: {default}]" if create else help_text


def _service_options(create: bool) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        d = _with_default
        options = [
            click.option(
                "-d",
                "--detach",
                is_flag=True,
                help="Exit immediately instead of waiting for the service to converge",
            ),
            click.option("-q", "--quiet", is_flag=True, help="Suppress progress output"),
            click.option(
                "--with-registry-auth",
                is_flag=True,
                help="Send registry authentication details to swarm agents",
            ),
            click.option(
                "--no-resolve-image",
                is_flag=True,
                help="Do not query the registry to resolve image digest and supported platforms",
            ),
            click.option("-w", "--workdir", metavar="string", help="Working directory inside the container"),
            click.option("-u", "--user", metavar="string", help="Username or UID (format: <name|uid>[:<group|gid>])"),
            click.option("--hostname", metavar="string", help="Container hostname"),
            click.option("--init", is_flag=True, help="Use an init inside each service container to forward signals and reap processes"),
            click.option("--limit-cpu", type=NanoCPUs(), metavar="decimal", help="Limit CPUs"),
            click.option("--limit-memory", type=MemoryBytes(), metavar="bytes", help="Limit Memory"),
            click.option(
                "--limit-pids",
                type=int,
                metavar="int",
                help="Limit maximum number of processes (default 0 = unlimited)",
            ),
            click.option("--reserve-cpu", type=NanoCPUs(), metavar="decimal", help="Reserve CPUs"),
            click.option("--reserve-memory", type=MemoryBytes(), metavar="bytes", help="Reserve Memory"),
            click.option(
                "--stop-grace-period",
                type=GoDuration(),
                metavar="duration",
                help=d("Time to wait before force killing a container (ns|us|ms|s|m|h)", "10s", create),
            ),
            click.option("--replicas", type=click.IntRange(min=0), metavar="uint", help="Number of tasks"),
            click.option(
                "--replicas-max-per-node",
                type=click.IntRange(min=0),
                metavar="uint",
                help="Maximum number of tasks per node (default 0 = unlimited)",
            ),
            click.option(
                "--restart-condition",
                type=click.Choice(["none", "on-failure", "any"]),
                metavar="string",
                help=d('Restart when condition is met ("none", "on-failure", "any")', '"any"', create),
            ),
            click.option(
                "--restart-delay",
                type=GoDuration(),
                metavar="duration",
                help=d("Delay between restart attempts (ns|us|ms|s|m|h)", "5s", create),
            ),
            click.option(
                "--restart-max-attempts",
                type=click.IntRange(min=0),
                metavar="uint",
                help="Maximum number of restarts before giving up",
            ),
            click.option(
                "--restart-window",
                type=GoDuration(),
                metavar="duration",
                help="Window used to evaluate the restart policy (ns|us|ms|s|m|h)",
            ),
            *_update_config_options("update", create),
            *_update_config_options("rollback", create),
            click.option(
                "--endpoint-mode",
                type=click.Choice(["vip", "dnsrr"]),
                default="vip" if create else None,
                metavar="string",
                help=d("Endpoint mode (vip or dnsrr)", '"vip"', create),
            ),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _update_config_options(kind: str, create: bool) -> list[Any]:
    """--update-* or --rollback-*: the six fields of an UpdateConfig."""
    d = _with_default
    if kind == "update":
        actions = ["pause", "continue", "rollback"]
        texts = {
            "parallelism": "Maximum number of tasks updated simultaneously (0 to update all at once)",
            "delay": "Delay between updates (ns|us|ms|s|m|h)",
            "monitor": "Duration after each task update to monitor for failure (ns|us|ms|s|m|h)",
            "failure-action": 'Action on update failure ("pause", "continue", "rollback")',
            "max-failure-ratio": "Failure rate to tolerate during an update",
            "order": 'Update order ("start-first", "stop-first")',
        }
    else:
        actions = ["pause", "continue"]
        texts = {
            "parallelism": "Maximum number of tasks rolled back simultaneously (0 to roll back all at once)",
            "delay": "Delay between task rollbacks (ns|us|ms|s|m|h)",
            "monitor": "Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h)",
            "failure-action": 'Action on rollback failure ("pause", "continue")',
            "max-failure-ratio": "Failure rate to tolerate during a rollback",
            "order": 'Rollback order ("start-first", "stop-first")',
        }
    return [
        click.option(
            f"--{kind}-parallelism",
            type=click.IntRange(min=0),
            metavar="uint",
            help=d(texts["parallelism"], "1", create),
        ),
        click.option(f"--{kind}-delay", type=GoDuration(), metavar="duration", help=d(texts["delay"], "0s", create)),
        click.option(
            f"--{kind}-monitor", type=GoDuration(), metavar="duration", help=d(texts["monitor"], "5s", create)
        ),
        click.option(
            f"--{kind}-failure-action",
            type=click.Choice(actions),
            metavar="string",
            help=d(texts["failure-action"], '"pause"', create),
        ),
        click.option(
            f"--{kind}-max-failure-ratio",
            type=click.FloatRange(min=0, max=1),
            metavar="float",
            help=d(texts["max-failure-ratio"], "0", create),
        ),
        click.option(
            f"--{kind}-order",
            type=click.Choice(["start-first", "stop-first"]),
            metavar="string",
            help=d(texts["order"], '"stop-first"', create),
        ),
    ]


class Flags:
    """One invocation's options by parameter name. `given(name)` is docker's `flags.Changed`: the options it is
    asked about default to None, (), or False, so any other value came from the command line. (create's
    --mode and --endpoint-mode have docker's defaults instead and are read directly.)"""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def given(self, *names: str) -> bool:
        return any(not (self.values[n] is None or self.values[n] is False or self.values[n] == ()) for n in names)


_UPDATE_FIELDS = ("parallelism", "delay", "monitor", "failure_action", "max_failure_ratio", "order")
_UPDATE_KEYS = ("Parallelism", "Delay", "Monitor", "FailureAction", "MaxFailureRatio", "Order")
_RESTART_FLAGS = ("restart_condition", "restart_delay", "restart_max_attempts", "restart_window")


def _apply_update_config(current: dict[str, Any] | None, kind: str, flags: Flags) -> dict[str, Any] | None:
    """--update-* / --rollback-* onto a service's UpdateConfig (SwarmKit's defaults where it has none)."""
    names = [f"{kind}_{field}" for field in _UPDATE_FIELDS]
    if not flags.given(*names):
        return current
    config = copy.deepcopy(current) if current is not None else dict(DEFAULT_UPDATE_CONFIG)
    for name, key in zip(names, _UPDATE_KEYS, strict=True):
        if flags.given(name):
            config[key] = flags[name]
    if not config.get("Delay"):
        config.pop("Delay", None)  # Go's omitempty: 0 is not sent
    return config


def _apply_restart_policy(current: dict[str, Any] | None, flags: Flags) -> dict[str, Any] | None:
    if not flags.given(*_RESTART_FLAGS):
        return current
    policy = copy.deepcopy(current) if current is not None else dict(DEFAULT_RESTART_POLICY)
    for name, key in zip(_RESTART_FLAGS, ("Condition", "Delay", "MaxAttempts", "Window"), strict=True):
        if flags.given(name):
            policy[key] = flags[name]
    return policy


def _apply_resources(resources: dict[str, Any], flags: Flags) -> None:
    limits = resources.setdefault("Limits", {}) if flags.given("limit_cpu", "limit_memory", "limit_pids") else None
    for name, key in (("limit_cpu", "NanoCPUs"), ("limit_memory", "MemoryBytes"), ("limit_pids", "Pids")):
        if limits is not None and flags.given(name):
            _set(limits, key, flags[name])
    if flags.given("reserve_cpu", "reserve_memory"):
        reservations = resources.setdefault("Reservations", {})
        for name, key in (("reserve_cpu", "NanoCPUs"), ("reserve_memory", "MemoryBytes")):
            if flags.given(name):
                _set(reservations, key, flags[name])


def _set(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set a field as Go's omitempty sends it: an empty value (0, "", [], {}) is left out."""
    if value in (None, 0, "", [], {}) and value is not False:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _environment(values: Sequence[str]) -> list[str]:
    """docker's makeEnv: later settings of a variable replace earlier ones."""
    env: list[str] = []
    for value in values:
        key = value.partition("=")[0]
        env = [e for e in env if e.partition("=")[0] != key]
        env.append(value)
    return env


async def resolve_secrets(api: ApiClient, references: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """docker's ParseSecrets: give each reference the ID of the secret it names, found with one
    `GET /secrets?filters={"name": [...]}`."""
    by_target: dict[str, dict[str, Any]] = {}
    for reference in references:
        target = reference["File"]["Name"]
        if target in by_target:
            raise CommandError(f"duplicate secret target for {reference['SecretName']} not allowed")
        by_target[target] = copy.deepcopy(reference)
    if not by_target:
        return []
    names = list(dict.fromkeys(r["SecretName"] for r in by_target.values()))
    found = {s["Spec"]["Name"]: s["ID"] for s in await api.secret_list({"name": names})}
    for reference in by_target.values():
        if reference["SecretName"] not in found:
            raise CommandError(f"secret not found: {reference['SecretName']}")
        reference["SecretID"] = found[reference["SecretName"]]
    return list(by_target.values())


# -- create ---------------------------------------------------------------------------------------------


def build_spec(image: str, command: Sequence[str], flags: Flags) -> dict[str, Any]:
    """docker's serviceOptions.ToService: the ServiceSpec `docker service create` sends, as Go's JSON encoder
    writes it (omitempty fields left out), before secrets are resolved."""
    if flags["mode"] == "global":
        if flags.given("replicas"):
            raise CommandError("replicas can only be used with replicated or replicated-job mode")
        if flags["replicas_max_per_node"]:
            raise CommandError("replicas-max-per-node can only be used with replicated or replicated-job mode")
        mode: dict[str, Any] = {"Global": {}}
    else:
        mode = {"Replicated": {"Replicas": flags["replicas"]} if flags.given("replicas") else {}}
    container: dict[str, Any] = {"Image": image}
    _set(container, "Args", list(command))
    _set(container, "Env", _environment(flags["env"]))
    _set(container, "Labels", parse_labels(flags["container_label"]))
    for name, key in (("hostname", "Hostname"), ("workdir", "Dir"), ("user", "User")):
        _set(container, key, flags[name] or "")
    if flags["init"]:
        container["Init"] = True
    if flags.given("stop_grace_period"):
        container["StopGracePeriod"] = flags["stop_grace_period"]
    resources: dict[str, Any] = {"Limits": {}, "Reservations": {}}
    _apply_resources(resources, flags)
    placement: dict[str, Any] = {}
    _set(placement, "Constraints", list(flags["constraint"]))
    _set(placement, "Preferences", list(flags["placement_pref"]))
    _set(placement, "MaxReplicas", flags["replicas_max_per_node"] or 0)
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": resources,
        "Placement": placement,
        "ForceUpdate": 0,
    }
    restart = _apply_restart_policy(None, flags)
    if restart is not None:
        template["RestartPolicy"] = restart
    _set(template, "Networks", sorted(flags["network"], key=lambda n: n["Target"]))
    endpoint: dict[str, Any] = {"Mode": flags["endpoint_mode"]}
    _set(endpoint, "Ports", [port for ports in flags["publish"] for port in ports])
    spec: dict[str, Any] = {
        "Labels": parse_labels(flags["label"]),
        "TaskTemplate": template,
        "Mode": mode,
        "EndpointSpec": endpoint,
    }
    _set(spec, "Name", flags["name"] or "")
    for kind, key in (("update", "UpdateConfig"), ("rollback", "RollbackConfig")):
        config = _apply_update_config(None, kind, flags)
        if config is not None:
            spec[key] = config
    return spec


@service.command(context_settings={"allow_interspersed_args": False})
@click.option(
    "--mode",
    type=click.Choice(["replicated", "global"]),
    default="replicated",
    metavar="string",
    help='Service mode ("replicated", "global")  [default: "replicated"]',
)
@click.option("--name", metavar="string", help="Service name")
@_service_options(create=True)
@click.option("-l", "--label", multiple=True, callback=check_labels, metavar="list", help="Service labels")
@click.option("--container-label", multiple=True, callback=check_labels, metavar="list", help="Container labels")
@click.option("-e", "--env", multiple=True, callback=check_env, metavar="list", help="Set environment variables")
@click.option("--constraint", multiple=True, metavar="list", help="Placement constraints")
@click.option("--placement-pref", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Add a placement preference")
@click.option("--network", multiple=True, type=NETWORK, metavar="network", help="Network attachments")
@click.option("--secret", multiple=True, type=SECRET, metavar="secret", help="Specify secrets to expose to the service")
@click.option("-p", "--publish", multiple=True, type=PORT, metavar="port", help="Publish a port as a node port")
@click.argument("image")
@click.argument("command", nargs=-1, metavar="[COMMAND] [ARG...]")
@daemon_command
async def create(api: ApiClient, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create a new service."""
    flags = Flags(options)
    spec = build_spec(image, command, flags)
    if flags["secret"]:
        spec["TaskTemplate"]["ContainerSpec"]["Secrets"] = await resolve_secrets(api, flags["secret"])
    warning = None if flags["no_resolve_image"] else await pin_image(api, spec["TaskTemplate"]["ContainerSpec"])
    auth = registry_auth(image) if flags["with_registry_auth"] else None
    response = await api.service_create(spec, registry_auth=auth)
    _warn({"Warnings": [warning]} if warning else None)
    _warn(response)
    click.echo(response["ID"])
    if not flags["detach"]:
        await wait_for_service(api, response["ID"], flags["quiet"])


DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
"""The key docker's config.json files Docker Hub's credentials under."""


def registry_auth(image: str) -> str | None:
    """The X-Registry-Auth for `image`'s registry from the docker CLI's own credentials (`docker login`:
    $DOCKER_CONFIG/config.json, else ~/.docker/config.json), as `--with-registry-auth` sends them; None if it
    has none for that registry. Credential helpers (credsStore) are not asked: raftswarm reads only the file."""
    try:
        domain = parse_reference(image).domain
    except InvalidReference:
        return None
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    entry = auths.get(DOCKER_HUB_AUTH_KEY if domain == "docker.io" else domain) or {}
    try:
        username, _, password = base64.b64decode(entry.get("auth", "")).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    if not username:
        return None
    return encode_auth({"username": username, "password": password, "serveraddress": domain})


async def pin_image(api: ApiClient, container: dict[str, Any]) -> str | None:
    """docker's image resolution on `service create/update`: ContainerSpec.Image becomes `name:tag@digest`, the
    digest the registry has now (asked through the node's `/distribution`), so every task runs the same image.
    If the registry cannot be asked, the image stays as given and docker's warning is returned."""
    image = container["Image"]
    try:
        ref = parse_reference(image)
    except InvalidReference:
        return None  # the node refuses the spec with its own message
    if ref.digest:
        return None
    try:
        answer = await api.request("GET", f"/distribution/{image}/json")
        digest = answer["Descriptor"]["digest"]
    except (ApiError, KeyError, TypeError):
        return (
            f"image {image} could not be accessed on a registry to record\nits digest. Each node will access "
            f"{image} independently,\npossibly leading to different nodes running different\nversions of the image.\n"
        )
    container["Image"] = f"{ref.familiar}@{digest}"
    return None


def _warn(response: dict[str, Any] | None) -> None:
    for warning in (response or {}).get("Warnings") or []:
        click.echo(warning, err=True)


# -- update ---------------------------------------------------------------------------------------------


def apply_update(spec: dict[str, Any], flags: Flags) -> None:
    """docker's updateService: apply the given flags to `spec` (a service's Spec, changed in place). Secrets are
    applied separately (`updated_secrets`), since adding one needs the node."""
    template = spec.setdefault("TaskTemplate", {})
    container = template.setdefault("ContainerSpec", {})
    _update_labels(spec, "Labels", flags["label_rm"], flags["label_add"], keep_empty=True)
    _update_labels(container, "Labels", flags["container_label_rm"], flags["container_label_add"])
    if flags.given("image"):
        container["Image"] = flags["image"]
    if flags["args"] is not None:
        _set(container, "Args", shlex.split(flags["args"]))
    if flags.given("env_rm", "env_add"):
        _set(container, "Env", _updated_environment(container.get("Env") or [], flags["env_rm"], flags["env_add"]))
    for name, key in (("workdir", "Dir"), ("user", "User"), ("hostname", "Hostname")):
        if flags[name] is not None:
            _set(container, key, flags[name])
    if flags["init"]:
        container["Init"] = True
    if flags.given("limit_cpu", "limit_memory", "limit_pids", "reserve_cpu", "reserve_memory"):
        _apply_resources(template.setdefault("Resources", {}), flags)
    if flags.given("stop_grace_period"):
        container["StopGracePeriod"] = flags["stop_grace_period"]
    restart = _apply_restart_policy(template.get("RestartPolicy"), flags)
    if restart is not None:
        template["RestartPolicy"] = restart
    if flags.given(
        "constraint_add", "constraint_rm", "placement_pref_add", "placement_pref_rm", "replicas_max_per_node"
    ):
        _update_placement(template.setdefault("Placement", {}), flags)
    if flags.given("network_add", "network_rm"):
        _update_networks(spec, flags["network_add"], flags["network_rm"])
    if flags.given("replicas"):
        replicated = (spec.get("Mode") or {}).get("Replicated")
        if replicated is None:
            raise CommandError("replicas can only be used with replicated mode")
        replicated["Replicas"] = flags["replicas"]
    for kind, key in (("update", "UpdateConfig"), ("rollback", "RollbackConfig")):
        config = _apply_update_config(spec.get(key), kind, flags)
        if config is not None:
            spec[key] = config
    if flags.given("endpoint_mode"):
        spec.setdefault("EndpointSpec", {})["Mode"] = flags["endpoint_mode"]
    if flags.given("publish_add", "publish_rm"):
        endpoint = spec.setdefault("EndpointSpec", {})
        _set(endpoint, "Ports", _updated_ports(endpoint.get("Ports") or [], flags["publish_add"], flags["publish_rm"]))
    if flags["force"]:
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1


def _update_labels(
    owner: dict[str, Any], key: str, remove: Sequence[str], add: Sequence[str], keep_empty: bool = False
) -> None:
    labels = dict(owner.get(key) or {})
    for name in remove:
        labels.pop(name, None)
    labels.update(parse_labels(add))
    if remove or add:
        if keep_empty:
            owner[key] = labels  # a service's Labels are always sent, even empty
        else:
            _set(owner, key, labels)


def _updated_environment(env: Sequence[str], remove: Sequence[str], add: Sequence[str]) -> list[str]:
    """--env-rm by variable name, then --env-add replacing a variable in place or appending it."""
    kept = [e for e in env if e.partition("=")[0] not in set(remove)]
    for value in add:
        key = value.partition("=")[0]
        positions = [i for i, e in enumerate(kept) if e.partition("=")[0] == key]
        if positions:
            kept[positions[0]] = value
            kept = [e for i, e in enumerate(kept) if i not in positions[1:]]
        else:
            kept.append(value)
    return kept


def _update_placement(placement: dict[str, Any], flags: Flags) -> None:
    if flags.given("constraint_add", "constraint_rm"):
        constraints = [*(placement.get("Constraints") or []), *flags["constraint_add"]]
        _set(placement, "Constraints", sorted(c for c in constraints if c not in set(flags["constraint_rm"])))
    if flags.given("placement_pref_add", "placement_pref_rm"):
        removed = {p["Spread"]["SpreadDescriptor"] for p in flags["placement_pref_rm"]}
        preferences = [
            p
            for p in placement.get("Preferences") or []
            if (p.get("Spread") or {}).get("SpreadDescriptor") not in removed
        ]
        _set(placement, "Preferences", [*preferences, *flags["placement_pref_add"]])
    if flags.given("replicas_max_per_node"):
        _set(placement, "MaxReplicas", flags["replicas_max_per_node"])


def _update_networks(spec: dict[str, Any], add: Sequence[dict[str, Any]], remove: Sequence[str]) -> None:
    """docker's updateNetworks, with network names as given (this node does not resolve them to IDs)."""
    template = spec["TaskTemplate"]
    networks = template.get("Networks") or spec.pop("Networks", None) or []  # the deprecated field moves over
    kept = [n for n in networks if n.get("Target") not in set(remove)]
    attached = {n.get("Target") for n in kept}
    for network in add:
        if network["Target"] in attached:
            raise CommandError(f"service is already attached to network {network['Target']}")
        kept.append(network)
        attached.add(network["Target"])
    _set(template, "Networks", sorted(kept, key=lambda n: n.get("Target", "")))


def _port_key(port: dict[str, Any]) -> str:
    """docker's portConfigToString, which also orders the ports it sends."""
    return f"{port.get('PublishedPort', 0)}:{port.get('TargetPort', 0)}/{port.get('Protocol', '')}/{port.get('PublishMode', '')}"


def _updated_ports(
    ports: Sequence[dict[str, Any]], add: Sequence[list[dict[str, Any]]], remove: Sequence[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """docker's updatePorts: --publish-rm removes by target port, protocol and mode; --publish-add adds what is
    not there yet; the result is sorted."""
    existing = {_port_key(p): p for p in reversed(ports)}
    removals = [p for group in remove for p in group]

    def removed(port: dict[str, Any]) -> bool:
        return any(
            port.get("TargetPort") == r.get("TargetPort")
            and (port.get("Protocol") or "tcp") == (r.get("Protocol") or "tcp")
            and (port.get("PublishMode") or "ingress") == (r.get("PublishMode") or "ingress")
            for r in removals
        )

    kept = [p for p in existing.values() if not removed(p)]
    kept += [p for group in add for p in group if _port_key(p) not in existing]
    return sorted(kept, key=_port_key)


async def updated_secrets(
    api: ApiClient, current: Sequence[dict[str, Any]], remove: Sequence[str], add: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """docker's getUpdatedSecrets: --secret-rm by secret name, then --secret-add resolved like create's."""
    kept = [s for s in current if s.get("SecretName") not in set(remove)]
    return kept + await resolve_secrets(api, add) if add else kept


@service.command()
@click.option("--image", metavar="string", help="Service image tag")
@click.option("--args", metavar="command", help="Service command args")
@click.option("--rollback", is_flag=True, help="Rollback to previous specification")
@click.option("--force", is_flag=True, help="Force update even if no changes require it")
@_service_options(create=False)
@click.option(
    "--env-add", multiple=True, callback=check_env, metavar="list", help="Add or update an environment variable"
)
@click.option("--env-rm", multiple=True, metavar="list", help="Remove an environment variable")
@click.option("--label-add", multiple=True, callback=check_labels, metavar="list", help="Add or update a service label")
@click.option("--label-rm", multiple=True, metavar="list", help="Remove a label by its key")
@click.option(
    "--container-label-add",
    multiple=True,
    callback=check_labels,
    metavar="list",
    help="Add or update a container label",
)
@click.option("--container-label-rm", multiple=True, metavar="list", help="Remove a container label by its key")
@click.option("--constraint-add", multiple=True, metavar="list", help="Add or update a placement constraint")
@click.option("--constraint-rm", multiple=True, metavar="list", help="Remove a constraint")
@click.option(
    "--placement-pref-add", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Add a placement preference"
)
@click.option(
    "--placement-pref-rm", multiple=True, type=PLACEMENT_PREF, metavar="pref", help="Remove a placement preference"
)
@click.option("--secret-add", multiple=True, type=SECRET, metavar="secret", help="Add or update a secret on a service")
@click.option("--secret-rm", multiple=True, metavar="list", help="Remove a secret")
@click.option("--publish-add", multiple=True, type=PORT, metavar="port", help="Add or update a published port")
@click.option(
    "--publish-rm", multiple=True, type=PORT, metavar="port", help="Remove a published port by its target port"
)
@click.option("--network-add", multiple=True, type=NETWORK, metavar="network", help="Add a network")
@click.option("--network-rm", multiple=True, metavar="list", help="Remove a network")
@click.argument("ref", metavar="SERVICE")
@daemon_command
async def update(api: ApiClient, ref: str, **options: Any) -> None:
    """Update a service."""
    flags = Flags(options)
    if flags["rollback"]:
        others = [name for name in options if name not in ("rollback", "detach", "quiet") and flags.given(name)]
        if others:
            raise CommandError("other flags may not be combined with --rollback")
    current = await api.service_inspect(ref)
    spec = copy.deepcopy(current.get("Spec") or {})
    warning = None
    if not flags["rollback"]:
        apply_update(spec, flags)
        container = spec["TaskTemplate"]["ContainerSpec"]
        if flags.given("image") and not flags["no_resolve_image"]:
            warning = await pin_image(api, container)
        if flags.given("secret_add", "secret_rm"):
            secrets = await updated_secrets(
                api, container.get("Secrets") or [], flags["secret_rm"], flags["secret_add"]
            )
            _set(container, "Secrets", secrets)
    auth = None
    if flags["with_registry_auth"]:
        auth = registry_auth(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))
    response = await api.service_update(
        current["ID"], current["Version"]["Index"], spec, rollback=flags["rollback"], registry_auth=auth
    )
    _warn({"Warnings": [warning]} if warning else None)
    _warn(response)
    click.echo(ref)
    if not flags["detach"]:
        await wait_for_service(api, ref, flags["quiet"], stale_status=current.get("UpdateStatus"))


# -- scale / rollback / rm ------------------------------------------------------------------------------


def _check_scale_args(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        name, sep, replicas = value.partition("=")
        if not sep or not name or not replicas:
            raise click.BadParameter(f"Invalid scale specifier '{value}'.", ctx, param)
    return values


@service.command()
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge")
@click.argument(
    "scales", nargs=-1, required=True, metavar="SERVICE=REPLICAS [SERVICE=REPLICAS...]", callback=_check_scale_args
)
@daemon_command
async def scale(api: ApiClient, detach: bool, scales: tuple[str, ...]) -> None:
    """Scale one or multiple replicated services."""
    errors: list[str] = []
    scaled: list[tuple[str, dict[str, Any] | None]] = []
    for value in scales:
        ref, _, count = value.partition("=")
        if not (count.isascii() and count.isdigit()):
            errors.append(
                f'{ref}: invalid replicas value {count}: strconv.ParseUint: parsing "{count}": invalid syntax'
            )
            continue
        try:
            current = await api.service_inspect(ref)
            spec = copy.deepcopy(current.get("Spec") or {})
            replicated = (spec.get("Mode") or {}).get("Replicated")
            if replicated is None:
                raise CommandError("scale can only be used with replicated or replicated-job mode")
            replicated["Replicas"] = int(count)
            _warn(await api.service_update(current["ID"], current["Version"]["Index"], spec))
        except CommandError as exc:
            errors.append(f"{ref}: {exc}")
            continue
        except ApiError as exc:
            errors.append(f"{ref}: {daemon_message(exc)}")
            continue
        click.echo(f"{ref} scaled to {int(count)}")
        scaled.append((ref, current.get("UpdateStatus")))
    if not detach:
        for ref, stale_status in scaled:
            try:
                await wait_for_service(api, ref, quiet=False, stale_status=stale_status)
            except CommandError as exc:
                errors.append(f"{ref}: {exc}")
            except ApiError as exc:
                errors.append(f"{ref}: {daemon_message(exc)}")
    if errors:
        raise CommandError("\n".join(errors))


@service.command()
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output")
@click.argument("ref", metavar="SERVICE")
@daemon_command
async def rollback(api: ApiClient, detach: bool, quiet: bool, ref: str) -> None:
    """Revert changes to a service's configuration."""
    current = await api.service_inspect(ref)
    response = await api.service_update(
        current["ID"], current["Version"]["Index"], current.get("Spec") or {}, rollback=True
    )
    _warn(response)
    click.echo(ref)
    if not detach:
        await wait_for_service(api, ref, quiet, stale_status=current.get("UpdateStatus"))


@service.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
@daemon_command
async def remove(api: ApiClient, refs: tuple[str, ...]) -> None:
    """Remove one or more services."""
    await remove_each(refs, api.service_remove)


# -- ls -------------------------------------------------------------------------------------------------


def service_record(s: dict[str, Any]) -> dict[str, Any]:
    """The fields docker's service formatter offers (`--format`), computed the same way."""
    spec = s.get("Spec") or {}
    return {
        "ID": s["ID"][: output.SHORT_ID_LENGTH],
        "Name": spec.get("Name", ""),
        "Mode": _mode_name(spec),
        "Replicas": _replicas(s),
        "Image": _list_image(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")),
        "Ports": published_ports((s.get("Endpoint") or {}).get("Ports") or []),
    }


def _mode_name(spec: dict[str, Any]) -> str:
    mode = spec.get("Mode") or {}
    for key, name in (("Global", "global"), ("Replicated", "replicated")):
        if mode.get(key) is not None:
            return name
    return ""


def _replicas(s: dict[str, Any]) -> str:
    status = s.get("ServiceStatus") or {}
    text = f"{status.get('RunningTasks', 0)}/{status.get('DesiredTasks', 0)}"
    spec = s.get("Spec") or {}
    max_per_node = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("MaxReplicas") or 0
    if _mode_name(spec) == "replicated" and max_per_node > 0:
        text += f" (max {max_per_node} per node)"
    return text


_TAGGED_IMAGE = re.compile(r"(?P<name>[^@]*/)?(?P<last>[^/@:]+):(?P<tag>[\w][\w.-]*)(?:@.*)?")


def _list_image(image: str) -> str:
    """What `docker service ls` shows: a tagged image without its digest, in docker's short form
    (docker.io/library/nginx:1.27@sha256:... -> nginx:1.27); an untagged one as it is."""
    match = _TAGGED_IMAGE.fullmatch(image)
    if match is None:
        return image
    name = (match["name"] or "") + match["last"]
    name = name.removeprefix("docker.io/").removeprefix("library/")
    return f"{name}:{match['tag']}"


def published_ports(ports: Sequence[dict[str, Any]]) -> str:
    """docker's serviceContext.Ports: ingress ports, consecutive ones grouped ("*:8080-8081->80-81/tcp")."""
    ranges: list[str] = []
    current: dict[str, Any] | None = None

    def shown(r: dict[str, Any]) -> str:
        published = f"{r['p0']}-{r['p1']}" if r["p1"] > r["p0"] else str(r["p0"])
        target = f"{r['t0']}-{r['t1']}" if r["t1"] > r["t0"] else str(r["t0"])
        return f"*:{published}->{target}/{r['protocol']}"

    ordered = sorted(ports, key=lambda p: (p.get("Protocol", ""), p.get("PublishedPort", 0)))
    for port in ordered:
        if port.get("PublishMode", "ingress") != "ingress":
            continue
        published, target, protocol = port.get("PublishedPort", 0), port.get("TargetPort", 0), port.get("Protocol", "")
        if current is not None and (
            protocol == current["protocol"]
            and 0 <= published - current["p1"] <= 1
            and 0 <= target - current["t1"] <= 1
            and not (current["t1"] != current["t0"] and target <= current["t1"])
        ):
            current["p1"], current["t1"] = published, target
            continue
        if current is not None and current["p0"] > 0:
            ranges.append(shown(current))
        current = {"p0": published, "p1": published, "t0": target, "t1": target, "protocol": protocol}
    if current is not None and current["p0"] > 0:
        ranges.append(shown(current))
    return ", ".join(ranges)


async def _add_service_status(api: ApiClient, services: list[dict[str, Any]]) -> None:
    """docker's AppendServiceStatus, for a node that did not send ServiceStatus: count the tasks."""
    missing = [s for s in services if s.get("ServiceStatus") is None]
    if not missing:
        return
    status: dict[str, dict[str, int]] = {}
    for s in missing:
        mode = (s.get("Spec") or {}).get("Mode") or {}
        desired = (mode.get("Replicated") or {}).get("Replicas", 1) if mode.get("Replicated") is not None else 0
        s["ServiceStatus"] = {"RunningTasks": 0, "DesiredTasks": desired}
        status[s["ID"]] = {"RunningTasks": 0, "DesiredTasks": 0}
    tasks = await api.task_list({"service": list(status)})
    if not tasks:
        return
    active = await _active_nodes(api)
    for task in tasks:
        counts = status.get(task.get("ServiceID", ""))
        if counts is None:
            continue
        if task.get("DesiredState") != "shutdown":
            counts["DesiredTasks"] += 1
        if task.get("NodeID") in active and (task.get("Status") or {}).get("State") == "running":
            counts["RunningTasks"] += 1
    for s in missing:
        s["ServiceStatus"] = status[s["ID"]]


async def _active_nodes(api: ApiClient) -> set[str]:
    return {n["ID"] for n in await api.node_list() if (n.get("Status") or {}).get("State") != "down"}


@service.command("ls")
@click.option(
    "-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided (name=value)"
)
@click.option("--format", "format_spec", help="Format output: table (default), json, or a {{.Field}} template")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
@daemon_command
async def list_services(api: ApiClient, filters: tuple[str, ...], format_spec: str | None, quiet: bool) -> None:
    """List services."""
    fmt = output.ListFormat(format_spec, quiet)
    services = await api.service_list(parse_filters(filters), status=not quiet)
    if not quiet:
        await _add_service_status(api, services)
    services.sort(key=lambda s: output.natural_key((s.get("Spec") or {}).get("Name", "")))
    records = [service_record(s) for s in services]
    if fmt.uses_default_table:
        output.print_table(list(SERVICE_HEADERS.values()), [[r[c] for c in SERVICE_HEADERS] for r in records])
    else:
        fmt.print(records, SERVICE_HEADERS)


# -- ps -------------------------------------------------------------------------------------------------


async def _service_ids(api: ApiClient, refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """docker's createFilter: each SERVICE by full ID, then name, then unique ID prefix. Returns the IDs found
    and a "no such service" line per SERVICE not found."""
    by_id = await api.service_list({"id": list(refs)})
    by_name = await api.service_list({"name": list(refs)})
    found, missing = [], []
    for ref in refs:
        exact = [s for s in by_id if s["ID"] == ref] or [s for s in by_name if (s.get("Spec") or {}).get("Name") == ref]
        prefixed = exact or [s for s in by_id if s["ID"].startswith(ref)]
        if len(prefixed) > 1:
            raise CommandError(f"multiple services found with provided prefix: {ref}")
        if prefixed:
            found.append(prefixed[0]["ID"])
        else:
            missing.append(f"no such service: {ref}")
    if not found:
        raise CommandError("\n".join(missing))
    return found, missing


@service.command()
@task_list_options
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
@daemon_command
async def ps(
    api: ApiClient,
    filters: tuple[str, ...],
    format_spec: str | None,
    no_resolve: bool,
    no_trunc: bool,
    quiet: bool,
    refs: tuple[str, ...],
) -> None:
    """List the tasks of one or more services."""
    fmt = output.ListFormat(format_spec, quiet)
    task_filters = parse_filters(filters)
    service_ids, missing = await _service_ids(api, refs)
    task_filters["service"] = task_filters.get("service", []) + service_ids
    resolver = NodeResolver(api)
    if "self" in task_filters.get("node", []):
        task_filters["node"] = [await resolver.resolve(n) if n == "self" else n for n in task_filters["node"]]
    tasks = await api.task_list(task_filters)
    await print_tasks(api, resolver, tasks, fmt, resolve=not no_resolve, truncate=not (no_trunc or quiet))
    if missing:
        raise CommandError("\n".join(missing))


# -- logs -----------------------------------------------------------------------------------------------

# The details the node attaches to every line (`details=1`), which docker's CLI always asks for and turns into
# the line's `<service>.<slot>.<task>@<node>` context.
NODE_ID_DETAIL = "com.docker.swarm.node.id"
SERVICE_ID_DETAIL = "com.docker.swarm.service.id"
TASK_ID_DETAIL = "com.docker.swarm.task.id"


def parse_log_details(text: str) -> dict[str, str]:
    """docker's logs.ParseLogDetails: `key=value,key=value`, each key and value URL-query-escaped."""
    if not text:
        raise CommandError("log details cannot be empty")
    details = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CommandError("invalid details format")
        details[unquote_plus(key)] = unquote_plus(value)
    return details


def _go_map(details: dict[str, str]) -> str:
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(details.items())) + "]"


class LogLineFormatter:
    """docker's taskFormatter and logWriter: a frame from the node (`[time ]details line`) becomes
    `[time ]<service>.<slot>.<task id>@<node>    | [details ]line`. Names are looked up once each (nodes with
    one `GET /nodes`), and the slot of each task with `GET /tasks/{id}`; `padding` is the width of the
    widest slot number, so the `|` of single- and double-digit slots line up."""

    def __init__(
        self,
        api: ApiClient,
        *,
        padding: int,
        timestamps: bool,
        details: bool,
        resolve: bool,
        truncate: bool,
        task_ids: bool,
    ) -> None:
        self.api = api
        self.padding = padding
        self.timestamps = timestamps
        self.details = details
        self.resolve = resolve
        self.truncate = truncate
        self.task_ids = task_ids
        self._contexts: dict[tuple[str, str, str], str] = {}
        self._node_names: dict[str, str] | None = None
        self._service_names: dict[str, str] = {}

    async def format(self, frame: bytes) -> bytes:
        parts = frame.split(b" ", 2 if self.timestamps else 1)
        if len(parts) != (3 if self.timestamps else 2):
            raise CommandError(f"invalid context in log message: {frame.decode(errors='replace')}")
        details = parse_log_details(parts[-2].decode(errors="replace"))
        context = []
        for key, what in ((NODE_ID_DETAIL, "node id"), (SERVICE_ID_DETAIL, "service id"), (TASK_ID_DETAIL, "task id")):
            if key not in details:
                raise CommandError(f"missing {what} in details: {_go_map(details)}")
            context.append(details.pop(key))
        line = parts[0] + b" " if self.timestamps else b""
        line += (await self._context(*context)).encode() + b"    | "
        if self.details:
            line += ",".join(sorted(f"{k}={v}" for k, v in details.items())).encode() + b" "
        return line + parts[-1]

    async def _context(self, node_id: str, service_id: str, task_id: str) -> str:
        key = (node_id, service_id, task_id)
        if key not in self._contexts:
            task = await self.api.task_inspect(task_id)
            slot = task.get("Slot") or 0
            name = f"{await self._service_name(service_id)}.{slot}"
            if self.task_ids:
                name += "." + (task["ID"][: output.SHORT_ID_LENGTH] if self.truncate else task["ID"])
            padding = " " * max(self.padding - len(str(slot)), 0)
            self._contexts[key] = f"{name}@{await self._node_name(node_id)}{padding}"
        return self._contexts[key]

    async def _node_name(self, node_id: str) -> str:
        if not self.resolve:
            return node_id
        if self._node_names is None:
            try:
                nodes = await self.api.node_list()
            except ApiError:
                nodes = []  # docker's idresolver shows the ID of a node it cannot look up
            self._node_names = {
                n["ID"]: (n.get("Spec") or {}).get("Name") or (n.get("Description") or {}).get("Hostname") or n["ID"]
                for n in nodes
            }
        return self._node_names.get(node_id, node_id)

    async def _service_name(self, service_id: str) -> str:
        if not self.resolve:
            return service_id
        if service_id not in self._service_names:
            try:
                self._service_names[service_id] = (await self.api.service_inspect(service_id))["Spec"]["Name"]
            except ApiError:
                self._service_names[service_id] = service_id
        return self._service_names[service_id]


@service.command()
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names in output")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--raw", is_flag=True, help="Do not neatly format logs")
@click.option(
    "--since",
    default="",
    metavar="string",
    help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)',
)
@click.option("-n", "--tail", default="all", metavar="string", help="Number of lines to show from the end of the logs")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.argument("ref", metavar="SERVICE|TASK")
@daemon_command
async def logs(
    api: ApiClient,
    details: bool,
    follow: bool,
    no_resolve: bool,
    no_task_ids: bool,
    no_trunc: bool,
    raw: bool,
    since: str,
    tail: str,
    timestamps: bool,
    ref: str,
) -> None:
    """Fetch the logs of a service or task."""
    try:
        since_value = docker_timestamp(since, time.time()) if since else ""
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # As docker: details are always asked for unless --raw, since they name each line's task and node.
    options = {
        "follow": follow,
        "tail": tail,
        "since": since_value,
        "timestamps": timestamps,
        "details": details or not raw,
    }
    try:
        target = await api.service_inspect(ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            task = await api.task_inspect(ref)
        except ApiError as task_exc:
            if task_exc.status == 404:
                raise CommandError(f"no such task or service: {ref}") from None
            raise
        frames = api.task_logs(ref, **options)
        padding = len(str(task.get("Slot") or 0))
    else:
        frames = api.service_logs(ref, **options)
        replicas = ((target["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas")
        padding = len(str(replicas)) if replicas is not None else 1
    formatter = LogLineFormatter(
        api,
        padding=padding,
        timestamps=timestamps,
        details=details,
        resolve=not no_resolve,
        truncate=not no_trunc,
        task_ids=not no_task_ids,
    )
    try:
        async for stream, frame in frames:
            if stream == "system":
                raise CommandError(f"error from daemon in stream: {frame.decode(errors='replace').rstrip()}")
            click.echo(frame if raw else await formatter.format(frame), nl=False, err=stream == "stderr")
    except StreamFormatError as exc:
        raise CommandError(f"error reading the log stream: {exc}") from None


# -- inspect --------------------------------------------------------------------------------------------


async def _inspect(api: ApiClient, ref: str) -> dict[str, Any]:
    try:
        return await api.service_inspect(ref)
    except ApiError as exc:
        if exc.status == 404:
            raise CommandError(f"Error: no such service: {ref}") from None
        raise


@service.command()
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE [SERVICE...]")
@daemon_command
async def inspect(api: ApiClient, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more services."""
    if pretty:
        for ref in refs:
            click.echo(pretty_service(await _inspect(api, ref), time.time()))
        return
    found, errors = [], []
    for ref in refs:
        try:
            found.append(await _inspect(api, ref))
        except CommandError as exc:
            errors.append(str(exc))
        except ApiError as exc:
            errors.append(daemon_message(exc))
    click.echo(json.dumps(found, indent=4))
    if errors:
        raise CommandError("\n".join(errors))


def pretty_service(s: dict[str, Any], now: float) -> str:
    """docker's serviceInspectPrettyTemplate, tabs and trailing spaces included; `now` dates UpdateStatus."""
    spec = s.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    lines = ["", f"ID:\t\t{s['ID']}", f"Name:\t\t{spec.get('Name', '')}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" {k}" + (f"={v}" if v else "") for k, v in sorted(spec["Labels"].items())]
    if mode.get("Global") is not None:
        lines.append("Service Mode:\tGlobal")
    elif mode.get("Replicated") is not None:
        lines.append("Service Mode:\tReplicated")
        if mode["Replicated"].get("Replicas") is not None:
            lines.append(f" Replicas:\t{mode['Replicated']['Replicas']}")
    else:
        lines.append("Service Mode:")
    lines += _pretty_update_status(s.get("UpdateStatus") or {}, now)
    placement = template.get("Placement") or {}
    lines.append("Placement:")
    if placement.get("Constraints"):
        lines.append(f" Constraints:\t[{' '.join(placement['Constraints'])}]")
    preferences = [
        f"spread={p['Spread']['SpreadDescriptor']}" for p in placement.get("Preferences") or [] if p.get("Spread")
    ]
    if preferences:
        lines.append(f" Preferences:   [{' '.join(preferences)}]")
    if placement.get("MaxReplicas"):
        lines.append(f" Max Replicas Per Node:   {placement['MaxReplicas']}")
    lines += _pretty_update_config("UpdateConfig", "Update order:      ", spec.get("UpdateConfig"))
    lines += _pretty_update_config("RollbackConfig", "Rollback order:    ", spec.get("RollbackConfig"))
    lines += ["ContainerSpec:", f" Image:\t\t{container.get('Image', '')}"]
    if container.get("Args"):
        lines.append(" Args:\t\t" + "".join(f"{arg} " for arg in container["Args"]))
    if container.get("Env"):
        lines.append(" Env:\t\t" + "".join(f"{env} " for env in container["Env"]))
    if container.get("Dir"):
        lines.append(f" Dir:\t\t{container['Dir']}")
    if container.get("Init") is not None:
        lines.append(f" Init:\t\t{'true' if container['Init'] else 'false'}")
    if container.get("User"):
        lines.append(f" User: {container['User']}")
    if container.get("Secrets"):
        lines.append("Secrets:")
        for secret in container["Secrets"]:
            lines += [
                f" Target:\t{(secret.get('File') or {}).get('Name', '')}",
                f"  Source:\t{secret.get('SecretName', '')}",
            ]
    lines += _pretty_resources(template.get("Resources"))
    if template.get("Networks"):
        lines.append("Networks:" + "".join(f" {n.get('Target', '')}" for n in template["Networks"]) + " ")
    lines.append(f"Endpoint Mode:\t{(spec.get('EndpointSpec') or {}).get('Mode', '')}")
    ports = (s.get("Endpoint") or {}).get("Ports") or []
    if ports:
        lines.append("Ports:")
        for port in ports:
            lines += [
                f" PublishedPort = {port.get('PublishedPort', 0)}",
                f"  Protocol = {port.get('Protocol', '')}",
                f"  TargetPort = {port.get('TargetPort', 0)}",
                f"  PublishMode = {port.get('PublishMode', '')}",
            ]
        lines[-1] += " "
    return "\n".join(lines) + "\n"


def _pretty_update_status(status: dict[str, Any], now: float) -> list[str]:
    if not status.get("State"):
        return []
    lines = ["UpdateStatus:", f" State:\t\t{status['State']}"]
    for key, label, shown in (
        ("StartedAt", " Started:\t", True),
        ("CompletedAt", " Completed:\t", status["State"] == "completed"),
    ):
        stamp = output.parse_timestamp(status.get(key))
        if stamp is not None and shown:
            lines.append(f"{label}{output.human_duration(now - stamp.timestamp())} ago")
    lines.append(f" Message:\t{status.get('Message', '')}")
    return lines


def _pretty_update_config(title: str, order_label: str, config: dict[str, Any] | None) -> list[str]:
    if config is None:
        return []
    lines = [f"{title}:", f" Parallelism:\t{config.get('Parallelism', 0)}"]
    if (config.get("Delay") or 0) > 0:
        lines.append(f" Delay:\t\t{output.go_duration(config['Delay'])}")
    lines.append(f" On failure:\t{config.get('FailureAction', '')}")
    if (config.get("Monitor") or 0) > 0:
        lines.append(f" Monitoring Period: {output.go_duration(config['Monitor'])}")
    lines.append(f" Max failure ratio: {output.go_float(config.get('MaxFailureRatio') or 0)}")
    lines.append(f" {order_label}{config.get('Order', '')}")
    return lines


def _pretty_resources(resources: dict[str, Any] | None) -> list[str]:
    if resources is None:
        return []
    lines = ["Resources:"]
    for title, amounts in (("Reservations", resources.get("Reservations")), ("Limits", resources.get("Limits"))):
        amounts = amounts or {}
        cpus, memory = amounts.get("NanoCPUs") or 0, amounts.get("MemoryBytes") or 0
        if cpus <= 0 and memory <= 0 and (title == "Reservations" or (amounts.get("Pids") or 0) <= 0):
            continue
        lines.append(f" {title}:")
        if cpus > 0:
            lines.append(f"  CPU:\t\t{output.go_float(cpus / 1e9)}")
        if memory:
            lines.append(f"  Memory:\t{output.bytes_size(memory)}")
    pids = (resources.get("Limits") or {}).get("Pids") or 0
    if pids > 0:
        lines.append(f"  PIDs:\t\t{pids}")
    return lines


# -- waiting for convergence ------------------------------------------------------------------------------


def _rank(state: str | None) -> int:
    return TASK_STATE_ORDER.get(state or "", 0)


def _terminal(state: str | None) -> bool:
    return _rank(state) > _RUNNING


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
    desired, existing_desired = _rank(task.get("DesiredState")), _rank(existing.get("DesiredState"))
    if existing_desired != desired:
        return desired < existing_desired
    return _rank((task.get("Status") or {}).get("State")) < _rank((existing.get("Status") or {}).get("State"))


class ConvergenceWatch:
    """docker/cli's ServiceProgress as a state machine without I/O. Each poll feeds it the service
    (`on_service`), then, unless that said the wait is over, the service's tasks and the nodes that are not
    down (`on_tasks`); `take_lines` gives the progress lines to print, each only when its text changed.

    The service has converged when every slot (replicated) or every node with a task (global) has a running
    task made from the current TaskTemplate; docker then waits UpdateConfig.Monitor more to see them stay up.
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
        if self.converged and self.converged_at is not None and now - self.converged_at >= _monitor(service) / 1e9:
            self._emit("verify", f"Service {self.ref} converged")
            if self.final_line:
                self._lines.append(self.final_line)
            return True
        return False

    def on_tasks(
        self, service: dict[str, Any], tasks: list[dict[str, Any]], active_nodes: set[str], now: float
    ) -> None:
        template = (service.get("Spec") or {}).get("TaskTemplate") or {}
        # docker asks for the `_up-to-date` tasks; a task is up to date when it was made from the current
        # TaskTemplate, which is also how this node's orchestrator tells.
        current = [t for t in tasks if (t.get("Spec") or {}) == template]
        mode = (service.get("Spec") or {}).get("Mode") or {}
        if mode.get("Replicated") is not None:
            self.converged = self._replicated(mode["Replicated"].get("Replicas", 1), current, active_nodes)
        elif mode.get("Global") is not None:
            self.converged = self._global(current, active_nodes)
        else:
            raise CommandError("unrecognized service mode")
        if self.converged:
            if self.converged_at is None:
                self.converged_at = now
            wait = _monitor(service) / 1e9 - (now - self.converged_at)
            if wait >= 0:
                seconds = max(1, math.ceil(wait))  # docker: whole seconds left, rounded up
                self._emit("verify", f"Waiting {seconds} seconds to verify that tasks are stable...")
        else:
            if self.converged_at is not None:
                self._emit("verify", "Detected task failure")
            self.converged_at = None

    def _overall(self, running: int, total: int) -> None:
        text = f"{running} out of {total} tasks"
        self._emit("overall progress", f"rolling back update: {text}" if self.rollback else text)

    def _task(self, progress_id: str, task: dict[str, Any], shown: bool) -> None:
        """One task's line: its error if it has one, else its state while it is on its way to running."""
        status = task.get("Status") or {}
        state = status.get("State") or ""
        text = _truncate_error(status["Err"]) if status.get("Err") else state
        if not (task.get("DesiredState") == "running" and state == "running"):
            self.problems.append(f"{progress_id}: {text}")
        if shown and (status.get("Err") or not (_terminal(task.get("DesiredState")) or _terminal(state))):
            self._emit(progress_id, text)

    def _replicated(self, replicas: int, tasks: list[dict[str, Any]], active_nodes: set[str]) -> bool:
        if not self._initialized:
            self._overall(0, replicas)
            self._initialized = True
        by_slot: dict[int, dict[str, Any]] = {}
        for task in tasks:
            if not _rank(task.get("DesiredState")) or not _rank((task.get("Status") or {}).get("State")):
                continue
            if task.get("NodeID") and task["NodeID"] not in active_nodes:
                continue
            slot = task.get("Slot") or 0
            if _preferred(by_slot.get(slot), task):
                by_slot[slot] = task
        if self._done and any((t.get("Status") or {}).get("State") != "running" for t in by_slot.values()):
            self._done = False
        running = 0
        self.problems = []
        for slot, task in sorted(by_slot.items()):
            line_number = self._slots.setdefault(slot, len(self._slots) + 1)
            if not _terminal(task.get("DesiredState")) and (task.get("Status") or {}).get("State") == "running":
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
            if not _rank(task.get("DesiredState")) or not _rank((task.get("Status") or {}).get("State")):
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
        if self._done and any((t.get("Status") or {}).get("State") != "running" for t in by_node.values()):
            self._done = False
        running = 0
        self.problems = []
        for node_id, task in sorted(by_node.items()):
            if node_id not in active_nodes:
                continue
            if not _terminal(task.get("DesiredState")) and (task.get("Status") or {}).get("State") == "running":
                running += 1
            self._task(node_id[: output.SHORT_ID_LENGTH], task, not self._done and nodes <= MAX_PROGRESS_BARS)
        if not self._done:
            self._overall(running, nodes)
            self._done = running == nodes
        return running == nodes


def _monitor(service: dict[str, Any]) -> int:
    return ((service.get("Spec") or {}).get("UpdateConfig") or {}).get("Monitor") or DEFAULT_MONITOR_NS


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
                    tasks = await api.task_list({"service": [service_now["ID"]]})
                    watch.on_tasks(service_now, tasks, await _active_nodes(api), time.monotonic())
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
