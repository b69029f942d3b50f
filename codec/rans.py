"""Static rANS streams over 8-bit symbols: 32 interleaved lanes, independent fixed-size blocks.

Stream payload: ``u32 byte size of each block`` then the blocks back to back; a block is 32 final lane
states (u32) followed by its 16-bit renormalization words in decoder read order (see ``csrc/rans_encode.c``).
Blocks are coded in parallel by Python threads (the kernels release the GIL).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _kernels
from .contexts import ORDER0, ContextSpec
from .errors import CodecError

LANES = 32
STATE_BYTES = 4 * LANES
DEFAULT_BLOCK_LOG2 = 16
_POOL: ThreadPoolExecutor | None = None
_BIG_ENDIAN = sys.byteorder == "big"


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="rans")
    return _POOL


def _ranges(nblocks: int, threads: int) -> list[tuple[int, int]]:
    parts = max(1, min(threads, nblocks))
    edges = [nblocks * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def nblocks_for(n: int, block_log2: int) -> int:
    return (n + (1 << block_log2) - 1) >> block_log2


def encode(
    symbols: np.ndarray,
    freqs: np.ndarray,
    prob_bits: int,
    block_log2: int = DEFAULT_BLOCK_LOG2,
    ctx: ContextSpec = ORDER0,
    threads: int = 1,
    out: Callable[[int], np.ndarray] | None = None,
) -> memoryview:
    """Entropy-code uint8 ``symbols`` with the given context tables into a stream payload (a read-only
    view of the coded bytes; single-range coding writes the block index and the blocks in place, into
    ``out(capacity)`` when given, else a new array)."""
    sym = np.ascontiguousarray(symbols, np.uint8).reshape(-1)
    block = 1 << block_log2
    nblocks = nblocks_for(sym.size, block_log2)
    spec = ctx.kernel_spec()
    freqs = np.ascontiguousarray(freqs, np.uint16)
    index = 4 * nblocks

    def run(rng: tuple[int, int], out: np.ndarray, sizes: np.ndarray) -> int:
        return _kernels.rans_encode(sym, spec, freqs, prob_bits, block, rng[0], rng[1], out, sizes)

    def capacity(rng: tuple[int, int]) -> int:
        count = min(rng[1] * block, sym.size) - rng[0] * block
        return (rng[1] - rng[0]) * STATE_BYTES + 2 * count

    ranges = _ranges(nblocks, threads)
    if len(ranges) <= 1:
        size = index + (capacity(ranges[0]) if ranges else 0)
        buf = out(size) if out is not None else np.empty(size, np.uint8)
        sizes = buf[:index].view(np.uint32)
        used = run(ranges[0], buf[index:], sizes) if ranges else 0
        if _BIG_ENDIAN:
            sizes.byteswap(inplace=True)
        return memoryview(buf)[: index + used].toreadonly()

    def job(rng: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty(capacity(rng), np.uint8)
        sizes = np.empty(rng[1] - rng[0], np.uint32)
        return out[: run(rng, out, sizes)], sizes

    parts = list(_pool().map(job, ranges))
    sizes = np.concatenate([p[1] for p in parts]).astype("<u4")
    return memoryview(b"".join([sizes.tobytes(), *(p[0] for p in parts)]))


def decode(
    payload: memoryview | bytes,
    n: int,
    freqs: np.ndarray,
    prob_bits: int,
    block_log2: int = DEFAULT_BLOCK_LOG2,
    ctx: ContextSpec = ORDER0,
    threads: int = 1,
    dequant: tuple | None = None,
) -> np.ndarray:
    """Decode ``n`` symbols from a stream payload; raises CodecError on any inconsistency.

    With ``dequant = (x, scale, zero, channels, inner[, rep, param, bits, elements, q])`` each decoded block
    is turned into float32 in ``x`` while it is still in cache (rep 0: the symbols themselves, 1: residuals at
    distance ``param``, whose inverse fills ``q``, 2: ``elements`` symbols bit-packed ``param`` bits per
    slot), and the symbols are not kept (an empty array is returned)."""
    nblocks = nblocks_for(n, block_log2)
    out = None if dequant is not None else np.empty(n, np.uint8)
    spec = ctx.kernel_spec()
    freqs = np.ascontiguousarray(freqs, np.uint16)
    args = (payload, spec, freqs, prob_bits, 1 << block_log2, n)

    def run(rng: tuple[int, int]) -> int:
        return _kernels.rans_decode(*args, rng[0], rng[1], out, dequant)

    ranges = _ranges(nblocks, threads)
    if len(ranges) > 1:
        status = max(_pool().map(run, ranges))
    else:
        status = run((0, nblocks))
    if status == 1:
        raise CodecError("stream block index does not match the stream length")
    if status:
        raise CodecError("corrupted rANS block")
    return out if out is not None else np.empty(0, np.uint8)
