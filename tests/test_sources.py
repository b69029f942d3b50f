"""Readers of the user's data (pipeline.stream.sources): images, video, tables and raw items.

Photos are crops of scikit-learn's two sample photographs, written as small JPEGs; the test
video is encoded from them with PyAV. No Ray.
"""

from __future__ import annotations

import io
import json
import os
import pickle

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from pipeline.stream.sources import (
    ImagesSpec,
    Loaded,
    TableSpec,
    Transform,
    VideoSpec,
    convert_items,
    describe,
    open_reader,
)
from pipeline.stream.sources.transform import to_rgb

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Eight 64x48 RGB crops of the two sample photographs (china, flower)."""
    crops = []
    for img in load_sample_images().images:
        for k in range(4):
            crops.append(np.ascontiguousarray(img[60 + 40 * k : 108 + 40 * k, 150 : 150 + 64]))
    return crops


def save(path, array: np.ndarray, **kw) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if str(path).lower().endswith((".jpg", ".jpeg")):
        kw.setdefault("quality", 95)
    Image.fromarray(array).save(path, **kw)
    return str(path)


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def open_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def as_item(frame: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 picture as the readers give it without a transform."""
    return frame.transpose(2, 0, 1).astype(np.float32) / 255.0


def by_hand(img: Image.Image, mean=MEAN, std=STD) -> np.ndarray:
    x = np.asarray(img.convert("RGB"), np.float64).transpose(2, 0, 1) / 255.0
    return (x - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1))


def read_all(spec, threads: int = 1) -> Loaded:
    with open_reader(spec, threads) as reader:
        return reader.read(np.arange(spec.size, dtype=np.int64))


class TestTransform:
    def test_normalises_as_computed_by_hand(self, photos):
        img = Image.fromarray(photos[0])
        out = Transform(mean=MEAN, std=STD).apply(img)
        assert out.dtype == np.float32 and out.shape == (3, 48, 64)
        np.testing.assert_allclose(out, by_hand(img), atol=1e-5)

    def test_resize_short_side_then_centre_crop(self, photos):
        img = Image.fromarray(photos[1])  # 64 x 48
        out = Transform(resize=24, crop=16, mean=MEAN, std=STD).apply(img)
        assert out.shape == (3, 16, 16)
        small = img.resize((32, 24), Image.Resampling.BILINEAR)
        np.testing.assert_allclose(out, by_hand(small.crop((8, 4, 24, 20))), atol=1e-5)

    def test_crop_larger_than_image_pads_black(self, photos):
        out = Transform(crop=80).apply(Image.fromarray(photos[0]))
        assert out.shape == (3, 80, 80)
        assert out[:, :16].max() == 0 and out[:, 16:64, 8:72].max() > 0

    def test_matches_torchvision_preset(self, photos):
        from torchvision.models import MobileNet_V2_Weights

        weights = MobileNet_V2_Weights.IMAGENET1K_V1
        t = Transform.from_torchvision(weights)
        assert (t.resize, t.crop, t.interpolation) == (256, 224, "bilinear")
        assert t.mean == pytest.approx(MEAN) and t.std == pytest.approx(STD)
        img = Image.fromarray(photos[2])
        theirs = weights.transforms()(img).numpy()
        np.testing.assert_allclose(t.apply(img), theirs, atol=1e-5)

    @pytest.mark.parametrize(
        "kw",
        [{"interpolation": "lanczos"}, {"std": (1.0, 0.0, 1.0)}, {"mean": (0.1, 0.2)}, {"crop": 0}],
    )
    def test_bad_settings_raise(self, kw):
        with pytest.raises(ValueError):
            Transform(**kw)

    def test_from_torchvision_rejects_other_presets(self):
        class Weights:
            @staticmethod
            def transforms():
                return object()

        with pytest.raises(ValueError, match="not an image classification preset"):
            Transform.from_torchvision(Weights())

    def test_is_picklable(self):
        t = Transform(resize=8, crop=4, mean=MEAN, std=STD)
        assert pickle.loads(pickle.dumps(t)) == t


