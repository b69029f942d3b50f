"""Command line: ``python -m pipeline run --config configs/demo.yaml [--set k=v ...] [--json PATH]``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.stream.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description="splitstream pipeline")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the edge-to-cloud stream and print a report")
    run.add_argument("--config", default=None, help="YAML config (defaults only if omitted)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set link.bandwidth_mbps=5 (repeatable)",
    )
    run.add_argument("--json", default=None, metavar="PATH", help="write the full report as JSON")
    run.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write a PNG summary (default: next to --json, same name)",
    )
    run.add_argument("--address", default=None, help="Ray address (overrides ray.address)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    check = sub.add_parser("check", help="validate a config and print it (starts nothing)")
    check.add_argument("--config", default=None)
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return ap


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as strict JSON (parent folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_jsonable(report), indent=2))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the process exit status (2 for config errors)."""
    args = _parser().parse_args(argv)
    overrides = list(args.overrides)
    if getattr(args, "address", None):
        overrides.append(f"ray.address={args.address}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    from pipeline.stream.metrics import format_report, plot_report
    from splitstream.runner import run_pipeline

    report = run_pipeline(cfg, progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        print(f"report written to {write_json(report, args.json)}")
    png = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if png:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        print(f"plot written to {plot_report(report, png)}")
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 else 1
