"""Validation of the specs and request bodies users send to the swarm API. Pure: no I/O.

Docker checks a spec in two places, the daemon's conversion to SwarmKit types (moby daemon/cluster/convert)
and SwarmKit's control API (manager/controlapi: validateServiceSpec, validateSecretSpec, validateConfigSpec).
Both answer 400 with the first problem found. `validate_service_spec`, `validate_secret_spec` and
`validate_config_spec` make both checks before anything is stored; `validate_swarm_spec`, `validate_node_spec`,
`validate_init_request` and `validate_join_request` check the other bodies of the swarm API by Docker's types. The first problem raises
`InvalidSpec`, and its message starts with the path of the field at fault
(``TaskTemplate.RestartPolicy.Condition: ...``). A refused request changes nothing.

How the JSON a user sends is read:

- Every field of Docker's API (moby api/swagger.yaml) is checked against Docker's type, wherever it is and
  whether or not raftswarm acts on it: a stored value of the wrong type makes every Docker client fail to
  decode the object (one service with `"LogDriver": 5` broke `docker service ls` for everyone).
- Unknown keys are kept as given and not checked. Newer clients send fields raftswarm does not use.
- Keys name Docker's fields as Go's JSON decoding matches them, case-insensitively (`"replicas"` is Replicas,
  and the docker SDK sends `"replicated"`). Such a key is renamed to Docker's spelling, so what is checked
  and stored is what every client decodes.
- null is not a value: a member that is null is absent, as in Go (clients send nil maps and lists as null).
- Integers are JSON integers (not true/false, not 1.0) in the range of Docker's type (int64 unless said).
  Durations are integers in nanoseconds, as in Docker's API.
- The returned spec has no defaults filled in. `update_config` and `restart_policy` give the effective values.

Where raftswarm is stricter than Docker, on purpose:

- Enumerations must be spelled as Docker documents them ("tcp", "host", "stop-first"). Docker maps "" and
  unknown protocols or publish modes to the default without a word.
- A port must name its TargetPort, and a reservation may not exceed its limit.
- A replicated service asks for at most `MAX_REPLICAS` tasks.
- A replicated job that must complete tasks but may run none at once (MaxConcurrent 0) is refused: it would
  never finish. Its MaxConcurrent and TotalCompletions are at most `MAX_REPLICAS`. Secret drivers and templated
  secrets are refused.
"""

from __future__ import annotations

import base64
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple

from .containerspec import (
    InvalidContainerSpec,
    dns_settings,
    parse_extra_hosts,
    parse_signal,
    rlimits,
    sysctls,
    tweak_capabilities,
)
from .defaults import (
    DEFAULT_ENDPOINT_MODE,
    DEFAULT_PORT_PROTOCOL,
    DEFAULT_PUBLISH_MODE,
    RESTART_DEFAULTS,
    UPDATE_DEFAULTS,
    effective_update_config,
)
from .placement import InvalidPlacement, parse_constraint, spread_label
from .templates import TemplateError, expand_container_spec
from .validation import (
    INT64_MIN,
    UINT32_MAX,
    UINT64_MAX,
    Check,
    InvalidSpec,
    an_object,
    array_of,
    at,
    base64_string,
    boolean,
    canonical_keys,
    check_field,
    check_fields,
    choice,
    collecting_unknown_fields,
    duration,
    fail,
    go_folded,
    int_in,
    integer,
    non_empty_string,
    object_of,
    objects_in,
    one_of,
    required_field,
    shown,
    string,
    string_map,
    strings,
    unsupported,
    validated,
    without_nulls,
)
from .volumes import LOCAL_DRIVER, local_options_problem, volume_name_problem

__all__ = [
    "MAX_CONFIG_SIZE",
    "MAX_REPLICAS",
    "MAX_SECRET_SIZE",
    "MIN_NODE_CERT_LIFETIME",
    "TEMPLATE_DRIVER",
    "config_target",
    "node_certificate_lifetime",
    "referenced_configs",
    "referenced_secrets",
    "restart_policy",
    "service_warnings",
    "update_config",
    "validate_config_spec",
    "validate_init_request",
    "validate_join_request",
    "validate_node_spec",
    "validate_secret_spec",
    "validate_service_spec",
    "validate_swarm_spec",
]

MAX_SECRET_SIZE = 500 * 1024
"""Secret data must be shorter than this many bytes. This is SwarmKit's MaxSecretSize with SwarmKit's
exclusive bound ("less than 512000 bytes"), so Docker would accept every secret raftswarm accepts."""

MAX_CONFIG_SIZE = 1000 * 1024
"""Config data must be shorter than this many bytes: SwarmKit's MaxConfigSize (manager/controlapi/config.go),
with its exclusive bound ("config data must be larger than 0 and less than 1024000 bytes")."""

MIN_NODE_CERT_LIFETIME = timedelta(minutes=1)
"""Docker's floor is one hour; raftswarm goes down to a minute so tests and chaos runs can watch renewals
happen. Below that a node could not reliably renew (at 50-80% of the lifetime) across a slow round trip."""

MAX_REPLICAS = 100_000
"""The most tasks one replicated service may ask for. Docker takes any uint64, and a typo such as
9223372036854775807 would have the leader make tasks until the swarm falls over: every manager keeps every
task in memory (about 2 KiB each in the store, measured, before the control loops' own views). 100,000 is the
scale of Docker's own published test of a whole swarm, Swarm3k (about 100,000 containers), far above what any
raftswarm cluster runs; `serviceapi.MAX_SWARM_TASKS` bounds the sum over all services likewise."""

_PORT_MAX = 65535
_SERVICE_NAME_MAX = 63  # a service name is a DNS label (SwarmKit: "name must be 63 characters or fewer")
_SECRET_NAME_MAX = 64  # SwarmKit's limit for config and secret names
_IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax
_MIN_NANO_CPUS = 1_000_000  # SwarmKit: less than 0.001 CPU is a typo, not a limit
_MIN_MEMORY_BYTES = 4 * 1024 * 1024  # SwarmKit: no container starts with less than 4 MiB
_MIN_PROBE_NS = 1_000_000  # SwarmKit's validateHealthCheck: a probe time is 0 (the image's) or at least 1 ms
_MAX_FILE_MODE = 0o777
_OOM_SCORE_ADJ = (-1000, 1000)  # the kernel's range for /proc/<pid>/oom_score_adj, which dockerd checks too
_MAX_SUBNET_SIZE = 29  # Docker's SubnetSize maximum (api/swagger.yaml)

# SwarmKit's isValidDNSName, ^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$, rewritten without the nested quantifier
# (the same language; the original backtracks exponentially on a long name with a bad last character).
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_-]*[a-zA-Z0-9])?")
# SwarmKit's isValidConfigOrSecretName, ^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$, likewise.
_SECRET_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?")

