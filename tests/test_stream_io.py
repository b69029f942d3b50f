"""The stream's I/O policies without Ray: stop requests (fake clock), the iterable feeder, result rows
(exactly the settled samples, in the output's schema), edge ranges, the ledger's checkpoint state and
the config keys of sources and outputs."""

from __future__ import annotations

import signal
import time

import pytest

from pipeline.stream.config import ConfigError, load_config
from pipeline.stream.data import UNBOUNDED, edge_ranges
from pipeline.stream.feeder import ItemFeeder, dataset_items
from pipeline.stream.ledger import DeliveryLedger, IdSet
from pipeline.stream.output import read_results, result_schema
from pipeline.stream.results import ResultLog, open_results
from pipeline.stream.stopping import StopControl, signals_stop


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TestStopControl:
    def test_nothing_stops_a_stream_without_a_request(self):
        c = StopControl()
        c.start()
        assert not c.stopping and not c.aborted
        assert c.summary(finished=True) == {"reason": "end", "signal": None}

    def test_the_first_request_stops_and_the_second_aborts(self):
        c = StopControl()
        c.request("signal", "SIGTERM")
        assert c.stopping and not c.aborted
        c.request("signal", "SIGINT")
        assert c.aborted
        assert c.summary(finished=False) == {"reason": "aborted", "signal": "SIGTERM"}

    def test_duration_counts_from_start(self):
        clock = FakeClock()
        c = StopControl(duration_s=5.0, clock=clock)
        clock.t += 100  # before start: no deadline yet
        assert not c.stopping
        c.start()
        clock.t += 4.9
        assert not c.stopping
        clock.t += 0.2
        assert c.stopping and c.reason == "duration"

    def test_the_first_request_is_told_once_when_acted_on(self):
        told = []
        c = StopControl(on_stop=told.append)
        c.acted_on()  # nothing requested: nothing to tell
        c.request("signal", "SIGINT")
        assert told == []  # the signal handler itself tells nobody
        c.acted_on()
        c.acted_on()
        assert len(told) == 1 and "SIGINT" in told[0] and "again to abort" in told[0]
        clock = FakeClock()
        d = StopControl(duration_s=1.0, clock=clock, on_stop=told.append)
        d.start()
        clock.t += 2
        assert d.stopping
        d.acted_on()
        assert told[-1].startswith("stopping (duration)") and "stop it again" in told[-1]

    def test_a_non_positive_duration_is_refused(self):
        with pytest.raises(ValueError, match="--duration"):
            StopControl(duration_s=0)

    def test_signals_request_a_stop_instead_of_raising(self):
        c = StopControl()
        before = signal.getsignal(signal.SIGINT)
        with signals_stop(c):
            signal.raise_signal(signal.SIGINT)
            assert c.stopping and c.signal == "SIGINT" and not c.aborted
            signal.raise_signal(signal.SIGTERM)
            assert c.aborted
        assert signal.getsignal(signal.SIGINT) is before


class TestItemFeeder:
    def test_reads_no_further_than_its_capacity_ahead(self):
        pulled = []

        def items():
            for i in range(1000):
                pulled.append(i)
                yield i

        f = ItemFeeder(items(), capacity=8)
        time.sleep(0.2)
        assert len(pulled) <= 9  # the buffer, plus the item waiting for room
        assert f.take(5) == [0, 1, 2, 3, 4]
        f.close()

    def test_limit_and_skip(self):
        f = ItemFeeder(range(100), capacity=4, limit=6, skip=10)
        got = []
        while not f.done:
            got += f.take(3, wait_s=0.05)
        assert got == list(range(10, 16)) and f.taken == 6

    def test_an_error_in_the_iterable_is_kept_for_the_driver(self):
        def bad():
            yield 1
            raise OSError("camera unplugged")

        f = ItemFeeder(bad(), capacity=4)
        deadline = time.monotonic() + 5
        while not f.exhausted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert f.take(5) == [1]
        assert isinstance(f.error, OSError) and f.done

    def test_close_ends_a_blocked_reader(self):
        def endless():
            i = 0
            while True:
                yield i
                i += 1

        f = ItemFeeder(endless(), capacity=2)
        time.sleep(0.05)
        f.close()
        f._thread.join(2)
        assert not f._thread.is_alive()

    def test_dataset_items_take_the_named_or_only_column(self):
        class Rows:
            def __init__(self, rows):
                self.rows = rows

            def iter_rows(self):
                return iter(self.rows)

        assert list(dataset_items(Rows([{"a": 1}, {"a": 2}]), None)) == [1, 2]
        assert list(dataset_items(Rows([{"a": 1, "b": 2}]), "b")) == [2]
        with pytest.raises(ValueError, match="data.column"):
            list(dataset_items(Rows([{"a": 1, "b": 2}]), None))
        with pytest.raises(ValueError, match="no column 'c'"):
            list(dataset_items(Rows([{"a": 1}]), "c"))


