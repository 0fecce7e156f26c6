"""`python -m bench objects`: which library should model Docker's objects, measured on the paths that matter.

Today services, tasks and nodes are plain dicts in Docker's JSON shapes: the store keeps them in msgpack
snapshots, the API checks a new spec with `validate_service_spec` and answers GET /tasks with `json.dumps`.
Typed objects would give the control loops attributes instead of `.get("Spec") or {}`, validation at the
edge and Docker's defaults in one place, but not if they make a snapshot restore or a `service create`
much slower. So each candidate decodes and encodes the same data, on the same machine, in the same run:

- `dict`: today's baseline. msgpack and json to dicts, no validation, except in `service_create`, which runs
  the project's own `validate_service_spec` as the API does.
- `msgspec`: Structs; msgpack and JSON are decoded straight into them, validating types as it goes.
- `pydantic`: v2 models in strict mode (as Go reads JSON: no "5" for 5, no true for 1); msgpack is unpacked
  by the msgpack library and then validated.
- `attrs+cattrs`: attrs classes with validators for the ranges and patterns, (un)structured by cattrs.

Each library builds its classes from one schema (`DockerType` below: Docker's field names and defaults,
moby api/swagger.yaml), so every candidate decodes exactly the same fields. How the schema reads:

- no default: required;
- `None`: may be absent, and is then left out when encoding (Go's `omitempty`);
- `Filled(...)`, on a field whose type is a `DockerType`: that object built from the given fields, so its
  own defaults fill in the rest (`RestartPolicy: RestartPolicy = Filled()` is Docker's restart policy);
- any other value: Docker's default, filled in when the field is absent and always encoded.

Scenarios, each timed `--repeats` times with time.perf_counter after one untimed run (p50 and min, in ms),
every library in turn within a repeat so that load from elsewhere on the machine falls on all of them alike:

- snapshot_decode: a store snapshot (`ClusterState.snapshot`'s format: [version, {kind: {ID: [version,
  created, object]}}]) of `--tasks` tasks, `--services` services and `--nodes` nodes, from msgpack bytes;
- snapshot_encode: the same objects back to msgpack;
- service_create: one `POST /services/create` body, JSON bytes to a checked ServiceSpec with Docker's
  defaults filled in, encoded as msgpack for the store; the mean over `--requests` requests per repeat;
- api_json: every object of the snapshot through JSON as the API shows it (with Version.Index, as GET
  /tasks, /services and /nodes do) and back into objects, as a client reads it.

Prints one JSON line per library and scenario (bench, library, scenario, p50_ms, min_ms, ratio_to_dict,
repeats) and a summary line; a human table on stderr unless `--json-only`. A library that is not installed
is reported on stderr and in the summary's `missing`, and the others are still measured.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import operator
import os
import statistics
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce
from typing import Annotated, Any, Literal, Union

import msgpack

SCENARIOS = ("snapshot_decode", "snapshot_encode", "service_create", "api_json")
LIBRARIES = ("msgspec", "pydantic", "attrs+cattrs")
BASELINE = "dict"
INSTALL = {"msgspec": "msgspec", "pydantic": "pydantic", "attrs+cattrs": "attrs cattrs"}
DISTRIBUTIONS = {"msgspec": ("msgspec",), "pydantic": ("pydantic",), "attrs+cattrs": ("attrs", "cattrs")}

VALIDATION_MODULES = ("raftswarm.objects", "raftswarm.objects.specs", "raftswarm.manager.specs")
"""Where the project's `validate_service_spec` may live: the object model is moving to `raftswarm.objects`."""

# Docker's defaults (`docker service create --help`, SwarmKit api/defaults), as raftswarm.objects.defaults.
NANOSECONDS = 1_000_000_000
DEFAULT_RESTART_DELAY_NS = 5 * NANOSECONDS
DEFAULT_MONITOR_NS = 5 * NANOSECONDS
MAX_REPLICAS = 100_000  # raftswarm's bound on one service's replicas


# -- the schema: Docker's types, once, for every library -----------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Bounds on a field's value, which each library states its own way."""

    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if value is not None}


# Anchored for libraries that search rather than match; SwarmKit's isValidDNSName.
SERVICE_NAME_PATTERN = r"^[a-zA-Z0-9](?:[a-zA-Z0-9_-]*[a-zA-Z0-9])?$"

Nanoseconds = Annotated[int, Limits(ge=0)]  # Docker's durations: int64 nanoseconds
Count = Annotated[int, Limits(ge=0)]
NonEmpty = Annotated[str, Limits(min_length=1)]
ServiceName = Annotated[str, Limits(min_length=1, max_length=63, pattern=SERVICE_NAME_PATTERN)]
PortNumber = Annotated[int, Limits(ge=1, le=65535)]
PublishedPortNumber = Annotated[int, Limits(ge=0, le=65535)]  # 0 picks a free port
FileMode = Annotated[int, Limits(ge=0, le=0o777)]
Ratio = Annotated[float, Limits(ge=0, le=1)]
ReplicaCount = Annotated[int, Limits(ge=0, le=MAX_REPLICAS)]
StringMap = dict[str, str]

