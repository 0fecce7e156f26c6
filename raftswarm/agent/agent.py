"""`Agent`: the worker side of orchestration. It follows its node's assignment stream from the dispatcher,
runs each assigned task through its states and reports every transition.

A task moves ACCEPTED -> PREPARING -> READY, waits there while its desired state is `ready` (a delayed
restart), then STARTING -> RUNNING and ends COMPLETE (exit 0), FAILED (any other exit, with the exit code),
REJECTED (it could not be started) or SHUTDOWN (the swarm told it to stop). States only move forward.

A task with a healthcheck (its service's merged over its image's, `runtime.health`) stays STARTING until a probe
in its container succeeds, as Docker's swarm executor waits for the container's first healthy event; only then
is it RUNNING, which is what convergence and rolling updates wait for. One that becomes unhealthy, starting or
running, is stopped and FAILED with Docker's words, "task: non-zero exit (143): dockerexec: unhealthy
container", so its restart policy replaces it and an update counts it as a failure. Its probes are tasks of its
controller: none outlives the task, or the agent; an agent that takes a running container back probes it again.

Tasks run as OCI containers (`runtime.containers`) whose monitors outlive the agent: an agent that starts
again finds the containers its predecessor started, and the first complete assignment set decides their fate
-- an assigned one is followed on where it is, never started twice; one no longer assigned here is stopped. A
task the swarm believes started here but whose container is gone is reported FAILED, so its restart policy
replaces it.

Secrets and configs arrive with the assignments of the tasks that use them and are kept in this process's
memory only, never written to the state directory or logged; one no assigned task references is dropped.
Tasks' output stays in their containers' log files while they run; the agent keeps the last
`ENDED_LOG_LINES` lines of each of the last `ENDED_TASK_LOGS` tasks that ended, for `service logs`.

The assignment stream, the status reports and the log subscriptions use their own connections to the
manager the node's heartbeat session (`agent.session.Session`) is talking to, and follow it when it moves
to a new leader.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from ..addresses import parse_host_port
from ..errors import RaftswarmError
from ..objects.registryauth import decode_auth
from ..objects.tasks import TaskState
from ..rpc.channel import REMOVED, RpcClient, RpcError
from ..runtime import health
from ..runtime.containers import Container, ContainerRuntime, SupervisorGone, TaskRejected
from ..supervision import TaskOwner
from .logpublisher import serve_log_subscriptions
from .session import Session

log = logging.getLogger(__name__)

ASSIGNMENT_WAIT = 10.0
"""How long the dispatcher may hold an assignments call open waiting for a change."""
ENDED_TASK_LOGS = 100
ENDED_LOG_LINES = 1000
"""Ended tasks whose output the agent keeps in memory, and how many of each one's last lines: a task's log
file goes with its container."""
_RETRY = 0.2
_RETRY_MAX = 5.0
"""Longest wait between attempts to reach a manager that keeps failing: one heartbeat period by default, so
a node is back within a period of the swarm's recovery, without a tight loop of refused connections."""

LogLine = tuple[str, float, bytes]


class TaskImages(Protocol):
    """The node's images as the agent uses them (`node.images.NodeImages`)."""

    async def prepare(
        self, reference: str, progress: Callable[[str], None], auth: dict[str, str] | None = None
    ) -> None:
        """Have the image `reference` in the node's store (pulling it, with the service's registry credentials
        `auth` if it has any, if it is not), or raise ImageUnavailable with Docker's words; `progress` gets short
        lines for the task's status message."""
        ...


class ImageUnavailable(RaftswarmError):
    """A task's image cannot be had: the task is rejected with this message, and its restart policy retries."""


class TaskNetworks(Protocol):
    """The node's data plane as the agent uses it (`node.networking.NodeNetworks`)."""

    async def attach(self, task: dict[str, Any], running: Container) -> None: ...
    async def detach(self, task_id: str) -> None: ...
    def host_ports(self, task_id: str) -> list[tuple[str, int, int]]: ...
    async def remove_all(self) -> None: ...
    async def close(self) -> None: ...


