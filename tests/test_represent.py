"""Representations: the delta residuals and their inverse against NumPy, on every path."""

import numpy as np
import pytest

from codec import CodecError, _kernels, represent

needs_avx2 = pytest.mark.skipif(
    not _kernels.AVX2, reason="no AVX2 on this CPU: no vector path to compare with the scalar one"
)
needs_avx512 = pytest.mark.skipif(
    not _kernels.AVX512, reason="no AVX-512 (VBMI2) on this CPU: no vector path to compare with the scalar one"
)


def numpy_residuals(q: np.ndarray, distance: int, bits: int) -> np.ndarray:
    r = q.astype(np.int64)
    r[distance:] -= q[: max(q.size - distance, 0)]
    return (r % (1 << bits)).astype(np.uint8)


@pytest.mark.parametrize("simd", [pytest.param(True, marks=needs_avx2), False])
@pytest.mark.parametrize("distance", [1, 2, 7, 16, 17, 56, 384])
@pytest.mark.parametrize("bits", [8, 5, 4, 2])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 64, 1000, 4099])
def test_delta_inverse_restores_the_symbols(simd, distance, bits, n):
    """Residuals equal NumPy's differences modulo 2^bits, and the inverse (a running sum at distance 1,
    32 symbols per step on the vector path, then a scalar tail) gives the symbols back."""
    rng = np.random.default_rng(n * distance + bits)
    q = rng.integers(0, 1 << bits, n).astype(np.uint8)
    prev = _kernels.set_simd(simd)
    try:
        res = represent.residuals(q, distance, bits)
        layout = represent.Layout(np.zeros(1, np.uint8), 1, n)
        back = represent.merge([res], represent.DELTA, distance, n, layout, bits)
    finally:
        _kernels.set_simd(prev)
    assert np.array_equal(res, numpy_residuals(q, distance, bits))
    assert np.array_equal(back, q)


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 2, 1])
@pytest.mark.parametrize("distance", [1, 3, 17, 64, 5000])
def test_family_histograms_match_numpy(bits, distance):
    """The cost model's sampled statistics: per chunk, the symbols, the residuals at each distance (the
    symbol itself before the distance) and, for bit widths that pack, the packed symbols and packed
    residuals, else the residuals' nibble pairs and escapes, counted as NumPy counts them."""
    rng = np.random.default_rng(bits * 31 + distance)
    q = rng.integers(0, 1 << bits, 20_000).astype(np.uint8)
    q[3000:9000] = q[2000:8000]  # repeated stretches: many zero residuals
    starts = np.array([0, 1024, 4096, 18_000], np.int64)
    chunk = 2000
    slot = represent.pack_slot(bits) or 0
    slot = slot if slot < 8 else 0
    dists = np.array([distance, 1], np.int64)
    hists = np.empty((2 + (2 if slot else 3) * dists.size, 256), np.uint32)
    _kernels.family_histograms(q, starts, chunk, (1 << bits) - 1, slot, dists, hists)

    def counted(sym: np.ndarray, per: int = 1) -> np.ndarray:
        return sum(np.bincount(sym[s // per : (s + chunk) // per], minlength=256) for s in starts)

    assert np.array_equal(hists[0], counted(q))
    for row, d in enumerate(dists, start=2):
        res = represent.residuals(q, int(d), bits)
        assert np.array_equal(hists[row], counted(res))
        if slot:
            packed = represent.pack(res, slot)
            assert np.array_equal(hists[row + dists.size], counted(packed, 8 // slot))
        else:
            streams = [represent.nibble_split(res[s : s + chunk], bits) for s in starts]
            expected_pairs = sum(np.bincount(p, minlength=256) for p, _ in streams)
            expected_esc = sum(np.bincount(e, minlength=256) for _, e in streams)
            assert np.array_equal(hists[row + dists.size], expected_pairs)
            assert np.array_equal(hists[row + 2 * dists.size], expected_esc)
    if slot:
        assert np.array_equal(hists[1], counted(represent.pack(q, slot), 8 // slot))
    else:
        assert not hists[1].any()


@pytest.mark.parametrize("bits", [5, 8])
def test_only_low_bit_widths_pack(bits):
    with pytest.raises(CodecError):
        represent.validate(represent.DELTA_PACKED, 1, bits)
    represent.validate(represent.DELTA_PACKED, 1, 4)


def numpy_csr_stats(q: np.ndarray, zero: int, width: int, row_step: int) -> tuple:
    """Row-count and column-gap histograms of the sparse representation, row by row."""
    counts = np.zeros(256, np.uint32)
    gaps = np.zeros(256, np.uint32)
    nnz = 0
    for r0 in range(0, q.size, width * row_step):
        cols = np.flatnonzero(q[r0 : r0 + width] != zero)
        counts[cols.size] += 1
        np.add.at(gaps, np.diff(cols, prepend=-1) - 1, 1)
        nnz += cols.size
    return counts, gaps, nnz


@pytest.mark.parametrize("density", [0.0, 0.03, 0.4, 0.97, 1.0])
@pytest.mark.parametrize("width", [1, 8, 63, 64, 65, 200, 255])
@pytest.mark.parametrize("row_step", [1, 3])
def test_csr_stats_match_numpy(density, width, row_step):
    """The sparse candidates' statistics (non-zeros found 64 columns at a time) equal a row-by-row count,
    for rows that straddle 64-column words and a last row cut short."""
    rng = np.random.default_rng(width * 7 + row_step)
    q = np.where(rng.random(9_999) < density, rng.integers(0, 256, 9_999), 5).astype(np.uint8)
    (count_hist, gap_hist, nnz), = _kernels.csr_stats(q, np.array([5], np.uint8), 1, q.size, (width,), row_step)
    counts, gaps, expected_nnz = numpy_csr_stats(q, 5, width, row_step)
    assert nnz == expected_nnz
    assert np.array_equal(np.frombuffer(count_hist, np.uint32), counts)
    assert np.array_equal(np.frombuffer(gap_hist, np.uint32), gaps)


def numpy_nibbles(res: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Delta-nibble streams the slow way: residuals within +-7 as nibbles, the rest escaped."""
    signed = np.where(res >= 1 << (bits - 1), res.astype(np.int64) - (1 << bits), res)
    small = np.abs(signed) <= 7
    nib = np.where(small, signed + 7, 15).astype(np.uint8)
    nib = np.append(nib, np.uint8(0)) if nib.size % 2 else nib
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8), res[~small]


@pytest.mark.parametrize("simd", [pytest.param(True, marks=needs_avx512), False])
@pytest.mark.parametrize("bits", [8, 7, 5])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 4099])
def test_nibble_split_and_merge_match_numpy(simd, bits, n):
    """Nibble pairs and escapes equal a NumPy construction on the vector and scalar paths, merge restores
    the residuals, and a merge told of one escape fewer than the nibbles use fails."""
    rng = np.random.default_rng(n + bits)
    res = (rng.integers(-12, 13, n) % (1 << bits)).astype(np.uint8)
    prev = _kernels.set_simd(simd)
    try:
        pairs, esc = represent.nibble_split(res, bits)
        expected_pairs, expected_esc = numpy_nibbles(res, bits)
        assert np.array_equal(pairs, expected_pairs) and np.array_equal(esc, expected_esc)
        out = np.empty(n, np.uint8)
        room = represent.with_room(esc)
        assert _kernels.nibble_merge(pairs, room, esc.size, (1 << bits) - 1, out)
        assert np.array_equal(out, res)
        if esc.size:
            assert not _kernels.nibble_merge(pairs, room, esc.size - 1, (1 << bits) - 1, out)
    finally:
        _kernels.set_simd(prev)
