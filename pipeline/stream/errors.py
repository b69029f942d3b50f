"""The stream's errors: :class:`StreamError` (the run could not finish) and :class:`StageFailure`
(a fused actor names which of its logical stages failed), and how a failed call is described."""

from __future__ import annotations

from typing import Any, Protocol


class StreamError(RuntimeError):
    """The stream could not finish. ``kind`` is ``stall``, ``stage_failed``, ``actor_dead``,
    ``restart_timeout``, ``aborted`` (a second stop request), ``source`` (the user's iterable
    raised) or ``internal``; ``stage`` names the stage at fault (``+``-joined for fused
    stages; None if unknown); ``report`` is the partial report (set by
    :meth:`~pipeline.stream.executor.StreamExecutor.run`)."""

    def __init__(self, message: str, *, stage: str | None = None, kind: str = "stage_failed"):
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.report: dict[str, Any] | None = None


class StageFailure(RuntimeError):
    """Raised by a fused actor when one of its logical stages fails, so the driver can name that
    stage rather than the whole actor."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(stage, message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return self.message


class Named(Protocol):
    """Anything with a stage name (a driver step)."""

    @property
    def name(self) -> str: ...


def short(exc: BaseException) -> str:
    """One line naming an exception (a RayTaskError's cause, not its remote traceback)."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    if isinstance(err, StageFailure):
        return err.message[:500]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


def failed_stage(step: Named, exc: BaseException) -> str:
    """The logical stage a failed call names (a fused actor says which of its stages failed)."""
    cause = getattr(exc, "cause", None)
    return cause.stage if isinstance(cause, StageFailure) else step.name
