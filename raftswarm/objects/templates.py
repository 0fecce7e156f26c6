"""Docker's service templates: `{{.Service.Name}}`, `{{.Task.Slot}}`, `{{.Node.Hostname}}`... in a task's
Hostname, Env values and mounts.

swarmkit expands them on the worker just before the container is made (template/expand.go
ExpandContainerSpec), from the task and the node it runs on (template/context.go NewContext), with Go's
text/template and `missingkey=error`. The fields are:

    .Service.ID  .Service.Name  .Service.Labels (a map: .Service.Labels.tier)
    .Node.ID  .Node.Hostname  .Node.Platform.OS  .Node.Platform.Architecture
    .Task.ID  .Task.Name (service.slot.taskid, service.nodeid.taskid for a global service)
    .Task.Slot (the node ID for a global service)

This is the part of text/template those fields need: text, and actions that are a field chain
(`{{.Task.Name}}`, `{{ .Service.Labels.tier }}`, `{{.}}`), a string constant (`{{"{{"}}`, Go's way of
writing braces) or a comment, with Go's `{{-` and `-}}` trim markers. Other actions (range, if, functions,
variables) are refused, as are unknown fields and missing label keys, as Go refuses them. Values print as Go
prints them: a map as `map[k1:v1 k2:v2]`, a struct as `{v1 v2}`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .containerspec import InvalidContainerSpec


class TemplateError(InvalidContainerSpec):
    """A template that cannot be expanded: malformed, an unsupported action, or a field the context lacks."""


@dataclass(frozen=True)
class Struct:
    """A Go struct of the context (a map is a dict): its fields in declaration order."""

    fields: dict[str, Any]




def task_name(task: Mapping[str, Any]) -> str:
    """swarmkit's naming.Task: the task's own name if it has one, else service.slot.id (service.nodeid.id for
    a task of a global service)."""
    own = (task.get("Annotations") or {}).get("Name")
    if own:
        return own
    service = (task.get("ServiceAnnotations") or {}).get("Name", "")
    return f"{service}.{task.get('Slot') or task.get('NodeID', '')}.{task['ID']}"


def context_of(task: Mapping[str, Any], node: Mapping[str, Any] | None = None) -> Struct:
    """The values a template of `task` sees, on the node whose Description is `node` (None: no hostname or
    platform, as swarmkit's NewContext without one)."""
    service = task.get("ServiceAnnotations") or {}
    node_id = task.get("NodeID") or ""
    description = node or {}
    node_platform = description.get("Platform") or {}
    return Struct({
        "Service": Struct({
            "ID": task.get("ServiceID") or "",
            "Name": service.get("Name") or "",
            "Labels": dict(service.get("Labels") or {}),
        }),
        "Node": Struct({
            "ID": node_id,
            "Hostname": description.get("Hostname") or "",
            "Platform": Struct({
                "Architecture": node_platform.get("Architecture") or "",
                "OS": node_platform.get("OS") or "",
            }),
        }),
        "Task": Struct({
            "ID": task["ID"],
            "Name": task_name(task),
            "Slot": str(task["Slot"]) if task.get("Slot") else node_id,
        }),
    })


def expand_task(task: Mapping[str, Any], node: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `task` whose ContainerSpec has its templates expanded (see `expand_container_spec`)."""
    expanded = dict(task)
    expanded["Spec"] = {**(task.get("Spec") or {}), "ContainerSpec": expand_container_spec(task, node)}
    return expanded


def expand_container_spec(task: Mapping[str, Any], node: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the task's ContainerSpec with the templates of swarmkit's ExpandContainerSpec expanded: the
    values of Env (not the names), each mount (`expand_mount`) and Hostname. Raises TemplateError, naming the
    field, for a template that cannot be expanded."""
    container = copy.deepcopy(((task.get("Spec") or {}).get("ContainerSpec")) or {})
    context = context_of(task, node)
    if container.get("Env"):
        env = []
        for entry in container["Env"]:
            name, equals, value = entry.partition("=")
            env.append(f"{name}={_expand_field(value, context, f'env {name}')}" if equals else entry)
        container["Env"] = env
    if container.get("Mounts"):
        container["Mounts"] = [expand_mount(mount, context) for mount in container["Mounts"]]
    if container.get("Hostname"):
        container["Hostname"] = _expand_field(container["Hostname"], context, "the hostname")
    return container


def expand_mount(mount: Mapping[str, Any], context: Struct) -> dict[str, Any]:
    """A copy of a ContainerSpec mount with its Source, Target, VolumeOptions.Labels and
    VolumeOptions.DriverConfig.Options values expanded, as swarmkit's expandMounts does."""
    expanded = copy.deepcopy(dict(mount))
    for field in ("Source", "Target"):
        if expanded.get(field):
            expanded[field] = _expand_field(expanded[field], context, f"the mount {field.lower()}")
    volume = expanded.get("VolumeOptions") or {}
    if volume.get("Labels"):
        volume["Labels"] = _expand_map(volume["Labels"], context, "the volume label")
    driver = volume.get("DriverConfig") or {}
    if driver.get("Options"):
        driver["Options"] = _expand_map(driver["Options"], context, "the volume driver option")
    return expanded


def _expand_map(values: Mapping[str, str], context: Struct, what: str) -> dict[str, str]:
    return {key: _expand_field(value, context, f"{what} {key}") for key, value in values.items()}


def _expand_field(text: str, context: Struct, what: str) -> str:
    try:
        return expand(text, context)
    except TemplateError as exc:
        raise TemplateError(f'expanding {what} "{text}" failed: {exc}') from None


_SPACE = " \t\r\n"
"""What Go's template lexer counts as space around trim markers."""

_FIELD = re.compile(r"\.|(?:\.[^\W\d]\w*)+")
"""A field chain as Go writes one: `.`, or `.Name` repeated (a letter or underscore, then letters, digits, _)."""


def expand(text: str, context: Struct) -> str:
    """`text` with each action replaced by its value in `context`. Raises TemplateError."""
    out: list[str] = []
    position = 0
    while (start := text.find("{{", position)) >= 0:
        out.append(text[position:start])
        body_start = start + 2
        if text[body_start:body_start + 1] == "-" and text[body_start + 1:body_start + 2] in tuple(_SPACE):
            out[-1] = out[-1].rstrip(_SPACE)
            body_start += 2
        body_end, close_end, trim_right = _close_of(text, body_start)
        out.append(_evaluate(text[body_start:body_end].strip(_SPACE), context))
        position = close_end
        if trim_right:
            while position < len(text) and text[position] in _SPACE:
                position += 1
    out.append(text[position:])
    return "".join(out)


def _close_of(text: str, position: int) -> tuple[int, int, bool]:
    """Where the action whose body starts at `position` ends: (end of its body, just past its `}}`, whether a
    `-}}` trim marker closes it). String constants and comments in the body may hold braces."""
    if text.startswith("/*", text_start := _skip_space(text, position)):
        comment_end = text.find("*/", text_start + 2)
        if comment_end < 0:
            raise TemplateError(f"unclosed comment in {text!r}")
        position = comment_end + 2
    while position < len(text):
        char = text[position]
        if char in "\"'`":
            position = _end_of_quoted(text, position)
            continue
        if char in _SPACE and text.startswith("-}}", position + 1):
            return position, position + 4, True
        if text.startswith("}}", position):
            return position, position + 2, False
        position += 1
    raise TemplateError(f"unclosed action in {text!r}")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in _SPACE:
        position += 1
    return position


def _end_of_quoted(text: str, start: int) -> int:
    """Just past the quoted constant (Go's "...", `...` or '.') that starts at `start`."""
    quote = text[start]
    position = start + 1
    while position < len(text):
        char = text[position]
        if quote == "`":
            if char == "`":
                return position + 1
        elif char == "\\":
            position += 1
        elif char == "\n":
            break
        elif char == quote:
            return position + 1
        position += 1
    raise TemplateError(f"unterminated quoted string in {text!r}")


def _evaluate(body: str, context: Struct) -> str:
    if not body:
        raise TemplateError("missing value for command: an empty action {{}}")
    if body.startswith("/*") and body.endswith("*/"):
        return ""
    if body[0] in "\"`" and _end_of_quoted(body, 0) == len(body):
        return _unquote(body)
    if not _FIELD.fullmatch(body):
        raise TemplateError(
            f"the action {{{{{body}}}}} is not supported: only a field such as {{{{.Service.Name}}}}, a string "
            'constant such as {{"{{"}} or a comment'
        )
    value: Any = context
    reached = ""
    for name in body.split(".")[1:] if body != "." else []:
        if isinstance(value, Struct):
            if name not in value.fields:
                where = f" of {reached}" if reached else ""
                raise TemplateError(
                    f"at <{body}>: can't evaluate field {name}{where} (its fields: {', '.join(value.fields)})"
                )
            value = value.fields[name]
        elif isinstance(value, dict):
            if name not in value:
                raise TemplateError(f'at <{body}>: map has no entry for key "{name}"')
            value = value[name]
        else:
            raise TemplateError(f"at <{body}>: can't evaluate field {name} of {reached}, a string")
        reached += f".{name}"
    return _print(value)


def _print(value: Any) -> str:
    """As Go's fmt prints a value with %v."""
    if isinstance(value, Struct):
        return "{" + " ".join(_print(field) for field in value.fields.values()) + "}"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{_print(value[key])}" for key in sorted(value)) + "]"
    return str(value)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def _unquote(literal: str) -> str:
    """The value of a Go string constant: raw (`...`) as it is, interpreted ("...") with Go's escapes."""
    if literal[0] == "`":
        return literal[1:-1]
    out = []
    body = literal[1:-1]
    position = 0
    while position < len(body):
        char = body[position]
        if char != "\\":
            out.append(char)
            position += 1
            continue
        escape = body[position + 1:position + 2]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            position += 2
            continue
        digits = {"x": 2, "u": 4, "U": 8}.get(escape)
        code = body[position + 2:position + 2 + digits] if digits else body[position + 1:position + 4]
        try:
            out.append(chr(int(code, 16)) if digits else chr(int(code, 8)))
        except ValueError:
            raise TemplateError(f"invalid escape \\{escape} in the string {literal}") from None
        if digits and len(code) != digits or not digits and len(code) != 3:
            raise TemplateError(f"invalid escape \\{escape} in the string {literal}")
        position += 2 + digits if digits else 4
    return "".join(out)
