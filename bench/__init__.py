"""Benchmarks of raftswarm against real processes on this machine, run as `python -m bench <name>`.

Each benchmark prints one JSON line per measurement on stdout (for scripts and CI history) and a short
human summary on stderr (`--json-only` drops it). Targets are reported, never asserted: a benchmark fails
only when it could not measure.

Modules: `raft` (`python -m bench raft`: raftswarm against pysyncobj, write latency and throughput),
`workload` (the write workloads' shape and what a measurement reports), `raft_member` and
`pysyncobj_member` (the cluster member programs `raft` starts).
"""
