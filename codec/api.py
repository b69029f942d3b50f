"""Public entry points: ``encode`` (tensor -> frame bytes) and ``decode`` (frame bytes -> NumPy array)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels, rans, represent, scratch, tables
from . import device as device_mod
from .contexts import ContextSpec
from .costmodel import (
    DEFAULT_LEVEL,
    LEAN_MAX_LEVEL,
    LEAN_MIN_SYMBOLS,
    MAX_LEVEL,
    MIN_LEVEL,
    RANS,
    STORED,
    Candidate,
    TensorInfo,
    choose,
    context_axis,
    lean_choice,
)
from .errors import CodecError
from .frame import DTYPE_CODES, Frame, StreamHeader, read, write
from .quantize import (
    QuantParams,
    channel_layout,
    dequantize,
    normalize_axis,
    quantize,
    quantize_symbols,
    sampled_table_counts,
)
from .represent import Layout

MAX_ELEMENTS = 1 << 28  # default decode cap: 256 Mi elements (1 GiB of float32)


def _block_log2(level: int, n: int) -> int:
    """Blocks of 64 Ki symbols (parallel and cheap in overhead); higher levels use larger ones."""
    return 16 if level < 6 else 18


def to_numpy(x: Any) -> tuple[np.ndarray, str]:
    """NumPy float32 view/copy of ``x`` (NumPy array or torch tensor) and its dtype name. Strides are kept
    (quantization reads permuted layouts such as channels-last in memory order)."""
    if type(x) is np.ndarray and x.dtype == np.float32:  # the common case, without name lookups
        return x, "float32"
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        if not torch.is_floating_point(x):
            raise CodecError(f"only floating-point tensors can be encoded, got {x.dtype}")
        name = str(x.dtype).removeprefix("torch.")
        if name not in DTYPE_CODES:
            raise CodecError(f"unsupported dtype {name}")
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        return t.to(torch.float32).numpy(), name
    if isinstance(x, np.ndarray | np.generic) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        name = arr.dtype.name
        if name not in DTYPE_CODES:
            raise CodecError(
                f"unsupported dtype {name}; encode float32, float16, bfloat16 or float64"
            )
        return np.asarray(arr, dtype=np.float32), name
    raise CodecError(f"cannot encode an object of type {type(x).__name__}")


SAMPLED_HIST_STRIDE = 4  # fast statistics: the histogram of about one chunk in 4 ...
SAMPLED_HIST_MIN = 1 << 16  # ... for tensors of at least 64 Ki elements


@dataclass
class Prepared:
    """A quantized tensor ready to be coded."""

    q: np.ndarray
    params: QuantParams
    shape: tuple[int, ...]
    dtype: str
    info: TensorInfo
    fast_stats: bool = False
    symbol_range: tuple[int, int] = (0, 255)

    def dense_counts(self) -> np.ndarray:
        """The counts the dense stream's table is built from: the histogram prepare took, else (the
        sampled levels) one taken now, of about one chunk in 4 under fast statistics (every symbol that
        occurs still counted)."""
        if self.info.hist is not None:
            return self.info.hist
        stride = SAMPLED_HIST_STRIDE if self.fast_stats and self.q.size >= SAMPLED_HIST_MIN else 1
        self.info.hist = sampled_table_counts(self.q, stride, *self.symbol_range)
        return self.info.hist


def check_bits(bits: Any) -> int:
    if not isinstance(bits, int | np.integer) or not 1 <= int(bits) <= 8:
        raise CodecError(f"bits must be an integer in 1..8, got {bits!r}")
    return int(bits)


def check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) > 16 or any(d > 0xFFFFFFFF for d in shape):
        raise CodecError("tensor shape is out of the frame's range")


def prepare(
    x: Any,
    bits: int = 8,
    axis: int | None = None,
    *,
    fast_stats: bool = False,
    clip: str | None = None,
    histogram: bool = True,
) -> Prepared:
    """Quantize and gather the statistics the cost model needs (``fast_stats``: a sampled histogram for
    large tensors, as level 1 uses; every symbol that occurs still gets a count; ``histogram=False``: none
    yet, for the sampled levels, which cost the representations from their own sample; ``clip``: see
    :func:`encode`)."""
    bits = check_bits(bits)
    arr, dtype = to_numpy(x)
    check_shape(arr.shape)
    axis = normalize_axis(axis, arr.ndim)
    hist = None
    if histogram:
        stride = SAMPLED_HIST_STRIDE if fast_stats and arr.size >= SAMPLED_HIST_MIN else 1
        q, params, hist = quantize(arr, bits, axis, stride, clip)
        lo, hi = 0, 255
    else:
        q, params, lo, hi = quantize_symbols(arr, bits, axis, clip)
    return prepared(q, params, hist, tuple(arr.shape), dtype, fast_stats, (lo, hi))


def prepared(
    q: np.ndarray,
    params: QuantParams,
    hist: np.ndarray | None,
    shape: tuple[int, ...],
    dtype: str,
    fast_stats: bool,
    symbol_range: tuple[int, int],
) -> Prepared:
    """A :class:`Prepared` from a quantization's symbols, parameters and histogram (None: not taken)."""
    channels, inner = channel_layout(shape, params.axis)
    layout = Layout(params.zero, channels, inner)
    info = TensorInfo(q, hist, shape, params.bits, layout, context_axis(shape, params.axis))
    return Prepared(q, params, shape, dtype, info, fast_stats, symbol_range)


