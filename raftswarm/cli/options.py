"""Flag values parsed the way docker parses them: Go durations, node addresses, `key=value` filters and labels.
A bad value is a click usage error (exit status 2), like any other bad flag."""

from __future__ import annotations

import re
from collections.abc import Iterable
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


class GoDuration(click.ParamType):
    """A Go duration flag; the value is in nanoseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_go_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


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
