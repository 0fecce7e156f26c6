"""A stored object (kind, ID, version, creation index, data) and how Docker's API shows one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ControlError
from .defaults import DEFAULT_STOP_GRACE_NS, RESTART_DEFAULTS, UPDATE_DEFAULTS


@dataclass(frozen=True, slots=True)
class StoredObject:
    kind: str
    id: str
    version: int
    created: int
    data: Any


def views(objects: list[StoredObject]) -> dict[str, dict[str, Any]]:
    """ID -> object data: the allocator's view of one kind."""
    return {o.id: o.data for o in objects}


def api_view(stored: StoredObject) -> dict[str, Any]:
    """A stored object as Docker's API shows it: with Version.Index, without raftswarm's "_" keys."""
    view = {key: value for key, value in stored.data.items() if not key.startswith("_")}
    view["Version"] = {"Index": stored.version}
    return view


def secret_data(stored: StoredObject) -> bytes:
    return stored.data["_Data"]


def config_data(stored: StoredObject) -> bytes:
    """A config's data, kept as a secret's is: out of its API view, which shows it as Spec.Data."""
    return stored.data["_Data"]


def resolve(objects: list[StoredObject], ref: str, kind: str, name_of: Callable[[StoredObject], str]) -> StoredObject:
    """Docker's lookup order: full ID, then exact name, then a unique ID prefix."""
    for o in objects:
        if o.id == ref:
            return o
    named = [o for o in objects if name_of(o) == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [o for o in objects if o.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise ControlError(f"{kind} {ref} is ambiguous ({len(prefixed)} matches found)", 400)
    raise ControlError(f"{kind} {ref} not found", 404)


def spec_name(o: StoredObject) -> str:
    return o.data["Spec"]["Name"]


# -- service and task specs as dockerd shows them --------------------------------------------------------------
#
# dockerd answers from SwarmKit's protobufs (daemon/cluster/convert): a few fields it writes back whatever the
# client sent, because the protobuf always holds them. raftswarm keeps a spec as it was given, less those
# (`without_shown_defaults`), and adds them when it shows one.

CONTAINER_RUNTIME = "container"
"""A TaskTemplate's Runtime: every raftswarm task runs a container (dockerd: "" means container too)."""
DEFAULT_ISOLATION = "default"
"""A ContainerSpec's Isolation: SwarmKit's enum reads "" as "default", and dockerd always shows it."""


def shown_task_spec(template: dict[str, Any]) -> dict[str, Any]:
    """A TaskSpec (a service's TaskTemplate, a task's Spec) as dockerd shows one: its ContainerSpec with an
    Isolation, its RestartPolicy with MaxAttempts (0: unlimited). `template` is not changed."""
    shown = dict(template)
    container = shown.get("ContainerSpec")
    if isinstance(container, dict) and not container.get("Isolation"):
        shown["ContainerSpec"] = {**container, "Isolation": DEFAULT_ISOLATION}
    policy = shown.get("RestartPolicy")
    if isinstance(policy, dict) and "MaxAttempts" not in policy:
        shown["RestartPolicy"] = {**policy, "MaxAttempts": RESTART_DEFAULTS["MaxAttempts"]}
    return shown


def shown_service_spec(spec: dict[str, Any], insert_defaults: bool = False) -> dict[str, Any]:
    """A ServiceSpec as dockerd shows one: its TaskTemplate as `shown_task_spec` and with Runtime "container".
    With `insert_defaults` (`GET /services/{id}?insertDefaults=true`, what `docker service inspect` asks for),
    also with SwarmKit's defaults for what it leaves out (api/defaults.InterpolateService): a StopGracePeriod,
    a DNSConfig, Resources, a RestartPolicy (or its Delay), a Placement, an UpdateConfig and a RollbackConfig
    (or their Monitor). `spec` is not changed."""
    shown = copy.deepcopy(spec)
    template = shown.get("TaskTemplate")
    if not isinstance(template, dict):
        return shown
    if insert_defaults:
        _insert_defaults(shown, template)
    shown["TaskTemplate"] = shown_task_spec(template)
    if not shown["TaskTemplate"].get("Runtime"):
        shown["TaskTemplate"]["Runtime"] = CONTAINER_RUNTIME
    return shown


def _insert_defaults(spec: dict[str, Any], template: dict[str, Any]) -> None:
    container = template.get("ContainerSpec")
    if isinstance(container, dict):
        container.setdefault("StopGracePeriod", DEFAULT_STOP_GRACE_NS)
        container.setdefault("DNSConfig", {})
    template.setdefault("Resources", {})
    # dockerd shows no Window (SwarmKit's default has none) and, for a Delay or Monitor of 0, none at all.
    policy = template.setdefault("RestartPolicy", {k: v for k, v in RESTART_DEFAULTS.items() if k != "Window"})
    if isinstance(policy, dict):
        policy.setdefault("Delay", RESTART_DEFAULTS["Delay"])
    template.setdefault("Placement", {})
    for key in ("UpdateConfig", "RollbackConfig"):
        config = spec.setdefault(key, {k: v for k, v in UPDATE_DEFAULTS.items() if k != "Delay"})
        if isinstance(config, dict) and not config.get("Monitor"):
            config["Monitor"] = UPDATE_DEFAULTS["Monitor"]


def without_shown_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A checked ServiceSpec as it is stored: without what `shown_service_spec` adds anyway (Runtime "container",
    Isolation "default", MaxAttempts 0). The docker CLI's `service update` and `scale` send back the spec they
    read, with those; kept, they would make the template differ from its tasks' specs, and the update restart
    every task. Changes `spec` and returns it."""
    template = spec.get("TaskTemplate")
    if not isinstance(template, dict):
        return spec
    if template.get("Runtime") in ("", CONTAINER_RUNTIME):
        del template["Runtime"]
    container = template.get("ContainerSpec")
    if isinstance(container, dict) and container.get("Isolation") in ("", DEFAULT_ISOLATION):
        del container["Isolation"]
    policy = template.get("RestartPolicy")
    if isinstance(policy, dict) and policy.get("MaxAttempts") == RESTART_DEFAULTS["MaxAttempts"]:
        del policy["MaxAttempts"]
    return spec
