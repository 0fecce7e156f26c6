"""What docker's list commands (`ls`, `ps`) share: the --filter, --format and --quiet flags, and the one printer
of their records (dicts keyed like docker's formatter context: `ID`, `Hostname`, ...).

A list prints as the command's default table, as IDs (`-q`), as JSON lines (`--format json`: one compact object
per line with sorted keys, what docker's `{{json .}}` gives) or through a template. A template may use
`{{.Field}}`, `{{json .}}` and `{{json .Field}}`, optionally after `table ` to get aligned columns with headers;
Go's other template actions are refused with a message rather than printed wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from .errors import CommandError
from .output import json_line, print_table

FILTER_HELP = "Filter output based on conditions provided (name=value)"


def filter_option(help: str = FILTER_HELP) -> Callable[[Any], Any]:
    """`-f/--filter name=value`, repeatable (read with `options.parse_filters`)."""
    return click.option("-f", "--filter", "filters", multiple=True, help=help)


def format_option() -> Callable[[Any], Any]:
    """`--format`, read with `ListFormat`."""
    return click.option(
        "--format", "format_spec", help="Format output: table (default), json, or a {{.Field}} template"
    )


def quiet_option(help: str = "Only display IDs") -> Callable[[Any], Any]:
    return click.option("-q", "--quiet", is_flag=True, help=help)


_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


class ListFormat:
    """A list command's `--format` / `-q` choice. `None` and `"table"` mean the command's default table."""

    def __init__(self, spec: str | None, quiet: bool = False) -> None:
        self.spec = spec or "table"
        self.quiet = quiet
        self.is_json = self.spec == "json"
        self.is_table = self.spec.startswith("table")
        template = self.spec[len("table") :] if self.is_table else self.spec
        # Like docker: surrounding spaces dropped, literal \t and \n in a flag value mean tab and newline.
        self.template = template.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
        for action in _ACTION.findall(self.template):
            _check_action(action)

    @property
    def uses_default_table(self) -> bool:
        return self.is_table and not self.template and not self.quiet

    def print(
        self, records: Sequence[Mapping[str, Any]], headers: Mapping[str, str], columns: Sequence[str] | None = None
    ) -> None:
        """Print a list command's records. `headers` names the header of each field a template may show;
        the default table shows `columns` (every field of `headers` unless given)."""
        if self.uses_default_table:
            shown = list(headers) if columns is None else columns
            print_table([headers[c] for c in shown], [[r[c] for c in shown] for r in records])
        else:
            self.print_formatted(records, headers)

    def print_formatted(self, records: Sequence[Mapping[str, Any]], headers: Mapping[str, str]) -> None:
        """Print records in any form but the default table."""
        if self.is_json:
            for record in records:
                click.echo(json_line(dict(record)))
        elif self.is_table and not self.template:
            # `-q`: docker's quiet format `{{.ID}}`, which is not a table, so no header.
            for record in records:
                click.echo(record["ID"])
        elif self.is_table:
            cells = [self.template.split("\t")]
            header = [_ACTION.sub(lambda m: _header(m.group(1), headers), cell) for cell in cells[0]]
            rows = [self._render(record).split("\t") for record in records]
            print_table(header, rows)
        else:
            for record in records:
                click.echo(self._render(record))

    def _render(self, record: Mapping[str, Any]) -> str:
        return _ACTION.sub(lambda m: _evaluate(m.group(1), record), self.template)


def _check_action(action: str) -> None:
    if action == "json ." or _FIELD.fullmatch(action) or re.fullmatch(r"json\s+" + _FIELD.pattern, action):
        return
    raise CommandError(
        f"template parsing error: unsupported action {{{{{action}}}}}: "
        "raftswarm supports {{.Field}}, {{json .}} and {{json .Field}}"
    )


def _evaluate(action: str, record: Mapping[str, Any]) -> str:
    if action == "json .":
        return json_line(dict(record))
    name = _FIELD.search(action).group(1)  # type: ignore[union-attr]  # _check_action guarantees a field
    if name not in record:
        raise CommandError(f'template: executing "" at <.{name}>: can\'t evaluate field {name}')
    value = record[name]
    if action.startswith("json"):
        return json_line(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _header(action: str, headers: Mapping[str, str]) -> str:
    field = _FIELD.search(action)
    if field is None:
        return ""
    return headers.get(field.group(1), field.group(1).upper())
