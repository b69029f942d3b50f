"""``python -m splitstream.ray_watcher RAYLET PID:CREATED ...``: kills what a local Ray instance leaves
behind once its raylet is gone.

A driver that starts a local Ray instance and is then killed (SIGKILL, its machine's OOM killer) cannot
stop it. Ray's raylet and GCS notice and exit, but its dashboard and runtime-env agents linger for a
minute or more. :func:`splitstream.runner.start_local_ray` starts this watcher beside each instance: it
follows the raylet's children while the raylet runs and, once it is gone, gives them 3 s to exit and
kills those still running. Each child is named with its start time, so a reused pid is never hit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import psutil

GRACE_S = 3.0
POLL_S = 1.0


def _known(specs: Sequence[str]) -> dict[int, psutil.Process]:
    """The processes ``pid:create_time`` names that still run as that process."""
    out: dict[int, psutil.Process] = {}
    for spec in specs:
        pid, created = spec.split(":")
        try:
            p = psutil.Process(int(pid))
            if p.create_time() == float(created):
                out[p.pid] = p
        except psutil.Error:
            continue
    return out


def watch(raylet_pid: int, specs: Sequence[str]) -> int:
    """Wait for the raylet to end, then clean up its children; returns how many were killed."""
    kids = _known(specs)
    try:
        raylet = psutil.Process(raylet_pid)
        while raylet.status() != psutil.STATUS_ZOMBIE:
            kids.update((c.pid, c) for c in raylet.children())
            time.sleep(POLL_S)
    except psutil.Error:
        pass
    killed = 0
    for p in psutil.wait_procs(list(kids.values()), timeout=GRACE_S)[1]:
        try:
            p.kill()
            killed += 1
        except psutil.Error:
            continue
    return killed


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2:])
