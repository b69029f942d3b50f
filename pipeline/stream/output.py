"""The stream's results: one row per input, written incrementally to Parquet or JSONL.

The driver is the only writer. It hands rows to a :class:`ResultWriter`, and now and then calls
:meth:`ResultWriter.commit`, which makes every row handed so far durable and returns a *position*
for the checkpoint. A resumed run reopens the writer at that position, which first removes all
that was written after it (those samples are replayed).

- Parquet: ``path`` is a folder of parts ``part-000000.parquet``, ``part-000001.parquet``, ...
  Each part is written to a hidden temp name in the folder, fsynced and renamed, so a reader of the
  folder (``pyarrow.parquet.read_table(path)``, ``pyarrow.dataset``) only ever sees complete parts.
  The position is the number of parts.
- JSONL: one JSON object per line (NaN and infinities as ``null``), appended, so a reader can tail
  the file. The position is the file's size in bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

PREDICTIONS = ("classes", "embedding", "token", "none")
"""What a row's prediction holds: top-k classes, an embedding vector, a next token, or nothing."""

FORMATS = ("parquet", "jsonl")
STATUSES = ("delivered", "rejected", "dropped")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

_PART = re.compile(r"^part-(\d{6,})\.parquet$")
_TMP_PREFIX = ".part-"  # temp parts: hidden, so pyarrow's dataset discovery skips them
_TMP_SUFFIX = ".tmp"
_PROBE_PREFIX = ".splitstream-probe-"


class OutputError(ValueError):
    """A problem with the results output; the message starts with the config key at fault."""


