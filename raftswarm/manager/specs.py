"""Validation of the service and secret specs users send to the swarm API. Pure: no I/O.

Docker checks a spec in two places, the daemon's conversion to SwarmKit types (moby daemon/cluster/convert)
and SwarmKit's control API (manager/controlapi: validateServiceSpec, validateSecretSpec). Both answer 400
with the first problem found. `validate_service_spec` and `validate_secret_spec` make both checks before
anything is stored. The first problem raises `InvalidSpec`, and its message starts with the path of the
field at fault (``TaskTemplate.RestartPolicy.Condition: ...``). A refused request changes nothing.

How the JSON a user sends is read:

- Unknown keys are kept as given and not checked. Newer clients send fields raftswarm does not use.
- null is not a value: leave a field out to get its default. Labels are the exception, because Go clients
  send a nil map as null.
- Integers are JSON integers (not true/false, not 1.0) that fit in an int64. Durations are integers in
  nanoseconds, as in Docker's API.
- The returned spec has no defaults filled in. `update_config` and `restart_policy` give the effective values.

Where raftswarm is stricter than Docker, on purpose:

- Enumerations must be spelled as Docker documents them ("tcp", "host", "stop-first"). Docker maps "" and
  unknown protocols or publish modes to the default without a word.
- A port must name its TargetPort, and a reservation may not exceed its limit.
- Job modes (ReplicatedJob, GlobalJob) and secret drivers are refused: raftswarm does not run them.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from typing import Any, NoReturn

from .controlapi import ControlError
from .orchestrator import DEFAULT_RESTART_CONDITION, DEFAULT_RESTART_DELAY_NS
from .scheduler import InvalidPlacement, _spread_label, parse_constraint

__all__ = [
    "MAX_SECRET_SIZE",
    "InvalidSpec",
    "referenced_secrets",
    "restart_policy",
    "update_config",
    "validate_secret_spec",
    "validate_service_spec",
]

MAX_SECRET_SIZE = 500 * 1024
"""Secret data must be shorter than this many bytes. This is SwarmKit's MaxSecretSize with SwarmKit's
exclusive bound ("less than 512000 bytes"), so Docker would accept every secret raftswarm accepts."""

_INT64_MAX = 2**63 - 1  # Docker's integers are int64/uint64; larger ones would not even fit the store's msgpack
_PORT_MAX = 65535
_SERVICE_NAME_MAX = 63  # a service name is a DNS label (SwarmKit: "name must be 63 characters or fewer")
_SECRET_NAME_MAX = 64  # SwarmKit's limit for config and secret names
_IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax
_MIN_NANO_CPUS = 1_000_000  # SwarmKit: less than 0.001 CPU is a typo, not a limit
_MIN_MEMORY_BYTES = 4 * 1024 * 1024  # SwarmKit: no container starts with less than 4 MiB
_MAX_FILE_MODE = 0o777

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

# Docker's defaults (docker service create --help; SwarmKit api/defaults), the same for updates and rollbacks.
_DEFAULT_MONITOR_NS = 5_000_000_000
_UPDATE_DEFAULTS: dict[str, Any] = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "pause",
    "Monitor": _DEFAULT_MONITOR_NS,
    "MaxFailureRatio": 0.0,
    "Order": "stop-first",
}
_RESTART_DEFAULTS: dict[str, Any] = {
    "Condition": DEFAULT_RESTART_CONDITION,
    "Delay": DEFAULT_RESTART_DELAY_NS,
    "MaxAttempts": 0,
    "Window": 0,
}


class InvalidSpec(ControlError):
    """A spec that cannot be accepted; the message names the field path
    (e.g. 'TaskTemplate.RestartPolicy.Condition'). The API answers 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


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
    if maximum == _INT64_MAX:
        expected = f"an integer >= {minimum}{meaning}"
    else:
        expected = f"an integer from {minimum} to {maximum}{meaning}"
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        _fail(path, f"must be {expected}, got {_shown(value)}")
    return value


def _duration(value: Any, path: str) -> int:
    return _integer(value, path, meaning=" (a duration in nanoseconds; 5 s is 5000000000)")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string, got {_shown(value)}")
    return value


def _non_empty_string(value: Any, path: str, problem: str = "must not be empty") -> str:
    if _string(value, path) == "":
        _fail(path, problem)
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(path, f"must be one of {', '.join(choices)}; got {_shown(value)}")
    return value


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


def _labels(value: Any, path: str) -> None:
    if value is None:
        return
    for key, label in _object(value, path).items():
        if not isinstance(key, str):
            _fail(path, f"a label name must be a string, got {_shown(key)}")
        if not isinstance(label, str):
            _fail(_at(path, key), f"a label value must be a string, got {_shown(label)}")


