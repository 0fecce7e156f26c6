"""Reading a compose file: bytes -> UTF-8 text -> YAML -> `${VAR}` interpolated from the given environment
(docker/cli `cli/compose/template`) -> a checked `StackConfig` (`sections`). Every problem raises
`ComposeError` naming the file, and the key path when there is one (``services.web.deploy.replicas``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ComposeError
from .fields import Invalid, at, fail, mapping
from .model import StackConfig
from .sections import stack_config


def load_stack(path: Path, environment: Mapping[str, str]) -> StackConfig:
    """Parse, interpolate and check the compose file at `path`. Raises `ComposeError`."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ComposeError(f"{path}: cannot read the compose file: {exc.strerror or exc}") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ComposeError(f"{path}: not UTF-8 text (byte {exc.start}); save the compose file as UTF-8") from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ComposeError(f"{path}: {where}invalid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ComposeError(f"{path}: invalid YAML: {exc}") from None
    try:
        if document is None:
            fail("", "the compose file is empty; it needs a `services:` section")
        top = _interpolate(mapping(document, ""), "", environment)
        return stack_config(path, top, environment)
    except Invalid as exc:
        raise ComposeError(f"{path}: {exc}") from None
    except RecursionError:
        raise ComposeError(f"{path}: the document is nested too deeply") from None


_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
_TEMPLATE = re.compile(rf"\$(?:(?P<escaped>\$)|(?P<named>{_NAME})|\{{(?P<braced>[^}}]*)\}}|(?P<invalid>))")
_BRACED = re.compile(rf"(?P<name>{_NAME})(?:(?P<operator>:-|-|:\?|\?)(?P<argument>.*))?", re.DOTALL)


def _interpolate(value: Any, path: str, environment: Mapping[str, str]) -> Any:
    """Substitute variables in every string value (not in keys, as docker does)."""
    if isinstance(value, str):
        return _substitute(value, path, environment)
    if isinstance(value, dict):
        return {key: _interpolate(item, at(path, key), environment) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, at(path, index), environment) for index, item in enumerate(value)]
    return value


def _substitute(template: str, path: str, environment: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return environment.get(match["named"], "")
        braced = match["braced"]
        parsed = _BRACED.fullmatch(braced) if braced is not None else None
        if parsed is None:
            fail(path, f"invalid interpolation format in {template!r}; write $$ for a literal $")
        name, operator, argument = parsed["name"], parsed["operator"], parsed["argument"] or ""
        value = environment.get(name)
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return argument if value is None else value
        if operator in (":?", "?") and (value is None or (operator == ":?" and not value)):
            fail(path, f"required variable {name} is missing a value: {argument}")
        return value or ""

    return _TEMPLATE.sub(replace, template)
