"""Pipeline configuration: a validated pydantic model loaded from YAML plus ``key=value`` overrides.

Every error is a :class:`ConfigError` (a ``ValueError``) naming the offending dotted key, and
all checks (unknown keys, ranges, model / split / link profile names) run in
:func:`load_config`, i.e. before any Ray actor starts. The schema itself (every section's model)
is in :mod:`pipeline.stream.config_schema`; its names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.stream.config_schema import (
    BUILT_IN_SOURCES,
    DEFAULT_SAMPLES,
    FILE_SOURCES,
    LEVELS,
    STAGES,
    AutoscaleConfig,
    BatchingConfig,
    CodecConfig,
    DataConfig,
    FidelityConfig,
    FleetConfig,
    FlowConfig,
    LinkConfig,
    LinkOverride,
    ModelConfig,
    OutputConfig,
    PipelineConfig,
    PlacementConfig,
    PoolSize,
    RateConfig,
    RayConfig,
    ReplicasConfig,
    TransformConfig,
)

__all__ = [
    "BUILT_IN_SOURCES",
    "DEFAULT_SAMPLES",
    "FILE_SOURCES",
    "LEVELS",
    "LINK_KEYS",
    "STAGES",
    "AutoscaleConfig",
    "BatchingConfig",
    "CodecConfig",
    "ConfigError",
    "DataConfig",
    "FidelityConfig",
    "FleetConfig",
    "FlowConfig",
    "LinkConfig",
    "LinkOverride",
    "ModelConfig",
    "OutputConfig",
    "PipelineConfig",
    "PlacementConfig",
    "PoolSize",
    "RateConfig",
    "RayConfig",
    "ReplicasConfig",
    "TransformConfig",
    "apply_overrides",
    "config_to_dict",
    "edge_link",
    "link_spec_kwargs",
    "load_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key at fault."""


def _parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (``1`` -> int, ``null`` -> None, ``[1,2]`` -> list)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override {item!r} has an empty key")
        node = data
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a section, cannot set {key}")
            node = nxt
        node[parts[-1]] = _parse_value(raw)
    return data


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config: " + "; ".join(lines)


def _check_model(cfg: PipelineConfig) -> None:
    """Model name and split must be known to ``pipeline.models`` (imported lazily)."""
    try:
        from pipeline.models import SPLIT_POINTS
    except ImportError as exc:  # pragma: no cover - the model registry is missing
        raise ConfigError(f"model.name: cannot check {cfg.model.name!r}: {exc}") from exc
    if cfg.model.name not in SPLIT_POINTS:
        raise ConfigError(
            f"model.name: unknown model {cfg.model.name!r}; choose from {sorted(SPLIT_POINTS)}"
        )
    splits = SPLIT_POINTS[cfg.model.name]
    if cfg.model.split not in splits:
        raise ConfigError(
            f"model.split: unknown split {cfg.model.split!r} for {cfg.model.name}; "
            f"choose from {list(splits)}"
        )


LINK_KEYS = (
    "bandwidth_mbps", "delay_ms", "jitter_ms", "loss", "trace", "mtu", "corrupt", "outages"
)  # fmt: skip


def link_spec_kwargs(cfg: PipelineConfig) -> dict[str, Any]:
    """The ``link.*`` keys that override the profile (None = keep the profile's value)."""
    out: dict[str, Any] = {k: getattr(cfg.link, k) for k in LINK_KEYS}
    out["seed"] = cfg.seed
    return out


def edge_link(cfg: PipelineConfig, edge: int) -> tuple[str | None, dict[str, Any]]:
    """``(profile, overrides)`` of edge ``edge``'s link: the base ``link.*`` with its entry of
    ``fleet.links`` applied (a profile or trace there replaces the base link). Each edge's jitter,
    loss and corruption draw from their own seed."""
    profile, kw = cfg.link.profile, link_spec_kwargs(cfg)
    kw["seed"] = cfg.seed + edge
    if edge < len(cfg.fleet.links):
        o = cfg.fleet.links[edge]
        if o.profile is not None or o.trace is not None:
            profile = o.profile
            kw.update({k: None for k in LINK_KEYS})
        kw.update({k: getattr(o, k) for k in LINK_KEYS if getattr(o, k) is not None})
    return profile, kw


