"""Flag values parsed the way docker parses them: Go durations, node addresses, `key=value` filters and labels,
CPU counts and memory sizes. A bad value is a click usage error (exit status 2), like any other bad flag."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import click

# time.ParseDuration's units, in nanoseconds.
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

SWARM_PORT = 2377
DEFAULT_LISTEN_ADDR = f"0.0.0.0:{SWARM_PORT}"


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration ("90h", "1h30m", "500ms") -> nanoseconds, the unit of Docker's API durations."""
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body == "0":
        return 0
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f'invalid duration "{text}" (use a number and a unit: ns, us, ms, s, m, h — e.g. 2160h)')
    return sign * round(total)


_DATE_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?)?(?:([Zz])|([+-])(\d\d):(\d\d))?"
)
_UNIX_TIME = re.compile(r"-?\d+(?:\.\d+)?")


def docker_timestamp(value: str, now: float) -> str:
    """docker's timetypes.GetTimestamp, for `--since`: the API's unix `seconds[.nanoseconds]` from a Go
    duration before `now` ("42m"), an RFC 3339 date or time ("2013-01-02T13:23:37Z"; local time when it has
    no zone), or unix seconds, passed on as given. Raises ValueError with docker's message."""
    if value != "0":
        try:
            return str(math.floor(now - parse_go_duration(value) / 1e9))
        except ValueError:
            pass
    match = _DATE_TIME.fullmatch(value)
    if match is not None:
        year, month, day, hour, minute, second, fraction, utc, sign, zone_hours, zone_minutes = match.groups()
        zone = None
        if utc:
            zone = UTC
        elif sign:
            offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
            zone = timezone(offset if sign == "+" else -offset)
        try:
            when = datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=zone
            )
        except ValueError as exc:
            raise ValueError(f'parsing time "{value}": {exc}') from None
        seconds = int((when if zone else when.astimezone()).timestamp())
        return f"{seconds}.{int((fraction or '').ljust(9, '0')):09d}"
    if "-" in value and not _UNIX_TIME.fullmatch(value):
        raise ValueError(f'parsing time "{value}": not an RFC 3339 date or time')
    if not _UNIX_TIME.fullmatch(value):
        raise ValueError(f'failed to parse value as time or duration: "{value}"')
    return value


class ParsedFlag(click.ParamType):
    """A flag whose text `parse` turns into its value (a value that is not text, such as a default, is kept);
    the ValueError of a bad text is a usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


GO_DURATION = ParsedFlag("duration", parse_go_duration)
"""A Go duration flag ("90s", "1h30m"); the value is in nanoseconds."""


class NodeAddr(click.ParamType):
    """`<ip|interface>[:port]` with the port defaulting to 2377 and the host to 0.0.0.0, as docker's
    `--listen-addr` (`opts.ParseTCPAddr` against `0.0.0.0:2377`)."""

    name = "node-addr"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().removeprefix("tcp://")
        match = re.fullmatch(r"\[(?P<v6>[^\]]*)\](?::(?P<v6port>\d*))?|(?P<host>[^:]*)(?::(?P<port>\d*))?", text)
        if match is None:
            if text.count(":") > 1:  # a bare IPv6 address, no port
                return f"[{text}]:{SWARM_PORT}"
            self.fail(f'invalid address "{value}" (format: <ip|interface>[:port])', param, ctx)
        if match.group("v6") is not None:
            host, port = f"[{match.group('v6')}]", match.group("v6port")
        else:
            host, port = match.group("host") or "0.0.0.0", match.group("port")
        port = port or str(SWARM_PORT)
        if not 0 < int(port) < 65536:
            self.fail(f'invalid port in "{value}": {port}', param, ctx)
        return f"{host}:{port}"


def parse_filters(values: Iterable[str]) -> dict[str, list[str]]:
    """`--filter name=value` flags -> Docker's filters object {name: [values]}."""
    filters: dict[str, list[str]] = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"bad format of filter (expected name=value): {value!r}", param_hint="'--filter'")
        filters.setdefault(name.strip().lower(), []).append(wanted)
    return filters


def parse_labels(values: Iterable[str]) -> dict[str, str]:
    """`--label-add key=value` (or `key`, meaning an empty value) -> {key: value}, docker's ConvertKVStringsToMap."""
    labels = {}
    for value in values:
        key, _, label = value.partition("=")
        labels[key] = label
    return labels


def parse_cpus(text: str) -> int:
    """docker's opts.ParseCPUs: a decimal or ratio number of CPUs ("1.5", "3/2") -> NanoCPUs."""
    try:
        cpus = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = cpus * 10**9
    if nano.denominator != 1:
        raise ValueError("value is too precise")
    return int(nano)


NANO_CPUS = ParsedFlag("decimal", parse_cpus)
"""A decimal CPU count flag (`--limit-cpu 0.5`); the value is in NanoCPUs."""


# go-units' binary multipliers: RAMInBytes reads "k", "m", "g", "t", "p" as powers of 1024.
_RAM_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_GO_FLOAT = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: "64MiB", "1g", "512k", "1.5GB", "100" -> bytes. Units are case-insensitive, binary,
    and may end in "b" or "ib"."""
    sep = max(text.rfind(ch) for ch in "0123456789. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    number, suffix = (text[:sep], text[sep + 1 :]) if text[sep] == " " else (text[: sep + 1], text[sep + 1 :])
    if not _GO_FLOAT.fullmatch(number):
        raise ValueError(f"invalid size: '{text}'")
    size = float(number)
    if not suffix:
        return int(size)
    lowered = suffix.lower()
    if lowered == "b":
        return int(size)
    if len(lowered) > 3 or lowered[0] not in _RAM_UNITS or lowered[1:] not in ("", "b", "ib"):
        raise ValueError(f"invalid suffix: '{suffix}'")
    return int(size * _RAM_UNITS[lowered[0]])


MEMORY_BYTES = ParsedFlag("bytes", ram_in_bytes)
"""A memory size flag (`--reserve-memory 64MiB`); the value is in bytes."""


def check_labels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Callback for `--label key=value` flags (docker's ValidateLabel): a label needs a name."""
    for value in values:
        if not value.partition("=")[0].strip():
            raise click.BadParameter(f"invalid label '{value}': empty name", ctx, param)
    return values


def check_env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Callback for `--env KEY=value` flags (docker's ValidateEnv): a bare `KEY` takes the value KEY has in
    this environment, if it has one."""
    checked = []
    for value in values:
        key, sep, _ = value.partition("=")
        if not key:
            raise click.BadParameter(f"invalid environment variable: {value}", ctx, param)
        checked.append(value if sep or key not in os.environ else f"{key}={os.environ[key]}")
    return tuple(checked)
