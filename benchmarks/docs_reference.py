"""Generate docs/reference/configuration.md from the pydantic config schema.

    python -m benchmarks.docs_reference            # rewrite the page
    python -m benchmarks.docs_reference --check    # exit 1 with a diff when the page is stale

Every key of :class:`pipeline.stream.config.PipelineConfig` is walked recursively (nested models,
``X | Model`` unions, lists of models as ``key[i].sub``). Type, range and default come from the
schema itself. A key's description is, in this order: its ``Field(description=...)``; an entry of
:data:`DESCRIPTIONS` below; the comment beside (or just above) the field in
``pipeline/stream/config_schema.py``. A key with none of these is an error, so a new key cannot reach the
schema without reaching the page (``tests/test_docs.py`` checks both).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reference" / "configuration.md"

# Descriptions written for users (the schema's own comments are terse); keys are dotted paths.
DESCRIPTIONS: dict[str, str] = {
    "samples": "Samples per edge (ids `0..samples-1`). Unset, it is 256 for the built-in sources "
    "and null for the user's data. null: to the end of the source (an endless source runs until "
    "`--duration` or a signal).",
    "seed": "Seeds the synthetic data and the link's jitter, loss and corruption.",
    "model.name": "A name in `pipeline.models.SPLIT_POINTS`, or a local Hugging Face directory.",
    "model.split": "Where the model is cut: a split point of the model (the module after which it "
    "is cut); for transformers also a layer count.",
    "model.weights": "Passed to `split_model`: a torchvision weights name found offline, a "
    "checkpoint file, or a local directory (see [Models](../models/index.md)).",
    "model.input_size": "The model's input size, where it cannot be inferred.",
    "model.head_device_ms": "A simulated accelerator for scale-out tests: each head batch takes "
    "this many ms per sample, spent waiting rather than computing (the module still runs, so "
    "outputs are real); reports and plots label such figures SIMULATED.",
    "model.tail_device_ms": "As `model.head_device_ms`, for the tail.",
    "data.source": "`images`, `video`, `table`, `iterable` (the Python API's inputs), or a "
    "built-in one: `digits`, `synthetic`, `text`, or `auto` (digits for digits models, text for "
    "text models, synthetic otherwise); see [Your own data](../getting-started.md#your-own-data).",
    "data.path": "`images`: a folder, glob or `.txt` list; `video`: a video file; `table`: "
    "Parquet, JSONL or CSV; `text`: one sentence or prompt per line, or JSONL with a `text` field "
    "(null: the 24 built-in sentences).",
    "data.column": "`table`: the input column (image paths, image bytes or text; null: the only "
    "column, or one named `image`, `path`, `text` or `bytes`); `iterable`: a `ray.data.Dataset`'s "
    "input column.",
    "data.label_column": "`table`: a column of labels (optional).",
    "data.key_column": "`table`: the column that keys each row (null: row numbers).",
    "data.transform": "Image preprocessing where the model's weights do not define it "
    "(null: the weights' own, else the model's input size).",
    "data.transform.resize": "Resize the short side to this many pixels.",
    "data.transform.crop": "Centre crop to this size.",
    "data.transform.mean": "Per-channel mean of `(x/255 - mean) / std`.",
    "data.transform.std": "Per-channel std of `(x/255 - mean) / std`.",
    "data.transform.interpolation": "The resize filter.",
    "data.loop": "`video`: start again at the end, an endless camera-like source.",
    "data.rate_sps": "Arrival rate in samples per second (null: unpaced, as fast as the stream "
    "pulls; `native`: the video's frame rate).",
    "data.shape": "Synthetic input shape `[C, H, W]` (null: from the model).",
    "data.burst_period_s": "`bursty`: one burst per period.",
    "data.burst_duty": "`bursty`: the share of each period a burst lasts, at "
    "`rate_sps / burst_duty` within it (same mean rate).",
    "output.path": "One row per input, written as the stream runs: a Parquet folder of parts, or "
    "a JSONL file (null: no file; the Python API still iterates the results).",
    "output.format": "`parquet` or `jsonl` (null: from the suffix, `.jsonl` is JSONL).",
    "output.top_k": "Classes per row of a classifier.",
    "output.checkpoint_s": "Commit the output and write the checkpoint this often (seconds).",
    "output.flush_rows": "Write a Parquet part once this many rows wait.",
    "codec.kind": "`ours`, or a baseline: `fp32`, `fp16`, `zstd` (fp32 bytes through zstd) or "
    "`int8-zstd` (uint8 min..max quantization per frame, then zstd: what a user would write "
    "without splitstream).",
    "codec.bits": "Quantization bits.",
    "codec.level": "Level: ours 1..9, zstd and int8-zstd 1..22.",
    "codec.axis": "Per-channel axis of one sample's feature (ours only; null: per tensor).",
    "codec.frame": "`batch`: one frame per batch; `sample`: one frame per sample (see "
    "[the trade](../streaming/index.md#the-streaming-pipeline)).",
    "codec.clip": "`mse`: quantization ranges narrowed to the least squared error; `wmse`: the "
    "same with saturated elements' error counted twice; `wmse_ends`: as `wmse`, each end of a "
    "channel's range also searched alone (ours only; see "
    "[Clipping](../codec/index.md#clipping-clipmse-clipwmse)).",
    "link.mode": "`emulated` (the transport charges each batch to an emulated link) or `real` "
    "(Ray moves it over the network).",
    "link.profile": "A `pipeline.stream.link.PROFILES` name (`3g`, `lte`, `wifi`, `1mbit`, "
    "`10mbit`, `100mbit`, `unlimited`, `lte-trace`, ...); see "
    "[Profiles](../deployment/links.md#profiles).",
    "link.bandwidth_mbps": "Overrides the profile's rate (Mbit/s).",
    "link.delay_ms": "Overrides the profile's one-way delay.",
    "link.jitter_ms": "Overrides the profile's jitter.",
    "link.loss": "Packet loss probability; lost packets are sent again.",
    "link.trace": "A Mahimahi trace (a path, or a file name in `pipeline/stream/traces/`).",
    "link.mtu": "Packet size for the loss model.",
    "link.corrupt": "Fault knob of the emulated link: probability per frame that one bit is "
    "flipped in transit.",
    "link.outages": "`[[start_s, duration_s], ...]` down windows of the emulated link, counted "
    "from its first transmission (see [Outages](../deployment/links.md#outages)).",
    "fleet.edges": "Independent edge streams feeding the one cloud pool; `samples` counts per edge.",
    "fleet.links": "Per-edge overrides of `link.*`: entry `i` is edge `i`'s link; a `profile` or "
    "`trace` replaces the base link, other keys override single values.",
    "flow.window": "Most batches in flight per hop.",
    "flow.inflight": "Batches an edge keeps in flight to its link (from the source call to the "
    "link's delivery): `auto` sizes it from the measured rate and round trip (at least 2, at most "
    "`flow.window` x the hops in front of the cloud); a number fixes it.",
    "flow.per_replica_inflight": "Calls queued per replica of a compute stage.",
    "flow.stall_timeout_s": "No call finished for this long: a stall (null: 5 full batches "
    "on the configured link, at least 60 s). The first `flow.stall_restarts` stalls restart the "
    "replica holding the oldest call and replay its calls; the next one ends the run.",
    "flow.stall_restarts": "Stalls in a run that restart the replica holding the oldest call (its "
    "calls are replayed, as a killed actor's are) instead of ending the run; 0: the first stall "
    "ends it.",
    "flow.max_restarts": "Ray restarts per stage actor.",
    "flow.restart_timeout_s": "Longest wait for a restarted actor.",
    "flow.max_batch_retries": "Retries of a batch whose stage raised.",
    "flow.reorder_timeout_s": "The transport skips a ticket that has not come after this long.",
    "flow.overflow": "A paced (live) source the stream cannot keep up with: `block` waits (every "
    "sample its turn, as files do); `drop_oldest` keeps the newest `overflow_samples` waiting and "
    "drops the older ones; `latest` keeps only the newest. Dropped samples are `dropped` rows.",
    "flow.overflow_samples": "`drop_oldest`: samples kept waiting (null: "
    "`batching.max_batch_size`).",
    "batching.max_batch_size": "Largest batch the adaptive batcher makes (the demo uses 64).",
    "batching.max_wait_ms": "A partial batch is sent once its oldest sample has waited this long.",
    "batching.min_batch_size": "Smallest batch the adaptive batcher makes.",
    "batching.adaptive": "Double the batch size while a backlog builds, halve it when the input "
    "runs dry.",
    "replicas.head": "Head replicas (with `fleet.edges`, each edge has one of each edge stage).",
    "replicas.encoder": "Encoder replicas.",
    "replicas.tail": "Tail replicas: a number is a fixed pool, `{min, max}` an autoscaling one "
    "(see `replicas.autoscale`).",
    "replicas.decoder.min": "An autoscaling decoder pool starts with this many replicas and never "
    "goes below it.",
    "replicas.decoder.max": "The most replicas an autoscaling decoder pool grows to.",
    "replicas.tail.min": "An autoscaling tail pool starts with this many replicas and never goes "
    "below it.",
    "replicas.tail.max": "The most replicas an autoscaling tail pool grows to.",
    "placement.edge_resource": "Ray custom resource of the edge side.",
    "placement.cloud_resource": "Ray custom resource of the cloud side.",
    "placement.resource_amount": "Custom resource each actor requests (kept small so 2 CPUs run "
    "the graph).",
    "placement.num_cpus": "CPUs each actor requests; its thread pools are sized to it.",
    "placement.gpu_stages": "Stages that ask for GPUs (a fused actor asks when any stage it hosts "
    "does) and use one: the head and tail run torch on CUDA, the encoder and decoder the codec's "
    "device path (without a device: the CPU codec, said in the report's placement).",
    "placement.num_gpus": "GPUs each stage in `gpu_stages` asks for.",
    "placement.fuse": "One actor per edge and one per cloud replica; false: one actor per stage.",
    "ray.address": "null: start a new, private local Ray with the edge and cloud resources, even "
    "when a `ray start` cluster runs on this machine or `RAY_ADDRESS` is set (to run on that "
    "cluster: `--address auto`); a Ray that the calling process already started with `ray.init()` "
    "is used as it is.",
    "ray.num_cpus": "CPUs of the private local Ray (null: the machine's).",
    "fidelity.reference_samples": "Samples re-run through the uncompressed model for top-1 "
    "agreement (and cosine or next-token checks for text models).",
    "rate.mode": "`fixed`: every batch coded with `codec.*`; `adaptive`: the rate controller "
    "picks bits and granularity per batch (needs `codec.kind=ours`).",
    "rate.latency_slo_ms": "End-to-end latency target (required by `adaptive`; with `fixed` it "
    "only adds `slo_met_ratio` to the report).",
    "rate.bits": "The bit widths the controller may choose.",
    "rate.profile": "A profile file from `python -m pipeline.evaluation.evaluate --profile` "
    "(null: measured at start-up).",
    "rate.profile_samples": "Inputs of the start-up profile.",
    "rate.per_channel": "The start-up profile also tries per-channel quantization.",
    "rate.hysteresis": "Decisions a better setting must fit before the controller steps up.",
    "rate.min_fidelity": "Settings whose profiled fidelity is below it are never chosen (unless "
    "none reaches it).",
}

SECTION_TEXT: dict[str, str] = {
    "": "Top-level keys.",
    "model": "The network and where it is cut.",
    "data": "Where the inputs come from ([Your own data](../getting-started.md#your-own-data)).",
    "codec": "How features are coded on the link ([The feature codec](../codec/index.md)).",
    "link": "The edge-to-cloud link ([Emulated links](../deployment/links.md)).",
    "flow": "Credits, in-flight windows, timeouts and overload "
    "([Failure model](../streaming/failure-model.md)).",
    "batching": "The source's adaptive batcher.",
    "fleet": "Several edges feeding one cloud pool.",
    "replicas": "Replicas per stage; a fused cloud has max(decoder, tail) replicas.",
    "placement": "Where actors run and what they request.",
    "ray": "Which Ray instance runs the stream.",
    "fidelity": "Checks against the uncompressed model.",
    "rate": "Adaptive rate control ([Rate control](../streaming/rate-control.md)).",
    "output": "One result row per input ([Your own data](../getting-started.md#your-own-data)).",
}


class ReferenceError_(ValueError):
    """The schema has a key this generator cannot describe."""


@dataclass(frozen=True)
class Key:
    """One documented configuration key."""

    path: str
    type: str
    default: str
    range: str
    description: str


def _root() -> type[BaseModel]:
    from pipeline.stream.config import PipelineConfig

    return PipelineConfig


def _models(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation contains (through unions and lists)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models(a)]


def _is_list(ann: Any) -> bool:
    return typing.get_origin(ann) is list


def type_name(ann: Any) -> str:
    """A short, YAML-minded rendering of a type annotation."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "{" + ", ".join(ann.model_fields) + "}"
    return getattr(ann, "__name__", str(ann))


