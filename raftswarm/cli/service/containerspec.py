"""The ContainerSpec fields the `containerflags` make (and the two TaskTemplate fields that go with them: LogDriver
and Resources.Reservations.GenericResources): docker's ToService (`create_container_fields`) and updateService
(`update_container_fields`) for them, written as Go's JSON encoder writes them. No I/O: `--env-file` is read
and a `config://` credential spec resolved by the command.

The update rules are docker's: lists are merged with their -add/-rm flags and sorted where docker sorts them
(mounts are re-sorted on every update, as docker does), `--cap-add`/`--cap-drop` undo each other before adding,
a healthcheck changes only in the fields whose flags were given, `--log-opt` counts only with `--log-driver`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import CommandError
from ..options import parse_labels
from .flags import Flags
from .goflags import parse_go_int
from .spec import set_omitempty

# docker's special capability names: every capability, and (on update) "forget the list so far".
ALL_CAPABILITIES = "ALL"
RESET_CAPABILITIES = "RESET"

_HEALTH_DURATIONS = (
    ("health_interval", "Interval"),
    ("health_timeout", "Timeout"),
    ("health_start_period", "StartPeriod"),
    ("health_start_interval", "StartInterval"),
)


def create_container_fields(spec: dict[str, Any], flags: Flags) -> None:
    """docker's ToService for these fields, onto the spec `spec.build_spec` made."""
    template = spec["TaskTemplate"]
    container = template["ContainerSpec"]
    set_omitempty(container, "Command", flags["entrypoint"] or [])
    set_omitempty(container, "Groups", list(flags["group"]))
    set_omitempty(container, "StopSignal", flags["stop_signal"] or "")
    _set_bool(container, "TTY", bool(flags["tty"]))
    _set_bool(container, "ReadOnly", bool(flags["read_only"]))
    set_omitempty(container, "Mounts", list(flags["mount"]))
    dns = {
        key: list(values)
        for key, values in (
            ("Nameservers", flags["dns"]),
            ("Search", flags["dns_search"]),
            ("Options", flags["dns_option"]),
        )
        if values
    }
    set_omitempty(container, "DNSConfig", dns)
    set_omitempty(container, "Hosts", swarm_hosts(flags["host"]))
    healthcheck = _created_healthcheck(flags)
    if healthcheck is not None:
        container["Healthcheck"] = healthcheck
    set_omitempty(container, "Isolation", flags["isolation"] or "")
    set_omitempty(container, "Sysctls", parse_labels(flags["sysctl"]))
    capability_add, capability_drop = effective_capabilities(flags["cap_add"], flags["cap_drop"])
    set_omitempty(container, "CapabilityAdd", capability_add)
    set_omitempty(container, "CapabilityDrop", capability_drop)
    set_omitempty(container, "Ulimits", _by_name(flags["ulimit"]))
    set_omitempty(container, "OomScoreAdj", flags["oom_score_adj"] or 0)
    if flags["credential_spec"]:
        container["Privileges"] = privileges(flags["credential_spec"])
    generic = parse_generic_resources(flags["generic_resource"])
    if generic:
        template["Resources"]["Reservations"]["GenericResources"] = generic
    if flags["log_driver"]:
        template["LogDriver"] = log_driver(flags["log_driver"], flags["log_opt"])


def update_container_fields(spec: dict[str, Any], flags: Flags) -> None:
    """docker's updateService for these fields: `spec` (a service's Spec) changed in place, only where a flag
    was given (mounts and ulimits are re-sorted every time, as docker does). A `config://` credential spec is
    left naming its config; the command looks up the config's ID."""
    template = spec["TaskTemplate"]
    container = template["ContainerSpec"]
    if flags["entrypoint"] is not None:
        set_omitempty(container, "Command", flags["entrypoint"])
    if flags["isolation"] is not None:
        set_omitempty(container, "Isolation", flags["isolation"])
    set_omitempty(
        container, "Mounts", _updated_mounts(container.get("Mounts") or [], flags["mount_add"], flags["mount_rm"])
    )
    if flags.given("sysctl_add", "sysctl_rm"):
        _update_sysctls(container, flags["sysctl_add"], flags["sysctl_rm"])
    set_omitempty(
        container, "Ulimits", _updated_ulimits(container.get("Ulimits") or [], flags["ulimit_add"], flags["ulimit_rm"])
    )
    if flags["oom_score_adj"] is not None:
        set_omitempty(container, "OomScoreAdj", flags["oom_score_adj"])
    if flags.given("generic_resource_add", "generic_resource_rm"):
        _update_generic_resources(template, flags["generic_resource_add"], flags["generic_resource_rm"])
    if flags.given("group_add", "group_rm"):
        groups = [*(container.get("Groups") or []), *flags["group_add"]]
        set_omitempty(container, "Groups", sorted(g for g in groups if g not in set(flags["group_rm"])))
    if flags.given("dns_add", "dns_rm", "dns_option_add", "dns_option_rm", "dns_search_add", "dns_search_rm"):
        container["DNSConfig"] = _updated_dns(container.get("DNSConfig") or {}, flags)
    if flags.given("host_add", "host_rm"):
        set_omitempty(
            container, "Hosts", _updated_hosts(container.get("Hosts") or [], flags["host_add"], flags["host_rm"])
        )
    if flags["log_driver"]:
        template["LogDriver"] = log_driver(flags["log_driver"], flags["log_opt"])
    _update_healthcheck(container, flags)
    for name, key in (("tty", "TTY"), ("read_only", "ReadOnly")):
        if flags[name] is not None:
            _set_bool(container, key, flags[name])
    if flags["stop_signal"] is not None:
        set_omitempty(container, "StopSignal", flags["stop_signal"])
    if flags.given("cap_add", "cap_drop"):
        _update_capabilities(container, flags["cap_add"], flags["cap_drop"])
    if flags["credential_spec"] is not None:
        _update_credential_spec(container, flags["credential_spec"])


