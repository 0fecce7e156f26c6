"""Manager-side services over the replicated store, one module each:

- `controlapi`: the swarm's own objects (cluster, nodes) and the swarm/node operations;
- `caserver`: the CA on 2377 -- the root for pinning, token joins, certificate renewal, manager joins;
- `rpc`: request/response calls on 2377 (the channel next to Raft);
- `dispatcher`: node sessions: heartbeats and node status, assignments, task status reports;
- `heartbeats`: the dispatcher's pure decisions -- sessions per leader term, when a node is down;
- `keymanager`: the Raft log's key-encryption key, following the swarm's autolock;
- `scheduler`, `orchestrator`: pure decisions -- which node a task goes to; which tasks a service should
  have, when a task is restarted, which old tasks are reaped (their control loops come next).
"""
