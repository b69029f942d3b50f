"""The cost model: predict the coded size of each candidate (representation, row width, context tables)
from cheap statistics and pick the smallest.

A stream's predicted size is the ideal rANS code length under the normalized tables that would be written
(sum of count * (prob_bits - log2 freq)), plus the serialized tables, plus per-block overhead (final lane
states and the block size). Levels 1-5 cost every representation order-0 from samples: the dense stream
from the quantizer's histogram (sampled at level 1), the bit-packed stream and the residuals at every
prediction distance from one pass over 16-64 Ki symbols in 1 Ki chunks (``LEVEL_PLANS``); from level 4 a
neighbor context, from level 5 channel groups. Levels 6+ measure every context on every symbol.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from . import _kernels, rans, represent, tables
from .contexts import ORDER0, ContextSpec, channel_order, group_channels, group_counts
from .represent import (
    DELTA,
    DELTA_NIBBLE,
    DELTA_PACKED,
    DENSE,
    KIND_NAMES,
    MAX_WIDTH,
    PACKED,
    SPARSE,
    Layout,
    pack_slot,
    residuals,
)

STORED, RANS = 0, 1
LEAN_MAX_LEVEL = 6  # levels below this ...
LEAN_MIN_SYMBOLS = 4096  # ... cost tensors of at least this many symbols from samples
STREAM_HEADER_BYTES = 24  # approximate per-stream header (lengths, coding, context description)
MIN_LEVEL, MAX_LEVEL, DEFAULT_LEVEL = 1, 9, 3
SAMPLE_CHUNK = 255 * 64  # sampled statistics take whole chunks of this many symbols
SAMPLE_TARGET = 1 << 16


@dataclass
class StreamPlan:
    """How one stream is coded: stored bytes, or rANS with context tables."""

    coding: int
    ctx: ContextSpec = ORDER0
    prob_bits: int = tables.DEFAULT_PROB_BITS
    predicted_bytes: float = 0.0


@dataclass
class Candidate:
    """One way to code a tensor's symbols, with its predicted size."""

    kind: int
    param: int = 0
    streams: list[StreamPlan] = field(default_factory=list)
    predicted_bytes: float = 0.0

    @property
    def name(self) -> str:
        label = KIND_NAMES[self.kind]
        if self.kind == SPARSE:
            label += f"(w={self.param})"
        elif self.kind == PACKED:
            label += f"({8 // self.param}/byte)"
        elif self.kind in (DELTA, DELTA_PACKED, DELTA_NIBBLE):
            label += f"(d={self.param})"
        ctxs = ",".join(s.ctx.name if s.coding == RANS else "stored" for s in self.streams)
        return f"{label}[{ctxs}]"


def block_overhead(n: int, block_log2: int) -> int:
    return rans.nblocks_for(n, block_log2) * (rans.STATE_BYTES + 4)


def stream_cost(counts: np.ndarray, n: int, scale: float, block_log2: int, prob_bits: int) -> float:
    """Predicted bytes of an rANS stream with per-table ``counts`` (sampled, multiplied by ``scale``)."""
    if n == 0:
        return 0.0
    bits, table_bytes = tables.cost(counts, prob_bits)
    return bits * scale / 8 + table_bytes + block_overhead(n, block_log2) + STREAM_HEADER_BYTES


def _order0_plan(n: int, cost: float) -> StreamPlan:
    """An order-0 rANS stream of ``n`` symbols predicted at ``cost`` bytes, or stored bytes if smaller."""
    stored = n + STREAM_HEADER_BYTES
    if stored <= cost:
        return StreamPlan(STORED, predicted_bytes=stored)
    return StreamPlan(RANS, ORDER0, tables.DEFAULT_PROB_BITS, cost)


def best_plan(options: list[tuple[StreamPlan, float]], n: int) -> StreamPlan:
    """Cheapest of the context options for one stream, or stored bytes if that is smaller."""
    plan, cost = min(options, key=lambda o: o[1])
    stored = n + STREAM_HEADER_BYTES
    if stored <= cost:
        return StreamPlan(STORED, predicted_bytes=stored)
    plan.predicted_bytes = cost
    return plan


