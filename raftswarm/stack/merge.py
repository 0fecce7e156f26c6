"""Several compose files as one (`stack deploy -c base.yml -c prod.yml`), merged as docker/cli's loader merges
them (cli/compose/loader/merge.go), each file checked on its own first:

- top-level networks, volumes, secrets and configs: a later file's definition replaces an earlier one's whole;
- a service both files have is merged key by key, the later file winning where it gives a value:
  - maps are merged key by key: environment, labels, sysctls, ulimits, deploy.labels, healthcheck, and each
    deploy section (resources, update_config, restart_policy, placement, ...);
  - lists with an identity are merged by it, the later entry replacing the earlier one: volumes and tmpfs by
    target, secrets and configs by source, ports by published port (by target port when not published);
  - command and entrypoint are replaced whole; other lists (cap_add, cap_drop, dns, dns_search, dns_opt,
    extra_hosts, group_add, placement constraints and preferences) are appended to;
  - networks are merged by name; a network's aliases are replaced when the later file gives any settings;
  - logging: the options are merged when the drivers are the same (or one is not given), else replaced.

Where raftswarm differs from docker/cli, on purpose: a later file's false, 0 or "" wins (Go's merge cannot tell
them from "not given", so docker keeps the earlier value); two ports published on one number with different
protocols, or two ports not published, stay two (docker keys ports by published number alone and loses one);
a healthcheck's test is replaced, not appended to.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Hashable
from dataclasses import fields, replace
from typing import Any, TypeVar

from .model import ServiceConfig, StackConfig

T = TypeVar("T")


def merge_stacks(base: StackConfig, override: StackConfig) -> StackConfig:
    services = dict(base.services)
    for name, service in override.services.items():
        services[name] = merge_services(services[name], service) if name in services else service
    return replace(
        base,
        services=dict(sorted(services.items())),
        networks={**base.networks, **override.networks},
        volumes={**base.volumes, **override.volumes},
        secrets={**base.secrets, **override.secrets},
        configs={**base.configs, **override.configs},
        warnings=[*base.warnings, *override.warnings],
        files=(*base.files, *override.files),
    )


def _port_identity(port: dict[str, Any]) -> Hashable:
    if port.get("PublishedPort"):
        return ("published", port["PublishedPort"], port["Protocol"])
    return ("target", port["TargetPort"], port["Protocol"])


_KEYED: dict[str, Callable[[Any], Hashable]] = {
    "volumes": lambda mount: posixpath.normpath(mount.target),
    "tmpfs": lambda mount: posixpath.normpath(mount.target),
    "secrets": lambda reference: reference.source,
    "configs": lambda reference: reference.source,
    "ports": _port_identity,
}
_MAPS = ("environment", "labels", "sysctls", "ulimits", "healthcheck")
_APPENDED = ("cap_add", "cap_drop", "dns", "dns_search", "dns_opt", "extra_hosts", "group_add")


def merge_services(base: ServiceConfig, override: ServiceConfig) -> ServiceConfig:
    merged: dict[str, Any] = {}
    for field in fields(ServiceConfig):
        name = field.name
        old, new = getattr(base, name), getattr(override, name)
        if name in _KEYED:
            merged[name] = _merged_by(old, new, _KEYED[name])
        elif name in _MAPS:
            merged[name] = {**(old or {}), **(new or {})} if old is not None or new is not None else None
        elif name in _APPENDED:
            merged[name] = [*old, *new]
        elif name == "networks":
            merged[name] = {
                **old,
                **{key: aliases if aliases is not None else old.get(key) for key, aliases in new.items()},
            }
        elif name == "logging":
            merged[name] = _merged_logging(old, new)
        elif name == "deploy":
            merged[name] = _merged_dicts(old, new)
        else:
            merged[name] = new if new is not None else old
    return ServiceConfig(**merged)


def _merged_by(old: list[T], new: list[T], identity: Callable[[T], Hashable]) -> list[T]:
    by_identity = {identity(item): item for item in old}
    by_identity.update((identity(item), item) for item in new)
    return list(by_identity.values())


def _merged_logging(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    if old is None or new is None:
        return new if new is not None else old
    if old["driver"] and new["driver"] and old["driver"] != new["driver"]:
        return new
    return {"driver": new["driver"] or old["driver"], "options": {**old["options"], **new["options"]}}


def _merged_dicts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The deploy section: maps merged, lists appended to, anything else replaced."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged_dicts(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged
