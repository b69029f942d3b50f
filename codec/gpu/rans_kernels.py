"""numba-cuda kernels for order-0 rANS streams, bit-exact with ``codec/csrc/rans_encode.c``/``rans_decode.c``.

A stream payload is ``u32 block sizes`` then the blocks; a block is 32 final lane states (u32) then its
16-bit renormalization words in decoder read order. Symbol i of a block belongs to lane i % 32 and step
i / 32. One warp codes one block; the warps of a CTA share the tables, built in shared memory from the
frequencies. Launch order: ``block_index`` then ``decode_blocks``; ``encode_many_blocks`` (any number
of streams, a batch's, at once), then ``gather_many`` at the places the host works out from its sizes. Context-modelled streams (several tables, one per channel group and neighbour bucket),
and any number of streams of a batch of frames at once, decode with ``decode_many_blocks``: one launch,
the tables and block index built on the host.

Every integer step is cast back to uint32: numba widens 32-bit arithmetic to 64 bits while the CUDA
simulator wraps NumPy uint32 scalars, so the casts make both compute the same values. Errors go to
``err[0]`` (atomic max of the codes below); no payload length is trusted before a bound check.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

LANES = 32
STATE_BYTES = 4 * LANES
RANS_L = 1 << 16
MAX_PROB_BITS = 15
MAX_SLOTS = 1 << MAX_PROB_BITS
FULL = 0xFFFFFFFF

ERR_INDEX = 1  # the block sizes do not cover the payload exactly
ERR_BLOCK = 2  # a corrupted table or block
ERR_MISSING = 3  # encode: a symbol with zero frequency
ERR_FREQ = 4  # encode: the table does not sum to 2^prob_bits

U32 = np.uint32
U64 = np.uint64
_L = np.uint32(RANS_L)
_LOW16 = np.uint32(0xFFFF)
_ALL = np.uint32(0xFFFFFFFF)
_ZERO = np.uint32(0)

# the argument types the host wrappers launch with (compile tests build PTX for exactly these)
SIGNATURES = {
    "block_index": "void(uint8[::1], int64, int64, int64[::1], int32[::1])",
    "decode_blocks": "void(uint8[::1], int64[::1], uint16[::1], int32, int64, int64, uint8[::1], int32[::1])",
    "encode_many_blocks": (
        "void(uint8[::1], int64[::1], int64[::1], uint16[::1], uint8[::1], int64[::1], int32[::1])"
    ),
    "gather_many": "void(uint8[::1], int64[::1], int64[::1], int64[::1], int64, uint8[::1])",
    "decode_many_blocks": (
        "void(uint8[::1], int64[::1], int64[::1], int64[::1], uint8[::1], uint32[::1], uint8[::1], "
        "uint8[::1], uint8[::1], int32[::1])"
    ),
}


@cuda.jit(device=True)
def rd32(buf, pos):
    """Little-endian u32 at byte ``pos``."""
    return U32(
        U32(buf[pos])
        | U32(U32(buf[pos + 1]) << U32(8))
        | U32(U32(buf[pos + 2]) << U32(16))
        | U32(U32(buf[pos + 3]) << U32(24))
    )


@cuda.jit(device=True)
def wr32(buf, pos, v):
    """Store ``v`` as a little-endian u32 at byte ``pos``."""
    buf[pos] = np.uint8(v & U32(0xFF))
    buf[pos + 1] = np.uint8(U32(v >> U32(8)) & U32(0xFF))
    buf[pos + 2] = np.uint8(U32(v >> U32(16)) & U32(0xFF))
    buf[pos + 3] = np.uint8(U32(v >> U32(24)))


@cuda.jit(device=True)
def warp_inclusive_sum(v, lane):
    """Inclusive prefix sum of ``v`` (int64) over the lanes of a converged warp."""
    for d in (1, 2, 4, 8, 16):
        t = cuda.shfl_up_sync(FULL, v, d)
        if lane >= d:
            v += t
    return v


@cuda.jit(device=True)
def lane_cum(freqs, lane):
    """Lane l owns symbols 8l..8l+7: the cumulative frequency before them, and the table's total."""
    own = np.int64(0)  # shuffles move signed values only
    for k in range(8):
        own += np.int64(freqs[8 * lane + k])
    incl = warp_inclusive_sum(own, lane)
    total = cuda.shfl_sync(FULL, incl, 31)
    return U32(incl - own), U32(total)


