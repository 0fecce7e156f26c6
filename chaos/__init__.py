"""The chaos suite: Raft, and the swarm built on it, under faults.

Two halves. `chaos.cluster` is the real-process half: `python -m chaos run` starts real local swarms (a network
namespace per node), injects faults (kill -9, SIGSTOP, nftables partitions, all managers killed, slow fsync,
torn and corrupted WALs, manager replacement, certificate expiry) under client load, and checks the clients'
histories for linearizability, lost acknowledged writes, two leaders in a term, convergence and secret
exposure (see `chaos.cluster.runner`).

The other half is in-process and deterministic: `chaos.sim` runs clusters of `RaftCore`s on a simulated network
and disk under crashes, partitions, slow nodes, membership churn and compaction, with every Raft safety
property (`chaos.checks`) checked after every step and liveness checked once the faults stop. Any failure
replays exactly from its seed: `python -m chaos sim --nodes N --steps M --seed S`.

Modules: `sim` (the event loop and what a node does with each Ready), `driver` (the production driver's
persistence pipeline: batched writes that take time and may send before they return), `checks` (the
invariants), `scenario` (the per-seed fault mix), `nemesis` (the faults), `workload` (the clients), `network`
and `storage` (the simulated network, disk and application), `cli` (`python -m chaos`).
"""
