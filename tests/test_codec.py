"""Public API round trip: any finite input, fp32/fp16/bf16, bits 1..8, per-tensor and per-channel."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import codec
from codec import _kernels, api, costmodel, frame, represent
from codec.quantize import QuantParams, dequantize


def steps_for(blob, shape):
    """Per-element quantization step of a frame, broadcast to ``shape``."""
    f = frame.read(blob, codec.api.MAX_ELEMENTS)
    if f.axis is None or 0 in shape:
        return np.full(shape, f.scale[0], np.float64)
    view = [1] * len(shape)
    view[f.axis] = shape[f.axis]
    return np.broadcast_to(f.scale.reshape(view).astype(np.float64), shape)


def check_roundtrip(x32, blob, out_dtype=np.float32):
    y = codec.decode(blob)
    assert y.shape == x32.shape
    assert y.dtype == out_dtype
    step = steps_for(blob, x32.shape)
    tol = 0.5 * step * (1 + 1e-5) + 1e-30
    if out_dtype == np.float16:
        tol = tol + np.abs(x32.astype(np.float64)) * 2.0**-10 + 2.0**-24
    assert np.all(np.abs(y.astype(np.float64) - x32.astype(np.float64)) <= tol)
    assert np.all(y[x32 == 0] == 0)
    return y


finite32 = st.floats(-(2.0**100), 2.0**100, allow_nan=False, allow_infinity=False, width=32)
elements = st.one_of(st.just(0.0), finite32, st.floats(-4, 4, width=32))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
        elements=elements,
    ),
    bits=st.integers(1, 8),
    per_channel=st.booleans(),
    level=st.sampled_from([1, 3, 9]),
    data=st.data(),
)
def test_roundtrip_float32(x, bits, per_channel, level, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1)) if per_channel and x.ndim else None
    blob = codec.encode(x, bits=bits, axis=axis, level=level)
    check_roundtrip(x, blob)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float16,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
        elements=st.floats(-6e4, 6e4, allow_nan=False, width=16),
    ),
    bits=st.integers(1, 8),
)
def test_roundtrip_float16(x, bits):
    blob = codec.encode(x, bits=bits)
    check_roundtrip(x.astype(np.float32), blob, np.float16)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    bits=st.integers(1, 8),
    per_channel=st.booleans(),
)
def test_roundtrip_bfloat16_torch(x, bits, per_channel):
    t = torch.from_numpy(x).to(torch.bfloat16)
    blob = codec.encode(t, bits=bits, axis=0 if per_channel else None)
    check_roundtrip(t.to(torch.float32).numpy(), blob, np.float32)


def test_torch_float32_and_numpy_give_same_bytes():
    x = torch.relu(torch.randn(2, 16, 20, 20, generator=torch.Generator().manual_seed(0)))
    assert codec.encode(x, bits=6) == codec.encode(x.numpy(), bits=6)


def relu_map(shape=(1, 64, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    # spatially correlated: smooth along the last axis so contexts have something to find
    x = (x + np.roll(x, 1, -1) + np.roll(x, 1, -2)) / 3
    return np.maximum(x - 0.2, 0)


@pytest.mark.parametrize("bits", [8, 6, 4, 3, 2, 1])
@pytest.mark.parametrize("axis", [None, 1])
def test_every_candidate_roundtrips(bits, axis):
    x = relu_map()
    p = api.prepare(x, bits, axis)
    cands = costmodel.candidates(p.info, 9, 14)
    kinds = {c.kind for c in cands}
    assert {1, 3} <= kinds  # dense and sparse were both considered
    for cand in cands:
        blob = api.encode_prepared(p, cand, 14)
        check_roundtrip(x, blob)


@pytest.mark.parametrize("bits", [8, 4, 3, 1])
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_decode_matches_symbols_then_dequantize(bits, axis, threads):
    """Dense, bit-packed and residual frames decode block by block straight to floats (the residuals'
    inverse reading back across blocks); the result equals decoding the symbols first and dequantizing
    them, for every candidate of the tensor, over several 1 Ki blocks and an odd element count."""
    x = relu_map((1, 13, 19, 21), seed=bits)
    p = api.prepare(x, bits, axis)
    for cand in costmodel.candidates(p.info, 9, 10):
        blob = api.encode_prepared(p, cand, 10)
        f = frame.read(blob, api.MAX_ELEMENTS)
        ref = dequantize(api.decode_symbols(f), QuantParams(bits, axis, f.scale, f.zero), f.shape)
        assert np.array_equal(codec.decode(blob, threads=threads), ref), cand.name


def test_levels_trade_size():
    x = relu_map((1, 96, 48, 48), seed=3)
    sizes = {lvl: len(codec.encode(x, bits=8, level=lvl)) for lvl in (1, 3, 9)}
    assert sizes[9] <= sizes[3] <= sizes[1] * 1.001
    assert sizes[9] < x.size  # well below one byte per element


def test_threads_do_not_change_bytes():
    x = relu_map((1, 64, 64, 64), seed=5)
    assert codec.encode(x, bits=8, threads=1) == codec.encode(x, bits=8, threads=4)
    blob = codec.encode(x, bits=8)
    assert np.array_equal(codec.decode(blob, threads=4), codec.decode(blob))


def test_inspect_describes_frame():
    x = relu_map()
    blob = codec.encode(x, bits=4, axis=1)
    info = codec.inspect(blob)
    assert info.shape == x.shape and info.bits == 4 and info.axis == 1
    assert info.dtype == "float32" and info.nbytes == len(blob)
    assert info.representation in ("dense", "packed", "sparse")


def test_compresses_sparse_relu_well():
    x = relu_map((1, 64, 56, 56), seed=1)
    blob = codec.encode(x, bits=8)
    assert len(blob) < x.nbytes / 6


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([1.0, np.nan], np.float32), "NaN or Inf"),
        (np.array([np.inf, 1.0], np.float32), "NaN or Inf"),
        (np.array([1, 2, 3]), "dtype"),
        (np.array([1 + 2j]), "dtype"),
        ("not a tensor", "cannot encode|dtype"),
        (torch.tensor([1, 2]), "floating-point"),
    ],
)
def test_bad_input_is_a_clear_error(bad, match):
    with pytest.raises(codec.CodecError, match=match):
        codec.encode(bad)


@pytest.mark.parametrize(
    "kw", [{"bits": 0}, {"bits": 9}, {"bits": 2.5}, {"level": 0}, {"level": 10}, {"axis": 3}]
)
def test_bad_parameters(kw):
    with pytest.raises(codec.CodecError):
        codec.encode(np.ones((2, 2, 2), np.float32), **kw)


def test_codec_error_is_value_error():
    assert issubclass(codec.CodecError, ValueError)


@pytest.mark.parametrize(
    "plant",
    [
        [],  # plain sampled statistics
        [(8192 + 5, 4.6)],  # symbols beyond the sample's range, in a chunk it skipped: floored to 1
        [
            (8192 + 5, 40.0),
            (3 * 8192 + 7, 20.0),
        ],  # far outliers: too many floors, all symbols counted
    ],
)
def test_level1_sampled_statistics_still_code_every_symbol(plant):
    """Level 1 takes its histogram from every 4th chunk of large tensors; symbols that only occur in
    chunks it skipped must still round-trip, and the sampled tables cost at most 1 % over exact ones."""
    from codec.api import encode_prepared, prepare
    from codec.costmodel import choose
    from codec.quantize import quantize

    rng = np.random.default_rng(21)
    x = rng.normal(size=(4, 64, 32, 32)).astype(np.float32)
    flat = x.reshape(-1)
    flat[flat > 4.5] = 4.5
    for i, v in plant:
        flat[i] = v
    _, _, hist = quantize(x, 8, None, 4)
    sampled = hist.sum() < x.size / 2
    assert sampled == (not plant or plant[0][1] < 5)  # the path this case is meant to take
    blob = codec.encode(x, bits=8, level=1)
    y = codec.decode(blob)
    step = float(x.max() - min(x.min(), 0)) / 255 * 1.0001
    assert np.all(np.abs(y - x) <= step / 2)
    p = prepare(x, 8)
    exact = encode_prepared(p, choose(p.info, 1, 16)[0])
    assert len(blob) <= len(exact) * 1.01


@pytest.mark.parametrize("level", [1, 3])
def test_channels_last_tensors_encode_like_contiguous_ones(level):
    """torch's channels-last maps and transposed NumPy views give the same frame as their contiguous copy."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(2, 64, 28, 28)), 0).astype(np.float32)
    t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    assert not t.is_contiguous()
    blob = codec.encode(x, bits=8, level=level)
    assert codec.encode(t, bits=8, level=level) == blob
    assert codec.encode(t.numpy(), bits=8, level=level, axis=1) == codec.encode(
        x, bits=8, level=level, axis=1
    )
    assert np.array_equal(codec.decode(blob), codec.decode(codec.encode(t, bits=8, level=level)))


