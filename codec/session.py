"""Codec sessions: a stream of small frames that share their frequency tables and, per tensor, their grid.

A single small frame pays for its own parameters and table: one MiniLM sentence coded per channel carries
5 bytes for each of its 384 channels, more than a quarter of the frame. A :class:`Session` keeps what
frames share in a *state* that a *keyframe* sends once; later frames name it by id.

- **Per channel** (``axis``), every frame keeps its own ranges, so its error is that of an independent
  frame with steps at most ``2**(1/16)`` (4.4 %) coarser, and codes them in about 1.7 bytes per channel
  instead of 5. A channel's step is rounded up onto a log grid, ``scale = 2**(k / 16)``, and sent as one
  byte ``k - base`` (``base`` belongs to the state; a channel more than 255 grid steps, 16 octaves, below
  the frame's widest one takes the coarser step ``2**(base / 16)``); its zero point ``round(-min / scale)``
  is one byte, 0..qmax. A frame whose steps leave the state's window of 256 gets a keyframe with a new
  ``base``.
- **Per tensor**, frames share the state's grid (one scale and zero point) while every element is within
  half a step of it; a frame beyond it gets a keyframe whose range is the union of the grid's and the
  frame's, widened by ``headroom``.

The step bytes, zero points and symbols of a frame form one rANS stream with a table per part, so the
stream pays its lane states once. The state's tables are rebuilt from every frame since the state's grid
or window was set once the bytes the current tables lost against rebuilt ones, frame by frame, exceed what
the rebuilt state costs to send (rent or buy); that rebuild is a keyframe. A part's table is learned only
if it saves its own bytes on the symbols counted so far, else it is uniform; every table gives each symbol
of its part's alphabet a non-zero frequency, so any frame on the state's grid or in its window can be
coded with it. A keyframe is complete on its own; a later frame decodes only on a session that has read
its keyframe (in order, as over one connection), else ``CodecError`` names the missing state.

Session frame, version 2 (little endian)::

    magic "SPLS" | version u8 | flags u8 (bit 0: carries its state) | dtype u8 | ndim u8
    | shape: LEB128 x ndim | state id 8 bytes
    | state (flag bit 0): bits u8 | axis i8 (-1: per tensor) | prob_bits u8
                          | learned u8 (bit t: table t follows, else it is uniform)
                          | per tensor: scale f32 | zero u8; per channel: base i16
                          | the learned tables
    | coding u8 (0 stored, 1 rANS with blocks of 2**16 symbols) | payload (up to the crc) | crc32 u32

Per channel, the payload codes ``C`` step bytes, ``C`` zero points and the ``n`` symbols (``C`` channels of
``axis``, 0 for an empty tensor) with tables 0, 1 and 2; per tensor, the ``n`` symbols with table 2. It is
the bytes themselves (stored) or one rANS stream, without its block index when it has one block. The state
id is the first 8 bytes of the BLAKE2b digest of the state's bytes; a decoder checks it when it reads a
keyframe, so a state cannot be swapped under an id. Decoders keep the ``max_states`` most recent states.
Version 1 frames (every frame on the state's grid) are refused.
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
from .contexts import ORDER0, ContextSpec
from .errors import CodecError
from .frame import DTYPE_CODES, DTYPES, MAX_NDIM, _Reader
from .quantize import (
    MIN_STEP,
    QuantParams,
    channel_layout,
    dequantize,
    normalize_axis,
    params_from_range,
)

MAGIC = b"SPLS"
VERSION = 2
FLAG_STATE = 1
STORED, RANS = 0, 1
PROB_BITS = 12
ID_BYTES = 8
FLOOR_WEIGHT = 1 << 20  # learned tables: counts scaled to this total, then every symbol gets +1
STEPS = 16  # log-grid steps per octave of a channel's quantization step
WINDOW = 255  # a frame's step bytes cover base .. base + WINDOW
K_MIN, K_MAX = -100 * STEPS, 122 * STEPS  # steps 2**-100 .. 2**122 (float32 spans reach 2**129)
STEP_BYTES, ZERO_POINTS, SYMBOLS = range(3)  # the parts of a stream, one table each
PARTS = 3
BLOCK_LOG2 = rans.DEFAULT_BLOCK_LOG2  # fixed by the format
_HEAD = struct.Struct("<4sBBBB")
_FRAC = np.exp2(np.arange(STEPS) / STEPS)
_RICE = np.arange(16)  # Rice parameters a packed table may use


# ------------------------------------------------------------------------ the log grid of steps
def step_of(k: np.ndarray) -> np.ndarray:
    """float32 ``2**(k / STEPS)``: a fixed table scaled by an exact power of two, rounded once."""
    k = np.asarray(k, np.int64)
    return np.ldexp(_FRAC[k % STEPS], (k // STEPS).astype(np.int32)).astype(np.float32)


def grid_steps(step: np.ndarray) -> np.ndarray:
    """The smallest grid index whose step is at least ``step`` (floored at ``MIN_STEP``)."""
    need = np.maximum(step, MIN_STEP)
    k = np.clip(np.ceil(np.log2(need) * STEPS), K_MIN, K_MAX).astype(np.int64)
    return np.minimum(k + (step_of(k).astype(np.float64) < need), K_MAX)


def frame_steps(mins: np.ndarray, maxs: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel grid indices (those deeper than WINDOW below the widest lifted to it) and which
    channels are all zero (any step codes them)."""
    span = maxs.astype(np.float64) - mins.astype(np.float64)
    live = span > 0
    k = grid_steps(span / qmax)
    if live.any():
        k = np.maximum(k, int(k[live].max()) - WINDOW)
    return k, ~live


