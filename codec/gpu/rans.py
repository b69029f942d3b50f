"""Host side of the GPU rANS kernels: launches on device arrays, and NumPy-in/NumPy-out wrappers that read
and write exactly the CPU's stream payloads (``codec.rans``). Order-0 streams (one frequency table) encode
and decode; context-modelled streams (a table per channel group and neighbour bucket) decode."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from .. import rans as cpu_rans
from ..contexts import ORDER0, ContextSpec
from ..errors import CodecError
from . import rans_kernels as K
from .sync import synchronize

WARPS = 4  # rANS blocks (warps) per CTA: they share one copy of the tables
_MESSAGES = {
    K.ERR_INDEX: "stream block index does not match the stream length",
    K.ERR_BLOCK: "corrupted rANS block",
    K.ERR_MISSING: "rans_encode: a symbol has zero frequency in its context",
    K.ERR_FREQ: "rans_encode: frequencies do not sum to 2^prob_bits",
}


def _check(prob_bits: int, block_log2: int, n: int) -> None:
    if not 8 <= prob_bits <= K.MAX_PROB_BITS or not 5 <= block_log2 <= 24 or n < 0:
        raise CodecError("rANS parameters out of range")


def _table(freqs: Any) -> np.ndarray:
    f = np.ascontiguousarray(freqs, np.uint16).reshape(-1)
    if f.size != 256:
        raise NotImplementedError("codec.gpu codes order-0 streams (one table) only, so far")
    return f


def raise_for(code: int) -> None:
    """Raise the CPU's CodecError for an error code from the kernels (0: nothing)."""
    if code:
        raise CodecError(_MESSAGES.get(code, "corrupted rANS stream"))


def launch_decode(
    payload: Any,
    n: int,
    freqs: Any,
    prob_bits: int,
    block_log2: int,
    out: Any,
    err: Any,
    *,
    warps: int = WARPS,
    stream: Any = 0,
) -> None:
    """Queue the decode of ``n`` symbols (n > 0) from a device payload into device ``out``; errors go to
    device ``err`` (int32[1], zeroed by the caller). Nothing is synchronized."""
    nblocks = cpu_rans.nblocks_for(n, block_log2)
    off = cuda.device_array(nblocks + 1, np.int64, stream=stream)
    K.block_index[1, K.LANES, stream](
        payload, np.int64(nblocks), np.int64(payload.shape[0]), off, err
    )
    grid = (nblocks + warps - 1) // warps
    K.decode_blocks[grid, warps * K.LANES, stream](
        payload, off, freqs, np.int32(prob_bits), np.int64(1 << block_log2), np.int64(n), out, err
    )


