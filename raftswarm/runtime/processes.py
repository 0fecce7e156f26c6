"""The runtime's child processes (conmon, crun), started without stopping the event loop.

uvloop's `create_subprocess_exec` forks the whole node on the loop's thread: with a node's ~60 MB heap that is
~2.5 ms of CPU and ~7 ms with the loop stopped per child, against ~0.1 ms and ~0.9 ms for `subprocess.Popen`,
which uses vfork (measured with a 60 MB heap). A container's start and removal take four children; a worker
starting 50 tasks at once had its loop stopped for over a second. So a child here is a `Popen`, its
pipes are read as the loop sees data on them, and its exit is awaited through a pidfd, which says when the
process ended without any SIGCHLD handler or thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from typing import Any

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


class Child:
    """A started child process; `wait` for its exit code, `communicate` for the output of its piped streams."""

    def __init__(self, argv: Sequence[str], **popen: Any) -> None:
        self._popen = subprocess.Popen(list(argv), **popen)
        self.pid = self._popen.pid
        self._exited: asyncio.Future[int] | None = None

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL, unless it was already reaped (its PID could be another process's by now)."""
        if self._popen.returncode is None:
            self._popen.kill()

    async def wait(self) -> int:
        if self._popen.poll() is not None:
            return self._popen.returncode
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            pidfd = os.pidfd_open(self.pid)

            def on_exit() -> None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                if not self._exited.done():
                    self._exited.set_result(self._popen.wait())

            loop.add_reader(pidfd, on_exit)
        return await asyncio.shield(self._exited)

    async def communicate(self) -> tuple[bytes, bytes]:
        """Read stdout and stderr (those started as PIPE; b"" for the others) to their end, then wait for the
        exit. Cancelling it leaves the process running: the caller kills it."""

        async def read(stream: Any) -> bytes:
            if stream is None:
                return b""
            try:
                return await _read_to_end(stream.fileno())
            finally:
                stream.close()

        output = await asyncio.gather(read(self._popen.stdout), read(self._popen.stderr))
        await self.wait()
        return output[0], output[1]


async def _read_to_end(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            return
        loop.remove_reader(fd)
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
