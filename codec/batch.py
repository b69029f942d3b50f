"""Many frames in one call: ``encode_batch`` / ``decode_batch``, byte for byte what per-frame
``encode`` / ``decode`` give.

On the CPU the batch is a loop that reuses the calling thread's scratch buffers (``codec/scratch.py``)
from one frame to the next. On the device every frame's work is queued, in order, on the
:class:`Workspace`'s CUDA stream, and the decoded float32 frames are written into one device buffer that
the workspace keeps and reuses from one batch to the next (see ``codec.gpu.api.decode_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import device as device_mod
from .api import MAX_ELEMENTS, decode_host, encode
from .costmodel import DEFAULT_LEVEL


class Workspace:
    """What a device batch reuses: its CUDA stream and its output buffer (created on first use). The
    arrays ``decode_batch`` returns on the device are views of that buffer, valid until the next batch
    decoded with the same workspace. Not shared between threads."""

    def __init__(self) -> None:
        self.stream: Any = None
        self.buffer: Any = None  # float32 device vector, grown to the largest batch

    def __repr__(self) -> str:
        size = 0 if self.buffer is None else int(self.buffer.shape[0])
        return f"Workspace(buffer={size} floats)"


def encode_batch(
    xs: Sequence[Any],
    bits: int = 8,
    axis: int | None = None,
    level: int = DEFAULT_LEVEL,
    *,
    clip: str | None = None,
    threads: int = 1,
    device: Any = None,
    workspace: Workspace | None = None,
) -> list[bytes]:
    """``[codec.encode(x, ...) for x in xs]``: on the device (``device="cuda"``, or None with CUDA
    arrays) queued on ``workspace``'s stream."""
    if any(device_mod.resolve(device, x) == "cuda" for x in xs):
        return device_mod.gpu_module().encode_batch(
            xs, bits, axis, level, clip=clip, workspace=workspace or Workspace()
        )
    return [encode(x, bits, axis, level, clip=clip, threads=threads, device="cpu") for x in xs]


def decode_batch(
    blobs: Sequence[bytes | bytearray | memoryview],
    *,
    threads: int = 1,
    max_elements: int = MAX_ELEMENTS,
    device: Any = None,
    workspace: Workspace | None = None,
) -> list[Any]:
    """``[codec.decode(b, ...) for b in blobs]``: NumPy arrays, or with ``device="cuda"`` device arrays
    decoded on ``workspace``'s stream into its buffer (None: the CPU)."""
    if device_mod.resolve(device) == "cuda":
        return device_mod.gpu_module().decode_batch(
            blobs, max_elements=max_elements, workspace=workspace or Workspace()
        )
    return [decode_host(b, threads=threads, max_elements=max_elements) for b in blobs]
