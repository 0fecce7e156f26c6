"""`Session`: a node's connection to the swarm's dispatcher.

It heartbeats the leader at the period the dispatcher asks for, or sooner when an answer says when (`next`:
a node whose ingress address is still being allocated). A follower answers `not_leader` with the
leader's address and the session moves there; a manager that does not answer is skipped for the next one
it knows, with a backoff, so a node follows failovers without operator help.

A manager that answers `removed` means this node was removed from the swarm (`node rm`): its certificate is
refused for good, so the session stops, says so once, and `removed` tells the node and its agent.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from ..addresses import parse_host_port
from ..rpc.channel import REMOVED, RpcClient, RpcError

log = logging.getLogger(__name__)

BACKOFF_MAX = 2.0


class Session:
    def __init__(
        self,
        context: ssl.SSLContext,
        managers: list[str],
        period: float = 5.0,
        on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
        more_managers: Callable[[], list[str]] | None = None,
        heartbeat_params: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """`on_heartbeat` sees every dispatcher answer (the role the swarm wants, the managers' addresses);
        `more_managers` names other managers to try when the known ones fail (a manager knows its Raft peers)."""
        if not managers:
            raise ValueError("a session needs at least one manager address")
        self.context = context
        self.managers = list(dict.fromkeys(managers))
        self.period = period
        self.connected_to: str | None = None
        self.heartbeats = 0
        self.removed: str | None = None
        """Why the swarm refuses this node, once a manager said it was removed; the session has then ended."""
        self._on_heartbeat = on_heartbeat
        self._more_managers = more_managers
        self._heartbeat_params = heartbeat_params

    def _remember(self, addr: str) -> None:
        if addr and addr not in self.managers:
            self.managers.insert(0, addr)

    async def run(self) -> None:
        target = self.managers[0]
        backoff = 0.05
        client: RpcClient | None = None
        try:
            while True:
                try:
                    if client is None:
                        host, port = parse_host_port(target)
                        client = await RpcClient.connect(host, port, self.context, server_hostname="swarm-manager")
                        self.connected_to = target
                    params = self._heartbeat_params() if self._heartbeat_params else {}
                    answer = await client.call("dispatcher.heartbeat", params, timeout=self.period * 2)
                    self.heartbeats += 1
                    self.period = float(answer.get("period", self.period))
                    for addr in (answer.get("managers") or {}).values():
                        self._remember(addr)
                    if self._on_heartbeat is not None:
                        self._on_heartbeat(answer)
                    backoff = 0.05
                    await asyncio.sleep(_next_heartbeat(answer, self.period))
                    continue
                except RpcError as exc:
                    if exc.code == REMOVED:
                        self.removed = str(exc)
                        log.warning("this node was removed from the swarm; its session has ended: %s", exc)
                        return
                    leader = str(exc) if exc.code == "not_leader" else ""
                    if leader:
                        self._remember(leader)
                        next_target = leader
                    else:
                        # No leader known (an election), or this manager failed: try the next one, slower each time.
                        log.info("session with manager %s failed: %s", target, exc or exc.code)
                        for addr in self._more_managers() if self._more_managers else []:
                            if addr not in self.managers:
                                self.managers.append(addr)
                        position = self.managers.index(target) if target in self.managers else -1
                        next_target = self.managers[(position + 1) % len(self.managers)]
                    if client is not None:
                        await client.close()
                        client = None
                    self.connected_to = None
                    if not leader or next_target == target:
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
                    target = next_target
        finally:
            if client is not None:
                await client.close()


def _next_heartbeat(answer: dict[str, Any], period: float) -> float:
    """Seconds until the next heartbeat: the answer's `next` if it names a sooner one, else the period."""
    sooner = answer.get("next")
    if isinstance(sooner, int | float) and not isinstance(sooner, bool) and 0 < sooner < period:
        return float(sooner)
    return period