class TestEdgeRanges:
    def test_built_in_sources_give_each_edge_its_own_samples(self):
        assert edge_ranges(100, 3, None) == [(0, 100), (100, 100), (200, 100)]

    def test_an_endless_source_gives_each_edge_an_unbounded_range(self):
        assert edge_ranges(None, 2, None) == [(0, UNBOUNDED), (UNBOUNDED, UNBOUNDED)]

    def test_the_users_files_are_split_into_shards(self):
        assert edge_ranges(None, 3, 10) == [(0, 3), (3, 3), (6, 4)]
        assert edge_ranges(4, 2, 10) == [(0, 2), (2, 2)]  # the first 4 of 10, in two shards


class TestLedgerState:
    def test_a_resumed_ledger_counts_earlier_ids_as_settled_and_drops_them(self):
        a = DeliveryLedger(10)
        a.deliver([0, 1, 2, 5], [0.1] * 4)
        state = a.settled_state()
        assert state == {"watermark": 3, "above": [5]}
        b = DeliveryLedger(10)
        b.resume(state)
        assert b.resumed == 4 and b.watermark == 3
        assert b.deliver([3, 5], [0.1, 0.1]) == 1 and b.last_fresh == [0]
        assert b.duplicates_dropped == 1 and b.lost == 10 - 5

    def test_idset_state_round_trips(self):
        s = IdSet()
        for i in (0, 1, 4, 9):
            s.add(i)
        t = IdSet.from_state(s.state())
        assert [i in t for i in range(10)] == [i in s for i in range(10)]


def _log(tmp_path, prediction="classes", names=None, listeners=()):
    from pipeline.stream.output import ResultWriter

    w = ResultWriter(str(tmp_path / "o.jsonl"), "jsonl", result_schema(prediction))
    return ResultLog(w, prediction=prediction, class_names=names, listeners=listeners), w


class TestResultLog:
    SETTING = {"bits": 8, "level": 3, "label": "8b/L3"}

    def test_rows_of_the_settled_positions_only(self, tmp_path):
        seen = []
        log, w = _log(tmp_path, names=("cat", "dog", "emu"), listeners=[seen.extend])
        res = {"top_k": [[2, 0], [1, 2], [0, 1]], "scores": [[0.7, 0.2], [0.6, 0.3], [0.9, 0.1]]}
        log.delivered(0, [10, 11, 12], ["a", "b", "c"], [0.01, 0.02, 0.03], [2, 1, 0], res,
                      [0, 2], self.SETTING)  # fmt: skip
        log.rejected(0, [13], ["d"], ["not an image"], {})
        log.commit([])
        rows = read_results(w.path, "jsonl").to_pylist()
        assert [r["key"] for r in rows] == ["a", "c", "d"] == [r["key"] for r in seen]
        assert rows[0]["names"] == ["emu", "cat"] and rows[0]["label"] == 2
        assert rows[0]["latency_ms"] == pytest.approx(10.0) and rows[0]["bits"] == 8
        assert rows[2]["status"] == "rejected" and rows[2]["reason"] == "not an image"
        assert rows[2]["top_k"] is None and rows[2]["latency_ms"] is None
        assert log.summary()["rows"] == 3 and log.summary()["delivered"] == 2

    def test_embeddings_and_tokens(self, tmp_path):
        log, w = _log(tmp_path, "embedding")
        log.delivered(0, [0], [None], [0.0], None, {"embedding": [[0.5, -0.5]]}, [0], {})
        log.commit([])
        row = read_results(w.path, "jsonl").to_pylist()[0]
        assert row["key"] == "0" and row["embedding"] == [0.5, -0.5]
        (tmp_path / "t").mkdir()
        log2, w2 = _log(tmp_path / "t", "token")
        log2.delivered(0, [4], [None], [0.0], None, {"preds": [17]}, [0], {})
        log2.commit([])
        assert read_results(w2.path, "jsonl").to_pylist()[0]["next_token"] == 17

    def test_checkpoints_are_due_on_the_clock(self, tmp_path):
        clock = FakeClock()
        log = ResultLog(None, checkpoint=("x", {}), interval_s=5.0, clock=clock)
        assert not log.due()
        clock.t += 5.0
        assert log.due()

    def test_without_readers_no_rows_are_built(self):
        log = ResultLog()
        assert not log.wanted
        log.delivered(0, [1], [None], [0.1], None, None, [0], {})
        assert log.counts["delivered"] == 1


