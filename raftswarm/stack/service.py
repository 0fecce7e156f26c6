"""A compose service, checked key by key into a `ServiceConfig` (after docker/cli `cli/compose/loader` and the
3.x schema it validates against). Every key docker/cli knows has one fate here, and none is dropped unsaid:

- read: converted into the ServiceSpec as docker/cli converts it (`convert`); the node acts on it, or answers a
  Warning for the fields it takes without acting on them (container labels, stdin_open, logging, generic
  resources), which `stack deploy` prints;
- `IGNORED` and `DEPRECATED`: only `docker compose` acts on them; ignored with docker's own warning lines;
- `FORBIDDEN`: refused, with docker/cli's words;
- `REFUSED`: docker/cli ignores them with a warning, or passes them on to a daemon that ignores them; raftswarm
  refuses them, saying what to write instead, since a task without them is not what the file asks for.

A key outside all of these is refused, as docker/cli's schema refuses it. Inside the sections read here
(deploy, healthcheck, a network, a secret, a long-syntax port, ...), an unknown key is an error too.

Cross-references (a network, secret, config or volume a service names) are checked against the names every
compose file of the deploy defines (`Definitions`); what needs the files merged (the image, a mode with its
replicas, healthcheck test with disable) is checked by `check_service` once they are.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..objects.containerspec import (
    InvalidContainerSpec,
    dns_settings,
    parse_extra_hosts,
    parse_signal,
    rlimits,
    sysctls,
    tweak_capabilities,
)
from .envfile import read_env_file
from .fields import (
    Reader,
    at,
    boolean,
    byte_size,
    choice,
    command,
    duration,
    fail,
    fields_of,
    given,
    integer,
    key_values,
    labels,
    list_of,
    mapping,
    nano_cpus,
    only,
    ratio,
    required,
    scalar_text,
    string,
    string_or_list,
    strings,
)
from .model import DEFAULT_NETWORK, VOLUME, ConfigReference, SecretReference, ServiceConfig
from .mounts import service_tmpfs, service_volumes

# Swarm mounts a secret or config readable by everyone in the container unless told otherwise (docker/cli convert).
DEFAULT_SECRET_MODE = 0o444
_PORT_MAX = 65535
_OOM_SCORE_ADJ = (-1000, 1000)  # the kernel's range, which the API checks too
_MIN_PROBE_NS = 1_000_000  # SwarmKit's validateHealthCheck: a probe time is 0 (the image's) or at least 1 ms
_TASK_NAMESPACES = [{"type": kind} for kind in ("ipc", "network", "uts")]
"""Every task has its own IPC, network and UTS namespaces: the sysctls of those it may set (as the API checks)."""

READ_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "env_file", "working_dir", "user", "hostname", "init",
        "labels", "secrets", "configs", "stop_grace_period", "stop_signal", "deploy", "networks", "ports",
        "volumes", "tmpfs", "cap_add", "cap_drop", "sysctls", "ulimits", "extra_hosts", "dns", "dns_search",
        "dns_opt", "group_add", "read_only", "tty", "stdin_open", "healthcheck", "logging", "isolation",
        "oom_score_adj", "restart",
    }
)  # fmt: skip
"""The service keys converted into the ServiceSpec. dns_opt and group_add are compose-spec's (docker/cli's 3.x
format has neither); the node honours both."""

IGNORED = ("build", "depends_on", "external_links", "links")
"""What only `docker compose` does (build an image, order and link containers): docker/cli prints "Ignoring
unsupported options: ..." for them (depends_on it drops without a word), and so does raftswarm."""

DEPRECATED = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access each other's containers on"
    " any port.",
}
"""docker/cli's DeprecatedProperties, with its words: printed as "Ignoring deprecated options"."""

FORBIDDEN = {
    "extends": "Support for `extends` is not implemented yet.",
    "volume_driver": "Instead of setting the volume driver on the service, define a volume using the top-level"
    " `volumes` option and specify the driver there.",
    "volumes_from": "To share a volume between services, define it using the top-level `volumes` option and"
    " reference it from each service that shares it using the service-level `volumes` option.",
    "cpu_quota": "Set resource limits using deploy.resources",
    "cpu_shares": "Set resource limits using deploy.resources",
    "cpuset": "Set resource limits using deploy.resources",
    "mem_limit": "Set resource limits using deploy.resources",
    "memswap_limit": "Set resource limits using deploy.resources",
}
"""docker/cli's ForbiddenProperties, refused with its words."""

