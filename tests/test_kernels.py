"""The C entry points check every size they are given against their buffers, with overflow-safe
arithmetic: a size that lies, overflows or does not divide the buffer is a CodecError, never a crash, a
hang or a huge allocation."""

from collections.abc import Callable

import numpy as np
import pytest

from codec import CodecError, _kernels
from codec.contexts import ContextSpec

BIG = 2**62  # overflows int64 once multiplied by almost anything
x = np.ones(64, np.float32)
q = np.zeros(64, np.uint8)
f32 = np.ones(4, np.float32)
u8 = np.zeros(4, np.uint8)
out = np.empty(64, np.uint8)
counts = np.zeros(256, np.uint32)
freqs = np.full(256, 16, np.uint16)
order0 = ContextSpec().kernel_spec()


def spec(**kw) -> tuple:
    """A context spec tuple with fields overridden (by position names of ContextSpec.kernel_spec)."""
    names = ["channels", "inner", "mult", "group", "nb_dist", "nb_ref", "nbuckets"]
    fields = dict(zip(names, order0, strict=True)) | kw
    return tuple(fields[n] for n in names)


CALLS: dict[str, Callable[[], object]] = {
    "minmax channels x 4 overflows": lambda: _kernels.minmax(x, f32, f32, BIG, 1),
    "minmax channels x inner overflows": lambda: _kernels.minmax(x, f32, f32, 4, BIG),
    "quantize channels x inner overflows": lambda: _kernels.quantize(
        x, out, f32, u8, 1 << 40, 1 << 40, 255, None
    ),
    "dequantize channels x inner overflows": lambda: _kernels.dequantize(
        q, np.empty(64, np.float32), f32, u8, 4, BIG
    ),
    "transpose batch x rows x cols overflows": lambda: _kernels.transpose_u8(
        q, out, 1 << 22, 1 << 22, 1 << 22
    ),
    "transpose negative": lambda: _kernels.transpose_u8(q, out, -1, -8, 8),
    "channel_histogram channels x 1024 overflows": lambda: _kernels.channel_histogram(
        q, BIG, 1, counts
    ),
    "context_histogram block x stride overflows": lambda: _kernels.context_histogram(
        q, order0, 64, counts, BIG
    ),
    "context mult x n overflows": lambda: _kernels.context_histogram(
        q, spec(mult=BIG), 64, counts, 1
    ),
    "context inner + mult overflows": lambda: _kernels.context_histogram(
        q, spec(inner=2**63 - 1), 64, counts, 1
    ),
    "context neighbor reference beyond a symbol": lambda: _kernels.context_histogram(
        q, spec(nb_dist=32, nb_ref=256, nbuckets=2), 64, np.zeros(4 * 256, np.uint32), 1
    ),
    "context neighbor bucket count 3": lambda: _kernels.context_histogram(
        q, spec(nb_dist=32, nb_ref=0, nbuckets=3), 64, np.zeros(4 * 256, np.uint32), 1
    ),
    "group_sum group index beyond the output": lambda: _kernels.group_sum(
        np.zeros(4 * 256, np.uint32), np.array([0, 1, 2, 4], np.uint8), np.empty(4 * 256, np.uint32)
    ),
    "group_sum counts shorter than the group map": lambda: _kernels.group_sum(
        np.zeros(3 * 256, np.uint32), u8, np.empty(256, np.uint32)
    ),
    "group_sum output not whole tables": lambda: _kernels.group_sum(
        np.zeros(4 * 256, np.uint32), u8, np.empty(300, np.uint32)
    ),
    "csr_stats runs do not divide the symbols": lambda: _kernels.csr_stats(
        q[:63], u8, 2, 4, (8,), 1
    ),
    "csr_stats channels x inner overflows": lambda: _kernels.csr_stats(q, u8, 4, BIG, (8,), 1),
    "csr_split width overflows rows": lambda: _kernels.csr_split(
        q, u8, 1, 64, 2**63 - 1, out, out, out
    ),
    "csr_merge channels x inner overflows": lambda: _kernels.csr_merge(
        out[:1], q, q, u8, 4, BIG, 64, out
    ),
    "rans_encode block overflows": lambda: _kernels.rans_encode(
        q, order0, freqs, 12, BIG, 0, 1, out, counts
    ),
    "rans_decode n x 4 overflows": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, BIG, 0, 1, None, (x, f32, u8, 1, 1)
    ),
    "rans_decode n beyond the output": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 65, 0, 1, out, None
    ),
    "rans_decode negative n": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, -1, 0, 0, out, None
    ),
    "rans_decode packed elements beyond its symbols": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 8, 0, 1, None, (x, f32[:1], u8[:1], 1, 17, 2, 4, 4, 17, None)
    ),
    "rans_decode residuals without a symbol buffer": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 64, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 1, 3, 8, 64, None)
    ),
    "rans_decode residual symbol buffer too short": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 64, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 1, 3, 8, 64, u8)
    ),
    "rans_decode unknown representation": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 64, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 7, 0, 8, 64, None)
    ),
    "rans_decode packing slot 3": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 8, 0, 1, None, (x, f32[:1], u8[:1], 1, 16, 2, 3, 3, 16, None)
    ),
    "rans_decode nibble pairs without escapes": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 32, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 4, 1, 8, 64, out, None, 0)
    ),
    "rans_decode nibble escapes beyond their buffer": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 32, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 4, 1, 8, 64, out, q, 1)
    ),
    "rans_decode nibble pairs from a later block": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 32, 64, 1, 2, None, (x, f32[:1], u8[:1], 1, 64, 4, 1, 8, 64, out, q, 0)
    ),
    "rans_decode nibble pairs of 4-bit symbols": lambda: _kernels.rans_decode(
        q, order0, freqs, 12, 1 << 16, 32, 0, 1, None, (x, f32[:1], u8[:1], 1, 64, 4, 1, 4, 64, out, q, 0)
    ),
    "nibble_split mask not a bit width": lambda: _kernels.nibble_split(q, 100, out, np.empty(128, np.uint8)),
    "nibble_split escapes without room": lambda: _kernels.nibble_split(q, 255, out, np.empty(64, np.uint8)),
    "nibble_merge escape count beyond the buffer": lambda: _kernels.nibble_merge(
        q, np.empty(128, np.uint8), 65, 255, out
    ),
    "nibble_merge pairs shorter than the output": lambda: _kernels.nibble_merge(
        q[:31], np.empty(64, np.uint8), 0, 255, out
    ),
    "family_histograms start beyond the symbols": lambda: _kernels.family_histograms(
        q, np.array([60], np.int64), 8, 255, 0, np.array([1], np.int64), np.empty(5 * 256, np.uint32)
    ),
    "family_histograms start not a whole packed byte": lambda: _kernels.family_histograms(
        q & 15, np.array([3], np.int64), 8, 15, 4, np.array([1], np.int64), np.empty(4 * 256, np.uint32)
    ),
    "family_histograms output shorter than its rows": lambda: _kernels.family_histograms(
        q, np.array([0], np.int64), 8, 255, 0, np.array([1, 2], np.int64), np.empty(1792, np.uint32)
    ),
    "family_histograms output without the packed residual rows": lambda: _kernels.family_histograms(
        q, np.array([0], np.int64), 8, 15, 4, np.array([1], np.int64), np.empty(768, np.uint32)
    ),
    "family_histograms chunk beyond the scratch": lambda: _kernels.family_histograms(
        np.zeros(1 << 14, np.uint8), np.array([0], np.int64), 1 << 14, 255, 0,
        np.array([1], np.int64), np.empty(5 * 256, np.uint32)
    ),
    "family_histograms distance 0": lambda: _kernels.family_histograms(
        q, np.array([0], np.int64), 8, 255, 0, np.array([0], np.int64), np.empty(5 * 256, np.uint32)
    ),
    "read_tables too many tables": lambda: _kernels.read_tables(q, 100_000, 12, out),
    "clip_choice histogram shorter than the channels": lambda: _kernels.clip_choice(
        counts, f32, u8, f32, f32, np.ones(3), 15, 1.0, np.empty(4, np.int32)
    ),
    "clip_choice no candidates": lambda: _kernels.clip_choice(
        counts, f32[:1], u8[:1], f32[:1], f32[:1], np.ones(0), 15, 1.0, np.empty(1, np.int32)
    ),
    "clip_choice qmax beyond 8 bits": lambda: _kernels.clip_choice(
        counts, f32[:1], u8[:1], f32[:1], f32[:1], np.ones(3), 256, 1.0, np.empty(1, np.int32)
    ),
    "clip_choice NaN weight": lambda: _kernels.clip_choice(
        counts, f32[:1], u8[:1], f32[:1], f32[:1], np.ones(3), 15, np.nan, np.empty(1, np.int32)
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_lying_sizes_are_codec_errors(name):
    with pytest.raises(CodecError):
        CALLS[name]()


def test_sizes_that_fit_still_work():
    """The same entry points with consistent sizes (the checks refuse only what does not fit)."""
    mins, maxs = np.empty(4, np.float32), np.empty(4, np.float32)
    assert _kernels.minmax(x, mins, maxs, 4, 16)
    assert _kernels.quantize(x, out, f32, u8, 4, 16, 255, counts)[2] == 64
    dst = np.empty(64, np.uint8)
    _kernels.transpose_u8(np.arange(64, dtype=np.uint8), dst, 1, 8, 8)
    assert dst[1] == 8
    stats = _kernels.csr_stats(q, u8, 4, 16, (8,), 1)
    assert stats[0][2] == 0
    best = np.full(1, -1, np.int32)
    hist = np.zeros(256, np.uint32)
    hist[[0, 255]] = [1, 1000]  # one far outlier below, the mass at the top
    _kernels.clip_choice(
        hist, f32[:1], u8[:1], -f32[:1] * 255, f32[:1], np.array([1.0, 0.5]), 3, 1.0, best
    )
    assert best[0] in (0, 1)
    sums = np.empty((2, 256), np.uint32)
    _kernels.group_sum(np.ones((4, 256), np.uint32), np.array([1, 0, 1, 1], np.uint8), sums)
    assert sums[0, 7] == 1 and sums[1, 7] == 3
    fam = np.empty((4, 256), np.uint32)  # symbols, packed, residuals, packed residuals
    _kernels.family_histograms(
        np.arange(64, dtype=np.uint8) & 15,
        np.array([0, 32], np.int64),
        16,
        15,
        4,
        np.array([1], np.int64),
        fam,
    )
    assert fam[0].sum() == 32 and fam[1].sum() == 16 and fam[2].sum() == 32 and fam[3].sum() == 16
    # one channel: inner is not used (the cost model passes a sample of the tensor)
    assert len(_kernels.csr_stats(q[:40], u8, 1, 64, (8, 16), 1)) == 2
