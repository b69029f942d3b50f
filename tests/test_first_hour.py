"""What a new user meets first: a run beside a `ray start` cluster, the report's node names, the PNG.

The cluster is a private `ray start --head --block` (its own RAY_TMPDIR and free ports, in its own
session; in its own PID namespace where we may make one). It writes its address to
``$RAY_TMPDIR/ray/ray_current_cluster``, where a bare ``ray.init()`` would find and join it. It is
stopped with SIGKILL to the PIDs of its own process tree, never by ``ray stop`` (which would stop
every Ray on the machine). While a run's local Ray shuts down, this process is the child subreaper,
so an agent process orphaned by that shutdown would become our child and be seen.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from local_cluster import ray_start_argv

from pipeline.stream.report import format_report, node_label, plot_report, run_title

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = str(Path(sys.executable).with_name("ray"))
PR_SET_CHILD_SUBREAPER = 36


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture(scope="module")
def running_cluster():
    """A `ray start --head` cluster (1 CPU, edge and cloud resources) left running on this machine."""
    base = tempfile.mkdtemp(prefix="ssfh", dir="/tmp")  # short: AF_UNIX path limit
    argv, ports = ray_start_argv(
        RAY_BIN, num_cpus=1, resources={"edge": 1000, "cloud": 1000}, object_store_mb=100
    )
    gcs = ports["gcs"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=base, RAY_USAGE_STATS_ENABLED="0")
    log = Path(base) / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    address_file = Path(base) / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not address_file.exists():
            assert proc.poll() is None, f"ray start exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no cluster after 120 s: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield {"tmpdir": base, "gcs": f"127.0.0.1:{gcs}", "proc": proc}
    finally:
        tree = _tree(proc.pid)  # ray start, its GCS, raylet, agents, workers: nothing else
        marked = [
            p for p in psutil.process_iter(["cmdline"]) if base in " ".join(p.info["cmdline"] or ())
        ]
        _kill(tree + marked)
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _live_children(before: set[int]) -> list[psutil.Process]:
    """Our children not in ``before`` (the cluster's tree among them), zombies reaped."""
    out = []
    for p in psutil.Process().children():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)
            elif p.pid not in before:
                out.append(p)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass
    return out


