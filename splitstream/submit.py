"""``python -m pipeline submit``: a job for the cluster's job server, with clear errors.

The same request ``ray job submit`` makes, through Ray's ``JobSubmissionClient``: the entrypoint
runs as a driver on the head node, with the head's environment (so, on a cluster in secure mode,
with the head's token and certificate). What differs is the failure: a refused or missing token,
or a job server that cannot be reached, ends in one line naming the cause and exit status 3, not a
traceback. Without ``--no-wait`` it waits for the job, prints its logs and exits 0 when it succeeded.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence

from splitstream.cluster_access import ClusterAccessError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from splitstream.security import token_auth_enabled

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        text = str(exc)
        if "Forbidden" in text or "invalid" in text.lower():
            raise ClusterAccessError(
                f"the job server at {address} refused this token: it is not the cluster's token"
            ) from None
        hint = (
            "this process sends none: the token file is empty or unreadable"
            if token_auth_enabled()
            else "give it with --token-file PATH (or RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH)"
        )
        raise ClusterAccessError(
            f"the job server at {address} requires the cluster's token; {hint}"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterAccessError(f"cannot reach the job server at {address}: {exc}") from None


def submit(
    address: str,
    entrypoint: Sequence[str],
    wait: bool = True,
    submission_id: str | None = None,
    working_dir: str | None = None,
    timeout_s: float | None = None,
) -> int:
    """Submit ``entrypoint`` to the job server at ``address``; returns the exit status (see module)."""
    if not entrypoint:
        raise ClusterAccessError("no entrypoint: give the command after `--`")
    client = _client(address)
    runtime_env = {"working_dir": working_dir} if working_dir else None
    job_id = client.submit_job(
        entrypoint=shlex.join(entrypoint), submission_id=submission_id, runtime_env=runtime_env
    )
    print(f"submitted job {job_id} to {address}", flush=True)
    if not wait:
        return 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id).value)
    while status not in TERMINAL:
        if deadline is not None and time.monotonic() > deadline:
            client.stop_job(job_id)
            print(f"job {job_id} did not finish within {timeout_s:g} s: stopped", file=sys.stderr)
            return 3
        time.sleep(1.0)
        status = str(client.get_job_status(job_id).value)
    sys.stdout.write(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}", flush=True)
    if status == "SUCCEEDED":
        return 0
    code = client.get_job_info(job_id).driver_exit_code
    return code if isinstance(code, int) and code > 0 else 1