# An image reference, as distribution/reference's ReferenceRegexp reads it: [domain[:port]/]path[:tag][@digest].
# Go's \w is ASCII, hence the explicit classes.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")

_RESTART_CONDITIONS = ("none", "on-failure", "any")
_UPDATE_FAILURE_ACTIONS = ("pause", "continue", "rollback")
_ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")
_UPDATE_ORDERS = ("stop-first", "start-first")
_RESOLUTION_MODES = ("vip", "dnsrr")
_PROTOCOLS = ("tcp", "udp", "sctp")
_PUBLISH_MODES = ("ingress", "host")
_NODE_ROLES = ("worker", "manager")
NODE_AVAILABILITIES = ("active", "pause", "drain")
_MOUNT_TYPES = ("bind", "volume", "tmpfs", "npipe", "cluster", "image")
_BIND_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_ISOLATIONS = ("default", "process", "hyperv", "")


# -- field checks ------------------------------------------------------------------------------------------


def _probe_duration(value: Any, path: str) -> int:
    if duration(value, path) and value < _MIN_PROBE_NS:
        fail(path, f"must be 0 (the image's own) or at least 1 ms ({_MIN_PROBE_NS} nanoseconds), got {value}")
    return value


# -- services ----------------------------------------------------------------------------------------------


def validate_service_spec(spec: Any, *, default_name: Callable[[], str] | None = None) -> dict[str, Any]:
    """Check a ServiceSpec; return it (a deep copy, known keys in Docker's spelling, unknown keys kept as given,
    nothing defaulted). With `default_name`, a spec without a Name (or with "") gets one from it, as dockerd
    names a service created without one.

    Raises `InvalidSpec` naming the first field at fault."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the service spec must be a JSON object, got {shown(spec)}")
    service = without_nulls(spec)
    canonical_keys(service, _SERVICE_SPEC)
    _empty_means_default(service)
    if default_name is not None and service.get("Name", "") == "":
        service["Name"] = default_name()
    check_fields(
        service,
        "",
        _SERVICE_SPEC,
        {"Name": 'name the service, e.g. "web"', "TaskTemplate": 'give at least {"ContainerSpec": {"Image": "nginx"}}'},
    )
    if ("ReplicatedJob" in service.get("Mode", {}) or "GlobalJob" in service.get("Mode", {})) and "UpdateConfig" in service:
        fail("UpdateConfig", "Jobs may not have an update config: a job runs to completion, it is not rolled out")
    if any(mode in service.get("Mode", {}) for mode in ("Global", "GlobalJob")) and service["TaskTemplate"].get(
        "Placement", {}
    ).get("MaxReplicas"):
        fail(
            "TaskTemplate.Placement.MaxReplicas",
            "max replicas per node can only be used with replicated mode; a global service runs one task per node",
        )
    return service


_EMPTY_MEANS_DEFAULT: tuple[tuple[tuple[str, ...], str], ...] = (
    (("UpdateConfig", "FailureAction"), UPDATE_DEFAULTS["FailureAction"]),
    (("UpdateConfig", "Order"), UPDATE_DEFAULTS["Order"]),
    (("RollbackConfig", "FailureAction"), UPDATE_DEFAULTS["FailureAction"]),
    (("RollbackConfig", "Order"), UPDATE_DEFAULTS["Order"]),
    (("TaskTemplate", "RestartPolicy", "Condition"), RESTART_DEFAULTS["Condition"]),
    (("EndpointSpec", "Mode"), DEFAULT_ENDPOINT_MODE),
    (("EndpointSpec", "Ports", "*", "Protocol"), DEFAULT_PORT_PROTOCOL),
    (("EndpointSpec", "Ports", "*", "PublishMode"), DEFAULT_PUBLISH_MODE),
)
"""Where dockerd reads an empty or missing string as Docker's default (daemon/cluster/convert/service.go: an
empty FailureAction, Order, restart Condition, endpoint Mode, port Protocol or PublishMode). SwarmKit keeps them
as enums, so `docker service inspect` shows the default wherever the object that holds them was given; the
stored spec holds it too. The docker CLI sends "" for every one a user did not set (`docker stack deploy` with
only `update_config: {parallelism: 1}`)."""


def _empty_means_default(spec: dict[str, Any]) -> None:
    for path, default in _EMPTY_MEANS_DEFAULT:
        parents = [spec]
        for key in path[:-1]:
            found = []
            for parent in parents:
                if key == "*":
                    found += [item for item in parent if isinstance(item, dict)] if isinstance(parent, list) else []
                elif isinstance(parent, dict):
                    found += [v for k, v in parent.items() if isinstance(k, str) and go_folded(k) == go_folded(key)]
            parents = found
        for parent in parents:
            if isinstance(parent, dict):
                keys = [k for k in parent if isinstance(k, str) and go_folded(k) == go_folded(path[-1])]
                for key in keys:
                    if parent[key] == "":
                        parent[key] = default
                if not keys:
                    parent[path[-1]] = default


def _service_name(value: Any, path: str) -> None:
    name = string(value, path)
    if not name:
        fail(path, "a service name must be provided")
    if len(name) > _SERVICE_NAME_MAX:
        fail(path, f"must be {_SERVICE_NAME_MAX} characters or fewer (it is a DNS label), got {len(name)}")
    if not _SERVICE_NAME.fullmatch(name):
        fail(
            path,
            f"invalid name {shown(name)}: it must be valid as a DNS name component, so only [a-zA-Z0-9], '-' and"
            " '_' are allowed, and the first and last characters must be [a-zA-Z0-9]",
        )


def _task_template(value: Any, path: str) -> None:
    check_fields(
        an_object(value, path),
        path,
        _TASK_SPEC,
        {"ContainerSpec": 'raftswarm runs containers: give {"Image": "nginx"} at least'},
    )


def _container_spec(value: Any, path: str) -> None:
    container = check_fields(an_object(value, path), path, _CONTAINER_SPEC, {"Image": "name the image to run, e.g. nginx:1.27"})
    _templates(container, path)


_SAMPLE_TASK = {
    "ID": "taskid", "ServiceID": "serviceid", "Slot": 1, "NodeID": "nodeid",
    "Annotations": {"Name": "taskname"}, "ServiceAnnotations": {"Name": "servicename"},
}  # fmt: skip
_SAMPLE_NODE = {"Hostname": "nodeHostname", "Platform": {"OS": "os", "Architecture": "architecture"}}
"""The task and node SwarmKit expands a new spec's templates for (controlapi validateContainerSpec): the service's
name and labels are not there, so a template naming a service label fails at create, in Docker swarm too."""


def _templates(container: dict[str, Any], path: str) -> None:
    """SwarmKit's check at create: the hostname, env and mount templates expand for a sample task."""
    try:
        expand_container_spec({**_SAMPLE_TASK, "Spec": {"ContainerSpec": container}}, _SAMPLE_NODE)
    except TemplateError as exc:
        fail(path, str(exc))


