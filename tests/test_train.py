"""Digits data set and the cached, trained digits ResNet."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.train import CHECKPOINT_NAME, accuracy, digits_data, digits_resnet


def test_digits_data_shapes_and_fixed_split():
    x_tr, y_tr, x_te, y_te = digits_data()
    assert x_tr.dtype == torch.float32 and x_tr.shape[1:] == (1, 32, 32)
    assert len(x_tr) + len(x_te) == 1797 and len(y_te) == len(x_te)
    assert float(x_tr.min()) >= 0.0 and float(x_tr.max()) <= 1.0
    assert set(y_te.tolist()) == set(range(10))
    again = digits_data()
    assert torch.equal(again[3], y_te) and torch.equal(again[2], x_te)
    other = digits_data(seed=1)
    assert not torch.equal(other[3], y_te)
    small = digits_data(size=8)
    assert small[0].shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="size"):
        digits_data(size=4)


def test_trained_digits_resnet_is_accurate():
    """Default cache (trains once, ~20 s on one core, then loads)."""
    model = digits_resnet(verbose=False)
    assert not model.training
    _, _, x_te, y_te = digits_data()
    acc = accuracy(model, x_te, y_te)
    assert acc >= 0.95
    assert abs(acc - model.test_accuracy) < 1e-6


def test_checkpoint_is_cached_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITSTREAM_CACHE", str(tmp_path))
    first = digits_resnet(epochs=1, verbose=False)  # short run: only the caching is under test
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    second = digits_resnet(epochs=1, verbose=False)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert second.test_accuracy == first.test_accuracy
    with pytest.raises(ValueError, match="epochs"):
        digits_resnet(cache_dir=tmp_path / "other", epochs=0, verbose=False)
