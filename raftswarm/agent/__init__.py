"""The worker side of a node (every node, managers included, runs it):

- `session`: the session with the leader's dispatcher -- heartbeats, following the leader, failing over.
- `worker`: the `Agent` -- follows the node's assignments, walks each task through its states, reports them,
  takes back the tasks a previous agent left running.
- `runtime`: starting a task (spec checks, the shim's launch) and finding running ones again.
- `shim`: the per-task supervisor process: namespaces, /run/secrets, cgroups, output, exit code.
- `logpublisher`: answers the leader's log subscriptions with the tasks' output.

The node's data plane (overlays, resolver, VIPs, routing mesh) is `node.networking`, which the agent calls
through `worker.TaskNetworks` before a task's command starts and after it ends.
"""
