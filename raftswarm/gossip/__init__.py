"""Gossip: SWIM membership and network-scoped tables (Docker's memberlist + networkdb, port 7946).

Sans-I/O cores: inputs (messages, time, an `random.Random`) in; packets to send and events out.

- `wire`: message types, their msgpack encoding with full validation, the AES-256-GCM `Keyring`, size
  limits, and `GossipProtocolError` for every bad input.
- `membership`: SWIM failure detection and dissemination (`Membership`, `MemberEvent`).
- `table`: per-network tables with Lamport clocks and tombstones (`NetworkTables`, `TableEvent`).
- `simulation`: a deterministic in-process network that drives many nodes, for tests and chaos runs.

`node`: `GossipNode`, the asyncio edges that carry these packets over UDP and TCP on 7946.
"""
