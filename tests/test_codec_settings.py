"""codec.CodecSettings: the one value the layers above the codec pass for bits, level, axis, clip."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import numpy as np
import pytest

import codec
from codec import CodecError, CodecSettings


class TestCodecSettings:
    def test_defaults_are_encodes(self):
        params = inspect.signature(codec.encode).parameters
        for f in dataclasses.fields(CodecSettings):
            assert getattr(CodecSettings(), f.name) == params[f.name].default, f.name

    def test_frozen_and_hashable(self):
        s = CodecSettings(4, axis=1, clip="mse")
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.bits = 8  # type: ignore[misc]
        assert {s: 1}[CodecSettings(4, 3, 1, "mse")] == 1

    @pytest.mark.parametrize(
        "kw", [{"bits": 0}, {"bits": 9}, {"bits": 4.0}, {"level": 0}, {"level": 10},
               {"axis": "1"}, {"axis": True}, {"clip": "max"}],
    )  # fmt: skip
    def test_bad_values_raise_codec_error(self, kw):
        with pytest.raises(CodecError):
            CodecSettings(**kw)

    def test_with_bits_checks_too(self):
        assert CodecSettings(level=5).with_bits(2) == CodecSettings(2, 5)
        with pytest.raises(CodecError):
            CodecSettings().with_bits(9)

    def test_numpy_integers_become_ints(self):
        s = CodecSettings(np.int64(4), np.int32(2), np.int8(1))
        assert (type(s.bits), type(s.level), type(s.axis)) == (int, int, int)

    def test_pickles_and_labels(self):
        s = CodecSettings(6, 5, 1, "wmse")
        assert pickle.loads(pickle.dumps(s)) == s
        assert s.label() == "6b/L5/axis1/wmse" and CodecSettings().label() == "8b/L3/tensor"

    def test_every_clip_mode_is_a_setting_and_a_config_value(self):
        from pathlib import Path

        from pipeline.stream.config import load_config

        s = CodecSettings(4, 3, 1, "wmse_ends")
        assert s.label() == "4b/L3/axis1/wmse_ends"
        x = np.random.default_rng(1).laplace(size=(2, 4, 6, 6)).astype(np.float32)
        assert codec.encode(x, **s.as_dict()) == codec.encode(x, bits=4, axis=1, clip="wmse_ends")
        cfg = load_config(
            Path(__file__).parents[1] / "configs" / "demo.yaml", ["codec.clip=wmse_ends"]
        )
        assert cfg.codec.settings() == CodecSettings(
            cfg.codec.bits, cfg.codec.level, cfg.codec.axis, "wmse_ends"
        )

    def test_as_dict_codes_as_the_keywords(self):
        x = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
        want = codec.encode(x, bits=3, level=2, axis=0, clip="mse")
        assert codec.encode(x, **CodecSettings(3, 2, 0, "mse").as_dict()) == want