REFUSED = {
    "cgroup_parent": "a swarm task's cgroup is placed by its node; services have no cgroup parent",
    "cgroupns_mode": "every swarm task has a cgroup namespace of its own",
    "credential_spec": "credential specs are a Windows feature; raftswarm runs Linux containers",
    "devices": "swarm services cannot be given the node's devices",
    "domainname": "swarm services have no domain name option; set the sysctl instead:"
    " `sysctls: {kernel.domainname: example.com}`",
    "ipc": "every swarm task has an IPC namespace of its own",
    "mac_address": "the swarm gives each task its addresses on the networks it joins",
    "network_mode": "a swarm service joins the stack's networks; name them under networks:",
    "pid": "every swarm task has a PID namespace of its own",
    "privileged": "swarm services do not run privileged; add the capabilities the task needs with cap_add",
    "security_opt": "raftswarm keeps every task under its default seccomp policy and has no SELinux or AppArmor",
    "shm_size": "swarm services have no shm_size; mount a tmpfs at /dev/shm instead:"
    " `volumes: [{type: tmpfs, target: /dev/shm, tmpfs: {size: 268435456}}]` (256 MiB)",
    "userns_mode": "swarm tasks run in their node's user namespace",
}
"""Keys docker/cli knows and raftswarm refuses: why, and what to write instead."""

KNOWN_KEYS = READ_KEYS | set(IGNORED) | set(DEPRECATED) | set(FORBIDDEN) | set(REFUSED)

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
_MODES = ("replicated", "global", "replicated-job", "global-job")
_GLOBAL_MODES = ("global", "global-job")
_JOB_MODES = ("replicated-job", "global-job")
_HEALTHCHECK_KINDS = ("NONE", "CMD", "CMD-SHELL")


@dataclass(frozen=True)
class Definitions:
    """The names the top-level sections of all the deploy's compose files define, which services may name."""

    networks: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    configs: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()


def service_config(
    name: str,
    definition: dict[str, Any],
    path: str,
    defined: Definitions,
    working_dir: Path,
    environment: Mapping[str, str],
    warnings: list[str],
) -> ServiceConfig:
    """The service `name` of one compose file. `working_dir` resolves relative paths; `environment` is the
    deploying shell's (variables listed without a value, env_file lines with a key alone)."""
    for key in definition:
        if key in FORBIDDEN:
            fail(at(path, key), f"unsupported option: {FORBIDDEN[key]}")
        if key in REFUSED:
            fail(at(path, key), f"unsupported option: {REFUSED[key]}")
        if key not in KNOWN_KEYS and not key.startswith("x-"):
            guess = difflib.get_close_matches(key, sorted(READ_KEYS), n=1)
            hint = f"did you mean {guess[0]}?" if guess else "it is not a key of a compose service (format 3)"
            fail(at(path, key), f"unknown option; {hint}")

    def optional(key: str, read: Reader) -> Any:
        return read(definition[key], at(path, key)) if definition.get(key) is not None else None

    image = optional("image", string)
    if image == "":
        fail(at(path, "image"), "must not be empty")
    volumes = service_volumes(given(definition, "volumes", []), at(path, "volumes"), working_dir, environment)
    for index, mount in enumerate(volumes):
        entry_path = at(at(path, "volumes"), index)
        if mount.type == VOLUME and mount.source and mount.source not in defined.volumes:
            fail(entry_path, f"undefined volume {mount.source!r}; define it under the top-level volumes:")
        if mount.consistency:
            warnings.append(
                f"{entry_path}.consistency: ignored, as dockerd on Linux ignores it: mount consistency is a Docker"
                " Desktop setting"
            )
    return ServiceConfig(
        name=name,
        image=image,
        entrypoint=optional("entrypoint", command),
        command=optional("command", command),
        environment=_environment(definition, path, working_dir, environment),
        working_dir=optional("working_dir", string),
        user=optional("user", string),
        hostname=optional("hostname", string),
        init=optional("init", boolean),
        read_only=optional("read_only", boolean),
        tty=optional("tty", boolean),
        stdin_open=optional("stdin_open", boolean),
        labels=optional("labels", labels) or {},
        secrets=_file_references(definition, path, "secret", defined.secrets, SecretReference, _SECRET_MAX_MODE),
        configs=_file_references(definition, path, "config", defined.configs, ConfigReference, _CONFIG_MAX_MODE),
        stop_grace_period=optional("stop_grace_period", duration),
        stop_signal=optional("stop_signal", _stop_signal),
        networks=_service_networks(given(definition, "networks", {}), at(path, "networks"), defined.networks),
        ports=_ports(given(definition, "ports", []), at(path, "ports"), warnings),
        volumes=volumes,
        tmpfs=optional("tmpfs", service_tmpfs) or [],
        cap_add=optional("cap_add", lambda value, item_path: _capabilities(value, item_path, add=True)) or [],
        cap_drop=optional("cap_drop", lambda value, item_path: _capabilities(value, item_path, add=False)) or [],
        sysctls=optional("sysctls", _sysctls) or {},
        ulimits=optional("ulimits", _ulimits) or {},
        extra_hosts=optional("extra_hosts", _extra_hosts) or [],
        dns=optional("dns", lambda value, item_path: _dns(value, item_path, "Nameservers")) or [],
        dns_search=optional("dns_search", lambda value, item_path: _dns(value, item_path, "Search")) or [],
        dns_opt=optional("dns_opt", lambda value, item_path: _dns(value, item_path, "Options")) or [],
        group_add=optional("group_add", _groups) or [],
        healthcheck=optional("healthcheck", _healthcheck),
        logging=optional("logging", _logging),
        isolation=optional("isolation", _isolation) or None,
        oom_score_adj=optional("oom_score_adj", lambda value, item_path: integer(value, item_path, *_OOM_SCORE_ADJ)),
        restart=optional("restart", _restart),
        deploy=_deploy(given(definition, "deploy", {}), at(path, "deploy")),
    )


