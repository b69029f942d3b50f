"""Codec sessions: a stream of small frames that share quantization parameters and one frequency table.

A single small frame pays for its own parameters and table: one MiniLM sentence coded per channel carries
5 bytes for each of its 384 channels, more than a third of the frame. A :class:`Session` sends that state
once, in a *keyframe*, and later frames name it by id and carry only their shape and payload. The encoder
keeps the state while the frames fit it:

- the parameters stay while every element of the new frame is within half a step of the state's grid
  (the guarantee of ``codec.encode`` with ``clip=None``); a frame beyond the range gets a keyframe whose
  per-channel ranges are the union of the old ones and the frame's, widened by ``headroom``;
- the table stays while coding the frame with it costs at most ``drift`` more than a table rebuilt from
  every frame seen since the parameters were set; then a keyframe carries the rebuilt table.

Every state table gives each symbol of the alphabet a non-zero frequency, so any frame on the state's grid
can be coded with it. A keyframe is complete on its own; a later frame decodes only on a session that has
read its keyframe (in order, as over one connection), else ``CodecError`` names the missing state.

Session frame, version 1 (little endian)::

    magic "SPLS" | version u8 | flags u8 (bit 0: carries its state) | dtype u8 | ndim u8 | shape u32 x ndim
    | state id 8 bytes
    | state (flag bit 0): bits u8 | axis i8 | nq u32 | scale f32 x nq | zero u8 x nq | prob_bits u8 | table
    | coding u8 (0 stored, 1 rANS) | rANS: block_log2 u8 | payload length u32 | payload | crc32 u32

The state id is the first 8 bytes of the BLAKE2b digest of the state's bytes; a decoder checks it when it
reads a keyframe, so a state cannot be swapped under an id. Decoders keep the ``max_states`` most recent
states.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels, rans, tables
from .api import MAX_ELEMENTS, to_numpy
from .contexts import ORDER0
from .errors import CodecError
from .frame import DTYPE_CODES, DTYPES, MAX_NDIM, _Reader
from .quantize import QuantParams, channel_layout, dequantize, normalize_axis, params_from_range

MAGIC = b"SPLS"
VERSION = 1
FLAG_STATE = 1
STORED, RANS = 0, 1
PROB_BITS = 12
ID_BYTES = 8
FLOOR_WEIGHT = 1 << 20  # state tables: counts scaled to this total, then every symbol gets +1
_HEAD = struct.Struct("<4sBBBB")


@dataclass(frozen=True)
class SessionState:
    """What the frames of a session share: the quantization grid and one order-0 table."""

    params: QuantParams
    freqs: np.ndarray  # uint16 (1, 256), every symbol of the alphabet non-zero
    prob_bits: int = PROB_BITS

    @functools.cached_property
    def encoded(self) -> bytes:
        """The state as a keyframe carries it."""
        p = self.params
        axis = -1 if p.axis is None else p.axis
        return b"".join(
            [
                struct.pack("<BbI", p.bits, axis, p.scale.size),
                p.scale.astype("<f4").tobytes(),
                p.zero.astype(np.uint8).tobytes(),
                struct.pack("<B", self.prob_bits),
                tables.serialize(self.freqs),
            ]
        )

    @functools.cached_property
    def ident(self) -> bytes:
        return hashlib.blake2b(self.encoded, digest_size=ID_BYTES).digest()

    @property
    def channels(self) -> int:
        return int(self.params.scale.size)

    def fits(self, mins: np.ndarray, maxs: np.ndarray) -> bool:
        """Whether every per-channel range lies within half a step of this grid."""
        s = self.params.scale.astype(np.float64)
        z = self.params.zero.astype(np.float64)
        lo = (-z - 0.5) * s
        hi = (self.params.qmax - z + 0.5) * s
        return bool(np.all(mins >= lo) and np.all(maxs <= hi))

    def code_bits(self, hist: np.ndarray) -> float:
        """Ideal bits of coding a histogram with this state's table."""
        used = hist > 0
        return float(np.sum(hist[used] * (self.prob_bits - np.log2(self.freqs[0][used]))))


def state_table(counts: np.ndarray, qmax: int, prob_bits: int = PROB_BITS) -> np.ndarray:
    """A table from ``counts`` in which every symbol 0..qmax keeps a non-zero frequency."""
    c = counts.astype(np.float64)
    total = c.sum()
    scaled = np.rint(c * (FLOOR_WEIGHT / total)) if total else np.zeros(256)
    scaled[: qmax + 1] += 1
    return tables.normalize(scaled.astype(np.uint32), prob_bits)


