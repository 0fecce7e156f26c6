"""The chaos suite: Raft under faults.

This half is in-process and deterministic: `chaos.sim` runs clusters of `RaftCore`s on a simulated network
and disk under crashes, partitions, slow nodes, membership churn and compaction, with every Raft safety
property (`chaos.checks`) checked after every step and liveness checked once the faults stop. Any failure
replays exactly from its seed: `python -m chaos sim --nodes N --steps M --seed S`.

Modules: `sim` (the event loop and what a node does with each Ready), `driver` (the production driver's
persistence pipeline: batched writes that take time and may send before they return), `checks` (the
invariants), `scenario` (the per-seed fault mix), `nemesis` (the faults), `workload` (the clients), `network`
and `storage` (the simulated network, disk and application), `cli` (`python -m chaos`).
"""
