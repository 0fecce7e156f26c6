"""The sections of a compose file, checked key by key into a `StackConfig`: the top level, the networks, secrets
and configs it defines, and each service with its secrets, configs, networks, ports and deploy section (after
docker/cli `cli/compose/loader`). Every problem raises `Invalid` naming the key path.

Service keys swarm cannot honour (build, container_name, depends_on, ...) and unknown top-level keys are not
errors: they become warnings, as docker prints "Ignoring unsupported options: build". Inside the sections
swarm reads (deploy, a network, a secret, a config, a long-syntax port, ...), an unknown key is an error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    strings,
)
from .model import (
    DEFAULT_NETWORK,
    ConfigObjConfig,
    ConfigReference,
    NetworkConfig,
    SecretConfig,
    SecretReference,
    ServiceConfig,
    StackConfig,
)

# Swarm mounts a secret or config readable by everyone in the container unless told otherwise (docker/cli convert).
DEFAULT_SECRET_MODE = 0o444
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
        "configs",
        "stop_grace_period",
        "deploy",
        "networks",
        "ports",
    }
)
_TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "secrets", "configs"})
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


def stack_config(path: Path, top: dict[str, Any], environment: Mapping[str, str]) -> StackConfig:
    """The config of the compose file at `path`, whose top-level mapping (interpolated) is `top`."""
    warnings: list[str] = []
    unknown = sorted(key for key in top if key not in _TOP_LEVEL_KEYS and not key.startswith("x-"))
    if unknown:
        warnings.append(f"Ignoring unsupported top-level options: {', '.join(unknown)}")

    networks = {
        name: _network(value, at("networks", name))
        for name, value in mapping(given(top, "networks", {}), "networks").items()
    }
    secrets = {
        name: _secret(value, at("secrets", name), path.parent)
        for name, value in mapping(given(top, "secrets", {}), "secrets").items()
    }
    configs = {
        name: _config(value, at("configs", name), path.parent)
        for name, value in mapping(given(top, "configs", {}), "configs").items()
    }
    services_section = mapping(required(top, "services", "", "define at least one service"), "services")
    services: dict[str, ServiceConfig] = {}
    ignored: set[str] = set()
    for name, value in services_section.items():
        service_path = at("services", name)
        definition = mapping(value, service_path)
        ignored.update(key for key in definition if key not in _SERVICE_KEYS and not key.startswith("x-"))
        services[name] = _service(name, definition, service_path, networks, secrets, configs, environment, warnings)
    if ignored:
        # docker/cli prints the same line for keys only `docker compose` honours.
        warnings.insert(0, f"Ignoring unsupported options: {', '.join(sorted(ignored))}")
    return StackConfig(
        path=path, services=services, networks=networks, secrets=secrets, warnings=warnings, configs=configs
    )


# -- top-level networks, secrets and configs ---------------------------------------------------------------------------


def _name_and_external(definition: dict[str, Any], path: str) -> tuple[str | None, bool]:
    """A network's, secret's or config's `name` (or the deprecated `external.name`) and whether it is external."""
    name = string(definition["name"], at(path, "name")) if definition.get("name") is not None else None
    external, external_name = _external(definition.get("external", False), at(path, "external"))
    if external_name is not None:
        if name is not None:
            fail(path, "external.name and name conflict; only use name")
        name = external_name
    return name, external


def _external(value: Any, path: str) -> tuple[bool, str | None]:
    """`external: true`, or the deprecated `external: {name: x}`."""
    if isinstance(value, dict):
        only(mapping(value, path), path, {"name"})
        return True, (string(value["name"], at(path, "name")) if value.get("name") is not None else None)
    return boolean(value, path), None


