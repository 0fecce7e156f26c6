"""The worker side of a node (every node, managers included, runs it):

- `session`: the session with the leader's dispatcher -- heartbeats, following the leader, failing over.
"""
