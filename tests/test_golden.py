"""Golden frames (tests/golden/, made by ``python -m tests.golden.make``; see its docstring): the committed
frames decode to their committed tensors, bit for bit, and the encoder reproduces each of them byte for
byte, so that a change of the bitstream has to be deliberate (regenerate, review, commit). The last tests
show the check is sharp: one flipped bit in a frame, or in the encoder's output, fails it."""

from __future__ import annotations

import hashlib
from typing import Any

import framebytes
import numpy as np
import pytest
from golden import make

import codec
from codec import CodecError, _kernels, api, represent

MANIFEST = make.load_manifest()
ENTRIES = MANIFEST["entries"]
BY_NAME = {e["name"]: e for e in ENTRIES}


def decoded(entry: dict[str, Any]) -> np.ndarray:
    return np.load(make.HERE / MANIFEST["decoded"][entry["quant"]], allow_pickle=False)


def golden_problems(entry: dict[str, Any], blob: bytes) -> list[str]:
    """How a frame's bytes differ from a golden entry (empty: they match): the hash of the bytes, and the
    tensor they decode to (or the CodecError they raise) against the committed one."""
    found = []
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        found.append("hash")
    try:
        y = codec.decode(blob)
    except CodecError as e:
        return found + [f"CodecError: {e}"]
    want = decoded(entry)
    if (y.dtype, y.shape) != (want.dtype, want.shape) or y.tobytes() != want.tobytes():
        found.append("tensor")
    return found


def frame_bytes(entry: dict[str, Any]) -> bytes:
    return (make.HERE / entry["frame"]).read_bytes()


def test_the_set_covers_every_representation_context_and_level():
    assert MANIFEST["frame_version"] == _kernels.FRAME_VERSION
    kinds = {e["representation"] for e in ENTRIES}
    assert kinds == set(represent.KIND_NAMES.values())
    specs = [e["candidate"] for e in ENTRIES if "candidate" in e]
    contexts = {
        "stored"
        if s["coding"] == "stored"
        else make.context_name(make.candidate_from_spec({**c, "streams": [s]}).streams[0].ctx)
        for c in specs
        for s in c["streams"]
    }
    assert {"stored", "order0", "nb2", "nb4", "groups"} <= contexts
    assert any(c.startswith("groups+nb") for c in contexts)
    packed_nb = [c for c in specs if c["kind"] == "packed" and c["streams"][0].get("nb_dist")]
    assert packed_nb  # a neighbor context over packed symbols
    assert {c["param"] for c in specs if c["kind"] == "packed"} == {1, 2, 4}  # every packing slot
    assert {e["level"] for e in ENTRIES if "level" in e} == set(range(1, 10))
    quants = {make.QUANTS[e["quant"]] for e in ENTRIES}
    assert {q[1] for q in quants} >= {1, 2, 4, 6, 8}  # bit widths
    assert any(q[2] is not None for q in quants) and any(
        q[3] for q in quants
    )  # per channel, clipped
    assert "float16" in {q[4] for q in quants}
    files = [p for p in make.HERE.iterdir() if p.suffix in (".frame", ".npy", ".json")]
    assert {e["frame"] for e in ENTRIES} == {p.name for p in files if p.suffix == ".frame"}
    assert sum(p.stat().st_size for p in files) < 200 * 1024
    # frames of a few KB; a decoded tensor of 4-8 Ki float32 (what contexts need) is 16-32 KB
    assert max(p.stat().st_size for p in files) < 40 * 1024


@pytest.mark.parametrize("name", list(BY_NAME))
def test_golden_frame_decodes_to_its_tensor(name):
    entry = BY_NAME[name]
    blob = frame_bytes(entry)
    assert len(blob) == entry["bytes"]
    assert golden_problems(entry, blob) == []
    assert api.inspect(blob).representation == entry["representation"]
    simd, clmul = (
        _kernels.set_simd(False),
        _kernels.set_clmul(False),
    )  # the scalar paths read it alike
    try:
        assert golden_problems(entry, blob) == []
    finally:
        _kernels.set_simd(simd)
        _kernels.set_clmul(clmul)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_encoder_reproduces_golden_frame(name):
    entry = BY_NAME[name]
    assert golden_problems(entry, make.encode_entry(entry)) == []