def _image(value: Any, path: str) -> None:
    image = string(value, path)
    if not image:
        fail(path, "image reference must be provided")
    match = _IMAGE_REFERENCE.fullmatch(image)
    if match is None or len(match["name"]) > _IMAGE_NAME_MAX:
        fail(
            path,
            f"{shown(image)} is not a valid repository/tag; expected e.g. nginx, nginx:1.27 or"
            " registry.example.com:5000/team/app:v2, in lower case",
        )
    if _IMAGE_ID.fullmatch(image):
        fail(path, f"invalid repository name {shown(image)}: cannot specify 64-byte hexadecimal strings")


def _environment(value: Any, path: str) -> None:
    for index, entry in enumerate(strings(value, path)):
        # Docker passes "KEY" without "=" on as it is; only an empty name is an error (moby opts.ValidateEnv).
        if entry.partition("=")[0] == "":
            fail(at(path, index), f"invalid environment variable {shown(entry)}: expected KEY=VALUE")


def _mounts(value: Any, path: str) -> None:
    """Docker's checks of a task's mounts, with their messages: SwarmKit's (two mounts at one target; here as
    paths, so /data and /data/ are one), then the swarm executor's (moby daemon/cluster/executor/container/
    validate.go), dockerd's mount parser's (daemon/volume/mounts) and the local volume driver's, which Docker
    makes on the node. What only the node can check (a bind source exists, templates expand) rejects the task
    there. A mount without a Type is a bind, as swarmkit reads it."""
    mounts = objects_in(value, path)
    targets: set[str] = set()
    for mount_path, mount in mounts:
        check_fields(mount, mount_path, _MOUNT, {"Target": "give the path inside the container"})
        target = non_empty_string(mount["Target"], at(mount_path, "Target"))
        if posixpath.normpath(target) in targets:
            fail(at(mount_path, "Target"), f"duplicate mount point: {target}")
        targets.add(posixpath.normpath(target))
    for mount_path, mount in mounts:
        _mount(mount, mount_path)


_UNSUPPORTED_MOUNT_TYPES = {
    "npipe": "named pipes are mounts of Windows containers; raftswarm runs Linux containers",
    "cluster": "cluster (CSI) volumes are not supported by raftswarm; use a volume mount (Type volume)",
    "image": 'invalid MountType: "image" (a swarm service cannot mount an image)',
}
_MOUNT_OPTIONS = {"bind": "BindOptions", "volume": "VolumeOptions", "tmpfs": "TmpfsOptions", "image": "ImageOptions"}
_TMPFS_FLAGS = ("exec", "noexec")


def _mount(mount: dict[str, Any], path: str) -> None:
    kind, target, source = mount.get("Type", "bind"), mount["Target"], mount.get("Source", "")
    if kind in _UNSUPPORTED_MOUNT_TYPES:
        fail(at(path, "Type"), _UNSUPPORTED_MOUNT_TYPES[kind])
    if not target.startswith("/"):
        fail(at(path, "Target"), f"invalid mount target, must be an absolute path: {target}")
    if kind == "bind" and not source.startswith("/"):
        fail(at(path, "Source"), f"invalid bind mount source, must be an absolute path: {source}")
    if kind == "volume" and source.startswith("/"):
        fail(at(path, "Source"), f"invalid volume mount source, must not be an absolute path: {source}")
    if kind == "tmpfs" and source:
        fail(at(path, "Source"), "invalid tmpfs source, source must be empty")
    for options_kind, field in _MOUNT_OPTIONS.items():
        if field in mount and options_kind != kind:
            fail(at(path, field), f'invalid mount config for type "{kind}": field {field} must not be specified')
    if posixpath.normpath(target) == "/":
        fail(at(path, "Target"), "invalid specification: destination can't be '/'")
    if kind == "bind":
        options = mount.get("BindOptions", {})
        for flag in ("ReadOnlyNonRecursive", "ReadOnlyForceRecursive"):
            if options.get(flag) and not mount.get("ReadOnly"):
                fail(at(path, f"BindOptions.{flag}"), f"mount options conflict: !ReadOnly && BindOptions.{flag}")
        if options.get("ReadOnlyNonRecursive") and options.get("ReadOnlyForceRecursive"):
            fail(at(path, "BindOptions"), "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive")
    elif kind == "volume":
        _volume_mount(mount, path)
    elif kind == "tmpfs":
        for index, option in enumerate(mount.get("TmpfsOptions", {}).get("Options", [])):
            if option[0] not in _TMPFS_FLAGS:
                fail(at(path, f"TmpfsOptions.Options[{index}]"), f'invalid mount config for type "tmpfs": invalid option: {option[0]}')


def _volume_mount(mount: dict[str, Any], path: str) -> None:
    """A volume of the local driver, named as it may be (a template is the node's to expand and check)."""
    options = mount.get("VolumeOptions", {})
    if options.get("Subpath"):
        fail(at(path, "VolumeOptions.Subpath"), "volume subpaths are not supported by raftswarm; mount the whole volume")
    driver = options.get("DriverConfig", {})
    if driver.get("Name", LOCAL_DRIVER) not in ("", LOCAL_DRIVER):
        fail(
            at(path, "VolumeOptions.DriverConfig.Name"),
            f'volume driver "{driver["Name"]}" is not available: raftswarm nodes have only the "local" driver',
        )
    source = mount.get("Source", "")
    if source and "{{" not in source and (problem := volume_name_problem(source)):
        fail(at(path, "Source"), problem)
    driver_options = driver.get("Options") or {}
    if not any("{{" in value for value in driver_options.values()) and (problem := local_options_problem(driver_options)):
        fail(at(path, "VolumeOptions.DriverConfig.Options"), problem)


def _tmpfs_option(value: Any, path: str) -> None:
    if not 1 <= len(strings(value, path)) <= 2:
        fail(path, 'must be ["flag"] or ["key", "value"]')


