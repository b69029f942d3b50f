"""Host side of the GPU quantization kernels: launches on device arrays, and NumPy-in/NumPy-out wrappers
that give exactly what ``codec.quantize`` gives.

Bit-exact with the CPU codec (tests/test_gpu_quantize.py, under the CUDA simulator):
- the per-channel min/max, scale, zero point and ``1 / scale`` (computed on the device, in the CPU's
  float64 and float32 operations);
- the uint8 symbols, their range and their 256-bin histogram (``quantize(..., hist_stride=1)``);
- ``dequantize``: the float32 output, bit for bit.

What stays on the host:
- the errors: the kernels set a code, the wrapper raises the CPU's ``CodecError`` after reading it back
  (the quantize kernel writes nothing once an error is set);
- ``clip="mse"`` / ``"wmse"`` / ``"wmse_ends"``: the range search. The device computes the full-range
  8-bit symbols and their per-channel histogram (the search's only input besides the range); the
  wrapper copies those ``channels x 256`` counts back, runs the CPU's own search on them
  (``codec.quantize.clipped_range``: the C ``clip_choice``, or NumPy for ``wmse_ends``), and uploads
  the chosen range;
- sampled histograms (``hist_stride > 1``) and the reorder of non-contiguous (channels-last) inputs: the
  wrappers take a C-contiguous copy, whose symbols are the same as the CPU's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from .. import quantize as cpu_q
from ..errors import CodecError
from . import quantize_kernels as K
from .sync import synchronize

MAX_BLOCKS = 1024  # CTAs per channel row of the grid (grid-stride loops cover the rest)
MAX_GRID_Y = 65535

_MESSAGES = {
    K.ERR_NONFINITE: "input contains NaN or Inf; only finite tensors can be encoded",
    K.ERR_RANGE: "tensor range is too wide for float32 quantization parameters",
}


def raise_for(code: int) -> None:
    """Raise the CPU's CodecError for an error code from the kernels (0: nothing)."""
    if code:
        raise CodecError(_MESSAGES.get(code, "quantization failed"))


