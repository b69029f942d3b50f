"""pipeline.stream.output: the results schema, Parquet parts and JSONL lines, commit and resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.stream import output
from pipeline.stream.output import (
    PREDICTIONS,
    OutputError,
    ResultWriter,
    check_writable,
    output_format,
    read_results,
    result_schema,
)

REPO = Path(__file__).resolve().parents[1]
COMMON = ["id", "key", "status", "reason", "latency_ms", "bits", "level", "codec", "edge", "label"]


def _common(i: int) -> dict:
    if i % 3 == 2:  # a rejected row: no latency, no prediction, codec setting unknown
        return {"id": i, "key": f"k{i}", "status": "rejected", "reason": "frame failed to decode"}
    return {
        "id": i,
        "key": f"k{i}",
        "status": "delivered",
        "reason": None,
        "latency_ms": 1.5 * i,
        "bits": 8,
        "level": 3,
        "codec": "8b/L3",
        "edge": i % 2,
        "label": None if i % 3 == 1 else i % 10,
    }


def _rows(prediction: str, ids: range) -> list[dict]:
    """Rows of a kind; values exact in float32, so they read back equal."""
    rows = []
    for i in ids:
        row = _common(i)
        if row["status"] == "delivered":
            if prediction == "classes":
                row |= {"top_k": [i % 10, 3], "scores": [0.75, 0.125]}
                row["names"] = None if i % 2 else [f"c{i % 10}", "c3"]
            elif prediction == "embedding":
                row["embedding"] = [0.5, -0.25, float(i)]
            elif prediction == "token":
                row |= {"next_token": 1000 + i, "text": None if i % 2 else f"word{i}"}
        rows.append(row)
    return rows


def _full(rows: list[dict], schema: pa.Schema) -> list[dict]:
    """``rows`` as they read back: every column, missing ones null."""
    return [{name: row.get(name) for name in schema.names} for row in rows]


def _ids(path: Path, fmt: str | None = None) -> list[int]:
    return read_results(path, fmt)["id"].to_pylist()


def _add_each(writer: ResultWriter, rows: list[dict]) -> None:
    for row in rows:
        writer.add([row])


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))


class TestResultSchema:
    @pytest.mark.parametrize(
        "prediction,extra",
        [
            ("classes", ["top_k", "scores", "names"]),
            ("embedding", ["embedding"]),
            ("token", ["next_token", "text"]),
            ("none", []),
        ],
    )
    def test_columns(self, prediction, extra):
        schema = result_schema(prediction)
        assert schema.names == COMMON + extra
        assert schema.field("bits").type == pa.int8()
        assert schema.field("edge").type == pa.int32()

    def test_prediction_types(self):
        assert result_schema("classes").field("scores").type == pa.list_(pa.float32())
        assert result_schema("embedding").field("embedding").type == pa.list_(pa.float32())
        assert result_schema("token").field("next_token").type == pa.int64()

    def test_bad_prediction(self):
        with pytest.raises(OutputError, match="output.prediction"):
            result_schema("logits")

    def test_bad_top_k(self):
        with pytest.raises(OutputError, match="top_k"):
            result_schema("classes", top_k=0)


class TestOutputFormat:
    @pytest.mark.parametrize(
        "path,fmt",
        [
            ("out.jsonl", "jsonl"),
            ("out.NDJSON", "jsonl"),
            ("a/out.json", "jsonl"),
            ("out.parquet", "parquet"),
            ("out.parquet/", "parquet"),
            ("results", "parquet"),
        ],
    )
    def test_from_suffix(self, path, fmt):
        assert output_format(path, None) == fmt

    def test_given_format_wins(self):
        assert output_format("out.jsonl", "parquet") == "parquet"
        assert output_format("out", "JSONL") == "jsonl"

    def test_bad_format(self):
        with pytest.raises(OutputError, match="^output.format: 'csv'"):
            output_format("out.csv", "csv")


class TestCheckWritable:
    def test_new_nested_path_creates_nothing(self, tmp_path):
        for fmt, name in (("parquet", "out.parquet"), ("jsonl", "out.jsonl")):
            check_writable(str(tmp_path / "a" / "b" / name), fmt)
        check_writable(str(tmp_path / "out.jsonl"), "jsonl")
        assert list(tmp_path.iterdir()) == []

    def test_existing_outputs_are_fine(self, tmp_path):
        with ResultWriter(tmp_path / "out.parquet", "parquet", result_schema("none")) as w:
            w.add(_rows("none", range(3)))
        (tmp_path / "out.jsonl").write_text("{}\n")
        check_writable(str(tmp_path / "out.parquet"), "parquet")
        check_writable(str(tmp_path / "out.jsonl"), "jsonl")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.parquet"]

    def test_parquet_path_is_a_file(self, tmp_path):
        (tmp_path / "out.parquet").write_bytes(b"PAR1")
        with pytest.raises(OutputError, match="^output.path: .* is a file"):
            check_writable(str(tmp_path / "out.parquet"), "parquet")

    def test_jsonl_path_is_a_folder(self, tmp_path):
        (tmp_path / "out.jsonl").mkdir()
        with pytest.raises(OutputError, match="^output.path: .* is a folder"):
            check_writable(str(tmp_path / "out.jsonl"), "jsonl")

    @pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
    def test_parent_is_a_file(self, tmp_path, fmt):
        (tmp_path / "file").write_text("x")
        with pytest.raises(OutputError, match="^output.path: cannot create .* is a file"):
            check_writable(str(tmp_path / "file" / "sub" / "out"), fmt)

    def test_folder_with_other_parquet_files(self, tmp_path):
        folder = tmp_path / "out.parquet"
        folder.mkdir()
        pq.write_table(pa.table({"x": [1]}), folder / "data.parquet")
        with pytest.raises(OutputError, match="other Parquet files \\(data.parquet\\)"):
            check_writable(str(folder), "parquet")

    def test_bad_format(self, tmp_path):
        with pytest.raises(OutputError, match="^output.format"):
            check_writable(str(tmp_path / "out"), "csv")

    def test_empty_path(self):
        with pytest.raises(OutputError, match="^output.path: is empty"):
            check_writable("", "jsonl")


class TestResultWriter:
    @pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
    @pytest.mark.parametrize("prediction", PREDICTIONS)
    def test_round_trip(self, tmp_path, fmt, prediction):
        path = tmp_path / ("out.parquet" if fmt == "parquet" else "out.jsonl")
        schema = result_schema(prediction)
        rows = _rows(prediction, range(20))
        with ResultWriter(path, fmt, schema, flush_rows=7) as w:
            w.add(rows[:5])
            w.add(rows[5:])
            assert w.rows_written == 20
        table = read_results(path)
        assert table.schema.equals(schema)
        assert table.to_pylist() == _full(rows, schema)

    def test_numpy_values(self, tmp_path):
        np = pytest.importorskip("numpy")
        row = {"id": np.int64(4), "status": "delivered", "bits": np.int8(4)}
        row["embedding"] = np.array([0.5, 2.0], dtype=np.float32)
        with ResultWriter(tmp_path / "o.jsonl", "jsonl", result_schema("embedding")) as w:
            w.add([row])
        got = read_results(tmp_path / "o.jsonl").to_pylist()[0]
        assert (got["id"], got["bits"], got["embedding"]) == (4, 4, [0.5, 2.0])

    def test_jsonl_nan_is_null(self, tmp_path):
        path = tmp_path / "out.jsonl"
        row = {"id": 0, "status": "delivered", "latency_ms": float("nan")}
        row |= {"top_k": [1, 2], "scores": [float("nan"), float("inf")]}
        with ResultWriter(path, "jsonl", result_schema("classes")) as w:
            w.add([row])
        line = json.loads(path.read_text())
        assert line["latency_ms"] is None and line["scores"] == [None, None]
        got = read_results(path).to_pylist()[0]
        assert got["latency_ms"] is None and got["scores"] == [None, None]

    def test_jsonl_lines_tail(self, tmp_path):
        path = tmp_path / "out.jsonl"
        w = ResultWriter(path, "jsonl", result_schema("token"))
        w.add(_rows("token", range(4)))
        position = w.commit()
        # another process reads while the writer is open: whole JSON lines, one per row
        lines = path.read_bytes().splitlines()
        assert [json.loads(x)["id"] for x in lines] == [0, 1, 2, 3]
        assert position == path.stat().st_size
        w.close()

    def test_parquet_parts(self, tmp_path):
        folder = tmp_path / "out.parquet"
        w = ResultWriter(folder, "parquet", result_schema("none"), flush_rows=4)
        assert w.commit() == 0 and _parts(folder) == []  # an empty commit writes no part
        w.add(_rows("none", range(3)))
        assert _parts(folder) == []  # buffered
        w.add(_rows("none", range(3, 5)))  # 5 >= flush_rows: a part
        assert _parts(folder) == ["part-000000.parquet"]
        w.add(_rows("none", range(5, 6)))
        assert w.commit() == 2
        assert w.commit() == 2
        assert _parts(folder) == ["part-000000.parquet", "part-000001.parquet"]
        assert pq.read_table(folder).num_rows == 6
        assert w.close() == 2

    def test_reader_sees_only_complete_parts(self, tmp_path, monkeypatch):
        folder = tmp_path / "out.parquet"
        w = ResultWriter(folder, "parquet", result_schema("classes"))
        w.add(_rows("classes", range(5)))
        w.commit()
        seen = []
        real = output.pq.write_table

        def write_then_look(table, where, **kwargs):
            real(table, where, **kwargs)
            # the new part is complete on disk, under its temp name, not yet renamed
            assert Path(where).parent == folder and Path(where).name.startswith((".", "_"))
            seen.append(pq.read_table(folder).num_rows)
            seen.append(ds.dataset(folder, format="parquet").to_table().num_rows)

        monkeypatch.setattr(output.pq, "write_table", write_then_look)
        w.add(_rows("classes", range(5, 8)))
        assert w.commit() == 2
        assert seen == [5, 5]
        assert pq.read_table(folder).num_rows == 8

    def test_half_written_temp_part_is_ignored(self, tmp_path):
        folder = tmp_path / "out.parquet"
        with ResultWriter(folder, "parquet", result_schema("none")) as w:
            w.add(_rows("none", range(4)))
        whole = (folder / "part-000000.parquet").read_bytes()
        (folder / ".part-000001.parquet.tmp").write_bytes(whole[: len(whole) // 2])
        assert pq.read_table(folder)["id"].to_pylist() == [0, 1, 2, 3]
        assert ds.dataset(folder, format="parquet").to_table().num_rows == 4
        assert _ids(folder) == [0, 1, 2, 3]
        # the writer of a resumed run removes it
        ResultWriter(folder, "parquet", result_schema("none"), position=1).close()
        assert sorted(p.name for p in folder.iterdir()) == ["part-000000.parquet"]

    def test_parquet_resume_drops_later_parts(self, tmp_path):
        folder = tmp_path / "out.parquet"
        schema = result_schema("embedding")
        w = ResultWriter(folder, "parquet", schema)
        positions = []
        for start in (0, 10, 20):
            w.add(_rows("embedding", range(start, start + 10)))
            positions.append(w.commit())
        w.close()
        assert positions == [1, 2, 3]
        w = ResultWriter(folder, "parquet", schema, position=2)
        assert _parts(folder) == ["part-000000.parquet", "part-000001.parquet"]
        assert _ids(folder) == list(range(20))
        w.add(_rows("embedding", range(20, 25)))
        assert w.rows_written == 5
        assert w.close() == 3
        assert read_results(folder).to_pylist() == _full(_rows("embedding", range(25)), schema)

    def test_jsonl_resume_truncates_at_committed_byte(self, tmp_path):
        path = tmp_path / "out.jsonl"
        schema = result_schema("classes")
        w = ResultWriter(path, "jsonl", schema)
        w.add(_rows("classes", range(6)))
        committed = w.commit()
        w.add(_rows("classes", range(6, 9)))
        w.close()
        data = path.read_bytes()
        assert committed == data.index(b'{"id":6,')
        w = ResultWriter(path, "jsonl", schema, position=committed)
        assert path.read_bytes() == data[:committed]
        w.add(_rows("classes", range(6, 8)))
        assert w.close() == path.stat().st_size
        assert read_results(path).to_pylist() == _full(_rows("classes", range(8)), schema)

    def test_resume_at_zero(self, tmp_path):
        path = tmp_path / "out.jsonl"
        (ResultWriter(path, "jsonl", result_schema("none"))).close()
        w = ResultWriter(path, "jsonl", result_schema("none"), position=0)
        w.add(_rows("none", range(2)))
        w.close()
        assert _ids(path) == [0, 1]
        ResultWriter(tmp_path / "new.jsonl", "jsonl", result_schema("none"), position=0).close()
        assert (tmp_path / "new.jsonl").stat().st_size == 0

    def test_parquet_position_beyond_parts(self, tmp_path):
        folder = tmp_path / "out.parquet"
        with ResultWriter(folder, "parquet", result_schema("none"), flush_rows=1) as w:
            _add_each(w, _rows("none", range(2)))
        with pytest.raises(
            OutputError, match="^output.path: the checkpoint's position 3 is beyond"
        ):
            ResultWriter(folder, "parquet", result_schema("none"), position=3)
        assert len(_parts(folder)) == 2  # nothing removed

    def test_parquet_missing_part(self, tmp_path):
        folder = tmp_path / "out.parquet"
        with ResultWriter(folder, "parquet", result_schema("none"), flush_rows=1) as w:
            _add_each(w, _rows("none", range(3)))
        (folder / "part-000001.parquet").unlink()
        with pytest.raises(OutputError, match="part-000001.parquet is missing"):
            ResultWriter(folder, "parquet", result_schema("none"), position=2)

    def test_jsonl_position_beyond_end(self, tmp_path):
        path = tmp_path / "out.jsonl"
        with ResultWriter(path, "jsonl", result_schema("none")) as w:
            w.add(_rows("none", range(2)))
        size = path.stat().st_size
        with pytest.raises(OutputError, match="beyond the end"):
            ResultWriter(path, "jsonl", result_schema("none"), position=size + 1)
        with pytest.raises(OutputError, match="beyond the end"):
            ResultWriter(tmp_path / "none.jsonl", "jsonl", result_schema("none"), position=5)
        assert path.stat().st_size == size

    def test_jsonl_position_inside_a_line(self, tmp_path):
        path = tmp_path / "out.jsonl"
        with ResultWriter(path, "jsonl", result_schema("none")) as w:
            w.add(_rows("none", range(2)))
        with pytest.raises(OutputError, match="not at the end of a line"):
            ResultWriter(path, "jsonl", result_schema("none"), position=5)

    def test_negative_position(self, tmp_path):
        with pytest.raises(OutputError, match="position must be >= 0"):
            ResultWriter(tmp_path / "o.jsonl", "jsonl", result_schema("none"), position=-1)

    def test_fresh_run_replaces_parts_only(self, tmp_path):
        folder = tmp_path / "out.parquet"
        with ResultWriter(folder, "parquet", result_schema("none"), flush_rows=2) as w:
            _add_each(w, _rows("none", range(6)))
        assert len(_parts(folder)) == 3
        (folder / "_SUCCESS").write_text("")
        (folder / "notes.txt").write_text("mine")
        w = ResultWriter(folder, "parquet", result_schema("none"))
        assert _parts(folder) == []
        w.add(_rows("none", range(100, 102)))
        w.close()
        assert _ids(folder) == [100, 101]
        assert (folder / "notes.txt").read_text() == "mine" and (folder / "_SUCCESS").exists()

    def test_fresh_run_truncates_jsonl(self, tmp_path):
        path = tmp_path / "sub" / "out.jsonl"
        with ResultWriter(path, "jsonl", result_schema("none")) as w:
            w.add(_rows("none", range(5)))
        with ResultWriter(path, "jsonl", result_schema("none")) as w:
            w.add(_rows("none", range(7, 8)))
        assert _ids(path) == [7]

    def test_folder_with_other_parquet_files(self, tmp_path):
        folder = tmp_path / "out"
        folder.mkdir()
        pq.write_table(pa.table({"x": [1]}), folder / "x.parquet")
        with pytest.raises(OutputError, match="other Parquet files"):
            ResultWriter(folder, "parquet", result_schema("none"))

    def test_path_kind_mismatch(self, tmp_path):
        (tmp_path / "f").write_text("")
        (tmp_path / "d").mkdir()
        with pytest.raises(OutputError, match="^output.path: .* is a file"):
            ResultWriter(tmp_path / "f", "parquet", result_schema("none"))
        with pytest.raises(OutputError, match="^output.path: .* is a folder"):
            ResultWriter(tmp_path / "d", "jsonl", result_schema("none"))

    def test_bad_arguments(self, tmp_path):
        with pytest.raises(OutputError, match="^output.format"):
            ResultWriter(tmp_path / "o", "csv", result_schema("none"))
        with pytest.raises(OutputError, match="flush_rows"):
            ResultWriter(tmp_path / "o", "jsonl", result_schema("none"), flush_rows=0)

    @pytest.mark.parametrize(
        "row,match",
        [
            ({"id": 1, "status": "delivered", "latency": 3.0}, "unknown column"),
            ({"id": 1, "status": "delivered", "bits": 300}, "do not fit"),
            ({"id": "one", "status": "delivered"}, "do not fit"),
            ({"id": 1, "status": "lost"}, "status must be one of"),
            ({"id": 1}, "status must be one of"),
            ({"status": "dropped"}, "needs an id"),
        ],
    )
    def test_bad_rows(self, tmp_path, row, match):
        w = ResultWriter(tmp_path / "o.jsonl", "jsonl", result_schema("none"))
        with pytest.raises(ValueError, match=match):
            w.add([row])
        assert w.rows_written == 0 and w.close() == 0

    def test_close_is_idempotent(self, tmp_path):
        path = tmp_path / "o.jsonl"
        w = ResultWriter(path, "jsonl", result_schema("none"))
        w.add(_rows("none", range(3)))
        first = w.close()
        assert first == path.stat().st_size > 0
        assert w.close() == first and w.commit() == first
        with pytest.raises(ValueError, match="closed"):
            w.add(_rows("none", range(1)))

    @pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
    def test_killed_writer_resumes_at_committed_position(self, tmp_path, fmt):
        path = tmp_path / ("out.parquet" if fmt == "parquet" else "out.jsonl")
        child = textwrap.dedent(
            """
            import os, signal, sys
            from pipeline.stream.output import ResultWriter, result_schema
            w = ResultWriter(sys.argv[1], sys.argv[2], result_schema("classes"), flush_rows=4)
            def rows(a, b):
                return [{"id": i, "status": "delivered", "top_k": [i]} for i in range(a, b)]
            w.add(rows(0, 10))
            print(w.commit(), flush=True)
            for i in range(10, 19):  # 8 rows written out past the commit, 1 buffered
                w.add(rows(i, i + 1))
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", child, str(path), fmt],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == -9, proc.stderr
        position = int(proc.stdout)
        assert _ids(path)[:10] == list(range(10))
        assert len(_ids(path)) == 18  # uncommitted rows reached the disk
        w = ResultWriter(path, fmt, result_schema("classes"), position=position)
        assert _ids(path) == list(range(10))
        w.add([{"id": i, "status": "delivered", "top_k": [i]} for i in range(10, 19)])
        w.close()
        assert _ids(path) == list(range(19))


