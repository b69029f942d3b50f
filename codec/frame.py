"""The frame: a versioned, self-describing header, the stream payloads and a CRC-32 over both.

Layout (little endian)::

    magic "SPLT" | version u8 | flags u8 | dtype u8 | bits u8 | ndim u8 | axis i8 | kind u8 | param u16
    shape u32 x ndim | nq u32 | scale f32 x nq | zero u8 x nq | nnz u32 (sparse: non-zeros; delta-nibble:
    escapes) | nstreams u8
    per stream: coding u8, and for rANS: prob_bits u8 | block_log2 u8 | ctx channels u32 | ctx inner u32 |
                ctx mult u8 | ngroups u8 | group map u8 x channels (ngroups > 1) | nb_dist u32 | nbuckets u8 |
                nb_ref u8 | frequency tables;  then payload length u32
    payloads back to back | crc32 u32

Every length, count and shape read from the wire is bounded before use; anything off raises CodecError.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from . import _kernels, tables
from .contexts import ORDER0, ContextSpec
from .costmodel import RANS
from .errors import CodecError
from .represent import KIND_NAMES

MAGIC = b"SPLT"
VERSION = 1
MAX_NDIM = 16
DTYPES = {0: "float32", 1: "float16", 2: "bfloat16", 3: "float64"}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
_FIXED = struct.Struct("<4sBBBBBbBH")


@dataclass
class StreamHeader:
    """One coded stream as described in the header."""

    coding: int
    prob_bits: int = 12
    block_log2: int = 16
    ctx: ContextSpec = field(default_factory=ContextSpec)
    freqs: np.ndarray | None = None
    payload: memoryview | bytes = b""


@dataclass
class Frame:
    """A parsed (or to-be-written) frame."""

    dtype: str
    bits: int
    shape: tuple[int, ...]
    axis: int | None
    scale: np.ndarray
    zero: np.ndarray
    kind: int
    param: int
    nnz: int
    streams: list[StreamHeader]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def representation(self) -> str:
        return KIND_NAMES.get(self.kind, "?")


def write(frame: Frame) -> bytes:
    """Serialize a frame (header, payloads, checksum)."""
    head = bytearray(
        _FIXED.pack(
            MAGIC,
            VERSION,
            0,
            DTYPE_CODES[frame.dtype],
            frame.bits,
            len(frame.shape),
            -1 if frame.axis is None else frame.axis,
            frame.kind,
            frame.param,
        )
    )
    head += struct.pack(f"<{len(frame.shape)}I", *frame.shape)
    head += struct.pack("<I", frame.scale.size)
    head += frame.scale.astype("<f4").tobytes() + frame.zero.astype(np.uint8).tobytes()
    head += struct.pack("<IB", frame.nnz, len(frame.streams))
    for s in frame.streams:
        head.append(s.coding)
        if s.coding == RANS:
            c = s.ctx
            ngroups = c.ngroups
            head += struct.pack(
                "<BBIIBB", s.prob_bits, s.block_log2, c.channels, c.inner, c.mult, ngroups
            )
            if ngroups > 1:
                head += np.asarray(c.group, np.uint8).tobytes()
            head += struct.pack("<IBB", c.nb_dist, c.nbuckets if c.nb_dist else 0, c.nb_ref)
            head += tables.serialize(s.freqs)
        head += struct.pack("<I", len(s.payload))
    crc = _kernels.crc32(head)
    for s in frame.streams:
        crc = _kernels.crc32(s.payload, crc)
    # one copy: header, payloads and checksum joined once
    return b"".join([head, *(s.payload for s in frame.streams), struct.pack("<I", crc)])


_STRUCTS: dict[str, struct.Struct] = {}


class _Reader:
    """Bounds-checked little-endian reader over a memoryview."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise CodecError("truncated frame")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str) -> tuple:
        st = _STRUCTS.get(fmt)
        if st is None:
            st = _STRUCTS.setdefault(fmt, struct.Struct("<" + fmt))
        end = self.pos + st.size
        if end > len(self.buf):
            raise CodecError("truncated frame")
        out = st.unpack_from(self.buf, self.pos)
        self.pos = end
        return out


def read(blob: bytes | bytearray | memoryview, max_elements: int) -> Frame:
    """Parse and validate a frame; raises CodecError for anything malformed. The checks run in C
    (``frame_parse`` in ``csrc/frame.c``: checksum, then every field bounded before use); this wraps its
    result in NumPy views of the frame."""
    try:
        buf = memoryview(blob).cast("B")
    except TypeError as exc:
        raise CodecError(f"a frame must be bytes-like, got {type(blob).__name__}") from exc
    if not buf.contiguous:
        buf = memoryview(buf.tobytes())
    dcode, bits, shape, axis, nq, scale_at, zero_at, kind, param, nnz, parsed = _kernels.frame_header(
        buf, max_elements
    )
    scale = np.frombuffer(buf, "<f4", nq, scale_at).astype(np.float32)
    zero = np.frombuffer(buf, np.uint8, nq, zero_at).copy()
    streams = []
    for coding, pb, blog, channels, inner, mult, group_at, nb_dist, nbuckets, nb_ref, freqs, at, size in parsed:
        s = StreamHeader(coding, payload=buf[at : at + size])
        if coding == RANS:
            if channels == inner == mult == 1 and group_at < 0 and not nb_dist:
                ctx = ORDER0
            else:
                group = None if group_at < 0 else np.frombuffer(buf, np.uint8, channels, group_at).copy()
                ctx = ContextSpec(channels, inner, mult, group, nb_dist, nbuckets, nb_ref)
            s.prob_bits, s.block_log2, s.ctx = pb, blog, ctx
            s.freqs = np.frombuffer(freqs, np.uint16).reshape(-1, 256)
        streams.append(s)
    ax = None if axis == -1 else axis
    return Frame(DTYPES[dcode], bits, shape, ax, scale, zero, kind, param, nnz, streams)