def sampled_stream_top(p: Prepared, cand: Candidate, k: int, size: int) -> int | None:
    """Level 1 counts stream ``k`` (order-0, not the dense symbols) of ``size`` symbols from about one
    chunk in 4: the top symbol of its alphabet (every symbol of 0..top stays codable); else None."""
    if not p.fast_stats or size < SAMPLED_HIST_MIN:
        return None
    if k != 0 and cand.kind != represent.DELTA_NIBBLE:
        return None
    # residuals and escapes: 2^bits values; bytes of packed symbols and nibble pairs: 256
    residual = cand.kind == represent.DELTA or k == 1
    return (1 << p.params.bits) - 1 if residual else 255


def is_lean(cand: Candidate) -> bool:
    """Every stream order-0 rANS or stored, and not sparse: what the C frame writer codes in one call."""
    return (
        cand.kind != represent.SPARSE
        and all(s.coding == STORED or s.ctx.ntables == 1 for s in cand.streams)
        and len({s.prob_bits for s in cand.streams}) == 1
    )


# how the C writer counts a stream (csrc/frame_write.c): all symbols, the given counts, a sample
_COUNT_ALL, _COUNT_GIVEN, _COUNT_SAMPLED = 0, 1, 2


def encode_lean(p: Prepared, cand: Candidate, block_log2: int = 16) -> bytes:
    """:func:`encode_prepared` of a lean candidate in one C call (``csrc/frame_write.c``): the same bytes."""
    given = None
    plans = []
    for k, plan in enumerate(cand.streams):
        # the counts encode_streams takes: the dense symbols' own histogram, a sample (level 1: the C
        # writer applies the size rule of sampled_stream_top, as only it knows the escape count), or all
        count, top = _COUNT_ALL, 0
        if plan.coding != RANS:
            pass
        elif k == 0 and cand.kind == represent.DENSE:
            given, count = p.dense_counts(), _COUNT_GIVEN
        else:
            sampled = sampled_stream_top(p, cand, k, SAMPLED_HIST_MIN)
            if sampled is not None:
                count, top = _COUNT_SAMPLED, sampled
        plans.append((int(plan.coding == RANS), count, top))
    params = p.params
    return _kernels.lean_frame(
        p.q,
        DTYPE_CODES[p.dtype],
        params.bits,
        p.shape,
        -1 if params.axis is None else params.axis,
        params.scale,
        params.zero,
        cand.kind,
        cand.param,
        cand.streams[0].prob_bits if cand.streams else tables.DEFAULT_PROB_BITS,
        block_log2,
        tuple(plans),
        given,
        SAMPLED_HIST_MIN,
        scratch.buffer("lean", lean_work_bytes(p.q.size, params.zero.size, len(plans), block_log2)),
    )


