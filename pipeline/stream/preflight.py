"""Everything a stream checks before Ray starts: the model loads and splits, the source can feed its
head, and the codec settings fit the head's features. A text model (a sentence encoder or a decoder LM)
gets a text source, tokenized with its own tokenizer (or bytes, for a model without one).

:func:`preflight` runs the head once on sample 0, in the driver, so settings that depend on the
features (``codec.axis`` against their rank) fail here as a :class:`ConfigError` naming the key,
instead of inside an actor after Ray has started. It also measures one sample's frame, which sets the
stall watchdog's default and the decoders' allocation bound.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.stream.config import ConfigError, PipelineConfig
from pipeline.stream.data import (
    BYTE_TOKENIZER,
    TEXT_KINDS,
    UNBOUNDED,
    SampleSource,
    SourceSpec,
    TextSpec,
    edge_ranges,
    resolve_source,
    resolve_text_source,
)
from pipeline.stream.rate import RateProfile

ModelFactory = Callable[[], tuple[Any, Any]]

STALL_TIMEOUT_FLOOR_S = 60.0
"""The watchdog's default never goes below this (model loading, restarts, slow first batches)."""

STALL_TIMEOUT_BATCHES = 5.0
"""... and is this many times the slowest expected batch on the configured link."""


@dataclass(frozen=True)
class Preflight:
    """What the stream learned about its model and data before starting any actor."""

    model: dict[
        str, Any
    ]  # name, split, kind, trained, weights_source, input_shape (for the report)
    factory: ModelFactory  # picklable, builds (head, tail) in each actor
    source: SourceSpec
    feature_shape: tuple[int, ...]  # one sample's head output; text: (max_tokens, hidden size)
    frame_bytes: int  # one sample's feature as a frame of codec.kind
    stall_timeout_s: float  # flow.stall_timeout_s, or its default for this link and frame size
    profile: RateProfile | None = None  # rate.mode=adaptive: the rate-fidelity profile in use
    edges: tuple[tuple[int, int], ...] = ((0, 0),)  # per edge: (first sample id, samples)
    rate_sps: float | None = None  # data.rate_sps, a video's own rate for "native"
    class_names: tuple[str, ...] | None = None  # the classifier's names (weights, or class folders)
    prediction: str = "classes"  # what an output row carries: classes, embedding or token

    @property
    def endless(self) -> bool:
        """True when the source has no end (stopped by --duration or a signal)."""
        return self.edges[0][1] >= UNBOUNDED

    @property
    def feature_elements(self) -> int:
        """Values in one sample's feature (the decoders' per-frame allocation bound)."""
        return math.prod(self.feature_shape)

    @property
    def text(self) -> bool:
        """True when the stream carries a text model's features (hidden states and their masks)."""
        return self.model.get("kind") in TEXT_KINDS


def _model_kwargs(cfg: PipelineConfig) -> dict[str, Any]:
    return {} if cfg.model.input_size is None else {"input_size": cfg.model.input_size}


def registry_factory(cfg: PipelineConfig) -> ModelFactory:
    """A picklable zero-argument callable building ``(head, tail)`` for ``cfg.model``."""
    from pipeline.models import split_model

    m = cfg.model
    return functools.partial(split_model, m.name, m.split, m.weights, **_model_kwargs(cfg))


def _registry_model(cfg: PipelineConfig) -> tuple[dict[str, Any], Any]:
    """Load the registry model once in the driver (trains or caches weights before the actors load
    them): the report's model block, and the loaded model."""
    from pipeline.models import load_model

    try:
        loaded = load_model(cfg.model.name, cfg.model.weights, **_model_kwargs(cfg))
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"model.weights: {exc}") from None
    model = {
        "name": cfg.model.name,
        "split": cfg.model.split,
        "kind": loaded.kind,
        "trained": bool(loaded.trained),
        "weights_source": loaded.weights_source,
        "input_shape": list(loaded.input_shape) or None,
    }
    return model, loaded


def _tokenizer_fields(loaded: Any) -> dict[str, Any]:
    """How a text model's source tokenizes: its tokenizer's local directory (or bytes when it has
    none), the longest sequence it takes and its vocabulary size."""
    config = loaded.raw.config
    max_tokens = int(getattr(config, "max_position_embeddings", None) or 512)
    vocab = int(getattr(config, "vocab_size", None) or 1000)
    tok = loaded.tokenizer
    if tok is None:
        return {"tokenizer": BYTE_TOKENIZER, "max_tokens": max_tokens, "vocab_size": vocab}
    from pathlib import Path

    where = str(getattr(tok, "name_or_path", "") or "")
    if not Path(where).is_dir():
        raise ConfigError(
            f"model.name: the tokenizer of {loaded.name!r} is not in a local directory"
        )
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < max_tokens:
        max_tokens = limit
    return {"tokenizer": where, "max_tokens": max_tokens, "vocab_size": vocab}