class TestReadResults:
    def test_missing(self, tmp_path):
        with pytest.raises(OutputError, match="^output.path: no results"):
            read_results(tmp_path / "nope.parquet")

    def test_empty_outputs(self, tmp_path):
        ResultWriter(tmp_path / "o.parquet", "parquet", result_schema("token")).close()
        ResultWriter(tmp_path / "o.jsonl", "jsonl", result_schema("token")).close()
        for name in ("o.parquet", "o.jsonl"):
            assert read_results(tmp_path / name).num_rows == 0
            empty = read_results(tmp_path / name, schema=result_schema("token"))
            assert empty.num_rows == 0 and empty.schema.equals(result_schema("token"))

    def test_explicit_format_and_schema(self, tmp_path):
        path = tmp_path / "results.log"
        schema = result_schema("token")
        with ResultWriter(path, "jsonl", schema) as w:
            w.add(_rows("token", range(3)))
        table = read_results(path, "jsonl", schema=schema)
        assert table.to_pylist() == _full(_rows("token", range(3)), schema)
        with pytest.raises(OutputError, match="not a folder of Parquet parts"):
            read_results(path)

    def test_parts_in_order(self, tmp_path):
        folder = tmp_path / "out"
        with ResultWriter(folder, "parquet", result_schema("none"), flush_rows=1) as w:
            _add_each(w, _rows("none", range(12)))
        assert len(_parts(folder)) == 12
        assert _ids(folder) == list(range(12))

    def test_jsonl_folder(self, tmp_path):
        (tmp_path / "x.jsonl").mkdir()
        with pytest.raises(OutputError, match="is a folder"):
            read_results(tmp_path / "x.jsonl")


def test_no_ray_import():
    code = "import sys, pipeline.stream.output, pipeline.stream.checkpoint; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