def lean_work_bytes(n: int, nq: int, nstreams: int, block_log2: int) -> int:
    """The scratch ``_kernels.lean_frame`` needs for ``n`` symbols: the split streams (``LEAN_WORK_BYTES``)
    and room for the frame (``lean_frame_bound`` in ``csrc/frame_write.c``)."""
    header = 13 + 4 * 16 + 4 + 5 * nq + 5 + 2 * (1 + 14 + 544 + 4)
    payloads = nstreams * (((n >> block_log2) + 1) * (4 + rans.STATE_BYTES) + 2 * n + 64)
    return 2 * n + (n + 1) // 2 + 80 + header + payloads + 4


def encode_prepared(p: Prepared, cand: Candidate, block_log2: int = 16, threads: int = 1) -> bytes:
    """Code a prepared tensor with one candidate configuration: lean ones in one C call, the others here.
    The streams and their payloads live in this thread's scratch buffers (``codec/scratch.py``) until the
    frame's bytes are joined."""
    if threads == 1 and is_lean(cand):
        return encode_lean(p, cand, block_log2)
    return encode_streams(p, cand, block_log2, threads)


def encode_streams(p: Prepared, cand: Candidate, block_log2: int = 16, threads: int = 1) -> bytes:
    """:func:`encode_prepared` in Python, stream by stream (any candidate, blocks on ``threads``)."""
    streams = represent.split(
        p.q, cand.kind, cand.param, p.info.layout, p.params.bits, scratch.buffer
    )
    headers = []
    for k, (sym, plan) in enumerate(zip(streams, cand.streams, strict=True)):
        if plan.coding == STORED or sym.size == 0:
            headers.append(StreamHeader(STORED, payload=sym.tobytes()))
            continue
        counts = np.empty((plan.ctx.ntables, 256), np.uint32)
        top = sampled_stream_top(p, cand, k, sym.size) if plan.ctx.ntables == 1 else None
        if plan.ctx.ntables == 1 and sym is p.q:
            counts[0] = p.dense_counts()
        elif top is not None:
            # level 1: the residual, packed or escape stream's counts from about one chunk in 4
            counts[0] = sampled_table_counts(sym, SAMPLED_HIST_STRIDE, 0, top)
        elif plan.ctx.ntables == 1:
            _kernels.histogram(sym, counts)
        else:
            _kernels.context_histogram(sym, plan.ctx.kernel_spec(), 1 << block_log2, counts, 1)
        freqs = tables.normalize(counts, plan.prob_bits)
        payload = rans.encode(
            sym,
            freqs,
            plan.prob_bits,
            block_log2,
            plan.ctx,
            threads,
            functools.partial(scratch.buffer, f"payload{k}"),
        )
        headers.append(StreamHeader(RANS, plan.prob_bits, block_log2, plan.ctx, freqs, payload))
    nnz = streams[1].size if cand.kind in (represent.SPARSE, represent.DELTA_NIBBLE) else 0
    frame = Frame(
        p.dtype,
        p.params.bits,
        p.shape,
        p.params.axis,
        p.params.scale,
        p.params.zero,
        cand.kind,
        cand.param,
        nnz,
        headers,
    )
    return write(frame)


def _numel(x: Any) -> int:
    """Element count of a NumPy array or torch tensor (anything else: 0, it is checked later)."""
    numel = getattr(x, "numel", None)
    if callable(numel):
        return int(numel())
    size = getattr(x, "size", 0)
    return size if isinstance(size, int) else 0


def check_level(level: int) -> int:
    if not isinstance(level, int | np.integer) or not MIN_LEVEL <= int(level) <= MAX_LEVEL:
        raise CodecError(f"level must be an integer in {MIN_LEVEL}..{MAX_LEVEL}, got {level!r}")
    return int(level)


