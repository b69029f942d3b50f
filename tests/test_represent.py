"""Representations: the delta residuals and their inverse against NumPy, on every path."""

import numpy as np
import pytest

from codec import CodecError, _kernels, represent

needs_avx2 = pytest.mark.skipif(
    not _kernels.AVX2, reason="no AVX2 on this CPU: no vector path to compare with the scalar one"
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


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
@pytest.mark.parametrize("distance", [1, 3, 17, 64, 5000])
def test_family_histograms_match_numpy(bits, distance):
    """The cost model's sampled statistics: per chunk, the residuals at each distance (the symbol itself
    before the distance) and, for bit widths that pack, the packed symbols and packed residuals, counted as
    NumPy counts them."""
    rng = np.random.default_rng(bits * 31 + distance)
    q = rng.integers(0, 1 << bits, 20_000).astype(np.uint8)
    q[3000:9000] = q[2000:8000]  # repeated stretches: many zero residuals
    starts = np.array([0, 1024, 4096, 18_000], np.int64)
    chunk = 2000
    slot = represent.pack_slot(bits) or 0
    slot = slot if slot < 8 else 0
    dists = np.array([distance, 1], np.int64)
    hists = np.empty((1 + (2 if slot else 1) * dists.size, 256), np.uint32)
    _kernels.family_histograms(q, starts, chunk, (1 << bits) - 1, slot, dists, hists)

    def counted(sym: np.ndarray, per: int = 1) -> np.ndarray:
        return sum(np.bincount(sym[s // per : (s + chunk) // per], minlength=256) for s in starts)

    for row, d in enumerate(dists, start=1):
        res = represent.residuals(q, int(d), bits)
        assert np.array_equal(hists[row], counted(res))
        if slot:
            packed = represent.pack(res, slot)
            assert np.array_equal(hists[row + dists.size], counted(packed, 8 // slot))
    if slot:
        assert np.array_equal(hists[0], counted(represent.pack(q, slot), 8 // slot))
    else:
        assert not hists[0].any()


@pytest.mark.parametrize("bits", [5, 8])
def test_only_low_bit_widths_pack(bits):
    with pytest.raises(CodecError):
        represent.validate(represent.DELTA_PACKED, 1, bits)
    represent.validate(represent.DELTA_PACKED, 1, 4)
