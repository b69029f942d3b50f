"""Pipeline configuration: a validated pydantic model loaded from YAML plus ``key=value`` overrides.

Every error is a :class:`ConfigError` (a ``ValueError``) naming the offending dotted key, and
all checks (unknown keys, ranges, model / split / link profile names) run in
:func:`load_config`, i.e. before any Ray actor starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    # a simulated accelerator (scale-out tests): each batch of the head / tail takes this many ms
    # per sample, spent waiting (pipeline/models/device_time.py); null = the model's own time
    head_device_ms: float | None = Field(default=None, ge=0, le=10_000)
    tail_device_ms: float | None = Field(default=None, ge=0, le=10_000)


BUILT_IN_SOURCES = ("auto", "digits", "synthetic", "text")
"""Sources made by splitstream itself: indexable by sample id without end (``samples`` defaults to
:data:`DEFAULT_SAMPLES` for them)."""
FILE_SOURCES = ("images", "video", "table")
"""Sources that read the user's files from ``data.path`` (``samples: null``: to the end)."""
DEFAULT_SAMPLES = 256


class TransformConfig(_Strict):
    """Image preprocessing where the model's weights do not define it: resize the short side, centre
    crop, then ``(x / 255 - mean) / std`` per channel."""

    resize: int | None = Field(default=None, gt=0)
    crop: int | None = Field(default=None, gt=0)
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


