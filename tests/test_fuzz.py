"""The codec under AddressSanitizer and UndefinedBehaviorSanitizer (``pytest -m fuzz``): the extension is
rebuilt with clang's sanitizers and libFuzzer's coverage counters into build/fuzz-asan/, then

- the coverage-guided fuzzer (tests/fuzz/fuzz_decode.py, atheris) runs ``codec.decode`` for a bounded
  time (FUZZ_SECONDS, default 50) from the seed corpus tests/fuzz/corpus/, and
- the codec's own tests run against the sanitized build,

and any sanitizer report, crash, uncaught exception other than CodecError, timeout or oversized
allocation fails. Needs clang and atheris; they are skipped without them, except where
SPLITSTREAM_FUZZ_REQUIRED=1 (CI) makes their absence a failure.

By hand, after one run of this test has built the extension::

    LD_PRELOAD=$(.venv/bin/python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so \\
    ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=build/fuzz-asan/lib \\
    .venv/bin/python tests/fuzz/fuzz_decode.py -max_total_time=300 /tmp/corpus tests/fuzz/corpus
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
BUILD = ROOT / "build" / "fuzz-asan"
SANITIZE = "address,undefined"
CFLAGS = [
    f"-fsanitize={SANITIZE},fuzzer-no-link",
    "-fno-sanitize-recover=all",  # the first report aborts the process
    "-fno-wrapv",  # Python's flags define signed overflow; the sanitizer should see it
    "-fno-omit-frame-pointer",
    "-g",
]
CODEC_TESTS = [
    "test_frame.py",
    "test_kernels.py",
    "test_rans.py",
    "test_codec.py",
    "test_quantize.py",
]
REPORTS = re.compile(
    r"ERROR: AddressSanitizer|runtime error:|ERROR: libFuzzer|Uncaught Python exception"
)


def _missing() -> str | None:
    if not (sys.platform == "linux" and os.uname().machine == "x86_64"):
        return "the sanitized fuzz build targets x86-64 Linux"
    if shutil.which("clang") is None:
        return "clang is not installed (make test installs it with apt-get where it can)"
    if find_spec("atheris") is None:
        return "atheris is not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def sanitized() -> tuple[Path, dict[str, str]]:
    """Build the sanitized extension next to a copy of the codec package; (library dir, environment)."""
    why = _missing()
    if why:
        if os.environ.get("SPLITSTREAM_FUZZ_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    import atheris

    lib = BUILD / "lib"
    shutil.rmtree(lib / "codec", ignore_errors=True)
    (lib / "codec").mkdir(parents=True)
    for src in (ROOT / "codec").glob("*.py"):
        shutil.copy2(src, lib / "codec" / src.name)
    env = dict(
        os.environ,
        CC="clang",
        LDSHARED="clang -shared",
        CFLAGS=" ".join(CFLAGS),
        LDFLAGS=f"-fsanitize={SANITIZE}",
    )
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--force", "--parallel", "2"]
    cmd += ["--build-lib", str(lib), "--build-temp", str(BUILD / "obj")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    run_env = dict(
        os.environ,
        LD_PRELOAD=str(Path(atheris.path()) / "asan_with_fuzzer.so"),
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        PYTHONPATH=str(lib),
    )
    return lib, run_env


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_decode_fuzzer_finds_nothing(sanitized, tmp_path):
    lib, env = sanitized
    seconds = int(os.environ.get("FUZZ_SECONDS", "50"))
    work = tmp_path / "corpus"
    work.mkdir()
    seeds = sorted((FUZZ / "corpus").glob("*.frame"))
    assert 20 <= len(seeds) <= 60
    cmd = [
        sys.executable,
        str(FUZZ / "fuzz_decode.py"),
        f"-max_total_time={seconds}",
        "-timeout=10",  # seconds per input: a hang is a finding
        "-malloc_limit_mb=128",  # one allocation above this is a finding
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        f"-artifact_prefix={tmp_path}/",
        str(work),
        str(FUZZ / "corpus"),
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    out = done.stdout + done.stderr
    artifacts = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    found = f"artifacts in {tmp_path}: {artifacts}"
    assert done.returncode == 0 and not REPORTS.search(out), f"{found}\n{_tail(out)}"
    assert f"kernels: {lib}" in out  # the sanitized build was the one fuzzed
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    assert runs and int(runs.group(1)) >= len(seeds), _tail(out)
    print(_tail(out, 12))


def test_codec_tests_pass_under_sanitizers(sanitized, tmp_path):
    lib, env = sanitized
    tests = [str(ROOT / "tests" / name) for name in CODEC_TESTS]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests]
    # run from outside the checkout so that `import codec` finds the sanitized copy first
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and not REPORTS.search(out), _tail(out)
