"""Representations: the delta residuals and their inverse against NumPy, on every path."""

import numpy as np
import pytest

from codec import _kernels, represent

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
