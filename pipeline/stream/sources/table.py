"""A table (Parquet, JSONL or CSV) with a column of image paths, image bytes or text.

:func:`describe_table` reads the schema (and, for Parquet, only the label column) in the driver.
:class:`TableReader` reads Parquet by row groups as they are asked for (the latest two are
kept); JSONL and CSV are read whole, once per reader. Null cells are rejected with a reason.
"""

from __future__ import annotations

import bisect
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.stream.sources.items import Loaded, Reader, assemble
from pipeline.stream.sources.transform import (
    IMAGE_EXTENSIONS,
    Rejected,
    Transform,
    decode_image,
    load_image,
    one_line,
)

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
    ".csv": "csv",
}
PREFERRED_COLUMNS = ("image", "path", "text", "bytes")
"""Column names picked, in this order, when ``data.column`` is not given."""


@dataclass(frozen=True)
class TableSpec:
    """A table and how to read its ``column``: ``kind`` is ``paths``, ``bytes``, ``struct``
    (Hugging Face's image struct of ``bytes`` and ``path``) or ``text``."""

    path: str
    format: str
    column: str
    kind: str
    nrows: int
    label_column: str | None = None
    key_column: str | None = None
    class_names: tuple[str, ...] | None = None
    transform: Transform | None = None
    fps: ClassVar[float | None] = None

    @property
    def size(self) -> int:
        return self.nrows

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None

    @property
    def text(self) -> bool:
        return self.kind == "text"


def _read_whole(path: str, fmt: str, columns: list[str] | None = None) -> pa.Table:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=columns)
    if fmt == "json":
        import pyarrow.json as pj

        table = pj.read_json(path)
    else:
        import pyarrow.csv as pc

        table = pc.read_csv(path)
    return table if columns is None else table.select(columns)


def _schema(path: str, fmt: str) -> tuple[pa.Schema, int]:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return meta.schema_arrow, meta.metadata.num_rows
        table = _read_whole(path, fmt)
        return table.schema, table.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"data.path: cannot read table {path!r}: {one_line(exc)}") from None


def _column_values(path: str, fmt: str, column: str) -> pa.ChunkedArray:
    return _read_whole(path, fmt, [column]).column(0)