def _secret_references(value: Any, path: str) -> None:
    targets: dict[str, str] = {}  # target file name -> the secret that has it, for SwarmKit's message
    hint = "a secret reference names the secret by SecretID and SecretName"
    for ref_path, ref in objects_in(value, path):
        check_fields(
            ref,
            ref_path,
            _SECRET_REFERENCE,
            {
                "SecretID": hint,
                "SecretName": hint,
                "File": 'malformed secret reference, no target provided: give {"Name": "file"}',
            },
        )
        for key in ("SecretID", "SecretName"):
            non_empty_string(ref[key], at(ref_path, key), "malformed secret reference: must not be empty")
        file_path = at(ref_path, "File")
        name = non_empty_string(
            required_field(ref["File"], "Name", file_path, "name the file the secret appears as"),
            at(file_path, "Name"),
            "malformed file secret reference, invalid target file name provided",
        )
        if name in targets:
            fail(
                at(file_path, "Name"),
                f"secret references '{targets[name]}' and '{ref['SecretName']}' have a conflicting target: '{name}'",
            )
        targets[name] = ref["SecretName"]


def config_target(name: str) -> str:
    """Where a config's File.Name puts it in the container: an absolute path as given, a relative one under
    "/" (moby's getConfigTargetPath), normalised."""
    return posixpath.normpath(posixpath.join("/", name))


def _config_references(value: Any, path: str) -> None:
    """SwarmKit's validateConfigRefsSpec: every reference names its config and a file target, and no two targets
    are one path. A target is any path in the container (a relative one is under "/")."""
    targets: dict[str, str] = {}  # target path -> the config that has it, for SwarmKit's message
    hint = "a config reference names the config by ConfigID and ConfigName"
    for ref_path, ref in objects_in(value, path):
        check_fields(
            ref,
            ref_path,
            _CONFIG_REFERENCE,  # refuses a Runtime target before File is asked for
            {"ConfigID": hint, "ConfigName": hint},
        )
        for key in ("ConfigID", "ConfigName"):
            non_empty_string(ref[key], at(ref_path, key), "malformed config reference: must not be empty")
        file_path = at(ref_path, "File")
        target_hint = 'malformed config reference, no target provided: give {"Name": "/path/in/the/container"}'
        name = non_empty_string(
            required_field(
                required_field(ref, "File", ref_path, target_hint),
                "Name",
                file_path,
                "give the path of the file the config appears as",
            ),
            at(file_path, "Name"),
            "malformed file config reference, invalid target file name provided",
        )
        if "\0" in name:
            fail(at(file_path, "Name"), "malformed file config reference, invalid target file name provided")
        target = config_target(name)
        if target == "/":
            fail(at(file_path, "Name"), f"{name!r} is the container's root directory: give the path of a file")
        if target in targets:
            fail(
                at(file_path, "Name"),
                f"config references '{targets[target]}' and '{ref['ConfigName']}' have a conflicting target: '{name}'",
            )
        targets[target] = ref["ConfigName"]


def _resources(value: Any, path: str) -> None:
    # A reservation above the limit is not refused: SwarmKit's validateResourceRequirements checks each value
    # alone, Docker swarm accepts the service, the scheduler reserves and the container is limited.
    check_fields(an_object(value, path), path, _RESOURCES)


def _nano_cpus(value: Any, path: str) -> None:
    amount = integer(value, path)
    if amount and amount < _MIN_NANO_CPUS:
        fail(path, f"invalid cpu value {amount / 1e9:g}: must be at least 0.001 CPU (1000000), or 0")


def _memory_bytes(value: Any, path: str) -> None:
    amount = integer(value, path)
    if amount and amount < _MIN_MEMORY_BYTES:
        fail(path, f"invalid memory value {amount}: must be at least 4MiB ({_MIN_MEMORY_BYTES}), or 0")


def _constraints(value: Any, path: str) -> None:
    for index, text in enumerate(strings(value, path)):
        try:
            parse_constraint(text)
        except InvalidPlacement as exc:
            fail(at(path, index), str(exc))


def _preferences(value: Any, path: str) -> None:
    for pref_path, preference in objects_in(value, path):
        check_fields(preference, pref_path, _PREFERENCE, {"Spread": 'only spread preferences exist: {"Spread": {...}}'})
        try:
            spread_label(preference)  # the scheduler's own rule, so the two cannot disagree
        except InvalidPlacement as exc:
            fail(at(at(pref_path, "Spread"), "SpreadDescriptor"), str(exc))


def _networks(value: Any, path: str) -> None:
    for network_path, network in objects_in(value, path):
        check_fields(network, network_path, _NETWORK_ATTACHMENT, {"Target": "name the network (its ID or name)"})
        non_empty_string(network["Target"], at(network_path, "Target"))


def _mode(value: Any, path: str) -> None:
    """No Mode, or an empty one, means one replica, as in Docker. Otherwise exactly one of Replicated, Global,
    ReplicatedJob (MaxConcurrent defaults to 1, TotalCompletions to MaxConcurrent) or GlobalJob."""
    mode = check_fields(an_object(value, path), path, _MODE)
    given = [name for name in _MODE if name in mode]
    if len(given) > 1:
        fail(path, f"must specify only one service mode, not both {given[0]} and {given[1]}")
    job = mode.get("ReplicatedJob", {})
    if job.get("MaxConcurrent") == 0 and job.get("TotalCompletions", 0) > 0:
        fail(
            at(path, "ReplicatedJob.MaxConcurrent"),
            f"0 tasks at once would never complete the job's {job['TotalCompletions']} (TotalCompletions);"
            " give at least 1, or leave it out for 1",
        )