TaskState = Literal[
    "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
    "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
]
RestartCondition = Literal["none", "on-failure", "any"]
UpdateFailureAction = Literal["pause", "continue", "rollback"]
RollbackFailureAction = Literal["pause", "continue"]
UpdateOrder = Literal["stop-first", "start-first"]
MountType = Literal["bind", "volume", "tmpfs", "npipe", "cluster", "image"]
Isolation = Literal["default", "process", "hyperv", ""]
Protocol = Literal["tcp", "udp", "sctp"]
PublishMode = Literal["ingress", "host"]
ResolutionMode = Literal["vip", "dnsrr"]
NodeRole = Literal["worker", "manager"]
Availability = Literal["active", "pause", "drain"]
NodeState = Literal["unknown", "down", "ready", "disconnected"]
Reachability = Literal["unknown", "unreachable", "reachable"]


class Filled:
    """As a field's default: the field's object built from `given`, its own defaults filling in the rest."""

    def __init__(self, **given: Any) -> None:
        self.given = given


class DockerType:
    """A Docker type as a plain annotated class; each library builds its own class from it. Subclasses are
    registered in definition order, which puts every type after the types its fields use."""

    registry: typing.ClassVar[list[type[DockerType]]] = []

    def __init_subclass__(cls) -> None:
        DockerType.registry.append(cls)


class ObjectVersion(DockerType):
    Index: int


class Driver(DockerType):
    Name: str
    Options: StringMap | None = None


class Mount(DockerType):
    Type: MountType | None = None
    Source: str | None = None
    Target: NonEmpty
    ReadOnly: bool | None = None


class SecretFile(DockerType):
    Name: NonEmpty
    UID: str | None = None
    GID: str | None = None
    Mode: FileMode | None = None


class SecretReference(DockerType):
    File: SecretFile
    SecretID: NonEmpty
    SecretName: NonEmpty


class Healthcheck(DockerType):
    Test: list[str] | None = None
    Interval: Nanoseconds | None = None
    Timeout: Nanoseconds | None = None
    StartPeriod: Nanoseconds | None = None
    Retries: Count | None = None


class ContainerSpec(DockerType):
    Image: NonEmpty
    Labels: StringMap | None = None
    Command: list[str] | None = None
    Args: list[str] | None = None
    Hostname: str | None = None
    Env: list[str] | None = None
    Dir: str | None = None
    User: str | None = None
    Mounts: list[Mount] | None = None
    StopGracePeriod: Nanoseconds | None = None
    Healthcheck: Healthcheck | None = None
    Secrets: list[SecretReference] | None = None
    Isolation: Isolation | None = None


class Resources(DockerType):
    NanoCPUs: Count | None = None
    MemoryBytes: Count | None = None


class ResourceRequirements(DockerType):
    Limits: Resources | None = None
    Reservations: Resources | None = None


class RestartPolicy(DockerType):
    Condition: RestartCondition = "any"
    Delay: Nanoseconds = DEFAULT_RESTART_DELAY_NS
    MaxAttempts: Count = 0  # unlimited
    Window: Nanoseconds = 0


class Platform(DockerType):
    Architecture: str | None = None
    OS: str | None = None


class SpreadOver(DockerType):
    SpreadDescriptor: NonEmpty


class PlacementPreference(DockerType):
    Spread: SpreadOver


class Placement(DockerType):
    Constraints: list[str] | None = None
    Preferences: list[PlacementPreference] | None = None
    MaxReplicas: Count | None = None
    Platforms: list[Platform] | None = None


class NetworkAttachmentConfig(DockerType):
    Target: NonEmpty
    Aliases: list[str] | None = None


class TaskSpec(DockerType):
    ContainerSpec: ContainerSpec
    Resources: ResourceRequirements | None = None
    RestartPolicy: RestartPolicy = Filled()
    Placement: Placement | None = None
    Networks: list[NetworkAttachmentConfig] | None = None
    LogDriver: Driver | None = None
    ForceUpdate: Count | None = None
    Runtime: str | None = None


class ReplicatedService(DockerType):
    Replicas: ReplicaCount = 1


class GlobalService(DockerType):
    pass


class ServiceMode(DockerType):
    Replicated: ReplicatedService | None = None
    Global: GlobalService | None = None


class UpdateConfig(DockerType):
    Parallelism: Count = 1
    Delay: Nanoseconds = 0
    FailureAction: UpdateFailureAction = "pause"
    Monitor: Nanoseconds = DEFAULT_MONITOR_NS
    MaxFailureRatio: Ratio = 0.0
    Order: UpdateOrder = "stop-first"


class RollbackConfig(DockerType):
    Parallelism: Count = 1
    Delay: Nanoseconds = 0
    FailureAction: RollbackFailureAction = "pause"
    Monitor: Nanoseconds = DEFAULT_MONITOR_NS
    MaxFailureRatio: Ratio = 0.0
    Order: UpdateOrder = "stop-first"


class PortConfig(DockerType):
    Name: str | None = None
    Protocol: Protocol = "tcp"
    TargetPort: PortNumber
    PublishedPort: PublishedPortNumber | None = None
    PublishMode: PublishMode = "ingress"


class EndpointSpec(DockerType):
    Mode: ResolutionMode = "vip"
    Ports: list[PortConfig] | None = None


