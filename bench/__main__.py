"""`python -m bench <benchmark> [options]`: each benchmark is a module with `main(argv) -> int`.

Modules are imported only when chosen, so one benchmark's extra dependencies never stop another.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "raft": ("bench.raft", "Replicated writes through each system's client API: raftswarm against etcd and pysyncobj"),
    "swarm": ("bench.swarm", "Real Docker swarm beside raftswarm: init and joins, 100 replicas, leader kill -9, memory per node and task"),
    "failover": ("bench.failover", "Leader kill to new leader and first committed write (p50/p99); worker kill to tasks running elsewhere"),
    "tasks": ("bench.tasks", "Real tasks: 100 replicas on 2 workers to RUNNING; the task runtime's start cost and memory"),
    "images": ("bench.images", "Image store and cluster registry: docker load + push, 4 nodes pulling at once, shared layers on disk"),
    "objects": ("bench.objects", "Docker's object model: dicts against msgspec, pydantic and attrs+cattrs on snapshots, service create and API JSON"),
    "schedule": ("bench.schedule", "Task placement, node-failure replacement and 1,000 simulated agents on local swarms"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        usage = "\n".join(f"  {name:10} {summary}" for name, (_, summary) in BENCHMARKS.items())
        print(f"usage: python -m bench <benchmark> [--help | options]\n\nbenchmarks:\n{usage}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, _ = BENCHMARKS[argv[0]]
    return importlib.import_module(module_name).main(argv[1:])


raise SystemExit(main(sys.argv[1:]))
