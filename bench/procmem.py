"""Memory of processes as the benchmarks report it: proportional set size (PSS), from /proc/PID/smaps_rollup.

PSS divides each shared page among the processes mapping it, so the PSS of several processes adds up to what
they cost the machine together (RSS would count a shared library once per process)."""

from __future__ import annotations

from collections.abc import Iterable


def pss_kb(pids: Iterable[int]) -> int:
    """The PSS of these processes together, in KiB; a process gone meanwhile (or a zombie) counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total
