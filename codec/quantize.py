"""Asymmetric unsigned b-bit quantization, per tensor or per channel; zeros stay exactly zero.

    s = (max(x, 0) - min(x, 0)) / (2^b - 1),   z = round(-min(x, 0) / s),   q = clamp(round(x / s) + z, 0, 2^b - 1)

The kernels multiply by ``1/s`` in float32 (the same operation on every device) and round half to even.

By default the range spans min to max, so every element is within half a step of its value. With
``clip="mse"`` the range is shrunk, per tensor or per channel, to the one of a few candidates that gives the
smallest squared error, scored on a 256-bin histogram of the tensor: at low bit widths a few outliers no longer
stretch the step for everything else. ``clip="wmse"`` weighs the error of saturated elements twice, over a finer
set of candidates: it clips less, keeping more of the large activations that the next layers act on.
``clip="wmse_ends"`` scores ranges as "wmse" does (24 candidates, saturated error counted twice) and then
searches each end of the range alone, the other kept: a skewed channel, with a long tail on one side, keeps
its short side whole instead of clipping both sides by the same factor. It is the fidelity benchmark's
4-bit rule, chosen on tuning crops and reported on others (``benchmarks/clip_study.py``). Elements beyond
the clipped range saturate; zeros stay exact either way, and 8 bits keep the full range in every mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _kernels
from .errors import CodecError

MIN_STEP = 1e-30
MAX_STEP = 1e37
MAX_UNSEEN = 128  # sampled histograms: symbols of the range the sample may miss before counting all
CLIP_FACTORS = np.array(
    [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25, 0.2, 0.15], np.float64
)
"""clip="mse": the candidate ranges, as fractions of the full [min, max] range."""
WMSE_FACTORS = np.geomspace(1.0, 0.1, 40)
"""clip="wmse": 40 candidate ranges, geometric from the full range down to a tenth of it."""
WMSE_CLIPPED_WEIGHT = 2.0
"""clip="wmse": how much more the squared error of a saturated element counts than a rounded one's."""
CLIP_MODES = {"mse": (CLIP_FACTORS, 1.0), "wmse": (WMSE_FACTORS, WMSE_CLIPPED_WEIGHT)}
"""clip mode -> (candidate factors, weight of saturated elements' error) for mse_range."""
ENDS_FACTORS = np.geomspace(1.0, 0.1, 24)
"""clip="wmse_ends": 24 candidate ends, geometric from the channel's min (or max) down to a tenth of it."""
ENDS_CLIPPED_WEIGHT = 2.0
"""clip="wmse_ends": the weight of a saturated element's squared error."""
ENDS_CHUNK = 64
"""clip="wmse_ends": channels scored at once (bounds the candidates x bins temporaries)."""
CLIPS = (None, *CLIP_MODES, "wmse_ends")


@dataclass(frozen=True)
class QuantParams:
    """Quantization parameters: one (scale, zero) pair per channel of ``axis`` (or one for the tensor)."""

    bits: int
    axis: int | None
    scale: np.ndarray  # float32, one per channel
    zero: np.ndarray  # uint8, one per channel

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1


def channel_layout(shape: tuple[int, ...], axis: int | None) -> tuple[int, int]:
    """(channels, inner): element i belongs to channel (i // inner) % channels."""
    if axis is None or len(shape) == 0:
        return 1, max(1, math.prod(shape))
    channels = int(shape[axis])
    inner = math.prod(shape[axis + 1 :])
    return max(channels, 1), max(inner, 1)