@cuda.jit(device=True)
def open_block(buf, off, b, bn, lane, err):
    """Block ``b`` of ``bn`` symbols: (its word count, this lane's final state), checked as the CPU checks
    them (the length at least the states and even, no more words than symbols, inside the payload, every
    state at least L); a negative word count, with ERR_BLOCK set, when the block is corrupted."""
    start = off[b]
    end = off[b + 1]
    length = end - start
    if (
        end > buf.shape[0]
        or length < STATE_BYTES
        or (length - STATE_BYTES) & 1
        or (length - STATE_BYTES) >> 1 > bn
    ):
        if lane == 0:
            cuda.atomic.max(err, 0, ERR_BLOCK)
        return np.int64(-1), _ZERO
    x = rd32(buf, start + 4 * lane)
    if cuda.ballot_sync(FULL, x < _L) != 0:
        if lane == 0:
            cuda.atomic.max(err, 0, ERR_BLOCK)
        return np.int64(-1), _ZERO
    return (length - STATE_BYTES) >> 1, x


@cuda.jit(device=True)
def refill(buf, words, nw, wi, xn, need, below):
    """One decode step's renormalization: the lanes that ``need`` a word take the next ones after the
    ``wi`` used, in lane order (a ballot and popc; reads clamped to the block's last word, as on the CPU,
    so a malformed block reads nothing outside it). Returns the new state and the step's ballot."""
    m = U32(cuda.ballot_sync(FULL, need))
    if need:
        last = nw - 1 if nw > 0 else np.int64(0)
        idx = min(wi + cuda.popc(U32(m & below)), last)
        v = _ZERO
        if nw > 0:
            p = words + 2 * idx
            v = U32(U32(buf[p]) | U32(U32(buf[p + 1]) << U32(8)))
        xn = U32(U32(xn << U32(16)) | v)
    return xn, m


@cuda.jit
def block_index(buf, nblocks, expect, off, err):
    """``off[b]``: byte offset of block b from the u32 sizes at the head of ``buf`` (``off[nblocks]``: the
    end). Sets ERR_INDEX when the sizes do not end exactly at ``expect`` (no check when negative). One warp."""
    lane = cuda.threadIdx.x
    head = 4 * nblocks
    if head > buf.shape[0]:
        if lane == 0:
            cuda.atomic.max(err, 0, ERR_INDEX)
        return
    carry = np.int64(head)
    if lane == 0:
        off[0] = carry
    for base in range(0, nblocks, LANES):
        b = base + lane
        v = np.int64(0)
        if b < nblocks:
            v = np.int64(rd32(buf, 4 * b))
        s = warp_inclusive_sum(v, lane)
        if b < nblocks:
            off[b + 1] = carry + s
        carry += cuda.shfl_sync(FULL, s, 31)
    if lane == 0 and expect >= 0 and carry != expect:
        cuda.atomic.max(err, 0, ERR_INDEX)


