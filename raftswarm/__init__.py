"""raftswarm: a Docker-swarm-mode control plane and data plane written from scratch in Python.

Subpackages, from the bottom up (dependencies only point down this list): `raft` (consensus), `store`
(replicated cluster state), `ca`, `manager`, `agent`, `gossip`, `dataplane`, `api`, `node`, `cli`, `stack`.
"""

__version__ = "0.1.0"
