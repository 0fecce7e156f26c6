"""The CLI's connection to a node, for one command: an `ApiClient` on the node's socket (chosen by `host`), and
every failure turned into docker's one-line messages with exit status 1. Also docker's way with several objects
in one command (`rm`, `inspect`): each is tried, and the command fails at the end with every error.

    Error response from daemon: <the node's message>         the node answered with an error status
    Cannot connect to the raftswarm daemon at unix://PATH. Is the node running?
    <message>                                                 the CLI itself refused (CommandError)
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec

import aiohttp
import click

from ..api.client import ApiClient, ApiError
from .errors import CommandError, fail
from .host import DaemonAddress, resolve_host

P = ParamSpec("P")

# A swarm call that takes longer than this is stuck (a lost quorum answers 503 well before).
REQUEST_TIMEOUT = 60.0


def daemon_message(exc: ApiError) -> str:
    return f"Error response from daemon: {exc}"


def failure_message(exc: CommandError | ApiError) -> str:
    """The line docker prints for one object's failure among several: the node's error, or the CLI's own."""
    return daemon_message(exc) if isinstance(exc, ApiError) else str(exc)


def daemon_address(ctx: click.Context) -> DaemonAddress:
    """The address chosen by the global options, resolved once per invocation."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "address" not in root.obj:
        root.obj["address"] = resolve_host(root.obj.get("host_flag"))
    return root.obj["address"]


def run(ctx: click.Context, command: Callable[[ApiClient], Awaitable[None]]) -> None:
    """Run `command` with a client of the node; print its failure on stderr and exit 1."""
    try:
        address = daemon_address(ctx)
    except CommandError as exc:
        fail(str(exc))

    async def with_client() -> None:
        async with ApiClient(address.socket_path, timeout=REQUEST_TIMEOUT) as api:
            await command(api)

    try:
        asyncio.run(with_client())
    except ApiError as exc:
        fail(daemon_message(exc))
    except CommandError as exc:
        fail(str(exc))
    except aiohttp.ClientConnectorError as exc:
        if exc.os_error.errno in (errno.EACCES, errno.EPERM):
            fail(f"permission denied while trying to connect to the raftswarm daemon socket at {address.url}")
        fail(f"Cannot connect to the raftswarm daemon at {address.url}. Is the node running?")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        fail(f"error during connect: the node at {address.url} closed the connection: {exc}")
    except TimeoutError:
        fail(f"error during connect: the node at {address.url} did not answer within {REQUEST_TIMEOUT:.0f}s")
    except aiohttp.ClientError as exc:
        fail(f"error during connect: {exc}")
    except (KeyError, TypeError, AttributeError) as exc:
        # A response without the fields of Docker's shapes: say so instead of printing a traceback.
        fail(f"Error: unexpected answer from the node at {address.url} ({type(exc).__name__}: {exc})")


def api_command(
    fn: Callable[Concatenate[ApiClient, P], Awaitable[None]],
) -> Callable[P, None]:
    """Make an async `fn(api, **options)` the body of a click command (apply under the click decorators)."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        run(click.get_current_context(), lambda api: fn(api, *args, **kwargs))

    return command  # type: ignore[return-value]


async def remove_each(refs: Sequence[str], remove: Callable[[str], Awaitable[Any]]) -> None:
    """docker's `rm` for several objects: try each, print the ones removed, then fail with every error."""
    errors = []
    for ref in refs:
        try:
            await remove(ref)
        except (CommandError, ApiError) as exc:
            errors.append(failure_message(exc))
            continue
        click.echo(ref)
    if errors:
        raise CommandError("\n".join(errors))


def print_json(found: list[Any]) -> None:
    """docker's default `inspect` output: one JSON array, indented by four spaces."""
    click.echo(json.dumps(found, indent=4))


async def inspect_each(
    refs: Sequence[str],
    inspect: Callable[[str], Awaitable[Any]],
    show: Callable[[list[Any]], None] = print_json,
) -> None:
    """docker's `inspect` for several objects: look each up, show the ones found, then fail with every error."""
    found, errors = [], []
    for ref in refs:
        try:
            found.append(await inspect(ref))
        except (CommandError, ApiError) as exc:
            errors.append(failure_message(exc))
    show(found)
    if errors:
        raise CommandError("\n".join(errors))
