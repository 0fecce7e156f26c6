"""How a simulated node persists its Readies.

- `sync`: each Ready is written to disk within the step that produced it, before anything else happens.
- `driver`: the production pipeline (`raftswarm.raft.pipeline`, the rules `raftswarm.raft.driver` runs on),
  with writes that take simulated time, so crashes land between a batch's early send and its write.
"""

from raftswarm.raft.pipeline import SENDABLE_BEFORE_PERSIST, Batch, Pipeline

SYNC, DRIVER = "sync", "driver"
PERSISTENCE_MODES = (SYNC, DRIVER)

__all__ = ["DRIVER", "PERSISTENCE_MODES", "SENDABLE_BEFORE_PERSIST", "SYNC", "Batch", "Pipeline"]