def result_schema(prediction: str, top_k: int = 5) -> pa.Schema:
    """The columns of a results row for a kind of prediction (one of :data:`PREDICTIONS`).

    ``top_k`` is checked but does not change the types: the class lists are variable-length (a
    model with fewer classes gives fewer).
    """
    if prediction not in PREDICTIONS:
        raise OutputError(f"output.prediction: {prediction!r} is not one of {list(PREDICTIONS)}")
    if top_k < 1:
        raise OutputError(f"output.top_k: must be at least 1, got {top_k}")
    fields = [
        ("id", pa.int64()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("latency_ms", pa.float64()),
        ("bits", pa.int8()),
        ("level", pa.int8()),
        ("codec", pa.string()),
        ("edge", pa.int32()),
        ("label", pa.int64()),
    ]
    if prediction == "classes":
        fields += [
            ("top_k", pa.list_(pa.int64())),
            ("scores", pa.list_(pa.float32())),
            ("names", pa.list_(pa.string())),
        ]
    elif prediction == "embedding":
        fields += [("embedding", pa.list_(pa.float32()))]
    elif prediction == "token":
        fields += [("next_token", pa.int64()), ("text", pa.string())]
    return pa.schema(fields)


def _prediction_of(columns: list[str] | set[str]) -> str:
    """The prediction kind whose schema has these columns."""
    if "top_k" in columns:
        return "classes"
    if "embedding" in columns:
        return "embedding"
    if "next_token" in columns:
        return "token"
    return "none"


def output_format(path: str, fmt: str | None) -> str:
    """``fmt`` if given, else from the suffix of ``path``: .jsonl/.ndjson/.json -> jsonl, else parquet."""
    if fmt is not None:
        if fmt.lower() not in FORMATS:
            raise OutputError(f"output.format: {fmt!r} is not one of {list(FORMATS)}")
        return fmt.lower()
    suffix = Path(str(path).rstrip("/")).suffix.lower()
    return "jsonl" if suffix in JSONL_SUFFIXES else "parquet"


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise OutputError(f"output.format: {fmt!r} is not one of {list(FORMATS)}")


def _clean_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if not text or not text.strip():
        raise OutputError("output.path: is empty")
    return Path(text.rstrip("/") or "/")


def _foreign_parquet(folder: Path) -> list[str]:
    """Parquet files in ``folder`` that are not our parts (a reader of the folder would mix them in)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.suffix == ".parquet" and not _PART.match(p.name) and not p.name.startswith((".", "_"))
    )


def check_writable(path: str, fmt: str) -> None:
    """Check, before anything starts, that results can be written at ``path``; creates nothing.

    The nearest existing folder on the way to ``path`` must be a folder we can create a file in
    (probed with a temp file, removed at once). A parquet ``path`` must not be a file, nor a folder
    holding other Parquet files; a jsonl ``path`` must not be a folder.
    """
    _check_format(fmt)
    target = _clean_path(path)
    if fmt == "parquet":
        if target.exists() and not target.is_dir():
            raise OutputError(
                f"output.path: {str(target)!r} is a file, but Parquet results are a folder of parts "
                "(remove the file, or use a .jsonl path)"
            )
        if target.is_dir():
            foreign = _foreign_parquet(target)
            if foreign:
                raise OutputError(
                    f"output.path: the folder {str(target)!r} holds other Parquet files "
                    f"({', '.join(foreign[:3])}), which its readers would mix with the results; "
                    "choose another folder"
                )
        folder = target
    else:
        if target.is_dir():
            raise OutputError(
                f"output.path: {str(target)!r} is a folder, but JSONL results are one file"
            )
        if target.exists() and not os.access(target, os.W_OK):
            raise OutputError(f"output.path: {str(target)!r} is not writable")
        folder = target.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"output.path: cannot create {str(folder)!r}: {str(existing)!r} is a file, not a folder"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=existing)
    except OSError as e:
        raise OutputError(f"output.path: cannot write in {str(existing)!r}: {e.strerror}") from e
    os.close(fd)
    os.unlink(probe)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (also inside lists and dicts) as None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _list_parts(folder: Path) -> dict[int, Path]:
    parts: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _PART.match(p.name)
        if m:
            parts[int(m.group(1))] = p
    return parts


class ResultWriter:
    """Writes result rows to ``path`` as Parquet parts or JSONL lines; see the module docstring.

    ``position=None`` starts fresh: earlier results at ``path`` are replaced (Parquet: only the
    ``part-*.parquet`` files of the folder are removed; JSONL: the file is truncated).
    ``position=P`` resumes: Parquet keeps parts ``0..P-1`` and removes the others; JSONL truncates
    the file to ``P`` bytes. A position beyond what exists is an :class:`OutputError`.

    Rows are dicts keyed by the schema's column names; a missing column is null, an unknown one a
    ``ValueError``. Rows are buffered and written once ``flush_rows`` are buffered, and at
    :meth:`commit`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        schema: pa.Schema,
        *,
        position: int | None = None,
        flush_rows: int = 8192,
    ) -> None:
        _check_format(fmt)
        if flush_rows < 1:
            raise OutputError(f"output.flush_rows: must be at least 1, got {flush_rows}")
        if position is not None and position < 0:
            raise OutputError(f"output.path: the position must be >= 0, got {position}")
        self.path = str(_clean_path(path))
        self.fmt = fmt
        self.schema = schema
        self.flush_rows = flush_rows
        self.rows_written = 0
        self._names = frozenset(schema.names)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._closed = False
        self._dirty = False  # written since the last fsync
        self._fd = -1
        self._position = 0
        if fmt == "parquet":
            self._open_parquet(position)
        else:
            self._open_jsonl(position)

    # -- opening ---------------------------------------------------------------------------

    def _open_parquet(self, position: int | None) -> None:
        folder = Path(self.path)
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"output.path: {self.path!r} is a file, but Parquet results are a folder"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"output.path: cannot create {self.path!r}: {e.strerror}") from e
        for p in folder.iterdir():
            if p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX):
                p.unlink()  # a part whose writer died before its rename
        parts = _list_parts(folder)
        if position is None:
            foreign = _foreign_parquet(folder)
            if foreign:
                raise OutputError(
                    f"output.path: the folder {self.path!r} holds other Parquet files "
                    f"({', '.join(foreign[:3])}); choose another folder"
                )
            keep = 0
        else:
            missing = [i for i in range(position) if i not in parts]
            if missing:
                raise OutputError(
                    f"output.path: the checkpoint's position {position} is beyond the results in "
                    f"{self.path!r} (part-{missing[0]:06d}.parquet is missing; {len(parts)} part(s) "
                    "there); were they moved or deleted?"
                )
            keep = position
        for i, p in parts.items():
            if i >= keep:
                p.unlink()
        _fsync_dir(folder)
        self._position = keep

    def _open_jsonl(self, position: int | None) -> None:
        file = Path(self.path)
        if file.is_dir():
            raise OutputError(
                f"output.path: {self.path!r} is a folder, but JSONL results are one file"
            )
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"output.path: cannot create {str(file.parent)!r}: {e.strerror}"
            ) from e
        size = file.stat().st_size if file.exists() else 0
        if position is not None:
            if position > size:
                raise OutputError(
                    f"output.path: the checkpoint's position {position} is beyond the end of "
                    f"{self.path!r} ({size} bytes); was it truncated or replaced?"
                )
            if position > 0:
                with open(file, "rb") as f:
                    f.seek(position - 1)
                    if f.read(1) != b"\n":
                        raise OutputError(
                            f"output.path: the checkpoint's position {position} is not at the end "
                            f"of a line of {self.path!r}; was it changed since the checkpoint?"
                        )
        keep = 0 if position is None else position
        try:
            self._fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise OutputError(f"output.path: cannot open {self.path!r}: {e.strerror}") from e
        os.ftruncate(self._fd, keep)
        self._position = keep
        self._dirty = True
        self._dir_synced = False

    # -- writing ---------------------------------------------------------------------------

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Buffer ``rows``; writes them out once ``flush_rows`` are buffered."""
        if self._closed:
            raise ValueError(f"ResultWriter.add: the writer of {self.path!r} is closed")
        if not rows:
            return
        for row in rows:
            extra = row.keys() - self._names
            if extra:
                raise ValueError(
                    f"ResultWriter.add: unknown column(s) {sorted(extra)}; "
                    f"the schema has {self.schema.names}"
                )
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"ResultWriter.add: rows do not fit the results schema: {e}") from e
        if table["id"].null_count:
            raise ValueError("ResultWriter.add: every row needs an id")
        if not pc.all(pc.is_in(table["status"], value_set=pa.array(STATUSES))).as_py():
            bad = sorted({s for s in table["status"].to_pylist() if s not in STATUSES}, key=str)
            raise ValueError(f"ResultWriter.add: status must be one of {list(STATUSES)}, got {bad}")
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows_written += table.num_rows
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        self._pending = []
        self._pending_rows = 0
        if self.fmt == "parquet":
            self._write_part(table)
        else:
            self._write_lines(table)
        self._dirty = True

    def _write_part(self, table: pa.Table) -> None:
        folder = Path(self.path)
        name = f"part-{self._position:06d}.parquet"
        tmp = folder / f".{name}{_TMP_SUFFIX}"
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / name)
        self._position += 1

    def _write_lines(self, table: pa.Table) -> None:
        text = "".join(
            json.dumps(_finite(row), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
            + "\n"
            for row in table.to_pylist()
        )
        data = text.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._position += len(data)

    def commit(self) -> int:
        """Write out and fsync every row handed so far; the position to keep in the checkpoint."""
        if self._closed:
            return self._position
        self._flush()
        if self._dirty:
            if self.fmt == "parquet":
                _fsync_dir(Path(self.path))
            else:
                os.fsync(self._fd)
                if not self._dir_synced:
                    _fsync_dir(Path(self.path).parent)
                    self._dir_synced = True
            self._dirty = False
        return self._position

    def close(self) -> int:
        """Commit and close; the final position. Closing again returns it again."""
        if self._closed:
            return self._position
        position = self.commit()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._closed = True
        return position

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def read_results(
    path: str | os.PathLike[str], fmt: str | None = None, *, schema: pa.Schema | None = None
) -> pa.Table:
    """All results at ``path`` (Parquet: the folder's parts in order; JSONL: the file).

    ``schema`` defaults to the one of the prediction kind the columns show; it is also the schema
    of the empty table an output without rows gives (else :func:`result_schema` ``("none")``).
    """
    fmt = output_format(os.fspath(path), fmt)
    target = _clean_path(path)
    if not target.exists():
        raise OutputError(f"output.path: no results at {str(target)!r}")
    if fmt == "parquet":
        if not target.is_dir():
            raise OutputError(f"output.path: {str(target)!r} is not a folder of Parquet parts")
        parts = [p for _, p in sorted(_list_parts(target).items())]
        if not parts:
            return (schema or result_schema("none")).empty_table()
        tables = [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables)
        return table.cast(schema) if schema is not None else table
    if target.is_dir():
        raise OutputError(f"output.path: {str(target)!r} is a folder, not a JSONL file")
    with open(target, "rb") as f:
        first = f.readline()
    if not first.strip():
        return (schema or result_schema("none")).empty_table()
    if schema is None:
        schema = result_schema(_prediction_of(set(json.loads(first))))
    return pajson.read_json(
        target,
        read_options=pajson.ReadOptions(block_size=16 << 20),
        parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="error"
        ),
    )
