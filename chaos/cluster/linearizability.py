"""Is a recorded history of register operations linearizable?

The model: every key is an independent register, initially None (absent). `write(v)` sets it to v;
`cas([old, new])` takes effect only if the register holds `old` at that moment, and sets `new`; `read` returns
what it holds. Values are compared as JSON (the history is stored as JSON, so `(1, 2)` and `[1, 2]` are the
same value, and `1` and `True` are not).

The search is Wing & Gong's, with Lowe's memoization, as in Porcupine (anishathalye/porcupine) and knossos'
`wgl`: keys are checked separately (linearizability is compositional), and per key the call and return
entries, sorted by time, form a doubly linked list. The search repeatedly picks a call that precedes every
pending return (a minimal operation), applies it to the model if that is legal, removes it from the list and
pushes it on a stack; when it reaches a return entry whose operation is still pending, nothing can come next,
so it pops the last choice and tries the one after it. An operation called at the instant another returns
counts as concurrent with it (calls sort first), so a tie of timestamps never produces a violation.

Outcomes:
- `fail` operations are dropped: they had no effect.
- `info` reads are dropped: no effect, and nothing learnt. `info` writes and compare-and-sets return at +inf
  and are optional: they may take effect at any point after their call, or never. The search therefore
  succeeds as soon as only info operations remain, and it tries them only after the ordinary calls at each
  step, so one that took effect late is placed just before the read that saw it instead of as early as
  possible.
- An `info` write or compare-and-set whose new value no read returned and no compare-and-set expected is
  dropped too: in any valid order that places it, the operation after it can only be a write, which is
  legal whatever the register holds, so the order stays valid without it. With unique values written, that
  removes most of them, and each one left pending would multiply the states the search visits.
- Memoization prunes a state (set of linearized operations, register value) when a state already explored
  without success dominates it: the same value and the same ordinary operations done, and a subset of the
  info ones. Having left more info operations undone can only widen the choices, so the new state cannot
  succeed either. Without that, a history with a violation and a few dozen info writes would explore every
  subset of them.

A search that runs past the deadline, or rules out more states than `MAX_FAILED_STATES`, makes its key
`unknown`, never a pass.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .history import CAS, FAIL, INFO, READ, WRITE, History, Operation

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN = "unknown"

STEPS_BETWEEN_CLOCK_READS = 1024
"""A search step costs about a microsecond; reading the clock every thousand keeps the overshoot past the
deadline near a millisecond while adding no measurable cost to the search."""
MAX_FAILED_STATES = 1_000_000
"""Per key. A linearizable 3,000-operation history rules out about ten thousand; a search that has ruled out
a million is exponential in its history and would not finish in minutes either. Each state holds a bitset as
long as the key's history, so the bound also keeps the memo to a few hundred MB."""

FAILURE_CONTEXT = 20
"""Operations of the longest valid order shown with a failure: its end is where the violation is."""
_ABSENT = 0
"""The model's value for an unset register; other values are numbered from 1 as they are first seen."""


@dataclass
class Verdict:
    """The checker's answer for a whole history."""

    result: str
    """`linearizable`, `not linearizable` (some key has no valid order) or `unknown` (some key's search gave up:
    deadline or `MAX_FAILED_STATES`)."""
    keys: dict[str, str]
    """Key -> that key's result."""
    checked_operations: int
    """Operations the search had to place: ok ones, and info writes and compare-and-sets."""
    elapsed_s: float
    failure: dict[str, Any] | None = None
    """For the first failing key: `key`; `linearized`, the last `FAILURE_CONTEXT` operations of the longest
    valid order of its operations the search found (`linearized_count`: its length); `value`, the register's value after it; `pending`, the operations that could come next there (in
    call order), none of which could be placed. Operations as {process, f, input, output, call, ret, status},
    with `ret` None when unknown."""

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "keys": dict(self.keys),
            "checked_operations": self.checked_operations,
            "elapsed_s": round(self.elapsed_s, 3),
            "failure": self.failure,
        }