def ctx_tables(freqs: Any, prob_bits: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """The decode tables of a context-modelled stream, built on the host: per table the symbol of each of
    the 2^pb slots and ``freq << 16 | cumulative`` per symbol, and whether every table sums to 2^pb or is
    empty (as the CPU decoder requires)."""
    f = np.ascontiguousarray(freqs, np.uint16).reshape(-1, 256).astype(np.int64)
    slots = 1 << prob_bits
    sums = f.sum(axis=1)
    ok = bool(np.all((sums == slots) | (sums == 0)))
    cum = np.cumsum(f, axis=1) - f
    fc = ((f << 16) | cum).astype(np.uint32).reshape(-1)
    sym = np.zeros((f.shape[0], slots), np.uint8)
    if ok:
        alphabet = np.arange(256, dtype=np.uint8)
        for t in np.flatnonzero(sums):
            sym[t] = np.repeat(alphabet, f[t])
    return sym.reshape(-1), fc, ok


def ctx_args(ctx: ContextSpec) -> tuple[np.ndarray, int, int, int, int, int, np.ndarray]:
    """(group map, channels, inner, mult, buckets, neighbour distance, symbol -> bucket) as the kernel takes
    them: channels 1 without a group map, one bucket without a neighbour (``csrc/contexts.c``)."""
    grouped = ctx.group is not None and ctx.channels > 1
    group = np.ascontiguousarray(ctx.group if grouped else np.zeros(1), np.uint8)
    nbuckets = ctx.nbuckets if ctx.nb_dist else 1
    d = np.abs(np.arange(256) - ctx.nb_ref)
    if not ctx.nb_dist:
        nbmap = np.zeros(256, np.uint8)
    elif nbuckets == 2:
        nbmap = (d > 0).astype(np.uint8)
    else:
        nbmap = ((d > 0).astype(np.uint8) + (d > 2) + (d > 8)).astype(np.uint8)
    channels = ctx.channels if grouped else 1
    return group, channels, ctx.inner, ctx.mult, nbuckets, ctx.nb_dist, nbmap


def block_offsets(buf: np.ndarray, nblocks: int) -> np.ndarray:
    """The absolute byte offsets of a payload's ``nblocks`` blocks and its end (``nblocks + 1``), from
    the u32 sizes at its head, checked as the CPU checks them: CodecError when they do not end exactly
    at the payload's end."""
    head = 4 * nblocks
    if head > buf.size:
        raise_for(K.ERR_INDEX)
    sizes = np.frombuffer(buf[:head].tobytes(), "<u4").astype(np.int64)
    off = np.empty(nblocks + 1, np.int64)
    off[0] = head
    np.cumsum(sizes, out=off[1:])
    off[1:] += head
    if off[-1] != buf.size:
        raise_for(K.ERR_INDEX)
    return off


class ManyDecode:
    """Streams gathered for one ``decode_many_blocks`` launch: :meth:`add` each (host payload, already
    checked for an empty stream), then :meth:`launch` them all into one symbol buffer."""

    def __init__(self, warps: int = WARPS) -> None:
        self.warps = warps
        self.payloads: list[np.ndarray] = []
        self.rows: list[list[int]] = []
        self.ctas: list[tuple[int, int]] = []
        self.offs: list[np.ndarray] = []
        self.syms: list[np.ndarray] = []
        self.fcs: list[np.ndarray] = []
        self.groups: list[np.ndarray] = []
        self.nbmaps: list[np.ndarray] = []
        self._at = {"buf": 0, "off": 0, "sym": 0, "fc": 0, "group": 0, "nbmap": 0}

    def __len__(self) -> int:
        return len(self.rows)

    def _put(self, key: str, items: list[np.ndarray], a: np.ndarray) -> int:
        base = self._at[key]
        items.append(a)
        self._at[key] = base + a.size
        return base

    def add(
        self,
        buf: np.ndarray,
        n: int,
        freqs: Any,
        prob_bits: int,
        block_log2: int,
        ctx: ContextSpec,
        out_at: int,
    ) -> int:
        """Queue the decode of ``n`` > 0 symbols from host payload ``buf`` into the symbol buffer at
        ``out_at``; returns the stream's index (its error slot). CodecError here for a bad index."""
        nblocks = cpu_rans.nblocks_for(n, block_log2)
        off = block_offsets(buf, nblocks) + self._at["buf"]
        sym, fc, ok = ctx_tables(freqs, prob_bits)
        group, channels, inner, mult, nbuckets, nb_dist, nbmap = ctx_args(ctx)
        k = len(self.rows)
        row = [0] * K.PARAMS
        row[K.P_OFF] = self._put("off", self.offs, off)
        row[K.P_NBLOCKS], row[K.P_BLOCK], row[K.P_N] = nblocks, 1 << block_log2, n
        row[K.P_PB], row[K.P_OK] = prob_bits, int(ok)
        row[K.P_SYM] = self._put("sym", self.syms, sym.reshape(-1))
        row[K.P_FC] = self._put("fc", self.fcs, fc)
        row[K.P_GROUP] = self._put("group", self.groups, group)
        row[K.P_CHANNELS], row[K.P_INNER], row[K.P_MULT] = channels, inner, mult
        row[K.P_NBUCKETS], row[K.P_NB_DIST] = nbuckets, nb_dist
        row[K.P_NBMAP] = self._put("nbmap", self.nbmaps, nbmap)
        row[K.P_OUT] = out_at
        self._put("buf", self.payloads, buf)
        self.rows.append(row)
        self.ctas.extend((k, first) for first in range(0, nblocks, self.warps))
        return k

    def launch(self, out: Any, stream: Any = 0) -> Any:
        """One launch decoding every queued stream into device ``out``; returns the device error codes
        (int32, one per stream; read them after the stream is synchronized). Nothing is synchronized."""
        err = cuda.to_device(np.zeros(max(len(self.rows), 1), np.int32), stream=stream)
        if not self.rows:
            return err

        def dev(items: list[np.ndarray], dtype: Any) -> Any:
            return cuda.to_device(np.ascontiguousarray(np.concatenate(items), dtype), stream=stream)

        K.decode_many_blocks[len(self.ctas), self.warps * K.LANES, stream](
            dev(self.payloads, np.uint8),
            dev(self.offs, np.int64),
            cuda.to_device(np.asarray(self.ctas, np.int64).reshape(-1), stream=stream),
            cuda.to_device(np.asarray(self.rows, np.int64).reshape(-1), stream=stream),
            dev(self.syms, np.uint8),
            dev(self.fcs, np.uint32),
            dev(self.groups, np.uint8),
            dev(self.nbmaps, np.uint8),
            out,
            err,
        )
        return err


class ManyEncode:
    """Order-0 streams gathered for one ``encode_many_blocks`` launch: :meth:`add` each (host or device
    symbols and its normalized table), then :meth:`run` them all: one encode launch, one read-back of
    the block sizes, one ``gather_many`` launch and one copy of the payloads to the host."""

    def __init__(self, warps: int = WARPS) -> None:
        self.warps = warps
        self.streams: list[tuple[Any, np.ndarray, int, int]] = []  # (symbols, freqs, pb, block_log2)

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, symbols: Any, freqs: Any, prob_bits: int, block_log2: int) -> int:
        """Queue a stream of one or more symbols; returns its index in :meth:`run`'s payloads."""
        n = symbols.shape[0]
        _check(prob_bits, block_log2, n)
        if n == 0:
            raise ValueError("an empty stream is written by the host")
        self.streams.append((symbols, _table(freqs), prob_bits, block_log2))
        return len(self.streams) - 1

    def _symbols(self, stream: Any) -> Any:
        """Every stream's symbols, one after the other, in one device buffer."""
        syms = [s for s, *_ in self.streams]
        if all(isinstance(s, np.ndarray) for s in syms):  # host symbols: one upload
            return cuda.to_device(np.concatenate(syms).astype(np.uint8, copy=False), stream)
        out = cuda.device_array(sum(s.shape[0] for s in syms), np.uint8, stream=stream)
        at = 0
        for s in syms:
            n = s.shape[0]
            if isinstance(s, np.ndarray):
                s = np.ascontiguousarray(s, np.uint8)
            out[at : at + n].copy_to_device(s, stream=stream)
            at += n
        return out

    def run(self, stream: Any = 0) -> list[bytes]:
        """Every queued stream's payload: exactly the CPU encoder's bytes, or the CPU's CodecError (the
        first stream's in order that reported one)."""
        if not self.streams:
            return []
        rows, ctas, at, blk, reg = [], [], 0, 0, 0
        for k, (sym, _, pb, blog) in enumerate(self.streams):
            n, block = sym.shape[0], 1 << blog
            nblocks = cpu_rans.nblocks_for(n, blog)
            cap = cpu_rans.STATE_BYTES + 2 * min(block, n)
            row = [0] * K.EPARAMS
            row[K.E_SYM], row[K.E_N], row[K.E_NBLOCKS], row[K.E_BLOCK] = at, n, nblocks, block
            row[K.E_PB], row[K.E_FREQ], row[K.E_BLK], row[K.E_REG] = pb, 256 * k, blk, reg
            row[K.E_CAP] = cap
            rows.append(row)
            ctas.extend((k, first) for first in range(0, nblocks, self.warps))
            at, blk, reg = at + n, blk + nblocks, reg + nblocks * cap
        scratch = cuda.device_array(reg, np.uint8, stream=stream)
        sizes = cuda.device_array(blk, np.int64, stream=stream)
        err = cuda.to_device(np.zeros(len(rows), np.int32), stream=stream)
        K.encode_many_blocks[len(ctas), self.warps * K.LANES, stream](
            self._symbols(stream),
            cuda.to_device(np.asarray(ctas, np.int64).reshape(-1), stream=stream),
            cuda.to_device(np.asarray(rows, np.int64).reshape(-1), stream=stream),
            cuda.to_device(np.concatenate([f for _, f, *_ in self.streams]), stream=stream),
            scratch,
            sizes,
            err,
        )
        synchronize(stream)  # a copy on a stream is asynchronous: read what it brings after this
        for code in err.copy_to_host(stream=stream):
            raise_for(int(code))
        size = sizes.copy_to_host(stream=stream)
        synchronize(stream)
        return self._gather(rows, scratch, size, stream)

    def _gather(self, rows: list[list[int]], scratch: Any, size: np.ndarray, stream: Any) -> list[bytes]:
        """The payloads from the blocks' scratch regions: the blocks packed back to back on the device
        (one launch), each payload's u32 block sizes written ahead of its blocks on the host."""
        src = []
        for row in rows:
            first, nblocks, cap = row[K.E_BLK], row[K.E_NBLOCKS], row[K.E_CAP]
            own = size[first : first + nblocks]
            if np.any(own < cpu_rans.STATE_BYTES) or np.any(own > cap):
                raise_for(K.ERR_BLOCK)
            regions = row[K.E_REG] + cap * np.arange(nblocks, dtype=np.int64)
            src.append(regions + cap - own)
        starts = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
        out = cuda.device_array(int(starts[-1]), np.uint8, stream=stream)
        total = size.shape[0]
        K.gather_many[min(total, 65535), 128, stream](
            scratch,
            cuda.to_device(np.concatenate(src).astype(np.int64), stream=stream),
            cuda.to_device(starts[:-1], stream=stream),
            cuda.to_device(size, stream=stream),
            np.int64(total),
            out,
        )
        host = out.copy_to_host(stream=stream)
        synchronize(stream)
        payloads = []
        for row in rows:
            first, last = row[K.E_BLK], row[K.E_BLK] + row[K.E_NBLOCKS]
            head = size[first:last].astype("<u4").tobytes()
            payloads.append(head + host[starts[first] : starts[last]].tobytes())
        return payloads


