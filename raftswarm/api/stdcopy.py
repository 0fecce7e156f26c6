"""Docker's multiplexed stream (moby's pkg/stdcopy), as logs endpoints send it without a TTY: each frame is an
8-byte header -- the stream (1 stdout, 2 stderr, 3 an error from the daemon), three zero bytes, the payload's
length as a big-endian uint32 -- and the payload. Encoding and decoding only; the caller owns the socket.
"""

from __future__ import annotations

import struct

from ..errors import RaftswarmError

MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"

STDOUT = 1
STDERR = 2
SYSTEMERR = 3
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr", SYSTEMERR: "system"}
STREAM_IDS = {name: stream for stream, name in STREAM_NAMES.items()}

HEADER = struct.Struct(">B3xI")
MAX_FRAME = 16 << 20
"""Largest payload a decoder accepts: a log frame carries one line, which raftswarm keeps far smaller; a
stream claiming more is broken, and buffering it would let it take any amount of memory."""


class StreamFormatError(RaftswarmError):
    """The bytes are not a multiplexed stream (an unknown stream byte, an oversized or truncated frame)."""


def encode_frame(stream: int, payload: bytes) -> bytes:
    return HEADER.pack(stream, len(payload)) + payload


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the complete frames as (stream name, payload)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            stream, length = HEADER.unpack_from(self._buffer)
            if stream not in STREAM_NAMES and stream != 0:
                raise StreamFormatError(f"Unrecognized input header: {stream}")
            if length > MAX_FRAME:
                raise StreamFormatError(f"a frame of {length} bytes is over the {MAX_FRAME}-byte limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            if stream != 0:  # stdin frames never come from a daemon; dropped as stdcopy drops them
                frames.append((STREAM_NAMES[stream], payload))
        return frames

    def finish(self) -> None:
        """Call at the end of the stream: a partial frame left over means the stream was cut."""
        if self._buffer:
            raise StreamFormatError(f"the stream ended inside a frame ({len(self._buffer)} bytes left over)")
