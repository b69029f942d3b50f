"""The configuration's schema: the pydantic model of every section and key, with its defaults,
ranges and single-key checks. The comment beside (or above) a field is its description in the
configuration reference (``python -m benchmarks.docs_reference`` reads it from here). Loading,
overrides and the checks that tie keys together live in :mod:`pipeline.stream.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codec import DEFAULT_LEVEL, CodecSettings

STAGES = ("head", "encoder", "transport", "decoder", "tail")


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


LEVELS = {"ours": (1, 9), "zstd": (1, 22), "int8-zstd": (1, 22)}
"""Valid ``codec.level`` per kind (fp32 and fp16 have no level; int8-zstd's is zstd's)."""


class CodecConfig(_Strict):
    kind: Literal["ours", "fp32", "fp16", "zstd", "int8-zstd"] = "ours"
    bits: int = Field(default=8, ge=1, le=8)
    level: int = Field(default=3, ge=1, le=22)
    axis: int | None = None
    frame: Literal["batch", "sample"] = "batch"  # one frame per batch, or one per sample
    clip: Literal["mse", "wmse", "wmse_ends"] | None = (
        None  # range: None = min..max, mse = least error, wmse, wmse_ends: see codec
    )

    def settings(self) -> CodecSettings:
        """The codec settings of kind ``ours`` (a baseline's level, zstd's up to 22, is not one:
        the codec's default level stands in for it)."""
        level = self.level if self.kind == "ours" else DEFAULT_LEVEL
        return CodecSettings(self.bits, level, self.axis, self.clip)


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
    # a stall first restarts the replica holding the oldest call (its calls are replayed), this many
    # times in a run; the next stall ends the run
    stall_restarts: int = Field(default=1, ge=0, le=100)
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
