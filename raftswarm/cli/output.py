"""How the CLI writes values: docker's aligned tables, Go's JSON, and the small value formatters docker uses
(durations, sizes, times, "Ready" for "ready"). What list commands print with these is in `listing`.

Tables follow docker/cli's formatter: cells are aligned like Go's `text/tabwriter` with minimum width 10
and padding 3, the last column is not padded, headers are upper-case.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

# docker/cli's formatter.Context: tabwriter.NewWriter(out, 10, 1, 3, ' ', 0).
TABLE_MIN_WIDTH = 10
TABLE_PADDING = 3

# docker/cli's formatter.TruncateID: 12 characters, like short container IDs.
SHORT_ID_LENGTH = 12


def display_width(text: str) -> int:
    """Terminal columns `text` takes (wide East Asian characters count twice, as go-runewidth counts)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align rows the way docker's tabwriter does. Every cell but a row's last one belongs to a column and
    is padded to the column's width; the last cell is written as is."""
    widths: list[int] = []
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            width = max(TABLE_MIN_WIDTH, display_width(cell) + TABLE_PADDING)
            if index == len(widths):
                widths.append(width)
            else:
                widths[index] = max(widths[index], width)
    lines = []
    for row in rows:
        padded = [cell + " " * (widths[i] - display_width(cell)) for i, cell in enumerate(row[:-1])]
        lines.append("".join(padded) + (row[-1] if row else ""))
    return lines


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    for line in table_lines([header, *rows]):
        click.echo(line)


def json_line(value: Any) -> str:
    """One value as Go's encoding/json writes it: compact, map keys sorted, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pretty(value: Any) -> str:
    """docker's formatter.PrettyPrint: first letter upper-case, the rest lower-case ("ready" -> "Ready")."""
    text = "" if value is None else str(value)
    if len(text) <= 1:
        return text.lower()
    return text[0].upper() + text[1:].lower()


def natural_key(text: str) -> list[Any]:
    """Sort key that orders "node-2" before "node-10" (docker sorts by sortorder.NaturalLess)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def parse_timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as Docker's API writes it (nanoseconds, `Z`); None if absent or unreadable."""
    if not value:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{whole}.{micro}{zone}")


def go_time(value: str | None) -> str:
    """A timestamp the way Go prints a time.Time (`2024-05-01 10:00:00.123456789 +0000 UTC`), which is
    what `docker node inspect --pretty` shows for "Joined at"."""
    when = parse_timestamp(value)
    if when is None:
        return value or ""
    fraction = re.search(r"\.(\d+)", value or "")
    digits = fraction.group(1).rstrip("0") if fraction else ""
    offset = when.strftime("%z")
    zone = "UTC" if when.utcoffset() == UTC.utcoffset(None) else offset
    return when.strftime("%Y-%m-%d %H:%M:%S") + (f".{digits}" if digits else "") + f" {offset} {zone}"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "About a minute", "3 hours", "2 weeks"."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units with four significant digits ("1.944GiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.4g}{units[index]}"


def ellipsis(text: str, max_length: int) -> str:
    """docker's formatter.Ellipsis: cut to `max_length` columns, the last one an ellipsis."""
    if display_width(text) <= max_length:
        return text
    return text[: max_length - 1] + "…"


def go_duration(nanoseconds: int) -> str:
    """A duration the way Go's time.Duration prints it: "0s", "500ms", "10s", "1m30s", "1h0m0s"."""
    sign = "-" if nanoseconds < 0 else ""
    left = abs(int(nanoseconds))
    if left < 10**9:
        if left == 0:
            return "0s"
        if left < 10**3:
            return f"{sign}{left}ns"
        if left < 10**6:
            return f"{sign}{_decimal(left, 3)}µs"
        return f"{sign}{_decimal(left, 6)}ms"
    text = f"{_decimal(left % (60 * 10**9), 9)}s"
    minutes = left // (60 * 10**9)
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes >= 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _decimal(value: int, digits: int) -> str:
    """`value` / 10**digits with the fraction's trailing zeros dropped, as Go's fmtFrac writes it."""
    whole, fraction = divmod(value, 10**digits)
    fraction_text = str(fraction).rjust(digits, "0").rstrip("0")
    return f"{whole}.{fraction_text}" if fraction_text else str(whole)


def go_float(value: float) -> str:
    """A number as Go's %v prints a float: "0", "0.5", "2" (no trailing ".0")."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)
