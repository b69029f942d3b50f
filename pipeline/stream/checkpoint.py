"""The stream's checkpoint: what is settled, and where the results output was committed.

The driver commits the :class:`~pipeline.stream.output.ResultWriter`, then saves a
:class:`Checkpoint` beside the output (:func:`checkpoint_path`) holding the writer's position, the
per-edge settled ids and the counts. ``run --resume`` loads it, checks that the config is the
same in all that shapes the results (:func:`check_resumable`), reopens the writer at the position
and replays what was not settled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

VERSION = 1

OPERATIONAL_KEYS = (
    "ray",
    "output.checkpoint_s",
    "output.flush_rows",
    "replicas",
    "placement",
    "flow",
    "batching",
)
"""Dotted config keys (a section: all of it) that a resume may change.

They decide where and how fast the stream runs, not what a row of its results holds: the Ray
cluster, checkpoint and flush intervals, replica counts, placement of actors, flow control
(windows, timeouts, restarts) and batching (whose batches already vary from run to run). All the
rest must match: ``samples``, ``seed``, ``data``, ``model``, ``codec``, ``rate``, ``link`` and
``fleet`` (the link's conditions are part of each row's latency, and the edges each own their ids),
``fidelity``, ``output.path`` and ``output.format``.
"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the option or key at fault."""


def checkpoint_path(output_path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint of an output lives: ``<output_path>.checkpoint.json``, beside it."""
    text = os.fspath(output_path).rstrip("/")
    if not text:
        raise CheckpointError("output.path: is empty")
    return Path(text + ".checkpoint.json")


def fingerprint_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a nested dict) without the keys of :data:`OPERATIONAL_KEYS`, as JSON would
    give it back (so a saved fingerprint and a fresh one compare equal)."""
    out = json.loads(json.dumps(config))
    for dotted in OPERATIONAL_KEYS:
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict) or (not config and prefix):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ, each as ``"key old -> new"``, sorted by key."""
    old, new = _flatten(saved), _flatten(current)
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a != b or type(a) is not type(b):
            out.append(f"{key} {_show(a)} -> {_show(b)}")
    return out


@dataclass
class Checkpoint:
    """What a run had settled when its results were last committed."""

    config: dict[str, Any]  # fingerprint_config(...) of the run
    position: int  # the ResultWriter's committed position
    edges: list[dict[str, Any]]  # per edge, the driver's own state (settled ids and so on)
    counts: dict[str, int]  # {"delivered": n, "rejected": n, "dropped": n}
    runs: int = 1  # runs (the first and each resume) that wrote this output
    saved_at: float = 0.0  # time.time() when saved
    version: int = VERSION


_REQUIRED = {
    "config": dict,
    "position": int,
    "edges": list,
    "counts": dict,
    "runs": int,
    "saved_at": (int, float),
    "version": int,
}


def save(path: str | os.PathLike[str], ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically: a temp file in the same folder, fsynced, renamed
    over ``path``, and the folder fsynced. A crash leaves the previous checkpoint or the new one."""
    path = Path(path)
    data = json.dumps(asdict(ckpt), allow_nan=False, separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """The checkpoint at ``path``; a :class:`CheckpointError` saying what is wrong otherwise."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"--resume: no checkpoint at {str(path)!r} (run without --resume first)"
        ) from None
    except OSError as e:
        raise CheckpointError(f"--resume: cannot read the checkpoint {str(path)!r}: {e}") from e
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"--resume: the checkpoint {str(path)!r} is not valid JSON ({e}); "
            "run without --resume to start over"
        ) from e
    if not isinstance(data, dict):
        raise CheckpointError(f"--resume: the checkpoint {str(path)!r} is not a JSON object")
    version = data.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"--resume: the checkpoint {str(path)!r} has version {version!r}; this splitstream "
            f"reads version {VERSION} (run without --resume to start over)"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"--resume: the checkpoint {str(path)!r} lacks {', '.join(missing)}")
    for key, kind in _REQUIRED.items():
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"--resume: the checkpoint {str(path)!r} has a malformed {key}: {value!r:.80}"
            )
    if data["position"] < 0:
        raise CheckpointError(
            f"--resume: the checkpoint {str(path)!r} has a negative position {data['position']}"
        )
    known = {f.name for f in fields(Checkpoint)}
    return Checkpoint(**{k: v for k, v in data.items() if k in known})


def check_resumable(ckpt: Checkpoint, config: dict[str, Any]) -> None:
    """A :class:`CheckpointError` listing the differences if ``config`` (the whole config, as
    ``cfg.model_dump(mode="json")``) does not fingerprint as the checkpoint's."""
    diffs = config_differences(fingerprint_config(ckpt.config), fingerprint_config(config))
    if diffs:
        raise CheckpointError(
            "--resume: the config differs from the checkpoint's: "
            + ", ".join(diffs)
            + " (use the same config, or run without --resume to start over)"
        )