class ServiceSpec(DockerType):
    Name: ServiceName
    Labels: StringMap | None = None
    TaskTemplate: TaskSpec
    Mode: ServiceMode = Filled(Replicated={})  # one replica, as Docker runs a service without a mode
    UpdateConfig: UpdateConfig = Filled()
    RollbackConfig: RollbackConfig = Filled()
    Networks: list[NetworkAttachmentConfig] | None = None
    EndpointSpec: EndpointSpec | None = None


class VirtualIP(DockerType):
    NetworkID: str
    Addr: str


class Endpoint(DockerType):
    Spec: EndpointSpec
    Ports: list[PortConfig] | None = None
    VirtualIPs: list[VirtualIP] | None = None


class Service(DockerType):
    ID: str
    Version: ObjectVersion | None = None  # the store's version; only the API's view carries it
    CreatedAt: str
    UpdatedAt: str
    Spec: ServiceSpec
    PreviousSpec: ServiceSpec | None = None
    Endpoint: Endpoint | None = None


class Annotations(DockerType):
    Name: str
    Labels: StringMap | None = None


class ContainerStatus(DockerType):
    ContainerID: str | None = None
    PID: int | None = None
    ExitCode: int | None = None


class TaskStatus(DockerType):
    Timestamp: str
    State: TaskState
    Message: str | None = None
    Err: str | None = None
    ContainerStatus: ContainerStatus | None = None


class IPAMConfig(DockerType):
    Subnet: str
    Gateway: str | None = None


class IPAMOptions(DockerType):
    Driver: Driver
    Configs: list[IPAMConfig] | None = None


class NetworkSpec(DockerType):
    Name: str
    Labels: StringMap | None = None
    DriverConfiguration: Driver | None = None
    Ingress: bool | None = None
    Attachable: bool | None = None
    Scope: str | None = None


class Network(DockerType):
    ID: str
    CreatedAt: str | None = None
    UpdatedAt: str | None = None
    Spec: NetworkSpec
    DriverState: Driver | None = None
    IPAMOptions: IPAMOptions | None = None


class NetworkAttachment(DockerType):
    Network: Network
    Addresses: list[str] | None = None


class Task(DockerType):
    ID: str
    Version: ObjectVersion | None = None
    CreatedAt: str | None = None
    UpdatedAt: str | None = None
    Labels: StringMap | None = None
    Spec: TaskSpec
    ServiceID: str
    ServiceAnnotations: Annotations | None = None
    Slot: int | None = None
    NodeID: str | None = None
    Status: TaskStatus
    DesiredState: TaskState
    NetworksAttachments: list[NetworkAttachment] | None = None


class NodeSpec(DockerType):
    Name: str | None = None
    Labels: StringMap | None = None
    Role: NodeRole
    Availability: Availability


class EngineDescription(DockerType):
    EngineVersion: str | None = None


class NodeDescription(DockerType):
    Hostname: str
    Platform: Platform
    Resources: Resources
    Engine: EngineDescription | None = None


class NodeStatus(DockerType):
    State: NodeState
    Message: str | None = None
    Addr: str | None = None


class ManagerStatus(DockerType):
    Leader: bool | None = None
    Reachability: Reachability
    Addr: str
    RaftID: int | None = None  # raftswarm's, not Docker's


class Node(DockerType):
    ID: str
    Version: ObjectVersion | None = None
    CreatedAt: str
    UpdatedAt: str
    Spec: NodeSpec
    Description: NodeDescription
    Status: NodeStatus
    ManagerStatus: ManagerStatus | None = None


KINDS: dict[str, type[DockerType]] = {"nodes": Node, "services": Service, "tasks": Task}
"""The store's collections in the snapshot, and the type of their objects. A real snapshot holds more kinds
(networks, secrets, the cluster, name indexes); a typed snapshot has to model or carry every one of them."""

REQUIRED = object()


def schema_fields(schema: type[DockerType]) -> list[tuple[str, Any, Any]]:
    """(name, type, default) of each field in declaration order; the default is REQUIRED when none is given."""
    # Resolved against the module alone: a field named as its type (`RestartPolicy: RestartPolicy = Filled()`)
    # would otherwise find its own default.
    hints = typing.get_type_hints(schema, globalns=globals(), localns=globals(), include_extras=True)
    names = inspect.get_annotations(schema)  # this class's own, in declaration order
    return [(name, hints[name], schema.__dict__.get(name, REQUIRED)) for name in names]


def without_none(annotation: Any) -> Any:
    """`T` of `T | None`."""
    kept = tuple(member for member in typing.get_args(annotation) if member is not type(None))
    return reduce(operator.or_, kept)


def limits_of(annotation: Any) -> Limits | None:
    if typing.get_origin(annotation) is Annotated:
        return next((extra for extra in annotation.__metadata__ if isinstance(extra, Limits)), None)
    return None


