"""What a conformance step observed, made comparable across two swarms: exit codes and HTTP status codes as
they are; messages and plain output with everything run-specific replaced (IDs, tokens, times, the nodes'
names and addresses, the scenario's directory); JSON answers reduced to their keys and value types,
recursively; listings (`ls --format '{{json .}}'`) to rows of normalised values, since the CLI formats every
value of a listing from the API's answers.

`differences` compares one step's outcomes on the two swarms; `table` prints differences; `Allowed` is an
entry of the allow list.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

# Docker's object IDs (25 base-36 characters; 12 in tables, where a listing's ID column is replaced whole, since
# one in fifty has no digit to tell it from a word), container and image IDs (64 hex), digests, join tokens and
# unlock keys, times and ages: different on every run, never what a test compares.
_PATTERNS = [
    (re.compile(r"SWM(TKN|KEY)-1-[0-9A-Za-z+/=-]+"), "<TOKEN>"),
    (re.compile(r"sha256:[0-9a-f]{64}"), "<DIGEST>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<ID>"),
    (re.compile(r"\b[0-9a-z]{25}\b"), "<ID>"),
    (re.compile(r"\b(?=[0-9a-z]*[0-9])(?=[0-9a-z]*[a-z])[0-9a-z]{12}\b"), "<ID>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<TIME>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [+-]\d{4} \w+"), "<TIME>"),
    (re.compile(r"(?i)(about |less than )?(an?|\d+) (second|minute|hour|day)s? ago"), "<AGO>"),
]

_ROW_NAMES = ("Name", "Hostname", "ID")
"""What tells the rows of a listing apart, the first a row has."""


class Normaliser:
    """Replaces what differs from run to run and swarm to swarm by placeholders. `facts` maps literal strings
    (node IDs, hostnames, addresses, the working directory) to their placeholders; the longest go first."""

    def __init__(self, facts: dict[str, str]) -> None:
        self.facts = sorted(((k, v) for k, v in facts.items() if k), key=lambda item: -len(item[0]))

    def __call__(self, text: str) -> str:
        for literal, placeholder in self.facts:
            text = text.replace(literal, placeholder)
        for pattern, placeholder in _PATTERNS:
            text = pattern.sub(placeholder, text)
        return text.strip()


@dataclass
class Outcome:
    """One step on one swarm. `exit`: the CLI's exit code, or for an SDK call the HTTP status of its error (0:
    none). `message`: stderr, or the API's error message. `output`: plain stdout; `shape`: path -> type names of
    a JSON answer; `rows`: a listing, by row name -> field -> value. All normalised."""

    exit: int | str
    message: str = ""
    output: str | None = None
    shape: dict[str, str] | None = None
    empty_arrays: set[str] = field(default_factory=set)
    rows: dict[str, dict[str, str]] | None = None


def _key(name: str) -> str:
    return f'["{name}"]' if re.search(r"[^A-Za-z0-9_]", name) else f".{name}"


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape(value: Any, normalise: Normaliser | None = None) -> tuple[dict[str, str], set[str]]:
    """path -> the type names found there (`|`-joined when elements of one array differ), and the paths of
    the arrays that were empty. Paths: `.Spec.Labels["com.docker.stack.namespace"]`, `.Endpoint.Ports[].Protocol`;
    keys that are data (a network's containers by ID) go through `normalise`."""
    types: dict[str, set[str]] = {}
    empty: set[str] = set()

    def walk(node: Any, path: str) -> None:
        types.setdefault(path or "$", set()).add(_type(node))
        if isinstance(node, dict):
            for name, child in node.items():
                walk(child, path + _key(normalise(name) if normalise else name))
        elif isinstance(node, list):
            if not node:
                empty.add(path or "$")
            for child in node:
                walk(child, path + "[]")

    walk(value, "")
    return {path: "|".join(sorted(names)) for path, names in types.items()}, empty


def outcome_of_json(exit: int | str, message: str, answer: str | Any, normalise: Normaliser) -> Outcome:
    """For `inspect` output (text) and SDK answers (decoded): the shape of the JSON; text that is not JSON is
    kept as plain output."""
    try:
        value = json.loads(answer) if isinstance(answer, str) else answer
    except ValueError:
        return Outcome(exit, normalise(message), output=normalise(answer))
    found, empty = shape(value, normalise)
    return Outcome(exit, normalise(message), shape=found, empty_arrays=empty)


def outcome_of_listing(exit: int | str, message: str, text: str, normalise: Normaliser) -> Outcome:
    """For `ls --format '{{json .}}'`: each line's values, normalised, by the line's name."""
    rows: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = {key: "<ID>" if key == "ID" else normalise(str(value)) for key, value in json.loads(line).items()}
        except ValueError:
            return Outcome(exit, normalise(message), output=normalise(text))
        name = next((row[key] for key in _ROW_NAMES if row.get(key)), "?")
        while name in rows:
            name += "'"
        rows[name] = row
    return Outcome(exit, normalise(message), rows=rows)


@dataclass(frozen=True)
class Difference:
    step: str
    aspect: str
    """exit; rpc, message+ or message (see `_message_difference`); output; key (a JSON path one side lacks,
    with everything below it), type; row (a listing's row one side lacks), value (a field of a listing's row)"""
    where: str
    """The JSON path, the row, or the row's field (`cf-web.Replicas`)."""
    docker: str
    raftswarm: str


_GRPC_STATUS = re.compile(r"rpc error: code = \w+ desc = ")


def _message_difference(docker: str, raftswarm: str) -> str:
    """What kind of difference two messages show: "rpc" (the same, but for the gRPC status that dockerd passes
    through from SwarmKit: `rpc error: code = AlreadyExists desc = ...`), "message+" (raftswarm's holds all of
    Docker's words, in order, and adds to them) or "message"."""
    plain = _GRPC_STATUS.sub("", docker)
    if plain == raftswarm:
        return "rpc"
    if plain and _holds_in_order(raftswarm, plain):
        return "message+"
    return "message"


def _holds_in_order(longer: str, shorter: str) -> bool:
    position = 0
    for word in shorter.split():
        word = word.strip(",.:;") or word  # raftswarm may put the value it refuses between a word and its comma
        position = longer.find(word, position)
        if position < 0:
            return False
        position += len(word)
    return True


def _below(path: str, roots: set[str]) -> bool:
    return any(path.startswith(root) and path[len(root) : len(root) + 1] in (".", "[") for root in roots)


def _shape_differences(step: str, docker: Outcome, raftswarm: Outcome) -> list[Difference]:
    assert docker.shape is not None and raftswarm.shape is not None
    found: list[Difference] = []
    missing: set[str] = set()  # a path one side lacks stands for everything below it
    for path in sorted(docker.shape.keys() | raftswarm.shape.keys()):
        theirs, ours = docker.shape.get(path), raftswarm.shape.get(path)
        if _below(path, missing):
            continue
        if ours is None or theirs is None:
            # inside an array that is empty on the side that lacks it: nothing to see there
            side = raftswarm if ours is None else docker
            if not any(path.startswith(array + "[]") for array in side.empty_arrays):
                missing.add(path)
                found.append(Difference(step, "key", path, theirs or "(missing)", ours or "(missing)"))
        elif ours != theirs:
            found.append(Difference(step, "type", path, theirs, ours))
    return found


def _row_differences(step: str, docker: Outcome, raftswarm: Outcome) -> list[Difference]:
    assert docker.rows is not None and raftswarm.rows is not None
    found = []
    for name in sorted(docker.rows.keys() | raftswarm.rows.keys()):
        theirs, ours = docker.rows.get(name), raftswarm.rows.get(name)
        if theirs is None or ours is None:
            shown = json.dumps(theirs or ours, sort_keys=True)
            found.append(
                Difference(step, "row", name, shown if theirs else "(missing)", shown if ours else "(missing)")
            )
            continue
        for key in sorted(theirs.keys() | ours.keys()):
            if theirs.get(key) != ours.get(key):
                found.append(
                    Difference(step, "value", f"{name}.{key}", theirs.get(key, "(missing)"), ours.get(key, "(missing)"))
                )
    return found


def differences(step: str, docker: Outcome, raftswarm: Outcome) -> list[Difference]:
    found = []
    if docker.exit != raftswarm.exit:
        found.append(Difference(step, "exit", "", str(docker.exit), str(raftswarm.exit)))
    if docker.message != raftswarm.message:
        aspect = _message_difference(docker.message, raftswarm.message)
        found.append(Difference(step, aspect, "", docker.message, raftswarm.message))
    if docker.output != raftswarm.output:
        found.append(Difference(step, "output", "", docker.output or "", raftswarm.output or ""))
    if docker.shape is not None and raftswarm.shape is not None:
        found += _shape_differences(step, docker, raftswarm)
    elif (docker.shape is None) != (raftswarm.shape is None):
        found.append(
            Difference(
                step, "output", "", "JSON" if docker.shape else "no JSON", "JSON" if raftswarm.shape else "no JSON"
            )
        )
    if docker.rows is not None and raftswarm.rows is not None:
        found += _row_differences(step, docker, raftswarm)
    return found


@dataclass(frozen=True)
class Allowed:
    """A difference that is accepted, and why. `step`, `aspect`, `where` and `raftswarm` (what raftswarm
    showed) are fnmatch patterns, or several separated by `|`."""

    step: str
    aspect: str
    where: str
    reason: str
    raftswarm: str = "*"

    def covers(self, difference: Difference) -> bool:
        return all(
            any(fnmatch.fnmatchcase(value, alternative) for alternative in pattern.split("|"))
            for value, pattern in (
                (difference.step, self.step),
                (difference.aspect, self.aspect),
                (difference.where, self.where),
                (difference.raftswarm, self.raftswarm),
            )
        )


def table(rows: list[Difference], allowed: list[Allowed] = (), width: int = 70) -> str:
    """The differences as a text table, one line each (long values cut); an allowed one is marked `=` and
    followed by its reason, once per reason."""

    def cell(text: str, size: int) -> str:
        text = " ".join(text.split())
        return text if len(text) <= size else text[: size - 1] + "~"

    lines = [f"  {'step':<34} {'what':<8} {'where':<46} {'Docker 20.10':<{width}} raftswarm"]
    explained: set[str] = set()
    for row in rows:
        reason = next((entry.reason for entry in allowed if entry.covers(row)), None)
        lines.append(
            f"{'=' if reason else '!'} {cell(row.step, 34):<34} {row.aspect:<8} {cell(row.where, 46):<46} "
            f"{cell(row.docker, width):<{width}} {cell(row.raftswarm, width)}"
        )
        if reason and reason not in explained:
            explained.add(reason)
            lines.append(f"    allowed: {reason}")
    return "\n".join(lines)
