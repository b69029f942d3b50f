"""Pipeline configuration: a validated pydantic model loaded from YAML plus ``key=value`` overrides.

Every error is a :class:`ConfigError` (a ``ValueError``) naming the offending dotted key, and
all checks (unknown keys, ranges, model / split / link profile names) run in
:func:`load_config`, i.e. before any Ray actor starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STAGES = ("head", "encoder", "transport", "decoder", "tail")


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    name: str = "digits-resnet"
    split: str = "layer1"
    weights: str | None = None
    input_size: int | None = Field(default=None, gt=0)


class DataConfig(_Strict):
    source: Literal["auto", "digits", "synthetic"] = "auto"
    rate_sps: float | None = Field(default=None, gt=0)  # None = as fast as the pipeline pulls
    shape: list[int] | None = None  # synthetic input shape (C, H, W); default from the model


LEVELS = {"ours": (1, 9), "zstd": (1, 22)}
"""Valid ``codec.level`` per kind (fp32 and fp16 have no level)."""


class CodecConfig(_Strict):
    kind: Literal["ours", "fp32", "fp16", "zstd"] = "ours"
    bits: int = Field(default=8, ge=1, le=8)
    level: int = Field(default=3, ge=1, le=22)
    axis: int | None = None


class LinkConfig(_Strict):
    mode: Literal["emulated", "real"] = "emulated"
    profile: str | None = None
    bandwidth_mbps: float | None = Field(default=None, gt=0)
    delay_ms: float | None = Field(default=None, ge=0)
    jitter_ms: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, lt=1)
    trace: str | None = None
    mtu: int | None = Field(default=None, ge=64)
    corrupt: float | None = Field(
        default=None, ge=0, lt=1
    )  # fault knob: P(one bit flipped) per frame


class FlowConfig(_Strict):
    window: int = Field(default=4, ge=1, le=1024)
    per_replica_inflight: int = Field(default=2, ge=1, le=64)
    stall_timeout_s: float | None = Field(default=None, gt=0)  # None = derived from the link
    max_restarts: int = Field(default=5, ge=0, le=1000)  # Ray restarts per stage actor
    restart_timeout_s: float = Field(default=120.0, gt=0)  # wait for a restarted actor this long
    max_batch_retries: int = Field(default=2, ge=0, le=100)  # a batch whose stage raises
    reorder_timeout_s: float = Field(default=10.0, gt=0)  # transport: give up on a missing batch


class BatchingConfig(_Strict):
    max_batch_size: int = Field(default=32, ge=1, le=65536)
    max_wait_ms: float = Field(default=20.0, ge=0)
    min_batch_size: int = Field(default=1, ge=1)
    adaptive: bool = True


class ReplicasConfig(_Strict):
    head: int = Field(default=1, ge=1, le=64)
    encoder: int = Field(default=1, ge=1, le=64)
    decoder: int = Field(default=1, ge=1, le=64)
    tail: int = Field(default=1, ge=1, le=64)


class PlacementConfig(_Strict):
    edge_resource: str = "edge"
    cloud_resource: str = "cloud"
    resource_amount: float = Field(default=0.01, gt=0)
    num_cpus: float = Field(default=0.1, ge=0)
    gpu_stages: list[str] = Field(default_factory=list)
    num_gpus: float = Field(default=0.0, ge=0)

    @field_validator("gpu_stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; choose from {list(STAGES)}")
        return v


class RayConfig(_Strict):
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)


class FidelityConfig(_Strict):
    reference_samples: int = Field(default=64, ge=0)


class PipelineConfig(_Strict):
    samples: int = Field(default=256, ge=1)
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    codec: CodecConfig = Field(default_factory=CodecConfig)
    link: LinkConfig = Field(default_factory=LinkConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)


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


def link_spec_kwargs(cfg: PipelineConfig) -> dict[str, Any]:
    """The ``link.*`` keys that override the profile (None = keep the profile's value)."""
    keys = ("bandwidth_mbps", "delay_ms", "jitter_ms", "loss", "trace", "mtu", "corrupt")
    out: dict[str, Any] = {k: getattr(cfg.link, k) for k in keys}
    out["seed"] = cfg.seed
    return out


def _check_link(cfg: PipelineConfig) -> None:
    """The link profile must exist, the spec must be valid and the trace file readable."""
    if cfg.link.mode != "emulated":
        if cfg.link.corrupt:
            raise ConfigError("link.corrupt: only the emulated link can corrupt frames (link.mode)")
        return
    from pipeline.stream.link import PROFILES, resolve_link, trace_path

    if cfg.link.profile is not None and cfg.link.profile not in PROFILES:
        raise ConfigError(
            f"link.profile: unknown profile {cfg.link.profile!r}; choose from {sorted(PROFILES)}"
        )
    try:
        spec = resolve_link(cfg.link.profile, **link_spec_kwargs(cfg))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"link: {exc}") from None
    if spec.trace is not None and not trace_path(spec.trace).is_file():
        raise ConfigError(f"link.trace: file not found: {spec.trace!r}")


def _check_combinations(cfg: PipelineConfig) -> None:
    """Rules that tie two keys together, each reported under the key to change."""
    lo, hi = LEVELS.get(cfg.codec.kind, (cfg.codec.level, cfg.codec.level))
    if not lo <= cfg.codec.level <= hi:
        raise ConfigError(
            f"codec.level: {cfg.codec.level} is out of range for codec.kind={cfg.codec.kind} "
            f"({lo}..{hi})"
        )
    if cfg.codec.axis is not None and cfg.codec.kind != "ours":
        raise ConfigError(
            f"codec.axis: per-channel quantization needs codec.kind=ours, not {cfg.codec.kind}"
        )
    b = cfg.batching
    if b.min_batch_size > b.max_batch_size:
        raise ConfigError(
            f"batching.min_batch_size: {b.min_batch_size} is larger than "
            f"batching.max_batch_size ({b.max_batch_size})"
        )


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
