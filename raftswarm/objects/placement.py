"""Placement constraints and preferences as Docker writes them (`node.labels.zone==a`,
`engine.labels.disk==ssd`, spread over `node.labels.<name>`): parsed here once, for the spec check at the API
edge, the scheduler and the global orchestrators, and matched against nodes by SwarmKit's rules
(manager/constraint)."""

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
"""A node's own labels, Spec.Labels (`docker node update --label-add`)."""

ENGINE_LABEL_PREFIX = "engine.labels."
"""The labels its daemon was started with, Description.Engine.Labels (`raftswarm-node --label`, dockerd's)."""

_LABEL_PREFIXES = (NODE_LABEL_PREFIX, ENGINE_LABEL_PREFIX)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One parsed placement constraint. Values compare case-insensitively and whole, as in Docker; keys
    case-insensitively too, but label names (after `node.labels.` or `engine.labels.`) are case-sensitive."""

    key: str
    operator: str
    value: str

    @property
    def subject(self) -> tuple[str, str]:
        """What of a node the constraint reads: ("", "node.id") and the other fields by name (lower case),
        (NODE_LABEL_PREFIX, name) or (ENGINE_LABEL_PREFIX, name) for a label."""
        lowered = self.key.lower()
        for prefix in _LABEL_PREFIXES:
            if lowered.startswith(prefix):
                return prefix, self.key[len(prefix) :]
        return "", lowered

    def matches(self, node: dict[str, Any]) -> bool:
        """Whether Docker-shaped `node` satisfies the constraint; a missing field or label reads as "", which
        `==` never matches and `!=` always does (SwarmKit's NodeMatches)."""
        prefix, name = self.subject
        if prefix:
            actual = node_labels(node, prefix).get(name, "")
        else:
            actual = node_fields(node)[name]
        return (actual.casefold() == self.value.casefold()) == (self.operator == "==")

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"


def node_fields(node: dict[str, Any]) -> dict[str, str]:
    """A node's values for the constraint keys that name a field ("" where the node has none)."""
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    platform = description.get("Platform") or {}
    return {
        "node.id": node.get("ID") or "",
        "node.hostname": description.get("Hostname") or "",
        "node.role": spec.get("Role") or "",
        "node.platform.os": platform.get("OS") or "",
        "node.platform.arch": platform.get("Architecture") or "",
    }


def node_labels(node: dict[str, Any], prefix: str) -> dict[str, str]:
    """A node's labels that constraints starting with `prefix` (NODE_LABEL_PREFIX or ENGINE_LABEL_PREFIX) read."""
    if prefix == NODE_LABEL_PREFIX:
        return (node.get("Spec") or {}).get("Labels") or {}
    return ((node.get("Description") or {}).get("Engine") or {}).get("Labels") or {}


def parse_constraint(text: str) -> Constraint:
    """Parse one constraint such as ``node.labels.zone==a`` or ``node.role != manager``.

    Supported keys: node.id, node.hostname, node.role, node.platform.os, node.platform.arch,
    node.labels.<name> and engine.labels.<name>. Raises `InvalidPlacement` saying what is wrong with the text.
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
        prefix, name = constraint.subject
        # SwarmKit accepts unknown keys and then matches no node; a typo like node.lables.zone would leave
        # the service pending forever with no hint, so it is rejected here. So is a label without a name.
        if (not prefix and name not in _NODE_FIELDS) or (prefix and not name):
            raise InvalidPlacement(
                f"invalid constraint {text!r}: unsupported key {key!r}; use one of "
                f"{', '.join(_NODE_FIELDS)}, node.labels.<name> or engine.labels.<name>"
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
