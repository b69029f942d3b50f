"""Per-thread scratch buffers for the encoder's temporaries (residuals, packed streams, escapes, coded
payloads), reused from one frame to the next.

Each frame would otherwise allocate and free about five times its element count in large arrays; glibc
then returns the freed top of the heap to the system and takes it back for the next frame, a page fault per
4 KiB touched. Reusing the buffers keeps those pages mapped: one thread keeps at most one buffer per role,
grown to the largest frame it coded, and buffers above ``MAX_KEPT`` bytes are not kept. A buffer handed out
is valid until the same thread asks for the same role again, so it must not leave the call that asked.
"""

from __future__ import annotations

import threading

import numpy as np

MAX_KEPT = 64 << 20  # bytes: larger buffers are allocated per call and not kept
_local = threading.local()


def buffer(role: str, size: int) -> np.ndarray:
    """A uint8 array of ``size`` bytes for ``role`` (contents undefined), reused on this thread."""
    kept = getattr(_local, "buffers", None)
    if kept is None:
        kept = _local.buffers = {}
    buf = kept.get(role)
    if buf is None or buf.size < size:
        buf = np.empty(size, np.uint8)
        if size <= MAX_KEPT:
            kept[role] = buf
    return buf[:size]


def release() -> None:
    """Drop this thread's buffers (e.g. after coding one very large tensor)."""
    _local.buffers = {}