def check_service(service: ServiceConfig, path: str) -> None:
    """What only the merged service can show: raises `Invalid` at the key at fault."""
    if not service.image:
        fail(at(path, "image"), "is required; swarm runs images, it does not build them")
    deploy = service.deploy
    mode = deploy.get("mode", "replicated")
    if mode in _GLOBAL_MODES and "replicas" in deploy:
        fail(at(at(path, "deploy"), "replicas"), "replicas can only be used with replicated or replicated-job mode")
    if mode in _JOB_MODES and "update_config" in deploy:
        fail(
            at(at(path, "deploy"), "update_config"),
            "a job runs to completion, it is not rolled out: jobs may not have an update config",
        )
    if mode in _GLOBAL_MODES and deploy.get("placement", {}).get("max_replicas_per_node"):
        fail(
            at(path, "deploy.placement.max_replicas_per_node"),
            "can only be used with replicated mode; a global service runs one task per node",
        )
    health = service.healthcheck or {}
    if health.get("disable") and health.get("test"):
        fail(at(path, "healthcheck"), "test and disable can't be set at the same time")
    targets: set[str] = set()
    for key, mounts in (("volumes", service.volumes), ("tmpfs", service.tmpfs)):
        for mount in mounts:
            target = posixpath.normpath(mount.target)  # /data and /data/ are one mount point
            if target in targets:
                fail(at(path, key), f"duplicate mount point: {mount.target}")
            targets.add(target)


def unsupported_warnings(services: list[dict[str, Any]]) -> list[str]:
    """docker's lines for the ignored and deprecated keys of these service definitions (of every file)."""
    present = {key for definition in services for key in definition}
    warnings = []
    ignored = sorted(present.intersection(IGNORED))
    if ignored:
        warnings.append(f"Ignoring unsupported options: {', '.join(ignored)}")
    deprecated = [f"{key}: {DEPRECATED[key]}" for key in sorted(present.intersection(DEPRECATED))]
    if deprecated:
        warnings.append("Ignoring deprecated options:\n\n" + "\n\n".join(deprecated))
    return warnings


# -- the environment ----------------------------------------------------------------------------------------


