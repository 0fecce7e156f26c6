"""`GET /services/{id}/logs` and `GET /tasks/{id}/logs` (`api.logs`) and Docker's multiplexed stream
(`api.stdcopy`): the endpoints answer with the frames dockerd sends -- one per line, stdout and stderr apart,
prefixed with the timestamp and details docker's CLI parses -- collected from the agents through the leader's
broker; a node that cannot answer ends the stream with dockerd's "incomplete log stream" error."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Self

import pytest
from log_harness import WORKER1, WORKER2, BrokerHarness, FakeTaskLogs, until

from raftswarm.agent.logpublisher import serve_log_subscriptions
from raftswarm.api import logs as logs_api
from raftswarm.api.client import ApiClient, ApiError
from raftswarm.api.logs import log_payload, parse_since, rfc3339_nano
from raftswarm.api.server import ApiServer
from raftswarm.api.stdcopy import FrameDecoder, StreamFormatError, encode_frame
from raftswarm.manager.controlapi import ControlApi
from raftswarm.objects.kinds import SERVICES, TASKS
from raftswarm.manager.serviceapi import ServiceApi
from raftswarm.node.leaderlogs import LeaderLogs, leader_log_broker

SERVICE = "kzqr6fwm5rh7fzjxvfhqxn1zv"
T1, T2, T3, PENDING = "t1" + "a" * 23, "t2" + "b" * 23, "t3" + "c" * 23, "tp" + "d" * 23


# -- framing ------------------------------------------------------------------------------------------------


def test_a_frame_is_the_stream_byte_three_zero_bytes_the_big_endian_length_and_the_payload():
    assert encode_frame(1, b"hello\n") == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
    assert encode_frame(2, b"x" * 258)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x02"


def test_the_decoder_returns_whole_frames_however_the_bytes_arrive():
    stream = encode_frame(1, b"out\n") + encode_frame(2, b"err\n") + encode_frame(3, b"Error grabbing logs: x\n")
    decoder = FrameDecoder()
    frames = [frame for byte in stream for frame in decoder.feed(bytes([byte]))]
    decoder.finish()
    assert frames == [("stdout", b"out\n"), ("stderr", b"err\n"), ("system", b"Error grabbing logs: x\n")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x07\x00\x00\x00\x00\x00\x00\x01x", "Unrecognized input header: 7"),
        (b"\x01\x00\x00\x00\xff\xff\xff\xff", "over the"),
    ],
)
def test_the_decoder_refuses_what_is_not_a_multiplexed_stream(data, message):
    with pytest.raises(StreamFormatError, match=message):
        FrameDecoder().feed(data)


def test_a_stream_cut_inside_a_frame_is_an_error():
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1, b"whole\n") + encode_frame(1, b"cut\n")[:6]) == [("stdout", b"whole\n")]
    with pytest.raises(StreamFormatError, match="ended inside a frame"):
        decoder.finish()


# -- what a line looks like ----------------------------------------------------------------------------------


def test_timestamps_are_rfc3339_in_utc_with_nine_fraction_digits():
    assert rfc3339_nano(1714557600.25) == "2024-05-01T10:00:00.250000000Z"
    assert rfc3339_nano(0.5) == "1970-01-01T00:00:00.500000000Z"
    assert rfc3339_nano(1714557600) == "2024-05-01T10:00:00.000000000Z"


def test_a_line_carries_the_timestamp_then_the_escaped_sorted_details_as_dockerd_writes_them():
    message = {"task": T1, "node": WORKER1, "stream": "stdout", "time": 0.5, "line": b"hello"}
    options = logs_api.LogOptions(True, True, False, timestamps=True, details=True, tail=None, since=None)
    assert log_payload(message, "svc id&1", options) == (
        b"1970-01-01T00:00:00.500000000Z "
        + f"com.docker.swarm.node.id={WORKER1},com.docker.swarm.service.id=svc+id%261,com.docker.swarm.task.id={T1} ".encode()
        + b"hello\n"
    )
    plain = logs_api.LogOptions(True, True, False, timestamps=False, details=False, tail=None, since=None)
    assert log_payload({**message, "line": b"has its newline\n"}, SERVICE, plain) == b"has its newline\n"


def test_since_is_unix_seconds_with_up_to_nanoseconds():
    assert parse_since("") is None
    assert parse_since("1714557600") == 1714557600
    assert parse_since("1714557600.5") == 1714557600.5
    assert parse_since("1714557600.000000001") == pytest.approx(1714557600.000000001)
    with pytest.raises(Exception, match="could not parse since timestamp"):
        parse_since("yesterday")


# -- the endpoints --------------------------------------------------------------------------------------------


class FakeDaemon:
    """The node daemon as the API server sees it: a manager that is the leader."""

    def __init__(self, harness: BrokerHarness) -> None:
        self.harness = harness
        self.manager = type(
            "Manager", (), {"driver": harness.driver, "logbroker": harness.broker, "tls_contexts": []}
        )()
        self.agent = None

    def control(self) -> ControlApi:
        return ControlApi(self.harness.store)

    def services(self) -> ServiceApi:
        return ServiceApi(self.harness.store)

    async def leader_logs(self) -> LeaderLogs:
        return await leader_log_broker(self.manager)

    def local_state(self) -> str:
        return "active"


def task(task_id: str, slot: int, node_id: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"ID": task_id, "ServiceID": SERVICE, "Slot": slot, "Status": {"State": "running"}}
    if node_id:
        data["NodeID"] = node_id
    return data


def with_service(harness: BrokerHarness) -> BrokerHarness:
    """The service `web`: T1 and T2 on worker1, T3 on worker2, and a task not yet on a node."""
    harness.write(SERVICES, SERVICE, {"ID": SERVICE, "Spec": {"Name": "web"}})
    for data in (task(T1, 1, WORKER1), task(T2, 2, WORKER1), task(T3, 3, WORKER2), task(PENDING, 4, None)):
        harness.write(TASKS, data["ID"], data)
    return harness


@pytest.fixture
async def node(tmp_path: Path):
    """A manager's API (the leader) on a unix socket, with the service `web`."""
    async with BrokerHarness() as harness:
        with_service(harness)
        server = ApiServer(FakeDaemon(harness))
        await server.start_unix(str(tmp_path / "api.sock"))
        try:
            async with ApiClient(str(tmp_path / "api.sock")) as client:
                yield harness, client
        finally:
            await server.close()


