"""The Python API (``splitstream.Stream``) on the shared local Ray (`ray_local`): the README's "your
own data" example run as written, an iterable with bad items, stopping an endless generator, and a
100,000-sample stream whose driver and sink memory stay flat."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle
from tiny_stream import tiny_factory

from pipeline.stream.config import ConfigError
from pipeline.stream.output import read_results
from splitstream import Stream

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example(name: str) -> str:
    """The README's python block that follows the marker ``<!-- example: NAME -->``."""
    text = README.read_text()
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no example {name!r}"
    return m.group(1)


def test_the_readme_example_runs_as_written(ray_local, tmp_path, monkeypatch, capsys):
    from pipeline.models.photos import write_jpeg_photos

    write_jpeg_photos(tmp_path / "my_photos", 24, seed=3, sizes=(120, 200))
    monkeypatch.chdir(tmp_path)
    code = _readme_example("own-data")
    scope: dict = {}
    exec(compile(code, "README.md (own-data example)", "exec"), scope)
    stream = scope["stream"]
    table = stream.table()
    assert table.num_rows == 24 and stream.report["delivered"] == 24
    assert sorted(table.column("key").to_pylist()) == sorted(
        p.name for p in (tmp_path / "my_photos").glob("*.jpg")
    )
    printed = capsys.readouterr().out
    assert "photo-00000.jpg delivered" in printed


class TestStream:
    def test_bad_items_are_rejected_by_key_and_the_rest_delivered(self, ray_local):
        rng = np.random.default_rng(0)
        items = [
            (f"cam-{i}", rng.standard_normal((3, 16, 16)).astype(np.float32)) for i in range(60)
        ]
        items[7] = ("cam-7", "not a tensor")
        items[30] = ("cam-30", np.full((3, 16, 16), np.nan, np.float32))
        stream = Stream(model=tiny_factory(), inputs=items, overrides=["batching.max_batch_size=8"])
        rows = list(stream.results())
        assert len(rows) == 60 and len({r["key"] for r in rows}) == 60
        bad = {r["key"]: r["reason"] for r in rows if r["status"] == "rejected"}
        assert sorted(bad) == ["cam-30", "cam-7"] and all(bad.values())
        assert stream.report["delivered"] == 58 and stream.report["lost"] == 0
        table = stream.table()
        assert table.num_rows == 60 and set(table.column("id").to_pylist()) == set(range(60))

    def test_stop_ends_an_endless_generator_with_every_read_item_once(self, ray_local):
        def camera():
            for i in itertools.count():
                yield np.full((3, 16, 16), i % 5, np.float32)

        stream = Stream(model=tiny_factory(), inputs=camera(), overrides=["data.rate_sps=200"])
        seen = []
        for row in stream.results():
            seen.append(row["id"])
            if len(seen) == 150:
                stream.stop()
        assert len(seen) >= 150
        assert sorted(seen) == list(range(len(seen))), "every item read settles exactly once"
        assert stream.report["stop"]["reason"] == "request"
        assert stream.report["delivered"] == len(seen) and stream.report["lost"] == 0

    def test_an_iterable_that_raises_ends_the_stream_naming_it(self, ray_local):
        from pipeline.stream.executor import StreamError

        def broken():
            for _ in range(40):
                yield np.zeros((3, 16, 16), np.float32)
            raise OSError("camera unplugged")

        stream = Stream(model=tiny_factory(), inputs=broken())
        with pytest.raises(StreamError, match="camera unplugged") as err:
            stream.wait()
        assert err.value.kind == "source"

    def test_config_errors_come_before_anything_starts(self):
        with pytest.raises(ConfigError, match="data.rate_sps"):
            Stream(model=tiny_factory(), inputs=[1], overrides=["data.rate_sps=-1"])
        with pytest.raises(ConfigError, match="model"):
            Stream(model=42, inputs=[1])

    def test_an_empty_iterable_is_a_config_error(self, ray_local):
        with pytest.raises(ConfigError, match="empty"):
            Stream(model=tiny_factory(), inputs=[]).wait()


