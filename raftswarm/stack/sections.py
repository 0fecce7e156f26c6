"""The top level of a compose file, checked key by key into a `StackConfig`: the networks, volumes, secrets and
configs it defines, and its services (`service`), after docker/cli `cli/compose/loader`. Every problem raises
`Invalid` naming the key path.

A top-level key docker/cli's format does not have is refused, as its schema refuses it; `x-` keys are the
user's own, and `name` (compose-spec's project name) is ignored with a warning: a stack is named by `stack
deploy`'s argument. Inside each section an unknown key is an error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..objects.volumes import LOCAL_DRIVER, local_options_problem, volume_name_problem
from .fields import (
    at,
    boolean,
    choice,
    fail,
    given,
    key_values,
    labels,
    list_of,
    mapping,
    only,
    required,
    string,
)
from .model import (
    ConfigObjConfig,
    NetworkConfig,
    SecretConfig,
    StackConfig,
    VolumeConfig,
)
from .service import Definitions, check_service, service_config

_TOP_LEVEL_KEYS = ("version", "name", "services", "networks", "volumes", "secrets", "configs")
_OBJECT_KEY = re.compile(r"[a-zA-Z0-9._-]+")
"""docker/cli's schema's pattern for the keys of services, networks, volumes, secrets and configs."""


def definitions(tops: list[dict[str, Any]]) -> Definitions:
    """The names the top-level sections of these compose files define, together: a service of one file may name
    a network, secret, config or volume another file defines, as docker/cli checks them once merged."""
    names: dict[str, set[str]] = {"networks": set(), "secrets": set(), "configs": set(), "volumes": set()}
    for top in tops:
        for section, found in names.items():
            found.update(mapping(given(top, section, {}), section))
    return Definitions(**{section: frozenset(found) for section, found in names.items()})


def stack_config(
    path: Path, top: dict[str, Any], environment: Mapping[str, str], working_dir: Path, defined: Definitions
) -> StackConfig:
    """The config of one compose file, whose top-level mapping (interpolated) is `top`; `working_dir` resolves
    its relative paths and `defined` is what every file of the deploy defines. Not checked yet: what only the
    merged files can show (`check_stack`)."""
    warnings: list[str] = []
    for key in top:
        if key not in _TOP_LEVEL_KEYS and not key.startswith("x-"):
            fail(key, f"unknown top-level option; expected one of {', '.join(sorted(_TOP_LEVEL_KEYS))} (or x-...)")
    if top.get("name") is not None:
        warnings.append(
            f"Ignoring top-level option name ({string(top['name'], 'name')!r}): a stack is named by the NAME"
            " argument of `stack deploy`"
        )

    def section(key: str) -> dict[str, Any]:
        found = mapping(given(top, key, {}), key)
        for name in found:
            if not _OBJECT_KEY.fullmatch(name):
                fail(at(key, name), f"invalid name {name!r}: use letters, digits, '.', '_' and '-'")
        return found

    networks = {name: _network(value, at("networks", name)) for name, value in section("networks").items()}
    volumes = {name: _volume(value, at("volumes", name)) for name, value in section("volumes").items()}
    secrets = {name: _secret(value, at("secrets", name), working_dir) for name, value in section("secrets").items()}
    configs = {name: _config(value, at("configs", name), working_dir) for name, value in section("configs").items()}
    services = {
        name: service_config(
            name,
            mapping(value, at("services", name)),
            at("services", name),
            defined,
            working_dir,
            environment,
            warnings,
        )
        for name, value in section("services").items()
    }
    return StackConfig(
        path=path,
        services=services,
        networks=networks,
        secrets=secrets,
        warnings=warnings,
        configs=configs,
        volumes=volumes,
    )


def check_stack(config: StackConfig) -> None:
    """What only the merged files can show: a service at all, and each service whole (`check_service`)."""
    if not config.services:
        fail("services", "is required; define at least one service")
    for name, service in config.services.items():
        check_service(service, at("services", name))


# -- top-level networks, volumes, secrets and configs ---------------------------------------------------------------------------


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


def _volume(value: Any, path: str) -> VolumeConfig:
    """docker/cli LoadVolumes: an external volume exists already (on the nodes that run the tasks); any other is
    made by the local driver of the node a task mounting it first runs on, with these options."""
    definition = mapping(value if value is not None else {}, path)
    if "x-cluster-spec" in definition:
        fail(at(path, "x-cluster-spec"), "cluster (CSI) volumes are not supported by raftswarm")
    only(definition, path, {"name", "external", "driver", "driver_opts", "labels"})
    name, external = _name_and_external(definition, path)
    if external:
        for key in ("driver", "driver_opts", "labels"):
            if definition.get(key):
                fail(at(path, key), f'conflicting parameters "external" and "{key}" specified for volume')
    if name is not None and (problem := volume_name_problem(name)):
        fail(at(path, "name"), problem)
    driver = string(definition["driver"], at(path, "driver")) if definition.get("driver") is not None else None
    if driver not in (None, "", LOCAL_DRIVER):
        fail(
            at(path, "driver"),
            f'volume driver "{driver}" is not available: raftswarm nodes have only the "local" driver',
        )
    driver_opts = None
    if definition.get("driver_opts") is not None:
        opts_path = at(path, "driver_opts")
        driver_opts = {
            key: text or ""
            for key, text in key_values(mapping(definition["driver_opts"], opts_path), opts_path).items()
        }
        if problem := local_options_problem(driver_opts):
            fail(opts_path, problem)
    return VolumeConfig(
        name=name,
        external=external,
        driver=driver,
        driver_opts=driver_opts,
        labels=labels(definition.get("labels") or {}, at(path, "labels")),
    )


_SECRET_REFUSED = {
    "driver": "secret drivers are not supported by raftswarm; give the secret's file: or external: true",
    "driver_opts": "secret drivers are not supported by raftswarm; give the secret's file: or external: true",
    "template_driver": "raftswarm nodes expand templates in configs, not in secrets; make it a config",
}


def _secret(value: Any, path: str, directory: Path) -> SecretConfig:
    definition = mapping(value, path)
    for key in definition:
        if key in _SECRET_REFUSED:
            fail(at(path, key), f"unsupported option: {_SECRET_REFUSED[key]}")
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
