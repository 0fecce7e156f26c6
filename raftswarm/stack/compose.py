"""Compose file -> swarm specs, as `docker stack deploy -c FILE NAME` does it. Pure apart from reading the files.

Two steps, after docker/cli `cli/compose/loader` and `cli/compose/convert`:

- `load_stack` parses the YAML, interpolates `${VAR}` from the given environment, and checks every key it
  reads. Problems raise `ComposeError` naming the file and the key path (``services.web.deploy.replicas``).
  Service keys swarm cannot honour (build, container_name, depends_on, ...) and unknown top-level keys are
  not errors: they become warnings, as docker prints "Ignoring unsupported options: build".
- `stack_specs` scopes every name under the stack namespace (``<ns>_web``) and builds Docker API bodies:
  NetworkCreate bodies, SecretSpecs (the data read from `file:`, relative to the compose file) and
  ServiceSpecs. Secret references carry only SecretName; the deployer looks up the SecretID.

Fields the compose file leaves unset are left out of the specs, so the swarm's defaults apply, except the
ones Docker always sends: the namespace label, UpdateConfig.Parallelism (1) and EndpointSpec.Mode (vip).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ..errors import ComposeError

__all__ = ["ComposeError", "StackConfig", "StackSpecs", "load_stack", "stack_specs"]

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
DEFAULT_NETWORK = "default"
DEFAULT_NETWORK_DRIVER = "overlay"
# Swarm mounts a secret readable by everyone in the container unless told otherwise (docker/cli convert).
DEFAULT_SECRET_MODE = 0o444
_INT64_MAX = 2**63 - 1
_PORT_MAX = 65535

# Keys the swarm converter reads. Anything else under a service is reported and ignored.
_SERVICE_KEYS = frozenset(
    {
        "image",
        "command",
        "entrypoint",
        "environment",
        "working_dir",
        "user",
        "hostname",
        "init",
        "labels",
        "secrets",
        "stop_grace_period",
        "deploy",
        "networks",
        "ports",
    }
)
_TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "secrets"})
_DEPLOY_KEYS = frozenset(
    {
        "mode",
        "replicas",
        "labels",
        "update_config",
        "rollback_config",
        "resources",
        "restart_policy",
        "placement",
        "endpoint_mode",
    }
)


class _Invalid(Exception):
    """A problem at a key path; `load_stack` adds the file name."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)


def _fail(path: str, problem: str) -> NoReturn:
    raise _Invalid(path, problem)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# -- the loaded configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretReference:
    source: str
    target: str
    uid: str
    gid: str
    mode: int


@dataclass(frozen=True)
class ServiceConfig:
    """One service after checking and normalising; durations are in nanoseconds, sizes in bytes."""

    name: str
    image: str
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    environment: dict[str, str | None] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    init: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)
    secrets: list[SecretReference] = field(default_factory=list)
    stop_grace_period: int | None = None
    networks: dict[str, list[str]] = field(default_factory=dict)  # network key -> extra aliases
    ports: list[dict[str, Any]] = field(default_factory=list)  # PortConfig bodies
    deploy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkConfig:
    name: str | None = None  # an explicit `name:`, not scoped by the namespace
    external: bool = False
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ipam_driver: str | None = None
    subnets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SecretConfig:
    name: str | None = None
    external: bool = False
    file: Path | None = None  # absolute: resolved against the compose file's directory
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackConfig:
    """A checked compose file: what `stack_specs` converts."""

    path: Path
    services: dict[str, ServiceConfig]
    networks: dict[str, NetworkConfig]
    secrets: dict[str, SecretConfig]
    warnings: list[str]


@dataclass(frozen=True)
class StackSpecs:
    """Docker API bodies for a stack, keyed by their full (namespaced) names; services by compose name."""

    networks: dict[str, dict[str, Any]]
    external_networks: list[str]
    secrets: dict[str, dict[str, Any]]
    external_secrets: list[str]
    services: dict[str, dict[str, Any]]
    warnings: list[str]


# -- loading ---------------------------------------------------------------------------------------------------