def _failure_ratio(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail(path, f"must be a number from 0 to 1, got {shown(value)}")
    if not 0 <= value <= 1:
        fail(path, f"TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1, got {shown(value)}")


def _update_duration(name: str) -> Check:
    """UpdateConfig.Delay or Monitor, a negative one refused in SwarmKit's words (controlapi validateUpdate)."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            fail(path, f"TaskSpec: update-{name} cannot be negative, got {value} ns")
        duration(value, path)

    return check


def _update_choice(what: str, choices: tuple[str, ...]) -> Check:
    """UpdateConfig.Order or FailureAction, an unknown one refused in dockerd's words (its convert package)."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, str) and value not in choices:
            fail(path, f"unrecognized {what} {value}: must be one of {', '.join(choices)}")
        choice(value, path, choices)

    return check


def _endpoint(value: Any, path: str) -> None:
    endpoint = check_fields(an_object(value, path), path, _ENDPOINT_SPEC)
    resolution = endpoint.get("Mode", "vip")
    published: set[tuple[int, str]] = set()
    for index, port in enumerate(endpoint.get("Ports", [])):
        port_path = at(at(path, "Ports"), index)
        protocol = port.get("Protocol", "tcp")
        number = port.get("PublishedPort", 0)
        # The routing mesh balances over a virtual IP; with dnsrr there is none to balance from.
        if resolution == "dnsrr" and port.get("PublishMode", "ingress") == "ingress":
            fail(
                at(port_path, "PublishMode"),
                "port published with ingress mode can't be used with dnsrr mode; publish it in host mode"
                ' ("PublishMode": "host") or use the vip endpoint mode',
            )
        if number:  # dynamic ports (0) never conflict
            if (number, protocol) in published:
                fail(at(port_path, "PublishedPort"), f"duplicate published ports provided: {number}/{protocol}")
            published.add((number, protocol))


# Docker's shapes (moby api/swagger.yaml), field by field. The ones raftswarm acts on carry its own rules too.

_DRIVER = {"Name": string, "Options": string_map}  # Go's Driver: log drivers, volume drivers, secret templating
_PLATFORM = {"Architecture": string, "OS": string}
_SECRET_FILE = {
    "Name": string,
    "UID": string,
    "GID": string,
    "Mode": int_in(0, _MAX_FILE_MODE, " (file permissions, e.g. 292 for 0o444)"),
}
_SECRET_REFERENCE = {"File": object_of(_SECRET_FILE), "SecretID": string, "SecretName": string}
_CONFIG_REFERENCE = {
    "File": object_of(_SECRET_FILE),
    "Runtime": unsupported(
        "a config with a Runtime target serves a credential spec, a Windows feature; raftswarm delivers configs"
        ' as files: give File {"Name": "/path/in/the/container"} instead'
    ),
    "ConfigID": string,
    "ConfigName": string,
}
_MOUNT = {
    "Target": string,
    "Source": string,
    "Type": one_of(*_MOUNT_TYPES),
    "ReadOnly": boolean,
    "Consistency": string,
    "BindOptions": object_of(
        {
            "Propagation": one_of(*_BIND_PROPAGATIONS),
            "NonRecursive": boolean,
            "CreateMountpoint": boolean,
            "ReadOnlyNonRecursive": boolean,
            "ReadOnlyForceRecursive": boolean,
        }
    ),
    "VolumeOptions": object_of(
        {"NoCopy": boolean, "Labels": string_map, "DriverConfig": object_of(_DRIVER), "Subpath": string}
    ),
    "ImageOptions": object_of({"Subpath": string}),
    "TmpfsOptions": object_of(
        {
            "SizeBytes": int_in(meaning=" (0 for no limit)"),
            "Mode": int_in(0, UINT32_MAX),
            "Options": array_of(_tmpfs_option),
        }
    ),
}
_HEALTHCHECK = {
    "Test": strings,
    "Interval": _probe_duration,
    "Timeout": _probe_duration,
    "StartPeriod": _probe_duration,
    "StartInterval": _probe_duration,
    "Retries": int_in(meaning=" (consecutive failures; 0 for the image's own)"),
}


_TASK_NAMESPACES = [{"type": kind} for kind in ("ipc", "network", "uts")]
"""A task's own namespaces, as far as its sysctls go: every task has them."""


def _read_as_docker(check: Check, read: Callable[[Any], Any]) -> Check:
    """`check`, then the reading the runtime will make of the value, so that a spec no container could be made
    from is refused when it is created, not on every node that gets one of its tasks."""

    def checked(value: Any, path: str) -> Any:
        check(value, path)
        try:
            read(value)
        except InvalidContainerSpec as exc:
            fail(path, str(exc))
        return value

    return checked


def _seccomp_mode(value: Any, path: str) -> None:
    if choice(value, path, ("default", "unconfined", "custom")) != "default":
        fail(
            path,
            f"{value} is refused: raftswarm keeps every task under its default seccomp policy, so that no task"
            " can mount or leave its namespaces (see DESIGN.md, security property 5)",
        )


_PRIVILEGES = {
    "CredentialSpec": object_of({"Config": string, "File": string, "Registry": string}),
    "SELinuxContext": object_of(
        {"Disable": boolean, "User": string, "Role": string, "Type": string, "Level": string}
    ),
    "Seccomp": object_of({"Mode": _seccomp_mode, "Profile": base64_string}),
    "AppArmor": object_of({"Mode": one_of("default", "disabled")}),
    "NoNewPrivileges": boolean,
}
_CONTAINER_SPEC = {
    "Image": _image,
    "Labels": string_map,
    "Command": strings,
    "Args": strings,
    "Hostname": string,
    "Env": _environment,
    "Dir": string,
    "User": string,
    "Groups": strings,
    "Privileges": object_of(_PRIVILEGES),
    "Init": boolean,
    "TTY": boolean,
    "OpenStdin": boolean,
    "ReadOnly": boolean,
    "Mounts": _mounts,
    "StopSignal": _read_as_docker(string, lambda signal: parse_signal(signal)),
    "StopGracePeriod": duration,
    "Healthcheck": object_of(_HEALTHCHECK),
    "Hosts": _read_as_docker(strings, lambda hosts: parse_extra_hosts(hosts)),
    "DNSConfig": _read_as_docker(
        object_of({"Nameservers": strings, "Search": strings, "Options": strings}), lambda dns: dns_settings(dns)
    ),
    "Secrets": _secret_references,
    "Configs": _config_references,
    "Isolation": one_of(*_ISOLATIONS),
    "Sysctls": _read_as_docker(string_map, lambda settings: sysctls(settings, _TASK_NAMESPACES)),
    "CapabilityAdd": _read_as_docker(strings, lambda names: tweak_capabilities((), names, [])),
    "CapabilityDrop": _read_as_docker(strings, lambda names: tweak_capabilities((), [], names)),
    "Ulimits": _read_as_docker(
        array_of(object_of({"Name": string, "Soft": int_in(INT64_MIN), "Hard": int_in(INT64_MIN)})),
        lambda ulimits: rlimits(ulimits),
    ),
    "OomScoreAdj": int_in(*_OOM_SCORE_ADJ),
    # SwarmKit's, not the API's: where `--with-registry-auth` credentials are kept (api.services.PULL_OPTIONS)
    "PullOptions": object_of({"RegistryAuth": string}),
}
_RESOURCES = {
    "Limits": object_of(
        {"NanoCPUs": _nano_cpus, "MemoryBytes": _memory_bytes, "Pids": int_in(meaning=" (0 for no limit)")}
    ),
    "Reservations": object_of(
        {
            "NanoCPUs": _nano_cpus,
            "MemoryBytes": _memory_bytes,
            "GenericResources": array_of(
                object_of(
                    {
                        "NamedResourceSpec": object_of({"Kind": string, "Value": string}),
                        "DiscreteResourceSpec": object_of({"Kind": string, "Value": int_in()}),
                    }
                )
            ),
        }
    ),
    "SwapBytes": int_in(-1, meaning=" (-1 for unlimited swap)"),
    "MemorySwappiness": int_in(-1, 100),
}
_RESTART_POLICY = {
    "Condition": one_of(*_RESTART_CONDITIONS),
    "Delay": duration,
    "MaxAttempts": int_in(meaning=" (0 for no limit)"),
    "Window": duration,
}
_PREFERENCE = {"Spread": object_of({"SpreadDescriptor": string}, {"SpreadDescriptor": 'e.g. "node.labels.zone"'})}
_PLACEMENT = {
    "Constraints": _constraints,
    "Preferences": _preferences,
    "MaxReplicas": int_in(meaning=" (0 for no limit)"),
    "Platforms": array_of(object_of(_PLATFORM)),
}
_NETWORK_ATTACHMENT = {"Target": string, "Aliases": strings, "DriverOpts": string_map}
_TASK_SPEC = {
    "ContainerSpec": _container_spec,
    "PluginSpec": object_of(
        {
            "Name": string,
            "Remote": string,
            "Disabled": boolean,
            "PluginPrivilege": array_of(object_of({"Name": string, "Description": string, "Value": strings})),
        }
    ),
    "NetworkAttachmentSpec": object_of({"ContainerID": string}),
    "Resources": _resources,
    "RestartPolicy": object_of(_RESTART_POLICY),
    "Placement": object_of(_PLACEMENT),
    "ForceUpdate": int_in(0, UINT64_MAX),
    "Runtime": string,
    "Networks": _networks,
    "LogDriver": object_of(_DRIVER),
}
_UPDATE_CONFIG = {
    "Parallelism": int_in(meaning=" (0 updates all tasks at once)"),
    "Delay": _update_duration("delay"),
    "FailureAction": _update_choice("update failure action", _UPDATE_FAILURE_ACTIONS),
    "Monitor": _update_duration("monitor"),
    "MaxFailureRatio": _failure_ratio,
    "Order": _update_choice("update order", _UPDATE_ORDERS),
}
_MODE = {
    "Replicated": object_of(
        {"Replicas": int_in(0, MAX_REPLICAS, f" (leave it out for 1; raftswarm runs at most {MAX_REPLICAS} per service)")}
    ),
    "Global": object_of({}),
    "ReplicatedJob": object_of(
        {
            "MaxConcurrent": int_in(0, MAX_REPLICAS, " (tasks run at once; leave it out for 1)"),
            "TotalCompletions": int_in(0, MAX_REPLICAS, " (tasks to complete; leave it out for MaxConcurrent)"),
        }
    ),
    "GlobalJob": object_of({}),
}
_PORT = {
    "Name": string,
    "Protocol": one_of(*_PROTOCOLS),
    "TargetPort": int_in(1, _PORT_MAX),
    "PublishedPort": int_in(0, _PORT_MAX, " (0 picks a free port)"),
    "PublishMode": one_of(*_PUBLISH_MODES),
}
_ENDPOINT_SPEC = {
    "Mode": one_of(*_RESOLUTION_MODES),
    "Ports": array_of(object_of(_PORT, {"TargetPort": "give the container's port"})),
}
_SERVICE_SPEC = {
    "Name": _service_name,
    "Labels": string_map,
    "TaskTemplate": _task_template,
    "Mode": _mode,
    "UpdateConfig": object_of(_UPDATE_CONFIG),
    "RollbackConfig": object_of({**_UPDATE_CONFIG, "FailureAction": one_of(*_ROLLBACK_FAILURE_ACTIONS)}),
    "Networks": _networks,
    "EndpointSpec": _endpoint,
}


# -- the swarm and its nodes -------------------------------------------------------------------------------


def validate_swarm_spec(spec: Any) -> dict[str, Any]:
    """Check a SwarmSpec (`POST /swarm/update`) by Docker's types; return a deep copy of its fields, in Docker's
    spelling, without unknown top-level keys: the control API merges the spec section by section into the
    stored one, which a key of one type now and another later would break (Docker drops them too). The control
    API adds its own rules (heartbeat, certificate lifetime)."""
    checked = validated(spec, "the swarm spec", _SWARM_SPEC)
    return {key: value for key, value in checked.items() if key in _SWARM_SPEC}


def validate_node_spec(spec: Any) -> dict[str, Any]:
    """Check a NodeSpec (`POST /nodes/{id}/update`): Name, Labels, Role worker|manager, Availability
    active|pause|drain. Returns a deep copy, known keys in Docker's spelling."""
    return validated(spec, "the node spec", _NODE_SPEC)


def validate_init_request(body: Any) -> dict[str, Any]:
    """Check Docker's InitRequest (`POST /swarm/init`); returns a deep copy, known keys in Docker's spelling,
    with the Availability the node gets."""
    request = _with_availability(validated(body, "the swarm init request", _INIT_REQUEST))
    name = request.get("Spec", {}).get("Name", "")
    if name not in ("", "default"):
        raise InvalidSpec('swarm spec must be named "default"')  # dockerd's words
    _refuse_unsupported(request, _UNSUPPORTED)
    lifetime = node_certificate_lifetime(request)
    if lifetime is not None and lifetime < MIN_NODE_CERT_LIFETIME:
        raise InvalidSpec(
            f"Spec.CAConfig.NodeCertExpiry: node certificates must live at least {MIN_NODE_CERT_LIFETIME},"
            f" got {lifetime}"
        )
    return request


_VXLAN_PORT = 4789
_DEFAULT_SUBNET_SIZE = 24
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "DataPathPort": (
        lambda port: port not in (0, _VXLAN_PORT),
        f"raftswarm's overlay networks use VXLAN port {_VXLAN_PORT} only (--data-path-port)",
    ),
    "DefaultAddrPool": (
        bool, "raftswarm allocates overlay subnets from Docker's default pool only, 10.0.0.0/8 (--default-addr-pool)"
    ),
    "SubnetSize": (
        lambda size: size not in (0, _DEFAULT_SUBNET_SIZE),
        f"raftswarm's overlay subnets are /{_DEFAULT_SUBNET_SIZE} (--default-addr-pool-mask-length)",
    ),
    "DataPathAddr": (
        bool, "raftswarm carries overlay traffic on the advertise address; use --advertise-addr (--data-path-addr)"
    ),
    "ForceNewCluster": (
        bool, "restart the manager that lost its quorum with `raftswarm-node --force-new-cluster` (--force-new-cluster)"
    ),
}
"""Init and join request fields raftswarm cannot honour: a value other than the default is refused, not ignored."""


