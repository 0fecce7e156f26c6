"""The client side of the RPC channel (`rpc.channel.RpcClient`), over an in-memory stream: no sockets."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from raftswarm.rpc.channel import RpcClient, RpcError


class _Writer:
    """What RpcClient uses of a StreamWriter; keeps what was written."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass


def _answer(call_id: int, result: object) -> bytes:
    payload = msgpack.packb({"id": call_id, "result": result}, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


async def test_a_call_is_answered_with_its_result():
    reader = asyncio.StreamReader()
    client = RpcClient(reader, _Writer())  # type: ignore[arg-type]
    reader.feed_data(_answer(1, {"period": 5.0}))
    assert await client.call("dispatcher.heartbeat") == {"period": 5.0}


async def test_cancelling_a_call_whose_answer_arrives_at_that_moment_still_cancels_the_caller():
    # Python 3.11's asyncio.wait_for returns the answer instead when the cancellation and the answer come in
    # the same loop iteration: a session being shut down would then carry on. The caller must see the cancel.
    reader = asyncio.StreamReader()
    client = RpcClient(reader, _Writer())  # type: ignore[arg-type]
    call = asyncio.create_task(client.call("dispatcher.heartbeat"))
    await asyncio.sleep(0)  # the request is written; the call waits for its answer
    reader.feed_data(_answer(1, {"period": 5.0}))
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_cancelling_a_call_waiting_for_its_answer_cancels_the_caller():
    reader = asyncio.StreamReader()
    client = RpcClient(reader, _Writer())  # type: ignore[arg-type]
    call = asyncio.create_task(client.call("dispatcher.assignments", {"timeout": 30}))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_call_not_answered_in_time_fails_unavailable():
    client = RpcClient(asyncio.StreamReader(), _Writer())  # type: ignore[arg-type]
    with pytest.raises(RpcError) as failed:
        await client.call("dispatcher.heartbeat", timeout=0.01)
    assert failed.value.code == "unavailable"
