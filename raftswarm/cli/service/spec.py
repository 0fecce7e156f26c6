"""The ServiceSpec a `service create` or `service update` sends, built from its flags the way docker's CLI
builds it (serviceOptions.ToService, updateService) and written as Go's JSON encoder writes it: fields under
`omitempty` left out when empty. No I/O: secret and config references are completed by the command, which asks
the node.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ...objects.defaults import RESTART_DEFAULTS, UPDATE_DEFAULTS
from ...objects.jobs import GLOBAL_JOB, REPLICATED_JOB, is_job
from ..errors import CommandError
from ..options import parse_labels
from ..shapes import replicated_mode
from .flags import Flags


def _as_docker_sends(defaults: dict[str, Any]) -> dict[str, Any]:
    """Docker's defaults for a config as docker's CLI fills them in and Go writes them: a zero Delay or Window is
    not sent (SwarmKit's defaults leave them unset) and a whole float is a JSON integer (float32 0 is `0`)."""
    return {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in defaults.items()
        if not (key in ("Delay", "Window") and value == 0)
    }


# What docker's CLI fills in when a flag changes part of a config the service does not have.
UPDATE_CONFIG_DEFAULTS = _as_docker_sends(UPDATE_DEFAULTS)
RESTART_POLICY_DEFAULTS = _as_docker_sends(RESTART_DEFAULTS)


def set_omitempty(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set a field as Go's omitempty sends it: an empty value (0, "", [], {}) is left out."""
    if value in (None, 0, "", [], {}) and value is not False:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def build_spec(image: str, command: Sequence[str], flags: Flags) -> dict[str, Any]:
    """docker's serviceOptions.ToService: the ServiceSpec `docker service create` sends, as Go's JSON encoder
    writes it (omitempty fields left out), before secrets and configs are resolved and without the fields of
    the `containerflags` (`containerspec.create_container_fields` adds those)."""
    mode = service_mode(flags)
    container: dict[str, Any] = {"Image": image}
    set_omitempty(container, "Args", list(command))
    set_omitempty(container, "Env", _environment(flags["env"]))
    set_omitempty(container, "Labels", parse_labels(flags["container_label"]))
    for name, key in (("hostname", "Hostname"), ("workdir", "Dir"), ("user", "User")):
        set_omitempty(container, key, flags[name] or "")
    if flags["init"] is not None:
        container["Init"] = flags["init"]  # left out unless given, so that the node's --init default applies
    if flags.given("stop_grace_period"):
        container["StopGracePeriod"] = flags["stop_grace_period"]
    resources: dict[str, Any] = {"Limits": {}, "Reservations": {}}
    _apply_resources(resources, flags)
    placement: dict[str, Any] = {}
    set_omitempty(placement, "Constraints", list(flags["constraint"]))
    set_omitempty(placement, "Preferences", list(flags["placement_pref"]))
    set_omitempty(placement, "MaxReplicas", flags["replicas_max_per_node"] or 0)
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": resources,
        "Placement": placement,
        "ForceUpdate": 0,
    }
    restart = _apply_restart_policy(None, flags)
    if restart is not None:
        template["RestartPolicy"] = restart
    set_omitempty(template, "Networks", sorted(flags["network"], key=lambda n: n["Target"]))
    endpoint: dict[str, Any] = {"Mode": flags["endpoint_mode"]}
    set_omitempty(endpoint, "Ports", [port for ports in flags["publish"] for port in ports])
    spec: dict[str, Any] = {
        "Labels": parse_labels(flags["label"]),
        "TaskTemplate": template,
        "Mode": mode,
        "EndpointSpec": endpoint,
    }
    set_omitempty(spec, "Name", flags["name"] or "")
    for kind, key in (("update", "UpdateConfig"), ("rollback", "RollbackConfig")):
        config = _apply_update_config(None, kind, flags)
        if config is not None:
            spec[key] = config
    if is_job(spec) and ("UpdateConfig" in spec or "RollbackConfig" in spec):
        raise CommandError("update and rollback configuration is not supported for jobs")
    return spec


def service_mode(flags: Flags) -> dict[str, Any]:
    """docker's ToServiceMode: --mode with --replicas, --max-concurrent and --replicas-max-per-node, as Go writes
    the Mode (a given count is sent even when 0). A replicated job runs --replicas tasks to completion, at most
    --max-concurrent (default --replicas) at once."""
    mode, replicas, concurrent = flags["mode"], flags["replicas"], flags["max_concurrent"]
    with_replicas, with_concurrent = replicas is not None, concurrent is not None
    with_per_node = bool(flags["replicas_max_per_node"])
    if mode == "global":
        _refuse(
            (with_replicas, _ONLY_REPLICATED), (with_per_node, _ONLY_REPLICATED_PER_NODE), (with_concurrent, _ONLY_JOB)
        )
        return {"Global": {}}
    if mode == "global-job":
        _refuse(
            (with_per_node, _ONLY_REPLICATED_PER_NODE), (with_concurrent, _ONLY_JOB), (with_replicas, _ONLY_REPLICATED)
        )
        return {GLOBAL_JOB: {}}
    if mode == "replicated":
        _refuse((with_concurrent, _ONLY_JOB))
        return {"Replicated": {"Replicas": replicas} if with_replicas else {}}
    if mode == "replicated-job":
        job = {"MaxConcurrent": concurrent if with_concurrent else replicas, "TotalCompletions": replicas}
        return {REPLICATED_JOB: {key: count for key, count in job.items() if count is not None}}
    raise CommandError(f"Unknown mode: {mode}, only replicated and global supported")


_ONLY_REPLICATED = "replicas can only be used with replicated or replicated-job mode"
_ONLY_REPLICATED_PER_NODE = "replicas-max-per-node can only be used with replicated or replicated-job mode"
_ONLY_JOB = "max-concurrent can only be used with replicated-job mode"


def _refuse(*checks: tuple[bool, str]) -> None:
    """Raise the message of the first check that failed (True), as docker checks one flag after another."""
    for failed, message in checks:
        if failed:
            raise CommandError(message)


def _environment(values: Sequence[str]) -> list[str]:
    """docker's makeEnv: later settings of a variable replace earlier ones."""
    env: list[str] = []
    for value in values:
        key = value.partition("=")[0]
        env = [e for e in env if e.partition("=")[0] != key]
        env.append(value)
    return env


def apply_update(spec: dict[str, Any], flags: Flags) -> None:
    """docker's updateService: apply the given flags to `spec` (a service's Spec, changed in place). Secrets and
    configs are applied separately (`changes.updated_secrets`, `changes.updated_configs`), since adding one needs
    the node, and the `containerflags` by `containerspec.update_container_fields`."""
    template = spec.setdefault("TaskTemplate", {})
    container = template.setdefault("ContainerSpec", {})
    _update_labels(spec, "Labels", flags["label_rm"], flags["label_add"], keep_empty=True)
    _update_labels(container, "Labels", flags["container_label_rm"], flags["container_label_add"])
    if flags.given("image"):
        container["Image"] = flags["image"]
    if flags["args"] is not None:
        set_omitempty(container, "Args", flags["args"])
    if flags.given("env_rm", "env_add"):
        env = _updated_environment(container.get("Env") or [], flags["env_rm"], flags["env_add"])
        set_omitempty(container, "Env", env)
    for name, key in (("workdir", "Dir"), ("user", "User"), ("hostname", "Hostname")):
        if flags[name] is not None:
            set_omitempty(container, key, flags[name])
    if flags["init"] is not None:
        container["Init"] = flags["init"]
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
        replicated = replicated_mode(spec)
        if replicated is None:
            raise CommandError("replicas can only be used with replicated mode")
        replicated["Replicas"] = flags["replicas"]
    if flags["max_concurrent"] is not None:
        # docker's update takes --max-concurrent and ignores it; raftswarm applies it to the replicated job
        job = (spec.get("Mode") or {}).get(REPLICATED_JOB)
        if job is None:
            raise CommandError(_ONLY_JOB)
        job["MaxConcurrent"] = flags["max_concurrent"]
    for kind, key in (("update", "UpdateConfig"), ("rollback", "RollbackConfig")):
        config = _apply_update_config(spec.get(key), kind, flags)
        if config is not None:
            spec[key] = config
    if flags.given("endpoint_mode"):
        spec.setdefault("EndpointSpec", {})["Mode"] = flags["endpoint_mode"]
    if flags.given("publish_add", "publish_rm"):
        endpoint = spec.setdefault("EndpointSpec", {})
        ports = _updated_ports(endpoint.get("Ports") or [], flags["publish_add"], flags["publish_rm"])
        set_omitempty(endpoint, "Ports", ports)
    if flags["force"]:
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1


# -- the configs and resources both commands set ---------------------------------------------------


_UPDATE_FIELDS = ("parallelism", "delay", "monitor", "failure_action", "max_failure_ratio", "order")
_UPDATE_KEYS = ("Parallelism", "Delay", "Monitor", "FailureAction", "MaxFailureRatio", "Order")
_RESTART_FLAGS = ("restart_condition", "restart_delay", "restart_max_attempts", "restart_window")


def _apply_update_config(current: dict[str, Any] | None, kind: str, flags: Flags) -> dict[str, Any] | None:
    """--update-* / --rollback-* onto a service's UpdateConfig (SwarmKit's defaults where it has none)."""
    names = [f"{kind}_{field}" for field in _UPDATE_FIELDS]
    if not flags.given(*names):
        return current
    config = copy.deepcopy(current) if current is not None else dict(UPDATE_CONFIG_DEFAULTS)
    for name, key in zip(names, _UPDATE_KEYS, strict=True):
        if flags.given(name):
            config[key] = flags[name]
    if not config.get("Delay"):
        config.pop("Delay", None)  # Go's omitempty: 0 is not sent
    return config


def _apply_restart_policy(current: dict[str, Any] | None, flags: Flags) -> dict[str, Any] | None:
    if not flags.given(*_RESTART_FLAGS):
        return current
    policy = copy.deepcopy(current) if current is not None else dict(RESTART_POLICY_DEFAULTS)
    for name, key in zip(_RESTART_FLAGS, ("Condition", "Delay", "MaxAttempts", "Window"), strict=True):
        if flags.given(name):
            policy[key] = flags[name]
    return policy


def _apply_resources(resources: dict[str, Any], flags: Flags) -> None:
    limits = resources.setdefault("Limits", {}) if flags.given("limit_cpu", "limit_memory", "limit_pids") else None
    for name, key in (("limit_cpu", "NanoCPUs"), ("limit_memory", "MemoryBytes"), ("limit_pids", "Pids")):
        if limits is not None and flags.given(name):
            set_omitempty(limits, key, flags[name])
    if flags.given("reserve_cpu", "reserve_memory"):
        reservations = resources.setdefault("Reservations", {})
        for name, key in (("reserve_cpu", "NanoCPUs"), ("reserve_memory", "MemoryBytes")):
            if flags.given(name):
                set_omitempty(reservations, key, flags[name])


# -- what only `update` changes -----------------------------------------------------------------------


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
            set_omitempty(owner, key, labels)


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
        set_omitempty(placement, "Constraints", sorted(c for c in constraints if c not in set(flags["constraint_rm"])))
    if flags.given("placement_pref_add", "placement_pref_rm"):
        removed = {p["Spread"]["SpreadDescriptor"] for p in flags["placement_pref_rm"]}
        preferences = [
            p
            for p in placement.get("Preferences") or []
            if (p.get("Spread") or {}).get("SpreadDescriptor") not in removed
        ]
        set_omitempty(placement, "Preferences", [*preferences, *flags["placement_pref_add"]])
    if flags.given("replicas_max_per_node"):
        set_omitempty(placement, "MaxReplicas", flags["replicas_max_per_node"])


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
    set_omitempty(template, "Networks", sorted(kept, key=lambda n: n.get("Target", "")))


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