def normalize_axis(axis: int | None, ndim: int) -> int | None:
    """Resolve a negative axis; None stays None (per-tensor)."""
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise CodecError(f"axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


def params_from_range(
    mins: np.ndarray, maxs: np.ndarray, bits: int, axis: int | None
) -> QuantParams:
    """Scale and zero point from per-channel min/max (both already include 0)."""
    qmax = (1 << bits) - 1
    if mins.size == 1:
        # per tensor: the same float64 arithmetic on Python floats (round() is half-to-even like rint)
        lo, hi = float(mins[0]), float(maxs[0])
        step = (hi - lo) / qmax
        if step > MAX_STEP:
            raise CodecError("tensor range is too wide for float32 quantization parameters")
        s32 = np.float32(max(step, MIN_STEP)) if step > 0 else np.float32(1.0)
        z = min(max(round(-lo / float(s32)), 0), qmax)
        return QuantParams(
            bits=bits, axis=axis, scale=np.array([s32], np.float32), zero=np.array([z], np.uint8)
        )
    span = maxs.astype(np.float64) - mins.astype(np.float64)
    step = span / qmax
    if np.any(step > MAX_STEP):
        raise CodecError("tensor range is too wide for float32 quantization parameters")
    # an all-zero channel keeps scale 1; tiny ranges are floored so that 1/scale stays finite
    scale = np.where(step > 0, np.maximum(step, MIN_STEP), 1.0).astype(np.float32)
    zero = np.clip(np.rint(-mins.astype(np.float64) / scale.astype(np.float64)), 0, qmax).astype(
        np.uint8
    )
    return QuantParams(bits=bits, axis=axis, scale=scale, zero=zero)


def quantize(
    x: np.ndarray,
    bits: int,
    axis: int | None = None,
    hist_stride: int = 1,
    clip: str | None = None,
) -> tuple[np.ndarray, QuantParams, np.ndarray]:
    """Quantize float32 ``x`` to uint8 symbols. Returns (symbols, params, 256-bin histogram).

    With ``hist_stride`` k > 1 the histogram counts about one chunk of 4 Ki symbols in k (picked by a hash
    of the chunk index, so the sample does not follow the tensor's channel or batch period), and every symbol
    between the smallest and the largest one that occurs counts at least once (so a table built from it
    can code every symbol of the tensor). If more than MAX_UNSEEN symbols of that range are missing from
    the sample, the floors would cost too much probability, and all symbols are counted instead."""
    q, params, hist, _, _ = _quantize_any(x, bits, axis, max(int(hist_stride), 1), clip)
    return q, params, hist


def quantize_symbols(
    x: np.ndarray, bits: int, axis: int | None = None, clip: str | None = None
) -> tuple[np.ndarray, QuantParams, int, int]:
    """Quantize float32 ``x`` without a histogram: (symbols, params, smallest symbol, largest symbol)."""
    q, params, _, lo, hi = _quantize_any(x, bits, axis, 0, clip)
    return q, params, lo, hi


def _quantize_any(
    x: np.ndarray, bits: int, axis: int | None, hist_stride: int, clip: str | None
) -> tuple[np.ndarray, QuantParams, np.ndarray, int, int]:
    """:func:`quantize` for any memory layout (``hist_stride`` 0: no histogram): (symbols, params,
    histogram, smallest symbol, largest symbol)."""
    if not 1 <= bits <= 8:
        raise CodecError(f"bits must be in 1..8, got {bits}")
    check_clip(clip)
    x = np.asarray(x, dtype=np.float32)
    axis = normalize_axis(axis, x.ndim)
    mem = memory_order(x)
    if mem is None:
        return _quantize(np.asarray(x, order="C"), bits, axis, hist_stride, clip)
    # e.g. a channels-last map: quantize it as it lies in memory, then reorder the 1-byte symbols
    # (4x less data to move than reordering the floats first); same symbols and statistics
    perm, view = mem
    q_mem, p_mem, _, lo, hi = _quantize(
        view, bits, None if axis is None else perm.index(axis), 0, clip
    )
    q = _reorder(q_mem, view.shape, perm)
    hist = np.zeros(256, np.uint32)
    if hist_stride:
        _kernels.histogram_sampled(q, hist_stride, hist)
        if hist_stride > 1:
            _floor_or_count(q, hist, lo, hi)
    return q, QuantParams(bits, axis, p_mem.scale, p_mem.zero), hist, lo, hi


def sampled_table_counts(q: np.ndarray, stride: int, lo: int, hi: int) -> np.ndarray:
    """The histogram of about one chunk in ``stride`` of ``q`` (see :func:`quantize`) with every symbol of
    [lo, hi] counted at least once (or, past MAX_UNSEEN missing ones, all symbols counted): a table built
    from it codes every symbol of ``q``."""
    hist = np.zeros(256, np.uint32)
    _kernels.histogram_sampled(q, stride, hist)
    return _floor_or_count(q, hist, lo, hi) if stride > 1 else hist


def check_clip(clip: str | None) -> None:
    if clip not in CLIPS:
        raise CodecError(f"clip must be one of {CLIPS}, got {clip!r}")


def mse_range(
    flat: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    channels: int,
    inner: int,
    bits: int,
    factors: np.ndarray = CLIP_FACTORS,
    clipped_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the candidate range (``factors`` of [min, max], which both contain 0) whose
    ``bits``-bit quantization has the least squared error, the error of saturated elements weighted by
    ``clipped_weight`` (1, the default, is plain squared error: clip="mse").

    The error is scored on each channel's 256-bin histogram of the whole tensor (an 8-bit quantization
    over the full range, one pass in C), every bin standing for its centre: the tails count as often as
    they occur, which a sample of the elements would miss. The C kernel scores each candidate in
    O(2^bits) from prefix sums of the counts, sums and squares of the bins. At 8 bits the full range is
    kept."""
    if bits == 8:
        return mins, maxs
    hist, scale8, zero8 = channel_histograms(flat, mins, maxs, channels, inner)
    best = np.empty(channels, np.int32)
    factors = np.ascontiguousarray(factors, np.float64)
    _kernels.clip_choice(
        hist, scale8, zero8, mins, maxs, factors, (1 << bits) - 1, float(clipped_weight), best
    )
    f = factors[best]  # ties go to the wider range (the first candidate)
    return (mins * f).astype(np.float32), (maxs * f).astype(np.float32)


def channel_histograms(
    flat: np.ndarray, mins: np.ndarray, maxs: np.ndarray, channels: int, inner: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts ``channels x 256``, 8-bit scale, 8-bit zero point): each channel's histogram of its
    full-range 8-bit quantization (one pass in C), the input of the range searches."""
    full = params_from_range(mins, maxs, 8, None if channels == 1 else 0)
    q8 = np.empty(flat.size, np.uint8)
    inv = (np.float32(1.0) / full.scale).astype(np.float32)
    _kernels.quantize(flat, q8, inv, full.zero, channels, inner, 255, None, 1)
    hist = np.zeros((channels, 256), np.uint32)
    if channels == 1:
        _kernels.histogram(q8, hist[0])
    else:
        _kernels.channel_histogram(q8, channels, inner, hist)
    return hist, np.ascontiguousarray(full.scale, np.float32), np.ascontiguousarray(full.zero, np.uint8)


def ends_range(
    flat: np.ndarray, mins: np.ndarray, maxs: np.ndarray, channels: int, inner: int, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """clip="wmse_ends": per channel, the range of :func:`ends_choice` on the channel's 256-bin
    histogram (:func:`channel_histograms`). At 8 bits the full range is kept."""
    if bits == 8:
        return mins, maxs
    hist, scale8, zero8 = channel_histograms(flat, mins, maxs, channels, inner)
    return ends_choice(hist, scale8, zero8, mins, maxs, bits)


def ends_choice(
    hist: np.ndarray,
    scale8: np.ndarray,
    zero8: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    bits: int,
    factors: np.ndarray = ENDS_FACTORS,
    clipped_weight: float = ENDS_CLIPPED_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """The search of clip="wmse_ends" on per-channel 256-bin histograms (every bin standing for its
    centre, as in :func:`mse_range`), scored by squared error with saturated elements' error weighted
    ``clipped_weight``: first both ends scaled by one factor (as clip="wmse"), then the low end alone
    with the high end kept, then the high end alone. A skewed channel (a long tail on one side) keeps
    its short side whole instead of clipping both sides alike. Ties go to the earlier, wider candidate.
    Every candidate contains 0 (both ends are fractions of min <= 0 <= max), so zeros stay exact.

    Plain NumPy (float64) on the histogram only, so the GPU path, which brings the same histogram to
    the host, gets the same ranges from this same function."""
    qmax = (1 << bits) - 1
    f = np.asarray(factors, np.float64)
    lo_out = np.asarray(mins, np.float64).copy()
    hi_out = np.asarray(maxs, np.float64).copy()
    for c0 in range(0, hist.shape[0], ENDS_CHUNK):
        sl = slice(c0, c0 + ENDS_CHUNK)
        n = hist[sl].astype(np.float64)[:, None, :]  # (C, 1, 256)
        centre = (np.arange(256.0)[None, :] - zero8[sl, None]) * scale8[sl, None].astype(np.float64)
        centre = centre[:, None, :]
        lo0, hi0 = lo_out[sl, None], hi_out[sl, None]  # (C, 1)

        def errors(lo: np.ndarray, hi: np.ndarray, n=n, centre=centre) -> np.ndarray:
            step = np.where(hi > lo, (hi - lo) / qmax, 1.0)
            zero = np.clip(np.rint(-lo / step), 0, qmax)[..., None]
            u = centre / step[..., None] + zero
            level = np.clip(np.rint(u), 0, qmax)
            e = n * np.square((level - zero) * step[..., None] - centre)
            e = np.where((u < -0.5) | (u > qmax + 0.5), clipped_weight * e, e)
            return e.sum(-1)  # (C, K)

        rows = np.arange(lo0.shape[0])
        err = errors(lo0 * f, hi0 * f)
        k = np.argmin(err, axis=1)
        least, lo, hi = err[rows, k], (lo0 * f)[rows, k], (hi0 * f)[rows, k]
        for side in ("lo", "hi"):
            cand_lo = lo0 * f if side == "lo" else np.repeat(lo[:, None], f.size, 1)
            cand_hi = hi0 * f if side == "hi" else np.repeat(hi[:, None], f.size, 1)
            err = errors(cand_lo, cand_hi)
            k = np.argmin(err, axis=1)
            better = err[rows, k] < least
            least = np.where(better, err[rows, k], least)
            lo = np.where(better, cand_lo[rows, k], lo)
            hi = np.where(better, cand_hi[rows, k], hi)
        lo_out[sl], hi_out[sl] = lo, hi
    return lo_out.astype(np.float32), hi_out.astype(np.float32)


def clipped_range(
    clip: str,
    hist: np.ndarray,
    scale8: np.ndarray,
    zero8: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    bits: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The range of a clip mode below 8 bits from the per-channel histograms of
    :func:`channel_histograms`: the C ``clip_choice`` (mse, wmse) or :func:`ends_choice`
    (wmse_ends). Shared by the CPU and GPU paths."""
    if clip == "wmse_ends":
        return ends_choice(hist, scale8, zero8, mins, maxs, bits)
    factors, weight = CLIP_MODES[clip]
    best = np.empty(hist.shape[0], np.int32)
    f64 = np.ascontiguousarray(factors, np.float64)
    _kernels.clip_choice(hist, scale8, zero8, mins, maxs, f64, (1 << bits) - 1, float(weight), best)
    f = f64[best]
    return (mins * f).astype(np.float32), (maxs * f).astype(np.float32)


def memory_order(x: np.ndarray) -> tuple[tuple[int, ...], np.ndarray] | None:
    """For a non-contiguous array that is a permutation of a contiguous one (channels-last maps, transposed
    matrices): the axis order and the C-contiguous view in memory order; None otherwise."""
    if x.ndim < 2 or x.flags.c_contiguous or x.size == 0:
        return None
    perm = tuple(int(i) for i in np.argsort([-abs(st) for st in x.strides], kind="stable"))
    view = x.transpose(perm)
    return (perm, view) if view.flags.c_contiguous else None


def _reorder(q_mem: np.ndarray, mem_shape: tuple[int, ...], perm: tuple[int, ...]) -> np.ndarray:
    """Symbols in memory order -> logical C order. One axis moved to the back of memory (channels-last and
    the like) is a batch of byte-matrix transposes done by a tiled kernel; anything else goes to NumPy."""
    d = len(perm)
    for k in range(d - 1):
        if perm == (*range(k), *range(k + 1, d), k):
            batch = math.prod(mem_shape[:k])
            cols = mem_shape[-1]
            rows = math.prod(mem_shape[k:-1])
            out = np.empty(q_mem.size, np.uint8)
            _kernels.transpose_u8(q_mem, out, batch, rows, cols)
            return out
    return np.ascontiguousarray(q_mem.reshape(mem_shape).transpose(np.argsort(perm))).reshape(-1)


def _floor_or_count(q: np.ndarray, hist: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Give every symbol of [lo, hi] missing from a sampled histogram a count of 1, or count all symbols
    when too many are missing."""
    span = hist[lo : hi + 1]
    unseen = int(np.count_nonzero(span == 0))
    if unseen > MAX_UNSEEN:
        # outliers outside the sample: floors would waste probability, count everything instead
        _kernels.histogram(q, hist)
    elif unseen:
        np.maximum(span, 1, out=span)
    return hist


def _quantize(
    x: np.ndarray, bits: int, axis: int | None, hist_stride: int, clip: str | None = None
) -> tuple[np.ndarray, QuantParams, np.ndarray, int, int]:
    """Quantize a C-contiguous array: (symbols, params, histogram (none for hist_stride 0), smallest and
    largest symbol)."""
    channels, inner = channel_layout(x.shape, axis)
    flat = x.reshape(-1)
    if channels == 1 and clip is None and flat.size:
        return _quantize_tensor(flat, bits, axis, hist_stride)
    mins = np.empty(channels, np.float32)
    maxs = np.empty(channels, np.float32)
    if flat.size and not _kernels.minmax(flat, mins, maxs, channels, inner):
        raise CodecError("input contains NaN or Inf; only finite tensors can be encoded")
    if not flat.size:
        mins[:] = 0
        maxs[:] = 0
    elif clip == "wmse_ends":
        mins, maxs = ends_range(flat, mins, maxs, channels, inner, bits)
    elif clip is not None:
        mins, maxs = mse_range(flat, mins, maxs, channels, inner, bits, *CLIP_MODES[clip])
    params = params_from_range(mins, maxs, bits, axis)
    inv = (np.float32(1.0) / params.scale).astype(np.float32)
    q = np.empty(flat.size, np.uint8)
    hist = np.zeros(256, np.uint32)
    lo = hi = 0
    if flat.size:
        lo, hi, _ = _kernels.quantize(
            flat,
            q,
            inv,
            params.zero,
            channels,
            inner,
            params.qmax,
            hist if hist_stride else None,
            max(hist_stride, 1),
        )
        if hist_stride > 1:
            _floor_or_count(q, hist, lo, hi)
    return q, params, hist, lo, hi


def _quantize_tensor(
    flat: np.ndarray, bits: int, axis: int | None, hist_stride: int
) -> tuple[np.ndarray, QuantParams, np.ndarray, int, int]:
    """:func:`_quantize` of one channel without clipping, in one C call (``quantize_tensor`` in
    ``csrc/quantize.c``: the same range, parameters, symbols and histogram)."""
    q = np.empty(flat.size, np.uint8)
    hist = np.zeros(256, np.uint32)
    status, scale, zero, lo, hi = _kernels.quantize_tensor(
        flat, bits, max(hist_stride, 1), q, hist if hist_stride else None
    )
    if status == 1:
        raise CodecError("input contains NaN or Inf; only finite tensors can be encoded")
    if status == 2:
        raise CodecError("tensor range is too wide for float32 quantization parameters")
    params = QuantParams(bits, axis, np.array([scale], np.float32), np.array([zero], np.uint8))
    return q, params, hist, lo, hi


def dequantize(q: np.ndarray, params: QuantParams, shape: tuple[int, ...]) -> np.ndarray:
    """Symbols back to float32 of ``shape``: (q - zero) * scale."""
    channels, inner = channel_layout(shape, params.axis)
    out = np.empty(q.size, np.float32)
    if q.size:
        _kernels.dequantize(q, out, params.scale, params.zero, channels, inner)
    return out.reshape(shape)
