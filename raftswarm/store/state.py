"""The cluster state as a deterministic state machine: what every manager applies, entry by entry.

Objects live in named collections (`kind`: "nodes", "services", "tasks", ...), keyed by ID, each with a
`version`: the Raft index of the transaction that last changed it (as SwarmKit's Meta.Version.Index).
A transaction is a list of operations applied all or nothing; each operation may demand the version it
expects (compare-and-set), checked against the state the transaction starts from; a transaction whose expectations do not hold changes nothing and reports
which object was stale.

The state keeps the changes of recent transactions, so a watcher can resume from any recent version
without a gap; one that asks for a version older than that history is told to re-list.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import InvalidInput, VersionConflict
from ..objects.stored import StoredObject

HISTORY_TRANSACTIONS = 10_000
"""How many recent transactions' changes are kept for watchers to resume from."""

MAX_KIND_LENGTH = 64
MAX_ID_LENGTH = 256


class StoreError(InvalidInput):
    """A store request was invalid; nothing was changed."""


class Conflict(StoreError, VersionConflict):
    """A transaction's version expectation did not hold; nothing was changed. Re-read and retry."""


class WatchCompacted(StoreError, VersionConflict):
    """A watch asked to resume from a version older than the kept history; list the objects again."""


class Action(enum.Enum):
    CREATE = "create"  # fails if the object exists
    UPDATE = "update"  # fails if it does not
    PUT = "put"  # create or replace
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    action: Action
    object: StoredObject


ANY_VERSION = -1
"""As an expected version: no expectation (unconditional)."""
ABSENT = 0
"""As an expected version: the object must not exist."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One step of a transaction. `expect` is ANY_VERSION, ABSENT, or the version the object must have."""

    action: Action | None  # None: only check `expect`
    kind: str
    id: str
    data: Any = None
    expect: int = ANY_VERSION

    def encode(self) -> list[Any]:
        return [self.action.value if self.action else None, self.kind, self.id, self.data, self.expect]

    @classmethod
    def decode(cls, raw: Any) -> Operation:
        if not isinstance(raw, list) or len(raw) != 5:
            raise StoreError("an operation must have 5 fields")
        action, kind, object_id, data, expect = raw
        if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND_LENGTH:
            raise StoreError(f"object kind must be a string of 1-{MAX_KIND_LENGTH} characters")
        if not isinstance(object_id, str) or not 0 < len(object_id) <= MAX_ID_LENGTH:
            raise StoreError(f"object ID must be a string of 1-{MAX_ID_LENGTH} characters")
        if type(expect) is not int or expect < ANY_VERSION:
            raise StoreError("expected version must be an integer >= -1")
        try:
            parsed = Action(action) if action is not None else None
        except ValueError:
            raise StoreError(f"unknown operation {action!r}") from None
        return cls(parsed, kind, object_id, data, expect)


def check(kind: str, object_id: str, expect: int) -> Operation:
    return Operation(None, kind, object_id, None, expect)


def create(kind: str, object_id: str, data: Any) -> Operation:
    return Operation(Action.CREATE, kind, object_id, data, ABSENT)


def update(kind: str, object_id: str, data: Any, expect: int = ANY_VERSION) -> Operation:
    return Operation(Action.UPDATE, kind, object_id, data, expect)


def put(kind: str, object_id: str, data: Any, expect: int = ANY_VERSION) -> Operation:
    return Operation(Action.PUT, kind, object_id, data, expect)


def delete(kind: str, object_id: str, expect: int = ANY_VERSION) -> Operation:
    return Operation(Action.DELETE, kind, object_id, None, expect)


def encode_transaction(operations: list[Operation]) -> bytes:
    if not operations:
        raise StoreError("a transaction needs at least one operation")
    try:
        return msgpack.packb([op.encode() for op in operations], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"object data must be msgpack-serializable (maps, lists, strings, bytes, 64-bit numbers): {exc}") from None


