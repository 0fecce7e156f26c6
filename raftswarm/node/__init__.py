"""The `raftswarm-node` daemon: assembles the manager and worker roles from flags and owns process lifecycle.

- `main`: the command's flags; `daemon`: `NodeDaemon` -- roles, swarm init/join/leave, role changes,
  certificate renewal, unlock;
- `manager`: the manager role (Raft member, store, manager services); `listener`: TCP 2377;
- `manager_client`: a node's calls to the managers (pinned join, calls with its certificate);
- `provision`, `state_dir`: what a node keeps on disk and how it is laid out.

Clusters of these processes on one machine are `raftswarm.localcluster`'s.
"""