def _refuse_unsupported(request: dict[str, Any], fields: Iterable[str]) -> None:
    for key in fields:
        refused, why = _UNSUPPORTED[key]
        if key in request and refused(request[key]):
            raise InvalidSpec(f"{key}: {why}")


def _with_availability(request: dict[str, Any]) -> dict[str, Any]:
    # Absent or "" (see `_requested_availability`): the default.
    if not request.get("Availability"):
        request["Availability"] = "active"
    return request


def init_settings(init_request: dict[str, Any]) -> dict[str, Any]:
    """The swarm settings a checked InitRequest's Spec sets, as dockerd's init takes them (MergeSwarmSpecToGRPC):
    only what is set -- not zero, empty or false -- the rest keeping the defaults."""

    def set_values(value: Any) -> Any:
        if isinstance(value, dict):
            kept = {key: set_values(item) for key, item in value.items()}
            return {key: item for key, item in kept.items() if item not in (0, "", None, False, [], {})}
        return value

    return set_values({k: v for k, v in init_request.get("Spec", {}).items() if k != "Name"})


def node_certificate_lifetime(init_request: dict[str, Any]) -> timedelta | None:
    """The node certificate lifetime a checked InitRequest asks for; None for the default."""
    expiry = init_request.get("Spec", {}).get("CAConfig", {}).get("NodeCertExpiry", 0)
    return timedelta(seconds=expiry / 1e9) if expiry else None