def decode_transaction(payload: bytes) -> list[Operation]:
    try:
        raw = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise StoreError(f"transaction is not valid msgpack: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise StoreError("a transaction must be a non-empty list of operations")
    return [Operation.decode(op) for op in raw]


@dataclass(frozen=True, slots=True)
class Committed:
    """A transaction that was applied: its version and what it changed."""

    version: int
    changes: tuple[Change, ...]


class ClusterState:
    """The state machine. `apply` must be deterministic: every manager applies the same entries in order."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, StoredObject]] = {}
        self.version = 0
        self._history: deque[Committed] = deque(maxlen=HISTORY_TRANSACTIONS)
        self._history_floor = 0  # changes after this version are all in _history

    # -- the state machine (raft.driver.StateMachine) --------------------------------------------------

    def apply(self, index: int, payload: bytes) -> Committed | StoreError:
        """Apply one transaction at Raft index `index`; returns what it did, or the error (changing nothing)."""
        self.version = index
        try:
            operations = decode_transaction(payload)
            self._check(operations)
        except StoreError as error:
            return error
        changes = tuple(self._execute(index, op) for op in operations if op.action is not None)
        committed = Committed(index, changes)
        if changes:
            if len(self._history) == self._history.maxlen:
                self._history_floor = self._history[0].version
            self._history.append(committed)
        return committed

    def snapshot(self) -> bytes:
        objects = {
            kind: {oid: [o.version, o.created, o.data] for oid, o in collection.items()}
            for kind, collection in self._objects.items()
        }
        return msgpack.packb([self.version, objects], use_bin_type=True)

    def restore(self, data: bytes) -> None:
        version, objects = msgpack.unpackb(data, raw=False)
        self.version = version
        self._objects = {
            kind: {oid: StoredObject(kind, oid, v, c, d) for oid, (v, c, d) in collection.items()}
            for kind, collection in objects.items()
        }
        self._history.clear()
        self._history_floor = version

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, kind: str, object_id: str) -> StoredObject | None:
        return self._objects.get(kind, {}).get(object_id)

    def list(self, kind: str) -> list[StoredObject]:
        return sorted(self._objects.get(kind, {}).values(), key=lambda o: o.id)

    def committed_since(self, version: int) -> list[Committed]:
        """Every transaction that changed something after `version`, in order; WatchCompacted if some of
        them are no longer kept."""
        if version < self._history_floor:
            raise WatchCompacted(
                f"changes after version {version} are no longer kept (history starts at {self._history_floor}); "
                "list the objects again and watch from the version you got"
            )
        return [committed for committed in self._history if committed.version > version]

    # -- applying --------------------------------------------------------------------------------------

    def _check(self, operations: list[Operation]) -> None:
        touched: set[tuple[str, str]] = set()
        for op in operations:
            key = (op.kind, op.id)
            if key in touched and op.action is not None:
                raise StoreError(f"{op.kind}/{op.id} is changed twice in one transaction")
            if op.action is not None:
                touched.add(key)
            current = self.get(op.kind, op.id)
            if op.action in (Action.UPDATE, Action.DELETE) and current is None:
                raise Conflict(f"{op.kind}/{op.id} does not exist")
            if op.action is Action.CREATE and current is not None:
                raise Conflict(f"{op.kind}/{op.id} already exists")
            if op.expect == ANY_VERSION:
                continue
            actual = current.version if current else ABSENT
            if actual != op.expect:
                if op.expect == ABSENT:
                    raise Conflict(f"{op.kind}/{op.id} already exists")
                raise Conflict(f"{op.kind}/{op.id} is at version {actual}, not {op.expect}: it changed meanwhile")

    def _execute(self, index: int, op: Operation) -> Change:
        collection = self._objects.setdefault(op.kind, {})
        current = collection.get(op.id)
        if op.action is Action.DELETE:
            assert current is not None
            del collection[op.id]
            return Change(index, Action.DELETE, StoredObject(op.kind, op.id, index, current.created, current.data))
        created = current.created if current else index
        stored = StoredObject(op.kind, op.id, index, created, op.data)
        collection[op.id] = stored
        return Change(index, Action.CREATE if current is None else Action.UPDATE, stored)