def _environment(
    definition: dict[str, Any], path: str, working_dir: Path, environment: Mapping[str, str]
) -> dict[str, str | None]:
    """env_file entries in order, then environment: over them (docker/cli resolveEnvironment). A variable with no
    value or an empty one takes the deploying shell's value when it has one (updateEnvironment)."""
    result: dict[str, str | None] = {}

    def update(variables: Mapping[str, str | None]) -> None:
        for key, text in variables.items():
            result[key] = environment[key] if not text and key in environment else text

    if definition.get("env_file") is not None:
        files_path = at(path, "env_file")
        files = string_or_list(definition["env_file"], files_path)
        for index, file in enumerate(files):
            file_path = at(files_path, index) if isinstance(definition["env_file"], list) else files_path
            if not file or "\0" in file:
                fail(file_path, f"must be a file path, got {file!r}")
            update(read_env_file(working_dir / file, file_path, environment))
    if definition.get("environment") is not None:
        update(key_values(definition["environment"], at(path, "environment"), allow_missing=True))
    return result


# -- container settings read as the node reads them --------------------------------------------------------


def _as_node_reads(path: str, read: Any, *args: Any) -> None:
    """Check a value with the reading the node makes of it (objects.containerspec), at the compose key path."""
    try:
        read(*args)
    except InvalidContainerSpec as exc:
        fail(path, str(exc))


def _stop_signal(value: Any, path: str) -> str:
    signal = string(value, path)
    _as_node_reads(path, parse_signal, signal)
    return signal


def _capabilities(value: Any, path: str, add: bool) -> list[str]:
    names = strings(value, path)
    _as_node_reads(path, tweak_capabilities, (), names if add else [], [] if add else names)
    return names


def _sysctls(value: Any, path: str) -> dict[str, str]:
    settings = {key: text or "" for key, text in key_values(value, path).items()}
    _as_node_reads(path, sysctls, settings, _TASK_NAMESPACES)
    return settings


def _ulimits(value: Any, path: str) -> dict[str, tuple[int, int]]:
    """`nofile: 1024` (soft and hard) or `nofile: {soft: 1024, hard: 2048}`; -1 is unlimited."""
    limits = {}
    for name, limit in mapping(value, path).items():
        limit_path = at(path, name)
        if isinstance(limit, dict):
            only(limit, limit_path, {"soft", "hard"})
            soft = integer(required(limit, "soft", limit_path, "give soft and hard"), at(limit_path, "soft"), -1)
            hard = integer(required(limit, "hard", limit_path, "give soft and hard"), at(limit_path, "hard"), -1)
        else:
            soft = hard = integer(limit, limit_path, -1)
        _as_node_reads(limit_path, rlimits, [{"Name": name, "Soft": soft, "Hard": hard}])
        limits[name] = (soft, hard)
    return limits


def _extra_hosts(value: Any, path: str) -> list[str]:
    """`["host:ip", "host=ip"]` or `{host: ip}` -> Docker's "ip host" entries (docker/cli transformHostsList and
    convertExtraHosts); a list keeps its order, a mapping is sorted, brackets around an IPv6 address go."""
    pairs: list[tuple[str, str, str]] = []
    if isinstance(value, dict):
        for host, address in sorted(mapping(value, path).items()):
            pairs.append((host, scalar_text(address, at(path, host)), at(path, host)))
    else:
        for index, entry in enumerate(list_of(value, path, '"host:ip" strings')):
            entry_path = at(path, index)
            text = string(entry, entry_path)
            separator = "=" if "=" in text else ":"
            host, found, address = text.partition(separator)
            if not found or not host:
                fail(entry_path, f'must be "HOST:IP" or "HOST=IP", got {text!r}')
            pairs.append((host, address, entry_path))
    hosts = []
    for host, address, entry_path in pairs:
        if len(address) > 2 and address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        entry = f"{address} {host}"
        _as_node_reads(entry_path, parse_extra_hosts, [entry])
        hosts.append(entry)
    return hosts


def _dns(value: Any, path: str, field: str) -> list[str]:
    entries = string_or_list(value, path)
    _as_node_reads(path, dns_settings, {field: entries})
    return entries


def _groups(value: Any, path: str) -> list[str]:
    """Group names or numbers (compose-spec's group_add)."""
    items = list_of(value, path, "group names or IDs")
    groups = []
    for index, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, str | int):
            fail(at(path, index), f"must be a group name or ID, got {item!r}")
        groups.append(str(item))
    return groups