def load_stack(path: Path, environment: Mapping[str, str]) -> StackConfig:
    """Parse, interpolate and check the compose file at `path`. Raises `ComposeError`."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ComposeError(f"{path}: cannot read the compose file: {exc.strerror or exc}") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ComposeError(f"{path}: not UTF-8 text (byte {exc.start}); save the compose file as UTF-8") from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ComposeError(f"{path}: {where}invalid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ComposeError(f"{path}: invalid YAML: {exc}") from None
    try:
        return _load(path, document, environment)
    except _Invalid as exc:
        raise ComposeError(f"{path}: {exc}") from None
    except RecursionError:
        raise ComposeError(f"{path}: the document is nested too deeply") from None


def _load(path: Path, document: Any, environment: Mapping[str, str]) -> StackConfig:
    if document is None:
        _fail("", "the compose file is empty; it needs a `services:` section")
    top = _mapping(document, "")
    top = _interpolate(top, "", environment)
    warnings: list[str] = []
    unknown = sorted(key for key in top if key not in _TOP_LEVEL_KEYS and not key.startswith("x-"))
    if unknown:
        warnings.append(f"Ignoring unsupported top-level options: {', '.join(unknown)}")

    networks = {
        name: _network(value, _at("networks", name))
        for name, value in _mapping(_given(top, "networks", {}), "networks").items()
    }
    secrets = {
        name: _secret(value, _at("secrets", name), path.parent)
        for name, value in _mapping(_given(top, "secrets", {}), "secrets").items()
    }
    services_section = _mapping(_required(top, "services", "", "define at least one service"), "services")
    services: dict[str, ServiceConfig] = {}
    ignored: set[str] = set()
    for name, value in services_section.items():
        service_path = _at("services", name)
        definition = _mapping(value, service_path)
        ignored.update(key for key in definition if key not in _SERVICE_KEYS and not key.startswith("x-"))
        services[name] = _service(name, definition, service_path, networks, secrets, environment, warnings)
    if ignored:
        # docker/cli prints the same line for keys only `docker compose` honours.
        warnings.insert(0, f"Ignoring unsupported options: {', '.join(sorted(ignored))}")
    return StackConfig(path=path, services=services, networks=networks, secrets=secrets, warnings=warnings)


# -- interpolation (cli/compose/template) --------------------------------------------------------------------

_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
_TEMPLATE = re.compile(rf"\$(?:(?P<escaped>\$)|(?P<named>{_NAME})|\{{(?P<braced>[^}}]*)\}}|(?P<invalid>))")
_BRACED = re.compile(rf"(?P<name>{_NAME})(?:(?P<operator>:-|-|:\?|\?)(?P<argument>.*))?", re.DOTALL)


def _interpolate(value: Any, path: str, environment: Mapping[str, str]) -> Any:
    """Substitute variables in every string value (not in keys, as docker does)."""
    if isinstance(value, str):
        return _substitute(value, path, environment)
    if isinstance(value, dict):
        return {key: _interpolate(item, _at(path, key), environment) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, _at(path, index), environment) for index, item in enumerate(value)]
    return value


def _substitute(template: str, path: str, environment: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return environment.get(match["named"], "")
        braced = match["braced"]
        parsed = _BRACED.fullmatch(braced) if braced is not None else None
        if parsed is None:
            _fail(path, f"invalid interpolation format in {template!r}; write $$ for a literal $")
        name, operator, argument = parsed["name"], parsed["operator"], parsed["argument"] or ""
        value = environment.get(name)
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return argument if value is None else value
        if operator in (":?", "?") and (value is None or (operator == ":?" and not value)):
            _fail(path, f"required variable {name} is missing a value: {argument}")
        return value or ""

    return _TEMPLATE.sub(replace, template)


# -- value readers ---------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    kind = "null" if value is None else type(value).__name__
    text = repr(value)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def _given(parent: dict[str, Any], key: str, default: Any) -> Any:
    """The value at `key`; an absent key or an explicit null (`ports:` with nothing after it) is `default`."""
    value = parent.get(key)
    return default if value is None else value


def _required(parent: dict[str, Any], key: str, path: str, hint: str) -> Any:
    if parent.get(key) is None:
        _fail(_at(path, key), f"is required; {hint}")
    return parent[key]


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path or "top level", f"must be a mapping, got {_shown(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(path or "top level", f"keys must be strings, got {_shown(key)}")
    return value


def _only(value: dict[str, Any], path: str, allowed: frozenset[str] | set[str]) -> None:
    for key in value:
        if key not in allowed and not key.startswith("x-"):
            _fail(_at(path, key), f"unknown option; expected one of {', '.join(sorted(allowed))}")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string, got {_shown(value)}")
    return value


def _scalar_text(value: Any, path: str) -> str:
    """A label or environment value: YAML numbers and booleans are written the way Go prints them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    _fail(path, f"must be a string, number or boolean, got {_shown(value)}")


