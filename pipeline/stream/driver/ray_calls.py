"""The one module of the driver that calls Ray: the actors' remote calls, waiting for and fetching
their results (sorting failures into the driver's kinds), ``ray.put``, ``ray.kill`` and the
cluster's view of its nodes. The policies get a :class:`RayCalls` as their
:class:`~pipeline.stream.driver.state.RemoteCalls` and never import this module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
from ray import exceptions as rex

from codec import CodecSettings
from pipeline.stream.metrics import object_store_mb

GET_TIMEOUT_S = 30.0
"""Bound on fetching ``meta`` s that ``ray.wait`` already reported ready."""

OK, TIMEOUT, RAISED, INPUT_LOST, ACTOR_FAILED = "ok", "timeout", "raised", "input_lost", "actor"
"""How a call ended: its meta, a fetch past ``GET_TIMEOUT_S``, its own code raised, its input
object was lost, or its actor died or is unreachable."""


class RayCalls:
    """:class:`~pipeline.stream.driver.state.RemoteCalls` through Ray."""

    def actor_key(self, handle: Any) -> str:
        return handle._actor_id.hex()

    def send(self, handle: Any, ref: Any, ticket: int, floor: int) -> tuple[Any, Any]:
        return handle.send.options(num_returns=2).remote(ref, ticket, floor)

    def receive(self, handle: Any, ref: Any) -> tuple[Any, Any]:
        return handle.receive.options(num_returns=2).remote(ref)

    def process(
        self, handle: Any, ref: Any, setting: CodecSettings | None = None
    ) -> tuple[Any, Any]:
        call = handle.process.options(num_returns=2)
        return call.remote(ref) if setting is None else call.remote(ref, setting)

    def next_batch(self, handle: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return handle.next_batch.options(num_returns=2).remote(*args, **kwargs)

    def rebuild(self, handle: Any, *args: Any, items: Any) -> tuple[Any, Any]:
        return handle.rebuild.options(num_returns=2).remote(*args, items=items)

    def ready(self, handle: Any) -> Any:
        return handle.ready.remote()

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def kill(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # already gone
            ray.kill(handle, no_restart=True)

    def restart(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # already gone: Ray restarts it anyway
            ray.kill(handle, no_restart=False)

    def actor_died(self, exc: BaseException) -> bool:
        return isinstance(exc, rex.ActorDiedError)

    def alive_nodes(self) -> set[str] | None:
        """The alive nodes' ids (None: the GCS cannot say now)."""
        try:
            return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:
            return None

    def placement(self, resource: str) -> tuple[float, float] | None:
        """How much of ``resource`` the alive nodes offer, and how much is free (None: unknown)."""
        try:
            offered = sum(
                n.get("Resources", {}).get(resource, 0.0) for n in ray.nodes() if n.get("Alive")
            )
            free = ray.available_resources().get(resource, 0.0)
        except Exception:
            return None
        return offered, free

    def object_store_mb(self) -> float | None:
        return object_store_mb()

    def wait(self, refs: list[Any], timeout: float) -> list[Any]:
        """The calls among ``refs`` that have finished, waiting up to ``timeout`` for the first."""
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return ready

    def outcomes(self, refs: list[Any]) -> Iterator[tuple[Any, str, Any]]:
        """``(ref, how it ended, meta or exception)`` of each finished call: one round trip when all
        succeeded, else one by one; a fetch that times out ends the sequence."""
        try:
            metas = ray.get(refs, timeout=GET_TIMEOUT_S)
        except rex.GetTimeoutError:
            yield refs[0], TIMEOUT, GET_TIMEOUT_S
            return
        except Exception:  # at least one failed: sort them out one by one
            for ref in refs:
                kind, value = self._outcome(ref)
                yield ref, kind, value
                if kind == TIMEOUT:
                    return
            return
        for ref, meta in zip(refs, metas, strict=True):
            yield ref, OK, meta

    def _outcome(self, ref: Any) -> tuple[str, Any]:
        try:
            return OK, ray.get(ref, timeout=GET_TIMEOUT_S)
        except rex.GetTimeoutError:
            return TIMEOUT, GET_TIMEOUT_S
        except rex.RayTaskError as exc:
            if isinstance(getattr(exc, "cause", None), rex.ObjectLostError):
                return INPUT_LOST, exc
            return RAISED, exc
        except rex.ObjectLostError as exc:
            return INPUT_LOST, exc
        except rex.RayError as exc:  # RayActorError and other system failures: the replica's fault
            return ACTOR_FAILED, exc
