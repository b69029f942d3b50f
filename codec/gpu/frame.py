"""The streams of a CPU frame decoded by the GPU kernels (order-0 rANS and stored streams)."""

from __future__ import annotations

import numpy as np

from .. import represent
from ..api import MAX_ELEMENTS
from ..costmodel import STORED
from ..errors import CodecError
from ..frame import read
from . import rans


def stream_symbols(
    blob: bytes | bytearray | memoryview, max_elements: int = MAX_ELEMENTS
) -> list[np.ndarray]:
    """The symbols of each stream of a frame, rANS streams decoded on the GPU; raises CodecError as the
    CPU decoder does, NotImplementedError for context-modelled streams (not yet on the GPU)."""
    frame = read(blob, max_elements)
    represent.validate(frame.kind, frame.param, frame.bits)
    lengths = represent.stream_lengths(frame.kind, frame.param, frame.numel, frame.nnz, frame.bits)
    out = []
    for s, length in zip(frame.streams, lengths, strict=True):
        if s.coding == STORED:
            if len(s.payload) != length:
                raise CodecError("stored stream length does not match its symbol count")
            out.append(np.frombuffer(s.payload, np.uint8).copy())
            continue
        s.ctx.validate(length)
        if s.ctx.ntables != 1:
            raise NotImplementedError(
                f"codec.gpu: {s.ctx.name} streams are not decoded on the GPU yet"
            )
        out.append(rans.decode(s.payload, length, s.freqs, s.prob_bits, s.block_log2))
    return out
