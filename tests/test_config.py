"""Config loading, overrides and validation errors (no Ray, nothing started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.stream.config import ConfigError, apply_overrides, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.samples > 0 and cfg.flow.window >= 1


def test_shipped_configs_exist():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "multinode.yaml", "scaleout.yaml"}


def test_defaults_and_dotted_overrides(tmp_path):
    p = _write(tmp_path, "samples: 10\nlink:\n  profile: 10mbit\n")
    cfg = load_config(
        p,
        [
            "link.bandwidth_mbps=2.5",
            "codec.bits=4",
            "placement.gpu_stages=[head]",
            "ray.address=null",
            "model.weights=none.pt",
        ],
    )
    assert cfg.samples == 10
    assert cfg.link.profile == "10mbit" and cfg.link.bandwidth_mbps == 2.5
    assert cfg.codec.bits == 4 and cfg.codec.kind == "ours"
    assert cfg.placement.gpu_stages == ["head"]
    assert cfg.ray.address is None and cfg.model.weights == "none.pt"


def test_override_creates_missing_sections():
    d = apply_overrides({}, ["a.b.c=3", "x=yes"])
    assert d == {"a": {"b": {"c": 3}}, "x": True}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["link.bandwidht_mbps=3"], "link.bandwidht_mbps"),
        (["sampels=3"], "sampels"),
        (["link.bandwidth_mbps=-1"], "link.bandwidth_mbps"),
        (["codec.bits=9"], "codec.bits"),
        (["codec.kind=gzip"], "codec.kind"),
        (["flow.window=0"], "flow.window"),
        (["batching.max_batch_size=0"], "batching.max_batch_size"),
        (["link.loss=1.5"], "link.loss"),
        (["link.profile=5g-magic"], "link.profile"),
        (["link.trace=/nonexistent/trace.txt"], "link.trace"),
        (["model.name=no-such-net"], "model.name"),
        (["model.split=no_such_layer"], "model.split"),
        (["placement.gpu_stages=[gpu_everything]"], "placement.gpu_stages"),
        (["samples"], "samples"),
        (["link.profile.x=1"], "link.profile"),
        (["codec.level=12"], "codec.level"),  # ours: 1..9
        (["codec.kind=zstd", "codec.level=23"], "codec.level"),
        (["codec.kind=int8-zstd", "codec.level=0"], "codec.level"),
        (["codec.kind=int8-zstd", "codec.bits=4"], "codec.bits"),
        (["codec.kind=int8-zstd", "codec.axis=0"], "codec.axis"),
        (["batching.min_batch_size=64", "batching.max_batch_size=8"], "batching.min_batch_size"),
        (["codec.kind=fp16", "codec.axis=0"], "codec.axis"),
        (["codec.kind=fp32", "codec.clip=mse"], "codec.clip"),
        (["codec.clip=max"], "codec.clip"),
        (["codec.clip=wmse-ends"], "codec.clip"),
        (["link.corrupt=1.5"], "link.corrupt"),
        (["link.mode=real", "link.corrupt=0.1"], "link.corrupt"),
        (["flow.stall_timeout_s=0"], "flow.stall_timeout_s"),
        (["flow.max_restarts=-1"], "flow.max_restarts"),
        (["flow.stall_restarts=-1"], "flow.stall_restarts"),
        (["flow.stall_restarts=1000"], "flow.stall_restarts"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as ei:
        load_config(REPO / "configs" / "demo.yaml", overrides)
    assert key in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_unknown_key_in_yaml_file(tmp_path):
    p = _write(tmp_path, "model:\n  name: digits-resnet\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"model\.colour: unknown key"):
        load_config(p)


def test_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="root must be a mapping"):
        validate_config([1, 2])  # type: ignore[arg-type]


def test_model_check_can_be_skipped_for_custom_factories():
    cfg = load_config(None, ["model.name=my-tiny-net"], check_model=False)
    assert cfg.model.name == "my-tiny-net"


def test_level_range_follows_the_codec_kind():
    assert load_config(None, ["codec.kind=zstd", "codec.level=19"]).codec.level == 19
    c = load_config(None, ["codec.kind=int8-zstd", "codec.level=19"]).codec
    assert (c.kind, c.level, c.bits) == ("int8-zstd", 19, 8)
    assert load_config(None, ["codec.kind=int8-zstd"]).codec.level == 3  # zstd -3 by default
    assert load_config(None, ["codec.kind=fp32", "codec.level=15"]).codec.level == 15  # unused


def test_preflight_checks_the_axis_against_the_features_rank():
    from pipeline.stream.preflight import preflight

    cfg = load_config(None, ["model.name=resnet18", "model.split=layer1", "codec.axis=3"])
    with pytest.raises(ConfigError, match=r"codec\.axis: 3 is out of range .* 3-d"):
        preflight(cfg)
    ok = preflight(
        load_config(None, ["model.name=resnet18", "model.split=layer1", "codec.axis=-3"])
    )
    assert ok.feature_shape == (64, 56, 56) and ok.frame_bytes > 0
    assert ok.stall_timeout_s >= 60  # unconstrained link: the floor


def test_preflight_rejects_inputs_the_head_cannot_take():
    from pipeline.stream.preflight import preflight

    cfg = load_config(
        None, ["model.name=resnet18", "data.source=synthetic", "data.shape=[5,32,32]"]
    )
    with pytest.raises(ConfigError, match="data.shape"):
        preflight(cfg)


def test_stall_timeout_default_covers_a_full_batch_on_a_slow_link():
    from pipeline.stream.preflight import default_stall_timeout

    slow = load_config(None, ["link.bandwidth_mbps=0.1", "batching.max_batch_size=64"])
    # 64 frames of 100 kB at 0.1 Mbit/s: 512 s per batch, the default allows several of them
    assert default_stall_timeout(slow, 100_000) > 2000
    fixed = load_config(None, ["flow.stall_timeout_s=7"])
    assert default_stall_timeout(fixed, 100_000) == 7
