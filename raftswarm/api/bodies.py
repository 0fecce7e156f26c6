"""Reading request bodies: a JSON object, and typed fields of it, each failure a 400 with a message saying
which field is wrong -- so handlers need no broad exception catching that could hide their own bugs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..manager.controlapi import ControlError

_MISSING = object()


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; with `optional`, an empty body is an empty object."""
    if optional and not request.can_read_body:
        return {}
    try:
        body = await request.json(loads=json.loads)
    except ValueError as exc:
        raise ControlError(f"the request body is not valid JSON: {exc}") from None
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