def _isolation(value: Any, path: str) -> str:
    isolation = string(value, path)
    if isolation.lower() not in ("", "default"):
        fail(path, f"invalid isolation {isolation!r}: linux only supports 'default'")
    return isolation


# -- healthcheck, logging, restart ----------------------------------------------------------------------------


def _probe_duration(value: Any, path: str) -> int:
    nanoseconds = duration(value, path)
    if 0 < nanoseconds < _MIN_PROBE_NS:
        fail(path, f"must be 0 (the image's own) or at least 1ms, got {value!r}")
    return nanoseconds


def _healthcheck_test(value: Any, path: str) -> list[str]:
    """A string is run by the container's shell (["CMD-SHELL", s]); a list is Docker's Test as it is."""
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    test = strings(value, path)
    if test and test[0] not in _HEALTHCHECK_KINDS:
        fail(path, f'must start with "CMD", "CMD-SHELL" or "NONE" (or be a string, run by /bin/sh -c), got {test!r}')
    return test


def _healthcheck(value: Any, path: str) -> dict[str, Any]:
    return fields_of(
        value,
        path,
        {
            "test": _healthcheck_test,
            "interval": _probe_duration,
            "timeout": _probe_duration,
            "start_period": _probe_duration,
            "start_interval": _probe_duration,
            "retries": integer,
            "disable": boolean,
        },
    )


def _logging(value: Any, path: str) -> dict[str, Any]:
    read = fields_of(
        value,
        path,
        {"driver": string, "options": lambda item, item_path: labels(mapping(item, item_path), item_path)},
    )
    return {"driver": read.get("driver"), "options": read.get("options", {})}


_RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def _restart(value: Any, path: str) -> str:
    text = string(value, path)
    try:
        restart_policy(text)
    except ValueError as exc:
        fail(path, str(exc))
    return text


def restart_policy(text: str) -> dict[str, Any] | None:
    """docker's legacy `restart:` (`on-failure:3`) as a RestartPolicy, read as opts.ParseRestartPolicy and
    convertRestartPolicy read it: "no" none, "always" and "unless-stopped" Condition any, "on-failure[:N]"
    on-failure with MaxAttempts N. Raises ValueError with docker's words."""
    name, colon, count = text.partition(":")
    if colon and not name:
        raise ValueError("invalid restart policy format: no policy provided before colon")
    attempts = 0
    if count:
        if not re.fullmatch(r"-?[0-9]{1,18}", count):
            raise ValueError("invalid restart policy format: maximum retry count must be an integer")
        attempts = int(count)
    if attempts < 0:
        raise ValueError("invalid restart policy: maximum retry count cannot be negative")
    if name not in ("", *_RESTART_POLICIES):
        raise ValueError(
            f"invalid restart policy: unknown policy '{name}' (must be one of 'no', 'always', 'on-failure', or"
            " 'unless-stopped')"
        )
    if name in ("", "no"):
        return None
    policy: dict[str, Any] = {"Condition": "on-failure" if name == "on-failure" else "any"}
    if attempts > 0:
        policy["MaxAttempts"] = attempts
    return policy


# -- secrets, configs, networks, ports ----------------------------------------------------------------------


_Reference = TypeVar("_Reference", SecretReference, ConfigReference)
# The runtime keeps a secret's setuid, setgid and sticky bits, but only a config's permission bits (dockerd's
# FileMode.Perm()), so a compose file may not ask for a mode bit that would be lost.
_SECRET_MAX_MODE = 0o7777
_CONFIG_MAX_MODE = 0o777


