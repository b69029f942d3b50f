"""Host side of the GPU representation kernels: launches on device arrays, and NumPy-in/NumPy-out wrappers
that give exactly what ``codec.represent.merge`` (undoing a representation) and ``codec.represent.split``
(building it) give, for every representation: dense, packed (1, 2, 4 bits a slot), delta, delta-packed,
delta-nibble and sparse (CSR rows).

Bit-exact with the CPU codec (tests/test_gpu_represent.py, under the CUDA simulator): the dense symbols
from every representation's streams, and every representation's streams from the symbols; inconsistent
sparse or delta-nibble streams raise the CPU's ``CodecError`` (the kernels set a code, the wrapper raises
after reading it back). What stays on the host: the checks of the representation's parameters and of the
streams' lengths (``codec.represent.validate`` / ``stream_lengths``, header fields), and, when building the
sparse and delta-nibble streams, reading back their non-zero / escape count (it sizes the frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from .. import represent as cpu
from ..errors import CodecError
from . import represent_kernels as K

MAX_BLOCKS = 4096  # CTAs of an element-wise launch at most (grid-stride loops cover the rest)
TARGET_THREADS = 16384  # threads the delta and nibble kernels aim for
SCAN_ITEMS = (
    8  # values per thread of the scans (a tile: threads x SCAN_ITEMS; the tests lower it to get
)
# scans of several levels and warps from tiny inputs)

_MESSAGES = {
    K.ERR_SPARSE: "inconsistent sparse streams",
    K.ERR_NIBBLE: "nibble escapes do not match their stream",
}


def raise_for(code: int) -> None:
    """Raise the CPU's CodecError for an error code from the kernels (0: nothing)."""
    if code:
        raise CodecError(_MESSAGES.get(code, "inconsistent representation streams"))


