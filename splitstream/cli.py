"""Command line: ``splitstream run --config configs/demo.yaml [--set k=v ...] [--json PATH]``.

Also ``check`` (validate a config), ``certs DIR`` (a secrets directory for secure mode:
:mod:`splitstream.security`) and ``submit`` (a job for a cluster's job server: :mod:`splitstream.submit`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.stream.config import ConfigError, load_config
from splitstream.cluster_access import ClusterAccessError, probe_cluster


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="splitstream", description="splitstream pipeline")
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
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run checkpointed beside output.path (same config), after a driver died",
    )
    run.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop reading after SECONDS, drain what is in flight and report (as the first SIGINT)",
    )
    _token_option(run)
    check = sub.add_parser("check", help="validate a config and print it (starts nothing)")
    check.add_argument("--config", default=None)
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    from pipeline.generation.generate import add_arguments as generate_arguments

    generate = sub.add_parser(
        "generate", help="greedy generation through a split causal LM, a KV cache on each side"
    )
    generate_arguments(generate)
    _security_commands(sub)
    return ap


def _security_commands(sub: Any) -> None:
    """``certs`` and ``submit`` (secure mode, README "Security")."""
    certs = sub.add_parser(
        "certs",
        help="make a secrets directory for secure mode: CA, node certificates, token, env files",
        description="Writes DIR/ca.crt (+ ca.key for a new CA), DIR/NODE.crt, NODE.key and NODE.env "
        "per --node, and DIR/token. Keys and the token are owner-only; nothing is sent anywhere.",
    )
    certs.add_argument("directory", metavar="DIR")
    certs.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME=ADDR[,ADDR...]",
        help="a node certificate valid for these IPs / DNS names (localhost and 127.0.0.1 are "
        "always added); repeatable; without it only the CA and the token are made",
    )
    certs.add_argument("--ca-cert", default=None, help="issue from your CA: its certificate (PEM)")
    certs.add_argument("--ca-key", default=None, help="issue from your CA: its private key (PEM)")
    certs.add_argument("--days", type=int, default=365, help="validity of new certificates")
    certs.add_argument("--no-token", action="store_true", help="do not write DIR/token")
    submit = sub.add_parser(
        "submit",
        help="submit a job to a cluster's job server (like `ray job submit`, with clear errors)",
    )
    submit.add_argument("--address", required=True, help="job server, e.g. http://HEAD:8265")
    _token_option(submit)
    submit.add_argument("--no-wait", action="store_true", help="return once submitted")
    submit.add_argument("--submission-id", default=None)
    submit.add_argument("--working-dir", default=None, help="upload this directory for the job")
    submit.add_argument("--timeout", type=float, default=None, help="stop the job after SECONDS")
    submit.add_argument(
        "--python",
        default=None,
        metavar="PATH",
        help="the head's interpreter, run in place of a bare python/python3 entrypoint (default: "
        "this one, sys.executable: right for a local cluster or nodes installed at the same path)",
    )
    submit.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip the job that first checks the interpreter imports the project on the head",
    )
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- COMMAND ...")


def _token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="the Ray cluster's token (secure mode): sets RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN_PATH for this process",
    )


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


EXIT_OK = 0
EXIT_SAMPLES_LOST = 1
EXIT_CONFIG = 2
EXIT_STREAM_FAILED = 3
EXIT_INTERNAL = 4
EXIT_ABORTED = 130
"""Exit statuses of ``run``: every sample settled (delivered or rejected) exactly once; some were lost
or counted twice; a config error (before Ray starts); the stream could not run or finish (a stall, a
stage that keeps failing or does not come back, a placement the cluster cannot host); an internal
error (a bug); aborted by a second SIGINT or SIGTERM (the first one stops reading, drains and exits
0). 3, 4 and 130 still write the partial report and the output settled so far."""


def _write_outputs(report: dict[str, Any], args: argparse.Namespace) -> None:
    from pipeline.stream.report import format_report, plot_rate_timeline, plot_report

    print(format_report(report))
    if args.json:
        print(f"report written to {write_json(report, args.json)}")
    png = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if png:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        print(f"plot written to {plot_report(report, png)}")
        if (report.get("rate") or {}).get("mode") == "adaptive":
            timeline = str(Path(png).with_name(Path(png).stem + "_rate.png"))
            print(f"rate timeline written to {plot_rate_timeline(report, timeline)}")


def _certs(args: argparse.Namespace) -> int:
    from splitstream.security import NodeSpec, SecurityError, env_lines, node_env, write_secrets

    try:
        nodes = [NodeSpec.parse(spec) for spec in args.node]
        done = write_secrets(
            args.directory,
            nodes,
            ca_cert=args.ca_cert,
            ca_key=args.ca_key,
            days=args.days,
            token=not args.no_token,
        )
    except SecurityError as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    out = Path(str(done["directory"]))
    print(f"{out}: CA {done['ca']}; wrote {', '.join(map(str, done['written'])) or 'nothing'}")
    for node in nodes:
        print(f"\n# node {node.name} ({', '.join(node.sans)}): source {out / node.name}.env, or")
        print(env_lines(node_env(out, node.name, token=(out / "token").exists())), end="")
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    from splitstream.cluster_access import ClusterAccessError
    from splitstream.submit import EntrypointError, submit

    entry = list(args.entrypoint)
    if entry[:1] == ["--"]:
        entry = entry[1:]
    try:
        return submit(
            args.address,
            entry,
            wait=not args.no_wait,
            submission_id=args.submission_id,
            working_dir=args.working_dir,
            timeout_s=args.timeout,
            python=args.python,
            preflight=not args.no_preflight,
        )
    except EntrypointError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ClusterAccessError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return EXIT_STREAM_FAILED


def _use_token(args: argparse.Namespace) -> int | None:
    """Apply ``--token-file`` before Ray is imported; an exit status when the file is unusable."""
    if not getattr(args, "token_file", None):
        return None
    from splitstream.security import SecurityError, use_token_file

    try:
        use_token_file(args.token_file)
    except SecurityError as exc:
        print(f"--token-file: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the process exit status (see ``EXIT_*``). A SIGINT before the stream
    starts (while the model loads, say) ends it with status 130 and one line, not a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted before the stream started", file=sys.stderr)
        return EXIT_ABORTED


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "certs":
        return _certs(args)
    failed = _use_token(args)
    if failed is not None:
        return failed
    if args.command == "submit":
        return _submit(args)
    if args.command == "generate":
        from pipeline.generation.generate import run_cli

        return run_cli(args)
    overrides = list(args.overrides)
    if getattr(args, "address", None):
        overrides.append(f"ray.address={args.address}")
    try:
        cfg = load_config(args.config, overrides)
        from pipeline.stream.preflight import preflight

        if args.command == "run" and cfg.ray.address:
            probe_cluster(cfg.ray.address)  # a cluster this process cannot join: say so at once
        checked = preflight(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ClusterAccessError as exc:
        print(f"cluster error: {exc}", file=sys.stderr)
        return EXIT_STREAM_FAILED
    if args.command == "check":
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        print(
            f"ok: {checked.model['name']} @ {checked.model['split']}, features "
            f"{list(checked.feature_shape)} per sample, {checked.frame_bytes} B per frame "
            f"({cfg.codec.kind}), stall timeout {checked.stall_timeout_s:g} s",
            file=sys.stderr,
        )
        return EXIT_OK
    from pipeline.stream.executor import StreamError
    from pipeline.stream.stopping import StopControl, signals_stop
    from splitstream.runner import PlacementError, run_pipeline

    try:
        stop = StopControl(
            args.duration, on_stop=lambda msg: print(msg, file=sys.stderr, flush=True)
        )
    except ValueError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with signals_stop(stop):
            report = run_pipeline(
                cfg, progress=not args.no_progress, checked=checked, stop=stop, resume=args.resume
            )
    except ConfigError as exc:  # the output or the checkpoint, checked before Ray starts
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ClusterAccessError as exc:
        print(f"cluster error: {exc}", file=sys.stderr)
        return EXIT_STREAM_FAILED
    except PlacementError as exc:
        print(f"placement error: {exc}", file=sys.stderr)
        return EXIT_STREAM_FAILED
    except StreamError as exc:
        if exc.report is not None:
            _write_outputs(exc.report, args)
        print(f"stream failed ({exc.kind}): {exc}", file=sys.stderr)
        if exc.kind == "aborted":
            return EXIT_ABORTED
        return EXIT_INTERNAL if exc.kind == "internal" else EXIT_STREAM_FAILED
    except Exception:  # a bug: say so with its own status, never as "samples lost"
        traceback.print_exc()
        print("internal error (see the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL
    _write_outputs(report, args)
    ok = report["lost"] == 0 and report["duplicated"] == 0
    return EXIT_OK if ok else EXIT_SAMPLES_LOST
