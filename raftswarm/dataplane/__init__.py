"""The data plane of one node: what the kernel forwards, programmed over netlink.

`overlay` builds the VXLAN overlay of one network on one node (namespace, bridge, VXLAN device, veths into
tasks, static FDB and neighbour entries); `netns` holds the namespace and netlink-socket helpers it uses;
`loadbalancer` programs VIPs, the routing mesh and host ports with nftables (numgen random maps, updated
in place); `dns` is the resolver at 127.0.0.11 inside each task (service discovery); `gateway` is the
node's bridge for tasks' traffic out. `overlay`, `loadbalancer` and `gateway` can also read back what the
kernel holds, which `repair` (backoff and reporting of failed steps) helps the node keep as it should be.
Everything but `dns` (asyncio) is synchronous and blocking: callers on an asyncio loop run it in a thread.
"""

from raftswarm.errors import RaftswarmError


class DataplaneError(RaftswarmError):
    """The kernel refused a data-plane change (or a namespace/device is not what raftswarm expects there).

    The message names the object and the operation; the network is left as it was or half-built, and
    repeating the call (or `remove()`) is safe."""