def check(history_or_operations: History | Iterable[Operation], timeout: float) -> Verdict:
    """Check every key's operations; `timeout` (seconds) bounds the whole check, after which keys are unknown."""
    started = time.monotonic()
    deadline = started + timeout
    operations = (
        history_or_operations.operations()
        if isinstance(history_or_operations, History)
        else list(history_or_operations)
    )
    by_key: dict[str, list[Operation]] = {}
    for op in operations:
        if op.ret < op.call:
            raise ValueError(
                f"{op.f} of process {op.process} on {op.key!r} returned at {op.ret} before its call at {op.call}"
            )
        by_key.setdefault(op.key, []).append(op)
    by_key = {key: _to_place(ops) for key, ops in by_key.items()}
    keys: dict[str, str] = {}
    failure = None
    for key in sorted(by_key):
        search = _RegisterSearch(by_key[key], deadline)
        keys[key] = search.run()
        if keys[key] == NOT_LINEARIZABLE and failure is None:
            failure = {"key": key, **search.failure()}
    results = set(keys.values())
    result = NOT_LINEARIZABLE if NOT_LINEARIZABLE in results else UNKNOWN if UNKNOWN in results else LINEARIZABLE
    checked = sum(len(ops) for ops in by_key.values())
    return Verdict(result, keys, checked, time.monotonic() - started, failure)


def _to_place(ops: list[Operation]) -> list[Operation]:
    """The operations of one key that the search must consider (see the module docstring for why)."""
    observed = {_canonical(op.output) for op in ops if op.f == READ and op.status not in (FAIL, INFO)}
    observed |= {_canonical(op.input[0]) for op in ops if op.f == CAS and op.status != FAIL}
    placed = []
    for op in ops:
        if op.status == FAIL or (op.status == INFO and op.f == READ):
            continue
        if op.status == INFO and _canonical(op.input if op.f == WRITE else op.input[1]) not in observed:
            continue
        placed.append(op)
    return placed


