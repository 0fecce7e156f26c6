"""Validation of the specs and request bodies users send to the swarm API. Pure: no I/O.

Docker checks a spec in two places, the daemon's conversion to SwarmKit types (moby daemon/cluster/convert)
and SwarmKit's control API (manager/controlapi: validateServiceSpec, validateSecretSpec). Both answer 400
with the first problem found. `validate_service_spec` and `validate_secret_spec` make both checks before
anything is stored; `validate_swarm_spec`, `validate_node_spec`, `validate_init_request` and
`validate_join_request` check the other bodies of the swarm API by Docker's types. The first problem raises
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
- Job modes (ReplicatedJob, GlobalJob) and secret drivers are refused: raftswarm does not run them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from ..errors import ControlError
from .defaults import RESTART_DEFAULTS, effective_update_config
from .placement import InvalidPlacement, parse_constraint, spread_label

__all__ = [
    "MAX_REPLICAS",
    "MAX_SECRET_SIZE",
    "InvalidSpec",
    "referenced_secrets",
    "restart_policy",
    "update_config",
    "validate_init_request",
    "validate_join_request",
    "validate_node_spec",
    "validate_secret_spec",
    "validate_service_spec",
    "validate_swarm_spec",
    "without_nulls",
]

MAX_SECRET_SIZE = 500 * 1024
"""Secret data must be shorter than this many bytes. This is SwarmKit's MaxSecretSize with SwarmKit's
exclusive bound ("less than 512000 bytes"), so Docker would accept every secret raftswarm accepts."""

MAX_REPLICAS = 100_000
"""The most tasks one replicated service may ask for. Docker takes any uint64, and a typo such as
9223372036854775807 would have the leader make tasks until the swarm falls over: every manager keeps every
task in memory (about 2 KiB each in the store, measured, before the control loops' own views). 100,000 is the
scale of Docker's own published test of a whole swarm, Swarm3k (about 100,000 containers), far above what any
raftswarm cluster runs; `serviceapi.MAX_SWARM_TASKS` bounds the sum over all services likewise."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1  # Docker's integers are int64 unless the API says uint64 or uint32
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
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
_NODE_AVAILABILITIES = ("active", "pause", "drain")
_MOUNT_TYPES = ("bind", "volume", "tmpfs", "npipe", "cluster", "image")
_BIND_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_ISOLATIONS = ("default", "process", "hyperv", "")

class InvalidSpec(ControlError):
    """A spec that cannot be accepted; the message names the field path
    (e.g. 'TaskTemplate.RestartPolicy.Condition'). The API answers 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


Check = Callable[[Any, str], Any]
"""A field check: called with the value and its path; raises `InvalidSpec` naming the path."""


# -- field checks ------------------------------------------------------------------------------------------


def _fail(path: str, problem: str) -> NoReturn:
    raise InvalidSpec(f"{path}: {problem}")


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    """A value as the user wrote it in JSON, short enough for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str) and len(value) > 60:
        value = value[:57] + "..."
    try:
        return json.dumps(value)
    except (TypeError, ValueError):  # not JSON at all: a Python caller's mistake
        return type(value).__name__


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"must be a JSON object, got {_shown(value)}")
    return value


def _required(parent: dict[str, Any], key: str, path: str, hint: str) -> Any:
    if key not in parent:
        _fail(_at(path, key), f"required; {hint}")
    return parent[key]


def _integer(value: Any, path: str, minimum: int = 0, maximum: int = _INT64_MAX, meaning: str = "") -> int:
    if maximum >= _INT64_MAX:
        expected = f"an integer >= {minimum}{meaning}"
    else:
        expected = f"an integer from {minimum} to {maximum}{meaning}"
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        _fail(path, f"must be {expected}, got {_shown(value)}")
    return value


def _int(minimum: int = 0, maximum: int = _INT64_MAX, meaning: str = "") -> Check:
    """The check of an integer field in [minimum, maximum]; `meaning` says what the number is, for the message."""
    return lambda value, path: _integer(value, path, minimum, maximum, meaning)


