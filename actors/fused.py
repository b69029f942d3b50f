"""Fused actors: one process per edge (source, head, encoder, transport) and one per cloud replica
(decoder, tail, sink), as Ray Data fuses map operators. Fewer processes hold less memory and pass features
between stages in memory instead of through the object store. Each call still reports one record per
logical stage, so the stream's metrics stay per stage.

The edge actor is asynchronous: a batch's compute (``next_batch``, ``rebuild``) runs on one worker
thread while earlier batches wait on the link (``send``), so compute and transmission overlap as they
do with separate actors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from actors.base import StageBase
from actors.codec_stages import Decoder, Encoder
from actors.model_stages import HeadModel, ModelFactory, TailModel
from actors.sink import Sink
from actors.source import Source
from actors.transport import Transport
from pipeline.stream.data import TEXT_KINDS, SourceSpec
from pipeline.stream.errors import StageFailure


def _stage(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one logical stage; its failure is reported under its own name."""
    try:
        return fn(*args)
    except Exception as exc:
        raise StageFailure(stage, f"{type(exc).__name__}: {exc}") from exc


class EdgeNode(StageBase):
    """Source, head, encoder and transport of one edge in one process."""

    stage = "edge"

    def __init__(
        self,
        spec: SourceSpec,
        samples: int,
        batching: dict[str, Any],
        factory: ModelFactory,
        codec: dict[str, Any],
        link_spec: Any | None,
        *,
        first_id: int = 0,
        arrival: dict[str, Any] | None = None,
        reorder_timeout_s: float = 10.0,
        use_gpu: bool = False,
        threads: int = 1,
    ) -> None:
        super().__init__(0, threads)
        self.source = Source(
            spec, samples, first_id=first_id, arrival=arrival, threads=threads, **batching
        )
        self.head = HeadModel(factory, 0, use_gpu, threads=threads)
        self.encoder = Encoder(**codec, threads=threads)
        self.transport = Transport(link_spec, 0, reorder_timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compute")
        self._ahead: tuple[int, Future] | None = None  # (start, the batch being made ahead)

    def placement_notes(self) -> dict[str, Any]:
        return self.encoder.placement_notes()

    def _make(
        self,
        start: int,
        t0: float | None,
        setting: dict[str, Any] | None,
        items: list[Any] | None = None,
    ):
        """Source, head and encoder for the batch at ``start``; keeps the features, so a batch made
        ahead can be coded again if the driver asks for another setting. A batch none of whose
        samples loaded goes no further than the source."""
        meta, batch = _stage("source", self.source.next_batch, start, t0, items)
        if batch is None or not meta.get("good", 1):
            return {**meta, "stages": {"source": meta}}, None, None
        head_meta, feat = _stage("head", self.head.process, batch)
        return self._encode(meta, head_meta, feat, setting)

    def _encode(self, meta, head_meta, feat, setting):
        enc_meta, rb = _stage("encoder", self.encoder.process, feat, setting)
        stages = {"source": meta, "head": head_meta, "encoder": enc_meta}
        return {**meta, "stages": stages}, rb, (meta, head_meta, feat, setting)

    async def next_batch(
        self,
        start: int,
        t0: float | None = None,
        setting: dict[str, Any] | None = None,
        items: list[Any] | None = None,
    ):
        """Make the batch starting at sample ``start`` and encode it (with ``setting`` if given):
        ``(meta, Arrow batch)``.

        The batch after it is then made ahead, while the driver hands this one on: the driver asks for
        it next (unless it replays from elsewhere, when the early batch is dropped), so the compute
        thread never waits on a round trip through the driver. It is coded with the same setting; if
        the driver asks for another, only the encoder runs again. At most one batch is made ahead, and
        none for an iterable source, whose items come from the driver (``items``), nor for one that
        sheds load (a batch made ahead would hold samples that are stale by the time it goes)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == start:
            meta, rb, parts = await asyncio.wrap_future(ahead[1])
            if parts is not None and parts[3] != setting:
                meta, rb, parts = await asyncio.wrap_future(
                    self._pool.submit(self._encode, *parts[:3], setting)
                )
        else:
            meta, rb, parts = await asyncio.wrap_future(
                self._pool.submit(self._make, start, t0, setting, items)
            )
        if self.source.keep is None and items is None and meta["n"] and not meta["done"]:
            nxt = meta["start"] + meta["n"]
            self._ahead = (nxt, self._pool.submit(self._make, nxt, meta["t0"], setting))
        return meta, rb

    async def rebuild(
        self, start: int, n: int, t0: float, t_created: float, items: list[Any] | None = None
    ):
        """Make and encode an earlier batch again from its sample ids (or the driver's ``items``)."""

        def make():
            meta, batch = _stage("source", self.source.rebuild, start, n, t0, t_created, items)
            if not meta.get("good", 1):
                return {**meta, "stages": {"source": meta}}, None
            head_meta, feat = _stage("head", self.head.process, batch)
            return self._encode(meta, head_meta, feat, None)[:2]

        return await asyncio.wrap_future(self._pool.submit(make))

    async def send(self, rb, ticket: int, floor: int = 0):
        """Put an encoded batch on this edge's link (see :class:`~actors.transport.Transport`)."""
        return await self.transport.send(rb, ticket, floor)


class EdgeHost:
    """Several simulated edges in one process (``fleet.edges_per_process``), so that a large fleet on
    one machine loads torch once per host rather than once per edge. Each edge is a whole
    :class:`EdgeNode` with its own source, models, encoder, link and compute thread; every call names
    its edge first. A killed host takes all its edges down together, as a shared machine would, and
    the driver replays each edge's batches as it does for one."""

    def __init__(self, edges: dict[int, tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        """``edges``: edge index -> the (args, kwargs) of its :class:`EdgeNode`."""
        self.nodes = {e: EdgeNode(*args, **kwargs) for e, (args, kwargs) in edges.items()}

    def ready(self, edge: int) -> dict[str, Any]:
        return self.nodes[edge].ready()

    async def next_batch(self, edge: int, *args: Any, **kwargs: Any):
        return await self.nodes[edge].next_batch(*args, **kwargs)

    async def rebuild(self, edge: int, *args: Any, **kwargs: Any):
        return await self.nodes[edge].rebuild(*args, **kwargs)

    async def send(self, edge: int, *args: Any, **kwargs: Any):
        return await self.nodes[edge].send(*args, **kwargs)


class CloudNode(StageBase):
    """Decoder, tail and the sink's per-batch results of one cloud replica in one process (the sink
    keeps no state, so every replica can be its own). ``kind`` is the model's: a text model's
    (``encoder``, ``decoder``) features arrive as hidden rows of valid tokens with their masks.
    ``use_gpu``: the tail's device; ``codec_gpu``: the decoder's (see ``actors.codec_stages``)."""

    stage = "cloud"

    def __init__(
        self,
        feature_shape: tuple[int, ...] | None,
        factory: ModelFactory,
        source_spec: SourceSpec | None = None,
        reference_samples: int = 0,
        replica: int = 0,
        use_gpu: bool = False,
        threads: int = 1,
        *,
        kind: str = "vision",
        top_k: int = 0,
        results: bool = False,
        codec_gpu: bool = False,
    ) -> None:
        super().__init__(replica, threads)
        text = kind in TEXT_KINDS
        self.decoder = Decoder(
            feature_shape, replica, threads=threads, text=text, use_gpu=codec_gpu
        )
        self.tail = TailModel(
            factory,
            replica,
            use_gpu,
            threads=threads,
            kind=kind,
            reference_samples=reference_samples,
            top_k=top_k,
        )
        self.sink = Sink(source_spec, factory, reference_samples, results=results)

    def placement_notes(self) -> dict[str, Any]:
        return self.decoder.placement_notes()

    def process(self, rb) -> tuple[dict[str, Any], None]:
        """Decode a batch, run the tail and score the results: ``(meta, None)``."""
        dec_meta, batch = _stage("decoder", self.decoder.process, rb)
        tail_meta, out = _stage("tail", self.tail.process, batch)
        sink_meta, _ = _stage("sink", self.sink.receive, out)
        return {"stages": {"decoder": dec_meta, "tail": tail_meta, "sink": sink_meta}}, None