def _network(value: Any, path: str) -> NetworkConfig:
    definition = mapping(value if value is not None else {}, path)
    only(definition, path, {"name", "external", "driver", "driver_opts", "internal", "attachable", "labels", "ipam"})
    name, external = _name_and_external(definition, path)
    if external:
        for key in ("driver", "driver_opts", "internal", "attachable", "ipam", "labels"):
            if key in definition:
                fail(at(path, key), "cannot be set on an external network: the stack does not create it")
    ipam_driver, subnets = None, []
    if definition.get("ipam") is not None:
        ipam_path = at(path, "ipam")
        ipam = mapping(definition["ipam"], ipam_path)
        only(ipam, ipam_path, {"driver", "config"})
        if ipam.get("driver") is not None:
            ipam_driver = string(ipam["driver"], at(ipam_path, "driver"))
        config_path = at(ipam_path, "config")
        config = list_of(ipam.get("config") or [], config_path, "{subnet: CIDR}")
        for index, entry in enumerate(config):
            entry_path = at(config_path, index)
            only(mapping(entry, entry_path), entry_path, {"subnet"})
            subnet = string(required(entry, "subnet", entry_path, 'e.g. "10.20.0.0/24"'), at(entry_path, "subnet"))
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                fail(at(entry_path, "subnet"), f'must be a subnet in CIDR notation like "10.20.0.0/24", got {subnet!r}')
            subnets.append(subnet)
    return NetworkConfig(
        name=name,
        external=external,
        driver=string(definition["driver"], at(path, "driver")) if definition.get("driver") is not None else None,
        driver_opts={
            key: text or ""
            for key, text in key_values(definition.get("driver_opts") or {}, at(path, "driver_opts")).items()
        },
        internal=boolean(definition.get("internal", False), at(path, "internal")),
        attachable=boolean(definition.get("attachable", False), at(path, "attachable")),
        labels=labels(definition.get("labels") or {}, at(path, "labels")),
        ipam_driver=ipam_driver,
        subnets=subnets,
    )


def _secret(value: Any, path: str, directory: Path) -> SecretConfig:
    definition = mapping(value, path)
    only(definition, path, {"name", "external", "file", "labels"})
    name, external = _name_and_external(definition, path)
    if external:
        if "file" in definition:
            fail(at(path, "file"), "cannot be set on an external secret: it already exists in the swarm")
        return SecretConfig(name=name, external=True)
    file = string(
        required(definition, "file", path, "give the file holding the secret, or external: true"), at(path, "file")
    )
    if not file or "\0" in file:
        fail(at(path, "file"), f"must be a file path, got {file!r}")
    return SecretConfig(
        name=name, file=directory / file, labels=labels(definition.get("labels") or {}, at(path, "labels"))
    )


def _config(value: Any, path: str, directory: Path) -> ConfigObjConfig:
    definition = mapping(value, path)
    only(definition, path, {"name", "external", "file", "labels", "template_driver"})
    name, external = _name_and_external(definition, path)
    if external:
        for key in ("file", "labels", "template_driver"):
            if key in definition:
                fail(at(path, key), "cannot be set on an external config: it already exists in the swarm")
        return ConfigObjConfig(name=name, external=True)
    file = string(
        required(definition, "file", path, "give the file holding the config, or external: true"), at(path, "file")
    )
    if not file or "\0" in file:
        fail(at(path, "file"), f"must be a file path, got {file!r}")
    template_driver = None
    if definition.get("template_driver") is not None:
        template_driver = choice(definition["template_driver"], at(path, "template_driver"), ("golang",))
    return ConfigObjConfig(
        name=name,
        file=directory / file,
        labels=labels(definition.get("labels") or {}, at(path, "labels")),
        template_driver=template_driver,
    )


# -- services -----------------------------------------------------------------------------------------------


def _service(
    name: str,
    definition: dict[str, Any],
    path: str,
    networks: dict[str, NetworkConfig],
    secrets: dict[str, SecretConfig],
    configs: dict[str, ConfigObjConfig],
    environment: Mapping[str, str],
    warnings: list[str],
) -> ServiceConfig:
    def optional(key: str, read: Reader) -> Any:
        return read(definition[key], at(path, key)) if definition.get(key) is not None else None

    image = string(required(definition, "image", path, "swarm runs images, it does not build them"), at(path, "image"))
    if not image:
        fail(at(path, "image"), "must not be empty")
    env = optional("environment", lambda value, item_path: key_values(value, item_path, allow_missing=True)) or {}
    # A variable listed without a value takes the deploying shell's value (docker/cli resolveEnvironment).
    env = {key: environment.get(key, text) if not text else text for key, text in env.items()}
    return ServiceConfig(
        name=name,
        image=image,
        entrypoint=optional("entrypoint", command),
        command=optional("command", command),
        environment=env,
        working_dir=optional("working_dir", string),
        user=optional("user", string),
        hostname=optional("hostname", string),
        init=optional("init", boolean),
        labels=optional("labels", labels) or {},
        secrets=_service_secrets(given(definition, "secrets", []), at(path, "secrets"), secrets),
        configs=_service_configs(given(definition, "configs", []), at(path, "configs"), configs),
        stop_grace_period=optional("stop_grace_period", duration),
        networks=_service_networks(given(definition, "networks", {}), at(path, "networks"), networks),
        ports=_ports(given(definition, "ports", []), at(path, "ports"), warnings),
        deploy=_deploy(given(definition, "deploy", {}), at(path, "deploy")),
    )