def library_type(annotation: Any, built: dict[type, type], bounded: Callable[[Any, Limits], Any]) -> Any:
    """`annotation` with each DockerType replaced by the library's class (`built`) and each `Limits` by
    what `bounded(base_type, limits)` makes of it."""
    if isinstance(annotation, type) and issubclass(annotation, DockerType):
        return built[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return bounded(library_type(args[0], built, bounded), limits_of(annotation))
    if origin in (Union, types.UnionType):
        return reduce(operator.or_, (library_type(arg, built, bounded) for arg in args))
    if origin in (list, dict, tuple):
        return origin[tuple(library_type(arg, built, bounded) for arg in args)]
    return annotation  # str, int, float, bool, Literal[...]


# -- the candidates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One way of holding Docker's objects: what the scenarios time, and what the tests check it with."""

    library: str
    decode_snapshot: Callable[[bytes], Any]
    """msgpack snapshot -> (version, collections): `collections.tasks` etc. (dict: `collections["tasks"]`)
    map an object ID to (version, created, object)."""
    encode_snapshot: Callable[[Any], bytes]
    create_service: Callable[[bytes], bytes]
    """A service create request's JSON body -> the checked spec as msgpack for the store."""
    api_round_trip: Callable[[Any], dict[str, list[Any]]]
    """A decoded snapshot -> for each kind, its objects as the API shows them, through JSON and back."""
    to_builtins: Callable[[Any], Any]
    invalid_spec: type[Exception]
    """What `create_service` raises for a spec that breaks Docker's types."""


class NotInstalled(Exception):
    """A candidate's library cannot be imported; the message says what to install."""


def build(library: str) -> Candidate:
    """The candidate for `library` (BASELINE or one of LIBRARIES); NotInstalled if its library is missing."""
    builders = {BASELINE: dict_candidate, "msgspec": msgspec_candidate, "pydantic": pydantic_candidate,
                "attrs+cattrs": attrs_candidate}
    try:
        return builders[library]()
    except ImportError as exc:
        raise NotInstalled(f"{library} is not installed ({exc}): pip install {INSTALL[library]}") from None


def project_validation() -> tuple[Callable[[Any], dict[str, Any]], type[Exception]] | None:
    """The project's `validate_service_spec` and the error it raises, or None if no module has it."""
    for module_name in VALIDATION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        validate = getattr(module, "validate_service_spec", None)
        if validate is not None:
            return validate, module.InvalidSpec
    return None


def dict_candidate() -> Candidate:
    """Today's dicts. Should the project's validation not be found, service_create measures json.loads and
    msgpack alone (the summary's `dict_validation` says so) rather than no baseline at all."""
    validate, invalid_spec = project_validation() or (lambda spec: spec, ValueError)

    def decode_snapshot(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False)

    def encode_snapshot(snapshot: Any) -> bytes:
        return msgpack.packb(snapshot, use_bin_type=True)

    def create_service(body: bytes) -> bytes:
        return msgpack.packb(validate(json.loads(body)), use_bin_type=True)

    def api_round_trip(snapshot: Any) -> dict[str, list[Any]]:
        _, collections = snapshot
        shown = {}
        for kind in KINDS:
            # api_view: a shallow copy with Version.Index (it also drops "_" keys, which these kinds lack)
            views = [{**data, "Version": {"Index": version}} for version, _, data in collections[kind].values()]
            shown[kind] = json.loads(json.dumps(views))
        return shown

    return Candidate(
        BASELINE, decode_snapshot, encode_snapshot, create_service, api_round_trip, lambda x: x, invalid_spec
    )


def msgspec_candidate() -> Candidate:
    import msgspec

    structs: dict[type, type] = {}

    def bounded(base: Any, limits: Limits) -> Any:
        return Annotated[base, msgspec.Meta(**limits.given())]

    for schema in DockerType.registry:
        fields: list[tuple[Any, ...]] = []
        for name, annotation, default in schema_fields(schema):
            if default is None:  # UNSET is never encoded: absent stays absent
                inner = library_type(without_none(annotation), structs, bounded)
                fields.append((name, inner | msgspec.UnsetType, msgspec.UNSET))
                continue
            field_type = library_type(annotation, structs, bounded)
            if default is REQUIRED:
                fields.append((name, field_type))
            elif isinstance(default, Filled):
                factory = partial(msgspec.convert, default.given, field_type)
                fields.append((name, field_type, msgspec.field(default_factory=factory)))
            else:
                fields.append((name, field_type, default))
        structs[schema] = msgspec.defstruct(schema.__name__, fields, kw_only=True, module=__name__)

    collections = msgspec.defstruct(
        "StoreCollections", [(kind, dict[str, tuple[int, int, structs[t]]]) for kind, t in KINDS.items()]
    )
    snapshot_decoder = msgspec.msgpack.Decoder(tuple[int, collections])
    msgpack_encoder = msgspec.msgpack.Encoder()
    spec_decoder = msgspec.json.Decoder(structs[ServiceSpec])
    json_encoder = msgspec.json.Encoder()
    view_decoders = {kind: msgspec.json.Decoder(list[structs[t]]) for kind, t in KINDS.items()}
    version = structs[ObjectVersion]

    def create_service(body: bytes) -> bytes:
        return msgpack_encoder.encode(spec_decoder.decode(body))

    def api_round_trip(snapshot: Any) -> dict[str, list[Any]]:
        _, stored = snapshot
        shown = {}
        for kind, decoder in view_decoders.items():
            views = [msgspec.structs.replace(o, Version=version(Index=v)) for v, _, o in getattr(stored, kind).values()]
            shown[kind] = decoder.decode(json_encoder.encode(views))
        return shown

    return Candidate(
        "msgspec", snapshot_decoder.decode, msgpack_encoder.encode, create_service, api_round_trip,
        msgspec.to_builtins, msgspec.ValidationError,
    )


def pydantic_candidate() -> Candidate:
    import pydantic
    import pydantic_core

    models: dict[type, type] = {}
    strict = pydantic.ConfigDict(strict=True)  # as Go decodes JSON: a string is no int, true is no 1

    def bounded(base: Any, limits: Limits) -> Any:
        return Annotated[base, pydantic.Field(**limits.given())]

    for schema in DockerType.registry:
        fields: dict[str, Any] = {}
        for name, annotation, default in schema_fields(schema):
            field_type = library_type(annotation, models, bounded)
            if default is REQUIRED:
                fields[name] = (field_type, ...)
            elif isinstance(default, Filled):
                factory = partial(models[annotation].model_validate, default.given)
                fields[name] = (field_type, pydantic.Field(default_factory=factory))
            else:
                fields[name] = (field_type, default)
        models[schema] = pydantic.create_model(schema.__name__, __config__=strict, __module__=__name__, **fields)

    # Not strict: the store's own wrapping is msgpack arrays, which strict mode would not take for tuples.
    collections = pydantic.create_model(
        "StoreCollections", __module__=__name__,
        **{kind: (dict[str, tuple[int, int, models[t]]], ...) for kind, t in KINDS.items()},
    )
    snapshot = pydantic.TypeAdapter(tuple[int, collections])
    spec = models[ServiceSpec]
    view_lists = {kind: pydantic.TypeAdapter(list[models[t]]) for kind, t in KINDS.items()}
    version = models[ObjectVersion]

    def decode_snapshot(data: bytes) -> Any:
        return snapshot.validate_python(msgpack.unpackb(data, raw=False))

    def encode_snapshot(decoded: Any) -> bytes:
        return msgpack.packb(snapshot.dump_python(decoded, exclude_none=True), use_bin_type=True)

    def create_service(body: bytes) -> bytes:
        return msgpack.packb(spec.model_validate_json(body).model_dump(exclude_none=True), use_bin_type=True)

    def api_round_trip(decoded: Any) -> dict[str, list[Any]]:
        _, stored = decoded
        shown = {}
        for kind, adapter in view_lists.items():
            views = [o.model_copy(update={"Version": version(Index=v)}) for v, _, o in getattr(stored, kind).values()]
            shown[kind] = adapter.validate_json(adapter.dump_json(views, exclude_none=True))
        return shown

    return Candidate(
        "pydantic", decode_snapshot, encode_snapshot, create_service, api_round_trip,
        partial(pydantic_core.to_jsonable_python, exclude_none=True), pydantic.ValidationError,
    )


def attrs_candidate() -> Candidate:
    import attrs
    import cattrs
    from cattrs.gen import make_dict_unstructure_fn, override

    converter = cattrs.Converter()
    classes: dict[type, type] = {}

    def unbounded(base: Any, _: Limits) -> Any:
        return base  # attrs checks bounds with validators, below; cattrs checks Literal values itself

    for schema in DockerType.registry:
        attributes: dict[str, Any] = {}
        for name, annotation, default in schema_fields(schema):
            field_type = library_type(annotation, classes, unbounded)
            limits = limits_of(without_none(annotation) if default is None else annotation)
            validator = attrs_validator(limits) if limits else None
            if default is REQUIRED:
                attributes[name] = attrs.field(type=field_type, validator=validator)
            elif default is None:
                attributes[name] = attrs.field(
                    type=field_type, default=None, validator=attrs.validators.optional(validator) if validator else None
                )
            elif isinstance(default, Filled):
                factory = partial(converter.structure, default.given, classes[annotation])
                attributes[name] = attrs.field(type=field_type, factory=factory, validator=validator)
            else:
                attributes[name] = attrs.field(type=field_type, default=default, validator=validator)
        classes[schema] = attrs.make_class(schema.__name__, attributes, kw_only=True, slots=True)

    def omitting_absent(cls: type) -> Callable[[Any], dict[str, Any]]:
        absent_when_none = {a.name: override(omit_if_default=True) for a in attrs.fields(cls) if a.default is None}
        return make_dict_unstructure_fn(cls, converter, **absent_when_none)

    converter.register_unstructure_hook_factory(attrs.has, omitting_absent)
    collections = attrs.make_class(
        "StoreCollections",
        {kind: attrs.field(type=dict[str, tuple[int, int, classes[t]]]) for kind, t in KINDS.items()},
    )
    snapshot_type = tuple[int, collections]
    spec = classes[ServiceSpec]
    view_lists = {kind: list[classes[t]] for kind, t in KINDS.items()}
    version = classes[ObjectVersion]

    def decode_snapshot(data: bytes) -> Any:
        return converter.structure(msgpack.unpackb(data, raw=False), snapshot_type)

    def encode_snapshot(decoded: Any) -> bytes:
        return msgpack.packb(converter.unstructure(decoded, unstructure_as=snapshot_type), use_bin_type=True)

    def create_service(body: bytes) -> bytes:
        return msgpack.packb(converter.unstructure(converter.structure(json.loads(body), spec)), use_bin_type=True)

    def api_round_trip(decoded: Any) -> dict[str, list[Any]]:
        _, stored = decoded
        shown = {}
        for kind, list_type in view_lists.items():
            views = [attrs.evolve(o, Version=version(Index=v)) for v, _, o in getattr(stored, kind).values()]
            body = json.dumps(converter.unstructure(views, unstructure_as=list_type))
            shown[kind] = converter.structure(json.loads(body), list_type)
        return shown

    return Candidate(
        "attrs+cattrs", decode_snapshot, encode_snapshot, create_service, api_round_trip,
        converter.unstructure, cattrs.BaseValidationError,
    )


def attrs_validator(limits: Limits) -> Callable[..., Any]:
    import attrs

    checks = []
    if limits.ge is not None:
        checks.append(attrs.validators.ge(limits.ge))
    if limits.le is not None:
        checks.append(attrs.validators.le(limits.le))
    if limits.min_length is not None:
        checks.append(attrs.validators.min_len(limits.min_length))
    if limits.max_length is not None:
        checks.append(attrs.validators.max_len(limits.max_length))
    if limits.pattern is not None:
        checks.append(attrs.validators.matches_re(limits.pattern))
    return attrs.validators.and_(*checks)


# -- the data: a swarm's store, as raftswarm writes it ------------------------------------------------

STACK = "shop"
SERVICE_ROLES = ("web", "api", "worker", "cart", "search", "auth", "mail", "cache", "billing", "images")
BASE_TIME = 1_717_000_000  # seconds since the epoch; timestamps count up from it


def object_id(kind: str, index: int) -> str:
    """A stable ID in Docker's format (25 lowercase characters), so every run measures the same bytes."""
    return hashlib.sha256(f"{kind}/{index}".encode()).hexdigest()[:25]


def timestamp(offset: float) -> str:
    """RFC 3339 with microseconds, as raftswarm writes `Status.Timestamp`."""
    seconds = BASE_TIME + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"


def overlay_network() -> dict[str, Any]:
    return {
        "ID": object_id("network", 0),
        "CreatedAt": timestamp(0),
        "UpdatedAt": timestamp(0),
        "Spec": {
            "Name": f"{STACK}_default",
            "Labels": {"com.docker.stack.namespace": STACK},
            "DriverConfiguration": {"Name": "overlay"},
            "Attachable": False,
            "Scope": "swarm",
        },
        "DriverState": {"Name": "overlay", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"}},
        "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
    }


def service_spec(index: int, network_id: str, replicas: int = 3) -> dict[str, Any]:
    """A ServiceSpec as `docker stack deploy` sends it: Docker's defaults written out, as the CLI does."""
    role = SERVICE_ROLES[index % len(SERVICE_ROLES)]
    name = f"{STACK}_{role}{index // len(SERVICE_ROLES) or ''}"
    digest = hashlib.sha256(name.encode()).hexdigest()
    container: dict[str, Any] = {
        "Image": f"registry.example.com:5000/{STACK}/{role}:1.{index}.0@sha256:{digest}",
        "Labels": {"com.docker.stack.namespace": STACK},
        "Args": ["--listen", ":8080", "--log-level", "info"],
        "Env": [f"SERVICE={role}", "DB_HOST=db.internal", "CACHE_TTL=300", "FEATURES=search,cart,recommendations"],
        "Mounts": [
            {"Type": "volume", "Source": f"{name}_data", "Target": "/var/lib/app"},
            {"Type": "bind", "Source": "/etc/localtime", "Target": "/etc/localtime", "ReadOnly": True},
        ],
        "StopGracePeriod": 10 * NANOSECONDS,
        "Healthcheck": {
            "Test": ["CMD", "wget", "-qO-", "http://localhost:8080/health"],
            "Interval": 10 * NANOSECONDS,
            "Timeout": 3 * NANOSECONDS,
            "StartPeriod": 15 * NANOSECONDS,
            "Retries": 3,
        },
        "Secrets": [
            {
                "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o444},
                "SecretID": object_id("secret", 0),
                "SecretName": f"{STACK}_db_password",
            }
        ],
        "Isolation": "default",
    }
    placement: dict[str, Any] = {
        "Constraints": ["node.role==worker"],
        "Platforms": [{"Architecture": "amd64", "OS": "linux"}],
    }
    if index % 2:
        placement["Preferences"] = [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    update = {"Parallelism": 2, "Delay": 10 * NANOSECONDS, "FailureAction": "rollback", "Monitor": 5 * NANOSECONDS,
              "MaxFailureRatio": 0.0, "Order": "start-first"}
    rollback = {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * NANOSECONDS,
                "MaxFailureRatio": 0.0, "Order": "stop-first"}
    return {
        "Name": name,
        "Labels": {"com.docker.stack.namespace": STACK, "com.docker.stack.image": container["Image"]},
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 256 * 1024 * 1024},
                "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 128 * 1024 * 1024},
            },
            "RestartPolicy": {"Condition": "any", "Delay": DEFAULT_RESTART_DELAY_NS, "MaxAttempts": 0, "Window": 0},
            "Placement": placement,
            "Networks": [{"Target": network_id, "Aliases": [role]}],
            "ForceUpdate": 0,
            "Runtime": "container",
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": update,
        "RollbackConfig": rollback,
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 30000 + index, "PublishMode": "ingress"}
            ],
        },
    }


