"""The feature-tensor suite the codec benchmarks run on, built offline from models the repo can make.

Sources, by how real they are:
- ``trained``: the digits ResNet trained on scikit-learn's packaged digits (ReLU maps of real data).
- ``pretrained``: all-MiniLM-L6-v2 (packaged weights) hidden states of a padded sentence batch.
- ``untrained``: torchvision CNNs with random weights on scikit-learn's two sample photos.
- ``synthetic``: a Gaussian tensor (dense, no structure).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class SuiteTensor:
    """One feature tensor of the suite."""

    name: str
    source: str  # trained | pretrained | untrained | synthetic
    x: np.ndarray

    @property
    def real(self) -> bool:
        """Features of trained or pretrained weights (the ones the compression targets speak of)."""
        return self.source in ("trained", "pretrained")


def _head_output(name: str, split: str, inputs: tuple) -> np.ndarray:
    import torch

    from pipeline.models import feature_of, load_model

    loaded = load_model(name)
    head, _ = loaded.split(split)
    with torch.no_grad():
        out = head(*inputs)
    return feature_of(out).float().numpy()


def _digits(split: str, n: int) -> np.ndarray:
    import torch

    from pipeline.models import feature_of, split_model
    from pipeline.models.train import digits_data

    _, _, x_test, _ = digits_data()
    head, _ = split_model("digits-resnet", split)
    with torch.no_grad():
        return feature_of(head(x_test[:n])).float().numpy()


def _minilm(split: str) -> np.ndarray:
    from pipeline.evaluation.evaluate import SENTENCES
    from pipeline.models import load_model

    loaded = load_model("minilm")
    enc = loaded.tokenizer(SENTENCES, padding="max_length", max_length=48, return_tensors="pt")
    return _head_output("minilm", split, (enc["input_ids"], enc["attention_mask"]))


def _photos(size: int) -> tuple:
    import torch
    from sklearn.datasets import load_sample_images

    imgs = np.stack(load_sample_images().images).astype(np.float32) / 255.0  # (2, 427, 640, 3)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((t - mean) / std,)


def build(quick: bool = False) -> Iterator[SuiteTensor]:
    """Yield the suite's tensors (the quick suite is a subset with smaller inputs)."""
    import torch

    torch.manual_seed(0)
    yield SuiteTensor("digits-resnet/layer1", "trained", _digits("layer1", 64 if quick else 256))
    if not quick:
        yield SuiteTensor("digits-resnet/layer2", "trained", _digits("layer2", 256))
    yield SuiteTensor("minilm/encoder.layer.3", "pretrained", _minilm("encoder.layer.3"))
    if not quick:
        yield SuiteTensor("minilm/encoder.layer.1", "pretrained", _minilm("encoder.layer.1"))
    photos = _photos(160 if quick else 224)
    yield SuiteTensor("resnet18/layer1", "untrained", _head_output("resnet18", "layer1", photos))
    if not quick:
        one_photo = (photos[0][:1],)
        yield SuiteTensor(
            "resnet50/layer1", "untrained", _head_output("resnet50", "layer1", one_photo)
        )
        yield SuiteTensor(
            "mobilenet_v2/features.6",
            "untrained",
            _head_output("mobilenet_v2", "features.6", photos),
        )
    rng = np.random.default_rng(0)
    yield SuiteTensor(
        "gaussian",
        "synthetic",
        rng.normal(size=(4, 128, 28, 28) if not quick else (2, 64, 28, 28)).astype(np.float32),
    )
