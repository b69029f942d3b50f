"""``splitstream submit``: a job for the cluster's job server, with clear errors.

The same request ``ray job submit`` makes, through Ray's ``JobSubmissionClient``: the entrypoint
runs as a driver on the head node, with the head's environment (so, on a cluster in secure mode,
with the head's token and certificate). What differs is the failure: a refused or missing token,
or a job server that cannot be reached, ends in one line naming the cause and exit status 3, not a
traceback. Without ``--no-wait`` it waits for the job, prints its logs and exits 0 when it succeeded.

The interpreter is explicit: an entrypoint that starts with a bare ``python``, ``python3`` or
``python3.N`` runs with ``--python PATH`` (the head's interpreter), by default this process's own
``sys.executable`` (right for a local cluster, and for nodes installed at the same path), never
with whatever ``python`` the head has on ``PATH``. Before the job, a tiny preflight job checks that
this interpreter imports the project there (``torch``, ``codec`` with its compiled kernel,
``splitstream``); if it cannot, :class:`EntrypointError` says so in one line (exit status 2).
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from splitstream.cluster_access import ClusterAccessError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

BARE_PYTHON = re.compile(r"python(3(\.\d+)?)?")
"""Entrypoint heads that mean "whatever python is on the head's PATH"."""

PREFLIGHT_IMPORTS = "import torch, codec, splitstream"
PREFLIGHT_TIMEOUT_S = 180.0


class EntrypointError(ValueError):
    """The entrypoint's interpreter cannot run the project on the head (exit status 2)."""


def head_entrypoint(
    entrypoint: Sequence[str], python: str | None = None
) -> tuple[list[str], str | None]:
    """``entrypoint`` with a bare ``python``/``python3``/``python3.N`` replaced by ``python``
    (default: ``sys.executable``), and the interpreter it runs with: that one, or the entrypoint's
    own when it names a python by path; None when it does not start with a python."""
    entry = list(entrypoint)
    if not entry:
        return entry, None
    if BARE_PYTHON.fullmatch(entry[0]):
        entry[0] = python or sys.executable
        return entry, entry[0]
    if BARE_PYTHON.fullmatch(entry[0].rsplit("/", 1)[-1]):
        return entry, entry[0]
    return entry, None


def _wait_status(
    client: Any, job_id: str, timeout_s: float | None, poll_s: float = 1.0
) -> str | None:
    """The job's terminal status, or None when it is still running after ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id).value)
    while status not in TERMINAL:
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(poll_s)
        status = str(client.get_job_status(job_id).value)
    return status


def check_interpreter(
    client: Any,
    python: str,
    runtime_env: dict[str, Any] | None = None,
    timeout_s: float = PREFLIGHT_TIMEOUT_S,
) -> None:
    """Run ``python -c "import torch, codec, splitstream"`` as a job on the head; raise
    :class:`EntrypointError` (one line, naming ``--python``) when it fails."""
    job_id = client.submit_job(
        entrypoint=shlex.join([python, "-c", PREFLIGHT_IMPORTS]), runtime_env=runtime_env
    )
    status = _wait_status(client, job_id, timeout_s, poll_s=0.25)
    if status == "SUCCEEDED":
        return
    if status is None:
        client.stop_job(job_id)
        raise EntrypointError(
            f"the preflight job ({python} -c '{PREFLIGHT_IMPORTS}') did not finish within "
            f"{timeout_s:g} s on the head; skip it with --no-preflight"
        )
    info = client.get_job_info(job_id)
    if info.driver_exit_code == 127:
        why = "not found there"
    else:  # the job manager's message ends with the last log lines, the error among them
        text = f"{client.get_job_logs(job_id)}\n{info.message or ''}"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        lines = [
            ln for ln in lines if not ln.startswith("Running entrypoint") and " INFO " not in ln
        ]
        why = lines[-1] if lines else f"the job {status.lower()}"
    raise EntrypointError(
        f"the head cannot run the project with {python} ({why}); name an interpreter on the head "
        "that has it installed with --python PATH"
    )


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
    python: str | None = None,
    preflight: bool = True,
) -> int:
    """Submit ``entrypoint`` to the job server at ``address``; returns the exit status (see module).

    ``python``: the head's interpreter for a bare ``python`` entrypoint (default ``sys.executable``);
    ``preflight``: first check that it imports the project there (:func:`check_interpreter`).
    """
    if not entrypoint:
        raise ClusterAccessError("no entrypoint: give the command after `--`")
    entry, interpreter = head_entrypoint(entrypoint, python)
    client = _client(address)
    runtime_env = {"working_dir": working_dir} if working_dir else None
    if interpreter is not None:
        print(f"python on the head: {interpreter}", flush=True)
        if preflight:
            check_interpreter(client, interpreter, runtime_env)
    job_id = client.submit_job(
        entrypoint=shlex.join(entry), submission_id=submission_id, runtime_env=runtime_env
    )
    print(f"submitted job {job_id} to {address}", flush=True)
    if not wait:
        return 0
    status = _wait_status(client, job_id, timeout_s)
    if status is None:
        client.stop_job(job_id)
        print(f"job {job_id} did not finish within {timeout_s:g} s: stopped", file=sys.stderr)
        return 3
    sys.stdout.write(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}", flush=True)
    if status == "SUCCEEDED":
        return 0
    code = client.get_job_info(job_id).driver_exit_code
    return code if isinstance(code, int) and code > 0 else 1
