"""The operation history of a chaos run, recorded the way Jepsen records one.

A client process records, per operation, an `invoke` event and then exactly one completion: `ok` (it happened,
with its output), `fail` (it definitely did not happen) or `info` (unknown: it may have happened, or may still
happen). After an `info` the client goes on under a new process ID, because the old operation may still be in
flight and a process has at most one operation outstanding; that is also what lets a completion be paired
with its invoke by process alone, so the JSON form needs no explicit links.

Operations are reads, writes and compare-and-sets of registers named by `key`. A register that was never
written reads as None. A compare-and-set's value is `[expected, new]`.

The recorder is not thread-safe and never awaits: asyncio clients on one loop can share it, and the order of
`events` is the order in which the loop ran the calls.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
COMPLETIONS = (OK, FAIL, INFO)
READ, WRITE, CAS = "read", "write", "cas"
FUNCTIONS = (READ, WRITE, CAS)

_SAME_AS_INVOKE: Any = object()
"""`complete`'s default value: a write or compare-and-set completes with the value it was invoked with."""


@dataclass(frozen=True)
class Event:
    """One line of the history: an operation's invocation or its completion."""

    index: int
    """Position in the history."""
    process: int
    type: str
    """`invoke`, `ok`, `fail` or `info`."""
    f: str
    """`read`, `write` or `cas`."""
    key: str
    value: Any
    """write: the value written; cas: `[expected, new]`; read: None at invoke, the value read at ok."""
    time: float
    """Seconds since the run started, from a monotonic clock."""
    error: str | None = None
    """Why a `fail` or `info` ended the way it did."""


@dataclass(frozen=True)
class Operation:
    """An invoke paired with its completion, the unit the linearizability checker reasons about."""

    process: int
    f: str
    key: str
    input: Any
    output: Any
    """The value read, for an ok read; the input, for an ok write or compare-and-set; None otherwise."""
    call: float
    ret: float
    """math.inf when the outcome is unknown (`info`, or never completed): it may take effect at any later time."""
    status: str
    """`ok`, `fail` or `info`; an operation that never completed is `info`."""
    invoke_index: int


class History:
    """Records invokes and completions in the order they happen."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._pending: dict[int, Event] = {}
        """Process -> its invoke that has no completion yet."""

    def invoke(self, process: int, f: str, key: str, value: Any, time: float) -> Event:
        """Record the start of an operation; pass the returned event to `complete` when it ends."""
        if f not in FUNCTIONS:
            raise ValueError(f"unknown operation {f!r}; expected one of {', '.join(FUNCTIONS)}")
        if process in self._pending:
            raise ValueError(
                f"process {process} invoked {f} while its {self._pending[process].f} is outstanding; "
                "after an info completion a client must continue under a new process ID"
            )
        if f == READ and value is not None:
            raise ValueError("a read is invoked with value None; its value is recorded at completion")
        if f == CAS and not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise ValueError(f"a cas is invoked with [expected, new], not {value!r}")
        event = Event(len(self.events), process, INVOKE, f, key, list(value) if f == CAS else value, time)
        self.events.append(event)
        self._pending[process] = event
        return event

    def complete(
        self,
        invoke_event: Event,
        type: str,
        time: float,
        value: Any = _SAME_AS_INVOKE,
        error: str | None = None,
    ) -> Event:
        """Record how `invoke_event` ended: `ok` with the value read (reads), `fail` or `info` with `error`."""
        if type not in COMPLETIONS:
            raise ValueError(f"unknown completion {type!r}; expected one of {', '.join(COMPLETIONS)}")
        if self._pending.get(invoke_event.process) != invoke_event:
            raise ValueError(
                f"{invoke_event.f} of process {invoke_event.process} is not outstanding; it completes once"
            )
        if invoke_event.f == READ:
            if type == OK and value is _SAME_AS_INVOKE:
                raise ValueError("an ok read must record the value it read (None if the register was absent)")
            if type != OK:
                value = None
        else:
            if value is not _SAME_AS_INVOKE and _as_recorded(invoke_event.f, value) != invoke_event.value:
                raise ValueError(
                    f"a {invoke_event.f} completes with its invoke's value {invoke_event.value!r}, not {value!r}"
                )
            value = invoke_event.value
        event = Event(
            len(self.events), invoke_event.process, type, invoke_event.f, invoke_event.key, value, time, error
        )
        self.events.append(event)
        del self._pending[invoke_event.process]
        return event

    def operations(self) -> list[Operation]:
        """Every invoke with its completion, in invoke order; one never completed counts as `info`."""
        completions: dict[int, Event] = {}
        outstanding: dict[int, Event] = {}
        for event in self.events:
            if event.type == INVOKE:
                outstanding[event.process] = event
            else:
                completions[outstanding.pop(event.process).index] = event
        operations = []
        for event in self.events:
            if event.type != INVOKE:
                continue
            done = completions.get(event.index)
            status = done.type if done else INFO
            operations.append(
                Operation(
                    process=event.process,
                    f=event.f,
                    key=event.key,
                    input=event.value,
                    output=done.value if status == OK else None,
                    call=event.time,
                    ret=done.time if status != INFO else math.inf,
                    status=status,
                    invoke_index=event.index,
                )
            )
        return operations

    def summary(self) -> dict[str, dict[str, int]]:
        """Operation outcomes per function: {"read": {"ok": n, "fail": n, "info": n}, ...}."""
        counts = Counter((op.f, op.status) for op in self.operations())
        return {f: {status: counts[f, status] for status in COMPLETIONS} for f in FUNCTIONS}

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(event) for event in self.events]

    @classmethod
    def from_json(cls, events: list[dict[str, Any]]) -> History:
        """Rebuild a history from `to_json`'s output, refusing one a recorder could not have produced."""
        history = cls()
        for position, record in enumerate(events):
            if record["index"] != position:
                raise ValueError(f"event {position} says it is at index {record['index']}; the history is out of order")
            if record["type"] == INVOKE:
                history.invoke(record["process"], record["f"], record["key"], record["value"], record["time"])
                continue
            invoked = history._pending.get(record["process"])
            if invoked is None or (invoked.f, invoked.key) != (record["f"], record["key"]):
                raise ValueError(
                    f"event {position} completes a {record['f']} of {record['key']!r} that process "
                    f"{record['process']} had not invoked"
                )
            history.complete(invoked, record["type"], record["time"], record["value"], record.get("error"))
        return history


def _as_recorded(f: str, value: Any) -> Any:
    """A compare-and-set's pair as the history stores it (a list, as JSON gives it back)."""
    return list(value) if f == CAS and isinstance(value, tuple) else value