def _check(parent: dict[str, Any], path: str, key: str, check: Any, *args: Any) -> Any:
    """Run `check(value, path, *args)` on parent[key] if the key is there; return the value or None."""
    if key not in parent:
        return None
    return check(parent[key], _at(path, key), *args)


# -- services ----------------------------------------------------------------------------------------------


def without_nulls(value: Any) -> Any:
    """A deep copy without the object members that are null: Docker's Go decoding reads `"Args": null` as
    no Args, and clients (the docker SDK) send such nulls for every option left unset."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def validate_service_spec(spec: Any) -> dict[str, Any]:
    """Check a ServiceSpec; return it (a deep copy, unknown keys kept as given, nothing defaulted).

    Raises `InvalidSpec` naming the first field at fault."""
    if not isinstance(spec, dict):
        raise InvalidSpec(f"the service spec must be a JSON object, got {_shown(spec)}")
    service = without_nulls(spec)
    _service_name(service)
    _check(service, "", "Labels", _labels)
    template = _object(
        _required(service, "TaskTemplate", "", 'give at least {"ContainerSpec": {"Image": "nginx"}}'), "TaskTemplate"
    )
    _task_template(template, "TaskTemplate")
    if _mode(service) == "global" and (template.get("Placement") or {}).get("MaxReplicas"):
        _fail(
            "TaskTemplate.Placement.MaxReplicas",
            "max replicas per node can only be used with replicated mode; a global service runs one task per node",
        )
    _check(service, "", "UpdateConfig", _update, _UPDATE_FAILURE_ACTIONS)
    _check(service, "", "RollbackConfig", _update, _ROLLBACK_FAILURE_ACTIONS)
    _check(service, "", "Networks", _networks)
    _check(service, "", "EndpointSpec", _endpoint)
    return service


def _service_name(service: dict[str, Any]) -> None:
    name = _string(_required(service, "Name", "", 'name the service, e.g. "web"'), "Name")
    if not name:
        _fail("Name", "a service name must be provided")
    if len(name) > _SERVICE_NAME_MAX:
        _fail("Name", f"must be {_SERVICE_NAME_MAX} characters or fewer (it is a DNS label), got {len(name)}")
    if not _SERVICE_NAME.fullmatch(name):
        _fail(
            "Name",
            f"invalid name {_shown(name)}: it must be valid as a DNS name component, so only [a-zA-Z0-9], '-' and"
            " '_' are allowed, and the first and last characters must be [a-zA-Z0-9]",
        )


def _task_template(template: dict[str, Any], path: str) -> None:
    container = _required(
        template, "ContainerSpec", path, 'raftswarm runs containers: give {"Image": "nginx"} at least'
    )
    _container_spec(_object(container, _at(path, "ContainerSpec")), _at(path, "ContainerSpec"))
    _check(template, path, "Resources", _resources)
    _check(template, path, "RestartPolicy", _restart_policy)
    _check(template, path, "Placement", _placement)
    _check(template, path, "Networks", _networks)
    _check(template, path, "ForceUpdate", _integer)


def _container_spec(container: dict[str, Any], path: str) -> None:
    image = _string(_required(container, "Image", path, "name the image to run, e.g. nginx:1.27"), _at(path, "Image"))
    _image(image, _at(path, "Image"))
    _check(container, path, "Labels", _labels)
    _check(container, path, "Command", _strings)
    _check(container, path, "Args", _strings)
    _check(container, path, "Env", _environment)
    for key in ("Dir", "User", "Hostname"):
        _check(container, path, key, _string)
    _check(container, path, "StopGracePeriod", _duration)
    _check(container, path, "Mounts", _mounts)
    _check(container, path, "Secrets", _secret_references)


def _image(image: str, path: str) -> None:
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
        target = _non_empty_string(
            _required(mount, "Target", mount_path, "give the path inside the container"), _at(mount_path, "Target")
        )
        if target in targets:
            _fail(_at(mount_path, "Target"), f"duplicate mount point: {target}")
        targets.add(target)


def _secret_references(value: Any, path: str) -> None:
    targets: dict[str, str] = {}  # target file name -> the secret that has it, for SwarmKit's message
    for ref_path, ref in _objects(value, path):
        for key in ("SecretID", "SecretName"):
            _non_empty_string(
                _required(ref, key, ref_path, "a secret reference names the secret by SecretID and SecretName"),
                _at(ref_path, key),
                "malformed secret reference: must not be empty",
            )
        file_path = _at(ref_path, "File")
        target = _object(
            _required(ref, "File", ref_path, 'malformed secret reference, no target provided: give {"Name": "file"}'),
            file_path,
        )
        name = _non_empty_string(
            _required(target, "Name", file_path, "name the file the secret appears as"),
            _at(file_path, "Name"),
            "malformed file secret reference, invalid target file name provided",
        )
        _check(target, file_path, "UID", _string)
        _check(target, file_path, "GID", _string)
        _check(target, file_path, "Mode", _integer, 0, _MAX_FILE_MODE, " (file permissions, e.g. 292 for 0o444)")
        if name in targets:
            _fail(
                _at(file_path, "Name"),
                f"secret references '{targets[name]}' and '{ref['SecretName']}' have a conflicting target: '{name}'",
            )
        targets[name] = ref["SecretName"]


def _resources(value: Any, path: str) -> None:
    resources = _object(value, path)
    limits = _check(resources, path, "Limits", _resource_amounts, ("NanoCPUs", "MemoryBytes", "Pids")) or {}
    reservations = _check(resources, path, "Reservations", _resource_amounts, ("NanoCPUs", "MemoryBytes")) or {}
    for key in ("NanoCPUs", "MemoryBytes"):
        limit, reserved = limits.get(key) or 0, reservations.get(key) or 0
        if limit and reserved > limit:  # a limit of 0 is no limit
            _fail(
                _at(_at(path, "Reservations"), key),
                f"the reservation ({reserved}) is larger than the limit ({limit}, {path}.Limits.{key});"
                " a task could never get what it reserves",
            )


def _resource_amounts(value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    amounts = _object(value, path)
    for key in keys:
        amount = _check(amounts, path, key, _integer)
        if key == "NanoCPUs" and amount and amount < _MIN_NANO_CPUS:
            _fail(_at(path, key), f"invalid cpu value {amount / 1e9:g}: must be at least 0.001 CPU (1000000), or 0")
        if key == "MemoryBytes" and amount and amount < _MIN_MEMORY_BYTES:
            _fail(_at(path, key), f"invalid memory value {amount}: must be at least 4MiB ({_MIN_MEMORY_BYTES}), or 0")
    return amounts


def _restart_policy(value: Any, path: str) -> None:
    policy = _object(value, path)
    _check(policy, path, "Condition", _choice, _RESTART_CONDITIONS)
    _check(policy, path, "Delay", _duration)
    _check(policy, path, "Window", _duration)
    _check(policy, path, "MaxAttempts", _integer, 0, _INT64_MAX, " (0 for no limit)")


def _placement(value: Any, path: str) -> None:
    placement = _object(value, path)
    for index, text in enumerate(_check(placement, path, "Constraints", _strings) or ()):
        try:
            parse_constraint(text)
        except InvalidPlacement as exc:
            _fail(_at(_at(path, "Constraints"), index), str(exc))
    if "Preferences" in placement:
        for pref_path, preference in _objects(placement["Preferences"], _at(path, "Preferences")):
            spread = _object(
                _required(preference, "Spread", pref_path, 'only spread preferences exist: {"Spread": {...}}'),
                _at(pref_path, "Spread"),
            )
            _string(
                _required(spread, "SpreadDescriptor", _at(pref_path, "Spread"), 'e.g. "node.labels.zone"'),
                _at(_at(pref_path, "Spread"), "SpreadDescriptor"),
            )
            try:
                _spread_label(preference)  # the scheduler's own rule, so the two cannot disagree
            except InvalidPlacement as exc:
                _fail(_at(_at(pref_path, "Spread"), "SpreadDescriptor"), str(exc))
    _check(placement, path, "MaxReplicas", _integer, 0, _INT64_MAX, " (0 for no limit)")


def _networks(value: Any, path: str) -> None:
    for network_path, network in _objects(value, path):
        _non_empty_string(
            _required(network, "Target", network_path, "name the network (its ID or name)"),
            _at(network_path, "Target"),
        )
        _check(network, network_path, "Aliases", _strings)


def _mode(service: dict[str, Any]) -> str:
    """The service's mode, "replicated" or "global"; no Mode, or an empty one, means one replica as in Docker."""
    if "Mode" not in service:
        return "replicated"
    mode = _object(service["Mode"], "Mode")
    # Go's JSON decoding matches field names case-insensitively, and the docker SDK sends "replicated".
    known = {name.lower(): name for name in ("Replicated", "Global", "ReplicatedJob", "GlobalJob")}
    mode = service["Mode"] = {known.get(key.lower(), key): value for key, value in mode.items()}
    for job in ("ReplicatedJob", "GlobalJob"):
        if job in mode:
            _fail(_at("Mode", job), "job services are not supported by raftswarm; use Replicated or Global")
    if "Replicated" in mode and "Global" in mode:
        _fail("Mode", "give one of Replicated or Global, not both")
    if "Global" in mode:
        _object(mode["Global"], "Mode.Global")
        return "global"
    if "Replicated" in mode:
        replicated = _object(mode["Replicated"], "Mode.Replicated")
        _check(replicated, "Mode.Replicated", "Replicas", _integer, 0, _INT64_MAX, " (leave it out for 1)")
    return "replicated"