class _TaskController:
    """Walks one task through its states; `update` hands it the newest version of the task. `running` is
    given for a task an earlier agent started (found through its container's monitor)."""

    def __init__(self, agent: Agent, task: dict[str, Any], running: Container | None = None) -> None:
        self.agent = agent
        self.task = task
        self.state = TaskState.of(task["Status"]["State"])
        self.running = running
        self._host_ports: list[tuple[str, int, int]] = []
        self._changed = asyncio.Event()
        self._probes = TaskOwner(f"task {task['ID']}", log)
        """The task's health probes (`runtime.health.watch`), closed when its container stops or the agent closes."""
        self._unhealthy = asyncio.Event()
        self.runner = asyncio.create_task(self._run(), name=f"task-{task['ID'][:12]}")
        self.runner.add_done_callback(self._finished)

    def update(self, task: dict[str, Any]) -> None:
        self.task = task
        self._changed.set()

    def _desired(self) -> TaskState:
        return TaskState.of(self.task["DesiredState"])

    def _report(self, state: TaskState, message: str, err: str = "", exit_code: int | None = None) -> None:
        if state <= self.state:
            return
        self.state = state
        status: dict[str, Any] = {"State": state.api, "Message": message}
        if err:
            status["Err"] = err
        if exit_code is not None or self.running is not None:
            # As Docker's ContainerStatus, read from `docker inspect`: an ExitCode of 0 until the container exits.
            container: dict[str, Any] = {"ExitCode": 0 if exit_code is None else exit_code}
            if self.running is not None:
                container["ContainerID"] = self.running.container_id
                container["PID"] = self.running.pid
            status["ContainerStatus"] = container
        if self.agent.networks is not None:
            # Kept once known: the reports after the task ended still say where it was published, as Docker's do.
            self._host_ports = self.agent.networks.host_ports(self.task["ID"]) or self._host_ports
        if self._host_ports:
            # Docker's PortStatus: the host-mode ports as the node published them (`service ps`: PORTS).
            status["PortStatus"] = {
                "Ports": [
                    {"Protocol": protocol, "TargetPort": target, "PublishedPort": published, "PublishMode": "host"}
                    for protocol, published, target in self._host_ports
                ]
            }
        self.agent.report(self.task["ID"], status)

    async def _wait_for(self, condition) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    async def _run(self) -> None:
        found = self.running is not None
        if not found and not await self._start():
            return
        assert self.running is not None
        checked = await self._health(self.running)
        if checked is None:
            # Started is running; for a found one, an earlier agent may have died before reporting it.
            self._report(TaskState.RUNNING, "started")
        if found:
            plug = self._plug_networks()
            if plug is not None:
                try:
                    await plug(self.running)  # the overlays survived; the resolver and VIP table did not
                except Exception:
                    log.exception("task %s: could not plug it into its networks again", self.task["ID"])
        try:
            code = await self._supervise(self.running, checked)
        except SupervisorGone:
            self._report(TaskState.FAILED, "failed", "task: its container's monitor died; the task's fate is unknown")
            return
        await self._keep_output()
        if code is None:
            return
        if code == 0:
            self._report(TaskState.COMPLETE, "finished", exit_code=0)
        else:
            self._report(TaskState.FAILED, self._last_transition(), f"task: non-zero exit ({code})", exit_code=code)

    def _last_transition(self) -> str:
        """A failed task keeps the message of its last transition, as in SwarmKit: a task with a healthcheck
        can fail before it ran."""
        return "started" if self.state == TaskState.RUNNING else "starting"

    async def _start(self) -> bool:
        if self._desired() >= TaskState.SHUTDOWN:
            self._report(TaskState.SHUTDOWN, "shutdown")
            return False
        if self.state >= TaskState.STARTING:
            # The swarm saw it start here, but no container of it is left (the node restarted): it is gone.
            self._report(TaskState.FAILED, "failed", "task: not running any more: the node restarted without it")
            return False
        self._report(TaskState.ACCEPTED, "accepted")
        self._report(TaskState.PREPARING, "preparing")
        container = (self.task.get("Spec") or {}).get("ContainerSpec") or {}
        # `--with-registry-auth`: the service's credentials came with the task, and stay in this memory.
        auth = decode_auth(((container.get("PullOptions") or {}).get("RegistryAuth")) or "")
        try:
            await self.agent.images.prepare(container.get("Image", ""), self._preparing, auth)
        except ImageUnavailable as exc:
            self._report(TaskState.REJECTED, "rejected", str(exc))
            return False
        self._report(TaskState.READY, "prepared")
        await self._wait_for(lambda: self._desired() != TaskState.READY)
        if self._desired() >= TaskState.SHUTDOWN:
            self._report(TaskState.SHUTDOWN, "shutdown")
            return False
        self._report(TaskState.STARTING, "starting")
        try:
            self.running = await self.agent.runtime.start(
                self.task,
                self.agent.secrets_of(self.task),
                prepare=self._plug_networks(),
                configs=self.agent.configs_of(self.task),
            )
        except TaskRejected as exc:
            self._report(TaskState.REJECTED, "rejected", str(exc))
            return False
        return True

    async def _health(self, running: Container) -> health.Health | None:
        """The task's health to follow, or None if it has no healthcheck (or is to stop anyway)."""
        if self._desired() >= TaskState.SHUTDOWN:
            return None
        check = await asyncio.to_thread(health.task_healthcheck, self.task, self.agent.runtime.images)
        if check is None:
            return None
        started = health.started_at(running.pid)
        return health.Health(check, time.monotonic() if started is None else started)

    def _health_changed(self, status: health.HealthStatus) -> None:
        if status is health.HealthStatus.HEALTHY:
            self._report(TaskState.RUNNING, "started")
        elif status is health.HealthStatus.UNHEALTHY:
            self._unhealthy.set()

    def _preparing(self, line: str) -> None:
        """Image progress as the PREPARING status message (`docker service ps` shows it), at most one report
        per state change of a layer, not per byte."""
        self.agent.report(self.task["ID"], {"State": TaskState.PREPARING.api, "Message": f"preparing: {line}"})

    async def _supervise(self, running: Container, checked: health.Health | None) -> int | None:
        """Until the task ends: its exit code, or None once it was stopped (reported SHUTDOWN, or FAILED as
        unhealthy). `checked`: its health, probed meanwhile."""
        if checked is not None:
            self._probes.spawn(health.watch(running, checked, self._health_changed), f"health-{self.task['ID'][:12]}")
        exited = asyncio.create_task(running.wait())
        stop_requested = asyncio.create_task(self._wait_for(lambda: self._desired() >= TaskState.SHUTDOWN))
        unhealthy = asyncio.create_task(self._unhealthy.wait())
        try:
            await asyncio.wait({exited, stop_requested, unhealthy}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._probes.close()  # no probe runs into the container's stop
            stop_requested.cancel()
            unhealthy.cancel()
            if not exited.done():
                exited.cancel()
            await asyncio.gather(exited, stop_requested, unhealthy, return_exceptions=True)
        if self._unhealthy.is_set():
            assert checked is not None and checked.last is not None
            log.warning(
                "task %s is unhealthy (%d failed probes in a row), stopping it; the last probe said: %s",
                self.task["ID"], checked.failing_streak, checked.last.output.strip(),
            )
            code = await self._stop(running)
            # Docker's words; a task that exits 0 when stopped ends COMPLETE in Docker, here it fails all the same.
            err = f"task: non-zero exit ({code}): {health.UNHEALTHY}" if code else health.UNHEALTHY
            self._report(TaskState.FAILED, self._last_transition(), err, exit_code=code)
            return None
        if exited.cancelled():
            self._report(TaskState.SHUTDOWN, "shutdown", exit_code=await self._stop(running))
            return None
        return exited.result()

    async def _stop(self, running: Container) -> int:
        grace = ((self.task.get("Spec") or {}).get("ContainerSpec") or {}).get("StopGracePeriod")
        return await running.stop(grace)

    def _plug_networks(self):
        """What connects the task to its networks before its command starts, or None if nothing does."""
        ports = (self.task.get("Endpoint") or {}).get("Ports") or []
        host_ports = any(p.get("PublishMode") == "host" for p in ports)
        if not self.task.get("NetworksAttachments") and not host_ports:
            return None
        networks = self.agent.networks
        if networks is None:
            self.agent.warn_no_data_plane()
            return None
        task = self.task
        return lambda running: networks.attach(task, running)

    async def _keep_output(self) -> None:
        """The ended task's last lines go from its log file to the agent's memory, and its container is removed."""
        running = self.running
        if running is None:
            return
        if self.agent.networks is not None:
            await self.agent.networks.detach(self.task["ID"])
        try:
            self.agent.keep_logs(self.task["ID"], [line async for line in running.logs(tail=ENDED_LOG_LINES)])
        except OSError as exc:
            log.warning("task %s: its output could not be read: %s", self.task["ID"], exc)
        await running.release()

    def _finished(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and runner.exception() is not None:
            log.error("task %s failed in the agent", self.task["ID"], exc_info=runner.exception())
            self._report(TaskState.FAILED, "agent error", f"agent error: {runner.exception()}")

    async def close(self, stop_task: bool) -> None:
        """Stop following the task; kill it too if `stop_task` (else it runs on, for the next agent to find)."""
        self.runner.cancel()
        await asyncio.gather(self.runner, return_exceptions=True)
        await self._probes.close()
        if self.running is not None:
            if stop_task:
                await self.running.release()
            else:
                self.running.forget()


class Agent:
    """Runs a node's assigned tasks. `run` until cancelled; `close` stops every task process."""

    def __init__(
        self,
        session: Session,
        context: ssl.SSLContext,
        runtime: ContainerRuntime,
        images: TaskImages,
        networks: TaskNetworks | None = None,
    ) -> None:
        """`runtime`: the node's containers (in the worker's state directory); `images`: where tasks' images
        come from (`node.images`); `networks`: the node's data plane, None where it has none (see
        `node.networking`)."""
        self.session = session
        self.context = context
        self.images = images
        self.networks = networks
        self._warned_no_data_plane = False
        self.runtime = runtime
        self.tasks: dict[str, _TaskController] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        """Secret ID -> {"Spec", "Data"}: in memory only."""
        self.configs: dict[str, dict[str, Any]] = {}
        """Config ID -> {"Spec", "Data"}: in memory only, as secrets."""
        self.assignment_session: str | None = None
        self._paged: dict[str, Any] | None = None
        """The pages of an assignment set so far, while more are to come (`dispatcher.paginate`)."""
        self._retired: set[_TaskController] = set()
        """Controllers of tasks no longer assigned here, until their process has stopped."""
        self._reports: dict[str, dict[str, Any]] = {}
        self._reports_waiting = asyncio.Event()
        self._found: dict[str, Container] | None = None
        """Tasks an earlier agent started, until the first complete assignment set says what to do with them."""
        self._ended_logs: OrderedDict[str, list[LogLine]] = OrderedDict()

    def status(self) -> dict[str, Any]:
        """What this agent holds, for inspection: tasks and their states, and the secrets' and configs' IDs and
        names (never their data)."""
        return {
            "tasks": {task_id: c.state.api for task_id, c in sorted(self.tasks.items())},
            "secrets": {secret_id: s["Spec"]["Name"] for secret_id, s in sorted(self.secrets.items())},
            "configs": {config_id: c["Spec"]["Name"] for config_id, c in sorted(self.configs.items())},
        }

    def report(self, task_id: str, status: dict[str, Any]) -> None:
        self._reports[task_id] = status  # only the newest state of a task matters
        self._reports_waiting.set()

    def warn_no_data_plane(self) -> None:
        if not self._warned_no_data_plane:
            self._warned_no_data_plane = True
            log.warning("tasks on overlay networks get loopback only: this node has no data plane")

    def secrets_of(self, task: dict[str, Any]) -> dict[str, bytes]:
        """Secret ID -> data, for the secrets delivered here that `task` references."""
        references = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Secrets") or []
        wanted = {ref.get("SecretID") for ref in references}
        return {secret_id: secret["Data"] for secret_id, secret in self.secrets.items() if secret_id in wanted}

    def configs_of(self, task: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Config ID -> {"Spec", "Data"}, for the configs delivered here that `task` references."""
        references = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Configs") or []
        wanted = {ref.get("ConfigID") for ref in references}
        return {config_id: config for config_id, config in self.configs.items() if config_id in wanted}

    def keep_logs(self, task_id: str, lines: list[LogLine]) -> None:
        self._ended_logs[task_id] = lines
        self._ended_logs.move_to_end(task_id)
        while len(self._ended_logs) > ENDED_TASK_LOGS:
            self._ended_logs.popitem(last=False)

    async def read_logs(
        self, task_id: str, *, tail: int | None = None, follow: bool = False, since: float | None = None
    ) -> AsyncIterator[LogLine]:
        """A task's output lines, oldest first (see `Container.logs`); nothing for a task unknown here."""
        controller = self.tasks.get(task_id)
        running = controller.running if controller is not None else None
        if running is not None and task_id not in self._ended_logs:
            try:
                async for line in running.logs(tail=tail, since=since, follow=follow):
                    yield line
                return
            except OSError:
                pass  # it ended and was removed just now: its output is kept below
        lines = [line for line in self._ended_logs.get(task_id, []) if since is None or line[1] >= since]
        for line in lines[len(lines) - tail :] if tail is not None and tail < len(lines) else lines:
            yield line

    async def run(self) -> None:
        self._found = {}
        for task_id in self.runtime.task_ids():
            running = await self.runtime.attach(task_id)
            if running is not None:
                self._found[task_id] = running
        if self._found:
            log.info("found %d task(s) started before this agent: %s", len(self._found), ", ".join(sorted(self._found)))
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_assignments(), name="agent-assignments")
            group.create_task(self._send_reports(), name="agent-reports")
            group.create_task(self._with_manager(self._serve_logs), name="agent-logs")

    async def _serve_logs(self, client: RpcClient) -> None:
        await serve_log_subscriptions(client, self.read_logs)

    async def close(self, stop_tasks: bool = True) -> None:
        """Stop following the tasks. With `stop_tasks` (the node leaves the swarm or stops) kill them and
        their containers; without (the node changes role) leave them running for the next agent to find."""
        found = [_TaskController(self, _unassigned(task_id), running) for task_id, running in (self._found or {}).items()]
        self._found = None
        controllers = [*self.tasks.values(), *self._retired, *found]
        await asyncio.gather(*(controller.close(stop_tasks) for controller in controllers))
        if self.networks is not None:
            if stop_tasks:
                await self.networks.remove_all()
            await self.networks.close()
        self.tasks.clear()
        self._retired.clear()
        self.secrets.clear()
        self.configs.clear()

    async def _connect(self, target: str | None) -> RpcClient:
        host, port = parse_host_port(target or self.session.connected_to or self.session.managers[0])
        return await RpcClient.connect(host, port, self.context, server_hostname="swarm-manager")

    async def _with_manager(self, call) -> None:
        """Run `call(client)` against the session's manager, following leader redirects, until cancelled or
        the swarm removes this node. Failures other than a redirect back off, up to `_RETRY_MAX`."""
        target: str | None = None
        retry = _RETRY
        while self.session.removed is None:
            client = None
            started = asyncio.get_running_loop().time()
            try:
                client = await self._connect(target)
                await call(client)
            except RpcError as exc:
                if exc.code == REMOVED:
                    return  # for good: the session says so once (agent.session)
                target = str(exc) if exc.code == "not_leader" and str(exc) else None
                if target is not None or asyncio.get_running_loop().time() - started > _RETRY_MAX:
                    retry = _RETRY  # a redirect, or a connection that served a while: not a failing manager
                else:
                    log.debug("agent connection to %s failed: %s", self.session.connected_to, exc)
                await asyncio.sleep(retry)
                if target is None:
                    retry = min(retry * 2, _RETRY_MAX)
            finally:
                if client is not None:
                    await client.close()

    async def _follow_assignments(self) -> None:
        async def stream(client: RpcClient) -> None:
            while True:
                answer = await client.call(
                    "dispatcher.assignments",
                    {"session": self.assignment_session, "timeout": ASSIGNMENT_WAIT},
                    timeout=ASSIGNMENT_WAIT + 10,
                )
                self._apply(answer)

        await self._with_manager(stream)

    def _apply(self, answer: dict[str, Any]) -> None:
        self.assignment_session = answer["session"]
        if answer.get("page", 0) == 0:
            self._paged = None  # an answer starts afresh, even if the pages of one before it were cut short
        if answer.get("more") or self._paged is not None:
            self._paged = _merged(self._paged, answer)
            if answer.get("more"):
                return  # the dispatcher sends the next page at once; the set is applied whole
            answer, self._paged = self._paged, None
        complete = answer.get("type") == "complete"
        if complete:
            self.secrets = {}
            self.configs = {}
        for secret in answer.get("secrets") or []:
            self.secrets[secret["ID"]] = {"Spec": secret["Spec"], "Data": secret["Data"]}
        for secret_id in answer.get("removed_secrets") or []:
            self.secrets.pop(secret_id, None)
        for config in answer.get("configs") or []:
            self.configs[config["ID"]] = {"Spec": config["Spec"], "Data": config["Data"]}
        for config_id in answer.get("removed_configs") or []:
            self.configs.pop(config_id, None)
        assigned = {task["ID"]: task for task in answer.get("tasks") or []}
        removed = set(answer.get("removed_tasks") or [])
        if complete:
            removed |= set(self.tasks) - set(assigned)
        for task_id in removed:
            controller = self.tasks.pop(task_id, None)
            if controller is not None:
                # The swarm no longer assigns it here (it ended, or the node lost it): stop what still runs.
                self._retire(controller)
        found = self._found or {}
        for task_id, task in assigned.items():
            controller = self.tasks.get(task_id)
            if controller is None:
                self.tasks[task_id] = _TaskController(self, task, found.pop(task_id, None))
            else:
                controller.update(task)
        if complete and self._found is not None:
            for task_id, running in found.items():
                log.info("task %s, started before this agent, is no longer assigned here: stopping it", task_id)
                self._retire(_TaskController(self, _unassigned(task_id), running))
            self._found = None

    def _retire(self, controller: _TaskController) -> None:
        self._retired.add(controller)
        controller.runner.add_done_callback(lambda _: self._retired.discard(controller))
        controller.update({**controller.task, "DesiredState": TaskState.SHUTDOWN.api})

    async def _send_reports(self) -> None:
        async def send(client: RpcClient) -> None:
            while True:
                await self._reports_waiting.wait()
                self._reports_waiting.clear()
                batch, self._reports = self._reports, {}
                try:
                    results = await client.call(
                        "dispatcher.update_task_status",
                        {"updates": [{"ID": task_id, "Status": status} for task_id, status in batch.items()]},
                    )
                except RpcError:
                    self._requeue(batch)
                    raise
                # "not recorded": the manager could not write it now (say, it is losing leadership): again.
                retry = {k: v for k, v in batch.items() if str(results.get(k, "")).startswith("not recorded")}
                if retry:
                    await asyncio.sleep(_RETRY)
                    self._requeue(retry)

        await self._with_manager(send)

    def _requeue(self, batch: dict[str, dict[str, Any]]) -> None:
        for task_id, status in batch.items():
            self._reports.setdefault(task_id, status)  # a newer report of the same task wins
        if batch:
            self._reports_waiting.set()


def _unassigned(task_id: str) -> dict[str, Any]:
    """What the agent knows of a task it found running but the swarm no longer assigns to it."""
    return {"ID": task_id, "DesiredState": TaskState.SHUTDOWN.api, "Status": {"State": TaskState.RUNNING.api}}


def _merged(so_far: dict[str, Any] | None, page: dict[str, Any]) -> dict[str, Any]:
    """One page of an assignment set added to the ones before it: the first page's type, every list joined."""
    merged = so_far if so_far is not None else {"type": page.get("type")}
    for key, value in page.items():
        if isinstance(value, list):
            merged.setdefault(key, []).extend(value)
    return merged
