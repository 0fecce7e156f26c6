"""`Agent`: the worker side of orchestration. It follows its node's assignment stream from the dispatcher,
runs each assigned task through its states and reports every transition.

A task moves ACCEPTED -> PREPARING -> READY, waits there while its desired state is `ready` (a delayed
restart), then STARTING -> RUNNING and ends COMPLETE (exit 0), FAILED (any other exit, with the exit code),
REJECTED (it could not be started) or SHUTDOWN (the swarm told it to stop). States only move forward.

Secrets arrive with the assignments of the tasks that use them and are kept in this process's memory
only, never written to the state directory or logged; a secret no assigned task references is dropped.

The assignment stream and the status reports use their own connections to the manager the node's
heartbeat session (`agent.session.Session`) is talking to, and follow it when it moves to a new leader.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from ..addresses import parse_host_port
from ..manager.orchestrator import TaskState
from ..manager.rpc import RpcClient, RpcError
from .executor import TaskProcess, TaskRejected
from .session import Session

log = logging.getLogger(__name__)

ASSIGNMENT_WAIT = 10.0
"""How long the dispatcher may hold an assignments call open waiting for a change."""
_RETRY = 0.2


class _TaskController:
    """Walks one task through its states; `update` hands it the newest version of the task."""

    def __init__(self, agent: Agent, task: dict[str, Any]) -> None:
        self.agent = agent
        self.task = task
        self.state = TaskState.of(task["Status"]["State"])
        self.process: TaskProcess | None = None
        self._changed = asyncio.Event()
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
        if exit_code is not None or self.process is not None:
            container: dict[str, Any] = {}
            if self.process is not None:
                container["PID"] = self.process.pid
            if exit_code is not None:
                container["ExitCode"] = exit_code
            status["ContainerStatus"] = container
        self.agent.report(self.task["ID"], status)

    async def _wait_for(self, condition) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    async def _run(self) -> None:
        if self._desired() > TaskState.RUNNING:
            self._report(TaskState.SHUTDOWN, "shutdown")
            return
        self._report(TaskState.ACCEPTED, "accepted")
        self._report(TaskState.PREPARING, "preparing")
        self._report(TaskState.READY, "prepared")
        await self._wait_for(lambda: self._desired() != TaskState.READY)
        if self._desired() > TaskState.RUNNING:
            self._report(TaskState.SHUTDOWN, "shutdown")
            return
        self._report(TaskState.STARTING, "starting")
        try:
            self.process = await TaskProcess.start(self.task)
        except TaskRejected as exc:
            self._report(TaskState.REJECTED, "rejected", str(exc))
            return
        self._report(TaskState.RUNNING, "started")
        exited = asyncio.create_task(self.process.wait())
        stop_requested = asyncio.create_task(self._wait_for(lambda: self._desired() > TaskState.RUNNING))
        try:
            await asyncio.wait({exited, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_requested.cancel()
        if not exited.done():
            grace = ((self.task.get("Spec") or {}).get("ContainerSpec") or {}).get("StopGracePeriod")
            code = await self.process.stop(grace)
            self._report(TaskState.SHUTDOWN, "shutdown", exit_code=code)
            return
        code = exited.result()
        if code == 0:
            self._report(TaskState.COMPLETE, "finished", exit_code=0)
        else:
            self._report(TaskState.FAILED, "started", f"task: non-zero exit ({code})", exit_code=code)

    def _finished(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and runner.exception() is not None:
            log.error("task %s failed in the agent", self.task["ID"], exc_info=runner.exception())
            self._report(TaskState.FAILED, "agent error", f"agent error: {runner.exception()}")

    async def close(self) -> None:
        self.runner.cancel()
        await asyncio.gather(self.runner, return_exceptions=True)
        if self.process is not None:
            self.process.kill()
            await self.process.wait()


class Agent:
    """Runs a node's assigned tasks. `run` until cancelled; `close` stops every task process."""

    def __init__(self, session: Session, context: ssl.SSLContext) -> None:
        self.session = session
        self.context = context
        self.tasks: dict[str, _TaskController] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        """Secret ID -> {"Spec", "Data"}: in memory only."""
        self.assignment_session: str | None = None
        self._retired: set[_TaskController] = set()
        """Controllers of tasks no longer assigned here, until their process has stopped."""
        self._reports: dict[str, dict[str, Any]] = {}
        self._reports_waiting = asyncio.Event()

    def status(self) -> dict[str, Any]:
        """What this agent holds, for inspection: tasks and their states, and the secrets' IDs and names
        (never their data)."""
        return {
            "tasks": {task_id: c.state.api for task_id, c in sorted(self.tasks.items())},
            "secrets": {secret_id: s["Spec"]["Name"] for secret_id, s in sorted(self.secrets.items())},
        }

    def report(self, task_id: str, status: dict[str, Any]) -> None:
        self._reports[task_id] = status  # only the newest state of a task matters
        self._reports_waiting.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_assignments(), name="agent-assignments")
            group.create_task(self._send_reports(), name="agent-reports")

    async def close(self) -> None:
        await asyncio.gather(*(controller.close() for controller in [*self.tasks.values(), *self._retired]))
        self.tasks.clear()
        self._retired.clear()
        self.secrets.clear()

    async def _connect(self, target: str | None) -> RpcClient:
        host, port = parse_host_port(target or self.session.connected_to or self.session.managers[0])
        return await RpcClient.connect(host, port, self.context, server_hostname="swarm-manager")

    async def _with_manager(self, call) -> None:
        """Run `call(client)` against the session's manager, following leader redirects, until cancelled."""
        target: str | None = None
        while True:
            client = None
            try:
                client = await self._connect(target)
                await call(client)
            except RpcError as exc:
                target = str(exc) if exc.code == "not_leader" and str(exc) else None
                if target is None:
                    log.debug("agent connection to %s failed: %s", self.session.connected_to, exc)
                await asyncio.sleep(_RETRY)
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
        complete = answer.get("type") == "complete"
        if complete:
            self.secrets = {}
        for secret in answer.get("secrets") or []:
            self.secrets[secret["ID"]] = {"Spec": secret["Spec"], "Data": secret["Data"]}
        for secret_id in answer.get("removed_secrets") or []:
            self.secrets.pop(secret_id, None)
        assigned = {task["ID"]: task for task in answer.get("tasks") or []}
        removed = set(answer.get("removed_tasks") or [])
        if complete:
            removed |= set(self.tasks) - set(assigned)
        for task_id in removed:
            controller = self.tasks.pop(task_id, None)
            if controller is not None:
                # The swarm no longer assigns it here (it ended, or the node lost it): stop what still runs.
                self._retired.add(controller)
                controller.runner.add_done_callback(lambda _, c=controller: self._retired.discard(c))
                controller.update({**controller.task, "DesiredState": TaskState.SHUTDOWN.api})
        for task_id, task in assigned.items():
            controller = self.tasks.get(task_id)
            if controller is None:
                self.tasks[task_id] = _TaskController(self, task)
            else:
                controller.update(task)

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