class Session:
    """One end of a stream of frames that share their quantization and table.

    >>> tx, rx = Session(bits=8, axis=-1), Session()
    >>> y = rx.decode(tx.encode(x))          # frames in order, as over one connection

    ``axis`` picks per-channel parameters (sent once per keyframe instead of once per frame); ``drift`` is
    the extra cost of the current table, over a rebuilt one, that triggers a keyframe; ``headroom``
    widens a grown grid by that fraction (fewer keyframes, a coarser step). The sending end
    uses :meth:`encode`, the receiving end :meth:`decode`; each keeps its own state."""

    def __init__(
        self,
        bits: int = 8,
        axis: int | None = None,
        *,
        drift: float = 0.05,
        headroom: float = 0.0,
        max_states: int = 4,
    ) -> None:
        if not isinstance(bits, int | np.integer) or not 1 <= int(bits) <= 8:
            raise CodecError(f"bits must be an integer in 1..8, got {bits!r}")
        if not drift >= 0:
            raise CodecError(f"drift must be >= 0, got {drift!r}")
        if not headroom >= 0:
            raise CodecError(f"headroom must be >= 0, got {headroom!r}")
        if not 1 <= max_states <= 64:
            raise CodecError(f"max_states must be in 1..64, got {max_states!r}")
        self.bits = int(bits)
        self.axis = axis
        self.drift = float(drift)
        self.headroom = float(headroom)
        self.max_states = int(max_states)
        self._state: SessionState | None = None
        self._counts = np.zeros(256, np.float64)  # symbols seen on the current grid
        self._received: OrderedDict[bytes, SessionState] = OrderedDict()
        self.frames = 0
        self.keyframes = 0

    # ----------------------------------------------------------------- sending end
    def reset(self) -> None:
        """Forget the state: the next frame is a keyframe (e.g. after the receiver restarted)."""
        self._state = None
        self._counts[:] = 0

    def encode(self, x: Any) -> bytes:
        """Code one tensor as a session frame (a keyframe when the state is new or no longer fits)."""
        arr, dtype = to_numpy(x)
        if arr.ndim > MAX_NDIM or any(d > 0xFFFFFFFF for d in arr.shape):
            raise CodecError("tensor shape is out of the frame's range")
        arr = np.ascontiguousarray(arr)
        axis = normalize_axis(self.axis, arr.ndim)
        channels, inner = channel_layout(arr.shape, axis)
        flat = arr.reshape(-1)
        mins = np.zeros(channels, np.float32)
        maxs = np.zeros(channels, np.float32)
        if flat.size and not _kernels.minmax(flat, mins, maxs, channels, inner):
            raise CodecError("input contains NaN or Inf; only finite tensors can be encoded")
        state = self._state
        if state is None or state.params.axis != axis or state.channels != channels:
            state = None
        elif not state.fits(mins, maxs):
            # grow the grid to cover the old range and the new one
            p = state.params
            s, z = p.scale.astype(np.float64), p.zero.astype(np.float64)
            mins = np.minimum(mins, (-z * s).astype(np.float32))
            maxs = np.maximum(maxs, ((p.qmax - z) * s).astype(np.float32))
            mins, maxs = mins * np.float32(1 + self.headroom), maxs * np.float32(1 + self.headroom)
            state = None
        params = (
            state.params if state is not None else params_from_range(mins, maxs, self.bits, axis)
        )
        if state is None:
            self._counts[:] = 0
        q = np.empty(flat.size, np.uint8)
        hist = np.zeros(256, np.uint32)
        if flat.size:
            inv = (np.float32(1.0) / params.scale).astype(np.float32)
            _kernels.quantize(flat, q, inv, params.zero, channels, inner, params.qmax, hist, 1)
        self._counts += hist
        if state is None:
            state = SessionState(params, state_table(self._counts, params.qmax))
        elif _rans_bytes(state, hist) < q.size:  # a stored frame gains nothing from a new table
            rebuilt = SessionState(params, state_table(self._counts, params.qmax))
            if state.code_bits(hist) > (1 + self.drift) * rebuilt.code_bits(hist):
                state = rebuilt
        keyframe = state is not self._state
        self._state = state
        self.frames += 1
        self.keyframes += keyframe
        return self._write(arr.shape, dtype, state, keyframe, q)

    def _write(
        self, shape: tuple[int, ...], dtype: str, state: SessionState, keyframe: bool, q: np.ndarray
    ) -> bytes:
        head = bytearray(
            _HEAD.pack(
                MAGIC, VERSION, FLAG_STATE if keyframe else 0, DTYPE_CODES[dtype], len(shape)
            )
        )
        head += struct.pack(f"<{len(shape)}I", *shape)
        head += state.ident
        if keyframe:
            head += state.encoded
        payload: bytes | memoryview = q.tobytes()
        coding = STORED
        if q.size:
            coded = rans.encode(q, state.freqs, state.prob_bits)
            if len(coded) + 1 < len(payload):
                payload, coding = coded, RANS
        head += struct.pack("<B", coding)
        if coding == RANS:
            head += struct.pack("<B", rans.DEFAULT_BLOCK_LOG2)
        head += struct.pack("<I", len(payload))
        crc = _kernels.crc32(payload, _kernels.crc32(head))
        return b"".join([head, payload, struct.pack("<I", crc)])

    # --------------------------------------------------------------- receiving end
    def decode(
        self, blob: bytes | bytearray | memoryview, *, max_elements: int = MAX_ELEMENTS
    ) -> np.ndarray:
        """Decode a session frame (float32, or the frame's float16/float64); raises CodecError for
        anything malformed and for a frame whose keyframe this session has not read."""
        try:
            buf = memoryview(blob).cast("B")
        except TypeError as exc:
            raise CodecError(f"a frame must be bytes-like, got {type(blob).__name__}") from exc
        if len(buf) < _HEAD.size + ID_BYTES + 6 + 4:
            raise CodecError("session frame too short")
        magic, version, flags, dcode, ndim = _HEAD.unpack_from(buf, 0)
        if magic != MAGIC:
            raise CodecError("not a splitstream session frame (bad magic)")
        if version != VERSION:
            raise CodecError(
                f"unsupported session frame version {version} (this decoder reads {VERSION})"
            )
        body = buf[:-4]
        (crc,) = struct.unpack("<I", buf[-4:])
        if _kernels.crc32(body) != crc:
            raise CodecError("session frame checksum mismatch (corrupted or truncated)")
        if flags & ~FLAG_STATE:
            raise CodecError("unknown session frame flags")
        if dcode not in DTYPES:
            raise CodecError(f"unknown dtype code {dcode}")
        if ndim > MAX_NDIM:
            raise CodecError(f"too many dimensions ({ndim})")
        r = _Reader(body)
        r.pos = _HEAD.size
        shape = r.unpack(f"{ndim}I") if ndim else ()
        n = math.prod(shape)
        if n > max_elements:
            raise CodecError(f"frame declares {n} elements, more than the limit of {max_elements}")
        ident = bytes(r.take(ID_BYTES))
        if flags & FLAG_STATE:
            state = _read_state(r)
            if state.ident != ident:
                raise CodecError("session state does not match its id")
            self._received[ident] = state
            self._received.move_to_end(ident)
            while len(self._received) > self.max_states:
                self._received.popitem(last=False)
        else:
            state = self._received.get(ident)
            if state is None:
                raise CodecError(
                    f"session frame refers to state {ident.hex()}, which this session has not read "
                    "(decode its keyframe first, in order)"
                )
        p = state.params
        if p.axis is None:
            channels, inner = 1, max(n, 1)
        else:
            if p.axis >= ndim or shape[p.axis] != p.scale.size:
                raise CodecError("frame shape does not match its session state's channels")
            channels, inner = channel_layout(shape, p.axis)
        (coding,) = r.unpack("B")
        blog = rans.DEFAULT_BLOCK_LOG2
        if coding == RANS:
            (blog,) = r.unpack("B")
            if not 5 <= blog <= 24:
                raise CodecError("bad rANS parameters")
        elif coding != STORED:
            raise CodecError(f"unknown stream coding {coding}")
        (length,) = r.unpack("I")
        payload = r.take(length)
        if r.pos != len(body):
            raise CodecError("trailing bytes after the payload")
        if coding == STORED:
            if length != n:
                raise CodecError("stored payload length does not match the shape")
            q = np.frombuffer(payload, np.uint8)
            if n and int(q.max()) > p.qmax:
                raise CodecError("symbol out of range for the session's bit width")
            out = dequantize(q, p, shape)
        else:
            out = np.empty(n, np.float32)
            dq = (out, p.scale, p.zero, channels, inner)
            rans.decode(payload, n, state.freqs, state.prob_bits, blog, ORDER0, 1, dq)
            out = out.reshape(shape)
        name = DTYPES[dcode]
        if name == "float16":
            f16max = float(np.finfo(np.float16).max)
            return np.clip(out, -f16max, f16max, out=out).astype(np.float16)
        return out.astype(np.float64) if name == "float64" else out


