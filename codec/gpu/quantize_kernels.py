"""numba-cuda kernels for quantization, bit-exact with ``codec/csrc/quantize.c`` and ``codec/quantize.py``.

Launch order for ``codec.quantize`` on the device (one stream, no host synchronization between them):

1. ``minmax``: per-channel min and max of ``x`` with 0 included, and a non-finite flag. Min and max are
   exact operations, so the order of the reduction does not matter; a strict comparison against a running
   value that starts at +0.0 never lets -0.0 in, as on the CPU (whose values are never -0.0 either).
2. ``params``: one thread per channel computes ``scale``, ``zero`` and ``inv = 1 / scale`` from the range
   in float64 exactly as ``params_from_range`` does on the host (subtract, divide by qmax, floor at
   MIN_STEP, round to float32, zero point rounded half to even and clamped; then a float32 divide).
3. ``quantize``: ``q = clamp(rint(x * inv) + zero, 0, qmax)`` per element in float32, written as uint8
   symbols, with the symbols' range and (optionally) their 256-bin histogram, per tensor or per channel,
   in the same pass.

``dequantize``: ``out = float32(q - zero) * scale``, one rounded multiply, from the frame's scale (f32) and
zero point (u8) per channel, straight into any float32 device array.

Every float operation that the CPU rounds is written as an explicit round-to-nearest libdevice call
(``fmul_rn``, ``fadd_rn``, ``fdiv_rn``, ``dadd_rn``, ``ddiv_rn``, ``double2float_rn``, ``rintf``/``rint``),
so the device can never contract a multiply and an add into an ``fma`` (the C code is compiled with
``-ffp-contract=off``; the compile tests check the PTX has no ``fma.rn.f32``). The CPU rounds ``x * inv``
half to even with ``_mm256_round_ps`` (and, in its scalar tail, with the 1.5 * 2^23 trick); ``rintf`` is
the same operation for every ``|x * inv| < 2^22``, and quantization never leaves that range (at most
about qmax / the smallest clip factor). Integer steps are cast explicitly, so the CUDA simulator (NumPy
scalars) and the device compute the same values.

Element ``i`` belongs to channel ``(i // inner) % channels``. The grid is 2-D: ``blockIdx.y`` strides over
channels and ``(blockIdx.x, threadIdx.x)`` over the ``outer * inner`` elements of a channel. Errors go to
``err[0]`` (atomic max of the codes below); ``quantize`` does nothing once ``err[0]`` is set.
"""

from __future__ import annotations

import numpy as np
from numba import cuda
from numba.cuda import libdevice

THREADS = (
    128  # threads per CTA by default, and the most minmax takes (a power of two: tree reductions)
)
HIST_BINS = 256

ERR_NONFINITE = 1  # the input holds a NaN or an infinity
ERR_RANGE = 2  # the range is too wide for float32 quantization parameters

MIN_STEP = 1e-30  # codec.quantize.MIN_STEP
MAX_STEP = 1e37  # codec.quantize.MAX_STEP
FLT_MAX = np.float32(3.4028234663852886e38)

F32 = np.float32
F64 = np.float64
I32 = np.int32
I64 = np.int64
U32 = np.uint32
_ZERO32 = np.float32(0.0)
_ONE32 = np.float32(1.0)

# the argument types the host wrappers launch with (compile tests build PTX for exactly these)
SIGNATURES = {
    "minmax": "void(float32[::1], int64, int64, float32[::1], float32[::1], int32[::1])",
    "params": "void(float32[::1], float32[::1], int32, float32[::1], float32[::1], uint8[::1], int32[::1])",
    "quantize": (
        "void(float32[::1], int64, int64, float32[::1], uint8[::1], int32, uint8[::1], uint32[:, ::1],"
        " uint32[::1], int32[::1])"
    ),
    "dequantize": "void(uint8[::1], int64, int64, float32[::1], uint8[::1], float32[::1])",
}
FLOAT_KERNELS = ("params", "quantize", "dequantize")
"""Kernels whose PTX must hold no fused multiply-add."""


@cuda.jit(device=True)
def element(j, c, channels, inner):
    """Flat index of the ``j``-th element of channel ``c``."""
    o = j // inner
    return (o * channels + c) * inner + (j - o * inner)


