"""The node's event loop (`raftswarm.eventloop`): uvloop unless asyncio is chosen, and a bad choice refused;
and TLS accepted by `raftswarm.tlsaccept` on either loop when the client's hello arrives with the connection
(uvloop reads it at once, which broke `start_tls` after accept: workers could not join)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys

import pytest

from raftswarm import eventloop
from raftswarm.ca.certificates import (
    NodeRole,
    RootCA,
    client_ssl_context,
    new_cluster_id,
    new_node_id,
    server_ssl_context,
)
from raftswarm.errors import InvalidInput
from raftswarm.tlsaccept import Accepted, Acceptor

SERVER_NAME = NodeRole.MANAGER.value
"""The name a node checks a manager's certificate for (`ca.certificates`)."""

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency of raftswarm: `./setup` installs it")


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_a_node_runs_on_uvloop_unless_asyncio_is_chosen(monkeypatch):
    monkeypatch.delenv(eventloop.CHOICE, raising=False)
    assert eventloop.name() == "uvloop" and eventloop.run(_loop_type) is uvloop.Loop
    monkeypatch.setenv(eventloop.CHOICE, "asyncio")
    assert eventloop.name() == "asyncio"
    assert not issubclass(eventloop.run(_loop_type), uvloop.Loop)


def test_an_unknown_loop_is_refused_and_nothing_runs(monkeypatch):
    monkeypatch.setenv(eventloop.CHOICE, "trio")
    ran = []

    async def main() -> None:
        ran.append(True)

    with pytest.raises(InvalidInput, match="RAFTSWARM_EVENT_LOOP='trio': choose one of uvloop, asyncio"):
        eventloop.run(main)
    assert not ran


def test_the_node_command_says_so_exits_non_zero_and_makes_no_state_dir(tmp_path):
    state_dir = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "raftswarm.node", "--state-dir", str(state_dir)],
        env={"RAFTSWARM_EVENT_LOOP": "trio", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "RAFTSWARM_EVENT_LOOP='trio': choose one of uvloop, asyncio" in done.stderr
    assert not state_dir.exists()


# -- TLS accepted on either loop ---------------------------------------------------------------------------


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """2377's mutual TLS: a manager's server context and another manager's client context, one root."""
    root, cluster = RootCA.create(), new_cluster_id()
    server = root.issue(new_node_id(), NodeRole.MANAGER, cluster)
    client = root.issue(new_node_id(), NodeRole.MANAGER, cluster)
    return server_ssl_context(root.certificate, server), client_ssl_context(root.certificate, client)


async def _echo_once(server_context: ssl.SSLContext, client: ssl.SSLContext) -> tuple[bytes, list[str]]:
    """A client that sends its TLS hello as it connects, and then a line; what came back, and what the server
    saw of the connection before its handshake (nothing may have been read)."""
    seen: list[str] = []

    async def serve(accepted: Accepted) -> None:
        reader, writer = await accepted.handshake(server_context)
        writer.write(await reader.readline())
        await writer.drain()
        accepted.abort()

    def on_accept(accepted: Accepted) -> None:
        seen.append(f"accepted from {accepted.peername[0]}, writer {accepted.writer}")
        asyncio.get_running_loop().create_task(serve(accepted))

    acceptor = Acceptor("127.0.0.1", 0, on_accept)
    await acceptor.start()
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", acceptor.port, ssl=client, server_hostname=SERVER_NAME
        )
        writer.write(b"hello\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return answer, seen
    finally:
        await acceptor.close()


@pytest.mark.parametrize("loop", eventloop.LOOPS)
def test_tls_is_accepted_on_either_loop_when_the_hello_comes_with_the_connection(loop, monkeypatch):
    monkeypatch.setenv(eventloop.CHOICE, loop)
    server, client = _contexts()
    answer, seen = eventloop.run(lambda: asyncio.wait_for(_echo_once(server, client), 10))
    assert answer == b"hello\n"
    assert seen == ["accepted from 127.0.0.1, writer None"]


def test_a_connection_aborted_before_its_handshake_is_closed_and_its_handshake_refused():
    context, client = _contexts()

    async def scenario() -> str:
        refused: list[str] = []

        async def serve(accepted: Accepted) -> None:
            accepted.abort()  # the listener's limits may close a connection before its handshake
            try:
                await accepted.handshake(context)
            except OSError as exc:
                refused.append(type(exc).__name__)

        acceptor = Acceptor("127.0.0.1", 0, lambda a: asyncio.get_running_loop().create_task(serve(a)))
        await acceptor.start()
        try:
            with pytest.raises((OSError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", acceptor.port, ssl=client, server_hostname=SERVER_NAME), 5
                )
            for _ in range(100):
                if refused:
                    break
                await asyncio.sleep(0.01)
            return refused[0]
        finally:
            await acceptor.close()

    assert eventloop.run(scenario) == "ConnectionAbortedError"


def test_tune_collector_takes_the_imported_heap_out_of_the_collectors_generations_and_collects_less_often():
    code = (
        "import gc; import raftswarm.node.daemon; from raftswarm import eventloop;"
        "before = gc.get_freeze_count(); eventloop.tune_collector();"
        "print(before, gc.get_freeze_count(), gc.get_count()[2], *gc.get_threshold())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    before, frozen, oldest, young, middle, old = map(int, out.split())
    assert before == 0 and frozen > 10_000, "a node's imports are tens of thousands of objects"
    assert oldest == 0, "nothing is left for a full collection to walk"
    assert (young, middle, old) == (eventloop.YOUNG_THRESHOLD, eventloop.OLDER_THRESHOLD, eventloop.OLDER_THRESHOLD)
    assert young > 700, "fewer collections than CPython's default"
