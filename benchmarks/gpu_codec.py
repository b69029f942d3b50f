"""GPU codec benchmark: per-frame encode / decode latency of the device path (``codec.gpu``) against the
CPU codec, nvCOMP's ANS where it is installed, and the device's copy bandwidth, all in one run.

    python -m benchmarks.gpu_codec [--quick] [--out DIR] [--repeats N]

Per shape (one sample of each suite tensor, and a 1x256x56x56 ReLU map) and level (1, 3): encode and
decode latency per frame at batch 1 (``codec.encode`` / ``codec.decode``) and batch 32
(``codec.encode_batch`` / ``codec.decode_batch``, time / 32), timed with CUDA events after warm-up; GB/s
of float32 input; whether the device's bytes and values are the CPU's (bit-exact); the CPU codec's
latency on the same frame. nvCOMP ANS (``nvidia.nvcomp``) codes the same uint8 symbols and the raw
float32. The device-to-device, host-to-device and device-to-host copy bandwidths give the ceiling.

Writes ``gpu_codec.json`` and ``gpu_codec.md`` into the folder given (default
``benchmarks/results/gpu_codec``). Without a CUDA device it prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import codec

from .common import machine, provenance, table, write_json

EXIT_NO_DEVICE = 2
LEVELS = (1, 3)
BATCH = 32
COPY_BYTES = 256 << 20
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu_codec"


def device_or_exit() -> Any:
    """numba's ``cuda`` module on a real device; otherwise one line on stderr and exit code 2."""
    reason = None
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        reason = "NUMBA_ENABLE_CUDASIM=1: the CUDA simulator is not a device"
    else:
        try:
            codec.device.gpu_module()
        except codec.CodecError as exc:
            reason = str(exc)
    if reason is not None:
        print(f"benchmarks.gpu_codec: no CUDA device ({reason}); nothing measured", file=sys.stderr)
        raise SystemExit(EXIT_NO_DEVICE)
    from numba import cuda

    return cuda


