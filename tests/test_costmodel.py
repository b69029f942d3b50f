"""The cost model: predicted sizes match measured ones, and its choice is close to the exhaustive best."""

import numpy as np
import pytest

from codec import _kernels, api, costmodel, represent
from codec.contexts import channel_order, group_channels, group_counts


def tensors():
    rng = np.random.default_rng(7)
    relu = rng.normal(size=(1, 64, 32, 32)).astype(np.float32)
    relu = np.maximum((relu + np.roll(relu, 1, -1)) / 2 - 0.3, 0)
    hidden = rng.normal(size=(2, 48, 96)).astype(np.float32)
    hidden[:, 30:, :] = 0.0  # padded token rows
    gauss = rng.normal(size=(40_000,)).astype(np.float32)
    return {"relu": relu, "hidden": hidden, "gauss": gauss}


@pytest.mark.parametrize("name", ["relu", "hidden", "gauss"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_prediction_matches_measurement(name, bits):
    x = tensors()[name]
    p = api.prepare(x, bits)
    for cand in costmodel.candidates(p.info, 9, 16):
        actual = len(api.encode_prepared(p, cand, 16))
        assert abs(cand.predicted_bytes - actual) <= 0.03 * actual + 64, cand.name


@pytest.mark.parametrize("name", ["relu", "hidden", "gauss"])
@pytest.mark.parametrize("bits", [8, 4])
def test_choice_close_to_exhaustive(name, bits):
    x = tensors()[name]
    p = api.prepare(x, bits)
    best, cands = costmodel.choose(p.info, 9, 16)
    sizes = {c.name: len(api.encode_prepared(p, c, 16)) for c in cands}
    assert sizes[best.name] <= min(sizes.values()) * 1.02


@pytest.mark.parametrize("level", [2, 3, 5])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_sampled_levels_predict_their_candidates(level, bits):
    """Levels 2-5 cost the representations from samples; on a tensor large enough to be sampled the
    predictions still track the coded sizes, and the choice is close to the best of the same candidates."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 64, 64, 64)).astype(np.float32)
    x = np.maximum((x + np.roll(x, 1, -1) + np.roll(x, 1, -2)) / 3 - 0.2, 0)
    p = api.prepare(x, bits)
    best, cands = costmodel.choose(p.info, level, 16)
    assert {c.kind for c in cands} >= {represent.DENSE, represent.DELTA}
    sizes = {}
    for c in cands:
        sizes[c.name] = len(api.encode_prepared(p, c, 16))
        assert abs(c.predicted_bytes - sizes[c.name]) <= 0.05 * sizes[c.name] + 64, c.name
    assert sizes[best.name] <= min(sizes.values()) * 1.03


def test_sparse_wins_on_padded_rows_and_packing_on_low_bits():
    x = tensors()["hidden"]
    for bits in (8, 4):
        best, cands = costmodel.choose(api.prepare(x, bits).info, 9, 16)
        assert best.kind == costmodel.SPARSE
        dense0 = next(c for c in cands if c.name == "dense[order0]")
        assert best.predicted_bytes < 0.95 * dense0.predicted_bytes
    p = api.prepare(x, 2)
    assert any(c.kind == costmodel.PACKED for c in costmodel.candidates(p.info, 1, 16))


def test_low_levels_prefer_fast_paths():
    x = tensors()["relu"]
    p = api.prepare(x, 8)
    best1, _ = costmodel.choose(p.info, 1, 16)
    best9, _ = costmodel.choose(p.info, 9, 16)
    assert best9.predicted_bytes <= best1.predicted_bytes
    assert costmodel.speed_margin(1) > costmodel.speed_margin(9) == 0


@pytest.mark.parametrize("inner", [1, 7, 1024, 3000])
def test_channel_and_group_counts_match_numpy(inner):
    """Per-channel histograms (short runs counted directly, long ones through four tables) and the
    per-group sums the group tables are priced from equal NumPy's counts."""
    rng = np.random.default_rng(inner)
    channels, outer = 24, 3
    q = np.where(rng.random((outer, channels, inner)) < 0.5, 9, rng.integers(0, 256, inner))
    q = q.astype(np.uint8)
    counts = np.empty((channels, 256), np.uint32)
    _kernels.channel_histogram(q.ravel(), channels, inner, counts)
    expected = np.stack([np.bincount(q[:, c].ravel(), minlength=256) for c in range(channels)])
    assert np.array_equal(counts, expected)
    for ngroups in (2, 5, 16):
        group = group_channels(channel_order(counts), ngroups)
        by_group = np.stack([expected[group == g].sum(axis=0) for g in range(ngroups)])
        assert np.array_equal(group_counts(counts, group, ngroups), by_group)