def _rans_bytes(state: SessionState, hist: np.ndarray) -> float:
    """Predicted payload bytes of coding ``hist`` with the state's table (code length and lane states)."""
    blocks = rans.nblocks_for(int(hist.sum()), rans.DEFAULT_BLOCK_LOG2)
    return state.code_bits(hist) / 8 + blocks * (rans.STATE_BYTES + 4)


def _read_state(r: _Reader) -> SessionState:
    bits, axis, nq = r.unpack("BbI")
    if not 1 <= bits <= 8:
        raise CodecError(f"bad bit width {bits}")
    if not -1 <= axis < MAX_NDIM or not 1 <= nq <= (1 << 24) or (axis == -1 and nq != 1):
        raise CodecError("bad session quantization parameters")
    scale = np.frombuffer(r.take(4 * nq), "<f4").astype(np.float32)
    zero = np.frombuffer(r.take(nq), np.uint8).copy()
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise CodecError("bad quantization scale")
    qmax = (1 << bits) - 1
    if int(zero.max()) > qmax:
        raise CodecError("zero point out of range")
    (pb,) = r.unpack("B")
    if not 8 <= pb <= 15:
        raise CodecError("bad rANS parameters")
    freqs, used = tables.deserialize(r.buf[r.pos :], 1, pb)
    r.take(used)
    if (freqs[0][: qmax + 1] == 0).any() or freqs[0][qmax + 1 :].any():
        raise CodecError("session table does not match the alphabet of its bit width")
    params = QuantParams(bits, None if axis == -1 else axis, scale, zero)
    return SessionState(params, freqs, pb)