@pytest.fixture
def subreaper():
    """Make this process the child subreaper for one test, then assert that nothing it started was
    left running: an orphan of the run's local Ray becomes our child, and is seen here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) unavailable")
    before = {p.pid for p in psutil.Process().children()}
    try:
        yield
        deadline = time.monotonic() + 15  # the watcher's 3 s grace, and slow process exits
        left = _live_children(before)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _live_children(before)
        names = []
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                names.append(f"{p.pid} {p.name()}")
        _kill(left)
        assert not names, f"processes left behind by the run's local Ray: {names}"
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        _live_children(before)


def test_a_killed_driver_leaves_no_ray_process_behind(subreaper):
    # without the watcher, Ray's dashboard and runtime-env agents outlive a SIGKILLed driver by a
    # minute or more (they wait on the dead GCS before they exit)
    code = ("import os; from splitstream.runner import start_local_ray; start_local_ray(1); "
            "os.kill(os.getpid(), 9)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL


def test_cli_run_starts_its_own_ray_beside_a_running_cluster(running_cluster, subreaper, tmp_path):
    # ray.address null: a new local Ray, not the cluster that ray.init() would find (which has
    # 1 CPU and where passing resources is refused: exit 4 "resources must not be provided")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = running_cluster["tmpdir"]
    out = tmp_path / "run.json"
    argv = [sys.executable, "-m", "splitstream", "run", "--config", "configs/demo.yaml",
            "--set", "samples=40", "--no-progress", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stderr
    rep = json.loads(out.read_text())
    assert rep["delivered"] == 40 and rep["lost"] == 0
    assert running_cluster["proc"].poll() is None  # the user's cluster is untouched


def test_python_api_example_beside_a_running_cluster(running_cluster, subreaper, monkeypatch):
    import ray

    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", running_cluster["gcs"])  # found by a bare ray.init() too
    report = run_pipeline(load_config(str(REPO / "configs" / "demo.yaml"), ["samples=40"]),
                          progress=False)  # fmt: skip
    assert report["delivered"] == 40 and report["lost"] == 0
    nodes = {p["node_id"] for st in report["stages"].values() for p in st["placement"]}
    cluster_nodes = subprocess.run(
        [RAY_BIN, "list", "nodes", "--address", running_cluster["gcs"], "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if cluster_nodes.returncode == 0:
        assert not nodes & {n["node_id"] for n in json.loads(cluster_nodes.stdout)}
    assert not ray.is_initialized()


# ---------------------------------------------------------------- the report (no Ray)


def _report(fidelity: dict | None = None, model: dict | None = None, **extra) -> dict:
    n = 6
    timeline = {
        "t": [0.2 * i for i in range(n)],
        "settled": [10.0 * i for i in range(n)],
        "latency_ms": [0.0, 40.0, 55.0, 0.0, 70.0, 65.0],
        "driver_rss_mb": [300.0] * n,
        "sink_rss_mb": [400.0] * n,
        "edge_rss_mb": [500.0] * n,
        "cloud_rss_mb": [400.0] * n,
    }
    place = {"node_id": "3fa9c1d2e4" + "0" * 46, "ip": "10.0.0.5", "pid": 11}
    other = {"node_id": "77b0e5aa01" + "0" * 46, "ip": "10.0.0.5", "pid": 12}
    stages = {
        name: {"throughput_sps": 90.0, "latency_p50_ms": 2.0, "latency_p99_ms": 5.0,
               "busy_s": 0.1, "mean_batch_size": 8.0,
               "placement": [dict(where, replica=0)]}
        for name, where in (("head", place), ("encoder", place), ("decoder", other),
                            ("tail", other))
    }  # fmt: skip
    return {
        "status": "completed",
        "samples": 50,
        "delivered": 50,
        "rejected": 0,
        "lost": 0,
        "throughput_sps": 88.0,
        "latency_p50_ms": 45.0,
        "latency_p99_ms": 70.0,
        "compression_ratio": 8.1,
        "goodput_mbps": 9.5,
        "stages": stages,
        "edges": [{"edge": 0, "configured_mbps": 10.0, "node": place}],
        "link": {"mode": "emulated", "configured_mbps": 10.0},
        "batch_sizes": {"histogram": {"8": 6, "2": 1}},
        "timeline": timeline,
        "fidelity": fidelity if fidelity is not None else {},
        "model": model or {"name": "digits-resnet", "split": "layer1", "trained": True},
        "config": {
            "codec": {"kind": "ours", "bits": 4, "level": 3, "axis": None, "clip": "mse"},
            "link": {"mode": "emulated", "profile": "10mbit", "trace": None},
            "fleet": {"edges": 1},
            "replicas": {"head": 1, "encoder": 1, "decoder": 2, "tail": 2},
            "rate": {"mode": "fixed"},
        },
        **extra,
    }


def _node_column(table: str, stage: str) -> str:
    return next(ln for ln in table.splitlines() if ln.startswith(stage)).split()[-1]


def test_report_tells_apart_two_nodes_on_one_host():
    table = format_report(_report())
    assert _node_column(table, "head") == "10.0.0.5/3fa9c1"
    assert _node_column(table, "decoder") == "10.0.0.5/77b0e5"
    assert node_label({"ip": "10.0.0.9"}) == "10.0.0.9"
    assert node_label({"node_id": "abcdef0123"}) == "abcdef"
    assert node_label({}) == "?"


def test_report_prints_output_and_stop_lines_only_when_present():
    plain = format_report(_report())
    assert "output rows" not in plain and "stopped by" not in plain
    out = {"path": "res/out.parquet", "format": "parquet", "rows": 50, "delivered": 48,
           "rejected": 1, "dropped": 1, "resumed": 0}  # fmt: skip
    table = format_report(_report(output=out, stop={"reason": "signal", "signal": "SIGINT"}))
    row = next(ln for ln in table.splitlines() if ln.startswith("output rows"))
    assert "50 (48 delivered, 1 rejected, 1 dropped, 0 resumed) -> res/out.parquet (parquet)" in row
    assert "stopped by" in table and "a signal (SIGINT)" in table
    table = format_report(_report(output={"path": None, "rows": 3}, stop={"reason": "duration"}))
    assert "3 () -> no file" in table and "the --duration limit" in table


def test_run_title_names_model_codec_link_fleet_and_samples():
    title = run_title(_report())
    assert "digits-resnet @ layer1 (trained weights)" in title
    assert "codec ours 4-bit level 3, clip mse" in title
    assert "link 10mbit (10 Mbit/s)" in title
    assert "1 edge, decoder/tail replicas 2/2" in title and "50 samples" in title
    untrained = _report(model={"name": "resnet18", "split": "layer2", "trained": False})
    untrained["link"] = {"mode": "emulated", "configured_mbps": None}
    untrained["edges"] = [{"edge": 0, "configured_mbps": None}]
    untrained["config"]["link"]["profile"] = "unlimited"
    title = run_title(untrained)
    assert "(UNTRAINED weights)" in title and "link unlimited (unconstrained)" in title


@pytest.mark.parametrize(
    ("fidelity", "model"),
    [
        ({"accuracy": 0.97, "labelled_samples": 50, "agreement": 0.99, "reference_samples": 32},
         None),
        ({"accuracy": None, "agreement": None, "reference_samples": 0}, None),
        ({"accuracy": None, "agreement": 0.9, "reference_samples": 8, "cosine": 0.9991,
          "cosine_min": 0.998, "next_token_agreement": 0.95, "next_tokens": 120,
          "loglik_delta": -0.0012, "loglik_delta_min": -0.01},
         {"name": "tiny-gpt", "split": "block1", "kind": "text", "trained": False}),
    ],
    ids=["vision", "no-fidelity", "text"],
)  # fmt: skip
def test_plot_report_writes_a_png_with_every_line_in_a_legend(
    tmp_path, monkeypatch, fidelity, model
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", saved.append)  # keep the figure to inspect it
    path = plot_report(_report(fidelity, model), str(tmp_path / "r.png"))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = saved[0]
    title = fig._suptitle.get_text()
    assert "@" in title and "codec ours 4-bit" in title and "50 samples" in title
    for ax in fig.axes:
        legend = ax.get_legend()
        labels = {t.get_text() for t in legend.get_texts()} if legend else set()
        for line in ax.get_lines():  # a twin's lines may sit in its host's legend
            host = [a for a in fig.axes if a.bbox.bounds == ax.bbox.bounds and a.get_legend()]
            shown = set().union(labels, *({t.get_text() for t in a.get_legend().get_texts()}
                                          for a in host))  # fmt: skip
            assert line.get_label() in shown, f"{ax.get_title()}: {line.get_label()}"
    texts = " ".join(t.get_text() for ax in fig.axes for t in [*ax.texts, ax.xaxis.label])
    if fidelity.get("accuracy") is not None:
        assert "accuracy vs labels (n=50): 0.9700" in texts
    elif fidelity.get("cosine") is not None:
        assert "embedding cosine (mean) (n=8): 0.9991" in texts and "log-lik. delta" in texts
        assert "UNTRAINED" in title
    else:
        assert "no fidelity measured" in texts
    latency_ax = next(ax for ax in fig.axes if "end-to-end latency" in ax.get_title())
    worst = latency_ax.get_lines()[0].get_ydata()
    assert math.isnan(worst[0]) and worst[1] == 40.0  # a point with nothing delivered is a gap
    real_close(fig)
