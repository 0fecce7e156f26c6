"""The worker side of a node (every node, managers included, runs it):

- `session`: the session with the leader's dispatcher -- heartbeats, following the leader, failing over.
- `agent`: the `Agent` -- follows the node's assignments, walks each task through its states, reports them,
  takes back the containers a previous agent left running.
- `logpublisher`: answers the leader's log subscriptions with the tasks' output.

Tasks run as OCI containers through `runtime.containers`. The node's data plane (overlays, resolver, VIPs,
routing mesh) is `node.networking`, which the agent calls through `agent.TaskNetworks` before a task's
process starts and after it ends.
"""