class Agents:
    """The agents of worker1 and worker2, serving the broker with the given task logs."""

    def __init__(self, harness: BrokerHarness, logs: dict[str, FakeTaskLogs]) -> None:
        self.harness = harness
        self.logs = logs
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        for node_id, logs in self.logs.items():
            client = await self.harness.connect(node_id)
            self._tasks.append(asyncio.create_task(serve_log_subscriptions(client, logs)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for running in self._tasks:
            running.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def agents(harness: BrokerHarness) -> Agents:
    return Agents(
        harness,
        {
            WORKER1: FakeTaskLogs(
                {T1: [("stdout", 0.5, b"one"), ("stderr", 1.5, b"oops")], T2: [("stdout", 0.75, b"two")]}
            ),
            WORKER2: FakeTaskLogs({T3: [("stdout", 2.0, b"three")]}),
        },
    )


async def frames(client: ApiClient, path: str, **options: Any) -> list[tuple[str, bytes]]:
    async with asyncio.timeout(20):
        return [frame async for frame in client.logs(path, **options)]


async def test_service_logs_are_every_scheduled_tasks_lines_with_dockers_details(node):
    harness, client = node
    async with agents(harness) as running:
        got = await frames(client, "/services/web/logs", details=True, timestamps=True, tail="10")
    details = "com.docker.swarm.node.id={},com.docker.swarm.service.id=" + SERVICE + ",com.docker.swarm.task.id={}"
    expected = {
        ("stdout", f"1970-01-01T00:00:00.500000000Z {details.format(WORKER1, T1)} one\n".encode()),
        ("stderr", f"1970-01-01T00:00:01.500000000Z {details.format(WORKER1, T1)} oops\n".encode()),
        ("stdout", f"1970-01-01T00:00:00.750000000Z {details.format(WORKER1, T2)} two\n".encode()),
        ("stdout", f"1970-01-01T00:00:02.000000000Z {details.format(WORKER2, T3)} three\n".encode()),
    }
    assert set(got) == expected and len(got) == len(expected)
    assert got.index(
        ("stdout", f"1970-01-01T00:00:00.500000000Z {details.format(WORKER1, T1)} one\n".encode())
    ) < got.index(
        ("stderr", f"1970-01-01T00:00:01.500000000Z {details.format(WORKER1, T1)} oops\n".encode())
    )  # one task's lines keep their order
    assert sorted(running.logs[WORKER1].asked) == [(T1, 10, False, None), (T2, 10, False, None)]
    assert harness.broker._subscriptions == {}


async def test_task_logs_are_that_tasks_lines_only_and_streams_can_be_chosen(node):
    harness, client = node
    async with agents(harness):
        assert await frames(client, f"/tasks/{T1}/logs", stderr=False) == [("stdout", b"one\n")]
        assert await frames(client, f"/tasks/{T1}/logs", stdout=False) == [("stderr", b"oops\n")]


async def test_a_down_node_ends_the_stream_with_dockers_incomplete_log_stream_error(node):
    harness, client = node
    harness.set_node(WORKER2, "down")
    async with agents(harness):
        got = await frames(client, "/services/web/logs")
    assert got[-1] == (
        "system",
        b"Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for the following "
        + f"reasons: node {WORKER2} is not available\n".encode(),
    )
    assert sorted(got[:-1]) == [("stderr", b"oops\n"), ("stdout", b"one\n"), ("stdout", b"two\n")]


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"stdout": False, "stderr": False}, 400, "Bad parameters: you must choose at least one stream"),
        ({"tail": "many"}, 400, 'tail value must be a positive integer or "all"'),
        ({"tail": "-1"}, 400, "negative tail values not supported"),
        ({"since": "yesterday"}, 400, "could not parse since timestamp"),
    ],
)
async def test_bad_parameters_are_refused_before_the_stream_starts(node, options, status, message):
    harness, client = node
    with pytest.raises(ApiError, match=message) as refused:
        await frames(client, "/services/web/logs", **options)
    assert refused.value.status == status
    assert harness.broker._subscriptions == {}


