"""GPU codec actors (``placement.gpu_stages`` naming the encoder / decoder), without a GPU: under the
CUDA simulator (a subprocess; this file is the worker) the stages' device path puts the CPU stages'
frames on the wire and decodes them to the same features; on a machine without a CUDA device a tiny
Ray stream with both stages on the "GPU" delivers every sample once and reports the CPU fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_harness import assert_all, needs_numba, run_worker, worker_main

import codec

HERE = Path(__file__).resolve().parent


def _batch(n: int, shape: tuple[int, ...], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feat = np.maximum(rng.normal(size=(n, *shape)), 0).astype(np.float32)
    return {"ids": np.arange(n, dtype=np.int64), "feat": feat, "labels": None, "t_src": np.zeros(n)}


def _frames(rb) -> list[bytes]:
    return [bytes(f) for f in rb.column("frame").to_pylist() if f is not None]


# ---------------------------------------------------------------- worker (runs in the subprocess)


def _work_stages() -> dict:
    """Encoder / Decoder with use_gpu under the simulator: the device path, the CPU stages' frames and
    features, one frame per batch and per sample."""
    from actors import Decoder, Encoder

    res = {}
    for frame in ("batch", "sample"):
        b = _batch(2, (3, 4, 4), seed=1)
        gpu_enc = Encoder(settings=codec.CodecSettings(level=1), frame=frame, use_gpu=True)
        cpu_enc = Encoder(settings=codec.CodecSettings(level=1), frame=frame)
        _, rb_gpu = gpu_enc.process(b)
        meta, rb_cpu = cpu_enc.process(b)
        res[f"{frame}/device"] = gpu_enc.device == "cuda" and meta.get("codec_device") is None
        res[f"{frame}/same_frames"] = _frames(rb_gpu) == _frames(rb_cpu) or "differs"
        gpu_dec = Decoder((3, 4, 4), use_gpu=True)
        dmeta, out = gpu_dec.process(rb_gpu)
        _, want = Decoder((3, 4, 4)).process(rb_cpu)
        res[f"{frame}/same_features"] = (
            isinstance(out["feat"], np.ndarray)
            and out["feat"].tobytes() == want["feat"].tobytes()
            and out["ids"].tolist() == [0, 1]
        ) or "differs"
        res[f"{frame}/reported"] = dmeta.get("codec_device") == "cuda (codec.gpu)" or dmeta.get(
            "codec_device"
        )
    return res


def _work_stream() -> dict:
    """A tiny Ray stream whose workers run the CUDA simulator (with the shim): the encoder and the
    decoder take the device path, and every sample arrives once."""
    import os

    import ray
    from tiny_stream import tiny_config, tiny_factory

    from splitstream.runner import run_pipeline

    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=2,
        resources={"edge": 1000, "cloud": 1000},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": path},
            "worker_process_setup_hook": "gpu_sim_shim.install",
        },
    )
    try:
        cfg = tiny_config(
            "samples=16",
            "data.shape=[3,4,4]",
            "batching.max_batch_size=8",
            "link.profile=unlimited",
            "fidelity.reference_samples=0",
            "codec.level=1",
            "placement.gpu_stages=[encoder,decoder]",
        )
        rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    finally:
        ray.shutdown()
    lines = {
        s: [p.get("codec_device") for p in rep["stages"][s]["placement"]]
        for s in ("encoder", "decoder")
    }
    return {
        "every_sample_once": (rep["delivered"], rep["lost"], rep["rejected"], rep["duplicated"])
        == (16, 0, 0, 0)
        or [rep["delivered"], rep["lost"], rep["rejected"], rep["duplicated"]],
        "device_path": all(v == ["cuda (codec.gpu)"] for v in lines.values()) or lines,
    }


WORK = {"stages": _work_stages, "stream": _work_stream}


# ---------------------------------------------------------------- the tests (pytest process)


def _device_expected() -> str:
    try:
        codec.device.gpu_module()
    except codec.CodecError:
        return "cpu: the CPU codec runs"
    return "cuda"


@needs_numba
@pytest.mark.timeout(150)
def test_simulated_gpu_codec_stages_put_the_cpu_frames_on_the_wire():
    assert_all(run_worker(__file__, ["stages"], sim=True, timeout=140))


@needs_numba
@pytest.mark.timeout(300)
def test_simulated_gpu_codec_stages_run_in_a_stream():
    assert_all(run_worker(__file__, ["stream"], sim=True, timeout=290))


@needs_numba
def test_codec_stages_without_a_device_fall_back_and_say_so():
    from actors import Decoder, Encoder

    expected = _device_expected()
    if expected == "cuda":
        pytest.skip("a CUDA device is present: nothing falls back")
    enc, dec = Encoder(use_gpu=True), Decoder((3, 4, 4), use_gpu=True)
    for stage in (enc, dec):
        line = stage.ready()["codec_device"]
        assert line.startswith(expected) and stage.stage in line and "\n" not in line
    b = _batch(3, (3, 4, 4), seed=2)
    meta, rb = enc.process(b)
    assert meta["codec_device"].startswith(expected)
    assert _frames(rb) == _frames(Encoder().process(b)[1])
    dmeta, out = dec.process(rb)
    assert out["feat"].shape == (3, 3, 4, 4) and dmeta["codec_device"].startswith(expected)
    assert "codec_device" not in Encoder().ready()  # not asked for: nothing to say


@needs_numba
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fuse", [True, False])
def test_a_stream_with_gpu_codec_stages_delivers_every_sample_once(ray_local, fuse):
    from tiny_stream import tiny_config, tiny_factory

    from splitstream.runner import run_pipeline

    cfg = tiny_config(
        "samples=40",
        "batching.max_batch_size=8",
        "link.profile=unlimited",
        "fidelity.reference_samples=0",
        "placement.gpu_stages=[encoder,decoder]",
        f"placement.fuse={str(fuse).lower()}",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 40 and rep["lost"] == 0 and rep["rejected"] == 0
    assert rep["duplicated"] == 0
    expected = _device_expected()
    for stage in ("encoder", "decoder"):
        lines = [p.get("codec_device") for p in rep["stages"][stage]["placement"]]
        assert lines and all(ln and ln.startswith(expected) for ln in lines), (stage, lines)
    if not fuse:  # a stage of its own: only the codec stages have a codec device to report
        assert all("codec_device" not in p for p in rep["stages"]["transport"]["placement"])


if __name__ == "__main__":
    worker_main(sys.argv[1:], WORK, lambda *a: {})