def _file_references(
    definition: dict[str, Any],
    service_path: str,
    kind: str,
    defined: frozenset[str],
    reference: type[_Reference],
    max_mode: int,
) -> list[_Reference]:
    """The service's `secrets:` or `configs:` (`kind` is "secret" or "config"): names, or {source, target, uid, gid,
    mode} mappings, each source one the top level defines; the target defaults to the source (for a config, a file
    at /<key> in the container)."""
    key = f"{kind}s"
    path = at(service_path, key)
    entries = list_of(given(definition, key, []), path, f"{kind} names or {{source: ...}} mappings")
    references = []
    for index, entry in enumerate(entries):
        entry_path = at(path, index)
        if isinstance(entry, str):
            entry = {"source": entry}
        entry = mapping(entry, entry_path)
        only(entry, entry_path, {"source", "target", "uid", "gid", "mode"})
        source = string(
            required(entry, "source", entry_path, f"name a {kind} from the top-level {kind}s:"),
            at(entry_path, "source"),
        )
        if source not in defined:
            fail(entry_path, f"undefined {kind} {source!r}; define it under the top-level {kind}s:")
        target = entry.get("target")
        references.append(
            reference(
                source=source,
                target=string(target, at(entry_path, "target")) if target is not None else source,
                uid=scalar_text(entry.get("uid", "0"), at(entry_path, "uid")),
                gid=scalar_text(entry.get("gid", "0"), at(entry_path, "gid")),
                mode=integer(entry.get("mode", DEFAULT_SECRET_MODE), at(entry_path, "mode"), 0, max_mode),
            )
        )
    return references


_NETWORK_REFUSED = {
    "ipv4_address": "the swarm gives each task its address on the network; a service cannot ask for one",
    "ipv6_address": "the swarm gives each task its address on the network; a service cannot ask for one",
    "driver_opts": "raftswarm's overlay driver takes no per-service endpoint options",
}


def _service_networks(value: Any, path: str, networks: frozenset[str]) -> dict[str, list[str] | None]:
    """A list of network names, or a mapping name -> null | {aliases: [...]}."""
    if isinstance(value, list):
        value = {string(item, at(path, index)): None for index, item in enumerate(value)}
    result: dict[str, list[str] | None] = {}
    for name, options in mapping(value, path).items():
        network_path = at(path, name)
        if name not in networks and name != DEFAULT_NETWORK:
            fail(network_path, f"undefined network {name!r}; define it under the top-level networks:")
        aliases: list[str] | None = None
        if options is not None:
            options = mapping(options, network_path)
            for key in options:
                if key in _NETWORK_REFUSED:
                    fail(at(network_path, key), f"unsupported option: {_NETWORK_REFUSED[key]}")
            only(options, network_path, {"aliases"})
            aliases = strings(options.get("aliases") or [], at(network_path, "aliases"))
        result[name] = aliases
    return result


_PROTOCOLS = ("tcp", "udp", "sctp")
_PUBLISH_MODES = ("ingress", "host")
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def _port_range(text: str, path: str) -> range:
    match = _PORT_RANGE.fullmatch(text)
    if match is None:
        fail(path, f"invalid port {text!r}")
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    if not 1 <= first <= last <= _PORT_MAX:
        fail(path, f"invalid port range {text!r}: ports are 1-{_PORT_MAX}, low to high")
    return range(first, last + 1)


def _short_port(text: str, path: str, warnings: list[str]) -> list[dict[str, Any]]:
    """`[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]` (nat.ParsePortSpec), published through the ingress."""
    spec, _, protocol = text.partition("/")
    protocol = choice(protocol.lower() or "tcp", path, _PROTOCOLS)
    host_ip, published, target = "", "", spec
    if ":" in spec:
        head, _, target = spec.rpartition(":")
        host_ip, _, published = head.rpartition(":") if ":" in head else ("", "", head)
    if host_ip:
        warnings.append(f"{path}: ignoring IP-address ({host_ip}) in {text!r}: a service listens on 0.0.0.0")
    targets = _port_range(target, path)
    publisheds: list[int | None] = list(_port_range(published, path)) if published else [None] * len(targets)
    if len(publisheds) != len(targets):
        fail(path, f"published and target port ranges differ in length in {text!r}")
    ports = []
    for target_port, published_port in zip(targets, publisheds, strict=True):
        port = {"Protocol": protocol, "TargetPort": target_port, "PublishMode": "ingress"}
        if published_port is not None:
            port["PublishedPort"] = published_port
        ports.append(port)
    return ports


def _long_port(entry: dict[str, Any], path: str) -> dict[str, Any]:
    only(entry, path, {"target", "published", "protocol", "mode"})
    port = {
        "Protocol": choice(entry.get("protocol", "tcp"), at(path, "protocol"), _PROTOCOLS),
        "TargetPort": integer(
            required(entry, "target", path, "give the container's port"), at(path, "target"), 1, _PORT_MAX
        ),
        "PublishMode": choice(entry.get("mode", "ingress"), at(path, "mode"), _PUBLISH_MODES),
    }
    if entry.get("published") is not None:
        port["PublishedPort"] = integer(entry["published"], at(path, "published"), 0, _PORT_MAX)
    return port


