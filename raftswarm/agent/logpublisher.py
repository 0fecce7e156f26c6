"""The agent's side of `service logs`: answer the leader's log broker (`manager.logbroker`).

`serve_log_subscriptions` long-polls `logs.listen` on one connection to the leader. For each subscription it
is handed it runs a publisher that reads the named tasks' logs through the agent's `read_logs` and sends
them with `logs.publish` in bounded batches; without follow it then sends `close`, with follow it keeps
going until the broker answers `ok: false` or lists the subscription as cancelled.

The manager answers the calls of one connection one at a time, so a listen long-poll holds back every
publish behind it: while any publisher runs, listen waits at most `BUSY_LISTEN_WAIT` (the latency
`service logs -f` adds), and only an idle agent waits the full `LISTEN_WAIT`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..rpc.logs import MAX_LINE_BYTES, MESSAGE_OVERHEAD
from ..rpc.channel import RpcClient, RpcError

log = logging.getLogger(__name__)

ReadLogs = Callable[..., AsyncIterator[tuple[str, float, bytes]]]
"""`read_logs(task_id, tail=int|None, follow=bool, since=float|None)`: an async iterator of (stream, unix
time, line) tuples, oldest first; nothing for a task this node does not know."""

LISTEN_WAIT = 10.0
BUSY_LISTEN_WAIT = 0.25
CALL_MARGIN = 10.0
"""How much longer than the wait it asked for the agent gives a call before calling the manager stuck."""
PUBLISH_TIMEOUT = 10.0
MAX_BATCH_BYTES = 1 << 20
"""Bytes of lines (plus per-message overhead) in one publish: an eighth of the RPC frame limit."""
MAX_BATCH_LINES = 500
MAX_PENDING_BYTES = 2 * MAX_BATCH_BYTES
"""Lines read but not yet sent, per subscription; the task readers wait while there are more."""


async def serve_log_subscriptions(client: RpcClient, read_logs: ReadLogs) -> None:
    """Serve the broker's log subscriptions for this node over `client` until cancelled. An RpcError (the
    connection broke, the manager lost leadership) propagates after every publisher has stopped: the
    caller reconnects and calls again, and the broker hands the subscriptions out anew."""
    try:
        async with asyncio.TaskGroup() as group:
            publishers: dict[str, asyncio.Task[None]] = {}

            def forget(subscription_id: str, task: asyncio.Task[None]) -> None:
                if publishers.get(subscription_id) is task:
                    del publishers[subscription_id]

            while True:
                wait = BUSY_LISTEN_WAIT if publishers else LISTEN_WAIT
                answer = await client.call(
                    "logs.listen", {"timeout": wait, "serving": sorted(publishers)}, timeout=wait + CALL_MARGIN
                )
                for subscription_id in answer.get("cancelled") or []:
                    publisher = publishers.pop(subscription_id, None)
                    if publisher is not None:
                        publisher.cancel()
                for subscription in answer.get("subscriptions") or []:
                    subscription_id = subscription["id"]
                    if subscription_id in publishers:
                        continue
                    publisher = group.create_task(
                        _publish(client, subscription, read_logs), name=f"log-publisher-{subscription_id[:12]}"
                    )
                    publishers[subscription_id] = publisher
                    publisher.add_done_callback(lambda task, i=subscription_id: forget(i, task))
    except ExceptionGroup as errors:
        leaves = _leaves(errors)
        first_rpc_error = next((exc for exc in leaves if isinstance(exc, RpcError)), None)
        if first_rpc_error is None or not all(isinstance(exc, RpcError) for exc in leaves):
            raise
        raise first_rpc_error from None


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


class _Outbox:
    """Lines read from a subscription's tasks, waiting to be published."""

    def __init__(self, readers: int) -> None:
        self._messages: list[dict[str, Any]] = []
        self._bytes = 0
        self._readers = readers
        self._changed = asyncio.Event()
        self._room = asyncio.Event()

    async def put(self, message: dict[str, Any]) -> None:
        while self._bytes >= MAX_PENDING_BYTES:
            self._room.clear()
            await self._room.wait()
        self._messages.append(message)
        self._bytes += len(message["line"]) + MESSAGE_OVERHEAD
        self._changed.set()

    def reader_done(self) -> None:
        self._readers -= 1
        self._changed.set()

    async def take(self) -> tuple[list[dict[str, Any]], bool]:
        """The next batch (waiting for one), and whether it is the last: every reader has ended and nothing
        is left. Between batches lines accumulate, so a busy task's lines go in few calls."""
        while not self._messages and self._readers:
            self._changed.clear()
            await self._changed.wait()
        count = size = 0
        for message in self._messages:
            cost = len(message["line"]) + MESSAGE_OVERHEAD
            if count and (count >= MAX_BATCH_LINES or size + cost > MAX_BATCH_BYTES):
                break
            count += 1
            size += cost
        batch, self._messages = self._messages[:count], self._messages[count:]
        self._bytes -= size
        self._room.set()
        return batch, not self._messages and not self._readers


async def _publish(client: RpcClient, subscription: dict[str, Any], read_logs: ReadLogs) -> None:
    subscription_id = subscription["id"]
    follow = bool(subscription.get("follow"))
    task_ids = list(subscription.get("tasks") or [])
    outbox = _Outbox(len(task_ids))
    async with asyncio.TaskGroup() as group:
        readers = [
            group.create_task(_read_task(outbox, read_logs, task_id, subscription), name=f"log-reader-{task_id[:12]}")
            for task_id in task_ids
        ]
        while True:
            batch, last = await outbox.take()
            close = last and not follow
            if (batch or close) and not await _send(client, subscription_id, batch, close):
                break  # the subscription is gone
            if last:
                if follow:
                    await asyncio.Event().wait()  # stay listed as serving until the broker cancels it
                break
        for reader in readers:
            reader.cancel()


async def _read_task(outbox: _Outbox, read_logs: ReadLogs, task_id: str, subscription: dict[str, Any]) -> None:
    try:
        lines = read_logs(
            task_id,
            tail=subscription.get("tail"),
            follow=bool(subscription.get("follow")),
            since=subscription.get("since"),
        )
        async for stream, when, line in lines:
            data = bytes(line)
            for start in range(0, max(len(data), 1), MAX_LINE_BYTES):
                await outbox.put(
                    {
                        "task": task_id,
                        "stream": stream,
                        "time": float(when),
                        "line": data[start : start + MAX_LINE_BYTES],
                    }
                )
    except Exception:
        # One task's unreadable log (its shim gone, a bug) must not stop the other tasks' lines or the agent.
        log.warning("could not read the logs of task %s", task_id, exc_info=True)
    finally:
        outbox.reader_done()


async def _send(client: RpcClient, subscription_id: str, batch: list[dict[str, Any]], close: bool) -> bool:
    """Publish one batch, again while the broker says its reader is behind; False once the subscription is gone."""
    params = {"subscription": subscription_id, "messages": batch, "close": close}
    while True:
        answer = await _complete(client.call("logs.publish", params, timeout=PUBLISH_TIMEOUT))
        if not answer.get("ok"):
            return False
        if answer.get("accepted", True):
            return True


async def _complete(call: Awaitable[Any]) -> Any:
    """Await an RPC call to its end even if the caller is cancelled meanwhile: a call abandoned halfway would
    leave its answer on the connection, to be read as the answer to the next call."""
    running = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        if not running.cancelled():
            running.exception()  # retrieved: the caller is being cancelled and no longer wants it
        raise
