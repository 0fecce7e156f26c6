"""The toolkit specs are checked with at the API edge: one check per field kind, each called with the value
and its path (`TaskTemplate.ContainerSpec.Image`), raising `InvalidSpec` that starts with that path. Keys are
matched the way Go's JSON decoding matches them (case-insensitively) and renamed to Docker's spelling, and
nulls mean "not given", as the docker SDK sends them."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

from ..errors import ControlError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1  # Docker's integers are int64 unless the API says uint64 or uint32
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class InvalidSpec(ControlError):
    """A spec that cannot be accepted; the message names the field path
    (e.g. 'TaskTemplate.RestartPolicy.Condition'). The API answers 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


Check = Callable[[Any, str], Any]
"""A field check: called with the value and its path; raises `InvalidSpec` naming the path."""


def fail(path: str, problem: str) -> NoReturn:
    raise InvalidSpec(f"{path}: {problem}")


def at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def shown(value: Any) -> str:
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


def an_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, f"must be a JSON object, got {shown(value)}")
    return value


def required_field(parent: dict[str, Any], key: str, path: str, hint: str) -> Any:
    if key not in parent:
        fail(at(path, key), f"required; {hint}")
    return parent[key]


def integer(value: Any, path: str, minimum: int = 0, maximum: int = INT64_MAX, meaning: str = "") -> int:
    if maximum >= INT64_MAX:
        expected = f"an integer >= {minimum}{meaning}"
    else:
        expected = f"an integer from {minimum} to {maximum}{meaning}"
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        fail(path, f"must be {expected}, got {shown(value)}")
    return value


def int_in(minimum: int = 0, maximum: int = INT64_MAX, meaning: str = "") -> Check:
    """The check of an integer field in [minimum, maximum]; `meaning` says what the number is, for the message."""
    return lambda value, path: integer(value, path, minimum, maximum, meaning)


def duration(value: Any, path: str) -> int:
    return integer(value, path, meaning=" (a duration in nanoseconds; 5 s is 5000000000)")


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, f"must be a string, got {shown(value)}")
    return value


def non_empty_string(value: Any, path: str, problem: str = "must not be empty") -> str:
    if string(value, path) == "":
        fail(path, problem)
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, f"must be true or false, got {shown(value)}")
    return value


def base64_string(value: Any, path: str) -> str:
    """Go's []byte in JSON: a standard base64 string, which Go decoding (so every client) would refuse otherwise."""
    try:
        base64.b64decode(string(value, path).replace("\r", "").replace("\n", ""), validate=True)
    except binascii.Error as exc:
        fail(path, f"must be base64 (standard alphabet, with = padding): {exc}")
    return value


def choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        fail(path, f"must be one of {', '.join(choices)}; got {shown(value)}")
    return value


def one_of(*choices: str) -> Check:
    return lambda value, path: choice(value, path, choices)


def array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        fail(path, f"must be a JSON array, got {shown(value)}")
    return value


def strings(value: Any, path: str) -> list[str]:
    items = array(value, path)
    for index, item in enumerate(items):
        string(item, at(path, index))
    return items


def objects_in(value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    return [(at(path, index), an_object(item, at(path, index))) for index, item in enumerate(array(value, path))]


def array_of(check: Check) -> Check:
    def checked(value: Any, path: str) -> list[Any]:
        for index, item in enumerate(array(value, path)):
            check(item, at(path, index))
        return value

    return checked


def string_map(value: Any, path: str) -> dict[str, str]:
    """Labels, options, sysctls: an object of strings."""
    for key, item in an_object(value, path).items():
        string(item, at(path, key))
    return value


def go_folded(key: str) -> str:
    # Go's encoding/json matches a key to a field name with Unicode simple case folding, under which the
    # Kelvin sign (U+212A) equals k and the long s (U+017F) equals s; lower() covers the first.
    return key.lower().replace("\u017f", "s")


def canonical_keys(parent: dict[str, Any], names: Iterable[str]) -> None:
    """Rename, in place, each key of `parent` that Go's JSON decoding would match to one of `names` to that
    spelling. Where several keys match one name the last wins, as in Go."""
    spelling = {go_folded(name): name for name in names}
    if all(key in spelling.values() or go_folded(key) not in spelling for key in parent):
        return
    renamed: dict[str, Any] = {}
    for key, value in parent.items():
        renamed[spelling.get(go_folded(key), key)] = value
    parent.clear()
    parent.update(renamed)


def check_fields(
    parent: dict[str, Any], path: str, schema: Mapping[str, Check], required: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check the fields of `parent` that `schema` names, each with its check, after renaming keys to Docker's
    spelling (`canonical_keys`); `required` maps fields that must be there to a hint for the user."""
    canonical_keys(parent, schema)
    for key, hint in (required or {}).items():
        required_field(parent, key, path, hint)
    for key, check in schema.items():
        if key in parent:
            check(parent[key], at(path, key))
    if (unknown := _unknown_fields.get()) is not None:
        unknown.extend(at(path, key) for key in parent if key not in schema)
    return parent


_unknown_fields: ContextVar[list[str] | None] = ContextVar("unknown_fields", default=None)


@contextmanager
def collecting_unknown_fields() -> Iterator[list[str]]:
    """The paths of the fields no schema knows, met by the checks run inside this block (the checks keep such
    fields as given, as Docker's JSON decoding would drop them: a caller says so in its Warnings)."""
    found: list[str] = []
    token = _unknown_fields.set(found)
    try:
        yield found
    finally:
        _unknown_fields.reset(token)


def object_of(schema: Mapping[str, Check], required: Mapping[str, str] | None = None) -> Check:
    """The check of an object field whose own fields are `schema`."""
    return lambda value, path: check_fields(an_object(value, path), path, schema, required)


def unsupported(reason: str) -> Check:
    def refuse(value: Any, path: str) -> NoReturn:
        fail(path, reason)

    return refuse


def check_field(parent: dict[str, Any], path: str, key: str, check: Any, *args: Any) -> Any:
    """Run `check(value, path, *args)` on parent[key] if the key is there; return the value or None."""
    if key not in parent:
        return None
    return check(parent[key], at(path, key), *args)


def without_nulls(value: Any) -> Any:
    """A deep copy without the object members that are null: Docker's Go decoding reads `"Args": null` as
    no Args, and clients (the docker SDK) send such nulls for every option left unset."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def validated(
    body: Any, what: str, schema: Mapping[str, Check], required: Mapping[str, str] | None = None
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSpec(f"{what} must be a JSON object, got {shown(body)}")
    return check_fields(without_nulls(body), "", schema, required)
