"""Waiting for a CUDA stream: a device-to-host copy queued on a stream is asynchronous, so what it
brings is read only after the stream is synchronized."""

from __future__ import annotations

from typing import Any


def synchronize(stream: Any) -> None:
    """Wait for ``stream`` to finish its queued work (the default stream, 0: its copies already wait)."""
    sync = getattr(stream, "synchronize", None)
    if sync is not None:
        sync()