def _update(value: Any, path: str, failure_actions: tuple[str, ...]) -> None:
    config = _object(value, path)
    _check(config, path, "Parallelism", _integer, 0, _INT64_MAX, " (0 updates all tasks at once)")
    _check(config, path, "Delay", _duration)
    _check(config, path, "FailureAction", _choice, failure_actions)
    _check(config, path, "Monitor", _duration)
    if "MaxFailureRatio" in config:
        ratio = config["MaxFailureRatio"]
        number = isinstance(ratio, int | float) and not isinstance(ratio, bool)
        if not number or not math.isfinite(ratio) or not 0 <= ratio <= 1:
            _fail(_at(path, "MaxFailureRatio"), f"must be a number from 0 to 1, got {_shown(ratio)}")
    _check(config, path, "Order", _choice, _UPDATE_ORDERS)


def _endpoint(value: Any, path: str) -> None:
    endpoint = _object(value, path)
    resolution = _check(endpoint, path, "Mode", _choice, _RESOLUTION_MODES) or "vip"
    published: set[tuple[int, str]] = set()
    for port_path, port in _objects(endpoint.get("Ports", []), _at(path, "Ports")):
        _check(port, port_path, "Name", _string)
        protocol = _check(port, port_path, "Protocol", _choice, _PROTOCOLS) or "tcp"
        _integer(
            _required(port, "TargetPort", port_path, "give the container's port"),
            _at(port_path, "TargetPort"),
            1,
            _PORT_MAX,
        )
        number = _check(port, port_path, "PublishedPort", _integer, 0, _PORT_MAX, " (0 picks a free port)") or 0
        publish_mode = _check(port, port_path, "PublishMode", _choice, _PUBLISH_MODES) or "ingress"
        # The routing mesh balances over a virtual IP; with dnsrr there is none to balance from.
        if resolution == "dnsrr" and publish_mode == "ingress":
            _fail(
                _at(port_path, "PublishMode"),
                "port published with ingress mode can't be used with dnsrr mode; publish it in host mode"
                ' ("PublishMode": "host") or use the vip endpoint mode',
            )
        if number:  # dynamic ports (0) never conflict
            if (number, protocol) in published:
                _fail(_at(port_path, "PublishedPort"), f"duplicate published ports provided: {number}/{protocol}")
            published.add((number, protocol))


