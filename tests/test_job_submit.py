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
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from local_cluster import ray_start_argv

REPO = Path(__file__).resolve().parent.parent
RAY_BIN = str(Path(sys.executable).with_name("ray"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "splitstream" / "runner.py").exists(), reason="pipeline runner missing"
    ),
]


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
    if proc.poll() is None and proc.args[0] == "unshare":
        # unshare ignores SIGTERM while it waits for its child (a SIGTERM only ran out the wait
        # below); SIGKILL ends it, and --kill-child then takes the namespace's init, ray start,
        # and with it every process of the namespace
        proc.kill()
        proc.wait(10)
    elif proc.poll() is None:
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
    argv, ports = ray_start_argv(
        RAY_BIN, num_cpus=2, resources={"edge": 100, "cloud": 100}, object_store_mb=200,
        dashboard=True, temp_dir=temp_dir,
    )  # fmt: skip
    gcs, dash = ports["gcs"], ports["dashboard"]
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
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    if not status.is_terminal():
        client.stop_job(job_id)
    logs = client.get_job_logs(job_id)
    return ("TIMEOUT" if status not in JobStatus.__members__.values() else status.value), logs


@pytest.mark.long
def test_job_submit_runs_pipeline(ray_head, tmp_path):
    out = tmp_path / "job_report.json"
    job_id = f"splitstream-{uuid.uuid4().hex[:8]}"
    entry = ["python", "-m", "splitstream", "run", "--config", "configs/demo.yaml",
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
    entry = ["python", "-m", "splitstream", "run", "--config", "configs/demo.yaml",
             "--set", "link.bandwidth_mbps=-5", "--address", ray_head["gcs"]]  # fmt: skip
    sub = _submit(ray_head, entry, job_id)
    assert sub.returncode == 0, sub.stderr[-3000:]
    status, logs = _wait_job(ray_head, job_id, timeout=180)
    assert status == "FAILED"
    assert "link.bandwidth_mbps" in logs


# ---------------------------------------------------------------- the interpreter is explicit


def test_a_bare_python_entrypoint_gets_the_named_interpreter():
    from splitstream.submit import head_entrypoint

    assert head_entrypoint(["python", "-m", "splitstream"]) == (
        [sys.executable, "-m", "splitstream"],
        sys.executable,
    )
    assert head_entrypoint(["python3.11", "-V"], "/opt/py/bin/python")[0][0] == "/opt/py/bin/python"
    assert head_entrypoint(["/usr/bin/python3", "-V"]) == (
        ["/usr/bin/python3", "-V"],
        "/usr/bin/python3",
    )
    assert head_entrypoint(["bash", "-c", "python -V"]) == (["bash", "-c", "python -V"], None)
    assert head_entrypoint(["pythonista"]) == (["pythonista"], None)


def test_submit_runs_python_with_this_interpreter(ray_head, capsys):
    from splitstream.cli import main

    code = "import sys; print('EXE', sys.executable)"
    rc = main(["submit", "--address", ray_head["dashboard"], "--", "python", "-c", code])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert f"python on the head: {sys.executable}" in out
    assert f"EXE {sys.executable}" in out


def _python_without_torch() -> str | None:
    for cand in (Path(sys.base_prefix) / "bin" / "python3", Path("/usr/bin/python3")):
        if cand.exists() and Path(cand).resolve() != Path(sys.executable).resolve():
            probe = subprocess.run([str(cand), "-c", "import torch"], capture_output=True)
            if probe.returncode != 0:
                return str(cand)
    return None


def test_submit_refuses_an_interpreter_that_cannot_run_the_project(ray_head, capsys):
    from splitstream.cli import main

    bare = _python_without_torch()
    cases = [("/nonexistent/bin/python", "not found")]
    if bare is not None:
        cases.append((bare, "No module named"))
    for python, why in cases:
        t0 = time.monotonic()
        rc = main(["submit", "--address", ray_head["dashboard"], "--python", python, "--",
                   "python", "-m", "splitstream", "run", "--config", "configs/demo.yaml"])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("submit: ")
        assert python in err and why in err and "--python PATH" in err
        assert time.monotonic() - t0 < 60