def capacity(n: int, block_log2: int) -> int:
    """Bytes an encoded payload of ``n`` symbols may take at most (as on the CPU)."""
    nblocks = cpu_rans.nblocks_for(n, block_log2)
    return 4 * nblocks + nblocks * cpu_rans.STATE_BYTES + 2 * n


def _empty_stream(plen: int, f: np.ndarray, prob_bits: int) -> None:
    """The CPU's checks of a zero-symbol stream: no bytes, and a table that is empty or sums to 2^pb."""
    if plen:
        raise_for(K.ERR_INDEX)
    total = int(f.sum(dtype=np.int64))
    if total not in (0, 1 << prob_bits):
        raise_for(K.ERR_BLOCK)


def decode(
    payload: bytes | memoryview | np.ndarray,
    n: int,
    freqs: Any,
    prob_bits: int,
    block_log2: int = cpu_rans.DEFAULT_BLOCK_LOG2,
    ctx: ContextSpec = ORDER0,
    *,
    warps: int = WARPS,
) -> np.ndarray:
    """``codec.rans.decode`` on the GPU (order-0 or context-modelled): the same symbols, or the same
    CodecError."""
    _check(prob_bits, block_log2, n)
    buf = np.frombuffer(payload, np.uint8) if not isinstance(payload, np.ndarray) else payload
    if ctx.ntables != 1:
        ctx.validate(n)
        f = np.ascontiguousarray(freqs, np.uint16).reshape(-1)
        if f.size != 256 * ctx.ntables:
            raise CodecError("one frequency table per context is needed")
        if n == 0:  # the CPU's checks: no bytes, then tables that sum to 2^pb or are empty
            if buf.size:
                raise_for(K.ERR_INDEX)
            if not ctx_tables(f, prob_bits)[2]:
                raise_for(K.ERR_BLOCK)
            return np.empty(0, np.uint8)
        if buf.size == 0:
            raise_for(K.ERR_INDEX)
        job = ManyDecode(warps)
        job.add(buf, n, f, prob_bits, block_log2, ctx, 0)
        out = cuda.device_array(n, np.uint8)
        err = job.launch(out)
        raise_for(int(err.copy_to_host()[0]))
        return out.copy_to_host()
    f = _table(freqs)
    if n == 0:
        _empty_stream(buf.size, f, prob_bits)
        return np.empty(0, np.uint8)
    if buf.size == 0:
        raise_for(K.ERR_INDEX)
    err = cuda.to_device(np.zeros(1, np.int32))
    out = cuda.device_array(n, np.uint8)
    launch_decode(
        cuda.to_device(buf), n, cuda.to_device(f), prob_bits, block_log2, out, err, warps=warps
    )
    raise_for(int(err.copy_to_host()[0]))
    return out.copy_to_host()


def encode(
    symbols: Any,
    freqs: Any,
    prob_bits: int,
    block_log2: int = cpu_rans.DEFAULT_BLOCK_LOG2,
    *,
    warps: int = WARPS,
) -> bytes:
    """``codec.rans.encode`` of an order-0 stream on the GPU: exactly the CPU's bytes."""
    sym = np.ascontiguousarray(symbols, np.uint8).reshape(-1)
    _check(prob_bits, block_log2, sym.size)
    f = _table(freqs)
    if sym.size == 0:
        if int(f.sum(dtype=np.int64)) not in (0, 1 << prob_bits):
            raise_for(K.ERR_FREQ)
        return b""
    job = ManyEncode(warps)
    job.add(sym, f, prob_bits, block_log2)
    return job.run()[0]
