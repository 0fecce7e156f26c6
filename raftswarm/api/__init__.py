"""The client API: an HTTP server on the node's unix socket (the Docker Engine API's swarm subset, growing
issue by issue) plus raftswarm's own `/raftswarm/...` endpoints for the replicated store and Raft membership.

- `server`: the aiohttp application and how it is served.
"""
