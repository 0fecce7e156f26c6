"""Checks a chaos run's evidence against what the swarm promises, besides linearizability (`linearizability`).

Each check returns a JSON-shaped dict with `ok` (True/False) and what it found, so the report shows the numbers
behind the verdict:

- `acknowledged_writes`: every `chaos-acks` object whose create was acknowledged is in the final (linearizable)
  listing, and nothing is there that a client was told definitely failed, or never attempted;
- `leaders_per_term`: at most one node won each term, from the "became leader in term N" lines of every
  manager's log (all of them, across restarts: the log files are appended to);
- `secret_exposure`: at every sample of a node's agent, each secret it held was referenced by a task that
  same agent held at that moment (the agent's status gives both at once, so there is no timing slack), and a
  node where no task referencing the secret ever ran never held it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .workload import Acks

LEADER_LINE = re.compile(r"raft ([0-9a-f]+): became leader in term (\d+)")
SHOWN = 10
"""Examples listed per violation kind; the counts are always complete."""


def acknowledged_writes(acks: Acks, present: Iterable[str]) -> dict[str, Any]:
    present = set(present)
    lost = sorted(acks.ok - present)
    unexplained = sorted(present - acks.ok - acks.info)
    return {
        "ok": not lost and not unexplained,
        "acknowledged": len(acks.ok),
        "unknown_outcome": len(acks.info),
        "unknown_applied": len(acks.info & present),
        "failed": len(acks.fail),
        "lost": lost[:SHOWN],
        "lost_count": len(lost),
        "present_but_failed_or_never_written": unexplained[:SHOWN],
    }


def leaders_per_term(logs: Mapping[str, Path]) -> dict[str, Any]:
    """`logs`: node name -> its log file."""
    winners: dict[int, set[str]] = defaultdict(set)
    for name, path in logs.items():
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for match in LEADER_LINE.finditer(text):
            winners[int(match.group(2))].add(name)
    doubled = {term: sorted(names) for term, names in sorted(winners.items()) if len(names) > 1}
    return {
        "ok": not doubled,
        "terms_with_a_leader": len(winners),
        "highest_term": max(winners, default=0),
        "terms_with_two_leaders": {str(term): names for term, names in list(doubled.items())[:SHOWN]},
    }


def secret_exposure(samples: list[dict[str, Any]], task_secrets: Mapping[str, set[str]]) -> dict[str, Any]:
    """`samples`: {"t", "node", "tasks": [task IDs], "secrets": [secret IDs]} per agent status taken;
    `task_secrets`: task ID -> the secret IDs its spec references (every task seen during the run)."""
    violations, unknown_tasks = [], 0
    ever_referenced: dict[str, set[str]] = defaultdict(set)  # node -> secrets some task of it referenced
    for sample in samples:
        for task_id in sample["tasks"]:
            ever_referenced[sample["node"]] |= task_secrets.get(task_id, set())
    for sample in samples:
        missing = [t for t in sample["tasks"] if t not in task_secrets]
        unknown_tasks += len(missing)
        referenced = set().union(*(task_secrets.get(t, set()) for t in sample["tasks"]))
        for secret in sample["secrets"]:
            if secret not in referenced and not missing:
                violations.append({"t": sample["t"], "node": sample["node"], "secret": secret, "tasks": sample["tasks"]})
            elif secret not in ever_referenced[sample["node"]]:
                violations.append({"t": sample["t"], "node": sample["node"], "secret": secret, "never_referenced": True})
    held = defaultdict(set)
    for sample in samples:
        held[sample["node"]] |= set(sample["secrets"])
    return {
        "ok": not violations,
        "samples": len(samples),
        "held_by": {node: sorted(secrets) for node, secrets in sorted(held.items()) if secrets},
        "samples_with_tasks_unknown_to_the_managers": unknown_tasks,
        "violations": violations[:SHOWN],
        "violation_count": len(violations),
    }