@cuda.jit
def decode_blocks(buf, off, freqs, pb, block, n, out, err):
    """Decode block ``blockIdx.x * warps + warp`` of ``n`` symbols (blocks of ``block``) into ``out``.

    Checks as the CPU does: table sums to 2^pb, block length at least the states and even, no more words
    than symbols, states at least L; at the end every word consumed and every lane back at L. Word reads
    are clamped to the block's last word, as on the CPU, so a malformed block reads nothing outside it."""
    tid = cuda.threadIdx.x
    lane = tid & 31
    warp = tid >> 5
    sym_of = cuda.shared.array(MAX_SLOTS, np.uint8)
    fc = cuda.shared.array(256, np.uint32)  # freq << 16 | cumulative frequency
    flag = cuda.shared.array(1, np.int32)
    M = U32(U32(1) << U32(pb))
    if warp == 0:
        cum, total = lane_cum(freqs, lane)
        for k in range(8):
            f = U32(freqs[8 * lane + k])
            fc[8 * lane + k] = U32(U32(f << U32(16)) | cum)
            cum = U32(cum + f)
        if lane == 0:
            flag[0] = 1 if total == M else 0
    cuda.syncthreads()
    if err[0] == ERR_INDEX:  # the CPU reports a bad index before a bad table
        return
    if flag[0] == 0:
        if tid == 0:
            cuda.atomic.max(err, 0, ERR_BLOCK)
        return
    for s in range(
        256
    ):  # every thread walks the symbols; a symbol's slots are split among the threads
        e = fc[s]
        c = np.int64(e & _LOW16)
        for k in range(tid, np.int64(e >> U32(16)), cuda.blockDim.x):
            sym_of[c + k] = np.uint8(s)
    cuda.syncthreads()
    b = np.int64(cuda.blockIdx.x) * (cuda.blockDim.x >> 5) + warp
    if b * block >= n:
        return
    b0 = b * block
    bn = min(block, n - b0)
    nw, x = open_block(buf, off, b, bn, lane, err)
    if nw < 0:
        return
    words = off[b] + STATE_BYTES
    mask = U32(M - U32(1))
    shift = U32(pb)
    below = U32(cuda.lanemask_lt())
    wi = np.int64(0)
    for k in range((bn + LANES - 1) >> 5):
        i = k * LANES + lane
        active = i < bn
        slot = U32(x & mask)
        s = sym_of[slot]
        e = fc[s]
        xn = U32(U32(U32(e >> U32(16)) * U32(x >> shift)) + U32(slot - U32(e & _LOW16)))
        need = active and xn < _L
        xn, m = refill(buf, words, nw, wi, xn, need, below)
        if active:
            x = xn
            out[b0 + i] = s
        wi += cuda.popc(m)
    if cuda.ballot_sync(FULL, x != _L) != 0 or wi != nw:
        if lane == 0:
            cuda.atomic.max(err, 0, ERR_BLOCK)


# the fields of a stream's row in ``encode_many_blocks``'s ``par`` (int64, EPARAMS per stream)
E_SYM, E_N, E_NBLOCKS, E_BLOCK, E_PB, E_FREQ, E_BLK, E_REG, E_CAP = range(9)
EPARAMS = 9


