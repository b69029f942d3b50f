"""The packages form layers, ``codec`` <- ``pipeline`` <- ``actors`` <- ``splitstream``: each imports
only the layers below it, counting imports inside functions too, so there is no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("codec", "pipeline", "actors", "splitstream")


def imported_packages(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """For every module of ``package``: which of our packages it imports (anywhere in the file)."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(root))] = names & set(LAYERS)
    return out


@pytest.mark.parametrize("package", LAYERS)
def test_each_layer_imports_only_the_layers_below(package):
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    bad = {m: sorted(p - allowed) for m, p in imported_packages(package).items() if p - allowed}
    assert not bad, f"{package} reaches up the layers: {bad}"


def test_the_package_graph_has_no_cycle():
    edges = {p: set().union(*imported_packages(p).values()) - {p} for p in LAYERS}
    seen: set[str] = set()

    def visit(p: str, path: tuple[str, ...]) -> None:
        assert p not in path, f"import cycle: {' -> '.join((*path, p))}"
        if p in seen:
            return
        for q in edges[p]:
            visit(q, (*path, p))
        seen.add(p)

    for p in LAYERS:
        visit(p, ())
    assert "actors" not in edges["pipeline"] and "pipeline" in edges["actors"]


def test_the_scan_sees_imports_inside_functions(tmp_path):
    # the check itself: a lazy import of a higher layer, inside a function, must be caught
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "x.py").write_text("def f():\n    from actors import Encoder\n")
    assert imported_packages("pipeline", tmp_path) == {"pipeline/x.py": {"actors"}}


POLICIES = ("results", "output", "checkpoint", "stopping", "feeder", "sources")
"""The stream's I/O policies: the driver calls them, they never call back into it (or into Ray)."""


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("policy", POLICIES)
def test_the_io_policies_import_neither_the_executor_nor_ray(policy):
    base = REPO / "pipeline" / "stream"
    paths = (
        sorted((base / policy).rglob("*.py"))
        if (base / policy).is_dir()
        else [base / f"{policy}.py"]
    )
    assert paths and all(p.is_file() for p in paths)
    for p in paths:
        bad = {m for m in _imported_modules(p) if m.startswith(("pipeline.stream.executor", "ray"))}
        assert not bad, f"{p.relative_to(REPO)} imports {sorted(bad)}"


MAX_LINES = 500
LONG_FILES_ALLOWED: set[str] = set()
"""Files of ``pipeline/stream/`` allowed past :data:`MAX_LINES` for now."""


def test_no_stream_module_is_over_500_lines():
    # a module that grows past this splits by concept (as report/, config_schema, outages did)
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted((REPO / "pipeline" / "stream").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    bad = {p: n for p, n in long.items() if p not in LONG_FILES_ALLOWED}
    assert not bad, f"over {MAX_LINES} lines (split them by concept): {bad}"


DRIVER = REPO / "pipeline" / "stream" / "driver"
RAY_CALLS = "pipeline.stream.driver.ray_calls"
"""The one module of the driver that calls Ray."""


@pytest.mark.parametrize(
    "path", sorted(p.name for p in DRIVER.glob("*.py") if p.name != "ray_calls.py")
)
def test_the_driver_policies_import_neither_ray_nor_the_executor(path):
    bad = {
        m
        for m in _imported_modules(DRIVER / path)
        if m.startswith(("pipeline.stream.executor", "ray", RAY_CALLS))
    }
    assert not bad, f"pipeline/stream/driver/{path} imports {sorted(bad)}"


def test_the_executor_reaches_ray_only_through_ray_calls():
    mods = _imported_modules(REPO / "pipeline" / "stream" / "executor.py")
    assert not {m for m in mods if m == "ray" or m.startswith("ray.")}
    assert RAY_CALLS in mods


MAX_EXECUTOR_LINES = 300


def test_the_executor_is_a_short_loop():
    # the driver's policies live in pipeline/stream/driver/; StreamExecutor only sequences them
    tree = ast.parse((REPO / "pipeline" / "stream" / "executor.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "StreamExecutor"]
    assert cls.end_lineno - cls.lineno + 1 <= MAX_EXECUTOR_LINES
