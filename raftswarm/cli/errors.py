"""The CLI's own failure: a message for the user, printed as is on one line (or one line per failure),
exit status 1. Errors from the node arrive as `api.client.ApiError` and are printed docker's way."""

from typing import NoReturn

import click

from ..errors import RaftswarmError


class CommandError(RaftswarmError):
    """The command cannot do what was asked; the message says why (docker prints these unprefixed)."""


def fail(message: str) -> NoReturn:
    """End the command: `message` on stderr, exit status 1."""
    click.echo(message, err=True)
    raise click.exceptions.Exit(1)