class TestToRgb:
    def test_grey_palette_and_cmyk_become_rgb(self, photos):
        rgb = Image.fromarray(photos[0])
        for img in (rgb.convert("L"), rgb.convert("P"), rgb.convert("CMYK"), rgb.convert("1")):
            out = to_rgb(img)
            assert out.mode == "RGB" and out.size == rgb.size
        grey = np.asarray(to_rgb(rgb.convert("L")))
        assert (grey[..., 0] == grey[..., 2]).all()

    def test_alpha_is_composited_on_white(self):
        rgba = np.zeros((4, 4, 4), np.uint8)
        rgba[..., 0] = 200
        rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
        out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
        assert (out[:2] == (200, 0, 0)).all() and (out[2:] == 255).all()
        la = to_rgb(Image.fromarray(rgba[..., [0, 3]], "LA"))
        assert np.asarray(la)[3, 0].tolist() == [255, 255, 255]

    def test_sixteen_bit_grey_is_scaled(self):
        img = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16))
        assert img.mode.startswith("I;16")
        assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 100, 255]


class TestDescribe:
    def test_missing_path(self, tmp_path):
        for kind in ("images", "table"):
            with pytest.raises(ValueError, match=r"^data.path: no such file or folder"):
                describe(kind, path=str(tmp_path / "nothing"))

    def test_folder_without_images(self, tmp_path):
        (tmp_path / "notes.txt").write_text("hi")
        with pytest.raises(ValueError, match=r"^data.path: no images found in folder .*\.jpg"):
            describe("images", path=str(tmp_path))

    def test_glob_without_match(self, tmp_path):
        with pytest.raises(ValueError, match=r"^data.path: no images match the pattern"):
            describe("images", path=str(tmp_path / "*.png"))

    def test_unknown_kind(self, tmp_path):
        with pytest.raises(ValueError, match=r"^data.source:"):
            describe("audio", path=str(tmp_path))

    def test_other_file_is_not_an_image_source(self, tmp_path):
        (tmp_path / "a.csv").write_text("a\n1\n")
        with pytest.raises(ValueError, match=r"^data.path: .* is not a folder, a glob"):
            describe("images", path=str(tmp_path / "a.csv"))

    def test_open_reader_rejects_other_objects(self):
        with pytest.raises(TypeError):
            open_reader("images")


@pytest.fixture
def folder(tmp_path, photos) -> str:
    """Four photos in b/ and a/ (nested) folders, saved in reverse order."""
    root = tmp_path / "imgs"
    save(root / "b" / "2.jpg", photos[0])
    save(root / "b" / "1.JPG", photos[1])
    save(root / "a" / "deep" / "3.png", photos[2])
    save(root / "a" / "0.jpeg", photos[3])
    (root / "a" / "readme.md").write_text("not an image, not listed")
    return str(root)