def _events_ms(cuda: Any, fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` between two CUDA events on the default stream, after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _host_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _host(y: Any) -> np.ndarray:
    return np.asarray(codec.api.device_to_host(y))


def _gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def shapes(quick: bool) -> tuple[list[tuple[str, np.ndarray]], str | None]:
    """(name, batch of samples) per shape: the suite's tensors where they build, and the 1x256x56x56
    ReLU map; and why the suite is missing, if it is."""
    rng = np.random.default_rng(0)
    out = [
        ("relu/1x256x56x56", np.maximum(rng.normal(size=(4, 256, 56, 56)), 0).astype(np.float32))
    ]
    try:
        from .suite import build

        out += [(t.name, np.ascontiguousarray(t.x, np.float32)) for t in build(quick=quick)]
    except (
        Exception
    ) as exc:  # models not installed on the device machine: the synthetic shape stays
        return out, f"{type(exc).__name__}: {exc}"
    return out, None


def measure(cuda: Any, name: str, xs: np.ndarray, level: int, repeats: int) -> dict[str, Any]:
    """One shape at one level: the device path at batch 1 and 32, the CPU codec, exactness."""
    x = xs[:1]
    samples = [xs[k % len(xs) : k % len(xs) + 1] for k in range(BATCH)]
    dev = cuda.to_device(x)
    devs = [cuda.to_device(s) for s in samples]
    blob = codec.encode(x, level=level)
    blobs = [codec.encode(s, level=level) for s in samples]
    want = codec.decode(blob)
    exact = codec.encode(dev, level=level) == blob
    exact = exact and _host(codec.decode(blob, device="cuda")).tobytes() == want.tobytes()
    exact = exact and codec.encode_batch(devs, level=level) == blobs
    ws = codec.Workspace()
    row: dict[str, Any] = {
        "shape": name,
        "frame_shape": list(x.shape),
        "level": level,
        "fp32_bytes": x.nbytes,
        "frame_bytes": len(blob),
        "representation": codec.inspect(blob).representation,
        "bit_exact": bool(exact),
        "fallbacks": codec.device.fallbacks(),
    }
    row["gpu_encode_ms"] = _events_ms(cuda, lambda: codec.encode(dev, level=level), repeats)
    row["gpu_decode_ms"] = _events_ms(cuda, lambda: codec.decode(blob, device="cuda"), repeats)
    enc32 = _events_ms(cuda, lambda: codec.encode_batch(devs, level=level, workspace=ws), repeats)
    dec32 = _events_ms(
        cuda, lambda: codec.decode_batch(blobs, device="cuda", workspace=ws), repeats
    )
    row["gpu_encode_ms_b32"], row["gpu_decode_ms_b32"] = enc32 / BATCH, dec32 / BATCH
    row["cpu_encode_ms"] = _host_ms(lambda: codec.encode(x, level=level), repeats)
    row["cpu_decode_ms"] = _host_ms(lambda: codec.decode(blob), repeats)
    for key in [k for k in row if "_ms" in k]:  # float32 input per second
        row[key.replace("_ms", "_gbps")] = _gbps(x.nbytes, row[key])
    return row


def nvcomp_ans(cuda: Any, name: str, x: np.ndarray, repeats: int) -> dict[str, Any]:
    """nvCOMP's ANS on the frame's 8-bit symbols and on its raw float32 (sizes, latencies)."""
    try:
        from nvidia import nvcomp
    except ImportError:
        return {"shape": name, "nvcomp": "not installed"}
    from codec.quantize import quantize

    q, _, _ = quantize(np.ascontiguousarray(x, np.float32), 8)
    row: dict[str, Any] = {"shape": name, "nvcomp": getattr(nvcomp, "__version__", "?")}
    try:
        ans = nvcomp.Codec(algorithm="ANS")
        for label, data in (("u8", q), ("fp32", x.reshape(-1).view(np.uint8))):
            arr = nvcomp.as_array(cuda.to_device(np.ascontiguousarray(data)))
            enc = ans.encode(arr)
            row[f"{label}_bytes"] = int(enc.buffer_size)
            row[f"{label}_encode_ms"] = _events_ms(cuda, lambda a=arr: ans.encode(a), repeats)
            row[f"{label}_decode_ms"] = _events_ms(cuda, lambda e=enc: ans.decode(e), repeats)
    except Exception as exc:  # an API difference between nvCOMP versions: say so, keep the run
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def copy_ceiling(cuda: Any, repeats: int) -> dict[str, float]:
    """Copy bandwidths of this device (GB/s): device to device (bytes read plus written), and pinned
    host to device and back."""
    n = COPY_BYTES
    src = cuda.device_array(n, np.uint8)
    dst = cuda.device_array(n, np.uint8)
    host = cuda.pinned_array(n, np.uint8)
    d2d = _events_ms(cuda, lambda: dst.copy_to_device(src), repeats)
    h2d = _events_ms(cuda, lambda: dst.copy_to_device(host), repeats)
    d2h = _events_ms(cuda, lambda: dst.copy_to_host(host), repeats)
    return {
        "bytes": n,
        "d2d_read_plus_write_gbps": _gbps(2 * n, d2d),
        "h2d_gbps": _gbps(n, h2d),
        "d2h_gbps": _gbps(n, d2h),
    }


def markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: the device, the latency table, nvCOMP, the copy ceiling."""
    cols = [
        ("shape", "shape"),
        ("level", "level"),
        ("bit_exact", "bit-exact"),
        ("gpu_encode_ms", "GPU enc ms"),
        ("gpu_decode_ms", "GPU dec ms"),
        ("gpu_encode_ms_b32", "GPU enc ms (b32)"),
        ("gpu_decode_ms_b32", "GPU dec ms (b32)"),
        ("gpu_decode_gbps", "GPU dec GB/s"),
        ("cpu_encode_ms", "CPU enc ms"),
        ("cpu_decode_ms", "CPU dec ms"),
    ]
    lines = [
        f"# GPU codec on {doc['device']['name']}",
        "",
        f"`{doc['provenance']['command']}` at {doc['provenance']['commit']}",
        "",
        table(doc["rows"], cols),
        "",
        f"Copy ceiling: {doc['copy']}",
        "",
        f"nvCOMP ANS: {doc['nvcomp']}",
    ]
    if doc.get("suite_missing"):
        lines += ["", f"Suite not built: {doc['suite_missing']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_codec", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the quick suite and fewer repeats")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder for gpu_codec.json / .md")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    cuda = device_or_exit()
    repeats = args.repeats or (5 if args.quick else 20)
    dev = cuda.get_current_device()
    found, missing = shapes(args.quick)
    rows, nv = [], []
    for name, xs in found:
        for level in LEVELS:
            rows.append(measure(cuda, name, xs, level, repeats))
            print(f"{name} level {level}: exact={rows[-1]['bit_exact']}", flush=True)
        nv.append(nvcomp_ans(cuda, name, xs[:1], repeats))
    doc = {
        "device": {"name": str(dev.name), "compute_capability": list(dev.compute_capability)},
        "machine": machine(),
        "provenance": provenance(["python", "-m", "benchmarks.gpu_codec", *argv], vars(args)),
        "rows": rows,
        "nvcomp": nv,
        "copy": copy_ceiling(cuda, repeats),
        "suite_missing": missing,
        "all_bit_exact": all(r["bit_exact"] for r in rows),
    }
    out = Path(args.out)
    write_json(out / "gpu_codec.json", doc)
    (out / "gpu_codec.md").write_text(markdown(doc))
    print(f"wrote {out / 'gpu_codec.md'}")
    return 0 if doc["all_bit_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