def _small_tensors():
    """Single-sample features of the kinds a stream sends one at a time: incompressible noise, a
    sparse ReLU map, a constant, a short sentence's hidden states, and tiny ones."""
    rng = np.random.default_rng(3)
    yield "uniform noise", rng.uniform(-1, 1, (1, 64, 8, 8)).astype(np.float32)
    relu = np.maximum(rng.normal(size=(1, 32, 16, 16)), 1.2).astype(np.float32) - 1.2
    yield "sparse relu", relu
    yield "constant", np.full((1, 8, 8, 8), 0.5, np.float32)
    yield "sentence", rng.normal(size=(1, 7, 384)).astype(np.float32)
    yield "tiny", rng.normal(size=(1, 3)).astype(np.float32)
    yield "one value", np.array([[2.0]], np.float32)


@pytest.mark.parametrize("level", [1, 3, 9])
def test_a_single_sample_frame_never_costs_more_than_its_raw_symbols_plus_64_bytes(level):
    for name, x in _small_tensors():
        for bits in (8, 4):
            blob = codec.encode(x, bits=bits, level=level)
            raw = x.size if bits == 8 else -(-x.size * bits // 8)  # the symbols stored raw
            assert len(blob) <= raw + 64, (name, bits, len(blob), raw)
            y = codec.decode(blob)
            assert y.shape == x.shape


def test_scratch_buffers_are_per_thread_and_never_leak_into_frames():
    """The encoder's reused buffers: frames coded one after another, or on several threads at once, equal
    frames coded alone, and a buffer is reused for its role on one thread but not shared between threads."""
    from concurrent.futures import ThreadPoolExecutor

    from codec import scratch

    maps = [relu_map((1, 16, 48, 48), seed=s) for s in range(6)]
    alone = []
    for x in maps:
        scratch.release()
        alone.append(codec.encode(x, bits=8, level=1))
    assert [codec.encode(x, bits=8, level=1) for x in maps] == alone
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda x: codec.encode(x, bits=8, level=1), maps * 3)) == alone * 3
    first = scratch.buffer("test", 100)
    assert np.shares_memory(first, scratch.buffer("test", 50))
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(scratch.buffer, "test", 100).result()
    assert not np.shares_memory(first, other)


