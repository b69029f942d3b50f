"""`ray job submit` of a short pipeline run to a local `ray start --head` (own temp dir and ports).

The head runs in its own PID namespace when we are root (so stopping it can only ever kill
the processes it started); otherwise in its own session, and any leftover process whose
command line names our private temp dir is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
RAY_BIN = str(Path(sys.executable).with_name("ray"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "splitstream" / "runner.py").exists(), reason="pipeline runner missing"
    ),
]


def _free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _pid_namespace_ok() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
    )
    return probe.returncode == 0


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} not up after {timeout}s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen, marker: str) -> None:
    """Stop our head, then any process still naming our private temp dir (by PID)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] != os.getpid() and marker in " ".join(p.info["cmdline"] or ()):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@pytest.fixture(scope="module")
def ray_head():
    """A private local Ray head with the dashboard (job server) on non-default ports."""
    temp_dir = tempfile.mkdtemp(prefix="ssjob", dir="/tmp")  # short: AF_UNIX path limit
    gcs, dash, client, nm, om, metrics, agent, agent_grpc, renv = _free_ports(9)
    argv = [
        RAY_BIN, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--include-dashboard", "true", "--ray-client-server-port", str(client),
        "--node-manager-port", str(nm), "--object-manager-port", str(om),
        "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(renv),
        "--min-worker-port", "0", "--max-worker-port", "0",  # workers: random free ports
        "--num-cpus", "2", "--resources", json.dumps({"edge": 100, "cloud": 100}),
        "--object-store-memory", str(200 * 1024 * 1024), "--temp-dir", temp_dir,
        "--disable-usage-stats",
    ]  # fmt: skip
    if _pid_namespace_ok():
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *argv]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    log = Path(temp_dir) / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_http(f"http://127.0.0.1:{dash}/api/version", proc, log)
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# The codec's compiled kernel (codec/_kernels*.so) is git-ignored, and Ray's working_dir upload
# honours .gitignore by default; ship it by ignoring .gitignore and excluding the bulky rest
# (Ray itself always leaves out .git, .venv and __pycache__).
UPLOAD_EXCLUDES = ["results", ".cache", ".whl", "build", "*.egg-info", ".pytest_cache",
                   ".ruff_cache", ".hypothesis"]  # fmt: skip


def _submit(head: dict, entrypoint: list[str], job_id: str) -> subprocess.CompletedProcess:
    argv = [RAY_BIN, "job", "submit", "--address", head["dashboard"], "--working-dir", str(REPO),
            "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES}),
            "--submission-id", job_id, "--no-wait", "--", *entrypoint]  # fmt: skip
    env = dict(head["env"], RAY_RUNTIME_ENV_IGNORE_GITIGNORE="1")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)


def _wait_job(head: dict, job_id: str, timeout: float = 480) -> tuple[str, str]:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head["dashboard"])
    deadline = time.monotonic() + timeout
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_job_status(job_id)
    if not status.is_terminal():
        client.stop_job(job_id)
    logs = client.get_job_logs(job_id)
    return ("TIMEOUT" if status not in JobStatus.__members__.values() else status.value), logs


def test_job_submit_runs_pipeline(ray_head, tmp_path):
    out = tmp_path / "job_report.json"
    job_id = f"splitstream-{uuid.uuid4().hex[:8]}"
    entry = ["python", "-m", "pipeline", "run", "--config", "configs/demo.yaml",
             "--set", "samples=20", "--set", "fidelity.reference_samples=0",
             "--address", ray_head["gcs"], "--no-progress", "--json", str(out)]  # fmt: skip
    sub = _submit(ray_head, entry, job_id)
    assert sub.returncode == 0, sub.stderr[-3000:]
    assert job_id in sub.stdout + sub.stderr
    status, logs = _wait_job(ray_head, job_id)
    assert status == "SUCCEEDED", logs[-4000:]
    assert "splitstream run report" in logs
    report = json.loads(out.read_text())
    assert report["delivered"] == 20
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert report["wire_bytes"] > 0 and report["throughput_sps"] > 0


def test_failing_job_is_reported_as_failed(ray_head):
    job_id = f"splitstream-bad-{uuid.uuid4().hex[:8]}"
    entry = ["python", "-m", "pipeline", "run", "--config", "configs/demo.yaml",
             "--set", "link.bandwidth_mbps=-5", "--address", ray_head["gcs"]]  # fmt: skip
    sub = _submit(ray_head, entry, job_id)
    assert sub.returncode == 0, sub.stderr[-3000:]
    status, logs = _wait_job(ray_head, job_id, timeout=180)
    assert status == "FAILED"
    assert "link.bandwidth_mbps" in logs
