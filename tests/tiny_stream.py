"""A tiny split CNN and stream configs for the Ray stream tests (shipped to Ray workers by value)."""

from __future__ import annotations

import sys

import ray.cloudpickle

from pipeline.stream.config import PipelineConfig, load_config

# Ray workers cannot import the tests folder: functions defined here travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def tiny_factory():
    """Head: conv+ReLU (8xHxW fp32 features: 8 KiB/sample at 16x16); tail: pool+linear. Seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return head, tail


def tiny_config(*overrides: str) -> PipelineConfig:
    """A stream of synthetic 3x16x16 inputs through :func:`tiny_factory`, plus ``overrides``."""
    base = ["model.name=tiny", "data.source=synthetic", "data.shape=[3,16,16]"]
    return load_config(None, [*base, *overrides], check_model=False)
