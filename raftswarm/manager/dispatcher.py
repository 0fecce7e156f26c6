"""The dispatcher: every node keeps a session with the leader, proving it is alive with heartbeats,
receiving its assignments and reporting its tasks' progress.

Heartbeats are kept in the leader's memory, as SwarmKit does; only a change of a node's state (ready,
down) is written to the store. What to make of a heartbeat or of a node's silence -- sessions per leader
term, the grace a new leader gives, when a node is down -- is decided by `manager.heartbeats`, a pure state
machine this module feeds with the clock, the Raft term and the store's view; this module does the I/O.
A follower asked for anything answers `not_leader` with the leader's address, and the node moves its
session there.

Assignments are a long-poll stream per node (`dispatcher.assignments`): the first answer of a session is
the complete set, each later one the changes since the previous answer, sent as soon as there are any.
Every answer names the next one to ask for (`session`); a node that asks for any other (it lost an answer,
or restarted) gets the complete set again. A set larger than `ASSIGNMENT_PAGE_BYTES` -- secrets of up to
500 KiB and configs of up to 1000 KiB add up -- comes in pages, each within an RPC frame, that the node asks
for in turn and applies together once the last (`more` false) has come.
A node gets only its own tasks (from ASSIGNED to RUNNING; a task leaves the set once it has ended) and
exactly the secrets and configs those tasks reference, with their data; a secret or config no task of the
node references any more is sent as a removal. Status reports (`dispatcher.update_task_status`) are
accepted only for the caller's own tasks and only forward (or, in the same state, with new words: an
image's pull progress while PREPARING), and are written in batches: one transaction for all the reports
that arrive while the previous one commits.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

from ..ca.authority import CertificateAuthority
from ..ca.certificates import NodeIdentity, subject_key_id
from ..errors import RaftswarmError
from ..raft.driver import RaftDriver
from ..store import Conflict, ReplicatedStore, WatchCompacted, update
from ..objects.stored import StoredObject
from ..objects.kinds import CLUSTER, CLUSTER_KEY, NODES
from .caserver import engine_labels_param
from .controlapi import ControlApi
from ..objects.times import now_iso
from .heartbeats import DEFAULT_HEARTBEAT_PERIOD, DOWN, READY, Heartbeats, NotLeader, StaleSession
from .heartbeats import DOWN_AFTER_MISSED as DOWN_AFTER_MISSED  # re-exported: node.manager_role and logbroker read it here
from ..objects.tasks import TaskState
from ..rpc.channel import REMOVED, RpcError, RpcServer
from .screening import Broken, check_task
from .serviceapi import MAX_OPERATIONS_PER_TRANSACTION
from ..objects.kinds import CONFIGS, NETWORKS, SECRETS, TASKS, new_object_id
from ..objects.stored import api_view, config_data, secret_data
from ..objects.specs import referenced_configs, referenced_secrets

log = logging.getLogger(__name__)

SESSION_INVALID = "session_invalid"
"""The error code of a heartbeat naming a session that has ended (SwarmKit's ErrSessionInvalid): the node
starts a new one by heartbeating without a session."""
MAX_ASSIGNMENT_WAIT = 30.0
"""Longest an assignments call waits for a change before answering with none (the caller asks again)."""
ASSIGNMENT_PAGE_BYTES = 4 << 20
"""Most bytes of secrets, configs and tasks in one answer of `dispatcher.assignments` (one item larger than
this is a page of its own): half of an RPC frame (`rpc.channel.MAX_RPC_FRAME`), whose answer would otherwise
be refused as too large to send."""
_PAGED = ("removed_tasks", "removed_secrets", "removed_configs", "secrets", "configs", "tasks")
"""What an answer lists, in the order pages take it: a page never holds a task before the secrets and configs
it uses (the node applies the pages together anyway)."""
ATTACHMENT_WAIT_HEARTBEAT = 0.25
"""Seconds after which a node whose ingress address is not allocated yet heartbeats again (the answer's `next`),
instead of a whole period: it joins the routing mesh as soon as the allocator has written the address, as
dockerd does when SwarmKit's session stream brings it the node object. Its period, by which it is judged
down, stays what it was."""
ATTACHMENT_WAIT_LIMIT = 10.0
"""... for at most this long: an address the allocator cannot give (its subnet is full) is no reason for a
node to heartbeat four times a second for good."""
MAX_STATUS_TEXT = 1024
"""Longest Message or Err an agent may report (a task's error is a line, not a log)."""
MAX_PROBLEMS = 20
"""What a node may say is failing on it with each heartbeat: its failing loops and data-plane steps."""
MAX_REPORTED_PORTS = 1024
"""Host-mode ports one task's status may list; a service that publishes more is not one a node could run."""
MAX_KEY_ID_CHARS = 128
"""A subject key ID in hex is 40 characters (SHA-1, RFC 5280); anything much longer is not one."""
MAX_STATUS_UPDATES = 10_000
"""Status reports in one call: an agent batches what changed since its last call, one per task it runs."""
_STATUS_RETRIES = 5


def _delivered(task: StoredObject) -> bool:
    """Whether a task belongs in its node's assignment set: assigned and not yet ended. A task whose state
    cannot be read is not (`manager.screening` reports it; the index must not stop on it)."""
    try:
        check_task(task.data)
    except Broken:
        return False
    return TaskState.ASSIGNED <= TaskState.of(task.data["Status"]["State"]) <= TaskState.RUNNING


class _AssignmentSession:
    """What one node's assignment stream has been sent: task versions, secret and config IDs; the pages of
    the last answer still to send; and `id`, what the node is to ask for next."""

    def __init__(self) -> None:
        self._name = new_object_id()
        self._answers = itertools.count(1)
        self.id = self._name
        self.tasks: dict[str, int] = {}
        self.secrets: set[str] = set()
        self.configs: set[str] = set()
        self.pages: deque[dict[str, Any]] = deque()

    def answer(self, page: dict[str, Any]) -> dict[str, Any]:
        """`page`, naming the answer to ask for after it (the session's random name and a count: a new ID
        per answer costs the leader 25 random draws, thousands of times a second at scale)."""
        self.id = f"{self._name}.{next(self._answers)}"
        return {**page, "session": self.id}


def paginate(answer: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """An assignment answer cut into pages of at most `budget` bytes of listed items (msgpack-encoded, as the
    RPC frame holds them), in `_PAGED` order; each page says its number and whether `more` follow."""
    pages: list[dict[str, Any]] = []
    page = {key: [] for key in _PAGED}
    size = 0
    for key in _PAGED:
        for item in answer[key]:
            item_size = len(msgpack.packb(item, use_bin_type=True))
            if size + item_size > budget and size:
                pages.append(page)
                page, size = {key: [] for key in _PAGED}, 0
            page[key].append(item)
            size += item_size
    pages.append(page)
    return [
        {"type": answer["type"], **page, "page": number, "more": number < len(pages) - 1}
        for number, page in enumerate(pages)
    ]


class _StatusReport:
    def __init__(self, node_id: str, task_id: str, status: dict[str, Any]) -> None:
        self.node_id = node_id
        self.task_id = task_id
        self.status = status
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()


def _checked_status(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RpcError("invalid", "a status report needs a Status map")
    try:
        state = TaskState.of(str(raw.get("State", "")))
    except ValueError as exc:
        raise RpcError("invalid", str(exc)) from None
    if state < TaskState.ACCEPTED:
        raise RpcError("invalid", f"an agent cannot report state {state.api}; it reports from accepted on")
    status: dict[str, Any] = {"State": state.api, "Timestamp": now_iso()}
    for key in ("Message", "Err"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise RpcError("invalid", f"Status.{key} must be a string")
            status[key] = value[:MAX_STATUS_TEXT]
    container = raw.get("ContainerStatus")
    if container is not None:
        if not isinstance(container, dict):
            raise RpcError("invalid", "Status.ContainerStatus must be a map")
        status["ContainerStatus"] = {
            key: container[key]
            for key, kind in (("ContainerID", str), ("PID", int), ("ExitCode", int))
            if isinstance(container.get(key), kind) and not isinstance(container.get(key), bool)
        }
    ports = raw.get("PortStatus")
    if ports is not None:
        status["PortStatus"] = {"Ports": _checked_host_ports(ports)}
    return status


def _checked_host_ports(raw: Any) -> list[dict[str, Any]]:
    """A report's PortStatus: the task's host-mode ports as its node published them."""
    problem = (
        f"Status.PortStatus must be {{Ports: [...]}}, at most {MAX_REPORTED_PORTS} host-mode ports "
        "{Protocol: tcp|udp|sctp, TargetPort, PublishedPort: 1-65535, PublishMode: host}"
    )
    ports = raw.get("Ports") if isinstance(raw, dict) else None
    if not isinstance(ports, list) or len(ports) > MAX_REPORTED_PORTS:
        raise RpcError("invalid", problem)
    checked = []
    for port in ports:
        if not (
            isinstance(port, dict)
            and port.get("Protocol") in ("tcp", "udp", "sctp")
            and port.get("PublishMode") == "host"
            and all(
                type(port.get(key)) is int and 0 < port[key] <= 65535 for key in ("TargetPort", "PublishedPort")
            )
        ):
            raise RpcError("invalid", problem)
        checked.append({key: port[key] for key in ("Protocol", "TargetPort", "PublishedPort", "PublishMode")})
    return checked


def _not_ours(task: StoredObject | None, report: _StatusReport) -> bool:
    return task is None or task.data.get("NodeID") != report.node_id


class Dispatcher:
    def __init__(
        self,
        store: ReplicatedStore,
        driver: RaftDriver,
        rpc: RpcServer,
        period: float = DEFAULT_HEARTBEAT_PERIOD,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = ControlApi(store)
        self.driver = driver
        self.default_period = period
        """The node's --heartbeat-period; the swarm's Dispatcher.HeartbeatPeriod wins when an operator set it."""
        self.heartbeats = Heartbeats()
        self._clock = clock
        self._view: tuple[dict[str, str], str | None, list[bytes], str | None] = ({}, None, [], None)
        self._view_version = -1
        self._issuers: dict[str, str] = {}
        """Node ID -> key ID of the root that issued the certificate it last heartbeated with."""
        self._attachment_wait: dict[str, float] = {}
        """Since when each node has heartbeated without the ingress address the swarm owes it."""
        self._assigned: dict[str, dict[str, StoredObject]] = {}
        """Node ID -> its delivered tasks, kept current from a store watch."""
        self._node_of: dict[str, str] = {}
        """Task ID -> the node it is delivered to, for the tasks in `_assigned`."""
        self._assigned_changed: dict[str, asyncio.Event] = {}
        self._assignment_sessions: dict[str, _AssignmentSession] = {}
        self._reports: list[_StatusReport] = []
        self._reports_waiting = asyncio.Event()
        rpc.register("dispatcher.heartbeat", self.heartbeat, allowed={"worker", "manager"})
        rpc.register("dispatcher.assignments", self.assignments, allowed={"worker", "manager"})
        rpc.register("dispatcher.update_task_status", self.update_task_status, allowed={"worker", "manager"})

    @property
    def period(self) -> float:
        """Seconds between heartbeats: the swarm's `--dispatcher-heartbeat` if set to other than Docker's
        default (5 s), else this node's --heartbeat-period."""
        cluster = self.control.store.state.get(CLUSTER, CLUSTER_KEY)
        configured = ((cluster.data["Spec"].get("Dispatcher") or {}).get("HeartbeatPeriod") if cluster else None) or 0
        if configured and configured != int(DEFAULT_HEARTBEAT_PERIOD * 1e9):
            return configured / 1e9
        return self.default_period

    def forget(self, node_id: str) -> None:
        """Drop what this dispatcher keeps for a node removed from the swarm: its assignment session (a
        long-poll still waiting ends with `removed`), heartbeat session and issuer."""
        self.heartbeats.remove(node_id)
        self._issuers.pop(node_id, None)
        self._attachment_wait.pop(node_id, None)
        if self._assignment_sessions.pop(node_id, None) is not None:
            self._wake(node_id)

    def leader_address(self) -> str:
        leader = self.driver.peer_addresses().get(self.driver.leader_id)
        return f"{leader[0]}:{leader[1]}" if leader else ""

    def _leading_term(self) -> int | None:
        return self.driver.core.term if self.driver.is_leader else None

    async def heartbeat(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        assert identity is not None
        issuer = params.get("issuer", "")
        if not isinstance(issuer, str) or len(issuer) > MAX_KEY_ID_CHARS:
            raise RpcError("invalid", "issuer must be the key ID of the root that issued this node's certificate")
        session = params.get("session")
        if session is not None and not isinstance(session, str):
            raise RpcError("invalid", "session must be the one the last heartbeat's answer named, or absent")
        problems = params.get("problems") or []
        if not isinstance(problems, list) or len(problems) > MAX_PROBLEMS or not all(isinstance(p, str) for p in problems):
            raise RpcError("invalid", f"problems must be a list of at most {MAX_PROBLEMS} strings")
        message = "; ".join(problems)[:MAX_STATUS_TEXT]
        # The labels the node's daemon runs with now (`raftswarm-node --label`, changed by a restart), as
        # SwarmKit's agents describe their node again in each new session; absent from older nodes.
        labels = engine_labels_param(params["engine_labels"]) if "engine_labels" in params else None
        node_id = identity.node_id
        # The store is read at every heartbeat, not only our memory: another leader may have marked the node
        # down since we last heard it (found by `python -m chaos run --scenario partition-one-way`: nodes stayed
        # down while heartbeating).
        node = self.control.store.state.get(NODES, node_id)
        decision = self.heartbeats.heartbeat(
            node_id,
            session,
            now=self._clock(),
            term=self._leading_term(),
            period=self.period,
            recorded=node.data["Status"].get("State") if node else None,
        )
        if isinstance(decision, NotLeader):
            raise RpcError("not_leader", self.leader_address())
        if isinstance(decision, StaleSession):
            raise RpcError(
                SESSION_INVALID,
                f"session {decision.session} has ended (a new leader, or this node was marked down); "
                "heartbeat without a session to start a new one",
            )
        shown = (node.data["Status"].get("Message") or "") if node is not None else ""
        if decision.record_ready or shown != message:
            # A node that is up but has something failing says so in its status (`node inspect`).
            await self._record_ready(node_id, message)
        if node is not None and labels is not None:
            await self._record_engine_labels(node_id, labels)
        self._issuers[node_id] = issuer
        managers, rotation, gossip_keys, ingress_id = self._swarm_view()
        attachments = (node.data.get("Attachments") or []) if node else []
        # The role the swarm wants this node in: a node whose certificate says otherwise renews it and
        # switches roles (promote/demote), as SwarmKit's agents do. During a root rotation, the root every
        # node should move to.
        answer = {
            "session": decision.session,
            "period": decision.period,
            "role": node.data["Spec"]["Role"] if node else None,
            "managers": managers,
            "rotation": rotation,
            "gossip_keys": gossip_keys,
            "attachments": attachments,
        }
        if ingress_id is None or any(a["Network"]["ID"] == ingress_id for a in attachments):
            self._attachment_wait.pop(node_id, None)
        elif self._clock() - self._attachment_wait.setdefault(node_id, self._clock()) < ATTACHMENT_WAIT_LIMIT:
            # Its ingress address is being allocated (a node that just joined): it asks again soon, and joins
            # the routing mesh within a fraction of a second of the allocation rather than a period after.
            answer["next"] = min(decision.period, ATTACHMENT_WAIT_HEARTBEAT)
        return answer

    async def _record_ready(self, node_id: str, message: str = "") -> None:
        """Write that a node heard from is ready (a concurrent change of the node's object, such as its own Raft
        join, is read again and retried at once). A node not in the store yet (`swarm init` still writing it)
        or a write that fails (lost leadership, changes that keep coming) is not an error of the heartbeat: the
        store still does not say ready, so the node's next heartbeat writes again."""
        try:
            await self.control.set_node_status(node_id, READY, message)
        except RaftswarmError as exc:
            log.info("could not record node %s ready: %s", node_id, exc)

    async def _record_engine_labels(self, node_id: str, labels: dict[str, str]) -> None:
        """Write the node's engine labels if they changed (`set_engine_labels` reads this manager's state and
        writes nothing when they did not); a write that fails is tried again at its next heartbeat."""
        try:
            await self.control.set_engine_labels(node_id, labels)
        except RaftswarmError as exc:
            log.info("could not record the engine labels of node %s: %s", node_id, exc)

    def _swarm_view(self) -> tuple[dict[str, str], str | None, list[bytes], str | None]:
        """The managers' addresses, the pending root's key ID, the gossip keys (newest first) and the ingress
        network's ID, as of this manager's applied state. Every
        heartbeat needs them, so they are derived again only when the store has changed since (scanning all
        nodes and parsing the CA for each of thousands of heartbeats a second would not scale)."""
        state = self.control.store.state
        if self._view_version != state.version:
            managers = {n.id: n.data["ManagerStatus"]["Addr"] for n in state.list(NODES) if n.data.get("ManagerStatus")}
            cluster = state.get(CLUSTER, CLUSTER_KEY)
            rotation = CertificateAuthority.from_state(cluster.data["CA"]).rotation if cluster else None
            keys = sorted((cluster.data.get("NetworkBootstrapKeys") or []) if cluster else [], key=lambda k: -k["LamportTime"])
            ingress = next((n for n in state.list(NETWORKS) if n.data["Spec"].get("Ingress")), None)
            self._view = (
                managers,
                subject_key_id(rotation.pending_root.certificate) if rotation else None,
                [base64.b64decode(k["Key"]) for k in keys],
                ingress.id if ingress is not None else None,
            )
            self._view_version = state.version
        return self._view

    async def _maybe_finish_root_rotation(self) -> None:
        """Once every node that is up holds a certificate from the new root, the old root is retired."""
        if await self.control.store.get(CLUSTER, CLUSTER_KEY, linearizable=False) is None:
            return  # not initialized yet
        ca, version = await self.control.authority(linearizable=False)
        if ca.rotation is None:
            return
        pending = subject_key_id(ca.rotation.pending_root.certificate)
        for node in await self.control.nodes():
            if node.data["Status"].get("State") != "down" and self._issuers.get(node.id) != pending:
                return
        cluster = await self.control.cluster()
        data = {**cluster.data, "CA": ca.finish_root_rotation().to_state()}
        await self.control.store.transact([update(CLUSTER, CLUSTER_KEY, data, expect=version)])
        log.info("root CA rotation finished: every node holds a certificate from the new root")

    # -- assignments -----------------------------------------------------------------------------------

    async def assignments(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        """The caller's assignments: all of them for a new session, else what changed since the last answer
        (waiting up to `timeout` seconds for a change)."""
        assert identity is not None
        if not self.driver.is_leader:
            raise RpcError("not_leader", self.leader_address())
        node_id = identity.node_id
        timeout = params.get("timeout", MAX_ASSIGNMENT_WAIT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout):
            raise RpcError("invalid", "timeout must be a number of seconds")
        timeout = min(max(float(timeout), 0.0), MAX_ASSIGNMENT_WAIT)
        asked = params.get("session")
        if asked is not None and not isinstance(asked, str):
            raise RpcError("invalid", "session must be the ID of an earlier answer, or absent")
        session = self._assignment_sessions.get(node_id)
        complete = session is None or asked != session.id
        if complete:
            session = self._assignment_sessions[node_id] = _AssignmentSession()
        assert session is not None
        if session.pages:
            return session.answer(session.pages.popleft())
        deadline = asyncio.get_running_loop().time() + timeout
        event = self._assigned_changed.setdefault(node_id, asyncio.Event())
        while True:
            event.clear()
            answer = self._assignment_changes(node_id, session, complete)
            remaining = deadline - asyncio.get_running_loop().time()
            if complete or any(answer[key] for key in _PAGED) or remaining <= 0:
                first, *rest = paginate(answer, ASSIGNMENT_PAGE_BYTES)
                session.pages.extend(rest)
                return session.answer(first)
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                pass
            if not self.driver.is_leader:
                raise RpcError("not_leader", self.leader_address())
            if self._assignment_sessions.get(node_id) is not session:
                if self.control.store.state.get(NODES, node_id) is None:
                    raise RpcError(REMOVED, f"node {node_id} was removed from the swarm")
                raise RpcError("session_replaced", self.leader_address())

    def _assignment_changes(self, node_id: str, session: _AssignmentSession, complete: bool) -> dict[str, Any]:
        tasks = self._assigned.get(node_id, {})
        wanted_secrets: set[str] = set()
        wanted_configs: set[str] = set()
        for task in tasks.values():
            wanted_secrets.update(referenced_secrets({"TaskTemplate": task.data.get("Spec") or {}}))
            wanted_configs.update(referenced_configs({"TaskTemplate": task.data.get("Spec") or {}}))
        changed = [task for task_id, task in tasks.items() if session.tasks.get(task_id) != task.version]
        removed = sorted(set(session.tasks) - set(tasks))
        state = self.control.store.state
        new_secrets = []
        for secret_id in sorted(wanted_secrets - session.secrets):
            secret = state.get(SECRETS, secret_id)
            if secret is not None:
                new_secrets.append({"ID": secret.id, "Spec": secret.data["Spec"], "Data": secret_data(secret)})
        removed_secrets = sorted(session.secrets - wanted_secrets)
        new_configs = []
        for config_id in sorted(wanted_configs - session.configs):
            config = state.get(CONFIGS, config_id)
            if config is not None:
                new_configs.append({"ID": config.id, "Spec": config.data["Spec"], "Data": config_data(config)})
        removed_configs = sorted(session.configs - wanted_configs)
        session.tasks = {task_id: task.version for task_id, task in tasks.items()}
        session.secrets = {secret["ID"] for secret in new_secrets} | (session.secrets & wanted_secrets)
        session.configs = {config["ID"] for config in new_configs} | (session.configs & wanted_configs)
        return {
            "type": "complete" if complete else "incremental",
            "tasks": [api_view(task) for task in changed],
            "removed_tasks": removed,
            "secrets": new_secrets,
            "removed_secrets": removed_secrets,
            "configs": new_configs,
            "removed_configs": removed_configs,
        }

    def _index(self, task: StoredObject, removed: bool = False) -> None:
        """Keep `_assigned` current for one changed task and wake its node's (old and new) streams."""
        before = self._node_of.pop(task.id, None)
        if before is not None:
            del self._assigned[before][task.id]
            self._wake(before)
        node_id = task.data.get("NodeID")
        if not removed and node_id and _delivered(task):
            self._assigned.setdefault(node_id, {})[task.id] = task
            self._node_of[task.id] = node_id
            self._wake(node_id)

    def _wake(self, node_id: str) -> None:
        event = self._assigned_changed.get(node_id)
        if event is not None:
            event.set()

    async def _follow_tasks(self) -> None:
        """Keep the per-node index of delivered tasks current, from the store's watch."""
        while True:
            state = self.control.store.state
            self._assigned, self._node_of = {}, {}
            for task in state.list(TASKS):
                self._index(task)
            for event in self._assigned_changed.values():
                event.set()
            try:
                async for change in self.control.store.watch(state.version, frozenset({TASKS})):
                    self._index(change.object, removed=change.action.value == "delete")
            except WatchCompacted:
                continue

    # -- status reports --------------------------------------------------------------------------------

    async def update_task_status(self, identity: NodeIdentity | None, params: dict[str, Any]) -> dict[str, Any]:
        """Record the caller's reports on its tasks. Answers, per task ID, "ok" or why it was not recorded."""
        assert identity is not None
        if not self.driver.is_leader:
            raise RpcError("not_leader", self.leader_address())
        updates = params.get("updates")
        if not isinstance(updates, list) or len(updates) > MAX_STATUS_UPDATES:
            raise RpcError("invalid", f"updates must be a list of at most {MAX_STATUS_UPDATES} {{ID, Status}}")
        reports = []
        for item in updates:
            if not isinstance(item, dict) or not isinstance(item.get("ID"), str):
                raise RpcError("invalid", "each update needs a task ID and a Status")
            reports.append(_StatusReport(identity.node_id, item["ID"], _checked_status(item.get("Status"))))
        self._reports.extend(reports)
        self._reports_waiting.set()
        results = await asyncio.gather(*(report.done for report in reports))
        return {report.task_id: result for report, result in zip(reports, results, strict=True)}

    async def _write_reports(self) -> None:
        """Write the queued status reports, all that are waiting in one transaction."""
        while True:
            await self._reports_waiting.wait()
            self._reports_waiting.clear()
            batch, self._reports = self._reports, []
            try:
                await self._write_batch(batch)
            except RaftswarmError as exc:  # lost leadership, a timeout: the agents report again
                for report in batch:
                    if not report.done.done():
                        report.done.set_result(f"not recorded: {exc}")

    async def _write_batch(self, batch: list[_StatusReport]) -> None:
        confirmed = False
        for _ in range(_STATUS_RETRIES):
            state = self.control.store.state
            if not confirmed and any(_not_ours(state.get(TASKS, report.task_id), report) for report in batch):
                # "unknown task" and "not this node's task" are final answers (the agent drops the report), so
                # they are given only from state confirmed current: a leader just elected, or one deposed
                # without knowing it yet, may not have applied the task's assignment.
                await self.driver.read_barrier()
                confirmed = True
                state = self.control.store.state
            operations, written = [], {}
            for report in batch:
                if report.done.done():
                    continue
                task = written.get(report.task_id) or state.get(TASKS, report.task_id)
                if task is None:
                    report.done.set_result("unknown task")
                    continue
                if task.data.get("NodeID") != report.node_id:
                    report.done.set_result("not this node's task")
                    continue
                current = TaskState.of(task.data["Status"]["State"])
                reported = TaskState.of(report.status["State"])
                same_words = all(report.status.get(k) == task.data["Status"].get(k) for k in ("Message", "Err"))
                if reported < current or (reported == current and same_words):
                    report.done.set_result("ok")  # already there (a retried report) or an old one
                    continue
                data = {**task.data, "Status": report.status, "UpdatedAt": report.status["Timestamp"]}
                written[task.id] = StoredObject(task.kind, task.id, task.version, task.created, data)
            for task in written.values():
                operations.append(update(TASKS, task.id, task.data, expect=task.version))
            try:
                for start in range(0, len(operations), MAX_OPERATIONS_PER_TRANSACTION):
                    await self.control.store.transact(operations[start : start + MAX_OPERATIONS_PER_TRANSACTION])
            except Conflict:
                continue  # the reconciler changed one of these tasks meanwhile: read again
            for report in batch:
                if not report.done.done():
                    report.done.set_result("ok")
            return
        for report in batch:
            if not report.done.done():
                report.done.set_result("not recorded: the task kept changing; report again")

    # -- the loops -------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_tasks(), name="dispatcher-index")
            group.create_task(self._write_reports(), name="dispatcher-reports")
            group.create_task(self._watch_heartbeats(), name="dispatcher-heartbeats")

    async def _watch_heartbeats(self) -> None:
        """Every period: on the leader, mark down the nodes that stopped heartbeating, and finish a root rotation
        once every node has moved."""
        while True:
            await asyncio.sleep(self.period)
            try:
                await self._check_heartbeats()
            except RaftswarmError as exc:  # the nodes could not be read (an election): the next round reads again
                log.info("heartbeat check skipped: %s", exc)

    async def _check_heartbeats(self) -> None:
        nodes: dict[str, str] = {}
        if self._leading_term() is not None:
            nodes = {node.id: node.data["Status"].get("State", "") for node in await self.control.nodes()}
        # The term as it is after the read, which may have outlived the leadership it began in (a leadership
        # first seen by this tick decides nothing yet, whatever the nodes read).
        sweep = self.heartbeats.tick(now=self._clock(), term=self._leading_term(), period=self.period, nodes=nodes)
        if not sweep.leading:
            return
        for node_id in sweep.down:
            # What its assignment stream still had to send (pages of a large set) is not kept for a node that
            # is gone: back, it asks for the answer after its last one, and gets the complete set again.
            self._assignment_sessions.pop(node_id, None)
            self._attachment_wait.pop(node_id, None)
            try:
                if self.heartbeats.still_silent(node_id):
                    await self.control.set_node_status(node_id, DOWN, "heartbeat failure")
            except RaftswarmError as exc:  # a conflict or lost leadership: the next round decides again
                log.info("could not mark node %s down: %s", node_id, exc)
            if self.heartbeats.down_written(node_id):
                await self._record_ready(node_id)
        try:
            await self._maybe_finish_root_rotation()
        except RaftswarmError as exc:
            log.info("root rotation not finished this round: %s", exc)