# -- effective values --------------------------------------------------------------------------------------


def update_config(spec: dict[str, Any], rollback: bool = False) -> dict[str, Any]:
    """The effective UpdateConfig (or RollbackConfig when rollback=True) of a validated spec, with Docker's
    defaults filled in: Parallelism 1, Delay 0, FailureAction "pause" (rollback: "pause"), Monitor 5 s
    (5_000_000_000 ns), MaxFailureRatio 0.0, Order "stop-first".

    Given values win, except a Monitor of 0: Docker cannot express "no monitoring" and reads 0 as the default.
    """
    given = spec.get("RollbackConfig" if rollback else "UpdateConfig") or {}
    effective = {**_UPDATE_DEFAULTS, **given}
    if not effective["Monitor"]:
        effective["Monitor"] = _DEFAULT_MONITOR_NS
    return effective


def restart_policy(spec: dict[str, Any]) -> dict[str, Any]:
    """Effective TaskTemplate.RestartPolicy of a validated spec: Condition "any", Delay 5 s in ns, MaxAttempts 0
    (unlimited), Window 0 -- given values win."""
    given = (spec.get("TaskTemplate") or {}).get("RestartPolicy") or {}
    return {**_RESTART_DEFAULTS, **given}


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
    name = _string(_required(secret, "Name", "", 'name the secret, e.g. "db_password"'), "Name")
    if not name:
        _fail("Name", "name must be provided")
    if len(name) > _SECRET_NAME_MAX or not _SECRET_NAME.fullmatch(name):
        _fail(
            "Name",
            f"invalid name {_shown(name)}, only {_SECRET_NAME_MAX} [a-zA-Z0-9-_.] characters allowed,"
            " and the start and end character must be [a-zA-Z0-9]",
        )
    _check(secret, "", "Labels", _labels)
    if "Driver" in secret:
        _fail("Driver", "secret drivers are not supported by raftswarm; leave Driver out to keep the data in the swarm")
    if "Templating" in secret:
        templating = _object(secret["Templating"], "Templating")
        _non_empty_string(_required(templating, "Name", "Templating", 'e.g. "golang"'), "Templating.Name")
        _check(templating, "Templating", "Options", _labels)
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