@cuda.jit
def minmax(x, channels, inner, mins, maxs, err):
    """``mins[c]`` / ``maxs[c]`` (zeroed by the caller) lowered / raised to channel c's smallest / largest
    value; ERR_NONFINITE when any value is NaN or infinite (those take no part in the range). Blocks of a
    power of two threads, at most THREADS."""
    lo_sh = cuda.shared.array(THREADS, np.float32)
    hi_sh = cuda.shared.array(THREADS, np.float32)
    tid = cuda.threadIdx.x
    per = x.shape[0] // channels
    stride = cuda.gridDim.x * cuda.blockDim.x
    bad = False
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
        lo = _ZERO32
        hi = _ZERO32
        for j in range(cuda.blockIdx.x * cuda.blockDim.x + tid, per, stride):
            v = x[element(j, c, channels, inner)]
            if not abs(v) <= FLT_MAX:
                bad = True
                continue
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        lo_sh[tid] = lo
        hi_sh[tid] = hi
        cuda.syncthreads()
        half = cuda.blockDim.x // 2
        while half > 0:
            if tid < half:
                if lo_sh[tid + half] < lo_sh[tid]:
                    lo_sh[tid] = lo_sh[tid + half]
                if hi_sh[tid + half] > hi_sh[tid]:
                    hi_sh[tid] = hi_sh[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            if lo_sh[0] < _ZERO32:
                cuda.atomic.min(mins, c, lo_sh[0])
            if hi_sh[0] > _ZERO32:
                cuda.atomic.max(maxs, c, hi_sh[0])
        cuda.syncthreads()  # nobody refills the shared arrays before thread 0 has read them
    if bad:
        cuda.atomic.max(err, 0, ERR_NONFINITE)


@cuda.jit
def params(mins, maxs, qmax, scale, inv, zero, err):
    """Per channel: scale and zero point from the range (``params_from_range``), and ``inv = 1 / scale``
    in float32. ERR_RANGE when a step is over MAX_STEP."""
    fq = F64(qmax)
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for c in range(start, mins.shape[0], cuda.gridDim.x * cuda.blockDim.x):
        lo = F64(mins[c])
        hi = F64(maxs[c])
        step = libdevice.ddiv_rn(libdevice.dadd_rn(hi, -lo), fq)  # hi + (-lo) is hi - lo
        if step > MAX_STEP:
            cuda.atomic.max(err, 0, ERR_RANGE)
        s = _ONE32
        if step > 0.0:
            s = libdevice.double2float_rn(max(step, MIN_STEP))
        z = libdevice.rint(libdevice.ddiv_rn(-lo, F64(s)))
        z = min(max(z, 0.0), fq)
        scale[c] = s
        inv[c] = libdevice.fdiv_rn(_ONE32, s)
        zero[c] = np.uint8(I32(z))


@cuda.jit
def quantize(x, channels, inner, inv, zero, qmax, q, hist, srange, err):
    """``q[i] = clamp(rint(x[i] * inv[c]) + zero[c], 0, qmax)``; ``srange[0]`` / ``srange[1]`` (255 / 0 from
    the caller) lowered / raised to the symbols' range; with ``hist`` of 1 row, the tensor's histogram is
    added to it, of ``channels`` rows (> 1), each channel's; 0 rows: none."""
    if err[0] != 0:
        return
    counts = cuda.shared.array(HIST_BINS, np.uint32)
    tid = cuda.threadIdx.x
    rows = hist.shape[0]
    per = x.shape[0] // channels
    stride = cuda.gridDim.x * cuda.blockDim.x
    fq = F32(qmax)
    smin = U32(255)
    smax = U32(0)
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
        if rows:
            for b in range(tid, HIST_BINS, cuda.blockDim.x):
                counts[b] = U32(0)
            cuda.syncthreads()
        ic = inv[c]
        zc = F32(zero[c])
        for j in range(cuda.blockIdx.x * cuda.blockDim.x + tid, per, stride):
            i = element(j, c, channels, inner)
            r = libdevice.rintf(libdevice.fmul_rn(x[i], ic))
            v = libdevice.fadd_rn(r, zc)
            if v < _ZERO32:
                v = _ZERO32
            if v > fq:
                v = fq
            s = U32(I32(v))
            q[i] = np.uint8(s)
            smin = min(smin, s)
            smax = max(smax, s)
            if rows:
                cuda.atomic.add(counts, s, U32(1))
        if rows:
            cuda.syncthreads()
            row = c if rows > 1 else 0
            for b in range(tid, HIST_BINS, cuda.blockDim.x):
                if counts[b]:
                    cuda.atomic.add(hist, (row, b), counts[b])
            cuda.syncthreads()  # the counts are read before the next channel clears them
    if smin <= smax:
        cuda.atomic.min(srange, 0, smin)
        cuda.atomic.max(srange, 1, smax)


@cuda.jit
def dequantize(q, channels, inner, scale, zero, out):
    """``out[i] = float32(q[i] - zero[c]) * scale[c]``: an exact conversion and one rounded multiply."""
    per = q.shape[0] // channels
    stride = cuda.gridDim.x * cuda.blockDim.x
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
        sc = scale[c]
        zc = I32(zero[c])
        for j in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, per, stride):
            i = element(j, c, channels, inner)
            out[i] = libdevice.fmul_rn(F32(I32(q[i]) - zc), sc)
