"""The swarm leader's log broker as any manager reaches it for `docker service logs`: the broker itself when
this manager leads, else one RPC connection of this manager's own to the leader (`api.backend.LogBroker`)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from ..addresses import parse_host_port
from ..errors import ControlError, Unavailable
from ..manager.logbroker import LogBroker
from ..rpc.channel import RpcClient, RpcError
from .manager_role import Manager

log = logging.getLogger(__name__)

CALL_MARGIN = 10.0
"""Seconds a `logs.read` call may take beyond the read's own wait before the connection counts as lost."""


class _LocalBroker:
    """The broker of this manager, which is the leader."""

    def __init__(self, broker: LogBroker) -> None:
        self.broker = broker

    async def subscribe(self, tasks: dict[str, list[str]], tail: int | None, follow: bool, since: float | None) -> str:
        return self.broker.subscribe(tasks, tail=tail, follow=follow, since=since)

    async def read(self, subscription_id: str, timeout: float) -> dict[str, Any]:
        return await self.broker.read(subscription_id, timeout)

    async def cancel(self, subscription_id: str) -> None:
        self.broker.cancel(subscription_id)

    async def close(self) -> None:
        pass


class _RemoteBroker:
    """The leader's broker, over one RPC connection of this manager's own."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    async def subscribe(self, tasks: dict[str, list[str]], tail: int | None, follow: bool, since: float | None) -> str:
        try:
            answer = await self.client.call(
                "logs.subscribe", {"tasks": tasks, "tail": tail, "follow": follow, "since": since}
            )
        except RpcError as exc:
            raise _unavailable(exc) from None
        return answer["id"]

    async def read(self, subscription_id: str, timeout: float) -> dict[str, Any]:
        try:
            return await self.client.call(
                "logs.read", {"id": subscription_id, "timeout": timeout}, timeout=timeout + CALL_MARGIN
            )
        except RpcError as exc:
            # Mid-stream: the API says it inside the stream, as dockerd does.
            raise Unavailable(
                "the swarm's leader changed; run the command again" if exc.code == "not_leader" else str(exc)
            ) from None

    async def cancel(self, subscription_id: str) -> None:
        try:
            await self.client.call("logs.cancel", {"id": subscription_id})
        except RpcError as exc:  # it expires on the leader anyway
            log.debug("could not cancel log subscription %s: %s", subscription_id, exc)

    async def close(self) -> None:
        await self.client.close()


def _unavailable(exc: RpcError) -> ControlError:
    if exc.code == "not_leader":
        return ControlError("the swarm's leader changed while subscribing to the logs; try again", 503)
    return ControlError(f"cannot get logs from the swarm's leader: {exc}", 503)


LeaderLogs = _LocalBroker | _RemoteBroker


async def leader_log_broker(manager: Manager | None) -> LeaderLogs:
    """The leader's broker, as seen from this node (a manager); ControlError 503 when there is none to reach."""
    if manager is None or manager.driver is None:
        raise ControlError("this node is not a swarm manager", 503)
    if manager.driver.is_leader:
        return _LocalBroker(manager.logbroker)
    address = manager.logbroker.leader_address()
    if not address:
        raise ControlError("the swarm has no leader right now (an election is under way); try again", 503)
    context = next(c for c in manager.tls_contexts if c.protocol == ssl.PROTOCOL_TLS_CLIENT)
    host, port = parse_host_port(address)
    try:
        return _RemoteBroker(await RpcClient.connect(host, port, context, server_hostname="swarm-manager"))
    except RpcError as exc:
        raise _unavailable(exc) from None