def _set_bool(mapping: dict[str, Any], key: str, value: bool) -> None:
    """A Go bool under omitempty: false is not sent."""
    if value:
        mapping[key] = True
    else:
        mapping.pop(key, None)


# -- each field ---------------------------------------------------------------------------------------------


def swarm_hosts(extra_hosts: Iterable[str]) -> list[str]:
    """docker's convertExtraHostsToSwarmHosts: "host:ip" -> "ip host", the /etc/hosts order SwarmKit keeps."""
    hosts = []
    for extra_host in extra_hosts:
        host, sep, address = extra_host.partition(":")
        if sep:
            hosts.append(f"{address} {host}")
    return hosts


def normalize_capability(name: str) -> str:
    """docker's NormalizeCapability: upper case, with its CAP_ prefix ("net_admin" -> "CAP_NET_ADMIN")."""
    name = name.strip().upper()
    if name in (ALL_CAPABILITIES, RESET_CAPABILITIES) or name.startswith("CAP_"):
        return name
    return f"CAP_{name}"


def effective_capabilities(add: Iterable[str], drop: Iterable[str]) -> tuple[list[str], list[str]]:
    """docker's EffectiveCapAddCapDrop: normalized and sorted, ALL standing for every capability, adding winning
    over dropping, RESET (an update's word) left out."""
    to_add = {normalize_capability(c) for c in add}
    to_drop = {normalize_capability(c) for c in drop}
    to_add = {ALL_CAPABILITIES} if ALL_CAPABILITIES in to_add else to_add
    to_drop = {ALL_CAPABILITIES} if ALL_CAPABILITIES in to_drop else to_drop
    return (
        sorted(to_add - {RESET_CAPABILITIES}),
        sorted(to_drop - to_add - {RESET_CAPABILITIES}),
    )


def privileges(credential_spec: dict[str, str]) -> dict[str, Any]:
    """The Privileges docker sends for a credential spec (its other fields as Go writes them unset)."""
    return {"CredentialSpec": credential_spec, "SELinuxContext": None, "NoNewPrivileges": False}


def log_driver(name: str, options: Sequence[str]) -> dict[str, Any]:
    """docker's toLogDriver: the driver and its `--log-opt key=value` options."""
    driver: dict[str, Any] = {"Name": name}
    set_omitempty(driver, "Options", parse_labels(options))
    return driver


