"""One row per input: what the driver makes of each sample it settles, handed to the output writer and
to the Python API's readers, with periodic commits and checkpoints.

The driver's ledgers decide which outcome of a sample counts (the first); only those reach
:class:`ResultLog`, so each input gets exactly one row: ``delivered`` with its prediction, or
``rejected`` with the reason (an input that did not load, or a frame that did not decode). Every
``output.checkpoint_s`` the writer commits what it holds and the checkpoint records which samples are
settled, in that order: a driver that dies between the two leaves rows that the checkpoint does not
cover, and the resumed run removes them before it writes them again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

RowsCallback = Callable[[list[dict[str, Any]]], None]


class ResultLog:
    """Rows of settled samples for ``writer`` (None: no file) and ``listeners``.

    ``prediction`` is ``classes``, ``embedding``, ``token`` or ``none`` (see
    :func:`pipeline.stream.output.result_schema`); ``class_names`` name a classifier's classes.
    With a writer and ``checkpoint``, :meth:`tick` commits and checkpoints every ``interval_s``."""

    def __init__(
        self,
        writer: Any = None,
        *,
        prediction: str = "classes",
        class_names: Sequence[str] | None = None,
        checkpoint: Any = None,
        interval_s: float = 5.0,
        listeners: Sequence[RowsCallback] = (),
        resumed: dict[str, int] | None = None,
        runs: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.prediction = prediction
        self.class_names = tuple(class_names) if class_names else None
        self.checkpoint_file = checkpoint  # (path, config) of the run's checkpoint, or None
        self.interval_s = interval_s
        self.listeners = list(listeners)
        self.resumed = dict(resumed or {"delivered": 0, "rejected": 0, "dropped": 0})
        self.runs = runs
        self.clock = clock
        self.counts = {"delivered": 0, "rejected": 0, "dropped": 0}
        self.checkpoints = 0
        self._last = clock()

    @property
    def wanted(self) -> bool:
        """True when anyone reads the rows (a file or a listener)."""
        return self.writer is not None or bool(self.listeners)

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.writer is not None:
            self.writer.add(rows)
        for listen in self.listeners:
            listen(rows)

    def _base(self, edge: int, i: int, key: str | None, status: str, setting: dict[str, Any]):
        return {
            "id": int(i),
            "key": str(i) if key is None else key,
            "status": status,
            "reason": None,
            "latency_ms": None,
            "bits": setting.get("bits"),
            "level": setting.get("level"),
            "codec": setting.get("label"),
            "edge": edge,
            "label": None,
        }

    def delivered(
        self,
        edge: int,
        ids: Sequence[int],
        keys: Sequence[str | None],
        latency_s: Sequence[float],
        labels: Sequence[Any] | None,
        results: dict[str, list[Any]] | None,
        positions: Sequence[int],
        setting: dict[str, Any],
    ) -> None:
        """Rows of the delivered samples at ``positions`` of a sink's batch."""
        self.counts["delivered"] += len(positions)
        if not self.wanted:
            return
        res = results or {}
        rows = []
        for j in positions:
            row = self._base(edge, ids[j], keys[j], "delivered", setting)
            lat = float(latency_s[j])
            row["latency_ms"] = lat * 1000.0 if math.isfinite(lat) else None
            if labels is not None:
                row["label"] = int(labels[j])
            row.update(self._prediction(res, j))
            rows.append(row)
        self._emit(rows)

    def _prediction(self, res: dict[str, list[Any]], j: int) -> dict[str, Any]:
        if self.prediction == "classes":
            top = res.get("top_k")
            if top is None and "preds" in res:
                top = [[p] for p in res["preds"]]
            idx = None if top is None else [int(c) for c in top[j]]
            names = None
            if idx is not None and self.class_names is not None:
                names = [
                    self.class_names[c] if 0 <= c < len(self.class_names) else None for c in idx
                ]
            scores = res.get("scores")
            return {"top_k": idx, "scores": None if scores is None else scores[j], "names": names}
        if self.prediction == "embedding":
            emb = res.get("embedding")
            return {"embedding": None if emb is None else emb[j]}
        if self.prediction == "token":
            preds = res.get("preds")
            return {"next_token": None if preds is None else int(preds[j]), "text": None}
        return {}

    def rejected(
        self,
        edge: int,
        ids: Sequence[int],
        keys: Sequence[str | None],
        reasons: Sequence[str],
        setting: dict[str, Any],
    ) -> None:
        """Rows of rejected samples, each with its reason."""
        self._unserved("rejected", edge, ids, keys, reasons, setting)

    def dropped(
        self, edge: int, ids: Sequence[int], keys: Sequence[str | None], reason: str
    ) -> None:
        """Rows of samples a live source shed unread (``flow.overflow``)."""
        self._unserved("dropped", edge, ids, keys, [reason] * len(ids), {})

    def _unserved(
        self,
        status: str,
        edge: int,
        ids: Sequence[int],
        keys: Sequence[str | None],
        reasons: Sequence[str],
        setting: dict[str, Any],
    ) -> None:
        """Rows of samples that settle without a prediction, each with its reason."""
        self.counts[status] += len(ids)
        if not self.wanted:
            return
        rows = []
        for i, key, reason in zip(ids, keys, reasons, strict=True):
            row = self._base(edge, i, key, status, setting)
            row["reason"] = reason
            row.update(self._prediction({}, 0))
            rows.append(row)
        self._emit(rows)

    def due(self) -> bool:
        """True when the next checkpoint is due."""
        return self.checkpoint_file is not None and self.clock() - self._last >= self.interval_s

    def commit(self, edges: list[dict[str, Any]], final: bool = False) -> None:
        """Make every row so far durable, then record the settled samples (``edges``: each edge's
        state, see the executor) in the checkpoint."""
        self._last = self.clock()
        if self.writer is None:
            return
        position = self.writer.close() if final else self.writer.commit()
        if self.checkpoint_file is None:
            return
        from pipeline.stream.checkpoint import Checkpoint, save

        path, config = self.checkpoint_file
        counts = {k: self.resumed.get(k, 0) + v for k, v in self.counts.items()}
        save(path, Checkpoint(config, position, edges, counts, self.runs, time.time()))
        self.checkpoints += 1

    def summary(self) -> dict[str, Any]:
        """The report's ``output``: where the rows went and how many of each status."""
        w = self.writer
        resumed = sum(self.resumed.values())
        out: dict[str, Any] = {
            "path": None if w is None else str(w.path),
            "format": None if w is None else w.fmt,
            "rows": sum(self.counts.values()),
            **self.counts,
            "resumed": resumed,
            "rows_total": resumed + sum(self.counts.values()),
            "runs": self.runs,
            "checkpoints": self.checkpoints,
        }
        return out


