"""The `raftswarm` command: a client of the node's API, shaped like the docker CLI's swarm commands."""