def _weights_enum(cfg: PipelineConfig) -> Any:
    """The torchvision weights entry ``model.weights`` names (e.g. ``IMAGENET1K_V1``), or None."""
    w = cfg.model.weights
    if w is None or "/" in w or "." in w:
        return None
    try:
        from torchvision.models import get_model_weights

        enum = get_model_weights(cfg.model.name)
        return enum.DEFAULT if w == "DEFAULT" else enum[w]
    except (ValueError, KeyError, ImportError):
        return None


def _transform(
    cfg: PipelineConfig, input_shape: Any = None
) -> tuple[Any, tuple[str, ...] | None]:
    """The images' preprocessing and the class names: ``data.transform`` if given, else the
    weights' own where torchvision's weights define them, else a resize and centre crop to the
    model's input size (``input_shape``, when the model has one; no normalization)."""
    from pipeline.stream.sources import Transform

    weights = _weights_enum(cfg)
    t = cfg.data.transform
    if t is not None:
        transform = Transform(
            t.resize, t.crop, tuple(t.mean), tuple(t.std), interpolation=t.interpolation
        )
    elif weights is not None:
        transform = Transform.from_torchvision(weights)
    elif input_shape and len(input_shape) == 3:  # at least one size: the model's input
        transform = Transform(resize=int(input_shape[-1]), crop=int(input_shape[-1]))
    else:
        transform = None
    names = None
    if weights is not None and weights.meta.get("categories"):
        names = tuple(str(c) for c in weights.meta["categories"])
    return transform, names


def _user_source(
    cfg: PipelineConfig, model: dict[str, Any], loaded: Any
) -> tuple[SourceSpec, tuple[str, ...] | None]:
    """The user's data (files, or an iterable handed over by the driver) and the class names."""
    d = cfg.data
    transform, names = _transform(cfg, model.get("input_shape"))
    text = None
    if model["kind"] in TEXT_KINDS:
        text = TextSpec((), origin=d.source, **_tokenizer_fields(loaded))
    if d.source == "iterable":
        return SourceSpec("iterable", (), cfg.seed, text, None, transform), names
    from pipeline.stream.sources import describe

    assert d.path is not None
    try:
        reader = describe(
            d.source, path=d.path, column=d.column, label_column=d.label_column,
            key_column=d.key_column, loop=d.loop, transform=transform,
        )  # fmt: skip
    except ValueError as exc:
        msg = str(exc)
        raise ConfigError(
            msg if msg.startswith(("data.", "model.")) else f"data.path: {msg}"
        ) from None
    if reader.text and text is None:
        raise ConfigError(
            f"data.column: the table's text needs a text model (minilm, llama-tiny, ...); "
            f"{cfg.model.name!r} is a {model['kind']} model"
        )
    if not reader.text and text is not None:
        raise ConfigError(f"data.source: a text model reads text, not the images of {d.path!r}")
    if reader.size == 0:
        raise ConfigError(f"data.path: {d.path!r} holds no inputs")
    if names is None and reader.class_names:
        names = tuple(reader.class_names)
    return SourceSpec(d.source, (), cfg.seed, text, reader, transform), names


