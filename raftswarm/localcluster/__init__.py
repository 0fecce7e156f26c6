"""Real swarms of `raftswarm-node` processes on this machine: what `raftswarm cluster up/down` runs, and the
harness of the tests, chaos runs and benchmarks.

- `swarm`: `SwarmCluster`, a swarm formed through the API with join tokens, as root one network namespace
  per node on a private bridge, with the cluster's registry; its state under one directory per cluster.
- `managers`: `LocalCluster`, managers started from pre-provisioned certificates (Raft and store benches).
- `registry`: the cluster's registry (Debian's `docker-registry`), reachable as localhost:5000.
- `dockerswarm`: real Docker swarm (dockerd per network namespace), the peer of the conformance suite.
- `hostnet`: the host side of a cluster's network (ip, nft, subnets, loopback addresses).
- `processes`: starting, watching and ending node and registry processes by PID (and start time).
"""
