"""Manager-side services over the replicated store, one module each:

- `controlapi`: the swarm's own objects (cluster, nodes) and the swarm/node operations;
- `caserver`: the CA on 2377 -- the root for pinning, token joins, certificate renewal, manager joins;
- `rpc`: request/response calls on 2377 (the channel next to Raft);
- `dispatcher`: worker sessions: heartbeats and node status (assignments come with orchestration).
"""
