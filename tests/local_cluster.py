"""Helpers of the tests that start a ``ray start`` cluster of their own beside the test's Ray."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pid_namespace_ok() -> bool:
    """True when this process may start a command in a PID namespace of its own (root, unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
    return subprocess.run(argv, capture_output=True).returncode == 0


def ray_start_argv(
    ray_bin: str,
    *,
    num_cpus: int,
    resources: dict[str, float],
    object_store_mb: int,
    dashboard: bool = False,
    temp_dir: str | None = None,
) -> tuple[list[str], dict[str, int]]:
    """A ``ray start --head --block`` command on 127.0.0.1 with every port of its own (free now),
    in a PID namespace of its own where that works (so killing it leaves nothing behind), and the
    ports it uses (``gcs``, ``dashboard``)."""
    import json

    gcs, dash, client, nm, om, metrics, agent, agent_grpc, renv = free_ports(9)
    argv = [
        ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs), "--dashboard-port", str(dash),
        "--include-dashboard", "true" if dashboard else "false",
        "--ray-client-server-port", str(client), "--node-manager-port", str(nm),
        "--object-manager-port", str(om), "--metrics-export-port", str(metrics),
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(renv), "--min-worker-port", "0", "--max-worker-port", "0",
        "--num-cpus", str(num_cpus), "--resources", json.dumps(resources),
        "--object-store-memory", str(object_store_mb * 2**20), "--disable-usage-stats",
    ]  # fmt: skip
    if dashboard:
        argv += ["--dashboard-host", "127.0.0.1"]
    if temp_dir is not None:
        argv += ["--temp-dir", temp_dir]
    if pid_namespace_ok():
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *argv]
    return argv, {"gcs": gcs, "dashboard": dash}
