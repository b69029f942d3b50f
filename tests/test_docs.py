"""The documentation: the mkdocs site builds strictly and offline, the configuration reference is the
schema's, and every code example in README.md and docs/ runs.

Examples are fenced blocks. ``python`` blocks run in this process (a temporary working directory
holding ``configs/``; blocks that stream share one local Ray); ``bash``/``sh`` blocks run as bash
scripts with ``.venv/bin`` first on PATH and a temporary HOME; ``yaml`` blocks must parse; ``text``
blocks are diagrams and listings. HTML comments right above a block steer it:

- ``<!-- not-run: REASON -->``: not run; the reason says why (a reason that names
  ``tests/FILE.py::TEST`` must name a test that exists);
- ``<!-- needs: my_photos -->``: the working directory first gets a folder of 24 JPEG photographs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from benchmarks import docs_reference

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell"}
LANGS = {"python", "yaml", "text", *SHELL}
RAY_USERS = ("Stream(", "run_pipeline(")

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<kind>[\w-]+):?\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block of a document."""

    path: Path
    line: int
    lang: str
    code: str
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, each with the HTML comments directly above it."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        notes: dict[str, str] = {}
        j = i - 1
        while j >= 0 and (c := _COMMENT.match(lines[j])):
            notes.setdefault(c["kind"], c["text"])
            j -= 1
        indent, end = len(m["indent"]), i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(ln[indent:] for ln in lines[i + 1 : end]) + "\n"
        out.append(Block(path, i + 1, m["lang"], code, notes))
        i = end + 1
    return out


ALL = [b for p in DOCUMENTS for b in blocks(p)]
# a block that appears twice (README.md and a page) runs once
RUN = list({(b.lang, b.code, b.notes.get("needs")): b for b in reversed(ALL)
            if "not-run" not in b.notes}.values())[::-1]  # fmt: skip
PYTHON = [pytest.param(b, id=b.id) for b in RUN if b.lang == "python"]
SHELL_RUN = [pytest.param(b, id=b.id) for b in RUN if b.lang in SHELL]


def test_the_examples_were_found():
    assert len(ALL) > 30 and PYTHON and SHELL_RUN
    assert (REPO / "README.md").read_text().count("\n") <= 300, "README.md: keep it under 300 lines"


def test_every_block_names_a_known_language():
    bad = [f"{b.id} ```{b.lang}" for b in ALL if b.lang not in LANGS]
    assert not bad, f"fenced blocks need one of {sorted(LANGS)}: {bad}"


def test_examples_not_run_say_why():
    for b in ALL:
        reason = b.notes.get("not-run")
        if reason is None:
            continue
        assert len(reason.split()) >= 3, f"{b.id}: give a reason: <!-- not-run: REASON -->"
        for file, test in re.findall(r"(tests/\w+\.py)::(\w+)", reason):
            assert f"def {test}(" in (REPO / file).read_text(), f"{b.id}: no {file}::{test}"


def test_one_command_name_everywhere():
    """The CLI is ``splitstream``; ``python -m pipeline`` is only named as the old spelling."""
    old = [f"{p.relative_to(REPO)}: {ln.strip()}" for p in DOCUMENTS
           for ln in p.read_text().splitlines()
           if re.search(r"python -m pipeline(?![.\w])", ln) and "old" not in ln]  # fmt: skip
    assert not old, old


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in ALL if b.lang == "yaml"])
def test_yaml_examples_parse(block):
    assert yaml.safe_load(block.code) is not None


# ------------------------------------------------------------------ the site and the reference


def test_mkdocs_builds_strictly_and_offline(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env[var] = "http://127.0.0.1:9"  # any fetch fails at once: the build must not need one
    site = tmp_path / "site"
    run = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert (site / "index.html").is_file() and (
        site / "reference/configuration/index.html"
    ).is_file()
    assert (site / "results/codec.png").is_file(), "the benchmark plots are served by the hook"


def test_configuration_reference_is_generated_from_the_schema():
    page = docs_reference.PAGE.read_text()
    assert page == docs_reference.render(), "run python -m benchmarks.docs_reference"
    assert not docs_reference.stale_descriptions(), "DESCRIPTIONS names keys the schema lacks"


def _schema_keys(model, prefix: str = "") -> list[str]:
    """Every dotted key of a pydantic model, walked independently of the generator."""
    import typing

    from pydantic import BaseModel

    def models(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        return [m for a in typing.get_args(ann) for m in models(a)]

    out = []
    for name, f in model.model_fields.items():
        key = prefix + name
        subs = models(f.annotation)
        if (
            not subs
            or typing.get_origin(f.annotation) is list
            or len(typing.get_args(f.annotation)) > 1
        ):
            out.append(key)
        sep = "[i]." if typing.get_origin(f.annotation) is list else "."
        for sub in subs:
            out += _schema_keys(sub, key + sep)
    return out


def test_every_config_key_is_in_the_reference():
    from pipeline.stream.config import PipelineConfig

    page = docs_reference.PAGE.read_text()
    keys = _schema_keys(PipelineConfig)
    assert len(keys) > 80
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"keys missing from {docs_reference.PAGE.name}: {missing}"


def test_an_undescribed_key_fails_the_generator(monkeypatch):
    from pydantic import create_model

    from pipeline.stream.config import PipelineConfig

    extended = create_model("Extended", __base__=PipelineConfig, zz_new_key=(int, 0))
    monkeypatch.setattr(docs_reference, "_root", lambda: extended)
    with pytest.raises(docs_reference.ReferenceError_, match="zz_new_key"):
        docs_reference.render()
    monkeypatch.setitem(docs_reference.DESCRIPTIONS, "zz_new_key", "A key for this test.")
    assert "| `zz_new_key` | int | `0` |  | A key for this test. |" in docs_reference.render()


# ------------------------------------------------------------------ running the examples


def _workdir(tmp_path: Path, block: Block) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    for need in filter(None, re.split(r"[,\s]+", block.notes.get("needs", ""))):
        if need == "my_photos":
            from pipeline.models.photos import write_jpeg_photos

            write_jpeg_photos(work / "my_photos", 24, seed=3, sizes=(120, 200))
        else:
            raise AssertionError(f"{block.id}: unknown <!-- needs: {need} -->")
    return work


@pytest.mark.parametrize("block", SHELL_RUN)
def test_shell_example_runs(block, tmp_path):
    work = _workdir(tmp_path, block)
    home = Path.home()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),  # `~/...` in an example stays in the temporary folder
        "SPLITSTREAM_CACHE": os.environ.get("SPLITSTREAM_CACHE", str(home / ".cache/splitstream")),
        "TORCH_HOME": os.environ.get("TORCH_HOME", str(home / ".cache/torch")),
        "HF_HOME": os.environ.get("HF_HOME", str(home / ".cache/huggingface")),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    script = "set -euo pipefail\n" + block.code
    run = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, (
        f"{block.id} failed:\n{block.code}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", PYTHON)
def test_python_example_runs(block, tmp_path, monkeypatch, request):
    if any(s in block.code for s in RAY_USERS):
        request.getfixturevalue("ray_local")  # one local Ray for this module's streams
    work = _workdir(tmp_path, block)
    monkeypatch.chdir(work)
    # a module name nothing can import: Ray pickles functions defined here by value
    scope = {"__name__": f"docs_example_{abs(hash(block.id))}"}
    exec(compile(block.code, block.id, "exec"), scope)