def grid(n: int, channels: int, threads: int = K.THREADS, max_blocks: int = MAX_BLOCKS) -> tuple:
    """(grid, threads per CTA) for ``n`` elements in ``channels`` channels; ``threads``: a power of two in
    32..THREADS, lowered to the smallest power of two (32 at least) that covers one channel's elements,
    so that short channel rows (e.g. a last-axis layout) do not launch idle threads; ``max_blocks``:
    CTAs per channel at most."""
    if threads not in (32, 64, 128) or threads > K.THREADS:
        raise ValueError("threads must be 32, 64 or 128")
    per = n // max(channels, 1)
    threads = max(32, min(threads, 1 << max(0, per - 1).bit_length()))
    blocks = max(1, min(max_blocks, -(-per // threads)))
    return (blocks, max(1, min(channels, MAX_GRID_Y))), threads


@dataclass
class DeviceQuant:
    """Device arrays of one quantization: symbols, per-channel parameters, statistics and error code."""

    q: Any  # uint8[n]
    scale: Any  # float32[channels]
    zero: Any  # uint8[channels]
    inv: Any  # float32[channels]
    mins: Any  # float32[channels] (the range quantized, after any clipping)
    maxs: Any
    hist: Any  # uint32[1 or 0, 256]
    srange: Any  # uint32[2]: smallest, largest symbol
    err: Any  # int32[1]


def launch_minmax(
    x: Any, channels: int, inner: int, mins: Any, maxs: Any, err: Any, *, stream: Any = 0, **kw
) -> None:
    """Queue the per-channel range of device ``x`` into ``mins`` / ``maxs`` (zeroed by the caller)."""
    K.minmax[(*grid(x.shape[0], channels, **kw), stream)](
        x, np.int64(channels), np.int64(inner), mins, maxs, err
    )


def launch_params(
    mins: Any, maxs: Any, bits: int, scale: Any, inv: Any, zero: Any, err: Any, *, stream: Any = 0
) -> None:
    """Queue the per-channel scale, ``1 / scale`` and zero point of a range."""
    c = mins.shape[0]
    threads = min(K.THREADS, c)
    K.params[-(-c // threads), threads, stream](
        mins, maxs, np.int32((1 << bits) - 1), scale, inv, zero, err
    )


def launch_quantize(
    x: Any,
    channels: int,
    inner: int,
    inv: Any,
    zero: Any,
    bits: int,
    q: Any,
    hist: Any,
    srange: Any,
    err: Any,
    *,
    stream: Any = 0,
    **kw,
) -> None:
    """Queue the symbols of device ``x`` into ``q``, their range into ``srange`` (255, 0 from the caller) and
    their histogram into ``hist`` (zeroed; 1 row: the tensor's, ``channels`` rows: each channel's, 0 rows:
    none; no other count)."""
    K.quantize[(*grid(x.shape[0], channels, **kw), stream)](
        x,
        np.int64(channels),
        np.int64(inner),
        inv,
        zero,
        np.int32((1 << bits) - 1),
        q,
        hist,
        srange,
        err,
    )


def launch_dequantize(
    q: Any, channels: int, inner: int, scale: Any, zero: Any, out: Any, *, stream: Any = 0, **kw
) -> None:
    """Queue ``out = (q - zero) * scale`` per channel into any float32 device array ``out`` (e.g.
    ``cuda.as_cuda_array`` of a torch CUDA tensor)."""
    K.dequantize[(*grid(q.shape[0], channels, **kw), stream)](
        q, np.int64(channels), np.int64(inner), scale, zero, out
    )


def _zeros(n: int, dtype: Any, stream: Any = 0) -> Any:
    return cuda.to_device(np.zeros(n, dtype), stream=stream)


def quantize_device(
    x: Any,
    shape: tuple[int, ...],
    bits: int,
    axis: int | None = None,
    clip: str | None = None,
    *,
    histogram: bool = True,
    stream: Any = 0,
    **kw,
) -> DeviceQuant:
    """Quantize a C-ordered float32 device vector ``x`` of ``shape`` on the device. Without ``clip`` nothing
    is synchronized; with it, the clip search's histograms come back to the host once (see the module
    docstring). Read ``err`` before trusting the results (:func:`to_host` does)."""
    if not 1 <= bits <= 8:
        raise CodecError(f"bits must be in 1..8, got {bits}")
    cpu_q.check_clip(clip)
    axis = cpu_q.normalize_axis(axis, len(shape))
    channels, inner = cpu_q.channel_layout(tuple(shape), axis)
    n = x.shape[0]
    err = _zeros(1, np.int32, stream)
    mins = _zeros(channels, np.float32, stream)
    maxs = _zeros(channels, np.float32, stream)
    scale = cuda.device_array(channels, np.float32, stream=stream)
    inv = cuda.device_array(channels, np.float32, stream=stream)
    zero = cuda.device_array(channels, np.uint8, stream=stream)
    q = cuda.device_array(n, np.uint8, stream=stream)
    hist = cuda.to_device(np.zeros((1 if histogram else 0, 256), np.uint32), stream=stream)
    srange = cuda.to_device(np.array([255, 0], np.uint32), stream=stream)
    if n:
        launch_minmax(x, channels, inner, mins, maxs, err, stream=stream, **kw)
        if clip is not None and bits < 8:
            mins, maxs = _clip_range(x, channels, inner, bits, clip, mins, maxs, err, stream, kw)
    launch_params(mins, maxs, bits, scale, inv, zero, err, stream=stream)
    if n:
        launch_quantize(
            x, channels, inner, inv, zero, bits, q, hist, srange, err, stream=stream, **kw
        )
    return DeviceQuant(q, scale, zero, inv, mins, maxs, hist, srange, err)


def _clip_range(x, channels, inner, bits, clip, mins, maxs, err, stream, kw):
    """``codec.quantize.mse_range`` (or ``ends_range``) with its 8-bit pass and histograms on the device
    and its search (``codec.quantize.clipped_range``) on the host; returns the chosen range as device
    arrays."""
    scale8 = cuda.device_array(channels, np.float32, stream=stream)
    inv8 = cuda.device_array(channels, np.float32, stream=stream)
    zero8 = cuda.device_array(channels, np.uint8, stream=stream)
    launch_params(mins, maxs, 8, scale8, inv8, zero8, err, stream=stream)
    q8 = cuda.device_array(x.shape[0], np.uint8, stream=stream)
    hist = cuda.to_device(np.zeros((channels, 256), np.uint32), stream=stream)
    srange = cuda.to_device(np.array([255, 0], np.uint32), stream=stream)
    launch_quantize(x, channels, inner, inv8, zero8, 8, q8, hist, srange, err, stream=stream, **kw)
    code = err.copy_to_host(stream=stream)
    lo = mins.copy_to_host(stream=stream)
    hi = maxs.copy_to_host(stream=stream)
    counts = hist.copy_to_host(stream=stream)
    s8 = scale8.copy_to_host(stream=stream)
    z8 = zero8.copy_to_host(stream=stream)
    synchronize(stream)
    raise_for(int(code[0]))
    # the CPU's own search on the same histograms (C clip_choice, or NumPy for wmse_ends)
    lo, hi = cpu_q.clipped_range(clip, counts, s8, z8, lo, hi, bits)
    return cuda.to_device(lo, stream=stream), cuda.to_device(hi, stream=stream)


def to_host(dq: DeviceQuant, bits: int, axis: int | None, ndim: int, *, stream: Any = 0):
    """(symbols, QuantParams, histogram, smallest symbol, largest symbol) on the host, or the CPU's
    CodecError. Waits for ``stream``."""
    synchronize(stream)
    raise_for(int(dq.err.copy_to_host()[0]))
    axis = cpu_q.normalize_axis(axis, ndim)
    params = cpu_q.QuantParams(
        bits=bits, axis=axis, scale=dq.scale.copy_to_host(), zero=dq.zero.copy_to_host()
    )
    q = dq.q.copy_to_host()
    hist = np.zeros(256, np.uint32)
    if dq.hist.shape[0]:
        hist = dq.hist.copy_to_host()[0]
    lo, hi = (int(v) for v in dq.srange.copy_to_host())
    if not q.size:
        lo = hi = 0
    return q, params, hist, lo, hi


def _host_input(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(a)


def quantize(
    x: Any, bits: int, axis: int | None = None, clip: str | None = None, **kw
) -> tuple[np.ndarray, cpu_q.QuantParams, np.ndarray]:
    """``codec.quantize.quantize(x, bits, axis, clip=clip)`` on the GPU: the same symbols, parameters and
    histogram, or the same CodecError."""
    a = _host_input(x)
    dq = quantize_device(cuda.to_device(a.reshape(-1)), a.shape, bits, axis, clip, **kw)
    q, params, hist, _, _ = to_host(dq, bits, axis, a.ndim)
    return q, params, hist


def quantize_symbols(
    x: Any, bits: int, axis: int | None = None, clip: str | None = None, **kw
) -> tuple[np.ndarray, cpu_q.QuantParams, int, int]:
    """``codec.quantize.quantize_symbols`` on the GPU: (symbols, params, smallest, largest symbol)."""
    a = _host_input(x)
    dq = quantize_device(
        cuda.to_device(a.reshape(-1)), a.shape, bits, axis, clip, histogram=False, **kw
    )
    q, params, _, lo, hi = to_host(dq, bits, axis, a.ndim)
    return q, params, lo, hi


def dequantize(q: Any, params: cpu_q.QuantParams, shape: tuple[int, ...], **kw) -> np.ndarray:
    """``codec.quantize.dequantize`` on the GPU: the same float32 array, bit for bit."""
    sym = np.ascontiguousarray(q, np.uint8).reshape(-1)
    channels, inner = cpu_q.channel_layout(tuple(shape), params.axis)
    out = cuda.device_array(sym.size, np.float32)
    if sym.size:
        launch_dequantize(
            cuda.to_device(sym),
            channels,
            inner,
            cuda.to_device(np.ascontiguousarray(params.scale, np.float32)),
            cuda.to_device(np.ascontiguousarray(params.zero, np.uint8)),
            out,
            **kw,
        )
    return out.copy_to_host().reshape(shape)
