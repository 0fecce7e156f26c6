"""Reading compose files: bytes -> UTF-8 text -> YAML -> `${VAR}` interpolated from the given environment
(docker/cli `cli/compose/template`) -> a checked `StackConfig` per file (`sections`) -> one, merged (`merge`) and
checked whole. Every problem raises `ComposeError` naming the file, and the key path when there is one
(``services.web.deploy.replicas``); a problem only the merged files show names them all.

As `docker stack deploy -c a.yml -c b.yml`: a file named "-" is read from stdin, and relative paths in every
file (bind sources, env_file, secret and config files) are resolved against the first file's directory, or the
current directory when the first file is stdin."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from ..errors import ComposeError
from .fields import Invalid, at, fail, given, mapping
from .merge import merge_stacks
from .model import StackConfig
from .sections import check_stack, definitions, stack_config
from .service import unsupported_warnings

STDIN = Path("-")
"""The compose file name that means stdin, as docker's `-c -`."""

_STDIN_NAME = "<stdin>"


def load_stack(
    files: Path | Sequence[Path], environment: Mapping[str, str], stdin: BinaryIO | None = None
) -> StackConfig:
    """Parse, interpolate, check and merge the compose files (later ones override earlier ones); `STDIN` is read
    from `stdin`. Raises `ComposeError`."""
    paths = [files] if isinstance(files, Path) else list(files)
    if not paths:
        raise ComposeError("specify a Compose file (with --compose-file)")
    if paths.count(STDIN) > 1:
        raise ComposeError('stdin can be read once: give "-" as one compose file only')
    working_dir = Path.cwd() if paths[0] == STDIN else Path(os.path.abspath(paths[0])).parent
    tops = [(_name(path), _document(path, environment, stdin)) for path in paths]
    defined = definitions([top for _, top in tops])  # each section was found a mapping by `_document`
    config: StackConfig | None = None
    for path, (name, top) in zip(paths, tops, strict=True):
        try:
            checked = stack_config(path, top, environment, working_dir, defined)
        except Invalid as exc:
            raise ComposeError(f"{name}: {exc}") from None
        checked = replace(checked, files=(name,))
        config = checked if config is None else merge_stacks(config, checked)
    assert config is not None
    try:
        check_stack(config)
    except Invalid as exc:
        raise ComposeError(f"{config.origin}: {exc}") from None
    services = [given(top, "services", {}) for _, top in tops]
    ignored = unsupported_warnings([definition for section in services for definition in section.values()])
    return replace(config, warnings=[*ignored, *config.warnings])


def _name(path: Path) -> str:
    return _STDIN_NAME if path == STDIN else str(path)


def _document(path: Path, environment: Mapping[str, str], stdin: BinaryIO | None) -> dict[str, Any]:
    """One compose file's top-level mapping, interpolated."""
    name = _name(path)
    try:
        if path == STDIN:
            if stdin is None:
                raise ComposeError('a compose file named "-" is read from stdin, and there is none here')
            source = stdin.read()
        else:
            source = path.read_bytes()
    except OSError as exc:
        raise ComposeError(f"{name}: cannot read the compose file: {exc.strerror or exc}") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ComposeError(f"{name}: not UTF-8 text (byte {exc.start}); save the compose file as UTF-8") from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ComposeError(f"{name}: {where}invalid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ComposeError(f"{name}: invalid YAML: {exc}") from None
    try:
        if document is None:
            fail("", "the compose file is empty; it needs a `services:` section")
        top = _interpolate(mapping(document, ""), "", environment)
        for section in ("services", "networks", "volumes", "secrets", "configs"):
            mapping(given(top, section, {}), section)
        for service_name, definition in given(top, "services", {}).items():
            mapping(definition, at("services", service_name))
        return top
    except Invalid as exc:
        raise ComposeError(f"{name}: {exc}") from None
    except RecursionError:
        raise ComposeError(f"{name}: the document is nested too deeply") from None


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
    def substitute(match: re.Match[str]) -> str:
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

    return _TEMPLATE.sub(substitute, template)