@dataclass
class TensorInfo:
    """What the cost model knows about a quantized tensor."""

    q: np.ndarray
    # symbol counts (under fast statistics: of sampled chunks, every occurring symbol at least 1); None until
    # needed where the sampled levels cost the representations from their own sample
    hist: np.ndarray | None
    shape: tuple[int, ...]
    bits: int
    layout: Layout  # zero points per quantization channel
    ctx_axis: int | None  # the axis whose channels may get their own tables


def context_axis(shape: tuple[int, ...], quant_axis: int | None) -> int | None:
    """Axis for per-channel tables: the quantization axis, else channels of NCHW / hidden dim of (B, T, D)."""
    if quant_axis is not None:
        return quant_axis
    if len(shape) == 4:
        return 1
    if len(shape) in (2, 3):
        return len(shape) - 1
    return None


def neighbor_distances(shape: tuple[int, ...], block: int, mult: int = 1) -> list[int]:
    """Candidate 'row above' distances (in symbols): the last dim, the last two dims, ..."""
    out = []
    span = 1
    for dim in reversed(shape[1:] if len(shape) > 1 else shape):
        span *= int(dim)
        if span % mult == 0 and rans.LANES <= span // mult < block // 4 and span // mult not in out:
            out.append(span // mult)
        if len(out) == 2:
            break
    return out


def delta_distances(shape: tuple[int, ...]) -> list[int]:
    """Prediction distances: the element to the left, the row above, the same place one channel back."""
    out: list[int] = []
    span = 1
    n = math.prod(shape)
    for k, dim in enumerate(reversed(shape)):
        if k == 0 and dim > 1:
            out.append(1)
        span *= int(dim)
        if 1 < span < n and span <= 0xFFFF and span not in out:
            out.append(span)
        if len(out) == 3:
            break
    return out


def sparse_widths(shape: tuple[int, ...], level: int) -> list[int]:
    """Candidate CSR row widths: shape-aligned sizes first, then a grid."""
    widths: list[int] = []
    span = 1
    for dim in reversed(shape):
        span *= int(dim)
        if 8 <= span <= MAX_WIDTH:
            widths.append(span)
    grid = [255, 128, 64] if level < 6 else [255, 192, 128, 96, 64, 48, 32, 16]
    for w in grid:
        if w not in widths:
            widths.append(w)
    return widths[: (3 if level < 6 else len(widths))]


def _group_options(
    info: TensorInfo, sym: np.ndarray, level: int, block_log2: int
) -> list[tuple[StreamPlan, float]]:
    """Per-channel table groups (channels ordered by their mean symbol, cut into g runs): exact counts."""
    axis = info.ctx_axis
    if axis is None:
        return []
    channels = int(info.shape[axis])
    inner = math.prod(info.shape[axis + 1 :]) or 1
    if not 4 <= channels <= 4096:
        return []
    ch_counts = np.empty((channels, 256), np.uint32)
    _kernels.channel_histogram(sym, channels, inner, ch_counts)
    order = channel_order(ch_counts)
    pb = tables.DEFAULT_PROB_BITS
    options = []
    for g in (4, 16) if level < 6 else (2, 4, 8, 16, 32):
        if g < channels:
            group = group_channels(order, g)
            spec = ContextSpec(channels=channels, inner=inner, group=group)
            counts = group_counts(ch_counts, group, g)
            options.append(
                (StreamPlan(RANS, spec, pb), stream_cost(counts, sym.size, 1.0, block_log2, pb))
            )
    return options


def _dense_options(
    info: TensorInfo, sym: np.ndarray, level: int, block_log2: int, mult: int, zero_ref: int
) -> list[tuple[StreamPlan, float]]:
    """Levels 1 and 6+ (and tensors too small to sample): order-0 from the histogram; at 6+, every
    neighbor context and channel grouping measured on all of ``sym``."""
    n = sym.size
    block = 1 << block_log2
    pb = tables.DEFAULT_PROB_BITS
    hist_scale = 1.0
    if mult == 1:
        counts0 = info.hist  # (possibly sampled: then scaled to the tensor)
        hist_scale = n / max(int(counts0.sum()), 1)
    else:
        counts0 = np.empty(256, np.uint32)
        _kernels.histogram(sym, counts0)
    options = [(StreamPlan(RANS, ORDER0, pb), stream_cost(counts0, n, hist_scale, block_log2, pb))]
    if level < 2 or n < 4096:
        return options

    def measure(spec: ContextSpec) -> None:
        counts = np.empty((spec.ntables, 256), np.uint32)
        _kernels.context_histogram(sym, spec.kernel_spec(), block, counts, 1)
        options.append((StreamPlan(RANS, spec, pb), stream_cost(counts, n, 1.0, block_log2, pb)))

    for d in neighbor_distances(info.shape, block, mult)[:2]:
        for nb in (2, 4):
            measure(ContextSpec(nb_dist=d, nbuckets=nb, nb_ref=zero_ref))
    groups = _group_options(info, sym, level, block_log2) if mult == 1 else []
    options += groups
    if groups:
        best_nb = [o for o in options if o[0].ctx.nb_dist]
        if best_nb:
            g = min(groups, key=lambda o: o[1])[0].ctx
            nbs = min(best_nb, key=lambda o: o[1])[0].ctx
            measure(
                ContextSpec(
                    channels=g.channels,
                    inner=g.inner,
                    group=g.group,
                    nb_dist=nbs.nb_dist,
                    nbuckets=nbs.nbuckets,
                    nb_ref=zero_ref,
                )
            )
    return options


def candidates(
    info: TensorInfo, level: int, block_log2: int, widths: list[int] | None = None
) -> list[Candidate]:
    """Every candidate the level considers, each with its predicted size (``widths`` overrides the sparse
    row widths, e.g. for an exhaustive check)."""
    q, n = info.q, info.q.size
    if level < LEAN_MAX_LEVEL and n >= LEAN_MIN_SYMBOLS:
        lean, dense_sample = _lean_candidates(info, level, block_log2)
        hist = info.hist if info.hist is not None else dense_sample
        return lean + _sparse_candidates(info, hist, level, block_log2, widths)
    if info.hist is None:
        info.hist = np.empty(256, np.uint32)
        _kernels.histogram(q, info.hist)
    zero_ref = int(np.argmax(info.hist))
    out: list[Candidate] = []
    options = _dense_options(info, q, level, block_log2, 1, zero_ref)
    for plan in _distinct(options, n):
        out.append(Candidate(DENSE, 0, [plan], plan.predicted_bytes))

    slot = pack_slot(info.bits)
    if slot is not None and slot < 8 and n >= 2:
        packed_sym = np.empty(-(-n // (8 // slot)), np.uint8)
        _kernels.pack(q, slot, packed_sym)
        packed_hist = np.empty(256, np.uint32)
        _kernels.histogram(packed_sym, packed_hist)
        ref = int(np.argmax(packed_hist))
        options = _dense_options(info, packed_sym, level, block_log2, 8 // slot, ref)
        for plan in _distinct(options, packed_sym.size):
            out.append(Candidate(PACKED, slot, [plan], plan.predicted_bytes))

    if level >= 2 and n >= 4096:
        for d in delta_distances(info.shape):
            res = residuals(q, d, info.bits)
            res_hist = np.empty(256, np.uint32)
            _kernels.histogram(res, res_hist)
            sub = TensorInfo(res, res_hist, info.shape, info.bits, info.layout, None)
            options = _dense_options(sub, res, level, block_log2, 1, int(np.argmax(res_hist)))
            for plan in _distinct(options, n):
                out.append(Candidate(DELTA, d, [plan], plan.predicted_bytes))
            if info.bits >= represent.NIBBLE_MIN_BITS:
                pairs, esc = represent.nibble_split(res, info.bits)
                ph, eh = np.empty(256, np.uint32), np.empty(256, np.uint32)
                _kernels.histogram(pairs, ph)
                _kernels.histogram(esc, eh)
                pb = tables.DEFAULT_PROB_BITS
                npairs, nesc = pairs.size, esc.size
                out.append(
                    _nibble_candidate(
                        d,
                        (npairs, stream_cost(ph, npairs, 1.0, block_log2, pb)),
                        (nesc, stream_cost(eh, nesc, 1.0, block_log2, pb)),
                    )
                )
            if slot is not None and slot < 8:
                per = 8 // slot
                packed_res = represent.pack(res, slot)
                ph = np.empty(256, np.uint32)
                _kernels.histogram(packed_res, ph)
                sub = TensorInfo(packed_res, ph, info.shape, info.bits, info.layout, None)
                options = _dense_options(
                    sub, packed_res, level, block_log2, per, int(np.argmax(ph))
                )
                for plan in _distinct(options, packed_res.size):
                    out.append(Candidate(DELTA_PACKED, d, [plan], plan.predicted_bytes))

    return out + _sparse_candidates(info, info.hist, level, block_log2, widths)


def sparse_zero_share(level: int) -> float:
    """The share of zero-point symbols above which a sampled level weighs sparse rows (level 1: only
    clearly sparse tensors; 6+ always)."""
    return 0.6 if level == 1 else 0.3


def _sparse_candidates(
    info: TensorInfo, hist: np.ndarray, level: int, block_log2: int, widths: list[int] | None
) -> list[Candidate]:
    """CSR rows of a few widths (``hist``: the symbol counts, exact or of a sample)."""
    q, n = info.q, info.q.size
    out: list[Candidate] = []
    lay = info.layout
    counted = max(int(hist.sum()), 1)
    zero_share = float(hist[int(lay.zero[0])]) / counted if lay.channels == 1 else None
    if n >= 64 and (
        zero_share is None or zero_share > sparse_zero_share(level) or level >= 6 or widths
    ):
        widths = widths or sparse_widths(info.shape, level)
        sample, row_step = q, 1
        if level < 6 and lay.channels == 1 and n > SAMPLE_CHUNK * 8:
            # every k-th chunk (chunk = a multiple of every width's row structure is not possible in
            # general; edge rows are a small effect): about SAMPLE_TARGET symbols
            step = max(1, n // SAMPLE_TARGET)
            idx = np.arange(0, n - SAMPLE_CHUNK + 1, SAMPLE_CHUNK * step)
            sample = np.concatenate([q[i : i + SAMPLE_CHUNK] for i in idx])
        stats = _kernels.csr_stats(
            sample, lay.zero, lay.channels, lay.inner, tuple(widths), row_step
        )
        sample_scale = n / sample.size
        vals_hist = None
        for w, (count_hist, gap_hist, nnz) in zip(widths, stats, strict=True):
            rows = -(-n // w)
            scale = sample_scale
            nnz_est = int(round(nnz * scale))
            if vals_hist is None:
                # values do not depend on the width: one histogram of non-zero-point symbols
                vals_hist = _nonzero_hist(info, hist)
            ch = np.frombuffer(count_hist, np.uint32)
            gh = np.frombuffer(gap_hist, np.uint32)
            pb = tables.DEFAULT_PROB_BITS
            plans = [
                best_plan(
                    [(StreamPlan(RANS, ORDER0, pb), stream_cost(ch, rows, scale, block_log2, pb))],
                    rows,
                ),
                best_plan(
                    [
                        (
                            StreamPlan(RANS, ORDER0, pb),
                            stream_cost(gh, nnz_est, scale, block_log2, pb),
                        )
                    ],
                    nnz_est,
                ),
                best_plan(
                    [
                        (
                            StreamPlan(RANS, ORDER0, pb),
                            stream_cost(
                                vals_hist,
                                nnz_est,
                                nnz_est / max(vals_hist.sum(), 1),
                                block_log2,
                                pb,
                            ),
                        )
                    ],
                    nnz_est,
                ),
            ]
            out.append(Candidate(SPARSE, w, plans, sum(p.predicted_bytes for p in plans)))
    return out


@dataclass(frozen=True)
class LevelPlan:
    """What a sampled level (1-5) measures: symbols per representation sample, the neighbor context's
    buckets (0: order-0 only), whether channel groups are costed, and the margin a slower candidate must
    win by."""

    sample: int
    nbuckets: int
    groups: bool
    margin: float


LEVEL_PLANS = {
    1: LevelPlan(1 << 13, 0, False, 0.03),
    2: LevelPlan(1 << 15, 0, False, 0.02),
    3: LevelPlan(1 << 16, 0, False, 0.01),
    4: LevelPlan(1 << 16, 4, False, 0.005),
    5: LevelPlan(1 << 16, 4, True, 0.0025),
}


def _lean_candidates(
    info: TensorInfo, level: int, block_log2: int
) -> tuple[list[Candidate], np.ndarray]:
    """Levels 1-5 on tensors of 4096 symbols or more: each representation (dense, bit-packed, residuals at
    each prediction distance, packed or nibble-paired residuals) costed order-0 (dense from its histogram,
    sampled at level 1; the others from one pass over sampled chunks; every table's cost in one call); from
    level 4 a neighbor context on two or three whole blocks, at 5 channel groups."""
    q, n = info.q, info.q.size
    plan = LEVEL_PLANS[level]
    pb = tables.DEFAULT_PROB_BITS
    slot = pack_slot(info.bits)
    slot = slot if slot is not None and slot < 8 else 0
    distances = delta_distances(info.shape)
    nd = len(distances)
    # small tensors: a third of the symbols (at least 8 Ki) tells the representations apart as well
    starts, chunk = sample_starts(n, min(plan.sample, max(n // 3, 1 << 13)))
    hists = np.empty((2 + (2 if slot else 3) * nd, 256), np.uint32)
    _kernels.family_histograms(
        q, starts, chunk, (1 << info.bits) - 1, slot, np.array(distances, np.int64), hists
    )
    sampled = starts.size * chunk
    dense_sample = hists[0].copy()
    dense_scale = n / sampled
    if info.hist is not None:  # a histogram prepare took: the dense row from it
        hists[0] = info.hist
        dense_scale = n / max(int(info.hist.sum()), 1)
    bits = np.empty(len(hists), np.float64)
    table_bytes = np.empty(len(hists), np.int64)
    _kernels.row_costs(hists, pb, bits, table_bytes)
    # plain floats from here: a few dozen scalar steps, cheaper than NumPy scalars or arrays
    row_bits, row_tables = bits.tolist(), table_bytes.tolist()
    block, per_block = 1 << block_log2, rans.STATE_BYTES + 4

    def cost(row: int, length: int, scale: float) -> float:
        """Predicted bytes of an order-0 stream of ``length`` symbols counted (times ``scale``) in row."""
        if length == 0:
            return 0.0
        blocks = -(-length // block)
        return (
            row_bits[row] * scale / 8 + row_tables[row] + blocks * per_block + STREAM_HEADER_BYTES
        )

    per = 8 // slot if slot else 2
    sampled_per = sampled // per
    packed_len = -(-n // per)
    # (kind, param, symbols per stream symbol, row, scale from counted to all symbols)
    families = [(DENSE, 0, 1, 0, dense_scale)]
    if slot:
        families.append((PACKED, slot, per, 1, packed_len / sampled_per))
    families += [(DELTA, d, 1, 2 + k, n / sampled) for k, d in enumerate(distances)]
    out: list[Candidate] = []
    if slot:
        families += [
            (DELTA_PACKED, d, per, 2 + nd + k, packed_len / sampled_per)
            for k, d in enumerate(distances)
        ]
    else:
        # delta-nibble: the pairs (row) and the escapes (row + nd), two order-0 streams
        escapes = hists[2 + 2 * nd : 2 + 3 * nd].sum(axis=1).tolist()
        for k, d in enumerate(distances):
            row = 2 + nd + k
            nesc = int(round(escapes[k] * n / sampled))
            pair_cost = cost(row, packed_len, packed_len / sampled_per)
            out.append(
                _nibble_candidate(
                    d, (packed_len, pair_cost), (nesc, cost(row + nd, nesc, n / sampled))
                )
            )
    lean = not plan.nbuckets and not plan.groups
    for kind, param, mult, row, scale in families:
        length = packed_len if mult > 1 else n
        if lean:  # one order-0 option: rANS, or stored bytes where those are smaller
            p = _order0_plan(length, cost(row, length, scale))
            out.append(Candidate(kind, param, [p], p.predicted_bytes))
            continue
        options = [(StreamPlan(RANS, ORDER0, pb), cost(row, length, scale))]
        if plan.nbuckets:
            options += _neighbor_options(info, kind, param, mult, hists[row], plan, block_log2)
        if kind == DENSE and plan.groups:
            options += _group_options(info, q, level, block_log2)
        for p in _distinct(options, length):
            out.append(Candidate(kind, param, [p], p.predicted_bytes))
    return out, dense_sample


def _nibble_candidate(
    distance: int, pairs: tuple[int, float], escapes: tuple[int, float]
) -> Candidate:
    """Delta-nibble at ``distance``: two order-0 streams, each given as (symbols, predicted rANS bytes)
    and stored where that is smaller."""
    plans = [_order0_plan(length, cost) for length, cost in (pairs, escapes)]
    return Candidate(DELTA_NIBBLE, distance, plans, sum(p.predicted_bytes for p in plans))


@functools.lru_cache(maxsize=64)
def sample_starts(n: int, target: int, chunk: int = 1024) -> tuple[np.ndarray, int]:
    """Starts of about ``target / chunk`` chunks of ``chunk`` symbols (multiples of 8) spread over ``n``
    symbols: one per stretch of equal length, at an offset within it that a multiplicative hash of its
    index picks (so the sample does not follow the tensor's own periods); every chunk when ``n`` is small."""
    chunk = min(chunk, n // 8 * 8)
    count = max(1, min(target // chunk, n // chunk))
    stretch = n // count
    k = np.arange(count, dtype=np.uint64)
    jitter = ((k * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2**32
    room = max(stretch - chunk, 0)
    starts = np.arange(count, dtype=np.int64) * stretch + (jitter * room).astype(np.int64)
    starts = np.minimum(starts // 8 * 8, (n - chunk) // 8 * 8)
    starts.flags.writeable = False  # cached: shared by every call with the same sizes
    return starts, chunk


def _neighbor_options(
    info: TensorInfo,
    kind: int,
    param: int,
    mult: int,
    hist: np.ndarray,
    plan: LevelPlan,
    block_log2: int,
) -> list[tuple[StreamPlan, float]]:
    """A neighbor context on one representation's stream, counted on two or three whole blocks of it (the
    context looks back inside a block, so a sample of short chunks would not see it)."""
    q, n = info.q, info.q.size
    block = 1 << block_log2
    pb = tables.DEFAULT_PROB_BITS
    length = -(-n // mult)
    stride = max(1, rans.nblocks_for(length, block_log2) // 2)
    sym = q if kind == DENSE else None
    out = []
    for d in neighbor_distances(info.shape, block, mult)[:1]:
        if sym is None:
            sym = represent.split(q, kind, param, info.layout, info.bits)[0]
        spec = ContextSpec(nb_dist=d, nbuckets=plan.nbuckets, nb_ref=int(np.argmax(hist)))
        counts = np.empty((spec.ntables, 256), np.uint32)
        _kernels.context_histogram(sym, spec.kernel_spec(), block, counts, stride)
        counted = sum(min(block, sym.size - b) for b in range(0, sym.size, block * stride))
        out.append(
            (
                StreamPlan(RANS, spec, pb),
                stream_cost(counts, length, length / counted, block_log2, pb),
            )
        )
    return out


def _distinct(options: list[tuple[StreamPlan, float]], n: int) -> list[StreamPlan]:
    """The order-0 plan (fast path) and the best context plan, each against stored bytes."""
    plans = [best_plan([options[0]], n)]
    if len(options) > 1:
        plans.append(best_plan(options[1:], n))
    return plans


def _nonzero_hist(info: TensorInfo, hist: np.ndarray) -> np.ndarray:
    """Histogram of the symbols that differ from their channel's zero point (per tensor: ``hist`` without
    the zero point)."""
    if info.layout.channels == 1:
        h = hist.copy()
        h[int(info.layout.zero[0])] = 0
        return h
    lay = info.layout
    q = info.q.reshape(-1, lay.channels, lay.inner)
    mask = q != lay.zero[None, :, None]
    return np.bincount(q[mask], minlength=256).astype(np.uint32)


@functools.lru_cache(maxsize=64)
def _distance_array(shape: tuple[int, ...]) -> np.ndarray:
    out = np.array(delta_distances(shape), np.int64)
    out.flags.writeable = False  # cached: shared by every call with the same shape
    return out


def lean_choice(info: TensorInfo, level: int, block_log2: int) -> Candidate | None:
    """``choose(info, level, block_log2)[0]`` at the lean levels (1-3) for per-tensor symbols of at least
    LEAN_MIN_SYMBOLS, in one C call (``csrc/costmodel.c``) that costs the same candidates, in the same order
    and with the same arithmetic, without building them; None where :func:`choose` must decide (another
    level, per-channel symbols, or a zero share at which the level weighs sparse rows too)."""
    plan = LEVEL_PLANS.get(level)
    q, n = info.q, info.q.size
    if plan is None or plan.nbuckets or plan.groups or n < LEAN_MIN_SYMBOLS or info.layout.channels != 1:
        return None
    starts, chunk = sample_starts(n, min(plan.sample, max(n // 3, 1 << 13)))
    got = _kernels.lean_choice(
        q,
        info.bits,
        starts,
        chunk,
        _distance_array(info.shape),
        info.hist,
        block_log2,
        int(info.layout.zero[0]),
        sparse_zero_share(level),
    )
    if got is None:
        return None
    kind, param, streams, total = got
    plans = [
        StreamPlan(RANS, ORDER0, tables.DEFAULT_PROB_BITS, cost)
        if coding == RANS
        else StreamPlan(STORED, predicted_bytes=cost)
        for coding, cost in streams
    ]
    return Candidate(kind, param, plans, total)


def speed_margin(level: int) -> float:
    """Relative size gain a slower configuration (contexts, sparse rows) must bring over the fastest one
    (one order-0 stream) before the level takes it: low levels favour speed, 6+ only size."""
    plan = LEVEL_PLANS.get(level)
    return plan.margin if plan else 0.0


def is_fast(c: Candidate) -> bool:
    """One order-0 stream (dense, bit-packed or residuals): the vectorized decode path."""
    return c.kind != SPARSE and all(s.coding == STORED or s.ctx.ntables == 1 for s in c.streams)


def choose(info: TensorInfo, level: int, block_log2: int) -> tuple[Candidate, list[Candidate]]:
    """The chosen candidate and all that were considered. Without a speed margin that is the smallest
    predicted size; otherwise slower candidates must beat the best fast one by the level's margin."""
    cands = candidates(info, level, block_log2)
    best = min(cands, key=lambda c: c.predicted_bytes)
    if is_fast(best):
        return best, cands
    fast = [c for c in cands if is_fast(c)]
    if fast:
        best_fast = min(fast, key=lambda c: c.predicted_bytes)
        if best.predicted_bytes > best_fast.predicted_bytes * (1 - speed_margin(level)):
            best = best_fast
    return best, cands