def _by_name(ulimits: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """docker's UlimitOpt.GetList: one per name (the last given), sorted by name."""
    return sorted({u["Name"]: u for u in ulimits}.values(), key=lambda u: u["Name"])


def parse_generic_resources(values: Sequence[str]) -> list[dict[str, Any]]:
    """docker's ParseGenericResources (SwarmKit's genericresource.Parse): `gpu=2` -> a DiscreteResourceSpec. Named
    resources (`gpu=UUID1`) are refused, as docker refuses them for services."""

    def invalid(reason: str) -> CommandError:
        return CommandError(f"invalid generic resource specification: could not parse GenericResource: {reason}")

    requested: dict[str, list[str]] = {}
    for term in values:
        parts = term.split("=")
        if len(parts) != 2:
            raise invalid(f"incorrect term {term}, missing '=' or malformed expression")
        requested.setdefault(parts[0].strip(), []).append(parts[1].strip())
    resources = []
    for kind, amounts in requested.items():
        counts = [_count(amount) for amount in amounts]
        if len(counts) == 1 and counts[0] is not None:
            if counts[0] < 0:
                raise invalid(f"cannot ask for negative resource {kind}")
            discrete: dict[str, Any] = {}
            set_omitempty(discrete, "Kind", kind)
            set_omitempty(discrete, "Value", counts[0])
            resources.append({"DiscreteResourceSpec": discrete})
        elif all(count is None for count in counts):
            raise CommandError(
                f"invalid generic-resource request `{kind}={amounts[0]}`, Named Generic Resources is not supported"
                " for service create or update"
            )
        else:
            raise invalid(f"mixed discrete and named resources in expression '{kind}=[{' '.join(amounts)}]'")
    return resources


def _count(amount: str) -> int | None:
    """A discrete resource's amount (Go's strconv.ParseInt(amount, 10, 64)), None for a named resource."""
    try:
        return parse_go_int(amount, 10)
    except ValueError:
        return None


def _created_healthcheck(flags: Flags) -> dict[str, Any] | None:
    """docker's toHealthConfig: None when no healthcheck flag is given."""
    wanted = (
        bool(flags["health_cmd"])
        or any(flags[name] is not None for name, _ in _HEALTH_DURATIONS)
        or bool(flags["health_retries"])
    )
    if flags["no_healthcheck"]:
        if wanted:
            raise CommandError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not wanted:
        return None
    healthcheck: dict[str, Any] = {}
    if flags["health_cmd"]:
        healthcheck["Test"] = ["CMD-SHELL", flags["health_cmd"]]
    for name, key in _HEALTH_DURATIONS:
        set_omitempty(healthcheck, key, flags[name] or 0)
    set_omitempty(healthcheck, "Retries", flags["health_retries"] or 0)
    return healthcheck


# -- what only `update` does ----------------------------------------------------------------------------


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _updated_mounts(
    mounts: Sequence[dict[str, Any]], add: Sequence[dict[str, Any]], remove: Sequence[str]
) -> list[dict[str, Any]]:
    """docker's updateMounts: --mount-add replaces a mount at the same target, --mount-rm removes by target;
    sorted by source, then target."""
    by_target: dict[str, dict[str, Any]] = {}
    for mount in add:
        if mount["Target"] in by_target:
            raise CommandError("duplicate mount target")
        by_target[mount["Target"]] = mount
    for mount in mounts:
        by_target.setdefault(mount.get("Target", ""), mount)
    kept = [m for target, m in by_target.items() if target not in set(remove)]
    return sorted(kept, key=lambda m: (m.get("Source", ""), m.get("Target", "")))


def _update_sysctls(container: dict[str, Any], add: Sequence[str], remove: Sequence[str]) -> None:
    """docker's updateSysCtls: --sysctl-rm by name (what follows "=" is ignored), then --sysctl-add."""
    sysctls = container.get("Sysctls")
    if sysctls is not None:
        for name in parse_labels(remove):
            sysctls.pop(name, None)
    if add:
        sysctls = {**(sysctls or {}), **parse_labels(add)}
    if sysctls is not None:
        set_omitempty(container, "Sysctls", sysctls)


def _updated_ulimits(
    ulimits: Sequence[dict[str, Any]], add: Sequence[dict[str, Any]], remove: Sequence[str]
) -> list[dict[str, Any]]:
    """docker's updateUlimits: --ulimit-rm by name, --ulimit-add replacing one of the same name; sorted."""
    by_name = {u.get("Name", ""): u for u in ulimits}
    for name in parse_labels(remove):
        by_name.pop(name, None)
    by_name.update({u["Name"]: u for u in add})
    return _by_name(by_name.values())


def _update_generic_resources(template: dict[str, Any], add: Sequence[str], remove: Sequence[str]) -> None:
    """docker's addGenericResources then removeGenericResources: by kind (discrete resources only)."""
    reservations = template.setdefault("Resources", {}).setdefault("Reservations", {})
    by_kind: dict[str, dict[str, Any]] = {}
    for resource in reservations.get("GenericResources") or []:
        discrete = resource.get("DiscreteResourceSpec")
        if discrete is None:
            raise CommandError(f"invalid generic-resource `{resource}` for service task")
        kind = discrete.get("Kind", "")
        if kind in by_kind:
            raise CommandError(f"duplicate generic-resource `{kind}` for service task")
        by_kind[kind] = resource
    for resource in parse_generic_resources(add):
        by_kind[resource["DiscreteResourceSpec"].get("Kind", "")] = resource
    for kind in remove:
        if kind not in by_kind:
            raise CommandError(f"could not find generic-resource `{kind}` to remove it")
        del by_kind[kind]
    set_omitempty(reservations, "GenericResources", list(by_kind.values()))


def _updated_dns(config: dict[str, Any], flags: Flags) -> dict[str, Any]:
    """docker's updateDNSConfig: each list with its additions, without duplicates and removals, sorted."""
    updated: dict[str, Any] = {}
    for key, add, remove in (
        ("Nameservers", "dns_add", "dns_rm"),
        ("Search", "dns_search_add", "dns_search_rm"),
        ("Options", "dns_option_add", "dns_option_rm"),
    ):
        values = _dedupe([*(config.get(key) or []), *flags[add]])
        set_omitempty(updated, key, sorted(v for v in values if v not in set(flags[remove])))
    return updated


def _updated_hosts(hosts: Sequence[str], add: Sequence[str], remove: Sequence[str]) -> list[str]:
    """docker's updateHosts on SwarmKit's "ip host [alias...]" entries: --host-rm `host` removes the name from
    every entry, `host:ip` only from the entries of that address; an entry left without names goes. Then
    --host-add entries are appended; duplicates dropped, order kept."""
    removals = [(name, address) for name, _, address in (entry.partition(":") for entry in remove)]
    kept = []
    for entry in hosts:
        address, *names = entry.split() or [""]
        if not address:
            continue
        for name, removed_address in removals:
            if not removed_address or removed_address == address:
                names = [n for n in names if n != name]
        if names:
            kept.append(f"{address} {' '.join(names)}")
    return _dedupe([*kept, *swarm_hosts(add)])


def _update_healthcheck(container: dict[str, Any], flags: Flags) -> None:
    """docker's updateHealthcheck: only the fields whose flags were given change; --no-healthcheck replaces
    the healthcheck with NONE and cannot be combined with the others. (docker reads --health-start-interval on
    `create` only; raftswarm applies it on `update` too.)"""
    changed = [
        name for name in ("health_cmd", "health_retries", *(n for n, _ in _HEALTH_DURATIONS)) if flags[name] is not None
    ]
    if flags["no_healthcheck"] is None and not changed:
        return
    if flags["no_healthcheck"]:
        if changed:
            raise CommandError("--no-healthcheck conflicts with --health-* options")
        container["Healthcheck"] = {"Test": ["NONE"]}
        return
    healthcheck = dict(container.get("Healthcheck") or {})
    if (healthcheck.get("Test") or [""])[0] == "NONE":
        healthcheck.pop("Test")
    for name, key in _HEALTH_DURATIONS:
        if flags[name] is not None:
            set_omitempty(healthcheck, key, flags[name])
    if flags["health_retries"] is not None:
        set_omitempty(healthcheck, "Retries", flags["health_retries"])
    if flags["health_cmd"] is not None:
        set_omitempty(healthcheck, "Test", ["CMD-SHELL", flags["health_cmd"]] if flags["health_cmd"] else [])
    container["Healthcheck"] = healthcheck


def _update_credential_spec(container: dict[str, Any], credential_spec: dict[str, str]) -> None:
    """docker's updateCredSpecConfig: `--credential-spec ""` removes the service's."""
    if container.get("Privileges") is None:
        if credential_spec:
            container["Privileges"] = privileges(credential_spec)
        return
    container["Privileges"]["CredentialSpec"] = dict(credential_spec) or None


def _capabilities_list(capabilities: set[str]) -> list[str]:
    return [ALL_CAPABILITIES] if ALL_CAPABILITIES in capabilities else sorted(capabilities)


def _update_capabilities(container: dict[str, Any], add: Sequence[str], drop: Sequence[str]) -> None:
    """docker's updateCapabilities: a capability added that the service drops is no longer dropped (and the
    other way round) rather than added; RESET forgets the service's list first; sorted, ALL alone."""
    capability_add = {normalize_capability(c) for c in container.get("CapabilityAdd") or []}
    capability_drop = {normalize_capability(c) for c in container.get("CapabilityDrop") or []}
    to_add = {normalize_capability(c) for c in add}
    to_drop = {normalize_capability(c) for c in drop}
    if RESET_CAPABILITIES in to_add:
        capability_add, to_add = set(), to_add - {RESET_CAPABILITIES}
    if RESET_CAPABILITIES in to_drop:
        capability_drop, to_drop = set(), to_drop - {RESET_CAPABILITIES}
    for capability in to_drop - to_add:
        if capability in capability_add:
            capability_add.discard(capability)
        else:
            capability_drop.add(capability)
    for capability in to_add:
        if capability in capability_drop:
            capability_drop.discard(capability)
        else:
            capability_add.add(capability)
    set_omitempty(container, "CapabilityDrop", _capabilities_list(capability_drop))
    set_omitempty(container, "CapabilityAdd", _capabilities_list(capability_add))
