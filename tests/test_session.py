"""codec.Session: shared grid and table across frames, keyframes when they stop fitting, hardened decode."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec.session import FLAG_STATE, SessionState


def _sentence(rng: np.random.Generator, tokens: int, scale: float = 1.0) -> np.ndarray:
    x = rng.standard_normal((1, tokens, 32)).astype(np.float32) * scale
    x[0, 0, :4] *= 6  # a few large values, as a [CLS] row has
    return x


def _state(tx: codec.Session) -> SessionState:
    assert tx._state is not None
    return tx._state


@pytest.mark.parametrize("axis", [None, -1])
def test_round_trip_within_half_a_step_of_the_grid(axis: int | None) -> None:
    rng = np.random.default_rng(0)
    tx, rx = codec.Session(bits=8, axis=axis), codec.Session()
    for i in range(12):
        x = _sentence(rng, 5 + i % 4, scale=1 + 0.1 * i)
        y = rx.decode(tx.encode(x))
        assert y.shape == x.shape and y.dtype == np.float32
        step = _state(tx).params.scale.astype(np.float64)
        bound = 0.5 * (step if axis is None else step[None, None, :]) * (1 + 1e-5)
        assert np.all(np.abs(y.astype(np.float64) - x) <= bound)
        assert np.all(y[x == 0] == 0)


def test_later_frames_carry_no_state_and_are_smaller() -> None:
    rng = np.random.default_rng(1)
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
        np.testing.assert_allclose(rx.decode(blob), x, atol=float(_state(tx).params.scale[0]))
    assert tx.frames == 9 and tx.keyframes == 9 - len(light)
    assert len(light) >= 6
    assert all(s < ind for s, ind in light)


def test_a_frame_beyond_the_grid_grows_it_with_a_keyframe() -> None:
    rng = np.random.default_rng(2)
    tx, rx = codec.Session(bits=6), codec.Session()
    rx.decode(tx.encode(rng.uniform(-1, 1, (3, 40)).astype(np.float32)))
    old = _state(tx).params
    wide = rng.uniform(-1, 3, (3, 40)).astype(np.float32)
    blob = tx.encode(wide)
    assert blob[5] & FLAG_STATE and tx.keyframes == 2
    new = _state(tx).params
    assert new.scale[0] > old.scale[0]
    y = rx.decode(blob)
    assert np.abs(y - wide).max() <= 0.5 * new.scale[0] * (1 + 1e-5)
    # the old range fits the grown grid: it stays (a keyframe now could only rebuild the table)
    narrow = rng.uniform(-1, 1, (3, 40)).astype(np.float32)
    assert np.abs(rx.decode(tx.encode(narrow)) - narrow).max() <= 0.5 * new.scale[0] * (1 + 1e-5)
    assert _state(tx).params.scale[0] == new.scale[0]


def test_a_new_distribution_on_the_same_grid_rebuilds_the_table() -> None:
    rng = np.random.default_rng(3)
    tx, rx = codec.Session(bits=8, drift=0.05), codec.Session()
    spread = rng.uniform(-4, 4, 2048).astype(np.float32)
    rx.decode(tx.encode(spread))
    for _ in range(3):  # same range, symbols crowded near zero: the uniform table costs too much
        narrow = (rng.standard_normal(2048) * 0.1).astype(np.float32)
        narrow[:2] = (-4, 4)
        rx.decode(tx.encode(narrow))
    assert tx.keyframes == 2  # one table rebuild, then the rebuilt table keeps fitting


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
        rx.decode(a2)
    rx.decode(a)
    rx.decode(a2)
    b = tx.encode(np.linspace(-9, 9, 100, dtype=np.float32))  # a new grid: a keyframe
    rx.decode(b)
    with pytest.raises(codec.CodecError, match="has not read"):
        rx.decode(a2)  # its state was evicted (max_states=1)


def test_a_swapped_state_under_an_id_is_refused() -> None:
    tx = codec.Session()
    blob = bytearray(tx.encode(np.linspace(-1, 1, 100, dtype=np.float32)))
    ndim = blob[7]
    blob[8 + 4 * ndim] ^= 0xFF  # first byte of the state id
    from codec._kernels import crc32

    blob[-4:] = crc32(bytes(blob[:-4])).to_bytes(4, "little")
    with pytest.raises(codec.CodecError, match="does not match its id"):
        codec.Session().decode(bytes(blob))


def test_mutated_frames_raise_codec_error_or_decode() -> None:
    rng = np.random.default_rng(4)
    tx = codec.Session(bits=8, axis=1)
    key = tx.encode(rng.standard_normal((4, 16, 8)).astype(np.float32))
    later = tx.encode((rng.standard_normal((4, 16, 8)) * 0.5).astype(np.float32))
    for blob in (key, later):
        for _ in range(1500):
            b = bytearray(blob)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            if rng.random() < 0.3:
                b = b[: int(rng.integers(len(b)))]
            rx = codec.Session()
            rx.decode(key)
            try:
                out = rx.decode(bytes(b), max_elements=1 << 16)
            except codec.CodecError:
                continue
            assert out.size <= 1 << 16


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_dtypes_round_trip(dtype: type) -> None:
    x = np.linspace(-2, 2, 300).astype(dtype)
    y = codec.Session().decode(codec.Session(bits=8).encode(x))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, x, atol=0.01)


def test_bad_input_raises_codec_error() -> None:
    with pytest.raises(codec.CodecError, match="bits"):
        codec.Session(bits=9)
    with pytest.raises(codec.CodecError, match="headroom"):
        codec.Session(headroom=-0.5)
    with pytest.raises(codec.CodecError, match="NaN"):
        codec.Session().encode(np.array([1.0, np.nan], np.float32))
    with pytest.raises(codec.CodecError, match="session frame"):
        codec.Session().decode(codec.encode(np.ones(10, np.float32)))
    with pytest.raises(codec.CodecError):
        codec.Session().decode(b"SPLS")


def test_session_benchmark_quick_run_writes_its_results(tmp_path) -> None:
    import json

    from benchmarks import session as bench

    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "session_quick.json").read_text())
    tensor = [r for r in payload["rows"] if r["granularity"] == "tensor"]
    assert tensor and all(r["session_bytes"] < r["independent_bytes"] for r in tensor)
    off, on = payload["generation"]
    assert on["uplink_bytes_per_token"] < off["uplink_bytes_per_token"]
    assert (tmp_path / "session_quick.png").stat().st_size > 0