def validate_join_request(body: Any) -> dict[str, Any]:
    """Check Docker's JoinRequest (`POST /swarm/join`); returns a deep copy, known keys in Docker's spelling,
    with the Availability the node gets."""
    request = validated(
        body,
        "the swarm join request",
        _JOIN_REQUEST,
        {"JoinToken": "give the swarm's join token (`raftswarm swarm join-token worker` on a manager prints it)"},
    )
    _refuse_unsupported(request, ["DataPathAddr"])
    return _with_availability(request)


_UINT64 = int_in(0, UINT64_MAX)
_SWARM_SPEC = {
    "Name": string,
    "Labels": string_map,
    "Orchestration": object_of({"TaskHistoryRetentionLimit": int_in(meaning=" (ended tasks kept per slot)")}),
    "Raft": object_of(
        {
            "SnapshotInterval": _UINT64,
            "KeepOldSnapshots": _UINT64,
            "LogEntriesForSlowFollowers": _UINT64,
            "ElectionTick": int_in(0, UINT32_MAX),
            "HeartbeatTick": int_in(0, UINT32_MAX),
        }
    ),
    "Dispatcher": object_of({"HeartbeatPeriod": duration}),
    "CAConfig": object_of(
        {
            "NodeCertExpiry": duration,
            "ExternalCAs": array_of(
                object_of({"Protocol": one_of("cfssl"), "URL": string, "Options": string_map, "CACert": string})
            ),
            "SigningCACert": string,
            "SigningCAKey": string,
            "ForceRotate": _UINT64,
        }
    ),
    "EncryptionConfig": object_of({"AutoLockManagers": boolean}),
    "TaskDefaults": object_of({"LogDriver": object_of(_DRIVER)}),
}
_NODE_SPEC = {
    "Name": string,
    "Labels": string_map,
    "Role": one_of(*_NODE_ROLES),
    "Availability": one_of(*NODE_AVAILABILITIES),
}


def _requested_availability(value: Any, path: str) -> str:
    # The docker CLI sends "" unless --availability is given; dockerd reads "" as the default (noderunner.go).
    return value if value == "" else choice(value, path, NODE_AVAILABILITIES)


_INIT_REQUEST = {
    "ListenAddr": string,
    "AdvertiseAddr": string,
    "DataPathAddr": string,
    "DataPathPort": int_in(0, _PORT_MAX, " (0 for the default, 4789)"),
    "DefaultAddrPool": strings,
    "ForceNewCluster": boolean,
    "SubnetSize": int_in(0, _MAX_SUBNET_SIZE, " (a prefix length; 0 for the default, 24)"),
    "Spec": object_of(_SWARM_SPEC),
    "AutoLockManagers": boolean,
    "Availability": _requested_availability,
}
_JOIN_REQUEST = {
    "ListenAddr": string,
    "AdvertiseAddr": string,
    "DataPathAddr": string,
    "RemoteAddrs": strings,
    "JoinToken": string,
    "Availability": _requested_availability,
}


# -- effective values --------------------------------------------------------------------------------------


def update_config(spec: dict[str, Any], rollback: bool = False) -> dict[str, Any]:
    """The effective UpdateConfig (or RollbackConfig when rollback=True) of a validated spec, with Docker's
    defaults filled in: Parallelism 1, Delay 0, FailureAction "pause" (rollback: "pause"), Monitor 5 s
    (5_000_000_000 ns), MaxFailureRatio 0.0, Order "stop-first".

    Given values win, except a Monitor of 0: Docker cannot express "no monitoring" and reads 0 as the default.
    """
    return effective_update_config(spec.get("RollbackConfig" if rollback else "UpdateConfig"))


def restart_policy(spec: dict[str, Any]) -> dict[str, Any]:
    """Effective TaskTemplate.RestartPolicy of a validated spec: Condition "any", Delay 5 s in ns, MaxAttempts 0
    (unlimited), Window 0 -- given values win."""
    given = (spec.get("TaskTemplate") or {}).get("RestartPolicy") or {}
    return {**RESTART_DEFAULTS, **given}


def referenced_secrets(spec: dict[str, Any]) -> list[str]:
    """SecretIDs referenced by TaskTemplate.ContainerSpec.Secrets, in order, without duplicates."""
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return list(dict.fromkeys(reference["SecretID"] for reference in container.get("Secrets") or ()))


def referenced_configs(spec: dict[str, Any]) -> list[str]:
    """ConfigIDs referenced by TaskTemplate.ContainerSpec.Configs, in order, without duplicates."""
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return list(dict.fromkeys(reference["ConfigID"] for reference in container.get("Configs") or ()))


# -- secrets -----------------------------------------------------------------------------------------------


def validate_secret_spec(spec: Any) -> tuple[dict[str, Any], bytes]:
    """Check a SecretSpec {Name, Labels, Data (base64 string), Driver?, Templating?}.

    Returns (a deep copy of the spec without Data, the decoded data bytes). Raises `InvalidSpec`. Stricter than
    Docker: a Driver or a Templating is refused, as raftswarm can honour neither."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the secret spec must be a JSON object, got {shown(spec)}")
    secret = without_nulls(spec)
    canonical_keys(secret, ("Name", "Labels", "Data", "Driver", "Templating"))
    _object_name(secret, 'name the secret, e.g. "db_password"')
    check_field(secret, "", "Labels", string_map)
    if "Driver" in secret:
        fail("Driver", "secret drivers are not supported by raftswarm; leave Driver out to keep the data in the swarm")
    if "Templating" in secret:
        templating = check_fields(an_object(secret["Templating"], "Templating"), "Templating", _DRIVER)
        non_empty_string(required_field(templating, "Name", "Templating", 'e.g. "golang"'), "Templating.Name")
        # Docker expands a templated secret for each task; raftswarm's nodes deliver a secret's bytes as they are,
        # so taking the field would hand the task the template's source.
        fail(
            "Templating",
            "raftswarm nodes expand templates in configs, not in secrets; leave Templating out to deliver the data"
            " as it is",
        )
    data = _payload(secret.pop("Data", ""), "secret", MAX_SECRET_SIZE, "500 KiB")
    return secret, data


def _object_name(spec: dict[str, Any], hint: str) -> None:
    """SwarmKit's validateConfigOrSecretAnnotations."""
    name = string(required_field(spec, "Name", "", hint), "Name")
    if not name:
        fail("Name", "name must be provided")
    if len(name) > _SECRET_NAME_MAX or not _SECRET_NAME.fullmatch(name):
        fail(
            "Name",
            f"invalid name {shown(name)}, only {_SECRET_NAME_MAX} [a-zA-Z0-9-_.] characters allowed,"
            " and the start and end character must be [a-zA-Z0-9]",
        )