def _ports(value: Any, path: str, warnings: list[str]) -> list[dict[str, Any]]:
    ports = []
    for index, entry in enumerate(list_of(value, path, 'ports ("8080:80" or {target: 80, published: 8080})')):
        entry_path = at(path, index)
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = str(entry)
        if isinstance(entry, str):
            ports.extend(_short_port(entry, entry_path, warnings))
        else:
            ports.append(_long_port(mapping(entry, entry_path), entry_path))
    return ports


# -- deploy -----------------------------------------------------------------------------------------------------


def _deploy(value: Any, path: str) -> dict[str, Any]:
    """The deploy section, checked, with the same keys and converted values."""
    deploy = mapping(value, path)
    only(deploy, path, _DEPLOY_KEYS)

    def read(key: str, reader: Reader) -> None:
        if deploy.get(key) is not None:
            result[key] = reader(deploy[key], at(path, key))

    result: dict[str, Any] = {}
    read("mode", lambda item, item_path: choice(item, item_path, _MODES))
    read("replicas", integer)
    read("labels", labels)
    read("update_config", lambda item, item_path: _update_config(item, item_path, ("pause", "continue", "rollback")))
    read("rollback_config", lambda item, item_path: _update_config(item, item_path, ("pause", "continue")))
    read("resources", _resources)
    read("restart_policy", _restart_policy)
    read("placement", _placement)
    read("endpoint_mode", lambda item, item_path: choice(str(item).lower(), item_path, ("vip", "dnsrr")))
    return result


def _update_config(value: Any, path: str, failure_actions: tuple[str, ...]) -> dict[str, Any]:
    return fields_of(
        value,
        path,
        {
            "parallelism": integer,
            "delay": duration,
            "failure_action": lambda item, item_path: choice(item, item_path, failure_actions),
            "monitor": duration,
            "max_failure_ratio": ratio,
            "order": lambda item, item_path: choice(item, item_path, ("stop-first", "start-first")),
        },
    )


def _generic_resources(value: Any, path: str) -> list[dict[str, Any]]:
    resources = []
    for index, item in enumerate(list_of(value, path, "{discrete_resource_spec: {kind: gpu, value: 2}}")):
        item_path = at(path, index)
        spec = fields_of(
            item,
            item_path,
            {
                "discrete_resource_spec": lambda spec, spec_path: fields_of(
                    spec, spec_path, {"kind": string, "value": integer}
                )
            },
        )
        discrete = required(spec, "discrete_resource_spec", item_path, "e.g. {kind: gpu, value: 2}")
        spec_path = at(item_path, "discrete_resource_spec")
        resources.append(
            {
                "kind": required(discrete, "kind", spec_path, "name the resource, e.g. gpu"),
                "value": discrete.get("value", 0),
            }
        )
    return resources


def _resources(value: Any, path: str) -> dict[str, Any]:
    return fields_of(
        value,
        path,
        {
            "limits": lambda item, item_path: fields_of(
                item, item_path, {"cpus": nano_cpus, "memory": byte_size, "pids": integer}
            ),
            "reservations": lambda item, item_path: fields_of(
                item, item_path, {"cpus": nano_cpus, "memory": byte_size, "generic_resources": _generic_resources}
            ),
        },
    )


def _restart_policy(value: Any, path: str) -> dict[str, Any]:
    return fields_of(
        value,
        path,
        {
            "condition": lambda item, item_path: choice(item, item_path, ("none", "on-failure", "any")),
            "delay": duration,
            "max_attempts": integer,
            "window": duration,
        },
    )


def _spread_preferences(value: Any, path: str) -> list[str]:
    descriptors = []
    for index, item in enumerate(list_of(value, path, "{spread: node.labels.zone}")):
        preference = fields_of(item, at(path, index), {"spread": string})
        descriptors.append(required(preference, "spread", at(path, index), "e.g. spread: node.labels.zone"))
    return descriptors


def _placement(value: Any, path: str) -> dict[str, Any]:
    return fields_of(
        value,
        path,
        {"constraints": strings, "preferences": _spread_preferences, "max_replicas_per_node": integer},
    )
