"""The one exception hierarchy of raftswarm. Messages say what happened and what the user can do about it."""


class RaftswarmError(Exception):
    """Base of every error raftswarm raises on purpose."""


class InvalidInput(RaftswarmError):
    """A value a user gave cannot be understood (a malformed token, key, address or request); the API answers 400."""


class VersionConflict(RaftswarmError):
    """The object changed since the caller read it, or the caller's view is too old; the API answers 409."""


class Unavailable(RaftswarmError):
    """The swarm cannot answer now (no leader, a timeout); the caller may retry. The API answers 503."""


class ProposalDropped(Unavailable):
    """The Raft core refused a proposal (no leader known, leadership transfer in progress, a membership
    change already pending). Nothing was appended; the caller may retry."""


class StorageCorrupted(RaftswarmError):
    """A Raft WAL or snapshot failed authentication somewhere other than its torn tail.

    Committed data may be damaged, so the node refuses to start rather than silently drop it."""


class WrongKey(RaftswarmError):
    """The key-encryption key (or unlock key) does not open this node's data encryption key."""


class ComposeError(RaftswarmError):
    """A compose file cannot be deployed as a stack; the message names the file, the key path and the problem."""


class ControlError(RaftswarmError):
    """A swarm or node request that cannot be done as asked; `status` is the HTTP code the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
