"""Placement constraints and preferences as Docker writes them (`node.labels.zone==a`, spread over
`node.labels.<name>`): parsed here once, for the spec check at the API edge and for the scheduler."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import RaftswarmError


class InvalidPlacement(RaftswarmError):
    """A placement constraint or preference cannot be understood; nothing was scheduled."""


# Constraint syntax, from SwarmKit's manager/constraint: a key such as node.labels.zone, then == or !=,
# then a value that cannot contain an operator character (so future operators like < stay free).
_KEY_PATTERN = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)


_VALUE_PATTERN = re.compile(r"^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$", re.IGNORECASE)


_OPERATORS = ("==", "!=")


_NODE_FIELDS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")


NODE_LABEL_PREFIX = "node.labels."


@dataclass(frozen=True, slots=True)
class Constraint:
    """One parsed placement constraint. Values compare case-insensitively and whole, as in Docker;
    label names (after `node.labels.`) are case-sensitive."""

    key: str
    operator: str
    value: str

    def _field(self) -> tuple[str, str]:
        """("field", name) for node.id and friends, ("label", label name) for node.labels.<name>."""
        lowered = self.key.lower()
        if lowered.startswith(NODE_LABEL_PREFIX):
            return "label", self.key[len(NODE_LABEL_PREFIX) :]
        return "field", lowered

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"


def parse_constraint(text: str) -> Constraint:
    """Parse one constraint such as ``node.labels.zone==a`` or ``node.role != manager``.

    Supported keys: node.id, node.hostname, node.role, node.platform.os, node.platform.arch and
    node.labels.<name>. Raises `InvalidPlacement` saying what is wrong with the text.
    """
    for operator in _OPERATORS:
        if operator not in text:
            continue
        key, _, value = text.partition(operator)
        key, value = key.strip(), value.strip()
        if not _KEY_PATTERN.match(key):
            raise InvalidPlacement(
                f"invalid constraint {text!r}: key {key!r} is invalid; a key is a name such as node.labels.zone"
            )
        if not _VALUE_PATTERN.match(value):
            raise InvalidPlacement(
                f"invalid constraint {text!r}: value {value!r} is invalid; a value is a non-empty word"
                " without operator characters such as =, !, <, >"
            )
        constraint = Constraint(key, operator, value)
        kind, name = constraint._field()
        # SwarmKit accepts unknown keys and then matches no node; a typo like node.lables.zone would leave
        # the service pending forever with no hint, so it is rejected here.
        if kind == "field" and name not in _NODE_FIELDS:
            raise InvalidPlacement(
                f"invalid constraint {text!r}: unsupported key {key!r}; use one of "
                f"{', '.join(_NODE_FIELDS)} or node.labels.<name>"
            )
        return constraint
    raise InvalidPlacement(f"invalid constraint {text!r}: expected one operator from {', '.join(_OPERATORS)}")


def spread_label(preference: dict[str, Any]) -> str:
    descriptor = (preference.get("Spread") or {}).get("SpreadDescriptor", "")
    if descriptor.lower().startswith(NODE_LABEL_PREFIX) and len(descriptor) > len(NODE_LABEL_PREFIX):
        return descriptor[len(NODE_LABEL_PREFIX) :]
    raise InvalidPlacement(
        f"invalid placement preference {preference!r}: only spread over node.labels.<name> is supported,"
        " e.g. {'Spread': {'SpreadDescriptor': 'node.labels.zone'}}"
    )