class TestImagesReader:
    def test_folder_is_recursive_and_sorted(self, folder, photos):
        spec = describe("images", path=folder)
        assert spec.keys == ("a/0.jpeg", "a/deep/3.png", "b/1.JPG", "b/2.jpg")
        assert (spec.size, spec.has_labels, spec.fps, spec.text) == (4, False, None, False)
        loaded = read_all(spec)
        assert loaded.x.shape == (4, 3, 48, 64) and loaded.x.dtype == np.float32
        assert loaded.keys == list(spec.keys) and loaded.rejected == {} and loaded.labels is None
        np.testing.assert_array_equal(loaded.x[1], as_item(photos[2]))
        assert np.abs(loaded.x[0] - as_item(photos[3])).mean() < 0.02

    def test_class_folders_give_labels(self, tmp_path, photos):
        for i, name in enumerate(("dog", "cat", "dog", "bird", "cat")):
            save(tmp_path / name / f"{i}.jpg", photos[i])
        spec = describe("images", path=str(tmp_path))
        assert spec.class_names == ("bird", "cat", "dog") and spec.has_labels
        loaded = read_all(spec)
        assert loaded.keys == ["bird/3.jpg", "cat/1.jpg", "cat/4.jpg", "dog/0.jpg", "dog/2.jpg"]
        assert loaded.labels.dtype == np.int64 and loaded.labels.tolist() == [0, 1, 1, 2, 2]

    def test_files_at_top_level_mean_no_labels(self, tmp_path, photos):
        save(tmp_path / "x" / "0.jpg", photos[0])
        save(tmp_path / "y" / "1.jpg", photos[1])
        save(tmp_path / "2.jpg", photos[2])
        spec = describe("images", path=str(tmp_path))
        assert not spec.has_labels and spec.class_names is None

    def test_glob_keys_are_relative_to_its_fixed_folder(self, folder):
        spec = describe("images", path=os.path.join(folder, "a", "**", "*.*"))
        assert spec.keys == ("0.jpeg", "deep/3.png")
        assert read_all(spec).x.shape == (2, 3, 48, 64)

    def test_txt_list_keeps_keys_as_written(self, folder, tmp_path):
        listing = tmp_path / "list.txt"
        absolute = os.path.join(folder, "b", "2.jpg")
        listing.write_text(f"imgs/b/1.JPG\n\n# a comment\n{absolute}\nimgs/missing.jpg\n")
        spec = describe("images", path=str(listing))
        loaded = read_all(spec)
        assert loaded.keys == ["imgs/b/1.JPG", absolute, "imgs/missing.jpg"]
        assert len(loaded.x) == 2 and list(loaded.rejected) == [2]
        assert "file not found" in loaded.rejected[2]

    def test_transform_and_threads(self, folder):
        spec = describe(
            "images", path=folder, transform=Transform(resize=24, crop=20, mean=MEAN, std=STD)
        )
        one = read_all(spec)
        four = read_all(spec, threads=4)
        assert one.x.shape == (4, 3, 20, 20)
        np.testing.assert_array_equal(one.x, four.x)
        img = Image.open(os.path.join(folder, "b", "2.jpg"))
        small = img.resize((32, 24), Image.Resampling.BILINEAR).crop((6, 2, 26, 22))
        np.testing.assert_allclose(one.x[3], by_hand(small), atol=1e-5)

    def test_large_jpeg_decodes_at_reduced_scale(self, tmp_path):
        china = load_sample_images().images[0]  # 640 x 427
        path = save(tmp_path / "china.jpg", china, quality=95)
        t = Transform(resize=64, crop=64)
        loaded = read_all(describe("images", path=path, transform=t))
        full = t.apply(Image.open(path).convert("RGB"))
        assert loaded.x.shape == (1, 3, 64, 64)
        assert 0 < np.abs(loaded.x[0] - full).mean() < 0.02  # close, not the full decode's pixels

    def test_any_indices_in_request_order(self, folder):
        with open_reader(describe("images", path=folder)) as reader:
            loaded = reader.read(np.array([3, 0, 3, 7, -1], np.int64))
        assert loaded.keys == ["b/2.jpg", "a/0.jpeg", "b/2.jpg", "7", "-1"]
        assert len(loaded.x) == 3 and sorted(loaded.rejected) == [3, 4]
        np.testing.assert_array_equal(loaded.x[0], loaded.x[2])
        assert "no item 7" in loaded.rejected[3]

    def test_other_modes_are_read_as_rgb(self, tmp_path, photos):
        rgb = Image.fromarray(photos[0])
        rgba = np.dstack([photos[0], np.full((48, 64), 255, np.uint8)])
        rgb.convert("L").save(tmp_path / "grey.png")
        rgb.convert("P").save(tmp_path / "palette.gif")
        rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
        Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
        Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(tmp_path / "16.png")
        loaded = read_all(describe("images", path=str(tmp_path)))
        assert loaded.rejected == {} and loaded.x.shape == (5, 3, 48, 64)
        keys = loaded.keys
        grey, sixteen = loaded.x[keys.index("grey.png")], loaded.x[keys.index("16.png")]
        np.testing.assert_array_equal(grey, sixteen)
        np.testing.assert_array_equal(loaded.x[keys.index("rgba.png")], as_item(photos[0]))

    def test_cmyk_jpeg_with_a_reduced_scale_decode(self, tmp_path):
        china = Image.fromarray(load_sample_images().images[0])
        china.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
        t = Transform(resize=32, crop=32)
        loaded = read_all(describe("images", path=str(tmp_path), transform=t))
        assert loaded.rejected == {} and loaded.x.shape == (1, 3, 32, 32)
        assert np.abs(loaded.x[0] - t.apply(china)).mean() < 0.03

    def test_linked_folder_cycle_is_walked_once(self, tmp_path, photos):
        save(tmp_path / "a" / "0.jpg", photos[0])
        os.symlink(tmp_path, tmp_path / "a" / "loop")
        assert describe("images", path=str(tmp_path)).keys == ("a/0.jpg",)

    def test_mixed_sizes_without_transform_are_rejected(self, tmp_path, photos):
        save(tmp_path / "a.png", photos[0])
        save(tmp_path / "b.png", photos[1])
        save(tmp_path / "c.png", photos[2][:32, :40])
        loaded = read_all(describe("images", path=str(tmp_path)))
        assert loaded.x.shape == (2, 3, 48, 64)
        assert loaded.rejected == {2: loaded.rejected[2]}
        assert "40x32" in loaded.rejected[2] and "64x48" in loaded.rejected[2]

    def test_bad_files_are_rejected_with_reasons(self, tmp_path, photos, monkeypatch, recwarn):
        good = save(tmp_path / "0_good.jpg", photos[0])
        (tmp_path / "1_empty.jpg").write_bytes(b"")
        data = open_bytes(good)
        (tmp_path / "2_truncated.jpg").write_bytes(data[: len(data) // 2])
        (tmp_path / "3_text.jpg").write_text("hello, I am not a photo\n")
        save(tmp_path / "4_bomb.png", np.zeros((100, 100, 3), np.uint8))
        save(tmp_path / "5_warn.png", np.zeros((80, 80, 3), np.uint8))
        vanished = save(tmp_path / "6_vanished.jpg", photos[1])
        save(tmp_path / "7_good.jpg", photos[1])
        spec = describe("images", path=str(tmp_path))
        os.remove(vanished)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 80x80 warns, 100x100 is an error
        loaded = read_all(spec)
        assert len(loaded.x) == 2 and len(loaded.keys) == 8
        why = loaded.rejected
        assert sorted(why) == [1, 2, 3, 4, 5, 6]
        assert why[1] == "empty file"
        assert why[2].startswith("corrupt or truncated image")
        assert why[3] == "not an image: cannot identify image file"
        assert why[4].startswith("decompression bomb") and why[5].startswith("decompression bomb")
        assert why[6].startswith("file not found")
        assert all("\n" not in r for r in why.values())
        assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file_is_rejected(self, tmp_path, photos):
        path = save(tmp_path / "a.jpg", photos[0])
        os.chmod(path, 0)
        loaded = read_all(describe("images", path=str(tmp_path)))
        assert loaded.rejected[0].startswith("permission denied")

    def test_spec_is_picklable(self, folder):
        spec = describe("images", path=folder, transform=Transform(crop=8))
        assert isinstance(spec, ImagesSpec) and pickle.loads(pickle.dumps(spec)) == spec


FPS, FRAMES = 12, 24


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    """24 frames at 12 fps, 64x48 mpeg4 with B-frames, panning across the china photo; and the
    frames as the decoder gives them."""
    china = load_sample_images().images[0]
    path = str(tmp_path_factory.mktemp("video") / "pan.mp4")
    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 6
        stream.codec_context.max_b_frames = 2
        for i in range(FRAMES):
            crop = np.ascontiguousarray(china[100 + 3 * i : 148 + 3 * i, 200 + 4 * i : 264 + 4 * i])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(path) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(frames) == FRAMES
    return path, frames


class TestVideoReader:
    def test_probe(self, video):
        spec = describe("video", path=video[0])
        assert isinstance(spec, VideoSpec)
        assert (spec.size, spec.fps, spec.has_labels, spec.text) == (FRAMES, FPS, False, False)
        assert spec.keyframes[0] == 0 and 1 < len(spec.keyframes) < FRAMES
        assert pickle.loads(pickle.dumps(spec)) == spec

    def test_contiguous_reads_give_every_frame(self, video):
        path, frames = video
        with open_reader(describe("video", path=path), threads=2) as reader:
            assert reader.size == FRAMES and reader.fps == FPS
            parts = [reader.read(np.arange(s, s + 5)) for s in range(0, FRAMES + 1, 5)]
        x = np.concatenate([p.x for p in parts])
        np.testing.assert_array_equal(x, np.stack([as_item(f) for f in frames]))
        assert parts[0].keys == ["0@0.000", "1@0.083", "2@0.167", "3@0.250", "4@0.333"]
        assert sorted(parts[-1].rejected) == [4] and "no frame 24" in parts[-1].rejected[4]

    def test_replay_gives_the_same_pixels(self, video):
        path, frames = video
        with open_reader(describe("video", path=path)) as reader:
            first = reader.read(np.arange(0, 20))
            again = reader.read(np.array([8, 9, 10, 3, 21]))
        assert again.rejected == {}
        np.testing.assert_array_equal(again.x[:4], first.x[[8, 9, 10, 3]])
        np.testing.assert_array_equal(again.x[4], as_item(frames[21]))

    def test_skipping_forward(self, video):
        path, frames = video
        with open_reader(describe("video", path=path)) as reader:
            loaded = reader.read(np.array([1, 17, 23]))
        np.testing.assert_array_equal(loaded.x, np.stack([as_item(frames[i]) for i in (1, 17, 23)]))

    def test_loop_wraps_and_time_grows(self, video):
        path, frames = video
        spec = describe("video", path=path, loop=True, transform=Transform(crop=32))
        assert spec.size is None
        with open_reader(spec) as reader:
            assert reader.size is None
            loaded = reader.read(np.arange(FRAMES - 2, FRAMES + 2))
            later = reader.read(np.array([5 * FRAMES + 1]))
        assert loaded.keys == ["22@1.833", "23@1.917", "24@2.000", "25@2.083"]
        assert later.keys == ["121@10.083"]
        assert loaded.x.shape == (4, 3, 32, 32)
        np.testing.assert_array_equal(loaded.x[3], later.x[0])
        expected = Transform(crop=32).apply(Image.fromarray(frames[0]))
        np.testing.assert_array_equal(loaded.x[2], expected)

    def test_unreadable_video(self, tmp_path):
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"\x00" * 100)
        with pytest.raises(ValueError, match=r"^data.path: cannot open video"):
            describe("video", path=str(bad))

    def test_corrupt_packets_are_rejected_not_raised(self, video, tmp_path):
        data = bytearray(open_bytes(video[0]))
        rng = np.random.default_rng(0)
        for at in rng.integers(len(data) // 3, len(data) - 200, 12):
            data[at : at + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        path = tmp_path / "broken.mp4"
        path.write_bytes(bytes(data))
        spec = describe("video", path=str(path))
        with open_reader(spec) as reader:
            loaded = reader.read(np.arange(spec.size))
            replay = reader.read(np.arange(spec.size))
        assert len(loaded.x) + len(loaded.rejected) == spec.size
        assert len(loaded.x) > 0 and len(loaded.rejected) > 0
        assert replay.rejected == loaded.rejected
        assert all(isinstance(r, str) and r for r in loaded.rejected.values())


@pytest.fixture
def table_photos(tmp_path, photos) -> list[str]:
    names = []
    for i in range(6):
        names.append(f"img/{i}.jpg")
        save(tmp_path / names[-1], photos[i])
    return names


class TestTableReader:
    def test_parquet_paths_labels_keys_across_row_groups(self, tmp_path, table_photos):
        table = pa.table(
            {
                "path": table_photos,
                "label": [2, 0, 1, 2, 0, None],
                "id": ["a", "b", "c", "d", "e", "f"],
            }
        )
        path = str(tmp_path / "t.parquet")
        pq.write_table(table, path, row_group_size=2)
        spec = describe("table", path=path, label_column="label", key_column="id")
        assert isinstance(spec, TableSpec)
        assert (spec.column, spec.kind, spec.size, spec.has_labels, spec.text) == (
            "path",
            "paths",
            6,
            True,
            False,
        )
        assert spec.class_names is None and pickle.loads(pickle.dumps(spec)) == spec
        with open_reader(spec, threads=2) as reader:
            loaded = reader.read(np.array([4, 0, 1, 5, 3], np.int64))
        assert loaded.keys == ["e", "a", "b", "f", "d"]
        assert loaded.labels.tolist() == [0, 2, 0, 2]
        assert loaded.rejected == {3: "null label in column 'label'"}
        assert loaded.x.shape == (4, 3, 48, 64)

    def test_bytes_column_with_string_labels(self, tmp_path, photos):
        blobs = [jpeg_bytes(p) for p in photos[:3]] + [b"junk", None]
        table = pa.table({"bytes": blobs, "cls": ["dog", "cat", "dog", "cat", "cat"]})
        pq.write_table(table, tmp_path / "b.parquet")
        spec = describe("table", path=str(tmp_path / "b.parquet"), label_column="cls")
        assert spec.kind == "bytes" and spec.class_names == ("cat", "dog")
        loaded = read_all(spec)
        assert loaded.labels.tolist() == [1, 0, 1]
        assert loaded.keys == ["0", "1", "2", "3", "4"]
        assert loaded.rejected[3].startswith("not an image")
        assert loaded.rejected[4] == "null cell in column 'bytes'"

    def test_text_column(self, tmp_path):
        pq.write_table(pa.table({"text": ["Rain again.", None, "Quiet."]}), tmp_path / "t.pq")
        spec = describe("table", path=str(tmp_path / "t.pq"))
        assert spec.text and spec.kind == "text" and not spec.has_labels
        with open_reader(spec) as reader:
            assert reader.text
            loaded = reader.read(np.arange(3))
        assert loaded.x == ["Rain again.", "Quiet."] and list(loaded.rejected) == [1]

    def test_jsonl(self, tmp_path, table_photos):
        lines = [json.dumps({"image": p, "n": i}) for i, p in enumerate(table_photos[:3])]
        (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
        spec = describe(
            "table", path=str(tmp_path / "t.jsonl"), label_column="n", transform=Transform(crop=16)
        )
        assert spec.column == "image" and spec.kind == "paths"
        loaded = read_all(spec)
        assert loaded.x.shape == (3, 3, 16, 16) and loaded.labels.tolist() == [0, 1, 2]

    def test_csv_text_keyed(self, tmp_path):
        (tmp_path / "t.csv").write_text("id,sentence\n7,Hello there.\n9,Fine.\n")
        spec = describe("table", path=str(tmp_path / "t.csv"), key_column="id")
        assert spec.column == "sentence" and spec.text
        loaded = read_all(spec)
        assert loaded.keys == ["7", "9"] and loaded.x == ["Hello there.", "Fine."]

    def test_huggingface_image_structs(self, tmp_path, photos, table_photos):
        cells = [
            {"bytes": jpeg_bytes(photos[0]), "path": None},
            {"bytes": None, "path": table_photos[1]},
        ]
        pq.write_table(pa.table({"image": cells, "label": [0, 1]}), tmp_path / "hf.parquet")
        spec = describe("table", path=str(tmp_path / "hf.parquet"), label_column="label")
        assert spec.kind == "struct"
        assert read_all(spec).x.shape == (2, 3, 48, 64)

    def test_bad_columns_raise(self, tmp_path):
        path = str(tmp_path / "t.parquet")
        pq.write_table(pa.table({"a": [1], "b": ["x"], "c": [1.5]}), path)
        with pytest.raises(
            ValueError,
            match=r"^data.column: table .* has no column 'img'; it has \['a', 'b', 'c'\]",
        ):
            describe("table", path=path, column="img")
        with pytest.raises(ValueError, match=r"^data.column: table .* has several columns"):
            describe("table", path=path)
        with pytest.raises(ValueError, match=r"^data.column: column 'a' .* holds int64"):
            describe("table", path=path, column="a")
        with pytest.raises(ValueError, match=r"^data.label_column: column 'c' .* holds double"):
            describe("table", path=path, column="b", label_column="c")
        with pytest.raises(ValueError, match=r"^data.key_column: table .* has no column 'id'"):
            describe("table", path=path, column="b", key_column="id")

    def test_bad_files_raise(self, tmp_path):
        (tmp_path / "t.xlsx").write_text("x")
        with pytest.raises(ValueError, match=r"^data.path: .* is not a table"):
            describe("table", path=str(tmp_path / "t.xlsx"))
        (tmp_path / "t.parquet").write_text("not parquet")
        with pytest.raises(ValueError, match=r"^data.path: cannot read table"):
            describe("table", path=str(tmp_path / "t.parquet"))
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
        with pytest.raises(ValueError, match=r"^data.path: table .* has no rows"):
            describe("table", path=str(tmp_path / "e.parquet"))


class TestConvertItems:
    def test_each_kind_of_item(self, photos):
        img = Image.fromarray(photos[0])
        array = photos[1].transpose(2, 0, 1).astype(np.float64) / 255.0
        items = [img, array, torch.from_numpy(array).half(), ("cam-7", jpeg_bytes(photos[2]))]
        loaded = convert_items(items, None, first_key=100)
        assert loaded.keys == ["100", "101", "102", "cam-7"] and loaded.rejected == {}
        assert loaded.x.dtype == np.float32 and loaded.x.shape == (4, 3, 48, 64)
        assert loaded.labels is None
        np.testing.assert_array_equal(loaded.x[0], as_item(photos[0]))
        np.testing.assert_allclose(loaded.x[2], array, atol=1e-3)
        assert np.abs(loaded.x[3] - as_item(photos[2])).mean() < 0.02

    def test_transform_applies_to_images_only(self, photos):
        t = Transform(resize=24, crop=20, mean=MEAN, std=STD)
        loaded = convert_items([Image.fromarray(photos[0]), jpeg_bytes(photos[1])], t, 0)
        assert loaded.x.shape == (2, 3, 20, 20)
        np.testing.assert_allclose(loaded.x[0], t.apply(Image.fromarray(photos[0])), atol=0)

    def test_text_items(self):
        loaded = convert_items([(5, "hello"), "world", np.zeros(3)], None, first_key=0)
        assert loaded.x == ["hello", "world"] and loaded.keys == ["5", "1", "2"]
        assert loaded.rejected == {2: "an array among strings"}

    def test_bad_items_are_rejected_not_raised(self):
        good = np.ones((2, 3), np.float32)
        items = [
            good,
            b"\x89PNG broken",
            {"a": 1},
            np.array([[np.nan, 0, 0], [0, 0, 0]]),
            np.ones((3, 2)),
            np.array([["a", "b", "c"]] * 2),
            torch.ones(2, 3),
            bytearray(),
        ]
        loaded = convert_items(items, None, first_key=0)
        assert loaded.x.shape == (2, 2, 3) and len(loaded.keys) == len(items)
        why = loaded.rejected
        assert sorted(why) == [1, 2, 3, 4, 5, 7]
        assert why[1].startswith("not an image") and "unsupported item type dict" in why[2]
        assert why[3].startswith("non-finite") and "differs from the batch's (2, 3)" in why[4]
        assert "dtype <U1" in why[5] and why[7] == "empty file"

    def test_empty_batch(self):
        loaded = convert_items([], None, first_key=0)
        assert len(loaded.x) == 0 and loaded.keys == [] and loaded.rejected == {}