def _strings(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        _fail(path, f"must be a list of strings, got {_shown(value)}")
    return [_string(item, _at(path, index)) for index, item in enumerate(value)]


def _integer(value: Any, path: str, minimum: int = 0, maximum: int = _INT64_MAX) -> int:
    # An interpolated "${REPLICAS}" arrives as a string; docker casts such values back to numbers.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"must be an integer, got {_shown(value)}")
    if not minimum <= value <= maximum:
        _fail(path, f"must be from {minimum} to {maximum}, got {value}")
    return value


def _boolean(value: Any, path: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        _fail(path, f"must be true or false, got {_shown(value)}")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        _fail(path, f"must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def _key_values(value: Any, path: str, allow_missing: bool = False) -> dict[str, str | None]:
    """A `KEY=VALUE` list or a mapping. A list entry without `=` is None when allowed, else ""."""
    result: dict[str, str | None] = {}
    if isinstance(value, list):
        for index, item in enumerate(value):
            key, equals, text = _string(item, _at(path, index)).partition("=")
            if not key:
                _fail(_at(path, index), f"must be KEY=VALUE, got {item!r}")
            result[key] = text if equals else (None if allow_missing else "")
        return result
    for key, item in _mapping(value, path).items():
        if item is None:
            result[key] = None if allow_missing else ""
        else:
            result[key] = _scalar_text(item, _at(path, key))
    return result


def _labels(value: Any, path: str) -> dict[str, str]:
    return {key: text or "" for key, text in _key_values(value, path).items()}


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_DURATION_UNITS["h"] = 3600 * 10**9


def _duration(value: Any, path: str) -> int:
    """Go's time.ParseDuration ("1m30s", "1.5s", "0"), in nanoseconds; negative durations are refused."""
    text = _string(value, path)
    if text == "0":
        return 0
    if len(text) > 100:
        _fail(path, "duration is too long")
    position, total = 0, Fraction(0)
    for match in _DURATION_PART.finditer(text):
        number = match[1]
        if match.start() != position or number in ("", "."):
            break
        total += Fraction(number) * _DURATION_UNITS[match[2]]
        position = match.end()
    if position != len(text) or not text:
        _fail(path, f'must be a duration like "10s", "1m30s" or "500ms", got {text!r}')
    if total > _INT64_MAX:
        _fail(path, f"duration {text!r} is too long")
    return int(total)


_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?) ?([kKmMgGtTpP])?[iI]?[bB]?")


def _bytes(value: Any, path: str) -> int:
    """docker/go-units RAMInBytes: "512M", "1.5g", "1024" -- binary multiples."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(value, path)
    match = _SIZE.fullmatch(_string(value, path))
    if match is None:
        _fail(path, f'must be a size like "512M" or "1G", got {value!r}')
    power = " kmgtp".index((match[2] or " ").lower())
    amount = int(Fraction(match[1]) * 1024**power)
    if amount > _INT64_MAX:
        _fail(path, f"size {value!r} is too large")
    return amount


def _nano_cpus(value: Any, path: str) -> int:
    """docker/cli opts.ParseCPUs: "0.5" -> 500000000; finer than a nano-CPU is refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        _fail(path, f'must be a number of CPUs like "0.5", got {_shown(value)}')
    text = str(value)
    if not re.fullmatch(r"[0-9]{1,10}(?:\.[0-9]{1,20})?", text):
        _fail(path, f'must be a number of CPUs like "0.5", got {text!r}')
    nanos = Fraction(text) * 10**9
    if nanos.denominator != 1:
        _fail(path, f"{text} CPUs is too precise: the unit is a billionth of a CPU")
    return int(nanos)


def _command(value: Any, path: str) -> list[str]:
    """A list, or a string split as a shell would (docker uses shlex too)."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            _fail(path, f"cannot split {value!r} into words: {exc}")
    return _strings(value, path)


# -- top-level networks and secrets ----------------------------------------------------------------------------


def _name_and_external(definition: dict[str, Any], path: str) -> tuple[str | None, bool]:
    """A network's or secret's `name` (or the deprecated `external.name`) and whether it is external."""
    name = _string(definition["name"], _at(path, "name")) if definition.get("name") is not None else None
    external, external_name = _external(definition.get("external", False), _at(path, "external"))
    if external_name is not None:
        if name is not None:
            _fail(path, "external.name and name conflict; only use name")
        name = external_name
    return name, external


def _external(value: Any, path: str) -> tuple[bool, str | None]:
    """`external: true`, or the deprecated `external: {name: x}`."""
    if isinstance(value, dict):
        _only(_mapping(value, path), path, {"name"})
        return True, (_string(value["name"], _at(path, "name")) if value.get("name") is not None else None)
    return _boolean(value, path), None


def _network(value: Any, path: str) -> NetworkConfig:
    definition = _mapping(value if value is not None else {}, path)
    _only(definition, path, {"name", "external", "driver", "driver_opts", "internal", "attachable", "labels", "ipam"})
    name, external = _name_and_external(definition, path)
    if external:
        for key in ("driver", "driver_opts", "internal", "attachable", "ipam", "labels"):
            if key in definition:
                _fail(_at(path, key), "cannot be set on an external network: the stack does not create it")
    ipam_driver, subnets = None, []
    if definition.get("ipam") is not None:
        ipam_path = _at(path, "ipam")
        ipam = _mapping(definition["ipam"], ipam_path)
        _only(ipam, ipam_path, {"driver", "config"})
        if ipam.get("driver") is not None:
            ipam_driver = _string(ipam["driver"], _at(ipam_path, "driver"))
        config_path = _at(ipam_path, "config")
        config = ipam.get("config") or []
        if not isinstance(config, list):
            _fail(config_path, f"must be a list of {{subnet: CIDR}}, got {_shown(config)}")
        for index, entry in enumerate(config):
            entry_path = _at(config_path, index)
            _only(_mapping(entry, entry_path), entry_path, {"subnet"})
            subnet = _string(_required(entry, "subnet", entry_path, 'e.g. "10.20.0.0/24"'), _at(entry_path, "subnet"))
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                _fail(
                    _at(entry_path, "subnet"), f'must be a subnet in CIDR notation like "10.20.0.0/24", got {subnet!r}'
                )
            subnets.append(subnet)
    return NetworkConfig(
        name=name,
        external=external,
        driver=_string(definition["driver"], _at(path, "driver")) if definition.get("driver") is not None else None,
        driver_opts={
            key: text or ""
            for key, text in _key_values(definition.get("driver_opts") or {}, _at(path, "driver_opts")).items()
        },
        internal=_boolean(definition.get("internal", False), _at(path, "internal")),
        attachable=_boolean(definition.get("attachable", False), _at(path, "attachable")),
        labels=_labels(definition.get("labels") or {}, _at(path, "labels")),
        ipam_driver=ipam_driver,
        subnets=subnets,
    )


def _secret(value: Any, path: str, directory: Path) -> SecretConfig:
    definition = _mapping(value, path)
    _only(definition, path, {"name", "external", "file", "labels"})
    name, external = _name_and_external(definition, path)
    if external:
        if "file" in definition:
            _fail(_at(path, "file"), "cannot be set on an external secret: it already exists in the swarm")
        return SecretConfig(name=name, external=True)
    file = _string(
        _required(definition, "file", path, "give the file holding the secret, or external: true"), _at(path, "file")
    )
    if not file or "\0" in file:
        _fail(_at(path, "file"), f"must be a file path, got {file!r}")
    return SecretConfig(
        name=name, file=directory / file, labels=_labels(definition.get("labels") or {}, _at(path, "labels"))
    )


# -- services -----------------------------------------------------------------------------------------------


def _service(
    name: str,
    definition: dict[str, Any],
    path: str,
    networks: dict[str, NetworkConfig],
    secrets: dict[str, SecretConfig],
    environment: Mapping[str, str],
    warnings: list[str],
) -> ServiceConfig:
    def optional(key: str, read: Callable[[Any, str], Any]) -> Any:
        return read(definition[key], _at(path, key)) if definition.get(key) is not None else None

    image = _string(
        _required(definition, "image", path, "swarm runs images, it does not build them"), _at(path, "image")
    )
    if not image:
        _fail(_at(path, "image"), "must not be empty")
    env = optional("environment", lambda value, at: _key_values(value, at, allow_missing=True)) or {}
    # A variable listed without a value takes the deploying shell's value (docker/cli resolveEnvironment).
    env = {key: environment.get(key, text) if not text else text for key, text in env.items()}
    return ServiceConfig(
        name=name,
        image=image,
        entrypoint=optional("entrypoint", _command),
        command=optional("command", _command),
        environment=env,
        working_dir=optional("working_dir", _string),
        user=optional("user", _string),
        hostname=optional("hostname", _string),
        init=optional("init", _boolean),
        labels=optional("labels", _labels) or {},
        secrets=_service_secrets(_given(definition, "secrets", []), _at(path, "secrets"), secrets),
        stop_grace_period=optional("stop_grace_period", _duration),
        networks=_service_networks(_given(definition, "networks", {}), _at(path, "networks"), networks),
        ports=_ports(_given(definition, "ports", []), _at(path, "ports"), warnings),
        deploy=_deploy(_given(definition, "deploy", {}), _at(path, "deploy")),
    )


def _service_secrets(value: Any, path: str, secrets: dict[str, SecretConfig]) -> list[SecretReference]:
    if not isinstance(value, list):
        _fail(path, f"must be a list of secret names or {{source: ...}} mappings, got {_shown(value)}")
    references = []
    for index, entry in enumerate(value):
        entry_path = _at(path, index)
        if isinstance(entry, str):
            entry = {"source": entry}
        entry = _mapping(entry, entry_path)
        _only(entry, entry_path, {"source", "target", "uid", "gid", "mode"})
        source = _string(
            _required(entry, "source", entry_path, "name a secret from the top-level secrets:"),
            _at(entry_path, "source"),
        )
        if source not in secrets:
            _fail(entry_path, f"undefined secret {source!r}; define it under the top-level secrets:")
        target = entry.get("target")
        references.append(
            SecretReference(
                source=source,
                target=_string(target, _at(entry_path, "target")) if target is not None else source,
                uid=_scalar_text(entry.get("uid", "0"), _at(entry_path, "uid")),
                gid=_scalar_text(entry.get("gid", "0"), _at(entry_path, "gid")),
                mode=_integer(entry.get("mode", DEFAULT_SECRET_MODE), _at(entry_path, "mode"), 0, 0o7777),
            )
        )
    return references


def _service_networks(value: Any, path: str, networks: dict[str, NetworkConfig]) -> dict[str, list[str]]:
    """A list of network names, or a mapping name -> null | {aliases: [...]}."""
    if isinstance(value, list):
        value = {_string(item, _at(path, index)): None for index, item in enumerate(value)}
    result = {}
    for name, options in _mapping(value, path).items():
        network_path = _at(path, name)
        if name not in networks and name != DEFAULT_NETWORK:
            _fail(network_path, f"undefined network {name!r}; define it under the top-level networks:")
        aliases: list[str] = []
        if options is not None:
            _only(_mapping(options, network_path), network_path, {"aliases"})
            aliases = _strings(options.get("aliases") or [], _at(network_path, "aliases"))
        result[name] = aliases
    return result


_PROTOCOLS = ("tcp", "udp", "sctp")
_PUBLISH_MODES = ("ingress", "host")
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def _port_range(text: str, path: str) -> range:
    match = _PORT_RANGE.fullmatch(text)
    if match is None:
        _fail(path, f"invalid port {text!r}")
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    if not 1 <= first <= last <= _PORT_MAX:
        _fail(path, f"invalid port range {text!r}: ports are 1-{_PORT_MAX}, low to high")
    return range(first, last + 1)


def _short_port(text: str, path: str, warnings: list[str]) -> list[dict[str, Any]]:
    """`[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]` (nat.ParsePortSpec), published through the ingress."""
    spec, _, protocol = text.partition("/")
    protocol = _choice(protocol.lower() or "tcp", path, _PROTOCOLS)
    host_ip, published, target = "", "", spec
    if ":" in spec:
        head, _, target = spec.rpartition(":")
        host_ip, _, published = head.rpartition(":") if ":" in head else ("", "", head)
    if host_ip:
        warnings.append(f"{path}: ignoring IP-address ({host_ip}) in {text!r}: a service listens on 0.0.0.0")
    targets = _port_range(target, path)
    publisheds: list[int | None] = list(_port_range(published, path)) if published else [None] * len(targets)
    if len(publisheds) != len(targets):
        _fail(path, f"published and target port ranges differ in length in {text!r}")
    ports = []
    for target_port, published_port in zip(targets, publisheds, strict=True):
        port = {"Protocol": protocol, "TargetPort": target_port, "PublishMode": "ingress"}
        if published_port is not None:
            port["PublishedPort"] = published_port
        ports.append(port)
    return ports


def _long_port(entry: dict[str, Any], path: str) -> dict[str, Any]:
    _only(entry, path, {"target", "published", "protocol", "mode"})
    port = {
        "Protocol": _choice(entry.get("protocol", "tcp"), _at(path, "protocol"), _PROTOCOLS),
        "TargetPort": _integer(
            _required(entry, "target", path, "give the container's port"), _at(path, "target"), 1, _PORT_MAX
        ),
        "PublishMode": _choice(entry.get("mode", "ingress"), _at(path, "mode"), _PUBLISH_MODES),
    }
    if entry.get("published") is not None:
        port["PublishedPort"] = _integer(entry["published"], _at(path, "published"), 0, _PORT_MAX)
    return port


def _ports(value: Any, path: str, warnings: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        _fail(path, f'must be a list of ports ("8080:80" or {{target: 80, published: 8080}}), got {_shown(value)}')
    ports = []
    for index, entry in enumerate(value):
        entry_path = _at(path, index)
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = str(entry)
        if isinstance(entry, str):
            ports.extend(_short_port(entry, entry_path, warnings))
        else:
            ports.append(_long_port(_mapping(entry, entry_path), entry_path))
    return ports


def _deploy(value: Any, path: str) -> dict[str, Any]:
    """The deploy section, checked, with the same keys and converted values."""
    deploy = _mapping(value, path)
    _only(deploy, path, _DEPLOY_KEYS)

    def read(key: str, reader: Callable[[Any, str], Any]) -> None:
        if deploy.get(key) is not None:
            result[key] = reader(deploy[key], _at(path, key))

    result: dict[str, Any] = {}
    read("mode", lambda item, at: _choice(item, at, ("replicated", "global")))
    read("replicas", _integer)
    read("labels", _labels)
    read("update_config", lambda item, at: _update_config(item, at, ("pause", "continue", "rollback")))
    read("rollback_config", lambda item, at: _update_config(item, at, ("pause", "continue")))
    read("resources", _resources)
    read("restart_policy", _restart_policy)
    read("placement", _placement)
    read("endpoint_mode", lambda item, at: _choice(str(item).lower(), at, ("vip", "dnsrr")))
    if result.get("mode") == "global" and "replicas" in result:
        _fail(_at(path, "replicas"), "replicas can only be used with replicated mode")
    return result


def _fields(value: Any, path: str, readers: dict[str, Callable[[Any, str], Any]]) -> dict[str, Any]:
    section = _mapping(value, path)
    _only(section, path, set(readers))
    return {
        key: readers[key](item, _at(path, key)) for key, item in section.items() if item is not None and key in readers
    }


def _ratio(value: Any, path: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        _fail(path, f"must be a number from 0 to 1, got {_shown(value)}")
    return float(value)


def _update_config(value: Any, path: str, failure_actions: tuple[str, ...]) -> dict[str, Any]:
    return _fields(
        value,
        path,
        {
            "parallelism": _integer,
            "delay": _duration,
            "failure_action": lambda item, at: _choice(item, at, failure_actions),
            "monitor": _duration,
            "max_failure_ratio": _ratio,
            "order": lambda item, at: _choice(item, at, ("stop-first", "start-first")),
        },
    )


def _resources(value: Any, path: str) -> dict[str, Any]:
    amounts = {"cpus": _nano_cpus, "memory": _bytes}
    return _fields(
        value,
        path,
        {
            "limits": lambda item, at: _fields(item, at, amounts),
            "reservations": lambda item, at: _fields(item, at, amounts),
        },
    )


def _restart_policy(value: Any, path: str) -> dict[str, Any]:
    return _fields(
        value,
        path,
        {
            "condition": lambda item, at: _choice(item, at, ("none", "on-failure", "any")),
            "delay": _duration,
            "max_attempts": _integer,
            "window": _duration,
        },
    )


def _spread_preferences(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        _fail(path, f"must be a list of {{spread: node.labels.zone}}, got {_shown(value)}")
    descriptors = []
    for index, item in enumerate(value):
        preference = _fields(item, _at(path, index), {"spread": _string})
        descriptors.append(_required(preference, "spread", _at(path, index), "e.g. spread: node.labels.zone"))
    return descriptors


def _placement(value: Any, path: str) -> dict[str, Any]:
    return _fields(
        value,
        path,
        {"constraints": _strings, "preferences": _spread_preferences, "max_replicas_per_node": _integer},
    )


# -- conversion (cli/compose/convert) ---------------------------------------------------------------------------


def stack_specs(config: StackConfig, namespace: str) -> StackSpecs:
    """The API bodies that deploy `config` as the stack `namespace`. Reads `file:` secrets; raises `ComposeError`."""
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", namespace):
        raise ComposeError(f"invalid stack name {namespace!r}: use letters, digits, '_', '.' and '-'")

    def scoped(name: str) -> str:
        return f"{namespace}_{name}"

    def stack_labels(labels: Mapping[str, str]) -> dict[str, str]:
        return {**labels, NAMESPACE_LABEL: namespace}

    def network_name(key: str) -> str:
        network = config.networks.get(key, NetworkConfig())
        return network.name or (key if network.external else scoped(key))

    def secret_name(key: str) -> str:
        secret = config.secrets[key]
        return secret.name or (key if secret.external else scoped(key))

    used_networks = {key for service in config.services.values() for key in (service.networks or [DEFAULT_NETWORK])}
    networks: dict[str, dict[str, Any]] = {}
    external_networks: list[str] = []
    for key in sorted(used_networks):
        network = config.networks.get(key, NetworkConfig())
        if network.external:
            external_networks.append(network_name(key))
            continue
        body: dict[str, Any] = {
            "Name": network_name(key),
            "Driver": network.driver or DEFAULT_NETWORK_DRIVER,
            "Attachable": network.attachable,
            "Labels": stack_labels(network.labels),
        }
        if network.internal:
            body["Internal"] = True
        if network.driver_opts:
            body["Options"] = dict(network.driver_opts)
        if network.ipam_driver or network.subnets:
            ipam: dict[str, Any] = {"Config": [{"Subnet": subnet} for subnet in network.subnets]}
            if network.ipam_driver:
                ipam["Driver"] = network.ipam_driver
            body["IPAM"] = ipam
        networks[body["Name"]] = body

    secrets: dict[str, dict[str, Any]] = {}
    external_secrets: list[str] = []
    for key, secret in sorted(config.secrets.items()):
        if secret.external:
            external_secrets.append(secret_name(key))
            continue
        assert secret.file is not None
        try:
            data = secret.file.read_bytes()
        except (OSError, ValueError) as exc:
            problem = getattr(exc, "strerror", None) or str(exc)
            raise ComposeError(f"{config.path}: secrets.{key}.file: cannot read {secret.file}: {problem}") from None
        secrets[secret_name(key)] = {
            "Name": secret_name(key),
            "Labels": stack_labels(secret.labels),
            "Data": base64.b64encode(data).decode("ascii"),
        }

    services = {
        name: _service_spec(service, scoped(name), network_name, secret_name, stack_labels)
        for name, service in config.services.items()
    }
    return StackSpecs(
        networks=networks,
        external_networks=external_networks,
        secrets=secrets,
        external_secrets=external_secrets,
        services=services,
        warnings=list(config.warnings),
    )


def _service_spec(
    service: ServiceConfig,
    name: str,
    network_name: Callable[[str], str],
    secret_name: Callable[[str], str],
    stack_labels: Callable[[Mapping[str, str]], dict[str, str]],
) -> dict[str, Any]:
    deploy = service.deploy
    container: dict[str, Any] = {"Image": service.image, "Labels": stack_labels(service.labels)}
    optional = {
        "Command": service.entrypoint,
        "Args": service.command,
        "Hostname": service.hostname,
        "Init": service.init,
        "Dir": service.working_dir,
        "User": service.user,
        "StopGracePeriod": service.stop_grace_period,
    }
    container.update({key: value for key, value in optional.items() if value is not None})
    if service.environment:
        container["Env"] = sorted(
            key if value is None else f"{key}={value}" for key, value in service.environment.items()
        )
    if service.secrets:
        references = [
            {
                "File": {"Name": reference.target, "UID": reference.uid, "GID": reference.gid, "Mode": reference.mode},
                "SecretName": secret_name(reference.source),
            }
            for reference in service.secrets
        ]
        # Sorted, so redeploying an unchanged file does not restart the service (docker/cli does the same).
        container["Secrets"] = sorted(references, key=lambda reference: reference["SecretName"])

    task: dict[str, Any] = {"ContainerSpec": container}
    if "resources" in deploy:
        task["Resources"] = {
            api_key: _renamed(amounts, {"cpus": "NanoCPUs", "memory": "MemoryBytes"})
            for compose_key, api_key in (("limits", "Limits"), ("reservations", "Reservations"))
            if (amounts := deploy["resources"].get(compose_key)) is not None
        }
    if "restart_policy" in deploy:
        task["RestartPolicy"] = _renamed(
            deploy["restart_policy"],
            {"condition": "Condition", "delay": "Delay", "max_attempts": "MaxAttempts", "window": "Window"},
        )
    if "placement" in deploy:
        placement = deploy["placement"]
        task["Placement"] = {}
        if "constraints" in placement:
            task["Placement"]["Constraints"] = placement["constraints"]
        if "preferences" in placement:
            task["Placement"]["Preferences"] = [
                {"Spread": {"SpreadDescriptor": descriptor}} for descriptor in placement["preferences"]
            ]
        if "max_replicas_per_node" in placement:
            task["Placement"]["MaxReplicas"] = placement["max_replicas_per_node"]
    attachments = [
        # Every stack network is user-defined, so the service name is always an alias (docker/cli).
        {"Target": network_name(key), "Aliases": [*aliases, service.name]}
        for key, aliases in (service.networks or {DEFAULT_NETWORK: []}).items()
    ]
    task["Networks"] = sorted(attachments, key=lambda attachment: attachment["Target"])

    spec: dict[str, Any] = {
        "Name": name,
        "Labels": {**stack_labels(deploy.get("labels", {})), IMAGE_LABEL: service.image},
        "TaskTemplate": task,
    }
    if deploy.get("mode") == "global":
        spec["Mode"] = {"Global": {}}
    else:
        spec["Mode"] = {"Replicated": {"Replicas": deploy["replicas"]} if "replicas" in deploy else {}}
    for compose_key, api_key in (("update_config", "UpdateConfig"), ("rollback_config", "RollbackConfig")):
        if compose_key in deploy:
            spec[api_key] = {"Parallelism": 1} | _renamed(
                deploy[compose_key],
                {
                    "parallelism": "Parallelism",
                    "delay": "Delay",
                    "failure_action": "FailureAction",
                    "monitor": "Monitor",
                    "max_failure_ratio": "MaxFailureRatio",
                    "order": "Order",
                },
            )
    endpoint: dict[str, Any] = {"Mode": deploy.get("endpoint_mode", "vip")}
    if service.ports:
        endpoint["Ports"] = sorted(
            service.ports,
            key=lambda port: (port.get("PublishedPort", 0), port["TargetPort"], port["Protocol"], port["PublishMode"]),
        )
    spec["EndpointSpec"] = endpoint
    return spec


def _renamed(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {names[key]: value for key, value in values.items()}