def _payload(value: Any, kind: str, limit: int, limit_words: str) -> bytes:
    """A secret's or config's Data: base64 of 1 to `limit` - 1 bytes."""
    size_rule = f"{kind} data must be larger than 0 and less than {limit} bytes ({limit_words})"
    if not isinstance(value, str):
        fail("Data", f"must be the {kind}'s bytes as a base64 string, got {shown(value)}")
    try:
        # Go's decoder (which Docker's JSON []byte goes through) skips line breaks; the rest must be strict
        # standard base64 with padding, as there.
        data = base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except ValueError as exc:
        fail("Data", f"is not valid base64 (standard alphabet, with = padding): {exc}")
    if not 0 < len(data) < limit:
        fail("Data", f"{size_rule}; got {len(data)} bytes")
    return data


# -- configs -----------------------------------------------------------------------------------------------

TEMPLATE_DRIVER = "golang"
"""The one template driver of Docker's configs (SwarmKit's ExpandConfigSpec): the data is a Go template, expanded
on the worker for each task."""


def validate_config_spec(spec: Any) -> tuple[dict[str, Any], bytes]:
    """Check a ConfigSpec {Name, Labels, Data (base64 string), Templating?}.

    Returns (a deep copy of the spec without Data, the decoded data bytes). Raises `InvalidSpec`. Stricter than
    Docker: a Templating driver other than "golang" is refused here, where Docker takes it and then fails every
    task that uses the config ("unrecognized template type")."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the config spec must be a JSON object, got {shown(spec)}")
    config = without_nulls(spec)
    canonical_keys(config, ("Name", "Labels", "Data", "Templating"))
    _object_name(config, 'name the config, e.g. "nginx.conf"')
    check_field(config, "", "Labels", string_map)
    if "Templating" in config:
        templating = check_fields(an_object(config["Templating"], "Templating"), "Templating", _DRIVER)
        hint = f'e.g. "{TEMPLATE_DRIVER}"'
        driver = string(required_field(templating, "Name", "Templating", hint), "Templating.Name")
        if driver != TEMPLATE_DRIVER:
            fail("Templating.Name", f"unrecognized template type {driver!r}: the one driver is {TEMPLATE_DRIVER!r}")
    data = _payload(config.pop("Data", ""), "config", MAX_CONFIG_SIZE, "1000 KiB")
    return config, data


# -- what raftswarm accepts and does not act on -------------------------------------------------------------

_EACH = "[]"
"""In a `_NotActedOn` path: every item of the array."""


class _NotActedOn(NamedTuple):
    """A field of Docker's ServiceSpec that raftswarm takes and does not act on, and why."""

    path: tuple[str, ...]
    """The field's keys from the ServiceSpec down."""
    reason: str
    acted_on: tuple[Any, ...] = ()
    """Values of the field that raftswarm does honour (besides leaving it out)."""


_NOT_ACTED_ON: tuple[_NotActedOn, ...] = (
    _NotActedOn(
        ("TaskTemplate", "ContainerSpec", "Labels"), "container labels are not kept: raftswarm has no container API"
    ),
    _NotActedOn(("TaskTemplate", "ContainerSpec", "OpenStdin"), "a task's stdin is never open on raftswarm"),
    _NotActedOn(
        ("TaskTemplate", "ContainerSpec", "Privileges", "CredentialSpec"), "credential specs are a Windows feature"
    ),
    _NotActedOn(("TaskTemplate", "ContainerSpec", "Privileges", "SELinuxContext"), "this node has no SELinux"),
    _NotActedOn(("TaskTemplate", "ContainerSpec", "Privileges", "AppArmor"), "this node has no AppArmor"),
    _NotActedOn(
        ("TaskTemplate", "ContainerSpec", "Isolation"),
        "process and hyperv isolation are Windows features: tasks are isolated by Linux namespaces (default)",
        acted_on=("default",),
    ),
    _NotActedOn(
        ("TaskTemplate", "Resources", "Reservations", "GenericResources"), "generic resources are not scheduled"
    ),
    _NotActedOn(
        ("TaskTemplate", "Placement", "Platforms"),
        "tasks are placed on any platform: every raftswarm node is linux/amd64",
    ),
    _NotActedOn(
        ("TaskTemplate", "Networks", _EACH, "DriverOpts"),
        "per-attachment driver options are not used: a task joins the network with the network's own settings",
    ),
    _NotActedOn(
        ("TaskTemplate", "LogDriver"), "a task's output is kept by its node (`service logs`); log drivers are not used"
    ),
    _NotActedOn(("TaskTemplate", "Runtime"), "tasks always run as OCI containers"),
)
"""Fields Docker's API has and raftswarm takes but does not act on, with why: a service using one is created
and the API's Warnings say so (the docker CLI prints them)."""


def service_warnings(spec: dict[str, Any]) -> list[str]:
    """Docker's Warnings for a checked ServiceSpec: each field raftswarm ignores, known to Docker or not."""
    with collecting_unknown_fields() as unknown:
        validate_service_spec(spec)
    warnings = [f"unknown field {path} is ignored: Docker's API has no such field" for path in unknown]
    for field in _NOT_ACTED_ON:
        for path, value in _values_at(spec, field.path):
            if value not in (None, "", [], {}, False, *field.acted_on):
                warnings.append(f"{path} is ignored: {field.reason}")
    return warnings


def _values_at(value: Any, keys: tuple[str, ...], path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of each field of `value` that `keys` name, present or not."""
    if not keys:
        yield path, value
    elif keys[0] == _EACH:
        for index, item in enumerate(value if isinstance(value, list) else ()):
            yield from _values_at(item, keys[1:], at(path, index))
    else:
        yield from _values_at(value.get(keys[0]) if isinstance(value, dict) else None, keys[1:], at(path, keys[0]))