def _source(cfg: PipelineConfig, model: dict[str, Any], loaded: Any) -> SourceSpec:
    """The source for the model: text for text models (``data.source`` auto or text), digits or
    synthetic images otherwise."""
    d = cfg.data
    try:
        if model["kind"] in TEXT_KINDS:
            fields = _tokenizer_fields(loaded)
            return resolve_text_source(d.source, d.path, d.shape, cfg.seed, fields)
        if d.source == "text" or d.path is not None:
            key = "data.source" if d.source == "text" else "data.path"
            raise ConfigError(
                f"{key}: text needs a text model (minilm, llama-tiny or a Hugging Face directory); "
                f"{cfg.model.name!r} is a {model['kind']} model"
            )
        shape = d.shape if d.shape is not None else model.get("input_shape")
        return resolve_source(d.source, cfg.model.name, shape, cfg.model.input_size, cfg.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def default_stall_timeout(cfg: PipelineConfig, frame_bytes: int) -> float:
    """A few times the slowest expected batch: a full batch of frames on the slowest edge's link
    (``frame_bytes`` is one sample's frame)."""
    if cfg.flow.stall_timeout_s is not None:
        return float(cfg.flow.stall_timeout_s)
    if cfg.link.mode != "emulated":
        return STALL_TIMEOUT_FLOOR_S
    from pipeline.stream.config import edge_link
    from pipeline.stream.link import load_trace, resolve_link, trace_mean_mbps

    rates = []
    for e in range(cfg.fleet.edges):
        profile, kw = edge_link(cfg, e)
        spec = resolve_link(profile, **kw)
        if spec.trace is not None:
            rates.append(trace_mean_mbps(load_trace(spec.trace)) / 4)  # traces dip below the mean
        elif spec.bandwidth_mbps is not None:
            rates.append(spec.bandwidth_mbps)
    if not rates:
        return STALL_TIMEOUT_FLOOR_S
    batch_s = cfg.batching.max_batch_size * (frame_bytes + 64) * 8 / (min(rates) * 1e6)
    return max(STALL_TIMEOUT_FLOOR_S, STALL_TIMEOUT_BATCHES * batch_s)


FIRST_TRIES = 16
"""Preflight runs the head on the first of the source's first inputs that loads."""


def _first_input(spec: SourceSpec, first: Any = None) -> Any:
    """One input of the source, to run the head on: sample 0, or the first that loads (the user's
    files), or the iterable's first item ``first``."""
    if spec.kind == "iterable":
        if first is None:
            raise ConfigError("data.source: an iterable source needs its inputs (the Python API)")
        got = SampleSource(spec).load(np.zeros(1, dtype=np.int64), [first])
    elif spec.reader is not None:
        got = SampleSource(spec).load(np.arange(min(FIRST_TRIES, spec.reader.size or FIRST_TRIES)))
    else:
        return SampleSource(spec).get([0])[0]
    if len(got.good) == 0:
        reasons = "; ".join(f"{got.keys[j]}: {r}" for j, r in list(got.rejected.items())[:3])
        where = "data.source" if spec.kind == "iterable" else "data.path"
        raise ConfigError(f"{where}: none of the first inputs loads ({reasons})")
    x = got.x
    if isinstance(x, dict):
        return {k: v[:1] for k, v in x.items()}
    return np.asarray(x[:1])


def _features(
    cfg: PipelineConfig, factory: ModelFactory, spec: SourceSpec, first: Any = None
) -> Any:
    """Run the head on sample 0 of the source; any failure is the model or data config's fault.
    Returns one sample's feature: a text model's is its valid tokens' hidden rows ``(tokens, H)``."""
    import torch

    try:
        head, _ = factory()
    except Exception as exc:
        raise ConfigError(f"model: the model factory failed: {exc}") from None
    x = _first_input(spec, first)
    try:
        with torch.inference_mode():
            if isinstance(x, dict):
                feat = head.eval()(**{k: torch.from_numpy(v) for k, v in x.items()})
            else:
                feat = head.eval()(torch.from_numpy(x))
    except Exception as exc:
        what = (
            "the tokenized text" if isinstance(x, dict) else f"inputs of shape {list(x.shape[1:])}"
        )
        raise ConfigError(f"data.shape: the head cannot run on {what}: {exc}") from None
    if spec.text is not None:
        keys = ("hidden", "attention_mask", "position_ids")
        if not isinstance(feat, dict) or not all(
            isinstance(feat.get(k), torch.Tensor) for k in keys
        ):
            raise ConfigError(f"model.split: a text model's head must return a dict of {keys}")
        return feat["hidden"][0][feat["attention_mask"][0] != 0].float().numpy()
    if not isinstance(feat, torch.Tensor):
        raise ConfigError(
            f"model.split: the head returns {type(feat).__name__}; the stream carries one tensor"
        )
    return feat[0].float().numpy()


def _check_codec(cfg: PipelineConfig, feat: Any, text: bool = False) -> int:
    """``codec.axis`` against the features' rank, then one frame through encode and decode. A text
    model's frames hold valid tokens' rows ``(tokens, H)``, whose axes are a sample's own."""
    from codec import CodecError
    from pipeline.stream.wire import WireError, batch_settings, decode_tensor, encode_tensor

    c = cfg.codec
    if c.axis is not None and not -feat.ndim <= c.axis < feat.ndim:
        raise ConfigError(
            f"codec.axis: {c.axis} is out of range for the head's {feat.ndim}-d per-sample "
            f"features (shape {list(feat.shape)})"
        )
    x = feat if text else feat[None]
    try:
        s = c.settings()
        s = s if text else batch_settings(s)  # frames hold (n, ...) tensors
        frame = encode_tensor(x, c.kind, s, zstd_level=c.level)
        decode_tensor(frame, max_elements=feat.size)
    except (CodecError, WireError) as exc:
        raise ConfigError(
            f"codec: one sample's feature does not code with these settings: {exc}"
        ) from None
    return len(frame)


def _rate_profile(cfg: PipelineConfig, factory: ModelFactory, spec: SourceSpec, feat: Any):
    """The adaptive stream's profile: from ``rate.profile``, or measured now on the stream's first
    ``rate.profile_samples`` inputs."""
    from pipeline.stream.rate import load_profile

    r = cfg.rate
    if r.profile is not None:
        try:
            return load_profile(r.profile, cfg.model.name, cfg.model.split)
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"rate.profile: {exc}") from None
    import torch

    from pipeline.stream.profiling import build_profile, profile_settings

    head, tail = factory()
    x, _ = SampleSource(spec).get(list(range(r.profile_samples)))
    channel = 0 if r.per_channel and feat.ndim >= 2 else None
    settings = profile_settings(r.bits, cfg.codec.level, channel)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_profile(
            head.eval(), tail.eval(), x, settings,
            model=cfg.model.name, split=cfg.model.split,
            source=f"start-up: the stream's first {r.profile_samples} samples",
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def preflight(
    cfg: PipelineConfig, factory: ModelFactory | None = None, first: Any = None
) -> Preflight:
    """Check ``cfg`` against its model and data without Ray; raises :class:`ConfigError`.

    ``factory`` replaces the model registry (any picklable zero-argument callable returning
    ``(head, tail)`` torch modules); ``first`` is an iterable source's first item."""
    loaded = None
    if factory is None:
        model, loaded = _registry_model(cfg)
        factory = registry_factory(cfg)
    else:
        model = {"name": cfg.model.name, "split": cfg.model.split, "kind": "custom"}
        model.update(trained=None, weights_source="user factory", input_shape=None)
    names = None
    if cfg.data.source in ("images", "video", "table", "iterable"):
        spec, names = _user_source(cfg, model, loaded)
    else:
        spec = _source(cfg, model, loaded)
    text = spec.text is not None
    if text and cfg.rate.mode == "adaptive":
        raise ConfigError(
            f"rate.mode: adaptive rate control profiles image models only; {cfg.model.name!r} is a "
            "text model (use rate.mode=fixed and choose codec.bits)"
        )
    if text:
        model["tokenizer"] = spec.text.tokenizer  # type: ignore[union-attr]
    if text and spec.kind == "iterable":
        raise ConfigError(
            "data.source: an iterable of text is not supported yet; use data.source=table"
        )
    feat = _features(cfg, factory, spec, first)
    frame_bytes = _check_codec(cfg, feat, text)
    if cfg.rate.mode == "adaptive" and spec.user_data and cfg.rate.profile is None:
        raise ConfigError(
            "rate.profile: an adaptive stream of the user's data needs a profile file (start-up "
            "profiles are measured on the built-in sources)"
        )
    profile = _rate_profile(cfg, factory, spec, feat) if cfg.rate.mode == "adaptive" else None
    shape = (spec.text.max_tokens, feat.shape[-1]) if spec.text is not None else feat.shape
    size = spec.reader.size if spec.reader is not None else None
    if spec.kind == "iterable":
        size = None
    if cfg.samples is not None and size is not None and cfg.samples > size:
        raise ConfigError(f"samples: {cfg.samples} is more than the {size} inputs at data.path")
    rate = cfg.data.rate_sps
    if rate == "native":
        rate = spec.reader.fps if spec.reader is not None else None
        if not rate:
            raise ConfigError("data.rate_sps: the video gives no frame rate; set one")
    kind = model.get("kind")
    prediction = {"encoder": "embedding", "decoder": "token"}.get(str(kind), "classes")
    head_ms, tail_ms = cfg.model.head_device_ms, cfg.model.tail_device_ms
    if head_ms is not None or tail_ms is not None:  # after the probes above: they time nothing
        from pipeline.models.device_time import simulated_halves

        factory = functools.partial(simulated_halves, factory, head_ms, tail_ms)
        model["simulated_device_ms"] = {"head": head_ms, "tail": tail_ms}
    return Preflight(
        model=model,
        factory=factory,
        source=spec,
        feature_shape=tuple(int(d) for d in shape),
        frame_bytes=frame_bytes,
        stall_timeout_s=default_stall_timeout(cfg, frame_bytes),
        profile=profile,
        edges=tuple(edge_ranges(cfg.samples, cfg.fleet.edges, size)),
        rate_sps=None if rate is None else float(rate),
        class_names=names,
        prediction=prediction,
    )