def encode(
    x: Any,
    bits: int = 8,
    axis: int | None = None,
    level: int = DEFAULT_LEVEL,
    *,
    clip: str | None = None,
    threads: int = 1,
    device: Any = None,
) -> bytes:
    """Compress a tensor: b-bit asymmetric quantization, the representation and contexts the cost model
    picks, rANS. ``axis`` selects per-channel quantization; ``level`` 1..9 trades speed for size;
    ``clip="mse"`` narrows each quantization range to the candidate with the least squared error (worth it
    at 4 bits and below; None: the full range, every element within half a step), ``clip="wmse"`` to the
    one whose error counts saturated elements twice (it clips less), ``clip="wmse_ends"`` as "wmse" and then
    each end of the range searched alone (a skewed channel keeps its short side whole); ``threads`` codes
    blocks in parallel
    (same bytes for any thread count).

    ``device``: "cpu", "cuda" or None (follow ``x``: CUDA arrays such as torch CUDA tensors and CuPy
    arrays are coded on the device, see ``codec.device``). The bytes are the same on either."""
    level = check_level(level)
    if device_mod.resolve(device, x) == "cuda":
        return device_mod.gpu_module().encode(x, bits, axis, level, clip=clip)
    if type(x) is not np.ndarray and device_mod.is_device_array(x):
        x = device_to_host(x)
    # the sampled levels take their own statistics: no histogram while quantizing
    sampled = level < LEAN_MAX_LEVEL and _numel(x) >= LEAN_MIN_SYMBOLS
    p = prepare(x, bits, axis, fast_stats=level == 1, clip=clip, histogram=not sampled)
    return encode_chosen(p, level, functools.partial(encode_prepared, threads=threads))


Coder = Callable[[Prepared, Candidate, int], bytes]


def encode_chosen(p: Prepared, level: int, code: Coder) -> bytes:
    """The frame of the cost model's choice for a prepared tensor at ``level``, coded by
    ``code(p, candidate, block_log2)`` (from level 8 the two best predictions are coded, the smaller
    kept)."""
    blog = _block_log2(level, p.q.size)
    lean = lean_choice(p.info, level, blog)  # the same choice in one C call, where it can
    if lean is not None:
        return code(p, lean, blog)
    best, cands = choose(p.info, level, blog)
    if level >= 8 and len(cands) > 1:
        ranked = sorted(cands, key=lambda c: c.predicted_bytes)[:2]
        blobs = [code(p, c, blog) for c in ranked]
        return min(blobs, key=len)
    return code(p, best, blog)


def device_to_host(x: Any) -> Any:
    """A host copy of a CUDA array (torch tensor: a CPU tensor; others: a NumPy array)."""
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu()
    for name in ("get", "copy_to_host"):  # CuPy, numba-cuda
        fn = getattr(x, name, None)
        if callable(fn):
            return fn()
    return device_mod.gpu_module().to_host(x)


def _decode_stream(s: StreamHeader, length: int, threads: int = 1) -> np.ndarray:
    """The symbols of one stream (stored or rANS-coded) of ``length`` symbols."""
    if s.coding == STORED:
        if len(s.payload) != length:
            raise CodecError("stored stream length does not match its symbol count")
        return np.frombuffer(s.payload, np.uint8)
    s.ctx.validate(length)
    return rans.decode(s.payload, length, s.freqs, s.prob_bits, s.block_log2, s.ctx, threads)


def decode_symbols(frame: Frame, threads: int = 1) -> np.ndarray:
    """The quantized symbols of a parsed frame."""
    represent.validate(frame.kind, frame.param, frame.bits)
    n = frame.numel
    lengths = represent.stream_lengths(frame.kind, frame.param, n, frame.nnz, frame.bits)
    streams = [
        _decode_stream(s, length, threads) for s, length in zip(frame.streams, lengths, strict=True)
    ]
    channels, inner = channel_layout(frame.shape, frame.axis)
    return represent.merge(
        streams, frame.kind, frame.param, n, Layout(frame.zero, channels, inner), frame.bits
    )


# representation -> how the C decoder turns a block of its stream into floats (Dequant's rep)
_FUSED = {
    represent.DENSE: 0,
    represent.DELTA: 1,
    represent.PACKED: 2,
    represent.DELTA_PACKED: 3,
    represent.DELTA_NIBBLE: 4,
}
_READS_BACK = (represent.DELTA, represent.DELTA_PACKED, represent.DELTA_NIBBLE)


