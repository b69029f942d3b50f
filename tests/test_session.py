"""codec.Session: per-channel frames with their own compact ranges, per-tensor frames on a shared grid,
shared tables rebuilt when they stop paying, keyframes, and a hardened decode."""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
import pytest
from framebytes import recrc

import codec
from codec.frame import _Reader
from codec.session import (
    FLAG_STATE,
    STEPS,
    SessionState,
    grid_steps,
    pack_table,
    step_of,
    unpack_table,
    varint,
)


def _sentence(
    rng: np.random.Generator, tokens: int, channels: int = 32, scale: float = 1.0
) -> np.ndarray:
    x = rng.standard_normal((1, tokens, channels)).astype(np.float32) * scale
    x *= rng.uniform(0.2, 3.0, channels).astype(np.float32)  # channels of different widths
    x[0, 0, :4] *= 6  # a few large values, as a [CLS] row has
    return x


def _state(tx: codec.Session) -> SessionState:
    state = tx._state
    assert state is not None and state.bits == tx.bits
    assert (state.axis is None) == (tx.axis is None)  # per tensor or per channel, as the session
    return state


def _own_step(x: np.ndarray, bits: int) -> np.ndarray:
    """The step a per-channel frame must use on the last axis: the smallest log-grid step >= span/qmax."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    span = np.maximum(flat.max(0), 0) - np.minimum(flat.min(0), 0)
    return step_of(grid_steps(span / ((1 << bits) - 1))).astype(np.float64)


def test_the_step_grid_rounds_up_by_less_than_one_grid_step() -> None:
    rng = np.random.default_rng(0)
    steps = np.concatenate([10.0 ** rng.uniform(-29, 36, 2000), 2.0 ** np.arange(-90, 120)])
    k = grid_steps(steps)
    got = step_of(k).astype(np.float64)
    assert np.all(got >= steps)
    assert np.all(step_of(k - 1).astype(np.float64) < steps)
    assert np.all(got <= steps * 2 ** (1 / STEPS) * (1 + 1e-6))


@pytest.mark.parametrize("bits", [8, 4])
def test_per_channel_frames_keep_their_own_step_within_half_of_it(bits: int) -> None:
    rng = np.random.default_rng(1)
    tx, rx = codec.Session(bits=bits, axis=-1), codec.Session()
    for i in range(12):
        x = _sentence(rng, 5 + i % 4, scale=1 + 0.3 * i)
        x[0, 1, 5] = 0.0
        y = rx.decode(tx.encode(x)).astype(np.float64)
        step = _own_step(x, bits)[None, None, :]
        assert np.all(np.abs(y - x) <= 0.5 * step * (1 + 1e-5))
        on_grid = y / step
        np.testing.assert_allclose(on_grid, np.rint(on_grid), atol=1e-3)  # the frame's own grid
        assert np.all(y[x == 0] == 0)
    assert tx.keyframes < tx.frames


def test_per_tensor_frames_lie_within_half_a_step_of_the_shared_grid() -> None:
    rng = np.random.default_rng(2)
    tx, rx = codec.Session(bits=8), codec.Session()
    for i in range(12):
        x = _sentence(rng, 5 + i % 4, scale=1 + 0.1 * i)
        y = rx.decode(tx.encode(x))
        assert y.shape == x.shape and y.dtype == np.float32
        grid = _state(tx).grid
        assert grid is not None and grid.axis is None and grid.scale.shape == (1,)  # one step
        assert np.all(np.abs(y.astype(np.float64) - x) <= 0.5 * grid.scale[0] * (1 + 1e-5))


def test_per_channel_frames_settle_a_fifth_smaller_than_independent_ones() -> None:
    rng = np.random.default_rng(3)
    tx, rx = codec.Session(bits=8, axis=-1), codec.Session()
    ratios, keyframes = [], []
    for _ in range(10):  # sentence-sized: 12 tokens x 384 channels
        x = _sentence(rng, 12, channels=384)
        blob = tx.encode(x)
        keyframes.append(bool(blob[5] & FLAG_STATE))
        ratios.append(len(blob) / len(codec.encode(x, bits=8, axis=-1)))
        assert np.abs(rx.decode(blob) - x).max() <= 0.5 * _own_step(x, 8).max() * (1 + 1e-5)
    assert keyframes[0] and sum(keyframes) <= 3
    assert max(ratios) < 0.9 and max(ratios[-4:]) < 0.8


def test_later_per_tensor_frames_carry_no_state_and_are_smaller() -> None:
    rng = np.random.default_rng(4)
    tx, rx = codec.Session(bits=8), codec.Session()
    first = _sentence(rng, 12)
    key = tx.encode(first)
    assert key[5] & FLAG_STATE
    np.testing.assert_allclose(codec.Session().decode(key), first, atol=0.1)  # complete on its own
    rx.decode(key)
    light = []
    for _ in range(8):  # the same source, inside the first frame's range
        x = np.clip(_sentence(rng, 12), first.min(), first.max())
        blob = tx.encode(x)
        if not blob[5] & FLAG_STATE:
            light.append((len(blob), len(codec.encode(x, bits=8))))
        np.testing.assert_allclose(rx.decode(blob), x, atol=float(_state(tx).grid.scale[0]))
    assert tx.frames == 9 and tx.keyframes == 9 - len(light)
    assert len(light) >= 6
    assert all(s < ind for s, ind in light)


def test_a_frame_beyond_the_grid_grows_it_with_a_keyframe() -> None:
    rng = np.random.default_rng(5)
    tx, rx = codec.Session(bits=6), codec.Session()
    rx.decode(tx.encode(rng.uniform(-1, 1, (3, 40)).astype(np.float32)))
    old = _state(tx).grid
    wide = rng.uniform(-1, 3, (3, 40)).astype(np.float32)
    blob = tx.encode(wide)
    assert blob[5] & FLAG_STATE and tx.keyframes == 2
    new = _state(tx).grid
    assert new.scale[0] > old.scale[0]
    y = rx.decode(blob)
    assert np.abs(y - wide).max() <= 0.5 * new.scale[0] * (1 + 1e-5)
    # the old range fits the grown grid: it stays
    narrow = rng.uniform(-1, 1, (3, 40)).astype(np.float32)
    assert np.abs(rx.decode(tx.encode(narrow)) - narrow).max() <= 0.5 * new.scale[0] * (1 + 1e-5)
    assert _state(tx).grid.scale[0] == new.scale[0]


def test_steps_beyond_the_window_move_it_with_a_keyframe() -> None:
    rng = np.random.default_rng(6)
    tx, rx = codec.Session(bits=8, axis=-1), codec.Session()
    x = rng.standard_normal((20, 16)).astype(np.float32)
    rx.decode(tx.encode(x))
    base = _state(tx).base
    far = x * np.float32(2.0**20)  # 20 octaves: 320 grid steps, beyond the window of 256
    blob = tx.encode(far)
    assert blob[5] & FLAG_STATE and _state(tx).base > base
    y = rx.decode(blob).astype(np.float64)
    assert np.all(np.abs(y - far) <= 0.5 * _own_step(far, 8)[None, :] * (1 + 1e-5))


def test_deep_and_all_zero_channels() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    x[:, 1] *= np.float32(1e-9)  # 30 octaves below the others: it takes the window's coarsest step
    x[:, 2] = 0.0
    tx = codec.Session(bits=8, axis=1)
    y = codec.Session().decode(tx.encode(x)).astype(np.float64)
    assert np.all(y[:, 2] == 0)
    coarse = float(step_of(_state(tx).base))
    assert np.all(np.abs(y[:, 1] - x[:, 1]) <= 0.5 * coarse * (1 + 1e-5))
    live = [0, 3]
    assert np.all(np.abs(y[:, live] - x[:, live]) <= 0.5 * _own_step(x, 8)[live] * (1 + 1e-5))


def test_a_new_distribution_rebuilds_the_tables_once() -> None:
    rng = np.random.default_rng(8)
    tx, rx = codec.Session(bits=8), codec.Session()
    spread = rng.uniform(-4, 4, 2048).astype(np.float32)
    rx.decode(tx.encode(spread))
    sizes = []
    for _ in range(4):  # same range, symbols crowded near zero: the first table costs too much
        narrow = (rng.standard_normal(2048) * 0.1).astype(np.float32)
        narrow[:2] = (-4, 4)
        blob = tx.encode(narrow)
        sizes.append(len(blob))
        rx.decode(blob)
    assert tx.keyframes == 2  # one rebuild, then the rebuilt table keeps paying
    assert sizes[-1] < 0.7 * 2048


def test_reset_starts_over_with_a_keyframe() -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    tx = codec.Session()
    tx.encode(x)
    tx.reset()
    blob = tx.encode(x)
    assert blob[5] & FLAG_STATE
    np.testing.assert_allclose(codec.Session().decode(blob), x, atol=1e-2)


def test_missing_or_evicted_state_is_a_codec_error() -> None:
    tx, rx = codec.Session(), codec.Session(max_states=1)
    a = tx.encode(np.linspace(-1, 1, 100, dtype=np.float32))
    a2 = tx.encode(np.linspace(-1, 1, 100, dtype=np.float32)[::-1].copy())
    with pytest.raises(codec.CodecError, match="has not read"):
        rx.decode(a2)  # out of order: before its keyframe
    rx.decode(a)
    rx.decode(a2)
    b = tx.encode(np.linspace(-9, 9, 100, dtype=np.float32))  # a new grid: a keyframe
    rx.decode(b)
    with pytest.raises(codec.CodecError, match="has not read"):
        rx.decode(a2)  # its state was evicted (max_states=1)


def test_a_swapped_state_under_an_id_is_refused() -> None:
    tx = codec.Session()
    blob = bytearray(tx.encode(np.linspace(-1, 1, 100, dtype=np.float32)))
    blob[9] ^= 0xFF  # first byte of the state id (after the 8-byte head and a 1-byte shape)
    with pytest.raises(codec.CodecError, match="does not match its id"):
        codec.Session().decode(recrc(blob))


def test_other_versions_and_lying_frames_are_refused() -> None:
    tx = codec.Session(bits=8, axis=-1)
    blob = bytearray(tx.encode(np.ones((2, 3), np.float32)))
    old = bytearray(blob)
    old[4] = 1
    with pytest.raises(codec.CodecError, match="version 1"):
        codec.Session().decode(recrc(old))
    big = bytearray(blob)
    big[8:10] = varint(1 << 20)[:2]  # 2 rows claimed as 2 Mi rows: the payload does not follow
    with pytest.raises(codec.CodecError):
        codec.Session().decode(recrc(big))
    with pytest.raises(codec.CodecError, match="limit"):
        codec.Session().decode(bytes(blob), max_elements=5)
    empty = bytearray(tx.encode(np.zeros((2, 0), np.float32)))
    empty[8:10] = varint(1 << 31) + varint(1 << 31) + b"\x00"  # no elements, but no array numpy can make
    empty[7] = 3
    with pytest.raises(codec.CodecError, match="shape of .* elements, more than the limit"):
        codec.Session().decode(recrc(empty))
    long_shape = bytearray(blob)
    long_shape[8:9] = b"\x82\x00"  # 2 written in two bytes: not the shortest form
    with pytest.raises(codec.CodecError, match="shape"):
        codec.Session().decode(recrc(long_shape))
    short = bytearray(blob)
    del short[-6]  # one payload byte fewer than the shape needs
    with pytest.raises(codec.CodecError):
        codec.Session().decode(recrc(short))


def test_tables_pack_and_unpack() -> None:
    rng = np.random.default_rng(9)
    for top, pb in ((255, 12), (15, 8), (255, 15), (1, 8)):
        for _ in range(20):
            counts = rng.integers(1, 1000, top + 1) ** rng.integers(1, 3)
            freq = np.zeros(256, np.uint16)
            freq[: top + 1] = codec.tables.normalize(
                np.pad(counts, (0, 255 - top)).astype(np.uint32), pb
            )[0][: top + 1]
            packed = pack_table(freq, top)
            r = _Reader(memoryview(packed + b"tail"))
            np.testing.assert_array_equal(unpack_table(r, top, pb), freq)
            assert r.pos == len(packed)
    bad = np.zeros(256, np.uint16)
    bad[:4] = (1, 1, 1, 4093)
    packed = pack_table(bad, 3)
    with pytest.raises(codec.CodecError):
        unpack_table(_Reader(memoryview(packed)), 3, 13)  # sums to 2**12, not 2**13
    with pytest.raises(codec.CodecError, match="truncated"):
        unpack_table(_Reader(memoryview(packed[:1])), 3, 12)


@pytest.mark.parametrize("axis", [None, 1])
def test_mutated_frames_raise_codec_error_or_decode(axis: int | None) -> None:
    """Every mutant decodes within the element limit or raises CodecError: always the latter with a
    stale checksum or truncated, either way for bytes overwritten under a recomputed checksum."""
    rng = np.random.default_rng(10)
    tx = codec.Session(bits=8, axis=axis)
    key = tx.encode(rng.standard_normal((4, 16, 8)).astype(np.float32))
    later = tx.encode((rng.standard_normal((4, 16, 8)) * 0.5).astype(np.float32))
    decoded: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for blob in (key, later):
        for _ in range(1500):
            b = bytearray(blob)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            cut = rng.random() < 0.3
            if cut:
                b = b[: int(rng.integers(len(b)))]
            if rng.random() < 0.5 and len(b) > 4:
                b = bytearray(recrc(b))  # past the checksum, into the parsers
                kind = "cut" if cut else "forged"
            elif b == blob:
                continue  # every byte written back as it was
            else:
                kind = "stale"
            rx = codec.Session()
            rx.decode(key)
            try:
                out = rx.decode(bytes(b), max_elements=1 << 16)
            except codec.CodecError:
                refused[kind] += 1
                continue
            assert out.size <= 1 << 16
            decoded[kind] += 1
    assert decoded["stale"] == decoded["cut"] == 0, decoded
    assert refused["stale"] > 1000 and refused["cut"] > 100, refused
    # forged: most overwrite payload bytes and decode to other values (93 % now), some break a header
    forged = decoded["forged"] + refused["forged"]
    assert 0.5 * forged < decoded["forged"] < 0.98 * forged, (decoded, refused)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("axis", [None, -1])
def test_dtypes_round_trip(dtype: type, axis: int | None) -> None:
    x = np.linspace(-2, 2, 300).astype(dtype).reshape(30, 10)
    y = codec.Session().decode(codec.Session(bits=8, axis=axis).encode(x))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, x, atol=0.01)


@pytest.mark.parametrize("axis", [None, 0])
def test_empty_tensors_round_trip(axis: int | None) -> None:
    tx, rx = codec.Session(axis=axis), codec.Session()
    for shape in ((0, 3), (3, 0)):
        y = rx.decode(tx.encode(np.zeros(shape, np.float32)))
        assert y.shape == shape


def test_bad_input_raises_codec_error() -> None:
    with pytest.raises(codec.CodecError, match="bits"):
        codec.Session(bits=9)
    with pytest.raises(codec.CodecError, match="headroom"):
        codec.Session(headroom=-0.5)
    with pytest.raises(codec.CodecError, match="NaN"):
        codec.Session().encode(np.array([1.0, np.nan], np.float32))
    with pytest.raises(codec.CodecError, match="NaN"):
        codec.Session(axis=0).encode(np.array([1.0, np.inf], np.float32))
    with pytest.raises(codec.CodecError, match="session frame"):
        codec.Session().decode(codec.encode(np.ones(10, np.float32)))
    with pytest.raises(codec.CodecError):
        codec.Session().decode(b"SPLS")
    with pytest.raises(codec.CodecError):
        codec.Session().decode(struct.pack("<4sBBBB", b"SPLS", 2, 0, 0, 0) + bytes(13))


def test_session_benchmark_quick_run_writes_its_results(tmp_path) -> None:
    import json

    from benchmarks import session as bench

    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "session_quick.json").read_text())
    rows = {r["granularity"]: r for r in payload["rows"]}
    assert rows["tensor"]["session_bytes"] < rows["tensor"]["independent_bytes"]
    assert rows["channel"]["ratio"] < 0.85 and rows["channel"]["error_ratio"] < 1.1
    off, on = payload["generation"]
    assert on["uplink_bytes_per_token"] < off["uplink_bytes_per_token"]
    assert (tmp_path / "session_quick.png").stat().st_size > 0