def _bounds(metadata: Sequence[Any]) -> list[str]:
    out = []
    for m in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v:,}" if isinstance(v, int) else f"{sign} {v}")
    return out


def range_text(field: FieldInfo) -> str:
    """The field's numeric bounds, also those inside ``Annotated`` union members."""
    parts = _bounds(field.metadata)
    for a in typing.get_args(field.annotation):
        if typing.get_origin(a) is typing.Annotated:
            for m in typing.get_args(a)[1:]:
                parts += _bounds(getattr(m, "metadata", [m]))
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    """The default as YAML would spell it."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value).replace('"', "") if value is not None else "null"


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comments on its lines in the class source, or on the lines just above."""
    try:
        src = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    src = inspect.cleandoc("\n" + src) if src.startswith(" ") else src
    lines = src.splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    cls = ast.parse(src).body[0]
    assert isinstance(cls, ast.ClassDef)
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        n = node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments.get(n, ""))
            n -= 1
        inline = [comments[i] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                  if i in comments]  # fmt: skip
        text = " ".join(above + inline).strip()
        if text:
            out[node.target.id] = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
    return out


def walk(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[tuple[str, FieldInfo, type[BaseModel]]]:  # fmt: skip
    """(dotted key, field, owning model) for every key, depth first in schema order."""
    model = model or _root()
    for name, field in model.model_fields.items():
        key = prefix + name
        yield key, field, model
        sep = "[i]." if _is_list(field.annotation) else "."
        for sub in _models(field.annotation):
            yield from walk(sub, key + sep)


def keys() -> list[Key]:
    """Every key of the schema, described; :class:`ReferenceError_` names keys with no words."""
    out, missing = [], []
    comment_cache: dict[type[BaseModel], dict[str, str]] = {}
    for key, field, owner in walk():
        if _models(field.annotation) and not (
            _is_list(field.annotation) or type(None) in typing.get_args(field.annotation)
            or any(not _models(a) for a in typing.get_args(field.annotation))
        ):  # fmt: skip
            continue  # a pure section (model, data, ...): its keys are listed, not itself
        comments = comment_cache.setdefault(owner, source_comments(owner))
        name = key.rsplit(".", 1)[-1]
        generic = key.replace("fleet.links[i].", "link.")
        desc = field.description or DESCRIPTIONS.get(key)
        if not desc and generic != key and generic in DESCRIPTIONS:
            desc = f"As `{generic}`, for edge `i`. {DESCRIPTIONS[generic]}"
        desc = desc or comments.get(name)
        if not desc and _models(field.annotation):
            doc = inspect.getdoc(_models(field.annotation)[0]) or ""
            desc = " ".join(doc.split())
        if not desc:
            missing.append(key)
            continue
        out.append(
            Key(key, type_name(field.annotation), default_text(field), range_text(field), desc)
        )
    if missing:
        raise ReferenceError_(
            "config keys without a description (give the field a Field(description=...) or a "
            f"comment in pipeline/stream/config_schema.py, or add it to DESCRIPTIONS): {', '.join(missing)}"
        )
    return out


def stale_descriptions() -> list[str]:
    """Entries of :data:`DESCRIPTIONS` for keys the schema no longer has."""
    present = {k for k, _, _ in walk()}
    return sorted(set(DESCRIPTIONS) - present)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if "\\|" not in text else text


def render() -> str:
    """The whole page."""
    rows = keys()
    sections: dict[str, list[Key]] = {}
    for k in rows:
        top = k.path.split(".")[0] if "." in k.path or "[" in k.path else ""
        sections.setdefault(top, []).append(k)
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by python -m benchmarks.docs_reference from the pydantic schema in "
        "pipeline/stream/config_schema.py: do not edit by hand -->",
        "",
        "Every key of a pipeline config, as YAML (`configs/demo.yaml`, `multinode.yaml`, "
        "`scaleout.yaml`, `fleet.yaml`) or as `--set key=value` on the command line. Unknown keys "
        "and bad values are refused before Ray starts, naming the key (exit status 2; see "
        "[Config errors](cli.md#config-errors)). `null` is YAML's none.",
        "",
        "This page is generated from the schema (`python -m benchmarks.docs_reference`), and "
        "`tests/test_docs.py` fails when it differs from the schema.",
    ]
    for top, ks in sections.items():
        out += ["", f"## `{top}`" if top else "## Top level", ""]
        if SECTION_TEXT.get(top):
            out += [SECTION_TEXT[top], ""]
        out += ["| key | type | default | range | description |", "|---|---|---|---|---|"]
        for k in ks:
            cells = [f"`{k.path}`", k.type, f"`{k.default}`", k.range, k.description]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.docs_reference",
                                 description=__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--check", action="store_true", help="exit 1 with a diff when stale")
    ap.add_argument("--out", type=Path, default=PAGE, help="the page to write")
    args = ap.parse_args(argv)
    try:
        new = render()
    except ReferenceError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    old = args.out.read_text() if args.out.exists() else ""
    if old == new:
        print(f"{args.out.name}: up to date")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True),
            fromfile=f"{args.out.name} (current)", tofile=f"{args.out.name} (generated)"))  # fmt: skip
        print(f"\n{args.out} is out of date: run python -m benchmarks.docs_reference")
        return 1
    args.out.write_text(new)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
