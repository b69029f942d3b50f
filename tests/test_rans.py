"""The rANS layer alone is lossless for any byte sequence, with and without contexts, any thread count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import CodecError, _kernels, rans, tables
from codec.contexts import ContextSpec

needs_avx2 = pytest.mark.skipif(
    not _kernels.AVX2, reason="no AVX2 on this CPU: no vector path to compare with the scalar one"
)


def roundtrip(sym, ctx=ContextSpec(), prob_bits=12, block_log2=16, threads=1):
    counts = np.zeros((ctx.ntables, 256), np.uint32)
    _kernels.context_histogram(sym, ctx.kernel_spec(), 1 << block_log2, counts, 1)
    freqs = tables.normalize(counts, prob_bits)
    payload = rans.encode(sym, freqs, prob_bits, block_log2, ctx, threads)
    out = rans.decode(payload, sym.size, freqs, prob_bits, block_log2, ctx, threads)
    assert np.array_equal(out, sym)
    return payload, freqs


LENGTHS = [0, 1, 31, 32, 33, 1000, 65535, 65536, 65537, 10**6, 10**7]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("kind", ["equal", "two", "uniform"])
def test_lossless_lengths(n, kind):
    rng = np.random.default_rng(n)
    if kind == "equal":
        sym = np.full(n, 200, np.uint8)
    elif kind == "two":
        sym = np.where(rng.random(n) < 0.9, 3, 250).astype(np.uint8)
    else:
        sym = rng.integers(0, 256, n, dtype=np.uint8)
    payload, _ = roundtrip(sym)
    if kind == "uniform" and n >= 65536:
        assert len(payload) <= n * 1.01  # close to 8 bits/symbol
    if kind == "equal" and n:
        # a single-symbol alphabet costs no words: only the lane states of each block
        assert len(payload) == rans.nblocks_for(n, 16) * (rans.STATE_BYTES + 4)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    prob_bits=st.integers(8, 15),
    block_log2=st.integers(5, 12),
)
def test_lossless_any_bytes(data, prob_bits, block_log2):
    roundtrip(np.frombuffer(data, np.uint8), prob_bits=prob_bits, block_log2=block_log2)


@pytest.mark.parametrize(
    "ctx",
    [
        ContextSpec(nb_dist=64, nbuckets=2, nb_ref=0),
        ContextSpec(nb_dist=40, nbuckets=4, nb_ref=7),
        ContextSpec(channels=8, inner=100, group=np.array([0, 1, 2, 3, 0, 1, 2, 3], np.uint8)),
        ContextSpec(
            channels=8, inner=100, group=np.arange(8, dtype=np.uint8) % 2, nb_dist=100, nbuckets=2
        ),
        ContextSpec(channels=3, inner=7, mult=4, group=np.array([0, 1, 1], np.uint8)),
    ],
)
def test_lossless_with_contexts(ctx):
    rng = np.random.default_rng(1)
    sym = np.where(rng.random(200_000) < 0.6, 0, rng.integers(0, 40, 200_000)).astype(np.uint8)
    roundtrip(sym, ctx, block_log2=14)


def test_contexts_pay_on_structured_data():
    # neighbor-correlated data: each symbol repeats the one 64 positions back with high probability
    rng = np.random.default_rng(2)
    n = 1 << 18
    rows = np.empty((n // 64, 64), np.uint8)
    rows[0] = rng.integers(0, 2, 64) * 9
    for r in range(
        1, rows.shape[0]
    ):  # each row repeats the one above, with 3% of positions flipped
        flip = rng.random(64) < 0.03
        rows[r] = np.where(flip, 9 - rows[r - 1], rows[r - 1])
    sym = rows.reshape(-1)
    flat, _ = roundtrip(sym)
    ctx = ContextSpec(nb_dist=64, nbuckets=2, nb_ref=0)
    with_ctx, _ = roundtrip(sym, ctx)
    assert len(with_ctx) < 0.7 * len(flat)


def assert_vector_matches_scalar(sym: np.ndarray, ctx: ContextSpec) -> None:
    """The vector (AVX2, and AVX-512 where the CPU has it) and scalar encoders write the same bytes, and
    every decoder gives the symbols back."""
    counts = np.zeros((ctx.ntables, 256), np.uint32)
    _kernels.context_histogram(sym, ctx.kernel_spec(), 1 << 14, counts, 1)
    freqs = tables.normalize(counts, 12)
    prev = _kernels.set_simd(False)
    try:
        scalar = rans.encode(sym, freqs, 12, 14, ctx)
        assert np.array_equal(rans.decode(scalar, sym.size, freqs, 12, 14, ctx), sym)
        for wide in (False, True) if _kernels.AVX512 else (False,):
            _kernels.set_simd(True, wide)
            assert rans.encode(sym, freqs, 12, 14, ctx) == scalar
            assert np.array_equal(rans.decode(scalar, sym.size, freqs, 12, 14, ctx), sym)
    finally:
        _kernels.set_simd(prev)


def reference_buckets(sym: np.ndarray, ref: int, nbuckets: int) -> np.ndarray:
    """The neighbor bucket of each symbol, written from the rule in codec/contexts.py's docstring."""
    d = np.abs(sym.astype(np.int64) - ref)
    if nbuckets == 2:
        return (d > 0).astype(np.uint8)
    return np.select([d == 0, d <= 2, d <= 8], [0, 1, 2], 3).astype(np.uint8)