def _service_secrets(value: Any, path: str, secrets: dict[str, SecretConfig]) -> list[SecretReference]:
    references = []
    for index, entry in enumerate(list_of(value, path, "secret names or {source: ...} mappings")):
        entry_path = at(path, index)
        if isinstance(entry, str):
            entry = {"source": entry}
        entry = mapping(entry, entry_path)
        only(entry, entry_path, {"source", "target", "uid", "gid", "mode"})
        source = string(
            required(entry, "source", entry_path, "name a secret from the top-level secrets:"),
            at(entry_path, "source"),
        )
        if source not in secrets:
            fail(entry_path, f"undefined secret {source!r}; define it under the top-level secrets:")
        target = entry.get("target")
        references.append(
            SecretReference(
                source=source,
                target=string(target, at(entry_path, "target")) if target is not None else source,
                uid=scalar_text(entry.get("uid", "0"), at(entry_path, "uid")),
                gid=scalar_text(entry.get("gid", "0"), at(entry_path, "gid")),
                mode=integer(entry.get("mode", DEFAULT_SECRET_MODE), at(entry_path, "mode"), 0, 0o7777),
            )
        )
    return references


def _service_configs(value: Any, path: str, configs: dict[str, ConfigObjConfig]) -> list[ConfigReference]:
    """Config names, or {source, target, uid, gid, mode} mappings; the target defaults to the config's key, a file
    at /<key> in the container."""
    references = []
    for index, entry in enumerate(list_of(value, path, "config names or {source: ...} mappings")):
        entry_path = at(path, index)
        if isinstance(entry, str):
            entry = {"source": entry}
        entry = mapping(entry, entry_path)
        only(entry, entry_path, {"source", "target", "uid", "gid", "mode"})
        source = string(
            required(entry, "source", entry_path, "name a config from the top-level configs:"),
            at(entry_path, "source"),
        )
        if source not in configs:
            fail(entry_path, f"undefined config {source!r}; define it under the top-level configs:")
        target = entry.get("target")
        references.append(
            ConfigReference(
                source=source,
                target=string(target, at(entry_path, "target")) if target is not None else source,
                uid=scalar_text(entry.get("uid", "0"), at(entry_path, "uid")),
                gid=scalar_text(entry.get("gid", "0"), at(entry_path, "gid")),
                mode=integer(entry.get("mode", DEFAULT_SECRET_MODE), at(entry_path, "mode"), 0, 0o777),
            )
        )
    return references


def _service_networks(value: Any, path: str, networks: dict[str, NetworkConfig]) -> dict[str, list[str]]:
    """A list of network names, or a mapping name -> null | {aliases: [...]}."""
    if isinstance(value, list):
        value = {string(item, at(path, index)): None for index, item in enumerate(value)}
    result = {}
    for name, options in mapping(value, path).items():
        network_path = at(path, name)
        if name not in networks and name != DEFAULT_NETWORK:
            fail(network_path, f"undefined network {name!r}; define it under the top-level networks:")
        aliases: list[str] = []
        if options is not None:
            only(mapping(options, network_path), network_path, {"aliases"})
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


def _deploy(value: Any, path: str) -> dict[str, Any]:
    """The deploy section, checked, with the same keys and converted values."""
    deploy = mapping(value, path)
    only(deploy, path, _DEPLOY_KEYS)

    def read(key: str, reader: Reader) -> None:
        if deploy.get(key) is not None:
            result[key] = reader(deploy[key], at(path, key))

    result: dict[str, Any] = {}
    read("mode", lambda item, item_path: choice(item, item_path, ("replicated", "global")))
    read("replicas", integer)
    read("labels", labels)
    read("update_config", lambda item, item_path: _update_config(item, item_path, ("pause", "continue", "rollback")))
    read("rollback_config", lambda item, item_path: _update_config(item, item_path, ("pause", "continue")))
    read("resources", _resources)
    read("restart_policy", _restart_policy)
    read("placement", _placement)
    read("endpoint_mode", lambda item, item_path: choice(str(item).lower(), item_path, ("vip", "dnsrr")))
    if result.get("mode") == "global" and "replicas" in result:
        fail(at(path, "replicas"), "replicas can only be used with replicated mode")
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


def _resources(value: Any, path: str) -> dict[str, Any]:
    amounts = {"cpus": nano_cpus, "memory": byte_size}
    return fields_of(
        value,
        path,
        {
            "limits": lambda item, item_path: fields_of(item, item_path, amounts),
            "reservations": lambda item, item_path: fields_of(item, item_path, amounts),
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
