"""The readers a compose file's values are checked with: one per kind of value, each called with the value and
its key path (``services.web.deploy.replicas``), returning the value as the specs want it (durations in
nanoseconds, sizes in bytes) or raising `Invalid` that names the path; `load_stack` adds the file name.

They are the compose twin of `raftswarm.objects.validation`, which checks API bodies. What is the same is
shared: key paths are built with its `at`, and integers are int64 (`INT64_MAX`) on both sides. The rest
differs by design, because a compose file is YAML a user wrote and not a JSON body a client sent:

- the error is `ComposeError` about the user's file, not `InvalidSpec` (an HTTP 400);
- a value is shown with the type YAML gave it (``got str '10s'``, ``got null None``), since in YAML it is the
  writing (`10` or `"10"`) that decides the type, and that is what the user must change;
- scalars are read as docker/cli's loader reads them: interpolation makes every value a string, so
  ``"${REPLICAS}"`` is cast back to an integer and ``"true"`` to a boolean, and a label may be a number;
- values come in Docker's human units ("1m30s", "512M", "0.5" CPUs), not as API integers;
- an explicit null means "not given" (``ports:`` with nothing after it), and keys are matched exactly, not
  with Go's case folding: they are YAML keys, not JSON field names.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NoReturn

from ..objects.defaults import NANOSECONDS
from ..objects.validation import INT64_MAX, at

__all__ = [
    "Invalid",
    "Reader",
    "at",
    "boolean",
    "byte_size",
    "choice",
    "command",
    "duration",
    "fail",
    "fields_of",
    "given",
    "integer",
    "key_values",
    "labels",
    "list_of",
    "mapping",
    "nano_cpus",
    "only",
    "ratio",
    "required",
    "scalar_text",
    "shown",
    "string",
    "string_or_list",
    "strings",
]


class Invalid(Exception):
    """A problem at a key path; `load_stack` adds the file name."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)


Reader = Callable[[Any, str], Any]
"""A field reader: called with the value and its key path; returns the value read or raises `Invalid`."""


def fail(path: str, problem: str) -> NoReturn:
    raise Invalid(path, problem)


def shown(value: Any) -> str:
    """A value with the type YAML gave it, short enough for an error message."""
    kind = "null" if value is None else type(value).__name__
    text = repr(value)
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def given(parent: dict[str, Any], key: str, default: Any) -> Any:
    """The value at `key`; an absent key or an explicit null (`ports:` with nothing after it) is `default`."""
    value = parent.get(key)
    return default if value is None else value


def required(parent: dict[str, Any], key: str, path: str, hint: str) -> Any:
    if parent.get(key) is None:
        fail(at(path, key), f"is required; {hint}")
    return parent[key]


def mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path or "top level", f"must be a mapping, got {shown(value)}")
    for key in value:
        if not isinstance(key, str):
            fail(path or "top level", f"keys must be strings, got {shown(key)}")
    return value


def only(value: dict[str, Any], path: str, allowed: frozenset[str] | set[str]) -> None:
    """Refuse keys outside `allowed`; `x-` keys are the user's own (compose extension fields)."""
    for key in value:
        if key not in allowed and not key.startswith("x-"):
            fail(at(path, key), f"unknown option; expected one of {', '.join(sorted(allowed))}")


def fields_of(value: Any, path: str, readers: dict[str, Reader]) -> dict[str, Any]:
    """A mapping whose keys are those of `readers`, each value read by its reader; nulls are left out."""
    section = mapping(value, path)
    only(section, path, set(readers))
    return {
        key: readers[key](item, at(path, key)) for key, item in section.items() if item is not None and key in readers
    }


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, f"must be a string, got {shown(value)}")
    return value


def scalar_text(value: Any, path: str) -> str:
    """A label or environment value: YAML numbers and booleans are written the way Go prints them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    fail(path, f"must be a string, number or boolean, got {shown(value)}")


def list_of(value: Any, path: str, items: str) -> list[Any]:
    """A list; `items` says what it holds, for the message."""
    if not isinstance(value, list):
        fail(path, f"must be a list of {items}, got {shown(value)}")
    return value


def strings(value: Any, path: str) -> list[str]:
    return [string(item, at(path, index)) for index, item in enumerate(list_of(value, path, "strings"))]


def string_or_list(value: Any, path: str) -> list[str]:
    """docker/cli's StringList: one string, or a list of them (`dns: 8.8.8.8`, `env_file: [a.env, b.env]`)."""
    return [value] if isinstance(value, str) else strings(value, path)