def _duration(value: Any, path: str) -> int:
    return _integer(value, path, meaning=" (a duration in nanoseconds; 5 s is 5000000000)")


def _probe_duration(value: Any, path: str) -> int:
    if _duration(value, path) and value < _MIN_PROBE_NS:
        _fail(path, f"must be 0 (the image's own) or at least 1 ms ({_MIN_PROBE_NS} nanoseconds), got {value}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string, got {_shown(value)}")
    return value


def _non_empty_string(value: Any, path: str, problem: str = "must not be empty") -> str:
    if _string(value, path) == "":
        _fail(path, problem)
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"must be true or false, got {_shown(value)}")
    return value


def _base64(value: Any, path: str) -> str:
    """Go's []byte in JSON: a standard base64 string, which Go decoding (so every client) would refuse otherwise."""
    try:
        base64.b64decode(_string(value, path).replace("\r", "").replace("\n", ""), validate=True)
    except binascii.Error as exc:
        _fail(path, f"must be base64 (standard alphabet, with = padding): {exc}")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(path, f"must be one of {', '.join(choices)}; got {_shown(value)}")
    return value


def _one_of(*choices: str) -> Check:
    return lambda value, path: _choice(value, path, choices)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"must be a JSON array, got {_shown(value)}")
    return value


def _strings(value: Any, path: str) -> list[str]:
    items = _list(value, path)
    for index, item in enumerate(items):
        _string(item, _at(path, index))
    return items