def window_base(k: np.ndarray) -> int:
    """A base whose window holds ``k`` (spanning at most WINDOW) with room on both sides."""
    if not k.size:
        return 0
    lo, hi = int(k.min()), int(k.max())
    low, high = max(hi - WINDOW, K_MIN), min(lo, K_MAX - WINDOW)
    return int(np.clip((lo + hi) // 2 - WINDOW // 2, low, high))


@dataclass(frozen=True)
class ChannelParams:
    """One frame's per-channel parameters as its stream carries them."""

    steps: np.ndarray  # uint8 per channel: grid index - base
    zero: np.ndarray  # uint8 per channel

    @classmethod
    def of(
        cls, mins: np.ndarray, k: np.ndarray, dead: np.ndarray, base: int, qmax: int
    ) -> ChannelParams:
        """Step bytes and zero points; all-zero channels take the frame's most common step byte."""
        steps = np.clip(k - base, 0, WINDOW).astype(np.uint8)
        if dead.any():
            live = steps[~dead]
            steps[dead] = np.bincount(live).argmax() if live.size else 0
        scale = step_of(base + steps.astype(np.int64)).astype(np.float64)
        zero = np.clip(np.rint(-mins.astype(np.float64) / scale), 0, qmax).astype(np.uint8)
        return cls(steps, zero)

    def quant(self, bits: int, axis: int | None, base: int) -> QuantParams:
        return QuantParams(bits, axis, step_of(base + self.steps.astype(np.int64)), self.zero)


# ------------------------------------------------------------------------------------ tables
def alphabets(bits: int) -> tuple[int, int, int]:
    """The largest symbol of each part: step bytes, zero points, symbols."""
    qmax = (1 << bits) - 1
    return WINDOW, qmax, qmax


@functools.cache
def uniform_table(top: int, prob_bits: int) -> np.ndarray:
    """Symbols 0..top equally likely (the first ones take the remainder), the rest absent."""
    freq = np.zeros(256, np.uint16)
    share, extra = divmod(1 << prob_bits, top + 1)
    freq[: top + 1] = share
    freq[:extra] += 1
    freq.flags.writeable = False
    return freq


def learned_table(counts: np.ndarray, top: int, prob_bits: int) -> np.ndarray:
    """A table from ``counts`` in which every symbol 0..top keeps a non-zero frequency."""
    c = counts.astype(np.float64)
    scaled = np.rint(c * (FLOOR_WEIGHT / c.sum()))
    scaled[: top + 1] += 1
    return tables.normalize(scaled.astype(np.uint32), prob_bits)[0]


def code_bits(hists: np.ndarray, freqs: np.ndarray, prob_bits: int) -> float:
    """Ideal bits of coding histograms with tables of the same shape."""
    used = hists > 0
    cost = prob_bits - np.log2(np.where(used, freqs, 1))
    return float(np.sum(hists * cost, where=used))


def pack_table(freq: np.ndarray, top: int) -> bytes:
    """A table of symbols 0..top as a Rice parameter u8 and Rice codes (LSB first) of the zigzagged
    differences of ``freq - 1`` from symbol to symbol."""
    z = _zigzag(np.diff(freq[: top + 1].astype(np.int64) - 1, prepend=0))
    k = int(np.argmin(((z >> _RICE[:, None]) + 1 + _RICE[:, None]).sum(axis=1)))
    q = z >> k
    width = q + 1 + k
    starts = np.cumsum(width) - width
    bits = np.zeros(int(width.sum()), np.uint8)
    bits[np.repeat(starts, q) + np.arange(int(q.sum())) - np.repeat(np.cumsum(q) - q, q)] = 1
    if k:
        at = (starts + q + 1)[:, None] + np.arange(k)
        bits[at.ravel()] = ((z[:, None] >> np.arange(k)) & 1).ravel()
    return bytes([k]) + np.packbits(bits, bitorder="little").tobytes()


def unpack_table(r: _Reader, top: int, prob_bits: int) -> np.ndarray:
    """Read a :func:`pack_table` table; its frequencies must be >= 1 and sum to ``2**prob_bits``."""
    (k,) = r.unpack("B")
    if k > 15:
        raise CodecError("bad session table")
    limit = (4 << prob_bits) + 2 * (top + 1)  # the largest sum of zigzagged differences
    cap = ((limit >> k) + (top + 1) * (k + 1) + 7) // 8
    bits = np.unpackbits(np.frombuffer(r.buf[r.pos : r.pos + cap], np.uint8), bitorder="little")
    zeros = np.flatnonzero(bits == 0)
    weights = 1 << np.arange(k)
    freq = np.zeros(256, np.int64)
    pos = prev = 0
    for s in range(top + 1):
        i = int(np.searchsorted(zeros, pos))
        if i == zeros.size or zeros[i] + 1 + k > bits.size:
            raise CodecError("truncated session table")
        end = int(zeros[i]) + 1 + k
        z = (int(zeros[i]) - pos) << k | int(bits[end - k : end] @ weights)
        prev += (z >> 1) ^ -(z & 1)
        freq[s] = prev + 1
        pos = end
    r.take((pos + 7) // 8)
    if freq[: top + 1].min() < 1 or freq.sum() != 1 << prob_bits:
        raise CodecError("session table does not match the alphabet of its part")
    return freq.astype(np.uint16)


def _zigzag(d: np.ndarray) -> np.ndarray:
    return np.where(d >= 0, 2 * d, -2 * d - 1)


# ------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class SessionState:
    """What the frames of a session share: a table per part, and the grid (per tensor) or the window
    of channel steps (per channel)."""

    bits: int
    axis: int | None
    freqs: np.ndarray  # uint16 (PARTS, 256), every symbol of each part's alphabet non-zero
    learned: int  # bit t: table t was counted (else it is uniform over its alphabet)
    packed: bytes  # the learned tables as the state carries them
    grid: QuantParams | None = None  # per tensor
    base: int = 0  # per channel
    prob_bits: int = PROB_BITS

    @classmethod
    def from_counts(
        cls, bits: int, axis: int | None, counts: np.ndarray, grid: QuantParams | None, base: int
    ) -> SessionState:
        """Per part, a table learned from ``counts`` if that saves its own bytes on the counted
        symbols, else the uniform table."""
        freqs = np.empty((PARTS, 256), np.uint16)
        learned, packed = 0, []
        for t, top in enumerate(alphabets(bits)):
            freqs[t] = uniform_table(top, PROB_BITS)
            if counts[t].sum():
                table = learned_table(counts[t], top, PROB_BITS)
                gain = code_bits(counts[t], freqs[t], PROB_BITS) - code_bits(
                    counts[t], table, PROB_BITS
                )
                wire = pack_table(table, top)
                if gain > 8 * len(wire):
                    freqs[t], learned = table, learned | 1 << t
                    packed.append(wire)
        return cls(bits, axis, freqs, learned, b"".join(packed), grid, base, PROB_BITS)

    @functools.cached_property
    def encoded(self) -> bytes:
        """The state as a keyframe carries it."""
        axis = -1 if self.axis is None else self.axis
        parts = [struct.pack("<BbBB", self.bits, axis, self.prob_bits, self.learned)]
        if self.grid is not None:
            parts.append(struct.pack("<fB", float(self.grid.scale[0]), int(self.grid.zero[0])))
        else:
            parts.append(struct.pack("<h", self.base))
        return b"".join([*parts, self.packed])

    @functools.cached_property
    def ident(self) -> bytes:
        return hashlib.blake2b(self.encoded, digest_size=ID_BYTES).digest()

    def code_bits(self, hists: np.ndarray) -> float:
        return code_bits(hists, self.freqs, self.prob_bits)

    def covers(self, mins: np.ndarray, maxs: np.ndarray) -> bool:
        """Per tensor: whether the range lies within half a step of the state's grid."""
        assert self.grid is not None
        s, z = float(self.grid.scale[0]), float(self.grid.zero[0])
        return bool(mins[0] >= (-z - 0.5) * s and maxs[0] <= (self.grid.qmax - z + 0.5) * s)

    def holds(self, k: np.ndarray) -> bool:
        """Per channel: whether the (live) grid indices lie in the state's window."""
        return not k.size or (int(k.min()) >= self.base and int(k.max()) <= self.base + WINDOW)

    def stream(self, pairs: int, n: int) -> tuple[np.ndarray, ContextSpec]:
        """The tables and context of a stream with ``pairs`` (step, zero point) pairs and n symbols."""
        if not pairs:
            return self.freqs[SYMBOLS:], ORDER0
        rows = 2 + n // pairs  # rows of ``pairs``: step bytes, zero points, then the symbols
        group = np.full(rows, SYMBOLS, np.uint8)
        group[:2] = (STEP_BYTES, ZERO_POINTS)
        return self.freqs, ContextSpec(channels=rows, inner=pairs, group=group)


@dataclass(frozen=True)
class Layout:
    """How the next frame is quantized: the state it fits (or None) and its grid or window."""

    state: SessionState | None
    params: QuantParams
    head: np.ndarray  # uint8: the frame's step bytes and zero points (empty per tensor)
    grid: QuantParams | None
    base: int


class Session:
    """One end of a stream of frames that share their frequency tables.

    >>> tx, rx = Session(bits=8, axis=-1), Session()
    >>> y = rx.decode(tx.encode(x))          # frames in order, as over one connection

    With ``axis`` (per channel) each frame codes its own ranges compactly; per tensor, frames share a
    grid, grown by ``headroom`` when a frame leaves it. The sending end uses :meth:`encode`, the receiving
    end :meth:`decode`; each keeps its own state."""

    def __init__(
        self,
        bits: int = 8,
        axis: int | None = None,
        *,
        headroom: float = 0.0,
        max_states: int = 4,
    ) -> None:
        if not isinstance(bits, int | np.integer) or not 1 <= int(bits) <= 8:
            raise CodecError(f"bits must be an integer in 1..8, got {bits!r}")
        if not headroom >= 0:
            raise CodecError(f"headroom must be >= 0, got {headroom!r}")
        if not 1 <= max_states <= 64:
            raise CodecError(f"max_states must be in 1..64, got {max_states!r}")
        self.bits = int(bits)
        self.axis = axis
        self.headroom = float(headroom)
        self.max_states = int(max_states)
        self._state: SessionState | None = None
        self._counts = np.zeros((PARTS, 256), np.float64)  # symbols since the grid/window was set
        self._stale = 0.0  # bytes the current tables lost against rebuilt ones, frame by frame
        self._received: OrderedDict[bytes, SessionState] = OrderedDict()
        self.frames = 0
        self.keyframes = 0

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    # ----------------------------------------------------------------- sending end
    def reset(self) -> None:
        """Forget the state: the next frame is a keyframe (e.g. after the receiver restarted)."""
        self._state = None
        self._counts[:] = 0
        self._stale = 0.0

    def encode(self, x: Any) -> bytes:
        """Code one tensor as a session frame (a keyframe when the state is new or no longer fits)."""
        arr, dtype = to_numpy(x)
        if arr.ndim > MAX_NDIM or any(d > 0xFFFFFFFF for d in arr.shape):
            raise CodecError("tensor shape is out of the frame's range")
        arr = np.ascontiguousarray(arr)
        axis = normalize_axis(self.axis, arr.ndim)
        channels, inner = channel_layout(arr.shape, axis)
        flat = arr.reshape(-1)
        if axis is not None and not flat.size:
            channels = 0
        mins = np.zeros(channels, np.float32)
        maxs = np.zeros(channels, np.float32)
        if flat.size and not _kernels.minmax(flat, mins, maxs, channels, inner):
            raise CodecError("input contains NaN or Inf; only finite tensors can be encoded")
        lay = (
            self._tensor_layout(mins, maxs)
            if axis is None
            else self._channel_layout(mins, maxs, axis)
        )
        if lay.state is None:
            self._counts[:] = 0
        q = np.empty(flat.size, np.uint8)
        qhist = np.zeros(256, np.uint32)
        if flat.size:
            p = lay.params
            inv = (np.float32(1.0) / p.scale).astype(np.float32)
            _kernels.quantize(flat, q, inv, p.zero, channels, inner, self.qmax, qhist, 1)
        syms = np.concatenate([lay.head, q])
        hists = _part_hists(lay.head, qhist)
        self._counts += hists
        state = self._choose_state(lay, axis, hists, syms.size)
        keyframe = state is not self._state
        self._state = state
        self.frames += 1
        self.keyframes += keyframe
        return self._write(arr.shape, dtype, state, keyframe, syms, lay.head.size // 2)

    def _tensor_layout(self, mins: np.ndarray, maxs: np.ndarray) -> Layout:
        """The state's grid if it covers the frame, else one grown over both (or the frame's own)."""
        state = self._state
        if state is not None and (state.grid is None or state.axis is not None):
            state = None
        if state is not None and not state.covers(mins, maxs):
            g = state.grid
            s, z = g.scale.astype(np.float64), g.zero.astype(np.float64)
            grow = np.float32(1 + self.headroom)
            mins = np.minimum(mins, (-z * s).astype(np.float32)) * grow
            maxs = np.maximum(maxs, ((g.qmax - z) * s).astype(np.float32)) * grow
            state = None
        grid = state.grid if state is not None else params_from_range(mins, maxs, self.bits, None)
        return Layout(state, grid, np.empty(0, np.uint8), grid, 0)

    def _channel_layout(self, mins: np.ndarray, maxs: np.ndarray, axis: int) -> Layout:
        """The frame's own ranges on the log grid, in the state's window if they fit it (else a new one)."""
        k, dead = frame_steps(mins, maxs, self.qmax)
        state = self._state
        if state is not None and (state.axis != axis or not state.holds(k[~dead])):
            state = None
        base = state.base if state is not None else window_base(k[~dead])
        cp = ChannelParams.of(mins, k, dead, base, self.qmax)
        head = np.concatenate([cp.steps, cp.zero])
        return Layout(state, cp.quant(self.bits, axis, base), head, None, base)

    def _choose_state(
        self, lay: Layout, axis: int | None, hists: np.ndarray, n: int
    ) -> SessionState:
        """The current state, or one with tables rebuilt from the counts: when the state is new, or
        once its tables have lost more bytes than the rebuilt state costs to send (rent or buy)."""
        state = lay.state
        rebuilt = SessionState.from_counts(self.bits, axis, self._counts, lay.grid, lay.base)
        if (
            state is not None
            and min(_rans_bytes(state, hists, n), _rans_bytes(rebuilt, hists, n)) < n
        ):
            self._stale += (state.code_bits(hists) - rebuilt.code_bits(hists)) / 8
        if state is not None and self._stale <= len(rebuilt.encoded):
            return state
        self._stale = 0.0
        return rebuilt

    def _write(
        self,
        shape: tuple[int, ...],
        dtype: str,
        state: SessionState,
        keyframe: bool,
        syms: np.ndarray,
        pairs: int,
    ) -> bytes:
        flags = FLAG_STATE if keyframe else 0
        head = bytearray(_HEAD.pack(MAGIC, VERSION, flags, DTYPE_CODES[dtype], len(shape)))
        head += b"".join(varint(d) for d in shape)
        head += state.ident
        if keyframe:
            head += state.encoded
        payload: bytes | memoryview = syms.tobytes()
        coding = STORED
        if syms.size:
            freqs, ctx = state.stream(pairs, syms.size - 2 * pairs)
            coded = rans.encode(syms, freqs, state.prob_bits, BLOCK_LOG2, ctx)
            coded = _strip_index(coded, syms.size)
            if len(coded) < len(payload):
                payload, coding = coded, RANS
        head.append(coding)
        crc = _kernels.crc32(payload, _kernels.crc32(head))
        return b"".join([head, payload, struct.pack("<I", crc)])

    # --------------------------------------------------------------- receiving end
    def decode(
        self, blob: bytes | bytearray | memoryview, *, max_elements: int = MAX_ELEMENTS
    ) -> np.ndarray:
        """Decode a session frame (float32, or the frame's float16/float64); raises CodecError for
        anything malformed and for a frame whose keyframe this session has not read."""
        buf = _checked(blob)
        _, _, flags, dcode, ndim = _HEAD.unpack_from(buf, 0)
        body = buf[:-4]
        r = _Reader(body)
        r.pos = _HEAD.size
        shape = tuple(read_varint(r) for _ in range(ndim))
        extent = math.prod(d for d in shape if d)  # bounds an empty shape too: numpy refuses (0, 2^40, 2^40)
        if extent > max_elements:
            raise CodecError(f"frame declares a shape of {extent} elements, more than the limit of {max_elements}")
        n = math.prod(shape)
        state = self._state_of(r, bytes(r.take(ID_BYTES)), flags & FLAG_STATE)
        pairs = _pairs(shape, state, n)
        total = n + 2 * pairs
        (coding,) = r.unpack("B")
        if coding not in (STORED, RANS) or (coding == RANS and not total):
            raise CodecError(f"bad stream coding {coding}")
        payload = r.take(len(body) - r.pos)
        if coding == STORED:
            if len(payload) != total:
                raise CodecError("stored payload length does not match the shape")
            syms = np.frombuffer(payload, np.uint8)
        else:
            freqs, ctx = state.stream(pairs, n)
            ctx.validate(total)
            stream = _with_index(payload, total)
            syms = rans.decode(stream, total, freqs, state.prob_bits, BLOCK_LOG2, ctx)
        out = _dequantize(syms, pairs, state, shape)
        name = DTYPES[dcode]
        if name == "float16":
            f16max = float(np.finfo(np.float16).max)
            return np.clip(out, -f16max, f16max, out=out).astype(np.float16)
        return out.astype(np.float64) if name == "float64" else out

    def _state_of(self, r: _Reader, ident: bytes, carried: int) -> SessionState:
        """The frame's state: read from a keyframe (and kept), or looked up by id."""
        if carried:
            state = _read_state(r)
            if state.ident != ident:
                raise CodecError("session state does not match its id")
            self._received[ident] = state
            self._received.move_to_end(ident)
            while len(self._received) > self.max_states:
                self._received.popitem(last=False)
            return state
        state = self._received.get(ident)
        if state is None:
            raise CodecError(
                f"session frame refers to state {ident.hex()}, which this session has not read "
                "(decode its keyframe first, in order)"
            )
        return state


# ------------------------------------------------------------------------------ wire helpers
def varint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(r: _Reader) -> int:
    """An unsigned LEB128 of at most 32 bits, in its shortest form."""
    value = 0
    for i in range(5):
        (byte,) = r.unpack("B")
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if (byte == 0 and i) or value > 0xFFFFFFFF:
                break
            return value
    raise CodecError("bad shape in session frame")


def _checked(blob: bytes | bytearray | memoryview) -> memoryview:
    """The frame as bytes, once its magic, version, checksum, flags, dtype and rank are valid."""
    try:
        buf = memoryview(blob).cast("B")
    except TypeError as exc:
        raise CodecError(f"a frame must be bytes-like, got {type(blob).__name__}") from exc
    if len(buf) < _HEAD.size + ID_BYTES + 1 + 4:
        raise CodecError("session frame too short")
    magic, version, flags, dcode, ndim = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError("not a splitstream session frame (bad magic)")
    if version != VERSION:
        raise CodecError(
            f"unsupported session frame version {version} (this decoder reads {VERSION})"
        )
    (crc,) = struct.unpack("<I", buf[-4:])
    if _kernels.crc32(buf[:-4]) != crc:
        raise CodecError("session frame checksum mismatch (corrupted or truncated)")
    if flags & ~FLAG_STATE:
        raise CodecError("unknown session frame flags")
    if dcode not in DTYPES:
        raise CodecError(f"unknown dtype code {dcode}")
    if ndim > MAX_NDIM:
        raise CodecError(f"too many dimensions ({ndim})")
    return buf


def _pairs(shape: tuple[int, ...], state: SessionState, n: int) -> int:
    """How many (step byte, zero point) pairs a frame of ``shape`` carries: its channels, per channel."""
    if state.grid is not None or not n:
        return 0
    assert state.axis is not None
    if state.axis >= len(shape):
        raise CodecError("frame shape does not match its session state's axis")
    return shape[state.axis]


def _part_hists(head: np.ndarray, qhist: np.ndarray) -> np.ndarray:
    pairs = head.size // 2
    out = np.zeros((PARTS, 256), np.float64)
    out[STEP_BYTES] = np.bincount(head[:pairs], minlength=256)
    out[ZERO_POINTS] = np.bincount(head[pairs:], minlength=256)
    out[SYMBOLS] = qhist
    return out


def _dequantize(
    syms: np.ndarray, pairs: int, state: SessionState, shape: tuple[int, ...]
) -> np.ndarray:
    """A frame's symbols (after its step bytes and zero points, per channel) back to float32."""
    qmax = (1 << state.bits) - 1
    q = syms[2 * pairs :]
    if q.size and int(q.max()) > qmax:
        raise CodecError("symbol out of range for the session's bit width")
    if state.grid is not None:
        return dequantize(q, state.grid, shape)
    if not pairs:
        return np.zeros(shape, np.float32)
    zero = np.ascontiguousarray(syms[pairs : 2 * pairs])
    if int(zero.max()) > qmax:
        raise CodecError("zero point out of range for the session's bit width")
    cp = ChannelParams(np.ascontiguousarray(syms[:pairs]), zero)
    return dequantize(np.ascontiguousarray(q), cp.quant(state.bits, state.axis, state.base), shape)


def _strip_index(stream: memoryview, total: int) -> memoryview:
    """A one-block stream without its block index (the block's size is the payload's)."""
    return stream[4:] if rans.nblocks_for(total, BLOCK_LOG2) == 1 else stream


def _with_index(payload: memoryview, total: int) -> bytes | memoryview:
    """The stream ``rans.decode`` reads: a one-block payload gets its block index back."""
    if rans.nblocks_for(total, BLOCK_LOG2) == 1:
        return struct.pack("<I", len(payload)) + bytes(payload)
    return payload


def _rans_bytes(state: SessionState, hists: np.ndarray, n: int) -> float:
    """Predicted payload bytes of coding ``hists`` with the state's tables (code length and lane states)."""
    return state.code_bits(hists) / 8 + rans.nblocks_for(n, BLOCK_LOG2) * rans.STATE_BYTES


def _read_state(r: _Reader) -> SessionState:
    bits, axis, pb, learned = r.unpack("BbBB")
    if not 1 <= bits <= 8:
        raise CodecError(f"bad bit width {bits}")
    if not -1 <= axis < MAX_NDIM:
        raise CodecError("bad session axis")
    if not 8 <= pb <= 15 or learned >> PARTS:
        raise CodecError("bad rANS parameters")
    qmax = (1 << bits) - 1
    grid, base = None, 0
    if axis == -1:
        scale, zero = r.unpack("fB")
        if not (math.isfinite(scale) and scale > 0) or zero > qmax:
            raise CodecError("bad session quantization grid")
        grid = QuantParams(bits, None, np.array([scale], np.float32), np.array([zero], np.uint8))
        if learned & ~(1 << SYMBOLS):
            raise CodecError("a per-tensor session state has tables for channel parameters")
    else:
        (base,) = r.unpack("h")
        if not K_MIN <= base <= K_MAX - WINDOW:
            raise CodecError("bad session step window")
    start = r.pos
    freqs = _read_tables(r, bits, pb, learned)
    packed = bytes(r.buf[start : r.pos])
    return SessionState(bits, None if axis == -1 else axis, freqs, learned, packed, grid, base, pb)


def _read_tables(r: _Reader, bits: int, prob_bits: int, learned: int) -> np.ndarray:
    """The learned tables a state carries, the uniform ones for the others."""
    freqs = np.empty((PARTS, 256), np.uint16)
    for t, top in enumerate(alphabets(bits)):
        learn = learned >> t & 1
        freqs[t] = unpack_table(r, top, prob_bits) if learn else uniform_table(top, prob_bits)
    return freqs