async def test_an_unknown_service_or_task_is_a_404(node):
    _, client = node
    for path, message in (
        ("/services/nope/logs", "service nope not found"),
        ("/tasks/nope/logs", "task nope not found"),
    ):
        with pytest.raises(ApiError, match=message) as missing:
            await frames(client, path)
        assert missing.value.status == 404


async def test_a_client_that_goes_away_cancels_a_followed_subscription(node, monkeypatch):
    monkeypatch.setattr(logs_api, "READ_WAIT", 0.05)
    harness, client = node
    async with agents(harness):
        async with asyncio.timeout(20), contextlib.aclosing(client.logs(f"/tasks/{T3}/logs", follow=True)) as stream:
            async for frame in stream:
                assert frame == ("stdout", b"three\n")
                break  # the client stops reading and closes the connection
        assert len(harness.broker._subscriptions) <= 1
        await until(lambda: harness.broker._subscriptions == {}, "the subscription to be cancelled")


async def test_closing_the_server_ends_followed_streams_instead_of_waiting_for_them(tmp_path, monkeypatch):
    monkeypatch.setattr(logs_api, "READ_WAIT", 0.1)
    async with BrokerHarness() as harness:
        server = ApiServer(FakeDaemon(with_service(harness)))
        await server.start_unix(str(tmp_path / "api.sock"))
        async with ApiClient(str(tmp_path / "api.sock")) as client, agents(harness):
            stream = client.logs(f"/tasks/{T3}/logs", follow=True)
            async with asyncio.timeout(20):
                assert await anext(stream) == ("stdout", b"three\n")
                await server.close()  # aiohttp would wait up to 60 s for a handler still streaming
                assert [frame async for frame in stream] == []