def _objects(value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    return [(_at(path, index), _object(item, _at(path, index))) for index, item in enumerate(_list(value, path))]


def _array_of(check: Check) -> Check:
    def checked(value: Any, path: str) -> list[Any]:
        for index, item in enumerate(_list(value, path)):
            check(item, _at(path, index))
        return value

    return checked


def _string_map(value: Any, path: str) -> dict[str, str]:
    """Labels, options, sysctls: an object of strings."""
    for key, item in _object(value, path).items():
        _string(item, _at(path, key))
    return value


def _go_folded(key: str) -> str:
    # Go's encoding/json matches a key to a field name with Unicode simple case folding, under which the
    # Kelvin sign (U+212A) equals k and the long s (U+017F) equals s; lower() covers the first.
    return key.lower().replace("\u017f", "s")


def _canonical_keys(parent: dict[str, Any], names: Iterable[str]) -> None:
    """Rename, in place, each key of `parent` that Go's JSON decoding would match to one of `names` to that
    spelling. Where several keys match one name the last wins, as in Go."""
    spelling = {_go_folded(name): name for name in names}
    if all(key in spelling.values() or _go_folded(key) not in spelling for key in parent):
        return
    renamed: dict[str, Any] = {}
    for key, value in parent.items():
        renamed[spelling.get(_go_folded(key), key)] = value
    parent.clear()
    parent.update(renamed)


def _fields(
    parent: dict[str, Any], path: str, schema: Mapping[str, Check], required: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check the fields of `parent` that `schema` names, each with its check, after renaming keys to Docker's
    spelling (`_canonical_keys`); `required` maps fields that must be there to a hint for the user."""
    _canonical_keys(parent, schema)
    for key, hint in (required or {}).items():
        _required(parent, key, path, hint)
    for key, check in schema.items():
        if key in parent:
            check(parent[key], _at(path, key))
    return parent


def _object_of(schema: Mapping[str, Check], required: Mapping[str, str] | None = None) -> Check:
    """The check of an object field whose own fields are `schema`."""
    return lambda value, path: _fields(_object(value, path), path, schema, required)


def _unsupported(reason: str) -> Check:
    def refuse(value: Any, path: str) -> NoReturn:
        _fail(path, reason)

    return refuse


def _check(parent: dict[str, Any], path: str, key: str, check: Any, *args: Any) -> Any:
    """Run `check(value, path, *args)` on parent[key] if the key is there; return the value or None."""
    if key not in parent:
        return None
    return check(parent[key], _at(path, key), *args)


def without_nulls(value: Any) -> Any:
    """A deep copy without the object members that are null: Docker's Go decoding reads `"Args": null` as
    no Args, and clients (the docker SDK) send such nulls for every option left unset."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def _validated(
    body: Any, what: str, schema: Mapping[str, Check], required: Mapping[str, str] | None = None
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSpec(f"{what} must be a JSON object, got {_shown(body)}")
    return _fields(without_nulls(body), "", schema, required)


# -- services ----------------------------------------------------------------------------------------------


def validate_service_spec(spec: Any, *, default_name: Callable[[], str] | None = None) -> dict[str, Any]:
    """Check a ServiceSpec; return it (a deep copy, known keys in Docker's spelling, unknown keys kept as given,
    nothing defaulted). With `default_name`, a spec without a Name (or with "") gets one from it, as dockerd
    names a service created without one.

    Raises `InvalidSpec` naming the first field at fault."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the service spec must be a JSON object, got {_shown(spec)}")
    service = without_nulls(spec)
    _canonical_keys(service, _SERVICE_SPEC)
    if default_name is not None and service.get("Name", "") == "":
        service["Name"] = default_name()
    _fields(
        service,
        "",
        _SERVICE_SPEC,
        {"Name": 'name the service, e.g. "web"', "TaskTemplate": 'give at least {"ContainerSpec": {"Image": "nginx"}}'},
    )
    if "Global" in service.get("Mode", {}) and service["TaskTemplate"].get("Placement", {}).get("MaxReplicas"):
        _fail(
            "TaskTemplate.Placement.MaxReplicas",
            "max replicas per node can only be used with replicated mode; a global service runs one task per node",
        )
    return service


def _service_name(value: Any, path: str) -> None:
    name = _string(value, path)
    if not name:
        _fail(path, "a service name must be provided")
    if len(name) > _SERVICE_NAME_MAX:
        _fail(path, f"must be {_SERVICE_NAME_MAX} characters or fewer (it is a DNS label), got {len(name)}")
    if not _SERVICE_NAME.fullmatch(name):
        _fail(
            path,
            f"invalid name {_shown(name)}: it must be valid as a DNS name component, so only [a-zA-Z0-9], '-' and"
            " '_' are allowed, and the first and last characters must be [a-zA-Z0-9]",
        )


def _task_template(value: Any, path: str) -> None:
    _fields(
        _object(value, path),
        path,
        _TASK_SPEC,
        {"ContainerSpec": 'raftswarm runs containers: give {"Image": "nginx"} at least'},
    )


def _container_spec(value: Any, path: str) -> None:
    _fields(_object(value, path), path, _CONTAINER_SPEC, {"Image": "name the image to run, e.g. nginx:1.27"})


def _image(value: Any, path: str) -> None:
    image = _string(value, path)
    if not image:
        _fail(path, "image reference must be provided")
    match = _IMAGE_REFERENCE.fullmatch(image)
    if match is None or len(match["name"]) > _IMAGE_NAME_MAX:
        _fail(
            path,
            f"{_shown(image)} is not a valid repository/tag; expected e.g. nginx, nginx:1.27 or"
            " registry.example.com:5000/team/app:v2, in lower case",
        )
    if _IMAGE_ID.fullmatch(image):
        _fail(path, f"invalid repository name {_shown(image)}: cannot specify 64-byte hexadecimal strings")


def _environment(value: Any, path: str) -> None:
    for index, entry in enumerate(_strings(value, path)):
        # Docker passes "KEY" without "=" on as it is; only an empty name is an error (moby opts.ValidateEnv).
        if entry.partition("=")[0] == "":
            _fail(_at(path, index), f"invalid environment variable {_shown(entry)}: expected KEY=VALUE")


def _mounts(value: Any, path: str) -> None:
    targets: set[str] = set()
    for mount_path, mount in _objects(value, path):
        _fields(mount, mount_path, _MOUNT, {"Target": "give the path inside the container"})
        target = _non_empty_string(mount["Target"], _at(mount_path, "Target"))
        if target in targets:
            _fail(_at(mount_path, "Target"), f"duplicate mount point: {target}")
        targets.add(target)


def _tmpfs_option(value: Any, path: str) -> None:
    if not 1 <= len(_strings(value, path)) <= 2:
        _fail(path, 'must be ["flag"] or ["key", "value"]')


def _secret_references(value: Any, path: str) -> None:
    targets: dict[str, str] = {}  # target file name -> the secret that has it, for SwarmKit's message
    hint = "a secret reference names the secret by SecretID and SecretName"
    for ref_path, ref in _objects(value, path):
        _fields(
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
            _non_empty_string(ref[key], _at(ref_path, key), "malformed secret reference: must not be empty")
        file_path = _at(ref_path, "File")
        name = _non_empty_string(
            _required(ref["File"], "Name", file_path, "name the file the secret appears as"),
            _at(file_path, "Name"),
            "malformed file secret reference, invalid target file name provided",
        )
        if name in targets:
            _fail(
                _at(file_path, "Name"),
                f"secret references '{targets[name]}' and '{ref['SecretName']}' have a conflicting target: '{name}'",
            )
        targets[name] = ref["SecretName"]


def _resources(value: Any, path: str) -> None:
    resources = _fields(_object(value, path), path, _RESOURCES)
    limits, reservations = resources.get("Limits", {}), resources.get("Reservations", {})
    for key in ("NanoCPUs", "MemoryBytes"):
        limit, reserved = limits.get(key, 0), reservations.get(key, 0)
        if limit and reserved > limit:  # a limit of 0 is no limit
            _fail(
                _at(_at(path, "Reservations"), key),
                f"the reservation ({reserved}) is larger than the limit ({limit}, {path}.Limits.{key});"
                " a task could never get what it reserves",
            )


def _nano_cpus(value: Any, path: str) -> None:
    amount = _integer(value, path)
    if amount and amount < _MIN_NANO_CPUS:
        _fail(path, f"invalid cpu value {amount / 1e9:g}: must be at least 0.001 CPU (1000000), or 0")


def _memory_bytes(value: Any, path: str) -> None:
    amount = _integer(value, path)
    if amount and amount < _MIN_MEMORY_BYTES:
        _fail(path, f"invalid memory value {amount}: must be at least 4MiB ({_MIN_MEMORY_BYTES}), or 0")


def _constraints(value: Any, path: str) -> None:
    for index, text in enumerate(_strings(value, path)):
        try:
            parse_constraint(text)
        except InvalidPlacement as exc:
            _fail(_at(path, index), str(exc))


def _preferences(value: Any, path: str) -> None:
    for pref_path, preference in _objects(value, path):
        _fields(preference, pref_path, _PREFERENCE, {"Spread": 'only spread preferences exist: {"Spread": {...}}'})
        try:
            spread_label(preference)  # the scheduler's own rule, so the two cannot disagree
        except InvalidPlacement as exc:
            _fail(_at(_at(pref_path, "Spread"), "SpreadDescriptor"), str(exc))


def _networks(value: Any, path: str) -> None:
    for network_path, network in _objects(value, path):
        _fields(network, network_path, _NETWORK_ATTACHMENT, {"Target": "name the network (its ID or name)"})
        _non_empty_string(network["Target"], _at(network_path, "Target"))


def _mode(value: Any, path: str) -> None:
    """No Mode, or an empty one, means one replica, as in Docker."""
    mode = _fields(_object(value, path), path, _MODE)
    if "Replicated" in mode and "Global" in mode:
        _fail(path, "give one of Replicated or Global, not both")


def _failure_ratio(value: Any, path: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 <= value <= 1:
        _fail(path, f"must be a number from 0 to 1, got {_shown(value)}")


def _endpoint(value: Any, path: str) -> None:
    endpoint = _fields(_object(value, path), path, _ENDPOINT_SPEC)
    resolution = endpoint.get("Mode", "vip")
    published: set[tuple[int, str]] = set()
    for index, port in enumerate(endpoint.get("Ports", [])):
        port_path = _at(_at(path, "Ports"), index)
        protocol = port.get("Protocol", "tcp")
        number = port.get("PublishedPort", 0)
        # The routing mesh balances over a virtual IP; with dnsrr there is none to balance from.
        if resolution == "dnsrr" and port.get("PublishMode", "ingress") == "ingress":
            _fail(
                _at(port_path, "PublishMode"),
                "port published with ingress mode can't be used with dnsrr mode; publish it in host mode"
                ' ("PublishMode": "host") or use the vip endpoint mode',
            )
        if number:  # dynamic ports (0) never conflict
            if (number, protocol) in published:
                _fail(_at(port_path, "PublishedPort"), f"duplicate published ports provided: {number}/{protocol}")
            published.add((number, protocol))


# Docker's shapes (moby api/swagger.yaml), field by field. The ones raftswarm acts on carry its own rules too.

_DRIVER = {"Name": _string, "Options": _string_map}  # Go's Driver: log drivers, volume drivers, secret templating
_PLATFORM = {"Architecture": _string, "OS": _string}
_SECRET_FILE = {
    "Name": _string,
    "UID": _string,
    "GID": _string,
    "Mode": _int(0, _MAX_FILE_MODE, " (file permissions, e.g. 292 for 0o444)"),
}
_SECRET_REFERENCE = {"File": _object_of(_SECRET_FILE), "SecretID": _string, "SecretName": _string}
_CONFIG_REFERENCE = {
    "File": _object_of({"Name": _string, "UID": _string, "GID": _string, "Mode": _int(0, _UINT32_MAX)}),
    "Runtime": _object_of({}),
    "ConfigID": _string,
    "ConfigName": _string,
}
_MOUNT = {
    "Target": _string,
    "Source": _string,
    "Type": _one_of(*_MOUNT_TYPES),
    "ReadOnly": _boolean,
    "Consistency": _string,
    "BindOptions": _object_of(
        {
            "Propagation": _one_of(*_BIND_PROPAGATIONS),
            "NonRecursive": _boolean,
            "CreateMountpoint": _boolean,
            "ReadOnlyNonRecursive": _boolean,
            "ReadOnlyForceRecursive": _boolean,
        }
    ),
    "VolumeOptions": _object_of(
        {"NoCopy": _boolean, "Labels": _string_map, "DriverConfig": _object_of(_DRIVER), "Subpath": _string}
    ),
    "ImageOptions": _object_of({"Subpath": _string}),
    "TmpfsOptions": _object_of(
        {
            "SizeBytes": _int(meaning=" (0 for no limit)"),
            "Mode": _int(0, _UINT32_MAX),
            "Options": _array_of(_tmpfs_option),
        }
    ),
}
_HEALTHCHECK = {
    "Test": _strings,
    "Interval": _probe_duration,
    "Timeout": _probe_duration,
    "StartPeriod": _probe_duration,
    "StartInterval": _probe_duration,
    "Retries": _int(meaning=" (consecutive failures; 0 for the image's own)"),
}
_PRIVILEGES = {
    "CredentialSpec": _object_of({"Config": _string, "File": _string, "Registry": _string}),
    "SELinuxContext": _object_of(
        {"Disable": _boolean, "User": _string, "Role": _string, "Type": _string, "Level": _string}
    ),
    "Seccomp": _object_of({"Mode": _one_of("default", "unconfined", "custom"), "Profile": _base64}),
    "AppArmor": _object_of({"Mode": _one_of("default", "disabled")}),
    "NoNewPrivileges": _boolean,
}
_CONTAINER_SPEC = {
    "Image": _image,
    "Labels": _string_map,
    "Command": _strings,
    "Args": _strings,
    "Hostname": _string,
    "Env": _environment,
    "Dir": _string,
    "User": _string,
    "Groups": _strings,
    "Privileges": _object_of(_PRIVILEGES),
    "Init": _boolean,
    "TTY": _boolean,
    "OpenStdin": _boolean,
    "ReadOnly": _boolean,
    "Mounts": _mounts,
    "StopSignal": _string,
    "StopGracePeriod": _duration,
    "Healthcheck": _object_of(_HEALTHCHECK),
    "Hosts": _strings,
    "DNSConfig": _object_of({"Nameservers": _strings, "Search": _strings, "Options": _strings}),
    "Secrets": _secret_references,
    "Configs": _array_of(_object_of(_CONFIG_REFERENCE)),
    "Isolation": _one_of(*_ISOLATIONS),
    "Sysctls": _string_map,
    "CapabilityAdd": _strings,
    "CapabilityDrop": _strings,
    "Ulimits": _array_of(_object_of({"Name": _string, "Soft": _int(_INT64_MIN), "Hard": _int(_INT64_MIN)})),
    "OomScoreAdj": _int(*_OOM_SCORE_ADJ),
}
_RESOURCES = {
    "Limits": _object_of(
        {"NanoCPUs": _nano_cpus, "MemoryBytes": _memory_bytes, "Pids": _int(meaning=" (0 for no limit)")}
    ),
    "Reservations": _object_of(
        {
            "NanoCPUs": _nano_cpus,
            "MemoryBytes": _memory_bytes,
            "GenericResources": _array_of(
                _object_of(
                    {
                        "NamedResourceSpec": _object_of({"Kind": _string, "Value": _string}),
                        "DiscreteResourceSpec": _object_of({"Kind": _string, "Value": _int()}),
                    }
                )
            ),
        }
    ),
    "SwapBytes": _int(-1, meaning=" (-1 for unlimited swap)"),
    "MemorySwappiness": _int(-1, 100),
}
_RESTART_POLICY = {
    "Condition": _one_of(*_RESTART_CONDITIONS),
    "Delay": _duration,
    "MaxAttempts": _int(meaning=" (0 for no limit)"),
    "Window": _duration,
}
_PREFERENCE = {"Spread": _object_of({"SpreadDescriptor": _string}, {"SpreadDescriptor": 'e.g. "node.labels.zone"'})}
_PLACEMENT = {
    "Constraints": _constraints,
    "Preferences": _preferences,
    "MaxReplicas": _int(meaning=" (0 for no limit)"),
    "Platforms": _array_of(_object_of(_PLATFORM)),
}
_NETWORK_ATTACHMENT = {"Target": _string, "Aliases": _strings, "DriverOpts": _string_map}
_TASK_SPEC = {
    "ContainerSpec": _container_spec,
    "PluginSpec": _object_of(
        {
            "Name": _string,
            "Remote": _string,
            "Disabled": _boolean,
            "PluginPrivilege": _array_of(_object_of({"Name": _string, "Description": _string, "Value": _strings})),
        }
    ),
    "NetworkAttachmentSpec": _object_of({"ContainerID": _string}),
    "Resources": _resources,
    "RestartPolicy": _object_of(_RESTART_POLICY),
    "Placement": _object_of(_PLACEMENT),
    "ForceUpdate": _int(0, _UINT64_MAX),
    "Runtime": _string,
    "Networks": _networks,
    "LogDriver": _object_of(_DRIVER),
}
_UPDATE_CONFIG = {
    "Parallelism": _int(meaning=" (0 updates all tasks at once)"),
    "Delay": _duration,
    "FailureAction": _one_of(*_UPDATE_FAILURE_ACTIONS),
    "Monitor": _duration,
    "MaxFailureRatio": _failure_ratio,
    "Order": _one_of(*_UPDATE_ORDERS),
}
_MODE = {
    "Replicated": _object_of(
        {"Replicas": _int(0, MAX_REPLICAS, f" (leave it out for 1; raftswarm runs at most {MAX_REPLICAS} per service)")}
    ),
    "Global": _object_of({}),
    "ReplicatedJob": _unsupported("job services are not supported by raftswarm; use Replicated or Global"),
    "GlobalJob": _unsupported("job services are not supported by raftswarm; use Replicated or Global"),
}
_PORT = {
    "Name": _string,
    "Protocol": _one_of(*_PROTOCOLS),
    "TargetPort": _int(1, _PORT_MAX),
    "PublishedPort": _int(0, _PORT_MAX, " (0 picks a free port)"),
    "PublishMode": _one_of(*_PUBLISH_MODES),
}
_ENDPOINT_SPEC = {
    "Mode": _one_of(*_RESOLUTION_MODES),
    "Ports": _array_of(_object_of(_PORT, {"TargetPort": "give the container's port"})),
}
_SERVICE_SPEC = {
    "Name": _service_name,
    "Labels": _string_map,
    "TaskTemplate": _task_template,
    "Mode": _mode,
    "UpdateConfig": _object_of(_UPDATE_CONFIG),
    "RollbackConfig": _object_of({**_UPDATE_CONFIG, "FailureAction": _one_of(*_ROLLBACK_FAILURE_ACTIONS)}),
    "Networks": _networks,
    "EndpointSpec": _endpoint,
}


# -- the swarm and its nodes -------------------------------------------------------------------------------


def validate_swarm_spec(spec: Any) -> dict[str, Any]:
    """Check a SwarmSpec (`POST /swarm/update`) by Docker's types; return a deep copy of its fields, in Docker's
    spelling, without unknown top-level keys: the control API merges the spec section by section into the
    stored one, which a key of one type now and another later would break (Docker drops them too). The control
    API adds its own rules (heartbeat, certificate lifetime)."""
    checked = _validated(spec, "the swarm spec", _SWARM_SPEC)
    return {key: value for key, value in checked.items() if key in _SWARM_SPEC}


def validate_node_spec(spec: Any) -> dict[str, Any]:
    """Check a NodeSpec (`POST /nodes/{id}/update`): Name, Labels, Role worker|manager, Availability
    active|pause|drain. Returns a deep copy, known keys in Docker's spelling."""
    return _validated(spec, "the node spec", _NODE_SPEC)


def validate_init_request(body: Any) -> dict[str, Any]:
    """Check Docker's InitRequest (`POST /swarm/init`); returns a deep copy, known keys in Docker's spelling."""
    return _validated(body, "the swarm init request", _INIT_REQUEST)


def validate_join_request(body: Any) -> dict[str, Any]:
    """Check Docker's JoinRequest (`POST /swarm/join`); returns a deep copy, known keys in Docker's spelling."""
    return _validated(
        body,
        "the swarm join request",
        _JOIN_REQUEST,
        {"JoinToken": "give the swarm's join token (`raftswarm swarm join-token worker` on a manager prints it)"},
    )


_UINT64 = _int(0, _UINT64_MAX)
_SWARM_SPEC = {
    "Name": _string,
    "Labels": _string_map,
    "Orchestration": _object_of({"TaskHistoryRetentionLimit": _int(meaning=" (ended tasks kept per slot)")}),
    "Raft": _object_of(
        {
            "SnapshotInterval": _UINT64,
            "KeepOldSnapshots": _UINT64,
            "LogEntriesForSlowFollowers": _UINT64,
            "ElectionTick": _int(0, _UINT32_MAX),
            "HeartbeatTick": _int(0, _UINT32_MAX),
        }
    ),
    "Dispatcher": _object_of({"HeartbeatPeriod": _duration}),
    "CAConfig": _object_of(
        {
            "NodeCertExpiry": _duration,
            "ExternalCAs": _array_of(
                _object_of({"Protocol": _one_of("cfssl"), "URL": _string, "Options": _string_map, "CACert": _string})
            ),
            "SigningCACert": _string,
            "SigningCAKey": _string,
            "ForceRotate": _UINT64,
        }
    ),
    "EncryptionConfig": _object_of({"AutoLockManagers": _boolean}),
    "TaskDefaults": _object_of({"LogDriver": _object_of(_DRIVER)}),
}
_NODE_SPEC = {
    "Name": _string,
    "Labels": _string_map,
    "Role": _one_of(*_NODE_ROLES),
    "Availability": _one_of(*_NODE_AVAILABILITIES),
}
_INIT_REQUEST = {
    "ListenAddr": _string,
    "AdvertiseAddr": _string,
    "DataPathAddr": _string,
    "DataPathPort": _int(0, _PORT_MAX, " (0 for the default, 4789)"),
    "DefaultAddrPool": _strings,
    "ForceNewCluster": _boolean,
    "SubnetSize": _int(0, _MAX_SUBNET_SIZE, " (a prefix length; 0 for the default, 24)"),
    "Spec": _object_of(_SWARM_SPEC),
    "AutoLockManagers": _boolean,
    "Availability": _one_of(*_NODE_AVAILABILITIES),
}
_JOIN_REQUEST = {
    "ListenAddr": _string,
    "AdvertiseAddr": _string,
    "DataPathAddr": _string,
    "RemoteAddrs": _strings,
    "JoinToken": _string,
    "Availability": _one_of(*_NODE_AVAILABILITIES),
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


# -- secrets -----------------------------------------------------------------------------------------------


def validate_secret_spec(spec: Any) -> tuple[dict[str, Any], bytes]:
    """Check a SecretSpec {Name, Labels, Data (base64 string), Driver?, Templating?}.

    Returns (a deep copy of the spec without Data, the decoded data bytes). Raises `InvalidSpec`."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the secret spec must be a JSON object, got {_shown(spec)}")
    secret = without_nulls(spec)
    _canonical_keys(secret, ("Name", "Labels", "Data", "Driver", "Templating"))
    name = _string(_required(secret, "Name", "", 'name the secret, e.g. "db_password"'), "Name")
    if not name:
        _fail("Name", "name must be provided")
    if len(name) > _SECRET_NAME_MAX or not _SECRET_NAME.fullmatch(name):
        _fail(
            "Name",
            f"invalid name {_shown(name)}, only {_SECRET_NAME_MAX} [a-zA-Z0-9-_.] characters allowed,"
            " and the start and end character must be [a-zA-Z0-9]",
        )
    _check(secret, "", "Labels", _string_map)
    if "Driver" in secret:
        _fail("Driver", "secret drivers are not supported by raftswarm; leave Driver out to keep the data in the swarm")
    if "Templating" in secret:
        templating = _fields(_object(secret["Templating"], "Templating"), "Templating", _DRIVER)
        _non_empty_string(_required(templating, "Name", "Templating", 'e.g. "golang"'), "Templating.Name")
    data = _secret_data(secret.pop("Data", ""))
    return secret, data


def _secret_data(value: Any) -> bytes:
    size_rule = f"secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes (500 KiB)"
    if not isinstance(value, str):
        _fail("Data", f"must be the secret's bytes as a base64 string, got {_shown(value)}")
    try:
        # Go's decoder (which Docker's JSON []byte goes through) skips line breaks; the rest must be strict
        # standard base64 with padding, as there.
        data = base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except ValueError as exc:
        _fail("Data", f"is not valid base64 (standard alphabet, with = padding): {exc}")
    if not 0 < len(data) < MAX_SECRET_SIZE:
        _fail("Data", f"{size_rule}; got {len(data)} bytes")
    return data
