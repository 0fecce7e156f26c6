"""The runtime's child processes (`runtime.processes.Child`): started with vfork, awaited through a pidfd, their
piped output read as it comes, on asyncio's loop and on uvloop's (which the nodes run)."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from raftswarm.runtime import processes
from raftswarm.runtime.processes import Child


def _loops() -> list:
    loops = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, pytest.param(uvloop.new_event_loop, id="uvloop")]


LOOPS = _loops()


def run(new_loop, coroutine) -> object:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coroutine)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_output_of_both_streams_and_the_exit_code(new_loop):
    async def scenario():
        child = Child(
            [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
            stdin=processes.DEVNULL, stdout=processes.PIPE, stderr=processes.PIPE,
        )
        return await child.communicate(), child.returncode

    (out, err), code = run(new_loop, scenario())
    assert (out, err, code) == (b"out\n", b"err\n", 3)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_more_output_than_a_pipe_holds_does_not_block_the_child(new_loop):
    # 1 MiB on each stream: a child writing more than the 64 KiB a pipe buffers waits until it is read.
    program = "import os; [os.write(fd, b'x' * 65536) for _ in range(16) for fd in (1, 2)]"

    async def scenario():
        child = Child([sys.executable, "-c", program], stdout=processes.PIPE, stderr=processes.PIPE)
        async with asyncio.timeout(60):
            return await child.communicate()

    out, err = run(new_loop, scenario())
    assert len(out) == len(err) == 1 << 20


@pytest.mark.parametrize("new_loop", LOOPS)
def test_the_loop_runs_on_while_a_child_runs_and_waiters_all_see_its_end(new_loop):
    async def scenario():
        child = Child([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=processes.PIPE)
        waiters = [asyncio.ensure_future(child.wait()) for _ in range(3)]
        await asyncio.sleep(0.05)  # the loop is not held by the running child
        assert not any(waiter.done() for waiter in waiters) and child.returncode is None
        child._popen.stdin.close()  # the child reads to the end of its input and exits
        return await asyncio.gather(*waiters), await child.wait()

    assert run(new_loop, scenario()) == ([0, 0, 0], 0)


@pytest.mark.parametrize("new_loop", LOOPS)
def test_a_killed_child_ends_with_the_signal_and_kill_after_its_end_is_harmless(new_loop):
    async def scenario():
        child = Child(["sleep", "60"])
        child.kill()
        code = await child.wait()
        child.kill()  # reaped: its PID may be another process's by now, so nothing is sent
        return code

    assert run(new_loop, scenario()) == -signal.SIGKILL


def test_a_missing_program_raises_at_once():
    with pytest.raises(FileNotFoundError):
        Child(["/nonexistent/program"])
