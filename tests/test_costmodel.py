"""The cost model: predicted sizes match measured ones, and its choice is close to the exhaustive best."""

import numpy as np
import pytest

from codec import CodecError, _kernels, api, costmodel, represent
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


class TestLeanChoice:
    """The lean levels' choice in C (costmodel.lean_choice) is choose()'s, candidate for candidate."""

    RNG = np.random.default_rng(5)

    @classmethod
    def tensors(cls):
        smooth = np.cumsum(cls.RNG.normal(size=(4, 12, 480)), axis=-1)
        return {
            "gaussian": cls.RNG.normal(size=(4, 32, 28, 28)).astype(np.float32),
            "relu-light": np.maximum(cls.RNG.normal(size=(2, 16, 40, 40)) + 0.8, 0).astype(np.float32),
            "relu": np.maximum(cls.RNG.normal(size=(2, 16, 40, 40)), 0).astype(np.float32),
            "smooth": (smooth / np.abs(smooth).max()).astype(np.float32),
            "rows": np.repeat(cls.RNG.normal(size=(1, 384)), 48, axis=0).astype(np.float32),
        }

    def test_the_same_choice_and_prediction_as_choose(self):
        compared = 0
        for name, x in self.tensors().items():
            for bits in range(1, 9):
                for level in (1, 2, 3):
                    sampled = x.size >= costmodel.LEAN_MIN_SYMBOLS
                    p = api.prepare(x, bits, fast_stats=level == 1, histogram=not sampled)
                    for blog in (12, 16):
                        lean = costmodel.lean_choice(p.info, level, blog)
                        if lean is None:
                            continue
                        best, _ = costmodel.choose(p.info, level, blog)
                        assert (lean.kind, lean.param) == (best.kind, best.param), (name, bits, level)
                        assert [s.coding for s in lean.streams] == [s.coding for s in best.streams]
                        assert lean.predicted_bytes == best.predicted_bytes
                        compared += 1
        assert compared > 100

    def test_it_leaves_other_cases_to_choose(self):
        x = np.maximum(self.RNG.normal(size=(2, 16, 40, 40)), 0).astype(np.float32)  # half zeros
        p = api.prepare(x, 8, histogram=False)
        assert costmodel.lean_choice(p.info, 3, 16) is None  # sparse rows are weighed at level 3
        assert costmodel.lean_choice(p.info, 4, 16) is None  # contexts from level 4
        per_channel = api.prepare(x, 8, axis=1, histogram=False)
        assert costmodel.lean_choice(per_channel.info, 2, 16) is None
        small = api.prepare(x[:, :1, :10], 8, histogram=False)
        assert costmodel.lean_choice(small.info, 2, 16) is None

    def test_bad_arguments_are_a_codec_error(self):
        q = np.zeros(8192, np.uint8)
        starts, dist = np.array([0], np.int64), np.array([1], np.int64)
        good = (q, 8, starts, 1024, dist, None, 16, 5, 0.6)
        assert _kernels.lean_choice(*good)[0] == represent.DELTA_NIBBLE  # no zero-point symbol: costed
        assert _kernels.lean_choice(q, 8, starts, 1024, dist, None, 16, 0, 0.6) is None  # all zero points
        for k, value in [(1, 0), (2, np.array([8000], np.int64)), (3, 1023), (4, np.arange(1, 5, dtype=np.int64)),
                         (5, np.zeros(4, np.uint32)), (6, 40), (7, 256)]:  # fmt: skip
            args = list(good)
            args[k] = value
            with pytest.raises(CodecError):
                _kernels.lean_choice(*args)
