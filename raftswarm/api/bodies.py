"""Reading request bodies: a JSON object, and typed fields of it, each failure a 400 with a message saying
which field is wrong -- so handlers need no broad exception catching that could hide their own bugs.

JSON is read as Docker's Go decoding reads it, and only what the store can keep gets in: NaN and Infinity
(which Python's json module accepts and Go refuses), numbers too large for 64 bits, strings with unpaired
UTF-16 surrogates (which cannot be encoded as UTF-8) and nesting deeper than `MAX_JSON_DEPTH` are all
refused as the client's error. Stored, any of them would fail every later reader of the object instead.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import ControlError

MAX_JSON_DEPTH = 64
"""How deeply arrays and objects may nest in a request body or a `filters` parameter. Docker's deepest
shapes nest 8 levels (ServiceSpec.TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.Options[][]), so this leaves
room for fields of newer clients while staying far below Python's recursion limit and msgpack's nesting
limit (511) in the store's encoding, past which a body would fail as a server error instead of a 400."""

_INT_MIN = -(2**63)  # Docker's integers are int64 ...
_INT_MAX = 2**64 - 1  # ... or uint64; msgpack, the store's encoding, holds nothing larger either

_MISSING = object()


class _Refused(ValueError):
    """JSON that parses but that Go would not decode or the store could not keep."""


def _integer(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _Refused(f"the number {text[:40]} does not fit in 64 bits")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"the number {text[:40]} is too large")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def parse_json(text: str | bytes, what: str) -> Any:
    """`text` as JSON (bytes in UTF-8, -16 or -32); `what` names it in the ControlError (400) that anything
    else raises, e.g. "the request body"."""
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise ControlError(f"{what} nests arrays and objects deeper than {MAX_JSON_DEPTH} levels") from None
    except _Refused as exc:
        raise ControlError(f"{what} cannot be accepted: {exc}") from None
    except ValueError as exc:  # also bytes that are not UTF-8 (UnicodeDecodeError)
        raise ControlError(f"{what} is not valid JSON: {exc}") from None
    _check_nesting_and_strings(value, what)
    return value


def _check_nesting_and_strings(value: Any, what: str) -> None:
    # Iterative: a recursive walk would itself fail on what it is meant to refuse.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ControlError(f"{what} nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                raise ControlError(f"{what} has a string with an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; with `optional`, an empty body (or null) is an empty object."""
    if optional and not request.can_read_body:
        return {}
    body = parse_json(await request.read(), "the request body")
    if body is None and optional:
        return {}
    if not isinstance(body, dict):
        raise ControlError("the request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """`body[name]`, which must be of `kind` (bool is not accepted as an int); `default` when absent."""
    if name not in body or body[name] is None:
        if default is _MISSING:
            raise ControlError(f"the request body needs the field {name!r}")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ControlError(f"field {name!r} must be {_names(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise ControlError(f"field {name!r} must be {_names(kinds)}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "an object"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)
