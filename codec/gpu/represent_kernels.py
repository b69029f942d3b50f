"""numba-cuda kernels for the symbol representations, bit-exact with ``codec/csrc/represent.c`` and
``codec/represent.py``: undoing each representation (decode) and building it (encode).

Undoing (stream symbols -> the dense uint8 symbols that ``dequantize`` reads):

- packed (and the first step of delta-packed): ``unpack``, one thread per symbol, first symbol of a byte
  in its low bits;
- delta (and the last step of delta-packed / delta-nibble): ``q[i] = r[i]`` for ``i < d``, else
  ``(r[i] + q[i - d]) & mask``. That is ``sum(r[j] : j = i mod d, j <= i) & mask`` (the sum modulo 256:
  the mask is 2^bits - 1), so the symbols are viewed as ``ceil(n / d)`` rows of ``d`` columns, each column
  an independent running sum: ``delta_tile_sums`` (each column's sum over a tile of rows),
  the exclusive scan of those sums (``scan_tiles`` / ``scan_add``, modulo 256, the columns one after the
  other, so a column's carry is its scanned value minus that of its first tile), then ``delta_apply``
  (each tile walks its rows from its carry);
- delta-nibble (first step): ``nibble_counts`` (escape nibbles per chunk), their exclusive scan (each
  chunk's first escape), ``nibble_apply`` (nibbles to residuals, escapes taken in order); the escapes
  used must be exactly the escape stream, as on the CPU;
- sparse: ``fill_zero`` (every element its channel's zero point), ``csr_rows`` (each row's count, checked
  against the row's length), their exclusive scan (each row's first non-zero), ``csr_scatter`` (one thread
  per row walks its column gaps and writes its values); the counts must add up to the non-zero count and
  every column must stay inside its row, as on the CPU.

Building (symbols -> the representation's streams): ``pack``, ``delta_forward``, ``nibble_escape_counts``
+ scan + ``nibble_split``, ``csr_count_rows`` + scan + ``csr_split``; and ``histogram``, a stream's 256
symbol counts (its rANS table is normalized from them on the host).

The scan is the block scan of ``scan_tiles`` (one tile of ``blockDim * items`` int64 values per CTA: each
thread's ``items`` summed, those sums scanned with warp shuffles, then the warps' totals by warp 0) with
each tile's total written out; the host scans the totals the same way (recursively) and ``scan_add`` adds
them back. ``mask`` is applied after every addition (-1: plain
sums; 255: sums modulo 256).

Integer steps are int64 (never a mix of signed and unsigned 64-bit values, which numba would promote to
float64; the compile tests check the PTX has no float instruction). Errors go to ``err[0]`` (atomic max of
the codes below); nothing reads or writes outside an array whatever the streams hold.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .rans_kernels import warp_inclusive_sum

THREADS = 128  # threads per CTA by default (element-wise kernels and the scan's tile)
NIBBLE_ESCAPE = 15

ERR_SPARSE = 1  # the sparse streams disagree (counts, gaps and the non-zero count)
ERR_NIBBLE = 2  # the escape nibbles do not use exactly the escape stream

I64 = np.int64
I32 = np.int32
_BYTE = np.int64(0xFF)

# the argument types the host wrappers launch with (compile tests build PTX for exactly these)
SIGNATURES = {
    "scan_tiles": "void(int64[::1], int64, int64, int64, int64[::1])",
    "scan_add": "void(int64[::1], int64, int64, int64, int64[::1])",
    "unpack": "void(uint8[::1], int64, int64, uint8[::1])",
    "delta_tile_sums": "void(uint8[::1], int64, int64, int64, int64, int64[::1])",
    "delta_apply": "void(uint8[::1], int64, int64, int64, int64, int64[::1], int64, uint8[::1])",
    "nibble_counts": "void(uint8[::1], int64, int64, int64[::1])",
    "nibble_apply": (
        "void(uint8[::1], int64, int64, int64[::1], int64[::1], uint8[::1], int64, int64, uint8[::1],"
        " int32[::1])"
    ),
    "fill_zero": "void(int64, uint8[::1], int64, int64, uint8[::1])",
    "csr_rows": "void(uint8[::1], int64, int64, int64[::1], int32[::1])",
    "csr_scatter": (
        "void(uint8[::1], uint8[::1], uint8[::1], int64, int64, int64, int64[::1], int64[::1],"
        " uint8[::1], int32[::1])"
    ),
    "pack": "void(uint8[::1], int64, int64, uint8[::1])",
    "delta_forward": "void(uint8[::1], int64, int64, int64, uint8[::1])",
    "nibble_escape_counts": "void(uint8[::1], int64, int64, int64, int64[::1])",
    "nibble_split": "void(uint8[::1], int64, int64, int64, int64[::1], uint8[::1], uint8[::1])",
    "csr_count_rows": (
        "void(uint8[::1], int64, uint8[::1], int64, int64, int64, uint8[::1], int64[::1])"
    ),
    "csr_split": (
        "void(uint8[::1], int64, uint8[::1], int64, int64, int64, int64[::1], uint8[::1], uint8[::1])"
    ),
    "histogram": "void(uint8[::1], int64, uint32[::1])",
}


# ---------------------------------------------------------------- the scan


@cuda.jit
def scan_tiles(vals, n, mask, items, totals):
    """Exclusive scan of each tile of ``blockDim * items`` values of ``vals`` (in place); the tile's total
    to ``totals[blockIdx.x]``. Each thread sums its ``items`` consecutive values, the threads' sums are
    scanned across the block (warp shuffles, then the warps' totals by warp 0), and each thread writes its
    values' prefixes from its own. Blocks of whole warps (at most 32 of them)."""
    wsum = cuda.shared.array(32, np.int64)
    tid = cuda.threadIdx.x
    lane = tid & 31
    warp = tid >> 5
    first = (I64(cuda.blockIdx.x) * cuda.blockDim.x + tid) * items
    last = min(first + items, n)
    own = I64(0)
    for i in range(first, last):
        own += vals[i]
    s = warp_inclusive_sum(own, lane)
    if lane == 31:
        wsum[warp] = s
    cuda.syncthreads()
    if warp == 0:
        t = I64(0)
        if lane < (cuda.blockDim.x >> 5):
            t = wsum[lane]
        t = warp_inclusive_sum(t, lane)
        wsum[lane] = t
    cuda.syncthreads()
    incl = s
    if warp > 0:
        incl += wsum[warp - 1]
    run = incl - own
    for i in range(first, last):
        v = vals[i]
        vals[i] = run & mask
        run += v
    if tid == cuda.blockDim.x - 1:
        totals[cuda.blockIdx.x] = incl & mask


@cuda.jit
def scan_add(vals, n, mask, tile, offsets):
    """``vals[i] += offsets[i // tile]`` (the scanned tile totals, ``tile``: the ``scan_tiles`` launch's
    ``blockDim * items``), under ``mask``. Any grid."""
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, n, I64(cuda.gridDim.x) * cuda.blockDim.x):
        vals[i] = (vals[i] + offsets[i // tile]) & mask


# ---------------------------------------------------------------- undoing the representations


@cuda.jit
def unpack(packed, slot, n, out):
    """``n`` symbols of ``slot`` bits (1, 2 or 4) from ``ceil(n * slot / 8)`` bytes, first in the low bits."""
    k = I64(8) // slot
    m = (I64(1) << slot) - 1
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, n, I64(cuda.gridDim.x) * cuda.blockDim.x):
        out[i] = np.uint8((I64(packed[i // k]) >> ((i % k) * slot)) & m)


@cuda.jit(device=True)
def _tile_of(t, cols, rows_per_tile, d):
    """Thread ``t`` of a delta kernel: (its column, its tile, its first element)."""
    tile = t // cols
    col = t - tile * cols
    return col, tile, tile * rows_per_tile * d + col


@cuda.jit
def delta_tile_sums(res, n, d, rows_per_tile, ntiles, sums):
    """``sums[col * ntiles + tile]``: column ``col``'s residuals over the tile's rows, modulo 256. One
    thread per (tile, column); columns are ``min(d, n)``."""
    cols = min(d, n)
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for t in range(start, ntiles * cols, I64(cuda.gridDim.x) * cuda.blockDim.x):
        col, tile, i = _tile_of(t, cols, rows_per_tile, d)
        acc = I64(0)
        for _ in range(rows_per_tile):
            if i >= n:
                break
            acc += I64(res[i])
            i += d
        sums[col * ntiles + tile] = acc & _BYTE


@cuda.jit
def delta_apply(res, n, d, rows_per_tile, ntiles, scanned, mask, out):
    """The residuals' inverse: each (tile, column) thread starts from its carry (the column's scanned tile
    sums, relative to the column's first) and walks its rows. ``out[i] = res[i]`` for ``i < d``."""
    cols = min(d, n)
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for t in range(start, ntiles * cols, I64(cuda.gridDim.x) * cuda.blockDim.x):
        col, tile, i = _tile_of(t, cols, rows_per_tile, d)
        acc = (scanned[col * ntiles + tile] - scanned[col * ntiles]) & _BYTE
        for _ in range(rows_per_tile):
            if i >= n:
                break
            r = I64(res[i])
            acc = (acc + r) & _BYTE
            out[i] = np.uint8(r if i < d else acc & mask)
            i += d


@cuda.jit(device=True)
def _nibble(pairs, i):
    return (I64(pairs[i >> 1]) >> ((i & 1) * 4)) & 15


@cuda.jit
def nibble_counts(pairs, n, chunk, counts):
    """``counts[t]``: escape nibbles among residuals ``[t * chunk, (t + 1) * chunk)``."""
    nchunks = (n + chunk - 1) // chunk
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for t in range(start, nchunks, I64(cuda.gridDim.x) * cuda.blockDim.x):
        c = I64(0)
        for i in range(t * chunk, min(t * chunk + chunk, n)):
            if _nibble(pairs, i) == NIBBLE_ESCAPE:
                c += 1
        counts[t] = c


@cuda.jit
def nibble_apply(pairs, n, chunk, offsets, total, esc, nesc, mask, out, err):
    """Residuals from nibble pairs: ``(nibble - 7) & mask``, or the next escape for the escape nibble (chunk
    ``t``'s first is ``offsets[t]``). ERR_NIBBLE unless the escapes used are exactly ``nesc``."""
    nchunks = (n + chunk - 1) // chunk
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    if start == 0 and total[0] != nesc:
        cuda.atomic.max(err, 0, ERR_NIBBLE)
    for t in range(start, nchunks, I64(cuda.gridDim.x) * cuda.blockDim.x):
        p = offsets[t]
        for i in range(t * chunk, min(t * chunk + chunk, n)):
            nib = _nibble(pairs, i)
            if nib == NIBBLE_ESCAPE:
                if p >= nesc:
                    cuda.atomic.max(err, 0, ERR_NIBBLE)
                    break
                out[i] = esc[p]
                p += 1
            else:
                out[i] = np.uint8((nib - 7) & mask)


@cuda.jit
def fill_zero(n, zero, channels, inner, out):
    """``out[i] = zero[(i // inner) % channels]``: every element its channel's zero point."""
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, n, I64(cuda.gridDim.x) * cuda.blockDim.x):
        out[i] = zero[(i // inner) % channels]


@cuda.jit
def csr_rows(counts, n, width, offs, err):
    """``offs[r] = counts[r]`` (to be scanned); ERR_SPARSE when a count is over its row's length."""
    rows = counts.shape[0]
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for r in range(start, rows, I64(cuda.gridDim.x) * cuda.blockDim.x):
        c = I64(counts[r])
        if c > min(width, n - r * width):
            cuda.atomic.max(err, 0, ERR_SPARSE)
        offs[r] = c


@cuda.jit
def csr_scatter(counts, gaps, vals, nnz, n, width, offs, total, out, err):
    """Row ``r``'s values to its columns (each after ``gap + 1`` columns), from its first non-zero
    ``offs[r]``. ERR_SPARSE unless the counts add up to ``nnz`` and every column is inside its row."""
    rows = counts.shape[0]
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    if start == 0 and total[0] != nnz:
        cuda.atomic.max(err, 0, ERR_SPARSE)
    for r in range(start, rows, I64(cuda.gridDim.x) * cuda.blockDim.x):
        k = offs[r]
        cnt = I64(counts[r])
        r0 = r * width
        length = min(width, n - r0)
        if k + cnt > nnz:
            cuda.atomic.max(err, 0, ERR_SPARSE)
            continue
        col = I64(-1)
        for j in range(k, k + cnt):
            col += I64(gaps[j]) + 1
            if col >= length:
                cuda.atomic.max(err, 0, ERR_SPARSE)
                break
            out[r0 + col] = vals[j]


# ---------------------------------------------------------------- building the representations


@cuda.jit
def pack(q, slot, n, out):
    """``ceil(n * slot / 8)`` bytes of ``8 / slot`` symbols each (their low ``slot`` bits), first in the low
    bits; the last byte's unused slots are zero."""
    k = I64(8) // slot
    m = (I64(1) << slot) - 1
    nbytes = (n + k - 1) // k
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for j in range(start, nbytes, I64(cuda.gridDim.x) * cuda.blockDim.x):
        v = I64(0)
        for t in range(k):
            i = j * k + t
            if i < n:
                v |= (I64(q[i]) & m) << (t * slot)
        out[j] = np.uint8(v)


@cuda.jit
def delta_forward(q, n, d, mask, out):
    """Residuals: ``out[i] = q[i]`` for ``i < d``, else ``(q[i] - q[i - d]) & mask``."""
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, n, I64(cuda.gridDim.x) * cuda.blockDim.x):
        if i < d:
            out[i] = q[i]
        else:
            out[i] = np.uint8((I64(q[i]) - I64(q[i - d])) & mask)


@cuda.jit(device=True)
def _escapes(r, mask):
    """A residual's nibble (``(r + 7) & mask`` when at most 14), or the escape nibble."""
    t = (I64(r) + 7) & mask
    return NIBBLE_ESCAPE if t > 14 else t


@cuda.jit
def nibble_escape_counts(res, n, mask, chunk, counts):
    """``counts[t]``: residuals in chunk ``t`` that need the escape nibble."""
    nchunks = (n + chunk - 1) // chunk
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for t in range(start, nchunks, I64(cuda.gridDim.x) * cuda.blockDim.x):
        c = I64(0)
        for i in range(t * chunk, min(t * chunk + chunk, n)):
            if _escapes(res[i], mask) == NIBBLE_ESCAPE:
                c += 1
        counts[t] = c


@cuda.jit
def nibble_split(res, n, mask, chunk, offsets, pairs, esc):
    """Nibble pairs (first in the low half; a last odd nibble alone in its byte) and the escaped residuals
    in order (chunk ``t``'s first at ``offsets[t]``). ``chunk`` is even, so no byte is shared."""
    nchunks = (n + chunk - 1) // chunk
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for t in range(start, nchunks, I64(cuda.gridDim.x) * cuda.blockDim.x):
        p = offsets[t]
        byte = I64(0)
        for i in range(t * chunk, min(t * chunk + chunk, n)):
            nib = _escapes(res[i], mask)
            if nib == NIBBLE_ESCAPE:
                esc[p] = res[i]
                p += 1
            if i & 1:
                pairs[i >> 1] = np.uint8(byte | (nib << 4))
            else:
                byte = nib
                if i == n - 1:
                    pairs[i >> 1] = np.uint8(byte)


@cuda.jit
def csr_count_rows(q, n, zero, channels, inner, width, counts, offs):
    """Per row of ``width``: the symbols other than their channel's zero point, to ``counts`` (uint8) and
    ``offs`` (to be scanned)."""
    rows = counts.shape[0]
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for r in range(start, rows, I64(cuda.gridDim.x) * cuda.blockDim.x):
        c = I64(0)
        for i in range(r * width, min(r * width + width, n)):
            if q[i] != zero[(i // inner) % channels]:
                c += 1
        counts[r] = np.uint8(c)
        offs[r] = c


@cuda.jit
def csr_split(q, n, zero, channels, inner, width, offs, gaps, vals):
    """Row ``r``'s non-zero-point symbols from ``offs[r]`` on: the column gap before each
    (``col - prev_col - 1``) and its value."""
    rows = offs.shape[0]
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    for r in range(start, rows, I64(cuda.gridDim.x) * cuda.blockDim.x):
        k = offs[r]
        prev = I64(-1)
        r0 = r * width
        for i in range(r0, min(r0 + width, n)):
            v = q[i]
            if v != zero[(i // inner) % channels]:
                col = i - r0
                gaps[k] = np.uint8(col - prev - 1)
                vals[k] = v
                prev = col
                k += 1


@cuda.jit
def histogram(sym, n, hist):
    """``hist`` (zeroed by the caller) += the counts of the 256 byte values among ``sym[:n]``: per CTA in
    shared memory, then added to the global counts."""
    counts = cuda.shared.array(256, np.uint32)
    tid = cuda.threadIdx.x
    for b in range(tid, 256, cuda.blockDim.x):
        counts[b] = np.uint32(0)
    cuda.syncthreads()
    start = I64(cuda.blockIdx.x) * cuda.blockDim.x + tid
    for i in range(start, n, I64(cuda.gridDim.x) * cuda.blockDim.x):
        cuda.atomic.add(counts, sym[i], np.uint32(1))
    cuda.syncthreads()
    for b in range(tid, 256, cuda.blockDim.x):
        if counts[b]:
            cuda.atomic.add(hist, b, counts[b])
