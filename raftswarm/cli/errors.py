"""The CLI's own failure: a message for the user, printed as is on one line (or one line per failure),
exit status 1. Errors from the node arrive as `api.client.ApiError` and are printed docker's way."""

from ..errors import RaftswarmError


class CommandError(RaftswarmError):
    """The command cannot do what was asked; the message says why (docker prints these unprefixed)."""