@pytest.mark.parametrize("simd", [pytest.param(True, marks=needs_avx2), False])
@pytest.mark.parametrize("nbuckets", [2, 4])
@pytest.mark.parametrize("ref", [0, 3, 128, 255])
def test_neighbor_context_counts_follow_the_bucket_rule(simd, nbuckets, ref):
    """The kernels' neighbor map (built in C from the reference symbol) matches the documented rule: the
    context histogram equals counts taken in NumPy (the neighbor is looked up inside each block only)."""
    rng = np.random.default_rng(ref)
    dist, block = 48, 1 << 12
    sym = ((ref + rng.integers(-12, 13, 3 * block + 77)) % 256).astype(np.uint8)
    ctx = ContextSpec(nb_dist=dist, nbuckets=nbuckets, nb_ref=ref)
    counts = np.zeros((ctx.ntables, 256), np.uint32)
    prev = _kernels.set_simd(simd)
    try:
        _kernels.context_histogram(sym, ctx.kernel_spec(), block, counts, 1)
    finally:
        _kernels.set_simd(prev)
    expected = np.zeros_like(counts)
    for b0 in range(0, sym.size, block):
        blk = sym[b0 : b0 + block]
        table = np.zeros(blk.size, np.int64)
        table[dist:] = reference_buckets(blk[:-dist], ref, nbuckets)
        np.add.at(expected, (table, blk), 1)
    assert np.array_equal(counts, expected)


@needs_avx2
@pytest.mark.parametrize("dist", [32, 33, 40, 47, 48, 49, 56, 63, 64, 65, 100, 384])
@pytest.mark.parametrize("nbuckets", [2, 4])
def test_vector_neighbor_decode_agrees_at_every_distance(dist, nbuckets):
    """The AVX2 decoder takes a neighbor 33..63 symbols back from the last two steps' registers, 32 back
    from the last step's, farther ones from memory: every case gives the scalar decoder's symbols, and
    the vector and scalar encoders give the same bytes."""
    rng = np.random.default_rng(dist * nbuckets)
    n = 70_001
    base = rng.integers(0, 20, dist)
    sym = (np.resize(base, n) + rng.integers(0, 3, n) * (rng.random(n) < 0.2)).astype(np.uint8)
    ctx = ContextSpec(nb_dist=dist, nbuckets=nbuckets, nb_ref=int(np.bincount(sym).argmax()))
    assert_vector_matches_scalar(sym, ctx)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_threads_give_identical_bytes(threads):
    rng = np.random.default_rng(3)
    sym = rng.geometric(0.2, 300_000).clip(0, 255).astype(np.uint8)
    one, _ = roundtrip(sym, block_log2=14)
    many, _ = roundtrip(sym, block_log2=14, threads=threads)
    assert one == many


def test_corrupted_block_is_detected():
    rng = np.random.default_rng(4)
    sym = rng.geometric(0.1, 50_000).clip(0, 255).astype(np.uint8)
    payload, freqs = roundtrip(sym)
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0x10
    with pytest.raises(CodecError):
        rans.decode(bytes(bad), sym.size, freqs, 12, 16)
    with pytest.raises(CodecError):
        rans.decode(payload[:-2], sym.size, freqs, 12, 16)


def test_normalize_keeps_every_symbol_and_sum():
    rng = np.random.default_rng(5)
    for pb in (8, 12, 15):
        counts = rng.integers(0, 1000, (3, 256)).astype(np.uint32)
        counts[:, ::7] = 0
        counts[1, :] = 0
        counts[1, 5] = 1
        f = tables.normalize(counts, pb)
        for t in range(3):
            assert f[t].sum() == 1 << pb
            assert np.all((f[t] > 0) == (counts[t] > 0))


needs_avx512 = pytest.mark.skipif(
    not _kernels.AVX512, reason="no AVX-512 on this CPU: no paired-block decoder to compare"
)


