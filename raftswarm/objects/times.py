"""Timestamps as Docker's API writes them: RFC 3339 in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def now_iso() -> str:
    """Now, as Docker writes timestamps."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def rfc3339(now: float) -> str:
    """Unix time as Docker writes timestamps."""
    return datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")


# Docker writes nanoseconds; Python 3.11's fromisoformat reads at most microseconds.
_EXCESS_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(text: str) -> datetime:
    """A timestamp Docker wrote (nanoseconds allowed, read to the microsecond)."""
    return datetime.fromisoformat(_EXCESS_FRACTION.sub(r"\1", text))
