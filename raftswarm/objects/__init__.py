"""Docker's object model, the vocabulary every layer of raftswarm shares: what a task state, a store kind,
an object ID, a service/network/secret/swarm spec and Docker's defaults are, and how a stored object looks
through Docker's API. Nothing here does I/O or imports anything of raftswarm but `errors`.

- `tasks`: task states in SwarmKit's order and the predicates over a task.
- `kinds`: the store's collections and object IDs.
- `stored`: a stored object (kind, ID, version, data) and how Docker's API shows it.
- `defaults`: Docker's defaults, in one place.
- `validation`: the toolkit specs are checked with (paths in messages, Go's case-folding of keys).
- `specs`, `placement`, `networks`: the specs the API accepts, checked and normalised at the API edge.
- `reference`: image references (`busybox` -> docker.io/library/busybox:latest), parsed as Docker does.
- `registryauth`: registry credentials as Docker encodes them (X-Registry-Auth, a service's RegistryAuth).
- `times`: timestamps as Docker writes them.
"""
