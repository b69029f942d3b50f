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
from .contexts import MAX_GROUPS, ContextSpec
from .costmodel import RANS, STORED
from .errors import CodecError
from .represent import DELTA, DELTA_NIBBLE, DELTA_PACKED, DENSE, KIND_NAMES, PACKED, SPARSE

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
    """Parse and validate a frame; raises CodecError for anything malformed."""
    try:
        buf = memoryview(blob).cast("B")
    except TypeError as exc:
        raise CodecError(f"a frame must be bytes-like, got {type(blob).__name__}") from exc
    if len(buf) < _FIXED.size + 4:
        raise CodecError("frame too short")
    if bytes(buf[:4]) != MAGIC:
        raise CodecError("not a splitstream frame (bad magic)")
    if buf[4] != VERSION:
        raise CodecError(
            f"unsupported frame version {buf[4]} (this decoder reads version {VERSION})"
        )
    body = buf[:-4]
    (crc,) = struct.unpack("<I", buf[-4:])
    if _kernels.crc32(body) != crc:
        raise CodecError("frame checksum mismatch (corrupted or truncated)")
    r = _Reader(body)
    _, _, flags, dcode, bits, ndim, axis, kind, param = r.unpack("4sBBBBBbBH")
    if flags != 0:
        raise CodecError("unknown frame flags")
    if dcode not in DTYPES:
        raise CodecError(f"unknown dtype code {dcode}")
    if not 1 <= bits <= 8:
        raise CodecError(f"bad bit width {bits}")
    if ndim > MAX_NDIM:
        raise CodecError(f"too many dimensions ({ndim})")
    shape = r.unpack(f"{ndim}I") if ndim else ()
    numel = math.prod(shape)  # exact Python integer: no overflow
    if numel > max_elements:
        raise CodecError(f"frame declares {numel} elements, more than the limit of {max_elements}")
    if axis < -1 or axis >= max(ndim, 0) or (axis >= 0 and ndim == 0):
        raise CodecError("bad quantization axis")
    ax = None if axis == -1 else axis
    (nq,) = r.unpack("I")
    expected_nq = 1 if ax is None else shape[ax]
    if nq != max(expected_nq, 1):
        raise CodecError("quantization parameter count does not match the shape")
    scale = np.frombuffer(r.take(4 * nq), "<f4").astype(np.float32)
    zero = np.frombuffer(r.take(nq), np.uint8).copy()
    if nq == 1:  # per tensor: plain Python checks are cheaper than array reductions
        s0 = float(scale[0])
        if not (math.isfinite(s0) and s0 > 0):
            raise CodecError("bad quantization scale")
        zmax = int(zero[0])
    else:
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise CodecError("bad quantization scale")
        zmax = int(zero.max())
    if zmax > (1 << bits) - 1:
        raise CodecError("zero point out of range")
    nnz, nstreams = r.unpack("IB")
    if kind not in (DENSE, PACKED, SPARSE, DELTA, DELTA_PACKED, DELTA_NIBBLE):
        raise CodecError(f"unknown representation {kind}")
    if nstreams != {SPARSE: 3, DELTA_NIBBLE: 2}.get(kind, 1):
        raise CodecError("stream count does not match the representation")
    if nnz > numel or (kind not in (SPARSE, DELTA_NIBBLE) and nnz):
        raise CodecError("bad non-zero count")
    streams = []
    for _ in range(nstreams):
        (coding,) = r.unpack("B")
        s = StreamHeader(coding)
        if coding == RANS:
            pb, blog, channels, inner, mult, ngroups = r.unpack("BBIIBB")
            if not 8 <= pb <= 15 or not 5 <= blog <= 24:
                raise CodecError("bad rANS parameters")
            if ngroups > MAX_GROUPS:
                raise CodecError("too many channel groups")
            if channels < 1 or inner < 1:
                raise CodecError("bad context layout")
            group = None
            if ngroups > 1:
                if channels > numel * 8:
                    raise CodecError("bad context channel count")
                group = np.frombuffer(r.take(channels), np.uint8).copy()
                if group.max() + 1 != ngroups:
                    raise CodecError("channel group map does not match its group count")
            nb_dist, nbuckets, nb_ref = r.unpack("IBB")
            ctx = ContextSpec(
                channels=channels,
                inner=inner,
                mult=mult,
                group=group,
                nb_dist=nb_dist,
                nbuckets=nbuckets if nb_dist else 1,
                nb_ref=nb_ref,
            )
            if nb_dist and nbuckets not in (2, 4):
                raise CodecError("bad neighbor context")
            s.prob_bits, s.block_log2, s.ctx = pb, blog, ctx
            freqs, used = tables.deserialize(r.buf[r.pos :], ctx.ntables, pb)
            r.take(used)
            s.freqs = freqs
        elif coding != STORED:
            raise CodecError(f"unknown stream coding {coding}")
        (s.payload,) = r.unpack("I")  # the length for now; replaced by the bytes below
        streams.append(s)
    for s in streams:
        s.payload = r.take(int(s.payload))
    if r.pos != len(body):
        raise CodecError("trailing bytes after the last stream")
    return Frame(DTYPES[dcode], bits, tuple(shape), ax, scale, zero, kind, param, nnz, streams)