@pytest.mark.parametrize("quant", list(MANIFEST["decoded"]))
def test_golden_tensors_are_their_inputs_quantized(quant):
    """The committed tensors are what the codec promises for their inputs (not just whatever it output):
    within half a quantization step, or a step where the range was clipped, of the input, outside the
    clipped part."""
    x, kw = make.quant_input(quant)
    y = np.load(make.HERE / MANIFEST["decoded"][quant]).astype(np.float64)
    x = x.astype(np.float64)
    assert y.shape == x.shape
    axes = tuple(d for d in range(x.ndim) if d != kw["axis"]) if kw["axis"] is not None else None
    lo = np.minimum(x.min(axis=axes, keepdims=axes is not None), 0)
    hi = np.maximum(x.max(axis=axes, keepdims=axes is not None), 0)
    step = (hi - lo) / ((1 << kw["bits"]) - 1)
    err = np.abs(y - x)
    if kw["clip"] is None:
        assert np.all(err <= step * 0.5 * (1 + 1e-3) + 1e-3 * np.abs(x)), (
            quant
        )  # float16: its rounding
    else:
        inside = (x >= y.min(axis=axes, keepdims=True)) & (x <= y.max(axis=axes, keepdims=True))
        assert np.all(err[inside] <= step.max())
    assert np.all(y[x == 0] == 0)  # zero stays exactly zero


def _flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _flip_and_reseal(blob: bytes, bit: int) -> bytes:
    """One bit flipped and the checksum made right again: what a changed encoder would write."""
    return framebytes.reseal(_flip(blob, bit)[:-4])


def test_one_flipped_bit_fails_the_golden_check():
    """Every single-bit change of a golden frame is caught by decoding alone (a CodecError or another
    tensor), not only by the hash: every bit of the smallest frame, and of each frame the header's and
    the payload's first and last 32 bytes and 64 bits spread over the rest."""
    smallest = min(ENTRIES, key=lambda e: e["bytes"])
    checked = 0
    for entry in ENTRIES:
        blob = frame_bytes(entry)
        nbits = 8 * len(blob)
        if entry is smallest:
            bits = range(nbits)
        else:
            edges = [*range(256), *range(nbits - 256, nbits)]
            bits = sorted({*edges, *np.linspace(0, nbits - 1, 64).astype(int).tolist()})
        for bit in bits:
            found = golden_problems(entry, _flip(blob, bit))
            assert "hash" in found and len(found) > 1, (entry["name"], bit, found)
            checked += 1
    assert checked > 8 * smallest["bytes"]


def test_a_changed_payload_with_a_right_checksum_fails_the_golden_check():
    """A bit changed in the payload and the checksum recomputed (a frame the decoder may well accept):
    the hash, and in most cases the tensor, tell it from the golden one."""
    for entry in ENTRIES:
        blob = frame_bytes(entry)
        for bit in (8 * (len(blob) - 5), 8 * (len(blob) - 40) + 3):
            found = golden_problems(entry, _flip_and_reseal(blob, bit))
            assert "hash" in found, (entry["name"], bit, found)


@pytest.mark.parametrize("reseal", [False, True])
def test_an_encoder_that_changes_one_bit_fails_the_golden_test(monkeypatch, reseal):
    """The frame writers (Python's and the C lean writer) patched to change one bit of what they write
    (with or without a consistent checksum): re-encoding a golden frame no longer matches."""

    def changed(writer):
        def write(*args, **kwargs):
            blob = writer(*args, **kwargs)
            bit = 8 * (len(blob) - 5)  # the payload's last byte
            return _flip_and_reseal(blob, bit) if reseal else _flip(blob, bit)

        return write

    monkeypatch.setattr(api, "write", changed(api.write))
    monkeypatch.setattr(api, "encode_lean", changed(api.encode_lean))
    for name in ("dense-order0.relu-b8", "sparse-stored-order0-stored.relu-b8", "level3.relu-b8"):
        entry = BY_NAME[name]
        found = golden_problems(entry, make.encode_entry(entry))
        assert "hash" in found, name
        if not reseal:
            assert any(f.startswith("CodecError") for f in found), (name, found)