@pytest.mark.parametrize("width", [16, 24, 31, 32, 48, 64, 80])
@pytest.mark.parametrize("bits", [8, 5])
def test_nibble_frames_decode_alike_on_every_path(width, bits):
    """Delta-nibble frames at distances 16..80 decode to the symbols-then-dequantize reference, on the
    AVX-512, AVX2 and scalar paths alike (escapes merged block by block, in order)."""
    rng = np.random.default_rng(width * bits)
    x = np.cumsum(rng.normal(size=(4, 90, width)), axis=1).astype(np.float32)
    p = api.prepare(x, bits)
    nibbles = [
        c for c in costmodel.candidates(p.info, 9, 10) if c.kind == represent.DELTA_NIBBLE
    ]
    assert {c.param for c in nibbles} >= {width}
    for cand in nibbles:
        blob = api.encode_prepared(p, cand, 10)
        f = frame.read(blob, api.MAX_ELEMENTS)
        ref = dequantize(api.decode_symbols(f), QuantParams(bits, None, f.scale, f.zero), f.shape)
        for simd, wide in ((True, True), (True, False), (False, False)):
            prev = _kernels.set_simd(simd, wide)
            try:
                out = codec.decode(blob)
            finally:
                _kernels.set_simd(prev)
            assert np.array_equal(out, ref), (cand.name, simd, wide)