@pytest.mark.slow
def test_a_long_stream_from_an_endless_generator_keeps_driver_and_sink_memory_flat(
    ray_local, tmp_path
):
    """100,000 samples from a generator with no end, written to Parquet: the driver's and the sink's
    RSS grow less than 10 % after warm-up, and the output holds every sample once."""

    def endless():
        for i in itertools.count():
            yield np.full((3, 4, 4), i % 11, np.float32)

    out = tmp_path / "long.parquet"
    stream = Stream(
        model=tiny_factory(),
        inputs=endless(),
        overrides=[
            "samples=100000", "codec.level=1", "link.profile=unlimited",
            "batching.max_batch_size=256", f"output.path={out}",
        ],
    )  # fmt: skip
    report = stream.wait()
    assert report["delivered"] == 100_000 and report["lost"] == 0 and report["duplicated"] == 0
    mem = report["memory"]
    assert mem["driver_growth_after_warmup"] < 0.10, mem
    assert mem["sink_growth_after_warmup"] < 0.10, mem
    ids = read_results(out).column("id").to_numpy()
    assert len(ids) == 100_000 and np.array_equal(np.sort(ids), np.arange(100_000))


def test_a_ray_dataset_streams_through_its_column(ray_local):
    import ray.data

    rng = np.random.default_rng(1)
    rows = [
        {"frame": rng.standard_normal((3, 16, 16)).astype(np.float32), "n": i} for i in range(50)
    ]
    ds = ray.data.from_items(rows)
    stream = Stream(model=tiny_factory(), inputs=ds, overrides=["data.column=frame"])
    table = stream.table()
    assert table.num_rows == 50 and set(table.column("status").to_pylist()) == {"delivered"}
    assert sorted(table.column("id").to_pylist()) == list(range(50))


def test_a_table_of_sentences_through_minilm_gives_embeddings(ray_local, tmp_path):
    """A JSONL table of text through the real all-MiniLM-L6-v2: one embedding row per sentence,
    keyed by the table's id column, and as close to the uncompressed model's as the codec allows."""
    import json

    from pipeline.stream.config import load_config
    from splitstream.runner import run_pipeline

    sentences = [f"Sentence number {i} talks about {w}." for i, w in
                 enumerate(["rain", "trains", "bread", "foxes", "pianos", "rivers"] * 5)]  # fmt: skip
    table = tmp_path / "s.jsonl"
    table.write_text("".join(json.dumps({"uid": f"s{i}", "text": t}) + "\n"
                             for i, t in enumerate(sentences)))  # fmt: skip
    out = tmp_path / "emb.jsonl"
    cfg = load_config(None, [
        "model.name=minilm", "model.split=encoder.layer.3", "data.source=table",
        f"data.path={table}", "data.column=text", "data.key_column=uid", f"output.path={out}",
        "fidelity.reference_samples=8",
    ])  # fmt: skip
    report = run_pipeline(cfg, progress=False)
    rows = read_results(out).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(f"s{i}" for i in range(30))
    assert all(len(r["embedding"]) == 384 for r in rows)
    assert report["fidelity"]["cosine"] > 0.99, report["fidelity"]


def test_a_fleet_splits_a_folder_into_one_shard_per_edge(ray_local, tmp_path):
    from pipeline.models.photos import write_jpeg_photos

    write_jpeg_photos(tmp_path / "p", 30, seed=5, sizes=(40, 80))
    stream = Stream(
        model=tiny_factory(),
        overrides=[
            "data.source=images", f"data.path={tmp_path / 'p'}", "data.transform.resize=16",
            "data.transform.crop=16", "fleet.edges=3",
        ],
    )  # fmt: skip
    rows = stream.table().to_pylist()
    assert sorted(r["key"] for r in rows) == [f"photo-{i:05d}.jpg" for i in range(30)]
    by_edge = {e: sorted(r["id"] for r in rows if r["edge"] == e) for e in range(3)}
    assert by_edge == {e: list(range(10 * e, 10 * e + 10)) for e in range(3)}


def test_a_reader_that_stops_early_does_not_hold_the_stream_back(ray_local, monkeypatch):
    import splitstream.stream as api

    monkeypatch.setattr(api, "ROWS_BUFFERED", 4)  # the driver would wait on a full queue
    items = [np.zeros((3, 16, 16), np.float32) for _ in range(200)]
    stream = Stream(model=tiny_factory(), inputs=items, overrides=["batching.max_batch_size=8"])
    for n, _ in enumerate(stream.results()):
        if n == 2:
            break
    report = stream.wait(timeout=120)
    assert report["delivered"] == 200 and report["lost"] == 0
