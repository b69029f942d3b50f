"""Split Hugging Face transformers after decoder/encoder layer k.

Wire structure (what a transformer head returns and its tail accepts) is a dict::

    {"hidden": FloatTensor (B, T, H),          # the big tensor: this goes through the codec
     "attention_mask": LongTensor (B, T),       # carried alongside unchanged (1 = real token)
     "position_ids": LongTensor (B or 1, T)}    # carried alongside unchanged

``feature_of(out)`` picks the tensor to encode; ``with_feature(out, t)`` puts a decoded
tensor back. Decoder LMs (Llama architecture and others laid out as ``model.layers``):
the head is embedding + layers[:k], the tail is layers[k:] + final norm + LM head and
returns logits. BERT-style encoders: head is embeddings + encoder.layer[:k], the tail
returns the last hidden state (B, T, H).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

WireDict = dict[str, torch.Tensor]
FEATURE_KEY = "hidden"


def feature_of(out: Any) -> torch.Tensor:
    """The tensor to encode from a head's output (the tensor itself or ``out["hidden"]``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and isinstance(out.get(FEATURE_KEY), torch.Tensor):
        return out[FEATURE_KEY]
    raise TypeError(
        f"head output must be a Tensor or a dict with {FEATURE_KEY!r}, got {type(out).__name__}"
    )


def with_feature(out: Any, feature: torch.Tensor) -> Any:
    """Copy of head output ``out`` with its encoded tensor replaced by ``feature``."""
    if isinstance(out, torch.Tensor):
        return feature
    new = dict(out)
    new[FEATURE_KEY] = feature
    return new


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose child/parameter dicts can be edited without touching the original."""
    new = copy.copy(module)
    new._modules = dict(module._modules)  # type: ignore[assignment]
    new._parameters = dict(module._parameters)  # type: ignore[assignment]
    new._buffers = dict(module._buffers)  # type: ignore[assignment]
    return new


def _positions(input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    if position_ids is not None:
        return position_ids
    return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is not None:
        return attention_mask
    return torch.ones_like(input_ids)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM laid out like Llama (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} is not a Llama-style causal LM (no model.layers)")
    return layers


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The layer list of a BERT-style encoder (``encoder.layer``)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} is not a BERT-style encoder (no encoder.layer)")
    return layers


def parse_layer_split(split: str | int, prefix: str, n_layers: int) -> int:
    """Number of layers in the head for ``split``: an int k (cut after k layers) or
    ``f"{prefix}.{i}"`` (cut after layer i, so k = i + 1); 1 <= k <= n_layers."""
    if isinstance(split, int) and not isinstance(split, bool):
        k = split
    elif isinstance(split, str) and split.isdigit():
        k = int(split)
    elif (
        isinstance(split, str)
        and split.startswith(prefix + ".")
        and split[len(prefix) + 1 :].isdigit()
    ):
        k = int(split[len(prefix) + 1 :]) + 1
    else:
        raise ValueError(
            f"split={split!r}: expected an int k or '{prefix}.<i>' (cut after layer i)"
        )
    if not 1 <= k <= n_layers:
        raise ValueError(
            f"split={split!r} cuts after {k} layers; the model has {n_layers} (1..{n_layers})"
        )
    return k


class _LayerHead(nn.Module):
    """A truncated transformer body (``self.body``) called on token ids; returns the wire dict."""

    body_kwargs: dict[str, Any] = {}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> WireDict:
        mask = _mask(input_ids, attention_mask)
        pos = _positions(input_ids, position_ids)
        out = self.body(
            input_ids=input_ids, attention_mask=mask, position_ids=pos, **self.body_kwargs
        )
        return {FEATURE_KEY: out.last_hidden_state, "attention_mask": mask, "position_ids": pos}


class CausalLMHead(_LayerHead):
    """Embedding + first k decoder layers of a Llama-style causal LM; returns the wire dict."""

    body_kwargs = {"use_cache": False}

    def __init__(self, lm: nn.Module, k: int) -> None:
        super().__init__()
        body = _shallow(lm.model)
        body.layers = nn.ModuleList(list(lm.model.layers)[:k])
        body.norm = nn.Identity()
        self.body = body
        self.k = k


class CausalLMTail(nn.Module):
    """Decoder layers k.. + final norm + LM head of a Llama-style causal LM; returns logits."""

    def __init__(self, lm: nn.Module, k: int) -> None:
        super().__init__()
        top = _shallow(lm)
        body = _shallow(lm.model)
        body.layers = nn.ModuleList(list(lm.model.layers)[k:])
        body.embed_tokens = None  # never used: the tail starts from hidden states
        top.model = body
        self.lm = top
        self.k = k

    def forward(self, wire: WireDict) -> torch.Tensor:
        out = self.lm(
            inputs_embeds=wire[FEATURE_KEY],
            attention_mask=wire["attention_mask"],
            position_ids=wire["position_ids"],
            use_cache=False,
        )
        return out.logits


class EncoderHead(_LayerHead):
    """Embeddings + first k layers of a BERT-style encoder; returns the wire dict."""

    def __init__(self, enc: nn.Module, k: int) -> None:
        super().__init__()
        body = _shallow(enc)
        encoder = _shallow(enc.encoder)
        encoder.layer = nn.ModuleList(list(enc.encoder.layer)[:k])
        body.encoder = encoder
        body.pooler = None
        self.body = body
        self.k = k


class EncoderTail(nn.Module):
    """Layers k.. of a BERT-style encoder; returns the last hidden state (B, T, H)."""

    def __init__(self, enc: nn.Module, k: int) -> None:
        super().__init__()
        encoder = _shallow(enc.encoder)
        encoder.layer = nn.ModuleList(list(enc.encoder.layer)[k:])
        self.encoder = encoder
        self.config = enc.config
        self.k = k

    def forward(self, wire: WireDict) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        hidden = wire[FEATURE_KEY]
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=wire["attention_mask"]
        )
        out = self.encoder(hidden, attention_mask=mask, position_ids=wire["position_ids"])
        return out.last_hidden_state


class FullModel(nn.Module):
    """An unsplit Hugging Face model with the head's call signature: returns the logits of a causal LM, or
    the last hidden state of an encoder."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.model = model
        self.causal = causal

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        pos = _positions(input_ids, position_ids)
        if self.causal:
            out = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False
            )
            return out.logits
        return self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=pos
        ).last_hidden_state


def split_causal_lm(lm: nn.Module, split: str | int) -> tuple[CausalLMHead, CausalLMTail]:
    """Cut a Llama-style causal LM after decoder layer ``split`` (see ``parse_layer_split``)."""
    k = parse_layer_split(split, "layers", len(decoder_layers(lm)))
    return CausalLMHead(lm, k).eval(), CausalLMTail(lm, k).eval()


def split_encoder(enc: nn.Module, split: str | int) -> tuple[EncoderHead, EncoderTail]:
    """Cut a BERT-style encoder after layer ``split`` (int k or ``"encoder.layer.<i>"``)."""
    k = parse_layer_split(split, "encoder.layer", len(encoder_layers(enc)))
    return EncoderHead(enc, k).eval(), EncoderTail(enc, k).eval()
