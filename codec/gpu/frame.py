"""CPU frames decoded by the GPU kernels: the streams' symbols (:func:`stream_symbols`), or the whole
frame, streams to symbols to the dense symbols to float32, on the device (:func:`decode_device`,
:func:`decode`), equal to ``codec.decode`` bit for bit. Every stream the CPU writes: stored, order-0 rANS
and context-modelled rANS (channel groups and neighbour buckets)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import cuda

from .. import represent
from ..api import MAX_ELEMENTS
from ..costmodel import STORED
from ..errors import CodecError
from ..frame import Frame, read
from ..quantize import channel_layout, normalize_axis
from . import quantize as gpu_quantize
from . import rans
from . import represent as gpu_represent
from .sync import synchronize


def stream_symbols(
    blob: bytes | bytearray | memoryview, max_elements: int = MAX_ELEMENTS
) -> list[np.ndarray]:
    """The symbols of each stream of a frame, rANS streams decoded on the GPU; raises CodecError as the
    CPU decoder does."""
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
        out.append(rans.decode(s.payload, length, s.freqs, s.prob_bits, s.block_log2, s.ctx))
    return out


def _plan_stream(s: Any, length: int, syms: np.ndarray, at: int, job: rans.ManyDecode) -> int | None:
    """One stream of a frame placed at ``syms[at:at + length]``: a stored stream's bytes copied there on
    the host, a rANS stream queued on ``job`` (returns its error slot), checked first as the CPU checks
    its header, on the host (an empty stream entirely)."""
    if s.coding == STORED:
        if len(s.payload) != length:
            raise CodecError("stored stream length does not match its symbol count")
        syms[at : at + length] = np.frombuffer(s.payload, np.uint8)
        return None
    s.ctx.validate(length)
    rans._check(s.prob_bits, s.block_log2, length)
    buf = np.frombuffer(s.payload, np.uint8)
    if s.ctx.ntables == 1:
        rans._table(s.freqs)
    if length == 0 or buf.size == 0:  # the CPU's checks of an empty stream or payload, on the host
        rans.decode(buf, length, s.freqs, s.prob_bits, s.block_log2, s.ctx)
        return None
    return job.add(buf, length, s.freqs, s.prob_bits, s.block_log2, s.ctx, at)


def decode_many_device(
    blobs: list[bytes | bytearray | memoryview],
    max_elements: int = MAX_ELEMENTS,
    *,
    outs: list[Any] | None = None,
    stream: Any = 0,
    **kw,
) -> list[tuple[Any, Frame]]:
    """Frames decoded on the device, each as :func:`decode_device` decodes one, with the entropy decode
    of every rANS stream of every frame in one kernel launch and one synchronization for the batch.

    The headers, block indexes and stored streams are read on the host first (a malformed one raises
    before anything is queued); the streams' symbols go to one device buffer; then each frame's
    representation is undone and dequantized into its ``outs`` vector (None: a new one), all on
    ``stream``. CodecError, after the synchronization, for the first frame in order whose kernels
    reported one (its streams' codes in order, then its representation's)."""
    frames = [read(blob, max_elements) for blob in blobs]
    plans, total = [], 0
    for frame in frames:
        represent.validate(frame.kind, frame.param, frame.bits)
        lengths = represent.stream_lengths(
            frame.kind, frame.param, frame.numel, frame.nnz, frame.bits
        )
        plans.append((lengths, total))
        total += sum(lengths)
    syms = np.zeros(max(total, 1), np.uint8)
    job = rans.ManyDecode()
    slots: list[list[int | None]] = []
    for frame, (lengths, at) in zip(frames, plans, strict=True):
        row = []
        for s, length in zip(frame.streams, lengths, strict=True):
            row.append(_plan_stream(s, length, syms, at, job))
            at += length
        slots.append(row)
    dsyms = cuda.to_device(syms, stream=stream)
    rans_err = job.launch(dsyms, stream=stream)
    rep_err = cuda.to_device(np.zeros(max(len(frames), 1), np.int32), stream=stream)
    results = []
    for k, (frame, (lengths, at)) in enumerate(zip(frames, plans, strict=True)):
        out = None if outs is None else outs[k]
        views = []
        for length in lengths:
            views.append(dsyms[at : at + length])
            at += length
        results.append((_finish(frame, views, out, rep_err[k : k + 1], stream, kw), frame))
    synchronize(stream)
    codes, reps = rans_err.copy_to_host(), rep_err.copy_to_host()
    for k, row in enumerate(slots):
        for slot in row:
            if slot is not None:
                rans.raise_for(int(codes[slot]))
        gpu_represent.raise_for(int(reps[k]))
    return results


def _finish(frame: Frame, streams: list[Any], out: Any, err: Any, stream: Any, kw: dict) -> Any:
    """Queue a frame's representation undone (from its streams' device symbols) and its dequantization
    into ``out`` (a float32 device vector of its elements, or None: a new one); returns ``out``."""
    n = frame.numel
    channels, inner = channel_layout(frame.shape, frame.axis)
    if out is None:
        out = cuda.device_array(n, np.float32, stream=stream)
    elif out.shape != (n,) or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 device vector of {n} elements")
    zero = cuda.to_device(np.ascontiguousarray(frame.zero, np.uint8), stream=stream)
    q = gpu_represent.launch_merge(
        streams, frame.kind, frame.param, n, frame.bits, zero, channels, inner, err,
        stream=stream, **kw,
    )  # fmt: skip
    if n:
        scale = cuda.to_device(np.ascontiguousarray(frame.scale, np.float32), stream=stream)
        threads = min(kw.get("threads", gpu_represent.K.THREADS), 128)
        blocks = min(kw.get("max_blocks", gpu_quantize.MAX_BLOCKS), gpu_quantize.MAX_BLOCKS)
        gpu_quantize.launch_dequantize(
            q, channels, inner, scale, zero, out, stream=stream, threads=threads, max_blocks=blocks
        )
    return out


def decode_device(
    blob: bytes | bytearray | memoryview,
    max_elements: int = MAX_ELEMENTS,
    *,
    out: Any = None,
    stream: Any = 0,
    **kw,
) -> tuple[Any, Frame]:
    """A whole frame decoded on the device: its streams (rANS, order-0 or with contexts, or stored) to symbols, the
    representation undone (``codec.gpu.represent``) to the dense symbols, and those dequantized into a
    float32 device vector (``out``, e.g. ``cuda.as_cuda_array`` of a torch CUDA tensor, or a new one) in
    C order. Returns it with the parsed frame; the values equal ``codec.decode``'s float32 array bit for
    bit (float16 / float64 frames: before the host's final conversion, see :func:`decode`).

    Raises CodecError where the CPU decoder does (after waiting for ``stream`` to read the kernels'
    error codes back, stream by stream in frame order, then the representation's). ``kw``: ``threads``,
    ``rows_per_tile``, ``chunk`` of :func:`codec.gpu.represent.launch_merge`."""
    ((y, frame),) = decode_many_device([blob], max_elements, outs=[out], stream=stream, **kw)
    return y, frame


def decode(
    blob: bytes | bytearray | memoryview, max_elements: int = MAX_ELEMENTS, **kw
) -> np.ndarray:
    """``codec.decode`` with every step on the GPU (see :func:`decode_device`): the same array, bit for
    bit, or the same CodecError; NotImplementedError for context-modelled streams."""
    from ..api import finish_dtype

    out, frame = decode_device(blob, max_elements, **kw)
    return finish_dtype(out.copy_to_host().reshape(frame.shape), frame.dtype)


def _stream_table(sym: Any, stream: Any, threads: int, max_blocks: int) -> np.ndarray:
    """The 256 symbol counts of a device stream (one table), read back for the host's normalization."""
    hist = cuda.to_device(np.zeros(256, np.uint32), stream=stream)
    n = sym.shape[0]
    grid = max(1, min(max_blocks, -(-n // threads)))
    gpu_represent.K.histogram[grid, threads, stream](sym, np.int64(n), hist)
    counts = hist.copy_to_host(stream=stream)
    synchronize(stream)
    return counts.reshape(1, 256)


def encode_candidate(
    x: Any,
    cand: Any,
    bits: int = 8,
    axis: int | None = None,
    *,
    clip: str | None = None,
    block_log2: int = 16,
    threads: int = gpu_represent.K.THREADS,
    max_blocks: int = gpu_represent.MAX_BLOCKS,
    stream: Any = 0,
) -> bytes:
    """``codec.api.encode_prepared(codec.api.prepare(x, bits, axis, clip=clip), cand, block_log2)`` with
    the work on the device: quantization (``codec.gpu.quantize``), the representation's streams
    (``codec.gpu.represent``), each stream's symbol counts and its rANS payload; exactly the CPU's bytes.

    The host keeps what is small: the frequency tables are normalized from the device's counts
    (``codec.tables.normalize``), the sparse / escape counts size the frame, and the header is written by
    ``codec.frame.write``. The candidate is given (the cost model's choice is not made on the device);
    NotImplementedError for a stream with context tables (only order-0 and stored streams are coded on
    the GPU)."""
    from ..api import check_bits, check_shape, to_numpy
    from ..quantize import QuantParams

    bits = check_bits(bits)
    arr, dtype = to_numpy(x)
    check_shape(arr.shape)
    check_order0(cand)
    a = np.ascontiguousarray(arr, np.float32)
    dq = gpu_quantize.quantize_device(
        cuda.to_device(a.reshape(-1), stream=stream),
        a.shape,
        bits,
        axis,
        clip,
        stream=stream,
        threads=min(threads, 128),
        max_blocks=min(max_blocks, gpu_quantize.MAX_BLOCKS),
    )
    synchronize(stream)
    gpu_quantize.raise_for(int(dq.err.copy_to_host()[0]))
    axis = normalize_axis(axis, a.ndim)
    params = QuantParams(bits, axis, dq.scale.copy_to_host(), dq.zero.copy_to_host())
    return encode_quantized(
        dq,
        params,
        tuple(a.shape),
        dtype,
        cand,
        block_log2=block_log2,
        threads=threads,
        max_blocks=max_blocks,
        stream=stream,
    )


def check_order0(cand: Any) -> None:
    """NotImplementedError unless every stream of ``cand`` is stored or order-0 rANS."""
    from ..costmodel import RANS

    for plan in cand.streams:
        if plan.coding == RANS and plan.ctx.ntables != 1:
            raise NotImplementedError(
                f"codec.gpu: {plan.ctx.name} streams (context tables) are not encoded on the GPU yet; "
                "only order-0 and stored streams are"
            )


Counts = Callable[[int, Any], "np.ndarray | None"]


def queue_quantized(
    dq: Any,
    params: Any,
    shape: tuple[int, ...],
    dtype: str,
    cand: Any,
    coder: rans.ManyEncode,
    *,
    block_log2: int = 16,
    counts: Counts | None = None,
    threads: int = gpu_represent.K.THREADS,
    max_blocks: int = gpu_represent.MAX_BLOCKS,
    stream: Any = 0,
) -> Callable[[list[bytes]], bytes]:
    """Queue the frame of a device quantization ``dq`` (checked, with its host ``params``) coded as
    ``cand``: its representation's streams are split on the device, each stream's counts taken and
    normalized, and its rANS streams queued on ``coder``. Returns the function that writes the frame
    from ``coder.run()``'s payloads. ``counts(k, symbols)``: stream ``k``'s (1, 256) counts when the
    host supplies them (e.g. level 1's sampled tables), None for the device's full count (dense: the
    quantizer's histogram if it took one)."""
    from ..costmodel import RANS
    from ..frame import StreamHeader, write
    from ..tables import normalize

    bits = params.bits
    represent.validate(cand.kind, cand.param, bits)
    check_order0(cand)
    n = math.prod(shape)
    channels, inner = channel_layout(shape, params.axis)
    if n:
        dstreams, total = gpu_represent.launch_split(
            dq.q, cand.kind, cand.param, bits, dq.zero, channels, inner,
            threads=threads, max_blocks=max_blocks, stream=stream,
        )  # fmt: skip
        dstreams = gpu_represent.trim(dstreams, total)
    else:
        nstreams = {represent.SPARSE: 3, represent.DELTA_NIBBLE: 2}.get(cand.kind, 1)
        dstreams = [dq.q for _ in range(nstreams)]
    headers: list[Any] = []  # a StreamHeader, or (payload index, prob_bits, freqs) of a queued one
    for k, (sym, plan) in enumerate(zip(dstreams, cand.streams, strict=True)):
        if plan.coding == STORED or sym.shape[0] == 0:
            payload = sym.copy_to_host().tobytes() if sym.shape[0] else b""
            headers.append(StreamHeader(STORED, payload=payload))
            continue
        table = counts(k, sym) if counts is not None else None
        if table is None and cand.kind == represent.DENSE and dq.hist.shape[0]:
            table = dq.hist.copy_to_host()  # the quantizer's histogram, as on the CPU
        if table is None:
            table = _stream_table(sym, stream, threads, max_blocks)
        freqs = normalize(np.asarray(table, np.uint32).reshape(1, 256), plan.prob_bits)
        headers.append((coder.add(sym, freqs, plan.prob_bits, block_log2), plan, freqs))
    nnz = dstreams[1].shape[0] if cand.kind in (represent.SPARSE, represent.DELTA_NIBBLE) else 0

    def finish(payloads: list[bytes]) -> bytes:
        streams = [
            h if isinstance(h, StreamHeader)
            else StreamHeader(RANS, h[1].prob_bits, block_log2, h[1].ctx, h[2], payloads[h[0]])
            for h in headers
        ]  # fmt: skip
        frame = Frame(dtype, bits, tuple(shape), params.axis, params.scale, params.zero, cand.kind,
                      cand.param, int(nnz), streams)  # fmt: skip
        return write(frame)

    return finish


def encode_quantized(
    dq: Any,
    params: Any,
    shape: tuple[int, ...],
    dtype: str,
    cand: Any,
    *,
    stream: Any = 0,
    **kw: Any,
) -> bytes:
    """The frame of a device quantization coded as ``cand``, exactly the CPU's bytes: one frame's
    :func:`queue_quantized` (``kw``: its keywords), then its streams' rANS in one launch."""
    coder = rans.ManyEncode()
    finish = queue_quantized(dq, params, shape, dtype, cand, coder, stream=stream, **kw)
    return finish(coder.run(stream))