class TestOpenResults:
    def _cfg(self, tmp_path, *extra):
        return load_config(
            None,
            ["model.name=tiny", "data.source=synthetic", f"output.path={tmp_path / 'o.parquet'}",
             *extra],
            check_model=False,
        )  # fmt: skip

    def test_a_fresh_run_then_a_resume(self, tmp_path):
        cfg = self._cfg(tmp_path)
        log, states = open_results(cfg, "classes")
        assert states is None
        log.delivered(0, [0, 1], [None, None], [0.1, 0.1], None, {"preds": [1, 2]}, [0, 1], {})
        log.commit([{"watermark": 2, "above": [], "first_id": 0, "next_start": 2}], final=True)
        log2, states2 = open_results(cfg, "classes", resume=True)
        assert states2[0]["watermark"] == 2 and log2.runs == 2
        assert log2.resumed["delivered"] == 2

    def test_a_fresh_run_over_a_checkpointed_output_is_refused(self, tmp_path):
        cfg = self._cfg(tmp_path)
        log, _ = open_results(cfg, "classes")
        log.commit([{"watermark": 0, "above": []}], final=True)
        with pytest.raises(ValueError, match="--resume to continue"):
            open_results(cfg, "classes")

    def test_resume_refuses_another_config(self, tmp_path):
        log, _ = open_results(self._cfg(tmp_path), "classes")
        log.commit([{"watermark": 0, "above": []}], final=True)
        with pytest.raises(ValueError, match="codec.bits"):
            open_results(self._cfg(tmp_path, "codec.bits=4"), "classes", resume=True)

    def test_resume_needs_an_output(self):
        cfg = load_config(None, ["model.name=tiny"], check_model=False)
        with pytest.raises(ValueError, match="--resume: needs output.path"):
            open_results(cfg, "classes", resume=True)


class TestSourceConfig:
    def _load(self, *sets):
        return load_config(None, ["model.name=tiny", *sets], check_model=False)

    def test_samples_default_to_256_for_built_in_sources_and_none_for_files(self, tmp_path):
        assert self._load().samples == 256
        (tmp_path / "a.mp4").write_bytes(b"")
        assert self._load("data.source=video", f"data.path={tmp_path / 'a.mp4'}").samples is None

    @pytest.mark.parametrize(
        "sets, key",
        [
            (["data.source=images"], "data.path"),
            (["data.source=video", "data.path=/nonexistent.mp4"], "data.path"),
            (["data.source=synthetic", "data.column=x"], "data.column"),
            (["data.loop=true"], "data.loop"),
            (["data.rate_sps=native"], "data.rate_sps"),
            (["data.rate_sps=0"], "data.rate_sps"),
            (["data.source=synthetic", "data.transform.resize=8"], "data.transform"),
            (["samples=null", "data.rate_sps=10", "data.arrival=poisson"], "data.arrival"),
            (["data.source=iterable", "fleet.edges=2"], "fleet.edges"),
            (["output.format=csv"], "output.format"),
            (["output.top_k=0"], "output.top_k"),
        ],
    )
    def test_each_bad_key_is_named(self, sets, key):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            self._load(*sets)

    def test_a_folder_as_a_file_of_sentences_says_so(self, tmp_path):
        with pytest.raises(ConfigError, match="a folder, not a file.*data.source=images"):
            self._load(f"data.path={tmp_path}")

    def test_an_unwritable_output_is_named(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(ConfigError, match="output.path"):
            self._load(f"output.path={tmp_path / 'f' / 'o.parquet'}")


def test_signals_stop_restores_handlers_after_an_error():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), signals_stop(StopControl()):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) is before