def service_object(index: int, network: dict[str, Any], replicas: int) -> dict[str, Any]:
    spec = service_spec(index, network["ID"], replicas)
    service = {
        "ID": object_id("service", index),
        "CreatedAt": timestamp(index),
        "UpdatedAt": timestamp(index + 3600),
        "Spec": spec,
        "Endpoint": {
            "Spec": spec["EndpointSpec"],
            "Ports": spec["EndpointSpec"]["Ports"],
            "VirtualIPs": [
                {"NetworkID": object_id("network", 1), "Addr": f"10.0.0.{index + 2}/24"},  # the ingress network
                {"NetworkID": network["ID"], "Addr": f"10.0.1.{index + 2}/24"},
            ],
        },
    }
    if index % 2:  # updated once: the spec it was updated from
        previous = service_spec(index, network["ID"], replicas)
        previous["TaskTemplate"]["ContainerSpec"]["Image"] = previous["TaskTemplate"]["ContainerSpec"]["Image"].replace(
            f":1.{index}.0@", f":1.{index}.0-rc1@"
        )
        service["PreviousSpec"] = previous
    return service


def task_object(
    index: int, service: dict[str, Any], slot: int, node_id: str, network: dict[str, Any]
) -> dict[str, Any]:
    """A task as the orchestrator, scheduler, allocator and agents leave it: of every 20, one pending, one
    failed, two shut down and the rest running."""
    spec = service["Spec"]
    phase = index % 20
    status: dict[str, Any] = {"Timestamp": timestamp(index * 0.25), "State": "running", "Message": "started"}
    desired = "running"
    if phase == 0:
        status.update(State="pending", Message="pending task scheduling", Err="no suitable node (1 node not available)")
    else:
        exit_code = 1 if phase == 1 else 0
        container_id = hashlib.sha256(b"%d" % index).hexdigest()
        status["ContainerStatus"] = {"ContainerID": container_id, "PID": 4000 + index, "ExitCode": exit_code}
        if phase == 1:
            status.update(State="failed", Err="task: non-zero exit (1)")
            desired = "shutdown"
        elif phase in (2, 3):
            status.update(State="shutdown", Message="shutdown")
            desired = "shutdown"
    task: dict[str, Any] = {
        "ID": object_id("task", index),
        "CreatedAt": timestamp(index * 0.25),
        "UpdatedAt": status["Timestamp"],
        "Labels": {},
        "Spec": json.loads(json.dumps(spec["TaskTemplate"])),  # a copy, as the orchestrator makes
        "ServiceID": service["ID"],
        "ServiceAnnotations": {"Name": spec["Name"], "Labels": dict(spec["Labels"])},
        "Slot": slot,
        "Status": status,
        "DesiredState": desired,
    }
    if phase != 0:
        task["NodeID"] = node_id
        task["NetworksAttachments"] = [{"Network": network, "Addresses": [f"10.0.1.{index % 250 + 3}/24"]}]
    return task


