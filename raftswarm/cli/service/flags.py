"""The flags of `service create` and `service update`: their values parsed as docker's opts package parses them
(ports, secrets, configs, networks, placement preferences), the options the two commands share (docker's
addServiceFlags), and `Flags`, which tells a flag given on the command line from one left out."""

from __future__ import annotations

import csv
import ipaddress
import re
from collections.abc import Callable
from typing import Any

import click

from ...objects.defaults import DEFAULT_RESTART_CONDITION, DEFAULT_RESTART_DELAY_NS, UPDATE_DEFAULTS
from ..options import GO_DURATION, MEMORY_BYTES, NANO_CPUS, ParsedFlag
from ..output import go_duration, go_float
from .goflags import GO_UINT, GoBoolOption

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
    return _file_reference(value, "secret", "SecretName")


def parse_config(value: str) -> dict[str, Any]:
    """docker's ConfigOpt: `name`, or `source=name,target=/path,uid=0,gid=0,mode=0444` -> a ConfigReference
    without its ConfigID (the CLI looks that up by name before sending). A target defaults to the name; a
    relative one is under "/" in the container."""
    return _file_reference(value, "config", "ConfigName")


def _file_reference(value: str, kind: str, name_key: str) -> dict[str, Any]:
    reference: dict[str, Any] = {"File": {"Name": "", "UID": "0", "GID": "0", "Mode": 0o444}, name_key: ""}
    fields = next(csv.reader([value]), [])
    if len(fields) == 1 and "=" not in fields[0]:
        reference["File"]["Name"] = reference[name_key] = fields[0]
        return reference
    for field in fields:
        key, sep, val = field.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        key = key.lower()
        if key in ("source", "src"):
            reference[name_key] = val
        elif key == "target":
            reference["File"]["Name"] = val
        elif key in ("uid", "gid"):
            reference["File"][key.upper()] = val
        elif key == "mode":
            reference["File"]["Mode"] = _file_mode(val)
        else:
            raise ValueError(f"invalid field in {kind} request: {key}")
    if not reference[name_key]:
        raise ValueError("source is required")
    reference["File"]["Name"] = reference["File"]["Name"] or reference[name_key]
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


PORT = ParsedFlag("port", parse_port)
SECRET = ParsedFlag("secret", parse_secret)
CONFIG = ParsedFlag("config", parse_config)
NETWORK = ParsedFlag("network", parse_network)
PLACEMENT_PREF = ParsedFlag("pref", parse_placement_pref)


# -- the options `create` and `update` share (docker's addServiceFlags) -------------------------------------


def _with_default(help_text: str, default: str, create: bool) -> str:
    # docker shows SwarmKit's defaults on `create` only: on `update` an absent flag keeps the current value.
    return f"{help_text}  [default: {default}]" if create else help_text


def _quoted(text: str) -> str:
    """A string default as docker's help shows it (pflag quotes strings)."""
    return f'"{text}"'


def _uint_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, type=GO_UINT, metavar="uint", help=help_text)


def _duration_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, type=GO_DURATION, metavar="duration", help=help_text)


def detach_option() -> Callable[[Any], Any]:
    """-d/--detach of the commands that wait for a service to converge."""
    return click.option(
        "-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge"
    )


def quiet_progress_option() -> Callable[[Any], Any]:
    """-q/--quiet of the commands that wait for a service to converge."""
    return click.option("-q", "--quiet", is_flag=True, help="Suppress progress output")


DEFAULT_ENDPOINT_MODE = "vip"
"""docker's default for --endpoint-mode on `create`."""

# What docker's help shows for --stop-grace-period; the runtime applies the default (objects.defaults has none).
SHOWN_STOP_GRACE_PERIOD = "10s"


def service_options(create: bool) -> Callable[[Any], Any]:
    """The options `create` and `update` share. On `create` the help shows SwarmKit's defaults and
    --endpoint-mode has docker's; on `update` every one of them defaults to "not given"."""

    def decorate(fn: Any) -> Any:
        d = _with_default
        options = [
            detach_option(),
            quiet_progress_option(),
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
            click.option(
                "--init",
                cls=GoBoolOption,
                help="Use an init inside each service container to forward signals and reap processes",
            ),
            click.option("--limit-cpu", type=NANO_CPUS, metavar="decimal", help="Limit CPUs"),
            click.option("--limit-memory", type=MEMORY_BYTES, metavar="bytes", help="Limit Memory"),
            click.option(
                "--limit-pids",
                type=int,
                metavar="int",
                help="Limit maximum number of processes (default 0 = unlimited)",
            ),
            click.option("--reserve-cpu", type=NANO_CPUS, metavar="decimal", help="Reserve CPUs"),
            click.option("--reserve-memory", type=MEMORY_BYTES, metavar="bytes", help="Reserve Memory"),
            _duration_option(
                "--stop-grace-period",
                d("Time to wait before force killing a container (ns|us|ms|s|m|h)", SHOWN_STOP_GRACE_PERIOD, create),
            ),
            _uint_option("--replicas", "Number of tasks"),
            _uint_option("--replicas-max-per-node", "Maximum number of tasks per node (default 0 = unlimited)"),
            click.option(
                "--restart-condition",
                type=click.Choice(["none", "on-failure", "any"]),
                metavar="string",
                help=d(
                    'Restart when condition is met ("none", "on-failure", "any")',
                    _quoted(DEFAULT_RESTART_CONDITION),
                    create,
                ),
            ),
            _duration_option(
                "--restart-delay",
                d("Delay between restart attempts (ns|us|ms|s|m|h)", go_duration(DEFAULT_RESTART_DELAY_NS), create),
            ),
            _uint_option("--restart-max-attempts", "Maximum number of restarts before giving up"),
            _duration_option("--restart-window", "Window used to evaluate the restart policy (ns|us|ms|s|m|h)"),
            *_update_config_options("update", create),
            *_update_config_options("rollback", create),
            click.option(
                "--endpoint-mode",
                type=click.Choice(["vip", "dnsrr"]),
                default=DEFAULT_ENDPOINT_MODE if create else None,
                metavar="string",
                help=d("Endpoint mode (vip or dnsrr)", _quoted(DEFAULT_ENDPOINT_MODE), create),
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
        _uint_option(f"--{kind}-parallelism", d(texts["parallelism"], str(UPDATE_DEFAULTS["Parallelism"]), create)),
        _duration_option(f"--{kind}-delay", d(texts["delay"], go_duration(UPDATE_DEFAULTS["Delay"]), create)),
        _duration_option(f"--{kind}-monitor", d(texts["monitor"], go_duration(UPDATE_DEFAULTS["Monitor"]), create)),
        click.option(
            f"--{kind}-failure-action",
            type=click.Choice(actions),
            metavar="string",
            help=d(texts["failure-action"], _quoted(UPDATE_DEFAULTS["FailureAction"]), create),
        ),
        click.option(
            f"--{kind}-max-failure-ratio",
            type=click.FloatRange(min=0, max=1),
            metavar="float",
            help=d(texts["max-failure-ratio"], go_float(UPDATE_DEFAULTS["MaxFailureRatio"]), create),
        ),
        click.option(
            f"--{kind}-order",
            type=click.Choice(["start-first", "stop-first"]),
            metavar="string",
            help=d(texts["order"], _quoted(UPDATE_DEFAULTS["Order"]), create),
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
