"""Frequency tables: normalization to 2^prob_bits, compact serialization, ideal code lengths."""

from __future__ import annotations

import numpy as np

from . import _kernels
from .errors import CodecError

DEFAULT_PROB_BITS = 12


def normalize(counts: np.ndarray, prob_bits: int = DEFAULT_PROB_BITS) -> np.ndarray:
    """Counts (tables x 256) -> uint16 frequencies; each non-empty table sums to 2^prob_bits."""
    counts = np.ascontiguousarray(counts, dtype=np.uint32).reshape(-1, 256)
    freqs = np.empty(counts.shape, np.uint16)
    _kernels.normalize(counts, prob_bits, freqs)
    return freqs


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical order-0 entropy of a histogram times its count (the order-0 bound, in bits)."""
    c = counts.reshape(-1).astype(np.float64)
    total = c.sum()
    if total == 0:
        return 0.0
    p = c[c > 0] / total
    return float(-total * np.sum(p * np.log2(p)))


def serialize(freqs: np.ndarray) -> bytes:
    """Tables -> bytes: per table a 32-byte presence bitmap, then f-1 of each present symbol in 1 or 2 bytes."""
    return _kernels.write_tables(np.ascontiguousarray(freqs, np.uint16).reshape(-1))


def cost(counts: np.ndarray, prob_bits: int) -> tuple[float, int]:
    """(ideal code bits, serialized table bytes) of coding these per-table counts with normalized tables."""
    return _kernels.table_cost(np.ascontiguousarray(counts, np.uint32).reshape(-1), prob_bits)


def deserialize(buf: memoryview, ntables: int, prob_bits: int) -> tuple[np.ndarray, int]:
    """Parse ``ntables`` tables from ``buf``; returns (freqs, bytes consumed). Validates sums."""
    freqs = np.empty((ntables, 256), np.uint16)
    used = _kernels.read_tables(buf, ntables, prob_bits, freqs)
    if used < 0:
        raise CodecError("malformed frequency table")
    return freqs, used