def _check_link(cfg: PipelineConfig) -> None:
    """The link profile must exist, the spec must be valid and the trace file readable."""
    if cfg.link.mode != "emulated":
        if cfg.link.corrupt:
            raise ConfigError("link.corrupt: only the emulated link can corrupt frames (link.mode)")
        if cfg.link.outages:
            raise ConfigError(
                "link.outages: only the emulated link takes configured outages (link.mode); take "
                "a real link down with scripts/netns_link.py"
            )
        return
    from pipeline.stream.link import PROFILES, resolve_link, trace_path

    if cfg.link.profile is not None and cfg.link.profile not in PROFILES:
        raise ConfigError(
            f"link.profile: unknown profile {cfg.link.profile!r}; choose from {sorted(PROFILES)}"
        )
    for edge in range(cfg.fleet.edges):
        where = "link" if edge >= len(cfg.fleet.links) else f"fleet.links.{edge}"
        profile, kw = edge_link(cfg, edge)
        if profile is not None and profile not in PROFILES:
            raise ConfigError(
                f"{where}.profile: unknown profile {profile!r}; choose from {sorted(PROFILES)}"
            )
        try:
            spec = resolve_link(profile, **kw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if spec.trace is not None and not trace_path(spec.trace).is_file():
            raise ConfigError(f"{where}.trace: file not found: {spec.trace!r}")


def _check_combinations(cfg: PipelineConfig) -> None:
    """Rules that tie two keys together, each reported under the key to change."""
    lo, hi = LEVELS.get(cfg.codec.kind, (cfg.codec.level, cfg.codec.level))
    if not lo <= cfg.codec.level <= hi:
        raise ConfigError(
            f"codec.level: {cfg.codec.level} is out of range for codec.kind={cfg.codec.kind} "
            f"({lo}..{hi})"
        )
    if cfg.codec.kind == "int8-zstd" and cfg.codec.bits != 8:
        raise ConfigError(
            f"codec.bits: codec.kind=int8-zstd quantizes to 8 bits, not {cfg.codec.bits}"
        )
    if cfg.codec.axis is not None and cfg.codec.kind != "ours":
        raise ConfigError(
            f"codec.axis: per-channel quantization needs codec.kind=ours, not {cfg.codec.kind}"
        )
    if cfg.codec.clip is not None and cfg.codec.kind != "ours":
        raise ConfigError(f"codec.clip: clipping needs codec.kind=ours, not {cfg.codec.kind}")
    if len(cfg.fleet.links) > cfg.fleet.edges:
        raise ConfigError(
            f"fleet.links: {len(cfg.fleet.links)} entries for fleet.edges={cfg.fleet.edges}"
        )
    if cfg.fleet.links and cfg.link.mode != "emulated":
        raise ConfigError("fleet.links: per-edge links need link.mode=emulated")
    if cfg.fleet.edges_per_process > 1 and not cfg.placement.fuse:
        raise ConfigError(
            "fleet.edges_per_process: edges share a process only as fused edge actors "
            "(placement.fuse=true)"
        )
    r = cfg.rate
    if r.mode == "adaptive":
        if r.latency_slo_ms is None:
            raise ConfigError("rate.latency_slo_ms: an adaptive stream needs a latency target")
        if cfg.codec.kind != "ours":
            raise ConfigError(f"rate.mode: adaptive needs codec.kind=ours, not {cfg.codec.kind}")
    if r.profile is not None and not Path(r.profile).is_file():
        raise ConfigError(f"rate.profile: file not found: {r.profile!r}")
    _check_data(cfg)
    b = cfg.batching
    if b.min_batch_size > b.max_batch_size:
        raise ConfigError(
            f"batching.min_batch_size: {b.min_batch_size} is larger than "
            f"batching.max_batch_size ({b.max_batch_size})"
        )


def _check_data(cfg: PipelineConfig) -> None:
    """The source's keys: a path where one is read, and only the keys that source uses."""
    d = cfg.data
    if d.source in FILE_SOURCES:
        if d.path is None:
            raise ConfigError(f"data.path: data.source={d.source} reads the files at data.path")
        if d.source != "images" and not Path(d.path).is_file():
            what = "no such file" if not Path(d.path).exists() else "a folder, not a file"
            raise ConfigError(f"data.path: {what}: {d.path!r} (data.source={d.source})")
    elif d.path is not None:
        if d.source not in ("auto", "text"):
            raise ConfigError(f"data.path: data.source={d.source} reads no files")
        if not Path(d.path).is_file():
            what = "no such file" if not Path(d.path).exists() else "a folder, not a file"
            raise ConfigError(
                f"data.path: {what}: {d.path!r} (text: a file of sentences; a folder of images "
                "needs data.source=images)"
            )
    if d.source != "table":
        for key in ("column", "label_column", "key_column"):
            if getattr(d, key) is not None and (d.source, key) != ("iterable", "column"):
                raise ConfigError(f"data.{key}: only data.source=table reads columns")
    if d.loop and d.source != "video":
        raise ConfigError(f"data.loop: only a video loops, not data.source={d.source}")
    if d.rate_sps == "native" and d.source != "video":
        raise ConfigError("data.rate_sps: 'native' is a video's own frame rate (data.source=video)")
    if d.transform is not None and d.source not in ("images", "video", "table", "iterable"):
        raise ConfigError(f"data.transform: data.source={d.source} has no images to transform")
    if d.transform is not None and not len(d.transform.mean) == len(d.transform.std) > 0:
        raise ConfigError("data.transform.std: needs one value per channel of data.transform.mean")
    if d.transform is not None and any(v <= 0 for v in d.transform.std):
        raise ConfigError("data.transform.std: every value must be positive")
    if (d.arrival == "steps") != (d.load_steps is not None):
        raise ConfigError(
            "data.load_steps: the schedule of data.arrival=steps (both are set, or neither)"
        )
    if d.arrival == "steps" and d.rate_sps is None:
        raise ConfigError("data.rate_sps: data.arrival=steps scales this paced rate")
    endless = cfg.samples is None and (d.source in BUILT_IN_SOURCES or d.loop)
    if endless and d.rate_sps is not None and d.arrival != "steady":
        raise ConfigError(
            f"data.arrival: {d.arrival} arrivals need a set number of samples (samples)"
        )
    f = cfg.flow
    if f.overflow != "block" and d.rate_sps is None:
        raise ConfigError(
            f"flow.overflow: {f.overflow} sheds the samples of a paced (live) source; set "
            "data.rate_sps (a number, or native for a video)"
        )
    if f.overflow_samples is not None and f.overflow != "drop_oldest":
        raise ConfigError("flow.overflow_samples: only flow.overflow=drop_oldest keeps a buffer")
    if d.source == "iterable" and cfg.fleet.edges > 1:
        raise ConfigError("fleet.edges: an iterable source feeds one edge")
    if cfg.output.path is not None:
        from pipeline.stream.output import OutputError, check_writable, output_format

        try:
            check_writable(cfg.output.path, output_format(cfg.output.path, cfg.output.format))
        except OutputError as exc:
            raise ConfigError(str(exc)) from None


def validate_config(
    data: Mapping[str, Any], check_model: bool = True, check_link: bool = True
) -> PipelineConfig:
    """Validate a nested dict into a :class:`PipelineConfig` or raise :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config root must be a mapping, got {type(data).__name__}")
    try:
        cfg = PipelineConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    _check_combinations(cfg)
    if check_model:
        _check_model(cfg)
    if check_link:
        _check_link(cfg)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    check_model: bool = True,
    check_link: bool = True,
) -> PipelineConfig:
    """Load YAML ``path`` (defaults only if None), apply dotted overrides, validate.

    ``check_model=False`` skips the model registry lookup (for custom model factories).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {str(p)!r}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = loaded
    apply_overrides(data, overrides)
    return validate_config(data, check_model=check_model, check_link=check_link)


def config_to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """The config as a plain JSON-able dict (for reports)."""
    return cfg.model_dump(mode="json")
