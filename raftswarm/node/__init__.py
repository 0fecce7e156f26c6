"""The `raftswarm-node` daemon: assembles the manager and worker roles from flags and owns process lifecycle.

- `main`: the command's flags; `daemon`: `NodeDaemon` -- roles, swarm init/join/leave, role changes,
  certificate renewal, unlock;
- `manager_role`: the manager role (Raft member, store, manager services); `listener`: TCP 2377;
- `leaderlogs`: the leader's log broker as any manager reaches it;
- `manager_client`: a node's calls to the managers (pinned join, calls with its certificate);
- `networking`: the node's data plane (overlays, resolver, VIPs, routing mesh) driven from gossip and the
  agent's tasks; `images`: the node's image store as the agent pulls through it;
- `preflight`: what the machine lacks (packages, kernel features), for `docker info`'s Warnings;
- `provision`, `state_dir`: what a node keeps on disk and how it is laid out.

Clusters of these processes on one machine are `raftswarm.localcluster`'s.
"""