def _grid(work: int, threads: int, max_blocks: int = MAX_BLOCKS) -> int:
    return max(1, min(max_blocks, -(-work // threads)))


def _check_threads(threads: int) -> int:
    if threads not in (32, 64, 128, 256):
        raise ValueError("threads must be 32, 64, 128 or 256")
    return threads


# ---------------------------------------------------------------- launches (device arrays, no sync)


def launch_scan(
    vals: Any, mask: int, *, threads: int = K.THREADS, max_blocks: int = MAX_BLOCKS, stream: Any = 0
) -> Any:
    """Queue the exclusive scan of device int64 ``vals`` in place (``mask``: -1 for sums, 255 for sums
    modulo 256); returns a device int64[1] that will hold the total."""
    n = vals.shape[0]
    if n == 0:
        return cuda.to_device(np.zeros(1, np.int64), stream=stream)
    items = SCAN_ITEMS
    ntiles = -(-n // (threads * items))
    totals = cuda.device_array(ntiles, np.int64, stream=stream)
    K.scan_tiles[ntiles, threads, stream](
        vals, np.int64(n), np.int64(mask), np.int64(items), totals
    )
    if ntiles == 1:
        return totals
    grand = launch_scan(totals, mask, threads=threads, max_blocks=max_blocks, stream=stream)
    K.scan_add[_grid(n, threads, max_blocks), threads, stream](
        vals, np.int64(n), np.int64(mask), np.int64(threads * items), totals
    )
    return grand


def delta_tiling(
    n: int, d: int, rows_per_tile: int | None = None, target: int = TARGET_THREADS
) -> tuple[int, int, int]:
    """(columns, rows per tile, tiles per column) of the residuals' inverse at distance ``d``: by default
    tiles of as few rows as give about ``target`` threads."""
    cols = min(d, n)
    rows = -(-n // d)
    if rows_per_tile is None:
        rows_per_tile = max(1, -(-rows * cols // target))
    return cols, rows_per_tile, -(-rows // rows_per_tile)


def launch_delta_inverse(
    res: Any,
    n: int,
    d: int,
    bits: int,
    out: Any,
    *,
    rows_per_tile: int | None = None,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """Queue ``out`` = the symbols whose residuals at distance ``d`` are ``res`` (n > 0)."""
    target = min(TARGET_THREADS, max_blocks * threads)
    cols, rpt, ntiles = delta_tiling(n, d, rows_per_tile, target)
    sums = cuda.device_array(cols * ntiles, np.int64, stream=stream)
    args = (np.int64(n), np.int64(d), np.int64(rpt), np.int64(ntiles))
    g = _grid(cols * ntiles, threads, max_blocks)
    K.delta_tile_sums[g, threads, stream](res, *args, sums)
    launch_scan(sums, 0xFF, threads=threads, max_blocks=max_blocks, stream=stream)
    K.delta_apply[g, threads, stream](res, *args, sums, np.int64((1 << bits) - 1), out)


def nibble_chunk(n: int, chunk: int | None = None, target: int = TARGET_THREADS) -> int:
    """Residuals per thread of the delta-nibble kernels (even; by default about ``target`` threads)."""
    if chunk is None:
        chunk = max(2, -(-n // target))
        chunk += chunk & 1
    if chunk < 2 or chunk & 1:
        raise ValueError("the nibble chunk must be even")
    return chunk


def launch_nibble_merge(
    pairs: Any,
    esc: Any,
    n: int,
    bits: int,
    out: Any,
    err: Any,
    *,
    chunk: int | None = None,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """Queue the residuals of nibble ``pairs`` and escapes ``esc`` into ``out`` (n > 0)."""
    chunk = nibble_chunk(n, chunk, min(TARGET_THREADS, max_blocks * threads))
    nchunks = -(-n // chunk)
    counts = cuda.device_array(nchunks, np.int64, stream=stream)
    g = _grid(nchunks, threads, max_blocks)
    K.nibble_counts[g, threads, stream](pairs, np.int64(n), np.int64(chunk), counts)
    total = launch_scan(counts, -1, threads=threads, max_blocks=max_blocks, stream=stream)
    K.nibble_apply[g, threads, stream](
        pairs,
        np.int64(n),
        np.int64(chunk),
        counts,
        total,
        esc,
        np.int64(esc.shape[0]),
        np.int64((1 << bits) - 1),
        out,
        err,
    )


def launch_csr_merge(
    counts: Any,
    gaps: Any,
    vals: Any,
    n: int,
    width: int,
    zero: Any,
    channels: int,
    inner: int,
    out: Any,
    err: Any,
    *,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """Queue the dense symbols of sparse rows of ``width`` into ``out`` (n > 0)."""
    rows = counts.shape[0]
    K.fill_zero[_grid(n, threads, max_blocks), threads, stream](
        np.int64(n), zero, np.int64(channels), np.int64(inner), out
    )
    offs = cuda.device_array(rows, np.int64, stream=stream)
    g = _grid(rows, threads, max_blocks)
    K.csr_rows[g, threads, stream](counts, np.int64(n), np.int64(width), offs, err)
    total = launch_scan(offs, -1, threads=threads, max_blocks=max_blocks, stream=stream)
    K.csr_scatter[g, threads, stream](
        counts,
        gaps,
        vals,
        np.int64(gaps.shape[0]),
        np.int64(n),
        np.int64(width),
        offs,
        total,
        out,
        err,
    )


def launch_unpack(
    packed: Any,
    slot: int,
    n: int,
    out: Any,
    *,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    K.unpack[_grid(n, threads, max_blocks), threads, stream](
        packed, np.int64(slot), np.int64(n), out
    )


def check_lengths(streams: list, kind: int, param: int, n: int, bits: int) -> int:
    """The streams' lengths against the representation's (``nnz``: the second stream's); returns nnz."""
    counted = kind in (cpu.SPARSE, cpu.DELTA_NIBBLE) and len(streams) > 1
    nnz = int(streams[1].shape[0]) if counted else 0
    want = cpu.stream_lengths(kind, param, n, nnz, bits)
    if [int(s.shape[0]) for s in streams] != want:
        raise CodecError("stream lengths do not match the representation")
    return nnz


def launch_merge(
    streams: list,
    kind: int,
    param: int,
    n: int,
    bits: int,
    zero: Any,
    channels: int,
    inner: int,
    err: Any,
    *,
    rows_per_tile: int | None = None,
    chunk: int | None = None,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> Any:
    """Queue the dense uint8[n] symbols of a representation's device streams (their lengths checked by
    the caller, e.g. with :func:`check_lengths`); returns the device array (the dense stream itself for
    DENSE). ``zero``: the device zero points (sparse only). Errors go to ``err`` (int32[1], zeroed)."""
    _check_threads(threads)
    if kind == cpu.DENSE:
        return streams[0]
    out = cuda.device_array(n, np.uint8, stream=stream)
    if n == 0:
        return out
    kw = {"threads": threads, "max_blocks": max_blocks, "stream": stream}
    if kind == cpu.PACKED:
        launch_unpack(streams[0], param, n, out, **kw)
    elif kind in (cpu.DELTA, cpu.DELTA_PACKED, cpu.DELTA_NIBBLE):
        res = streams[0]
        if kind == cpu.DELTA_PACKED:
            res = cuda.device_array(n, np.uint8, stream=stream)
            launch_unpack(streams[0], cpu.packed_slot(bits), n, res, **kw)
        elif kind == cpu.DELTA_NIBBLE:
            res = cuda.device_array(n, np.uint8, stream=stream)
            launch_nibble_merge(streams[0], streams[1], n, bits, res, err, chunk=chunk, **kw)
        launch_delta_inverse(res, n, param, bits, out, rows_per_tile=rows_per_tile, **kw)
    elif kind == cpu.SPARSE:
        counts, gaps, vals = streams
        launch_csr_merge(counts, gaps, vals, n, param, zero, channels, inner, out, err, **kw)
    else:
        raise CodecError(f"unknown representation {kind}")
    return out


# ---------------------------------------------------------------- NumPy in, NumPy out


def _dev(a: Any) -> Any:
    return cuda.to_device(np.ascontiguousarray(a, np.uint8).reshape(-1))


def merge(
    streams: list[np.ndarray],
    kind: int,
    param: int,
    n: int,
    layout: cpu.Layout,
    bits: int = 8,
    **kw,
) -> np.ndarray:
    """``codec.represent.merge`` on the GPU: the same symbols, or the same CodecError."""
    cpu.validate(kind, param, bits)
    host = [np.ascontiguousarray(s, np.uint8).reshape(-1) for s in streams]
    check_lengths(host, kind, param, n, bits)
    err = cuda.to_device(np.zeros(1, np.int32))
    zero = _dev(layout.zero)
    out = launch_merge(
        [_dev(s) for s in host],
        kind,
        param,
        n,
        bits,
        zero,
        layout.channels,
        layout.inner,
        err,
        **kw,
    )
    raise_for(int(err.copy_to_host()[0]))
    return out.copy_to_host()


def launch_split(
    q: Any,
    kind: int,
    param: int,
    bits: int,
    zero: Any,
    channels: int,
    inner: int,
    *,
    chunk: int | None = None,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
    stream: Any = 0,
) -> tuple[list, Any]:
    """Queue the streams of device symbols ``q`` (size n > 0) in representation ``kind``: returns the
    device streams and, for sparse and delta-nibble, a device int64[1] that will hold the second stream's
    length (non-zeros / escapes; the second and third streams have room for n and are valid up to it),
    else None. ``zero``: the device zero points (sparse only)."""
    _check_threads(threads)
    n = q.shape[0]
    mask = np.int64((1 << bits) - 1)
    g = _grid(n, threads, max_blocks)
    if kind == cpu.DENSE:
        return [q], None
    if kind == cpu.PACKED:
        return [_pack(q, param, n, threads, max_blocks, stream)], None
    if kind in (cpu.DELTA, cpu.DELTA_PACKED, cpu.DELTA_NIBBLE):
        res = cuda.device_array(n, np.uint8, stream=stream)
        K.delta_forward[g, threads, stream](q, np.int64(n), np.int64(param), mask, res)
        if kind == cpu.DELTA:
            return [res], None
        if kind == cpu.DELTA_PACKED:
            return [_pack(res, cpu.packed_slot(bits), n, threads, max_blocks, stream)], None
        chunk = nibble_chunk(n, chunk, min(TARGET_THREADS, max_blocks * threads))
        nchunks = -(-n // chunk)
        counts = cuda.device_array(nchunks, np.int64, stream=stream)
        gc = _grid(nchunks, threads, max_blocks)
        K.nibble_escape_counts[gc, threads, stream](res, np.int64(n), mask, np.int64(chunk), counts)
        total = launch_scan(counts, -1, threads=threads, max_blocks=max_blocks, stream=stream)
        pairs = cuda.device_array(-(-n // 2), np.uint8, stream=stream)
        esc = cuda.device_array(n, np.uint8, stream=stream)
        K.nibble_split[gc, threads, stream](
            res, np.int64(n), mask, np.int64(chunk), counts, pairs, esc
        )
        return [pairs, esc], total
    if kind == cpu.SPARSE:
        rows = -(-n // param)
        counts = cuda.device_array(rows, np.uint8, stream=stream)
        offs = cuda.device_array(rows, np.int64, stream=stream)
        lay = (zero, np.int64(channels), np.int64(inner), np.int64(param))
        gr = _grid(rows, threads, max_blocks)
        K.csr_count_rows[gr, threads, stream](q, np.int64(n), *lay, counts, offs)
        total = launch_scan(offs, -1, threads=threads, max_blocks=max_blocks, stream=stream)
        gaps = cuda.device_array(n, np.uint8, stream=stream)
        vals = cuda.device_array(n, np.uint8, stream=stream)
        K.csr_split[gr, threads, stream](q, np.int64(n), *lay, offs, gaps, vals)
        return [counts, gaps, vals], total
    raise CodecError(f"unknown representation {kind}")


def trim(streams: list, total: Any) -> list:
    """The device streams of :func:`launch_split` cut to their lengths (reads the count back: waits)."""
    if total is None:
        return streams
    m = int(total.copy_to_host()[0])
    return [streams[0], *(s[:m] for s in streams[1:])]


def _host(d: Any) -> np.ndarray:
    return d.copy_to_host() if d.shape[0] else np.empty(0, np.uint8)


def split(
    q: Any,
    kind: int,
    param: int,
    layout: cpu.Layout,
    bits: int = 8,
    *,
    chunk: int | None = None,
    threads: int = K.THREADS,
    max_blocks: int = MAX_BLOCKS,
) -> list[np.ndarray]:
    """``codec.represent.split`` on the GPU: the same streams, byte for byte."""
    cpu.validate(kind, param, bits)
    _check_threads(threads)
    sym = np.ascontiguousarray(q, np.uint8).reshape(-1)
    if sym.size == 0:
        nstreams = {cpu.SPARSE: 3, cpu.DELTA_NIBBLE: 2}.get(kind, 1)
        return [np.empty(0, np.uint8) for _ in range(nstreams)]
    streams, total = launch_split(
        cuda.to_device(sym),
        kind,
        param,
        bits,
        _dev(layout.zero),
        layout.channels,
        layout.inner,
        chunk=chunk,
        threads=threads,
        max_blocks=max_blocks,
    )
    return [_host(s) for s in trim(streams, total)]


def _pack(sym: Any, slot: int, n: int, threads: int, max_blocks: int, stream: Any) -> Any:
    out = cuda.device_array(-(-n // (8 // slot)), np.uint8, stream=stream)
    K.pack[_grid(out.shape[0], threads, max_blocks), threads, stream](
        sym, np.int64(slot), np.int64(n), out
    )
    return out