class DataConfig(_Strict):
    source: Literal[
        "auto", "digits", "synthetic", "text", "images", "video", "table", "iterable"
    ] = "auto"
    # text: one sentence per line, or JSONL with "text"; images: a folder, a glob or a .txt list of
    # paths; video: a video file; table: a Parquet, JSONL or CSV file
    path: str | None = None
    column: str | None = None  # table: image paths, image bytes or text; a ray.data.Dataset's input
    label_column: str | None = None  # table: an optional column of labels
    key_column: str | None = None  # table: the column that keys each row (default: row number)
    transform: TransformConfig | None = None  # images: preprocessing (default: the weights' own)
    loop: bool = False  # video: start again at the end (an endless, camera-like source)
    # samples per second; "native": a video's own frame rate; None = as fast as the stream pulls
    rate_sps: float | Literal["native"] | None = None
    shape: list[int] | None = None  # synthetic input shape (C, H, W); default from the model
    arrival: Literal["steady", "poisson", "bursty", "steps"] = "steady"  # how paced samples arrive
    burst_period_s: float = Field(default=2.0, gt=0)  # bursty: one burst per period ...
    burst_duty: float = Field(default=0.5, gt=0, le=1)  # ... lasting this share of it
    # steps: [[start_s, factor], ...]: from start_s on, samples arrive at factor x rate_sps
    load_steps: list[tuple[float, float]] | None = None

    @field_validator("load_steps")
    @classmethod
    def _step_schedule(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        if not v or v[0][0] != 0:
            raise ValueError("the first step starts at 0 s, e.g. [[0, 1], [20, 4], [50, 1]]")
        if any(b[0] <= a[0] for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("the steps' start times must increase")
        if any(not f > 0 for _, f in v):
            raise ValueError("every step's factor must be positive")
        return v

    @field_validator("rate_sps")
    @classmethod
    def _positive_rate(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, int | float) and not v > 0:
            raise ValueError(f"must be a positive rate or 'native', got {v}")
        return v


class OutputConfig(_Strict):
    """Where results go: one row per input, written as the stream runs."""

    path: str | None = None  # None: no file (the Python API still iterates the results)
    format: Literal["parquet", "jsonl"] | None = None  # None: from the suffix (.jsonl: jsonl)
    top_k: int = Field(default=5, ge=1, le=1000)  # classifiers: the k best classes per input
    checkpoint_s: float = Field(default=5.0, gt=0)  # commit the output and checkpoint this often
    flush_rows: int = Field(default=8192, ge=1)  # ... or once this many rows wait


LEVELS = {"ours": (1, 9), "zstd": (1, 22)}
"""Valid ``codec.level`` per kind (fp32 and fp16 have no level)."""


class CodecConfig(_Strict):
    kind: Literal["ours", "fp32", "fp16", "zstd"] = "ours"
    bits: int = Field(default=8, ge=1, le=8)
    level: int = Field(default=3, ge=1, le=22)
    axis: int | None = None
    frame: Literal["batch", "sample"] = "batch"  # one frame per batch, or one per sample
    clip: Literal["mse", "wmse"] | None = (
        None  # range: None = min..max, mse = least error, wmse: see codec
    )


class LinkOverride(_Strict):
    """A link's settings over its profile. In ``fleet.links`` (one edge's link), a profile or trace
    replaces the base link and the other keys override single values of it."""

    profile: str | None = None
    bandwidth_mbps: float | None = Field(default=None, gt=0)
    delay_ms: float | None = Field(default=None, ge=0)
    jitter_ms: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, lt=1)
    trace: str | None = None
    mtu: int | None = Field(default=None, ge=64)
    corrupt: float | None = Field(default=None, ge=0, lt=1)  # fault knob: P(a bit flips) per frame
    # [start_s, duration_s] down windows, seconds after the link's first transmission
    outages: list[tuple[float, float]] | None = None

    @field_validator("outages")
    @classmethod
    def _outages(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        """Starts >= 0, durations > 0, sorted and not overlapping."""
        from pipeline.stream.link import check_outages

        return None if v is None else list(check_outages(v, "outages"))


class LinkConfig(LinkOverride):
    mode: Literal["emulated", "real"] = "emulated"


class FlowConfig(_Strict):
    window: int = Field(default=4, ge=1, le=1024)
    # batches an edge keeps in flight to its link (source call to delivery): auto = sized from the
    # measured link (bandwidth-delay product plus the batch on the wire), or a fixed number
    inflight: Literal["auto"] | Annotated[int, Field(ge=1, le=65536)] = "auto"
    per_replica_inflight: int = Field(default=2, ge=1, le=64)
    stall_timeout_s: float | None = Field(default=None, gt=0)  # None = derived from the link
    max_restarts: int = Field(default=5, ge=0, le=1000)  # Ray restarts per stage actor
    restart_timeout_s: float = Field(default=120.0, gt=0)  # wait for a restarted actor this long
    max_batch_retries: int = Field(default=2, ge=0, le=100)  # a batch whose stage raises
    reorder_timeout_s: float = Field(default=10.0, gt=0)  # transport: give up on a missing batch
    # a paced (live) source the stream cannot keep up with: block (wait, as files do), drop_oldest
    # (keep the newest overflow_samples waiting) or latest (keep only the newest sample)
    overflow: Literal["block", "drop_oldest", "latest"] = "block"
    overflow_samples: int | None = Field(default=None, ge=1)  # drop_oldest: default max_batch_size


class BatchingConfig(_Strict):
    max_batch_size: int = Field(default=32, ge=1, le=65536)
    max_wait_ms: float = Field(default=20.0, ge=0)
    min_batch_size: int = Field(default=1, ge=1)
    adaptive: bool = True


class FleetConfig(_Strict):
    edges: int = Field(default=1, ge=1, le=256)  # independent edge streams, one shared cloud pool
    links: list[LinkOverride] = Field(default_factory=list)  # per-edge overrides of link.*
    # simulated edges that share one actor process (and one torch); a real edge device keeps 1
    edges_per_process: int = Field(default=1, ge=1, le=64)


class PoolSize(_Strict):
    """An autoscaling cloud pool: it starts at ``min`` replicas and stays within ``[min, max]``."""

    min: int = Field(default=1, ge=1, le=64)
    max: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> PoolSize:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class AutoscaleConfig(_Strict):
    """How an autoscaling pool (``replicas.decoder`` / ``replicas.tail`` as ``{min, max}``) moves."""

    up_after_s: float = Field(default=1.0, gt=0)  # grow once the demand has exceeded it this long
    down_after_s: float = Field(default=8.0, gt=0)  # shrink once it has stayed below it this long
    target_calls: float = Field(default=2.0, gt=0)  # calls waiting or running per replica it aims at
    drain_s: float = Field(default=30.0, ge=0)  # a removed replica's time to finish its calls


class ReplicasConfig(_Strict):
    head: int = Field(default=1, ge=1, le=64)
    encoder: int = Field(default=1, ge=1, le=64)
    decoder: int | PoolSize = 1  # a number: a fixed pool; {min, max}: an autoscaling one
    tail: int | PoolSize = 1
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig)

    @field_validator("decoder", "tail", mode="before")
    @classmethod
    def _pool_size(cls, v: Any) -> int | PoolSize:
        """A count of 1 to 64, or ``{min, max}``; one clear message for either."""
        if isinstance(v, PoolSize):
            return v
        if isinstance(v, Mapping):
            try:
                return PoolSize.model_validate(v)
            except ValidationError as exc:
                e = exc.errors()[0]
                where = ".".join(str(p) for p in e["loc"])
                msg = e["msg"].removeprefix("Value error, ")
                raise ValueError(f"{where + ': ' if where else ''}{msg}") from None
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
            raise ValueError(f"a replica count (1 to 64) or {{min, max}}, got {v!r}")
        return v

    def bounds(self, stage: str) -> tuple[int, int]:
        """A cloud stage's (min, max) replicas: equal for a fixed pool."""
        v = getattr(self, stage)
        return (v.min, v.max) if isinstance(v, PoolSize) else (v, v)

    @property
    def autoscaling(self) -> bool:
        return isinstance(self.decoder, PoolSize) or isinstance(self.tail, PoolSize)


class PlacementConfig(_Strict):
    edge_resource: str = "edge"
    cloud_resource: str = "cloud"
    resource_amount: float = Field(default=0.01, gt=0)
    num_cpus: float = Field(default=0.1, ge=0)
    gpu_stages: list[str] = Field(default_factory=list)
    num_gpus: float = Field(default=0.0, ge=0)
    fuse: bool = True  # one actor per edge and one per cloud replica (decoder + tail)

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


class RateConfig(_Strict):
    mode: Literal["fixed", "adaptive"] = "fixed"
    latency_slo_ms: float | None = Field(default=None, gt=0)  # adaptive: required
    bits: list[int] = Field(default_factory=lambda: [8, 6, 4, 3, 2])  # the settings allowed
    profile: str | None = None  # a profile file; None = measured at start-up
    profile_samples: int = Field(default=64, ge=4, le=4096)  # inputs of a start-up profile
    per_channel: bool = True  # profile per-channel settings too
    hysteresis: int = Field(default=3, ge=1, le=100)  # batches a higher setting must fit first
    min_fidelity: float = Field(default=0.9, ge=0, le=1)  # settings profiled below it are not used

    @field_validator("bits")
    @classmethod
    def _bit_widths(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= b <= 8 for b in v):
            raise ValueError(f"must be a non-empty list of bit widths in 1..8, got {v}")
        return sorted(set(v), reverse=True)


class FidelityConfig(_Strict):
    reference_samples: int = Field(default=64, ge=0)


class PipelineConfig(_Strict):
    # samples per edge; None: to the end of the source (never, for an endless one: stop it with
    # --duration or a signal). Defaults to DEFAULT_SAMPLES for the built-in sources, None otherwise.
    samples: int | None = Field(default=None, ge=1)
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    codec: CodecConfig = Field(default_factory=CodecConfig)
    link: LinkConfig = Field(default_factory=LinkConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    rate: RateConfig = Field(default_factory=RateConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_samples(cls, data: Any) -> Any:
        """``samples`` left out: :data:`DEFAULT_SAMPLES` for a built-in source, None (to the end)
        for the user's data."""
        if isinstance(data, Mapping) and "samples" not in data:
            source = (data.get("data") or {}).get("source", "auto")
            if source in BUILT_IN_SOURCES:
                data = {**data, "samples": DEFAULT_SAMPLES}
        return data


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
