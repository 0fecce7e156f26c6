"""The log messages a worker publishes to the managers' log broker (`logs.publish`): their limits, shared by
the agent that splits and batches them and the broker that bounds its buffers."""

from __future__ import annotations


MAX_LINE_BYTES = 64 << 10
"""Longest line a publish may carry; the agent splits longer output into several messages."""


MESSAGE_OVERHEAD = 64
"""Bytes counted per message besides its line (IDs, stream, time) when bounding buffers and batches."""