class _RegisterSearch:
    """The search for one key: entries in a dancing-links list, the stack as linked frames.

    A frame is `(call entry, pass, value before, linearized before, previous frame)`; frames are never
    mutated, so keeping a reference to the deepest one keeps the longest valid order found, at no cost.
    """

    def __init__(self, ops: list[Operation], deadline: float) -> None:
        self.ops = ops
        self.deadline = deadline
        self.values: list[Any] = [None]
        numbers = {_canonical(None): _ABSENT}

        def number(value: Any) -> int:
            canonical = _canonical(value)
            if canonical not in numbers:
                numbers[canonical] = len(self.values)
                self.values.append(value)
            return numbers[canonical]

        # The model step of op i: (kind, a, b) read: reads a; write: writes a; cas: a -> b.
        self.steps: list[tuple[str, int, int]] = []
        self.is_info = [op.status == INFO for op in ops]
        self.info_mask = sum(1 << i for i, info in enumerate(self.is_info) if info)
        for op in ops:
            if op.f == READ:
                self.steps.append((READ, number(op.output), 0))
            elif op.f == WRITE:
                self.steps.append((WRITE, number(op.input), 0))
            elif op.f == CAS:
                self.steps.append((CAS, number(op.input[0]), number(op.input[1])))
            else:
                raise ValueError(f"unknown operation {op.f!r}; the register model has read, write and cas")

        # Entry 0 is the head, entry len+1 the tail; entries in between are (time, is return, op) in time order.
        order = sorted(
            [(op.call, False, i) for i, op in enumerate(ops)] + [(op.ret, True, i) for i, op in enumerate(ops)]
        )
        self.entry_op = [-1] + [i for _, _, i in order] + [-1]
        self.is_return = [False] + [is_return for _, is_return, _ in order] + [False]
        self.tail = len(order) + 1
        self.position = {(is_return, i): p for p, (_, is_return, i) in enumerate(order, start=1)}
        self.next = list(range(1, self.tail + 1)) + [self.tail]
        self.prev = [0] + list(range(self.tail))
        self.deepest: tuple[int, Any, int, int] = (0, None, 0, _ABSENT)
        """(depth, frame, linearized, value) at the deepest dead end."""

    def run(self) -> str:
        """`linearizable`, `not linearizable`, or `unknown` if the deadline or the state budget ran out first."""
        if not self.ops:
            return LINEARIZABLE
        nxt, prv, entry_op, is_return, tail = self.next, self.prev, self.entry_op, self.is_return, self.tail
        steps, is_info = self.steps, self.is_info
        bits = [1 << i for i in range(len(self.ops))]
        info_mask = self.info_mask
        ordinary_mask = ((1 << len(self.ops)) - 1) & ~info_mask
        ret_position = [self.position[True, i] for i in range(len(self.ops))]
        explored: dict[tuple[int, int], list[int]] = defaultdict(list)
        """(ordinary ops linearized, value) -> the sets of info ops linearized alongside, in states that failed."""
        value, linearized, frame, depth, failed_states = _ABSENT, 0, None, 0, 0
        # Pass 0 tries the ordinary calls before the first pending return, pass 1 the info ones.
        entry, info_pass = nxt[0], False
        count = 0
        while True:
            if count % STEPS_BETWEEN_CLOCK_READS == 0 and time.monotonic() >= self.deadline:
                return UNKNOWN
            count += 1
            if is_return[entry] or entry == tail:
                if not info_pass:
                    if entry == tail or is_info[entry_op[entry]]:
                        return LINEARIZABLE  # only info operations remain, and they may never have happened
                    entry, info_pass = nxt[0], True
                    continue
                if frame is None:
                    return NOT_LINEARIZABLE
                if depth > self.deepest[0]:
                    self.deepest = (depth, frame, linearized, value)
                explored[linearized & ordinary_mask, value].append(linearized & info_mask)
                failed_states += 1
                if failed_states > MAX_FAILED_STATES:
                    return UNKNOWN
                entry, info_pass, value, linearized, frame = frame
                depth -= 1
                ret = ret_position[entry_op[entry]]
                prv[nxt[ret]] = ret
                nxt[prv[ret]] = ret
                prv[nxt[entry]] = entry
                nxt[prv[entry]] = entry
                entry = nxt[entry]
                continue
            op = entry_op[entry]
            if is_info[op] != info_pass:
                entry = nxt[entry]
                continue
            kind, a, b = steps[op]
            if kind == READ:
                legal, after = a == value, value
            elif kind == WRITE:
                legal, after = True, a
            else:
                legal, after = a == value, b
            if legal:
                grown = linearized | bits[op]
                info_done = grown & info_mask
                if not any(failed & ~info_done == 0 for failed in explored.get((grown & ordinary_mask, after), ())):
                    frame = (entry, info_pass, value, linearized, frame)
                    depth += 1
                    value, linearized = after, grown
                    ret = ret_position[op]
                    nxt[prv[entry]] = nxt[entry]
                    prv[nxt[entry]] = prv[entry]
                    nxt[prv[ret]] = nxt[ret]
                    prv[nxt[ret]] = prv[ret]
                    entry, info_pass = nxt[0], False
                    continue
            entry = nxt[entry]

    def failure(self) -> dict[str, Any]:
        """What a human needs after `run` said not linearizable: the longest valid order and what blocked it."""
        _, frame, linearized, value = self.deepest
        order = []
        while frame is not None:
            order.append(self.entry_op[frame[0]])
            frame = frame[4]
        order.reverse()
        remaining = [i for i in range(len(self.ops)) if not (linearized >> i) & 1]
        first_return = min((self.position[True, i] for i in remaining if not self.is_info[i]), default=self.tail)
        pending = sorted((self.position[False, i], i) for i in remaining if self.position[False, i] < first_return)
        return {
            "linearized_count": len(order),
            "linearized": [_describe(self.ops[i]) for i in order[-FAILURE_CONTEXT:]],
            "value": self.values[value],
            "pending": [_describe(self.ops[i]) for _, i in pending],
        }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _describe(op: Operation) -> dict[str, Any]:
    return {
        "process": op.process,
        "f": op.f,
        "input": op.input,
        "output": op.output,
        "call": op.call,
        "ret": op.ret if math.isfinite(op.ret) else None,
        "status": op.status,
    }
