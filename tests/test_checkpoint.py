"""pipeline.stream.checkpoint: where it lives, the config fingerprint, atomic save, load errors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.stream import checkpoint
from pipeline.stream.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_resumable,
    checkpoint_path,
    config_differences,
    fingerprint_config,
    load,
    save,
)
from pipeline.stream.config import PipelineConfig


def _config(**codec) -> dict:
    cfg = PipelineConfig().model_dump(mode="json")
    cfg["codec"].update(codec)
    cfg["output"] = {"path": "out.parquet", "format": "parquet", "checkpoint_s": 5.0}
    return cfg


def _ckpt(position: int = 3, **kwargs) -> Checkpoint:
    edges = [{"watermark": 10, "above": [12, 15], "next_start": 16}, {"watermark": 0, "above": []}]
    counts = {"delivered": 9, "rejected": 1, "dropped": 0}
    return Checkpoint(fingerprint_config(_config()), position, edges, counts, **kwargs)


class TestCheckpointPath:
    def test_beside_the_output(self):
        assert checkpoint_path("out/res.parquet") == Path("out/res.parquet.checkpoint.json")
        assert checkpoint_path("res.jsonl") == Path("res.jsonl.checkpoint.json")

    def test_trailing_slash(self):
        assert checkpoint_path("out/res.parquet/") == Path("out/res.parquet.checkpoint.json")

    def test_empty(self):
        with pytest.raises(CheckpointError, match="output.path"):
            checkpoint_path("")


class TestFingerprintConfig:
    def test_operational_keys_dropped(self):
        cfg = _config()
        fp = fingerprint_config(cfg)
        for section in ("ray", "replicas", "placement", "flow", "batching"):
            assert section not in fp
        assert fp["output"] == {"path": "out.parquet", "format": "parquet"}
        for section in ("data", "model", "codec", "link", "fleet", "rate"):
            assert fp[section] == cfg[section]
        assert fp["samples"] == cfg["samples"] and fp["seed"] == cfg["seed"]
        assert "ray" in cfg and "checkpoint_s" in cfg["output"]  # the input is left alone

    def test_operational_changes_do_not_count(self):
        a, b = _config(), _config()
        b["ray"]["num_cpus"] = 4
        b["output"]["checkpoint_s"] = 60.0
        b["replicas"]["tail"] = 3
        assert fingerprint_config(a) == fingerprint_config(b)

    def test_survives_json(self):
        fp = fingerprint_config(_config())
        assert json.loads(json.dumps(fp)) == fp

    def test_missing_sections_are_fine(self):
        assert fingerprint_config({"samples": 3, "output": {"path": "x"}}) == {
            "samples": 3,
            "output": {"path": "x"},
        }


class TestConfigDifferences:
    def test_changed_added_removed(self):
        old = {"codec": {"bits": 8, "kind": "ours"}, "samples": 10, "data": {"path": None}}
        new = {"codec": {"bits": 4, "kind": "ours"}, "samples": 10, "model": {"name": "m"}}
        assert config_differences(old, new) == [
            "codec.bits 8 -> 4",
            "data.path null -> (absent)",
            'model.name (absent) -> "m"',
        ]

    def test_lists_and_types(self):
        old = {"rate": {"bits": [8, 4]}, "x": 1}
        new = {"rate": {"bits": [8, 2]}, "x": True}
        assert config_differences(old, new) == ["rate.bits [8, 4] -> [8, 2]", "x 1 -> true"]

    def test_same(self):
        assert config_differences(_config(), _config()) == []


class TestCheckpoint:
    def test_round_trip(self, tmp_path):
        path = tmp_path / "o.parquet.checkpoint.json"
        ckpt = _ckpt(runs=2, saved_at=1234.5)
        save(path, ckpt)
        assert load(path) == ckpt
        assert json.loads(path.read_text())["version"] == 1

    def test_defaults(self):
        ckpt = _ckpt()
        assert (ckpt.runs, ckpt.saved_at, ckpt.version) == (1, 0.0, 1)

    def test_save_replaces(self, tmp_path):
        path = tmp_path / "c.json"
        save(path, _ckpt(position=1))
        save(path, _ckpt(position=2))
        assert load(path).position == 2
        assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left

    def test_crash_mid_save_keeps_previous(self, tmp_path):
        path = tmp_path / "c.json"
        save(path, _ckpt(position=1))
        # a save killed before its rename leaves a partial temp file beside the checkpoint
        full = json.dumps(asdict(_ckpt(position=2)))
        (tmp_path / ".c.json.999.tmp").write_text(full[: len(full) // 2])
        assert load(path).position == 1
        save(path, _ckpt(position=3))
        assert load(path).position == 3

    def test_failed_rename_keeps_previous(self, tmp_path, monkeypatch):
        path = tmp_path / "c.json"
        save(path, _ckpt(position=1))

        def fail(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(checkpoint.os, "replace", fail)
        with pytest.raises(OSError, match="No space"):
            save(path, _ckpt(position=2))
        monkeypatch.undo()
        assert load(path).position == 1
        assert [p.name for p in tmp_path.iterdir()] == ["c.json"]

    def test_save_rejects_nan(self, tmp_path):
        ckpt = _ckpt()
        ckpt.counts["delivered"] = float("nan")
        with pytest.raises(ValueError):
            save(tmp_path / "c.json", ckpt)
        assert not (tmp_path / "c.json").exists()


class TestLoad:
    def _write(self, tmp_path: Path, data) -> Path:
        path = tmp_path / "c.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    def test_missing(self, tmp_path):
        with pytest.raises(CheckpointError, match="^--resume: no checkpoint at .*without --resume"):
            load(tmp_path / "out.parquet.checkpoint.json")

    def test_unreadable(self, tmp_path):
        (tmp_path / "c.json").mkdir()
        with pytest.raises(CheckpointError, match="^--resume: cannot read"):
            load(tmp_path / "c.json")

    @pytest.mark.parametrize("text", ['{"version": 1, "position"', "", "[1,]"])
    def test_not_json(self, tmp_path, text):
        with pytest.raises(CheckpointError, match="is not valid JSON"):
            load(self._write(tmp_path, text))

    def test_not_an_object(self, tmp_path):
        with pytest.raises(CheckpointError, match="not a JSON object"):
            load(self._write(tmp_path, [1, 2]))

    @pytest.mark.parametrize("version", [2, None, "1"])
    def test_wrong_version(self, tmp_path, version):
        data = asdict(_ckpt()) | {"version": version}
        with pytest.raises(CheckpointError, match=f"has version {version!r}"):
            load(self._write(tmp_path, data))

    def test_missing_fields(self, tmp_path):
        data = asdict(_ckpt())
        del data["position"], data["edges"]
        with pytest.raises(CheckpointError, match="lacks position, edges"):
            load(self._write(tmp_path, data))

    @pytest.mark.parametrize(
        "key,value",
        [("position", "3"), ("position", True), ("edges", {}), ("counts", []), ("config", 1)],
    )
    def test_malformed_field(self, tmp_path, key, value):
        data = asdict(_ckpt()) | {key: value}
        with pytest.raises(CheckpointError, match=f"malformed {key}"):
            load(self._write(tmp_path, data))

    def test_negative_position(self, tmp_path):
        data = asdict(_ckpt()) | {"position": -1}
        with pytest.raises(CheckpointError, match="negative position"):
            load(self._write(tmp_path, data))

    def test_unknown_fields_ignored(self, tmp_path):
        data = asdict(_ckpt()) | {"note": "from a later minor change"}
        assert load(self._write(tmp_path, data)) == _ckpt()


class TestCheckResumable:
    def test_same_config(self):
        check_resumable(_ckpt(), _config())
        other = _config()
        other["ray"]["address"] = "auto"
        check_resumable(_ckpt(), other)

    def test_after_save_and_load(self, tmp_path):
        save(tmp_path / "c.json", _ckpt())
        check_resumable(load(tmp_path / "c.json"), _config())

    def test_differences_listed(self):
        cfg = _config(bits=4)
        cfg["output"]["path"] = "other.parquet"
        with pytest.raises(CheckpointError) as err:
            check_resumable(_ckpt(), cfg)
        message = str(err.value)
        assert message.startswith("--resume: the config differs from the checkpoint's: ")
        assert "codec.bits 8 -> 4" in message
        assert 'output.path "out.parquet" -> "other.parquet"' in message
        assert "\n" not in message
