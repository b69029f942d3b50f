"""The Python API: stream your own inputs through a split model and read one result row per input.

```python
from splitstream import Stream

stream = Stream("configs/demo.yaml", model=(head, tail), inputs=photos,
                overrides=["link.bandwidth_mbps=10"])
for row in stream.results():        # rows arrive while the stream runs
    print(row["key"], row["status"], row["top_k"])
table = stream.table()              # every row, as a pyarrow.Table
report = stream.report              # the run's report (the CLI prints the same)
```

A :class:`Stream` runs the driver on a background thread of the calling process, so the caller reads
rows as they settle. The rows also go to ``output.path`` when it is set. ``stop()`` stops reading (what
is in flight still settles); a second call aborts.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pipeline.stream.config import ConfigError, PipelineConfig, load_config
from pipeline.stream.stopping import StopControl

_END = object()

ROWS_BUFFERED = 4096
"""Rows waiting for the reader of :meth:`Stream.results`; past this the stream waits for it."""


def _pair(head: Any, tail: Any) -> tuple[Any, Any]:
    return head, tail


def model_factory(model: Any) -> Callable[[], tuple[Any, Any]] | None:
    """A picklable factory for ``model``: a ``(head, tail)`` pair of torch modules (shipped to each
    actor by value), or a zero-argument callable that returns one; None keeps the config's model."""
    if model is None:
        return None
    if isinstance(model, tuple) and len(model) == 2:
        return functools.partial(_pair, *model)
    if callable(model):
        return model
    raise ConfigError("model: give (head, tail) torch modules or a callable that returns them")


class Stream:
    """One stream of ``inputs`` (any iterable of tensors, arrays, PIL images or ``(key, item)``
    pairs, or a ``ray.data.Dataset``) through ``model``, configured by ``config`` (a YAML path, a
    :class:`PipelineConfig` or None for the defaults) and ``overrides`` (``key=value`` strings).

    Without ``inputs`` the config's own source runs (``data.source``: images, video, table or a
    built-in one). Configuration errors raise :class:`ConfigError` here, before anything starts."""

    def __init__(
        self,
        config: str | PipelineConfig | None = None,
        *,
        model: Any = None,
        inputs: Iterable[Any] | None = None,
        overrides: Sequence[str] = (),
        resume: bool = False,
        progress: bool = False,
    ) -> None:
        self.factory = model_factory(model)
        extra = list(overrides)
        if inputs is not None:
            extra.insert(0, "data.source=iterable")
        if self.factory is not None and not any(o.startswith("model.name=") for o in extra):
            extra.insert(0, "model.name=custom")
        if isinstance(config, PipelineConfig):
            data = config.model_dump(mode="json")
            from pipeline.stream.config import apply_overrides, validate_config

            self.cfg = validate_config(apply_overrides(data, extra), check_model=model is None)
        else:
            self.cfg = load_config(config, extra, check_model=self.factory is None)
        self.inputs = inputs
        self.resume = resume
        self.progress = progress
        self.control = StopControl()
        self.report: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._rows: queue.Queue[Any] | None = None
        self._abandoned = False  # the reader of results() has stopped reading
        self._kept: list[dict[str, Any]] | None = None if self.cfg.output.path else []
        self._thread: threading.Thread | None = None
        self._started_ray = False

    def _listen(self, rows: list[dict[str, Any]]) -> None:
        """The driver's rows: kept for :meth:`table`, and queued for :meth:`results` (the driver
        waits for a slow reader, but not for one that has stopped reading or an aborted stream)."""
        if self._kept is not None:
            self._kept.extend(rows)
        if self._rows is None:
            return
        for row in rows:
            while not (self._abandoned or self.control.aborted):
                try:
                    self._rows.put(row, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def start(self) -> Stream:
        """Start the stream (once); it runs until its source ends or :meth:`stop`."""
        if self._thread is not None:
            return self
        from splitstream.runner import _init_ray

        self._started_ray = _init_ray(self.cfg)  # in the caller's thread, before the driver's

        def drive() -> None:
            from splitstream.runner import run_pipeline

            try:
                self.report = run_pipeline(
                    self.cfg, self.progress, self.factory, inputs=self.inputs,
                    stop=self.control, resume=self.resume, listeners=[self._listen],
                )  # fmt: skip
            except BaseException as exc:  # handed to the caller by results(), wait() and table()
                self.error = exc
                self.report = getattr(exc, "report", None)
            finally:  # the end mark, after every row, for a reader still reading
                while self._rows is not None and not self._abandoned:
                    with contextlib.suppress(queue.Full):
                        self._rows.put(_END, timeout=0.1)
                        break

        self._thread = threading.Thread(target=drive, name="splitstream-driver", daemon=True)
        self._thread.start()
        return self

    def results(self) -> Iterator[dict[str, Any]]:
        """The result rows, one per input, as the stream settles them (starts the stream). Raises
        the stream's error, if it failed, after the last row."""
        if self._thread is not None:
            raise RuntimeError("results() reads the stream from its start: call it before start()")
        self._rows = queue.Queue(ROWS_BUFFERED)
        self.start()
        try:
            while True:
                row = self._rows.get()
                if row is _END:
                    break
                yield row
        finally:  # a reader that leaves the loop early no longer holds the stream back
            self._abandoned = True
        self.wait()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the end of the stream; returns its report (raises its error)."""
        self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the stream is still running after {timeout} s")
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report

    def table(self) -> Any:
        """Every result row as a ``pyarrow.Table`` (waits for the end of the stream)."""
        self.wait()
        from pipeline.stream.output import read_results, result_schema

        if self.cfg.output.path is not None:
            return read_results(self.cfg.output.path, self.cfg.output.format)
        import pyarrow as pa

        kind = self._prediction()
        return pa.Table.from_pylist(self._kept or [], schema=result_schema(kind))

    def _prediction(self) -> str:
        rows = self._kept or []
        if rows and "embedding" in rows[0]:
            return "embedding"
        if rows and "next_token" in rows[0]:
            return "token"
        return "classes"

    def stop(self) -> None:
        """Stop reading inputs: what is in flight settles, then the stream ends. A second call
        aborts at once."""
        self.control.request("request")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()
            self.stop()
            self._thread.join()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