def open_results(
    cfg: Any,
    prediction: str,
    class_names: Sequence[str] | None = None,
    *,
    resume: bool = False,
    listeners: Sequence[RowsCallback] = (),
) -> tuple[ResultLog, list[dict[str, Any]] | None]:
    """The run's :class:`ResultLog` and, for ``resume``, each edge's settled samples from the
    checkpoint beside ``output.path``. Checks everything before Ray starts; raises ``ValueError``
    (a :class:`~pipeline.stream.output.OutputError` or
    :class:`~pipeline.stream.checkpoint.CheckpointError`) naming the key or the flag at fault.

    A fresh run over an output that holds a checkpoint is refused (``--resume`` continues it): a
    repeated command never silently replaces an earlier run's results."""
    from pipeline.stream import checkpoint as ck
    from pipeline.stream.output import ResultWriter, output_format, result_schema

    out = cfg.output
    config = ck.fingerprint_config(cfg.model_dump(mode="json"))
    if out.path is None:
        if resume:
            raise ck.CheckpointError("--resume: needs output.path (the checkpoint lies beside it)")
        return ResultLog(prediction=prediction, class_names=class_names, listeners=listeners), None
    fmt = output_format(out.path, out.format)
    path = ck.checkpoint_path(out.path)
    states, position, counts, runs = None, None, None, 1
    if resume:
        saved = ck.load(path)
        ck.check_resumable(saved, config)
        if len(saved.edges) != cfg.fleet.edges:
            raise ck.CheckpointError(f"--resume: the checkpoint has {len(saved.edges)} edges")
        states, position, counts, runs = saved.edges, saved.position, saved.counts, saved.runs + 1
    elif path.exists():
        raise ck.CheckpointError(
            f"output.path: {out.path!r} holds an earlier run (its checkpoint {str(path)!r}): add "
            "--resume to continue it, or delete both to start again"
        )
    schema = result_schema(prediction, out.top_k)
    writer = ResultWriter(out.path, fmt, schema, position=position, flush_rows=out.flush_rows)
    log = ResultLog(
        writer,
        prediction=prediction,
        class_names=class_names,
        checkpoint=(path, config),
        interval_s=out.checkpoint_s,
        listeners=listeners,
        resumed=counts,
        runs=runs,
    )
    return log, states