def _first_value(path: str, fmt: str, column: str) -> Any:
    """The column's first non-null value (Parquet: read batch by batch until one is found)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=4096, columns=[column])
    else:
        batches = _column_values(path, fmt, column).chunks
    for batch in batches:
        values = (batch.column(0) if isinstance(batch, pa.RecordBatch) else batch).drop_null()
        if len(values):
            return values[0].as_py()
    return None


def _pick_column(path: str, names: list[str], others: set[str]) -> str:
    candidates = [n for n in names if n not in others]
    if len(candidates) == 1:
        return candidates[0]
    for name in PREFERRED_COLUMNS:
        if name in candidates:
            return name
    raise ValueError(
        f"data.column: table {path!r} has several columns {names}; name the one of image "
        f"paths, image bytes or text (or call it one of {list(PREFERRED_COLUMNS)})"
    )


def _kind(path: str, fmt: str, column: str, dtype: pa.DataType) -> str:
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "bytes"
    if pa.types.is_fixed_size_binary(dtype):
        return "bytes"
    if pa.types.is_struct(dtype) and dtype.get_field_index("bytes") >= 0:
        return "struct"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        first = _first_value(path, fmt, column) or ""
        return "paths" if first.lower().endswith(IMAGE_EXTENSIONS) else "text"
    raise ValueError(
        f"data.column: column {column!r} of {path!r} holds {dtype}, not image paths, "
        "image bytes or text"
    )


def _class_names(path: str, fmt: str, column: str, dtype: pa.DataType) -> tuple[str, ...] | None:
    if pa.types.is_integer(dtype):
        return None
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        values = _column_values(path, fmt, column).drop_null().unique().to_pylist()
        return tuple(sorted(values))
    raise ValueError(
        f"data.label_column: column {column!r} of {path!r} holds {dtype}, not integers or strings"
    )


def describe_table(
    path: str,
    column: str | None = None,
    label_column: str | None = None,
    key_column: str | None = None,
    transform: Transform | None = None,
) -> TableSpec:
    """Check the table and its columns; pick ``column`` when it is not given."""
    if not os.path.exists(path):
        raise ValueError(f"data.path: no such file or folder: {path!r}")
    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(
            f"data.path: {path!r} is not a table: the name must end with one of {sorted(FORMATS)}"
        )
    schema, nrows = _schema(path, fmt)
    names = list(schema.names)
    given = {
        "data.column": column,
        "data.label_column": label_column,
        "data.key_column": key_column,
    }
    for key, name in given.items():
        if name is not None and name not in names:
            raise ValueError(f"{key}: table {path!r} has no column {name!r}; it has {names}")
    if column is None:
        column = _pick_column(path, names, {label_column, key_column} - {None})
    if nrows == 0:
        raise ValueError(f"data.path: table {path!r} has no rows")
    kind = _kind(path, fmt, column, schema.field(column).type)
    names_of_classes = None
    if label_column is not None:
        names_of_classes = _class_names(path, fmt, label_column, schema.field(label_column).type)
    return TableSpec(
        path=path,
        format=fmt,
        column=column,
        kind=kind,
        nrows=nrows,
        label_column=label_column,
        key_column=key_column,
        class_names=names_of_classes,
        transform=transform,
    )


class TableReader(Reader):
    """Reads the spec's rows; images decode on ``threads`` threads."""

    def __init__(self, spec: TableSpec, threads: int = 1) -> None:
        self.spec = spec
        self.size = spec.nrows
        self.has_labels = spec.has_labels
        self.class_names = spec.class_names
        self.fps = None
        self.text = spec.text
        self._root = os.path.dirname(os.path.abspath(spec.path))
        self._columns = list(dict.fromkeys(c for c in self._wanted() if c is not None))
        self._classes = {n: i for i, n in enumerate(spec.class_names or ())}
        self._cache: dict[int, pa.Table] = {}
        if spec.format == "parquet":
            import pyarrow.parquet as pq

            self._file: Any = pq.ParquetFile(spec.path)
            meta = self._file.metadata
            counts = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._starts = [int(s) for s in np.cumsum([0, *counts])[:-1]]
        else:
            self._file = None
            self._starts = [0]
            self._cache[0] = _read_whole(spec.path, spec.format, self._columns)
        self._pool = ThreadPoolExecutor(threads, "table") if threads > 1 else None

    def _wanted(self) -> tuple[str | None, ...]:
        return self.spec.column, self.spec.label_column, self.spec.key_column

    def _group(self, g: int) -> pa.Table:
        if g not in self._cache:
            if len(self._cache) >= 2:
                del self._cache[next(iter(self._cache))]
            self._cache[g] = self._file.read_row_group(g, columns=self._columns)
        return self._cache[g]

    def _rows(self, idx: list[int]) -> dict[str, list]:
        """The wanted columns' cells of rows ``idx`` (all within the table), as Python values."""
        out: dict[str, list] = {c: [None] * len(idx) for c in self._columns}
        by_group: dict[int, list[int]] = {}
        for pos, i in enumerate(idx):
            by_group.setdefault(bisect.bisect_right(self._starts, i) - 1, []).append(pos)
        for g, positions in by_group.items():
            local = pa.array([idx[p] - self._starts[g] for p in positions], pa.int64())
            taken = self._group(g).take(local)
            for c in self._columns:
                for p, v in zip(positions, taken.column(c).to_pylist(), strict=True):
                    out[c][p] = v
        return out

    def _image(self, cell: Any) -> np.ndarray | str:
        """An image cell decoded, or the reason it is rejected."""
        transform = self.spec.transform
        try:
            kind = self.spec.kind
            if kind == "struct":
                data, path = cell.get("bytes"), cell.get("path")
                if data is None and path is None:
                    raise Rejected(f"null bytes and path in column {self.spec.column!r}")
                kind, cell = ("bytes", data) if data is not None else ("paths", path)
            if kind == "bytes":
                return decode_image(bytes(cell), transform)
            return load_image(os.path.join(self._root, str(cell)), transform)
        except Rejected as exc:
            return str(exc)

    def _label(self, cell: Any) -> int:
        if cell is None:
            raise Rejected(f"null label in column {self.spec.label_column!r}")
        if isinstance(cell, str):
            return self._classes[cell]
        return int(cell)

    def read(self, idx: np.ndarray) -> Loaded:
        idx = [int(i) for i in np.asarray(idx, np.int64).reshape(-1)]
        spec = self.spec
        rejected: dict[int, str] = {}
        inside = [pos for pos, i in enumerate(idx) if 0 <= i < spec.nrows]
        for pos in sorted(set(range(len(idx))) - set(inside)):
            rejected[pos] = f"no row {idx[pos]} (the table has {spec.nrows})"
        cells = self._rows([idx[p] for p in inside])
        keys = [str(i) for i in idx]
        labels = [-1] * len(idx)
        pending: list[tuple[int, Any]] = []
        for n, pos in enumerate(inside):
            try:
                if spec.key_column is not None:
                    key = cells[spec.key_column][n]
                    if key is None:
                        raise Rejected(f"null key in column {spec.key_column!r}")
                    keys[pos] = str(key)
                if spec.label_column is not None:
                    labels[pos] = self._label(cells[spec.label_column][n])
                cell = cells[spec.column][n]
                if cell is None:
                    raise Rejected(f"null cell in column {spec.column!r}")
                pending.append((pos, cell))
            except Rejected as exc:
                rejected[pos] = str(exc)
        values: list[np.ndarray | str | None] = [None] * len(idx)
        if spec.text:
            for pos, cell in pending:
                values[pos] = str(cell)
        else:
            cells_only = [c for _, c in pending]
            done = (
                self._pool.map(self._image, cells_only)
                if self._pool
                else map(self._image, cells_only)
            )
            for (pos, _), value in zip(pending, done, strict=True):
                if isinstance(value, str):
                    rejected[pos] = value
                else:
                    values[pos] = value
        return assemble(values, keys, rejected, labels if spec.has_labels else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
