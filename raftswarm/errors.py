"""The one exception hierarchy of raftswarm. Messages say what happened and what the user can do about it."""


class RaftswarmError(Exception):
    """Base of every error raftswarm raises on purpose."""


class ProposalDropped(RaftswarmError):
    """The Raft core refused a proposal (no leader known, leadership transfer in progress, a membership
    change already pending). Nothing was appended; the caller may retry."""


class StorageCorrupted(RaftswarmError):
    """A Raft WAL or snapshot failed authentication somewhere other than its torn tail.

    Committed data may be damaged, so the node refuses to start rather than silently drop it."""


class WrongKey(RaftswarmError):
    """The key-encryption key (or unlock key) does not open this node's data encryption key."""


class ComposeError(RaftswarmError):
    """A compose file cannot be deployed as a stack; the message names the file, the key path and the problem."""
