"""The command line: the demo config end to end (subprocess) and config errors before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitstream.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 550) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitstream", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_config_runs_and_writes_json(tmp_path):
    # On a fresh machine this first trains and caches the digits ResNet (pipeline.models.train).
    out = tmp_path / "res" / "demo.json"
    proc = _run(
        "run",
        "--config",
        "configs/demo.yaml",
        "--set",
        "samples=64",
        "--set",
        "fidelity.reference_samples=32",
        "--json",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "splitstream run report" in proc.stdout and "transport" in proc.stdout
    rep = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000  # the summary plot next to the JSON
    assert rep["samples"] == 64 and rep["delivered"] == 64
    assert rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["compression_ratio"] > 2
    assert rep["fidelity"]["accuracy"] > 0.9  # the trained digits ResNet through the 8-bit codec
    assert rep["fidelity"]["agreement"] >= 0.95
    assert rep["config"]["link"]["profile"] == "10mbit"
    assert rep["model"]["name"] == "digits-resnet" and rep["model"]["trained"] is True
    assert set(rep["stages"]) >= {"head", "encoder", "transport", "decoder", "tail", "sink"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("link.bandwidth_mbps=-5", "link.bandwidth_mbps"),
        ("model.nmae=resnet18", "model.nmae"),
        ("model.name=resnet1000", "model.name"),
        ("model.split=layer9", "model.split"),
        ("link.profile=carrier-pigeon", "link.profile"),
        ("codec.level=12", "codec.level"),
        ("batching.min_batch_size=100", "batching.min_batch_size"),
        ("model.name=resnet18,data.source=auto,codec.axis=5", "codec.axis"),
    ],
)
def test_bad_config_fails_fast_naming_the_key(override, key, capsys):
    t0 = time.monotonic()
    sets = [a for o in override.split(",") for a in ("--set", o)]
    rc = main(["run", "--config", str(REPO / "configs" / "demo.yaml"), *sets])
    err = capsys.readouterr().err
    assert rc == 2
    assert key in err and "config error" in err
    assert time.monotonic() - t0 < 30  # rejected by validation or the preflight: no Ray start


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["link.bandwidth_mbps=-1"], "link.bandwidth_mbps"),
        (["codec.level=10"], "codec.level"),
        (["batching.min_batch_size=65"], "batching.min_batch_size"),
        (["model.name=resnet18", "data.source=auto", "codec.axis=-4"], "codec.axis"),
    ],
)
def test_bad_config_subprocess_never_starts_ray(sets, key):
    args = [a for s in sets for a in ("--set", s)]
    proc = _run("run", "--config", "configs/demo.yaml", *args, timeout=120)
    assert proc.returncode == 2
    assert key in proc.stderr and "config error" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_check_runs_the_same_checks_as_run(capsys):
    rc = main(["check", "--set", "model.name=resnet18", "--set", "codec.axis=3"])
    assert rc == 2 and "codec.axis" in capsys.readouterr().err


def test_check_prints_the_validated_config(capsys):
    rc = main(["check", "--config", str(REPO / "configs" / "scaleout.yaml"), "--set", "samples=7"])
    assert rc == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["samples"] == 7 and cfg["replicas"]["head"] == 2


def test_a_stalled_run_exits_3_and_writes_the_partial_report(tmp_path):
    # one 8 KB frame on a 0.01 Mbit/s link takes seconds; the watchdog is set to one second
    out = tmp_path / "partial.json"
    proc = _run(
        "run",
        "--config",
        "configs/demo.yaml",
        "--set",
        "link.bandwidth_mbps=0.01",
        "--set",
        "flow.stall_timeout_s=1",
        "--set",
        "fidelity.reference_samples=0",
        "--json",
        str(out),
        "--no-progress",
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "stall" in proc.stderr and "stage 'transport'" in proc.stderr
    rep = json.loads(out.read_text())
    assert rep["status"] == "failed" and rep["error"]["kind"] == "stall"
    assert rep["error"]["stage"] == "transport" and rep["lost"] == rep["samples"] - rep["delivered"]
    assert "FAILED" in proc.stdout  # the partial report's table is printed too


def test_an_internal_error_has_its_own_exit_status(monkeypatch, capsys):
    import splitstream.runner

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(splitstream.runner, "run_pipeline", boom)
    rc = main(["run", "--set", "model.name=resnet18", "--set", "data.source=auto"])
    assert rc == 4 and "internal error" in capsys.readouterr().err


def test_submit_takes_the_heads_interpreter_and_can_skip_the_preflight():
    from splitstream.cli import _parser

    args = _parser().parse_args(
        ["submit", "--address", "http://h:8265", "--python", "/opt/venv/bin/python",
         "--no-preflight", "--", "python", "-m", "splitstream", "run"]
    )  # fmt: skip
    assert args.python == "/opt/venv/bin/python" and args.no_preflight
    assert args.entrypoint[-4:] == ["python", "-m", "splitstream", "run"]
    args = _parser().parse_args(["submit", "--address", "http://h:8265", "--", "python", "-V"])
    assert args.python is None and not args.no_preflight


def test_one_command_name_splitstream():
    """``make install`` puts a ``splitstream`` console script beside the interpreter; it is the same
    command as ``python -m splitstream``, and the old ``python -m pipeline`` says which name to use."""
    script = Path(sys.executable).parent / "splitstream"
    assert script.exists(), "the splitstream console script is not installed"
    direct = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True)
    assert direct.returncode == 0 and direct.stdout.startswith("usage: splitstream run")
    assert _run("run", "--help").stdout == direct.stdout
    old = subprocess.run([sys.executable, "-m", "pipeline", "run", "--help"], cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    assert old.returncode == 0 and old.stdout == direct.stdout
    assert "the command is `splitstream`" in old.stderr


def test_the_docs_use_one_command_name():
    """Outside the sentence that names the old spelling, the README says ``splitstream`` (the
    ``pipeline.*`` modules, such as ``python -m pipeline.evaluation.evaluate``, are other tools)."""
    import re

    text = (REPO / "README.md").read_text()
    old = [ln for ln in text.splitlines()
           if re.search(r"python -m pipeline(?![.\w])", ln) and "old" not in ln]  # fmt: skip
    assert old == [], old