@cuda.jit
def encode_many_blocks(sym, cta, par, freqs, scratch, sizes, err):
    """Encode many order-0 streams in one launch: warp ``w`` of CTA ``c`` encodes block
    ``cta[2c + 1] + w`` of stream ``cta[2c]``, whose row of ``par`` (``E_*``) places it: its symbols
    ``sym[E_SYM:]``, its 256 frequencies ``freqs[E_FREQ:]``, its blocks' scratch regions
    ``[E_REG + b * cap, E_REG + (b + 1) * cap)`` and their byte sizes ``sizes[E_BLK + b]``. Errors go
    to ``err[stream]``.

    The steps run backwards, as on the CPU; the lanes that emit a word in a step write it below the
    previous ones in lane order (a ballot and popc), so the words end at the region's end in decoder read
    order and the final states go just below them. Division by the frequency uses a precomputed
    reciprocal (exact for every 32-bit numerator). The CTA's warps share the stream's tables."""
    tid = cuda.threadIdx.x
    lane = tid & 31
    warp = tid >> 5
    cx = np.int64(cuda.blockIdx.x)
    st = cta[2 * cx]
    row = st * EPARAMS
    pb = par[row + E_PB]
    f0 = par[row + E_FREQ]
    table = freqs[f0 : f0 + 256]
    rcp = cuda.shared.array(256, np.uint32)
    xmax = cuda.shared.array(
        256, np.uint32
    )  # emit a word when the state is at least this; 0: absent
    bc = cuda.shared.array(256, np.uint32)  # cumulative frequency | (M - freq) << 16
    sh = cuda.shared.array(256, np.uint32)  # shift 1 | shift 2 << 8
    flag = cuda.shared.array(1, np.int32)
    M = U32(U32(1) << U32(pb))
    if warp == 0:
        cum, total = lane_cum(table, lane)
        for k in range(8):
            s = 8 * lane + k
            f = U32(table[s])
            rcp[s] = _ZERO
            xmax[s] = _ZERO
            bc[s] = _ZERO
            sh[s] = _ZERO
            if f != 0 and total == M:
                lg = U32(0)  # ceil(log2 f), as in the CPU table
                while U32(U32(1) << lg) < f:
                    lg = U32(lg + U32(1))
                num = U64(U64(U64(1) << U64(32)) * U64(U64(U64(1) << U64(lg)) - U64(f)))
                rcp[s] = U32(U64(num // U64(f)) + U64(1))
                xmax[s] = _ALL if f == M else U32(U32(U32(1) << U32(32 - pb)) * f)
                bc[s] = U32(cum | U32(U32(M - f) << U32(16)))
                s1 = lg if lg < U32(1) else U32(1)
                s2 = U32(lg - U32(1)) if lg > U32(1) else _ZERO
                sh[s] = U32(s1 | U32(s2 << U32(8)))
            cum = U32(cum + f)
        if lane == 0:
            flag[0] = 1 if total == M else 0
    cuda.syncthreads()
    if flag[0] == 0:
        if tid == 0:
            cuda.atomic.max(err, st, ERR_FREQ)
        return
    b = cta[2 * cx + 1] + warp
    if b >= par[row + E_NBLOCKS]:
        return
    n = par[row + E_N]
    block = par[row + E_BLOCK]
    cap = par[row + E_CAP]
    b0 = par[row + E_SYM] + b * block
    bn = min(block, n - b * block)
    region = par[row + E_REG] + b * cap
    wpos = cap >> 1  # write position in u16 units from the region's start, moving down
    x = _L
    missing = False
    for k in range(((bn + LANES - 1) >> 5) - 1, -1, -1):
        i = k * LANES + lane
        active = i < bn
        s = sym[b0 + i] if active else np.uint8(0)
        xm = xmax[s]
        if active and xm == _ZERO:
            missing = True
        need = active and x >= xm
        m = U32(cuda.ballot_sync(FULL, need))
        if need:
            p = region + 2 * (wpos - cuda.popc(U32(m >> U32(lane))))
            scratch[p] = np.uint8(x & U32(0xFF))
            scratch[p + 1] = np.uint8(U32(x >> U32(8)) & U32(0xFF))
            x = U32(x >> U32(16))
        if active:
            t = U32(U64(U64(x) * U64(rcp[s])) >> U64(32))
            e = sh[s]
            q = U32(U32(t + U32(U32(x - t) >> U32(e & U32(0xFF)))) >> U32(e >> U32(8)))
            c = bc[s]
            x = U32(U32(x + U32(c & _LOW16)) + U32(q * U32(c >> U32(16))))
        wpos -= cuda.popc(m)
    wr32(scratch, region + 2 * wpos - STATE_BYTES + 4 * lane, x)
    if lane == 0:
        sizes[par[row + E_BLK] + b] = cap - 2 * wpos + STATE_BYTES
    if cuda.ballot_sync(FULL, missing) != 0 and lane == 0:
        cuda.atomic.max(err, st, ERR_MISSING)


@cuda.jit
def gather_many(scratch, src, dst, size, nblocks, out):
    """Copy block ``b``'s ``size[b]`` bytes from ``scratch[src[b]:]`` to ``out[dst[b]:]`` (the places
    worked out, and checked, on the host from the encoder's sizes)."""
    for b in range(cuda.blockIdx.x, nblocks, cuda.gridDim.x):
        s0 = src[b]
        d0 = dst[b]
        for k in range(cuda.threadIdx.x, size[b], cuda.blockDim.x):
            out[d0 + k] = scratch[s0 + k]


# the fields of a stream's row in ``decode_many_blocks``'s ``par`` (int64, PARAMS per stream)
(P_OFF, P_NBLOCKS, P_BLOCK, P_N, P_PB, P_OK, P_SYM, P_FC, P_GROUP, P_CHANNELS, P_INNER, P_MULT,
 P_NBUCKETS, P_NB_DIST, P_NBMAP, P_OUT) = range(16)  # fmt: skip
PARAMS = 16


@cuda.jit
def decode_many_blocks(buf, off, cta, par, sym_tab, fc_tab, group, nbmap, out, err):
    """Decode many rANS streams in one launch: warp ``w`` of CTA ``c`` decodes block ``cta[2c + 1] + w``
    of stream ``cta[2c]``, whose row of ``par`` (``P_*``) places it in the shared arrays: its block byte
    offsets ``off[P_OFF:]`` (absolute in ``buf``, built and checked on the host), its tables
    (``sym_tab[P_SYM + (t << pb) + slot]`` the symbol of a slot, ``fc_tab[P_FC + t * 256 + s]``
    freq << 16 | cumulative; ``P_OK`` 0 when one neither sums to 2^pb nor is empty), its context (symbol
    i takes table ``group[P_GROUP + ((i * mult) // inner) % channels] * nbuckets + nbmap[P_NBMAP + block
    symbol i - nb_dist]``, as ``csrc/contexts.c`` defines them; an order-0 stream is one table, channels
    1, no neighbour) and its symbols (``out[P_OUT:]``). Errors go to ``err[stream]``. A symbol that lands
    in an empty table is a corrupted block, as on the CPU. An order-0 stream's table is copied to shared
    memory first, for the CTA's warps; a context stream's tables (up to 2^15 slots each) are read from
    global memory. Neighbours were decoded by this warp at earlier steps (nb_dist >= 32): each step ends
    at a warp barrier, so later steps read them from ``out``."""
    tid = cuda.threadIdx.x
    lane = tid & 31
    warp = tid >> 5
    c = np.int64(cuda.blockIdx.x)
    st = cta[2 * c]
    row = st * PARAMS
    pb = par[row + P_PB]
    sbase = par[row + P_SYM]
    fbase = par[row + P_FC]
    channels = par[row + P_CHANNELS]
    nb_dist = par[row + P_NB_DIST]
    # one table (order-0): the CTA's warps read it from shared memory, as decode_blocks does
    one = channels == 1 and nb_dist == 0
    sym_sh = cuda.shared.array(MAX_SLOTS, np.uint8)
    fc_sh = cuda.shared.array(256, np.uint32)
    if one:
        for k in range(tid, np.int64(1) << pb, cuda.blockDim.x):
            sym_sh[k] = sym_tab[sbase + k]
        for k in range(tid, 256, cuda.blockDim.x):
            fc_sh[k] = fc_tab[fbase + k]
    cuda.syncthreads()
    b = cta[2 * c + 1] + warp
    if b >= par[row + P_NBLOCKS]:
        return
    if par[row + P_OK] == 0:
        if warp == 0 and lane == 0:
            cuda.atomic.max(err, st, ERR_BLOCK)
        return
    block = par[row + P_BLOCK]
    n = par[row + P_N]
    inner = par[row + P_INNER]
    mult = par[row + P_MULT]
    nbuckets = par[row + P_NBUCKETS]
    gbase = par[row + P_GROUP]
    mbase = par[row + P_NBMAP]
    obase = par[row + P_OUT]
    b0 = b * block
    bn = min(block, n - b0)
    ob = obase + b0
    nw, x = open_block(buf, off[par[row + P_OFF] :], b, bn, lane, err[st:])
    if nw < 0:
        return
    words = off[par[row + P_OFF] + b] + STATE_BYTES
    M = U32(U32(1) << U32(pb))
    mask = U32(M - U32(1))
    shift = U32(pb)
    below = U32(cuda.lanemask_lt())
    wi = np.int64(0)
    for k in range((bn + LANES - 1) >> 5):
        i = k * LANES + lane
        active = i < bn
        t = np.int64(0)
        if active:
            if channels > 1:
                t = np.int64(group[gbase + (((b0 + i) * mult) // inner) % channels]) * nbuckets
            if nb_dist > 0 and i >= nb_dist:
                t += np.int64(nbmap[mbase + out[ob + i - nb_dist]])
        slot = U32(x & mask)
        if one:
            s = sym_sh[slot]
            e = fc_sh[s]
        else:
            s = sym_tab[sbase + (t << pb) + slot]
            e = fc_tab[fbase + t * 256 + s]
        if cuda.ballot_sync(FULL, active and U32(e >> U32(16)) == _ZERO) != 0:
            if lane == 0:  # an empty context table
                cuda.atomic.max(err, st, ERR_BLOCK)
            return
        xn = U32(U32(U32(e >> U32(16)) * U32(x >> shift)) + U32(slot - U32(e & _LOW16)))
        xn, m = refill(buf, words, nw, wi, xn, active and xn < _L, below)
        if active:
            x = xn
            out[ob + i] = s
        wi += cuda.popc(m)
        cuda.syncwarp(FULL)  # this step's symbols are the neighbours of later steps
    if cuda.ballot_sync(FULL, x != _L) != 0 or wi != nw:
        if lane == 0:
            cuda.atomic.max(err, st, ERR_BLOCK)
