"""The two halves of a split causal LM, each with its own KV cache, for split generation.

``CachedHead`` (the edge) is the embedding and the first k decoder layers; ``CachedTail`` (the cloud)
is layers k.., the final norm and the LM head. Each side keeps a cache for its own layers only, so
after the prompt a step moves one hidden vector up and one token id down. The modules themselves hold
no state: a cache is made with ``new_cache()`` and passed to every call, one per sequence; with
``cache=None`` a call recomputes the whole sequence it is given (the uncached baseline).

The tail's attention layers are shallow copies (the weights are shared with the model) renumbered from
0, so the tail's cache holds exactly its own layers and Hugging Face sizes its masks from them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.models.hf_split import (
    CausalLMHead,
    CausalLMTail,
    _shallow,
    decoder_layers,
    parse_layer_split,
)


def new_cache() -> Any:
    """An empty KV cache for one side of one sequence (layers are added as they are first used)."""
    from transformers import DynamicCache

    return DynamicCache()


def _check_full_attention(lm: nn.Module) -> None:
    types = getattr(lm.config, "layer_types", None) or []
    other = sorted({t for t in types if t != "full_attention"})
    if other:
        raise ValueError(
            f"split generation needs full-attention decoder layers (Llama architecture); "
            f"{type(lm).__name__} has {other}"
        )


def _call(module: nn.Module, x: torch.Tensor, start: int, cache: Any, **inputs: Any) -> Any:
    """``module`` on ``x``'s positions ``start..start+T-1``, reading and filling ``cache`` if any."""
    pos = torch.arange(start, start + x.shape[1], device=x.device).unsqueeze(0)
    return module(position_ids=pos, cache=cache, use_cache=cache is not None, **inputs)


def _check_shape(x: torch.Tensor, dims: int, what: str) -> None:
    if x.dim() != dims or x.shape[0] != 1:
        shape = "(1, T)" if dims == 2 else "(1, T, H)"
        raise ValueError(f"{what} must have shape {shape}, got {tuple(x.shape)}")


class CachedHead(CausalLMHead):
    """Embedding + first k decoder layers; ``forward(ids, start, cache)`` -> hidden states (1, T, H)."""

    def forward(self, input_ids: torch.Tensor, start: int, cache: Any = None) -> torch.Tensor:
        """Hidden states after layer k of ``input_ids`` (1, T) at positions ``start..start+T-1``.

        With a cache, ``start`` must equal the number of positions the cache already holds."""
        _check_shape(input_ids, 2, "input_ids")
        _check_start(cache, start)
        out = _call(self.body, input_ids, start, cache, input_ids=input_ids)
        return out.last_hidden_state


class CachedTail(CausalLMTail):
    """Decoder layers k.. + final norm + LM head; ``forward(hidden, start, cache)`` -> the logits of
    the last position (1, V)."""

    def __init__(self, lm: nn.Module, k: int) -> None:
        super().__init__(lm, k)
        layers = []
        for i, layer in enumerate(self.lm.model.layers):
            attn = getattr(layer, "self_attn", None)
            if attn is None or not hasattr(attn, "layer_idx"):
                raise ValueError(
                    f"{type(layer).__name__} has no self_attn.layer_idx: not a Llama-style layer"
                )
            new, new_attn = _shallow(layer), _shallow(attn)
            new_attn.layer_idx = i  # this side's cache holds only the tail's layers
            new.self_attn = new_attn
            layers.append(new)
        self.lm.model.layers = nn.ModuleList(layers)

    def forward(self, hidden: torch.Tensor, start: int, cache: Any = None) -> torch.Tensor:
        """Logits of the last of ``hidden``'s (1, T, H) positions, which start at ``start``."""
        _check_shape(hidden, 3, "hidden")
        if not len(self.lm.model.layers):
            cache = None  # the head took every layer: nothing here to cache
        else:
            _check_start(cache, start)
        out = _call(self.lm, hidden, start, cache, inputs_embeds=hidden, logits_to_keep=1)
        return out.logits[:, -1]


def _check_start(cache: Any, start: int) -> None:
    if cache is not None:
        held = cache.get_seq_length()
        if start != held:
            raise ValueError(f"start={start} but the cache holds {held} positions")
    elif start != 0:
        raise ValueError(
            f"without a cache the whole sequence is recomputed: start must be 0, got {start}"
        )


def split_cached(lm: nn.Module, split: str | int) -> tuple[CachedHead, CachedTail]:
    """Cut a Llama-style causal LM after decoder layer ``split`` (an int k or ``"layers.<i>"``) into
    halves that keep their own KV caches."""
    k = parse_layer_split(split, "layers", len(decoder_layers(lm)))
    _check_full_attention(lm)
    return CachedHead(lm, k).eval(), CachedTail(lm, k).eval()