def node_object(index: int) -> dict[str, Any]:
    """A node as the control API registers it: the first three are managers, the first of them leads."""
    node_id = object_id("node", index)
    manager = index < 3
    node: dict[str, Any] = {
        "ID": node_id,
        "CreatedAt": timestamp(index),
        "UpdatedAt": timestamp(index + 60),
        "Spec": {
            "Labels": {"zone": "abc"[index % 3]},
            "Role": "manager" if manager else "worker",
            "Availability": "active",
        },
        "Description": {
            "Hostname": f"node-{index}",
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": 4 * NANOSECONDS, "MemoryBytes": 16 * 1024**3},
            "Engine": {"EngineVersion": "raftswarm"},
        },
        "Status": {"State": "ready", "Addr": f"10.10.0.{index + 10}"},
    }
    if manager:
        node["ManagerStatus"] = {
            "Leader": index == 0, "Reachability": "reachable", "Addr": f"10.10.0.{index + 10}:2377",
            "RaftID": int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big") >> 1,
        }
    return node


def store_snapshot(tasks: int, services: int, nodes: int) -> bytes:
    """The store's snapshot (`ClusterState.snapshot`): msgpack [version, {kind: {ID: [version, created, object]}}]."""
    network = overlay_network()
    node_objects = [node_object(i) for i in range(nodes)]
    per_service = -(-tasks // services)  # tasks of one service, history included
    service_objects = [service_object(i, network, max(1, per_service * 4 // 5)) for i in range(services)]
    task_objects = [
        task_object(i, service_objects[i % services], i // services + 1, node_objects[i % nodes]["ID"], network)
        for i in range(tasks)
    ]
    created = 0
    collections: dict[str, dict[str, list[Any]]] = {}
    for kind, objects in (("nodes", node_objects), ("services", service_objects), ("tasks", task_objects)):
        collections[kind] = {}
        for obj in objects:
            created += 1
            updates = 2 if kind == "tasks" else 0  # assigned, then running: two later transactions
            collections[kind][obj["ID"]] = [created + updates, created, obj]
    return msgpack.packb([created + 2, collections], use_bin_type=True)


def service_create_request() -> bytes:
    """The JSON body of `POST /services/create` from a client that leaves Docker's defaults to the server:
    no UpdateConfig or RollbackConfig, a RestartPolicy with only what it changes."""
    spec = service_spec(0, object_id("network", 0))
    del spec["UpdateConfig"], spec["RollbackConfig"]
    spec["TaskTemplate"]["RestartPolicy"] = {"Condition": "on-failure", "MaxAttempts": 3}
    return json.dumps(spec).encode()


# -- measuring ------------------------------------------------------------------------------------------


def measure(
    candidates: list[Candidate], snapshot: bytes, request: bytes, repeats: int, requests: int
) -> dict[tuple[str, str], list[float]]:
    """Seconds per (library, scenario), one figure per repeat; service_create's is the mean of `requests` calls.

    Each repeat times every library in turn, so a machine that gets busier halfway through (other work on
    a shared host) slows every library alike instead of the ones measured last. The first call of each
    operation is not timed: pydantic and cattrs build some of their code on first use."""
    operations: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}
    for candidate in candidates:
        decoded = candidate.decode_snapshot(snapshot)
        operations[candidate.library, "snapshot_decode"] = partial(candidate.decode_snapshot, snapshot), 1
        operations[candidate.library, "snapshot_encode"] = partial(candidate.encode_snapshot, decoded), 1
        operations[candidate.library, "service_create"] = partial(candidate.create_service, request), requests
        operations[candidate.library, "api_json"] = partial(candidate.api_round_trip, decoded), 1
    for operation, _ in operations.values():
        operation()
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in operations}
    gc.freeze()  # the snapshots every library holds between runs are not what the timed collections scan
    try:
        for _ in range(repeats):
            for scenario in SCENARIOS:
                for candidate in candidates:
                    operation, calls = operations[candidate.library, scenario]
                    gc.collect()  # no run pays for the garbage of the one before
                    start = time.perf_counter()
                    for _ in range(calls):
                        operation()
                    seconds[candidate.library, scenario].append((time.perf_counter() - start) / calls)
    finally:
        gc.unfreeze()
    return seconds


def _figure(value: float) -> float:
    return float(f"{value:.4g}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    chosen = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(LIBRARIES))
    if unknown:
        print(f"--libraries takes a comma-separated subset of {','.join(LIBRARIES)}, not {args.libraries!r}",
              file=sys.stderr)
        return 2
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    validation = project_validation()
    if validation is None:
        print(f"validate_service_spec is in none of {', '.join(VALIDATION_MODULES)}: the dict baseline of"
              " service_create does not validate", file=sys.stderr, flush=True)
    candidates, missing = [dict_candidate()], []
    for library in chosen:
        try:
            candidates.append(build(library))
        except NotInstalled as exc:
            print(f"{exc}; {library} skipped", file=sys.stderr, flush=True)
            missing.append(library)
    snapshot = store_snapshot(args.tasks, args.services, args.nodes)
    request = service_create_request()
    say(f"measuring {', '.join(c.library for c in candidates)}: {args.repeats} repeats, interleaved ...")
    seconds = measure(candidates, snapshot, request, args.repeats, args.requests)
    baseline = {scenario: statistics.median(seconds[BASELINE, scenario]) for scenario in SCENARIOS}
    records = []
    for candidate in candidates:
        for scenario in SCENARIOS:
            p50 = statistics.median(seconds[candidate.library, scenario])
            record = {
                "bench": "objects",
                "library": candidate.library,
                "scenario": scenario,
                "p50_ms": _figure(p50 * 1000),
                "min_ms": _figure(min(seconds[candidate.library, scenario]) * 1000),
                "ratio_to_dict": round(p50 / baseline[scenario], 2),
                "repeats": args.repeats,
            }
            print(json.dumps(record), flush=True)
            records.append(record)
    summary = {
        "bench": "objects",
        "summary": True,
        "tasks": args.tasks,
        "services": args.services,
        "nodes": args.nodes,
        "snapshot_bytes": len(snapshot),
        "request_bytes": len(request),
        "requests_per_repeat": args.requests,
        "dict_validation": f"{validation[0].__module__}.validate_service_spec" if validation else None,
        "ratios": {
            c.library: {r["scenario"]: r["ratio_to_dict"] for r in records if r["library"] == c.library}
            for c in candidates[1:]
        },
        "missing": sorted(missing),
        "versions": {
            c.library: {d: importlib.metadata.version(d) for d in DISTRIBUTIONS[c.library]} for c in candidates[1:]
        },
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    say(_table(records, summary))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench objects", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the snapshot (%(default)s)")
    parser.add_argument("--services", type=int, default=10, help="services in the snapshot (%(default)s)")
    parser.add_argument("--nodes", type=int, default=5, help="nodes in the snapshot (%(default)s)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each scenario (%(default)s)")
    parser.add_argument("--requests", type=int, default=200, help="service creates per timed run (%(default)s)")
    parser.add_argument(
        "--libraries", default=",".join(LIBRARIES), help="comma-separated, measured after dict (default %(default)s)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    return parser


def _table(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    heading = (
        f"objects benchmark: snapshot of {summary['tasks']} tasks, {summary['services']} services,"
        f" {summary['nodes']} nodes ({summary['snapshot_bytes'] / 1024:,.0f} KiB msgpack); service create of"
        f" {summary['request_bytes']} bytes of JSON (dict validates with {summary['dict_validation']})"
    )
    rows = [
        f"  {r['library']:13} {r['scenario']:16} {r['p50_ms']:10.4g} {r['min_ms']:10.4g} {r['ratio_to_dict']:8.2f}x"
        for r in records
    ]
    columns = f"  {'library':13} {'scenario':16} {'p50 ms':>10} {'min ms':>10} {'vs dict':>9}"
    missing = [f"  {library}: not installed" for library in summary["missing"]]
    return "\n".join([heading, columns, *rows, *missing])