@needs_avx512
@pytest.mark.parametrize("nblocks", [2, 3, 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_blocks_decoded_in_pairs_match_one_at_a_time(nblocks, threads):
    """The AVX-512 decoder takes order-0 blocks two at a time. Blocks of very different statistics (one
    nearly constant, few words; the next uniform, many) stop the joint loop early on one side; a short last
    block too. Every path gives the symbols back, and a flipped byte in either block of a pair is caught."""
    rng = np.random.default_rng(8)
    block_log2 = 10
    parts = []
    for b in range(nblocks):
        size = (1 << block_log2) if b < nblocks - 1 else 300
        if b % 2:
            parts.append(rng.integers(0, 256, size))
        else:
            parts.append(np.where(rng.random(size) < 0.97, 7, rng.integers(0, 256, size)))
    sym = np.concatenate(parts).astype(np.uint8)
    payload, freqs = roundtrip(sym, block_log2=block_log2)
    prev = _kernels.set_simd(False)
    try:
        for simd in [(False,), (True, False), (True, True)]:
            _kernels.set_simd(*simd)
            out = rans.decode(payload, sym.size, freqs, 12, block_log2, threads=threads)
            assert np.array_equal(out, sym), simd
            for at in (4 * nblocks + 200, len(payload) - 10):
                bad = bytearray(payload)
                bad[at] ^= 0x21
                with pytest.raises(CodecError):
                    rans.decode(bytes(bad), sym.size, freqs, 12, block_log2, threads=threads)
    finally:
        _kernels.set_simd(prev)


@needs_avx2
def test_vector_and_scalar_paths_agree_byte_for_byte():
    rng = np.random.default_rng(6)
    cases = [
        (rng.geometric(0.05, 100_003).clip(0, 255).astype(np.uint8), ContextSpec()),
        (rng.integers(0, 256, 70_000).astype(np.uint8), ContextSpec()),
        (
            np.where(rng.random(90_000) < 0.5, 0, rng.integers(0, 30, 90_000)).astype(np.uint8),
            ContextSpec(nb_dist=96, nbuckets=4, nb_ref=0),
        ),
        (
            rng.integers(0, 12, 64 * 96 * 5).astype(np.uint8),
            ContextSpec(
                channels=64,
                inner=96,
                group=(np.arange(64) % 4).astype(np.uint8),
                nb_dist=96,
                nbuckets=2,
            ),
        ),
    ]
    for sym, ctx in cases:
        assert_vector_matches_scalar(sym, ctx)


@pytest.mark.parametrize("simd", [pytest.param(True, marks=needs_avx2), False])
@pytest.mark.parametrize("where", [0, 5_000, 99_999])
@pytest.mark.parametrize("ctx", [ContextSpec(), ContextSpec(nb_dist=64, nbuckets=2, nb_ref=0)])
def test_symbol_without_frequency_is_refused(simd, where, ctx):
    """A table that lacks a symbol the data holds cannot code it: the encoder refuses on every path (the
    check runs inside the coding loop: first symbol, middle of a vector step, the scalar tail)."""
    rng = np.random.default_rng(where)
    sym = rng.integers(0, 8, 100_000).astype(np.uint8)
    counts = np.zeros((ctx.ntables, 256), np.uint32)
    _kernels.context_histogram(sym, ctx.kernel_spec(), 1 << 16, counts, 1)
    freqs = tables.normalize(counts, 12)
    sym[where] = 200  # absent from every table
    prev = _kernels.set_simd(simd)
    try:
        with pytest.raises(ValueError, match="zero frequency"):
            rans.encode(sym, freqs, 12, 16, ctx)
    finally:
        _kernels.set_simd(prev)


def reference_normalize(counts: np.ndarray, pb: int) -> np.ndarray:
    """csrc/tables.c's normalization in exact integers: floor(count * M / total), at least 1; the shortfall
    to M goes to the most frequent symbol, an excess is taken from the largest frequencies."""
    m = 1 << pb
    c = [int(v) for v in counts]
    total = sum(c)
    f = [0] * 256
    if total == 0:
        return np.array(f, np.uint16)
    best = 0
    for s in range(256):
        if c[s]:
            f[s] = min(max(c[s] * m // total, 1), m)
            if c[s] > c[best]:
                best = s
    excess = sum(f) - m
    if excess < 0:
        f[best] -= excess
    while excess > 0:
        arg = max((s for s in range(256) if f[s] > 1), key=lambda s: (f[s], -s))
        take = min(excess, f[arg] - 1)
        if take > f[arg] // 2 and f[arg] > 2:
            take = f[arg] // 2
        take = max(take, 1)
        f[arg] -= take
        excess -= take
    return np.array(f, np.uint16)


@pytest.mark.parametrize("pb", [8, 12, 15])
def test_normalize_matches_exact_integer_division(pb):
    """The kernel divides by a reciprocal and corrects the quotient: the tables are those of exact integer
    division, for counts up to 2^32 - 1 and quotients that land on or next to whole numbers."""
    rng = np.random.default_rng(pb)
    cases = [
        rng.integers(0, 2**32 - 1, 256, dtype=np.uint64),
        rng.integers(0, 3, 256, dtype=np.uint64) * (2**32 - 1),
        np.where(rng.random(256) < 0.1, rng.integers(1, 2**20, 256), 0).astype(np.uint64),
        np.full(256, 2**32 - 1, np.uint64),
    ]
    for k in (1, 2, 3):  # quotients whole, just below and just above whole numbers
        edge = np.zeros(256, np.uint64)
        edge[:4] = 1 << 30  # total 2^32: every quotient a whole number ...
        edge[k] -= k  # ... but this one just below one
        edge[0] += k  # ... and this one just above
        cases.append(edge)
    cases += [
        rng.integers(0, 1 << 30, 256, dtype=np.uint64) * rng.integers(0, 2, 256) for _ in range(20)
    ]
    for counts in cases:
        counts = counts.astype(np.uint32)
        got = tables.normalize(counts[None], pb)[0]
        assert np.array_equal(got, reference_normalize(counts, pb))