def integer(value: Any, path: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    # An interpolated "${REPLICAS}" arrives as a string; docker casts such values back to numbers.
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"must be an integer, got {shown(value)}")
    if not minimum <= value <= maximum:
        fail(path, f"must be from {minimum} to {maximum}, got {value}")
    return value


def boolean(value: Any, path: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        fail(path, f"must be true or false, got {shown(value)}")
    return value


def choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        fail(path, f"must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def ratio(value: Any, path: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        fail(path, f"must be a number from 0 to 1, got {shown(value)}")
    return float(value)


def key_values(value: Any, path: str, allow_missing: bool = False) -> dict[str, str | None]:
    """A `KEY=VALUE` list or a mapping. A list entry without `=` is None when allowed, else ""."""
    result: dict[str, str | None] = {}
    if isinstance(value, list):
        for index, item in enumerate(value):
            key, equals, text = string(item, at(path, index)).partition("=")
            if not key:
                fail(at(path, index), f"must be KEY=VALUE, got {item!r}")
            result[key] = text if equals else (None if allow_missing else "")
        return result
    for key, item in mapping(value, path).items():
        if item is None:
            result[key] = None if allow_missing else ""
        else:
            result[key] = scalar_text(item, at(path, key))
    return result


def labels(value: Any, path: str) -> dict[str, str]:
    return {key: text or "" for key, text in key_values(value, path).items()}


def command(value: Any, path: str) -> list[str]:
    """A list, or a string split as a shell would (docker uses shlex too)."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            fail(path, f"cannot split {value!r} into words: {exc}")
    return strings(value, path)


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # Go accepts both the micro sign and the Greek mu
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NANOSECONDS,
    "m": 60 * NANOSECONDS,
    "h": 3600 * NANOSECONDS,
}


def duration(value: Any, path: str) -> int:
    """Go's time.ParseDuration ("1m30s", "1.5s", "0"), in nanoseconds; negative durations are refused."""
    text = string(value, path)
    if text == "0":
        return 0
    if len(text) > 100:
        fail(path, "duration is too long")
    position, total = 0, Fraction(0)
    for match in _DURATION_PART.finditer(text):
        number = match[1]
        if match.start() != position or number in ("", "."):
            break
        total += Fraction(number) * _DURATION_UNITS[match[2]]
        position = match.end()
    if position != len(text) or not text:
        fail(path, f'must be a duration like "10s", "1m30s" or "500ms", got {text!r}')
    if total > INT64_MAX:
        fail(path, f"duration {text!r} is too long")
    return int(total)


_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?) ?([kKmMgGtTpP])?[iI]?[bB]?")


def byte_size(value: Any, path: str) -> int:
    """docker/go-units RAMInBytes: "512M", "1.5g", "1024" -- binary multiples."""
    if isinstance(value, int) and not isinstance(value, bool):
        return integer(value, path)
    match = _SIZE.fullmatch(string(value, path))
    if match is None:
        fail(path, f'must be a size like "512M" or "1G", got {value!r}')
    power = " kmgtp".index((match[2] or " ").lower())
    amount = int(Fraction(match[1]) * 1024**power)
    if amount > INT64_MAX:
        fail(path, f"size {value!r} is too large")
    return amount


def nano_cpus(value: Any, path: str) -> int:
    """docker/cli opts.ParseCPUs: "0.5" -> 500000000; finer than a nano-CPU is refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        fail(path, f'must be a number of CPUs like "0.5", got {shown(value)}')
    text = str(value)
    if not re.fullmatch(r"[0-9]{1,10}(?:\.[0-9]{1,20})?", text):
        fail(path, f'must be a number of CPUs like "0.5", got {text!r}')
    nanos = Fraction(text) * 10**9
    if nanos.denominator != 1:
        fail(path, f"{text} CPUs is too precise: the unit is a billionth of a CPU")
    return int(nanos)
