"""A container's output as conmon keeps it: the CRI ("k8s-file") log format, read back as lines.

conmon writes each piece of the container's stdout and stderr as one line of the task's log file:

    2026-12-07T06:04:19.500069112+00:00 stdout F hello

`F` ends a line, `P` is a piece of a longer one (conmon splits at its buffer size). When the file would pass
`--log-size-max` conmon starts a new one in its place (the old lines are gone, as with Docker's `max-size`
and one file). `read_lines` and `follow_lines` give (stream, unix time, line without newline), oldest first.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

LogLine = tuple[str, float, bytes]

LOG_MAX_BYTES = 8 << 20
"""A task's log file is started anew past 8 MiB: a node with hundreds of tasks keeps a few GiB at worst."""
FOLLOW_INTERVAL = 0.1
"""How often a follower looks for new output: conmon writes the file, nothing signals a reader."""
MAX_PARTIAL = 1 << 20
"""A line longer than this (many `P` pieces) is given in pieces of this size rather than buffered whole."""


class LogParser:
    """Turns the bytes of a log file, fed in any chunks, into lines; malformed lines are skipped."""

    def __init__(self) -> None:
        self._rest = b""
        self._partial: dict[str, tuple[float, bytes]] = {}

    def feed(self, data: bytes) -> list[LogLine]:
        lines: list[LogLine] = []
        data = self._rest + data
        records = data.split(b"\n")
        self._rest = records.pop()
        for record in records:
            fields = record.split(b" ", 3)
            if len(fields) < 3:
                continue
            when = parse_time(fields[0])
            stream = fields[1].decode(errors="replace")
            if when is None or stream not in ("stdout", "stderr"):
                continue
            content = fields[3] if len(fields) == 4 else b""
            started, pending = self._partial.pop(stream, (when, b""))
            if fields[2] == b"P":
                pending += content
                if len(pending) < MAX_PARTIAL:
                    self._partial[stream] = (started, pending)
                    continue
                lines.append((stream, started, pending))
            else:
                lines.append((stream, started, pending + content))
        return lines

    def flush(self) -> list[LogLine]:
        """The lines begun and not ended (the output ended without a newline), oldest first."""
        lines = sorted(((stream, started, pending) for stream, (started, pending) in self._partial.items()),
                       key=lambda line: line[1])
        self._partial.clear()
        return lines


def parse_time(text: bytes) -> float | None:
    """Unix time of conmon's RFC 3339 timestamp with nanoseconds (which `fromisoformat` does not take)."""
    try:
        value = text.decode()
        main, dot, rest = value.partition(".")
        fraction = ""
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            fraction, zone = rest[:digits], rest[digits:]
        else:
            main, zone = value[:19], value[19:]
        base = datetime.datetime.fromisoformat(main + (zone if zone not in ("Z", "") else "+00:00"))
        return base.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    except (ValueError, UnicodeDecodeError):
        return None


def read_lines(path: Path, *, tail: int | None = None, since: float | None = None) -> list[LogLine]:
    """The lines of the log file at `path` (none if it is missing): the last `tail`, those from `since` on."""
    parser = LogParser()
    kept: deque[LogLine] = deque(maxlen=tail if tail is not None and tail >= 0 else None)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 16):
                kept.extend(line for line in parser.feed(chunk) if since is None or line[1] >= since)
    except FileNotFoundError:
        pass
    kept.extend(line for line in parser.flush() if since is None or line[1] >= since)
    return list(kept)


async def follow_lines(
    path: Path, ended: Callable[[], bool], *, tail: int | None = None, since: float | None = None
) -> AsyncIterator[list[LogLine]]:
    """Batches of lines: the file's (as `read_lines`), then new ones as conmon writes them, until `ended()`
    says the container is gone and what it wrote is read. Follows conmon to a new file when it starts one."""
    parser = LogParser()
    file = None
    try:
        first: list[LogLine] = []
        while True:
            if file is None:
                try:
                    file = open(path, "rb")
                except FileNotFoundError:
                    if ended():
                        return
                    await asyncio.sleep(FOLLOW_INTERVAL)
                    continue
            finished = ended()  # asked before reading: whatever it wrote before ending is read below
            replaced = _replaced(path, file)  # and once replaced, conmon writes no more to the open file
            batch = []
            while chunk := file.read(1 << 16):
                batch.extend(line for line in parser.feed(chunk) if since is None or line[1] >= since)
            if finished and not replaced:
                batch.extend(line for line in parser.flush() if since is None or line[1] >= since)
            if first is not None:
                batch = first + batch
                if tail is not None and tail >= 0:
                    batch = batch[len(batch) - tail:] if tail < len(batch) else batch
                first = None
            if batch:
                yield batch
            if replaced:
                file.close()
                file = None  # the parser stays: a line conmon began in the old file may end in the new one
                continue
            if finished:
                return
            await asyncio.sleep(FOLLOW_INTERVAL)
    finally:
        if file is not None:
            file.close()


def _replaced(path: Path, file) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False