def decode(
    blob: bytes | bytearray | memoryview,
    *,
    threads: int = 1,
    max_elements: int = MAX_ELEMENTS,
    device: Any = None,
    out: Any = None,
) -> Any:
    """Decompress a frame to a NumPy array of the original shape (float32 for bfloat16 input).

    ``device="cuda"`` (or ``out``, a CUDA array to fill) decodes on the device and returns a device array
    (see ``codec.gpu.api.decode``); None follows ``out``, else the CPU. Raises CodecError for anything
    malformed, and for frames declaring more than ``max_elements``."""
    if device_mod.resolve(device, out) == "cuda":
        return device_mod.gpu_module().decode(blob, max_elements=max_elements, out=out)
    if out is not None:
        raise CodecError(
            "out= is a CUDA array to decode into; decode on the CPU returns a new array"
        )
    return decode_host(blob, threads=threads, max_elements=max_elements)


def decode_host(
    blob: bytes | bytearray | memoryview, *, threads: int = 1, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """:func:`decode` on the CPU: a NumPy array."""
    frame = read(blob, max_elements)
    fused = _FUSED.get(frame.kind)
    s = frame.streams[0]
    if fused is not None and s.coding == RANS and (threads == 1 or frame.kind not in _READS_BACK):
        # one pass: each decoded block is turned into floats (through the representation's inverse) while
        # it is in cache; the residuals' inverse reads back across blocks, so it runs on one thread
        represent.validate(frame.kind, frame.param, frame.bits)
        n = frame.numel
        lengths = represent.stream_lengths(frame.kind, frame.param, n, frame.nnz, frame.bits)
        length = lengths[0]
        s.ctx.validate(length)
        out = np.empty(n, np.float32)
        channels, inner = channel_layout(frame.shape, frame.axis)
        q = scratch.buffer("symbols", n) if frame.kind in _READS_BACK else None
        dq = (out, frame.scale, frame.zero, channels, inner, fused, frame.param, frame.bits, n, q)
        if frame.kind == represent.DELTA_NIBBLE:
            # the escapes first (a short stream), in a buffer with room for the kernels' wide loads
            esc = scratch.buffer("escapes", lengths[1] + represent.ESCAPE_ROOM)
            esc[: lengths[1]] = _decode_stream(frame.streams[1], lengths[1])
            dq += (esc, lengths[1])
        rans.decode(s.payload, length, s.freqs, s.prob_bits, s.block_log2, s.ctx, threads, dq)
        out = out.reshape(frame.shape)
    else:
        q = decode_symbols(frame, threads)
        params = QuantParams(frame.bits, frame.axis, frame.scale, frame.zero)
        out = dequantize(q, params, frame.shape)
    return finish_dtype(out, frame.dtype)


def finish_dtype(out: np.ndarray, dtype: str) -> np.ndarray:
    """Decoded float32 values as a ``dtype`` frame decodes (float32 for bfloat16)."""
    if dtype == "float16":
        # a dequantized extreme may overshoot float16's range by part of a step; the input never did
        f16max = float(np.finfo(np.float16).max)
        return np.clip(out, -f16max, f16max, out=out).astype(np.float16)
    if dtype == "float64":
        return out.astype(np.float64)
    return out


@dataclass(frozen=True)
class FrameInfo:
    """What a frame holds, without decoding it."""

    shape: tuple[int, ...]
    dtype: str
    bits: int
    axis: int | None
    representation: str
    streams: tuple[str, ...]
    nbytes: int


def inspect(blob: bytes | bytearray | memoryview, *, max_elements: int = MAX_ELEMENTS) -> FrameInfo:
    """Describe a frame (validates it, does not decode the payload)."""
    f = read(blob, max_elements)
    names = tuple(s.ctx.name if s.coding == RANS else "stored" for s in f.streams)
    return FrameInfo(f.shape, f.dtype, f.bits, f.axis, f.representation, names, len(blob))


__all__ = ["ContextSpec", "FrameInfo", "decode", "encode", "inspect", "prepare", "encode_prepared"]
