"""The layout of codec/csrc/: the kernels stand on their own, the bindings (module.c) sit on top of them.

- Every kernel file (every .c but module.c) includes no header of ours but internal.h, and not Python.h.
- No kernel file names a symbol that module.c defines with external linkage, and module.c defines none
  but the module's init function (its helpers are static): the kernels cannot reach module.c at all.
- With a C compiler: the kernel objects link into a shared library on their own, with no undefined symbol
  (no ss_malloc, CPU flag or Py* function expected from the bindings), and none of them leaves a symbol
  undefined that module.o defines.
- setup.py compiles every .c file of csrc/ (the sanitized fuzz build, tests/test_fuzz.py, runs setup.py
  too), runtime.c included.

The checks are functions of a directory, so that a test can show they catch a violation on a broken copy.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "codec" / "csrc"
BINDINGS = "module.c"
IDENT = r"[A-Za-z_]\w*"
KEYWORDS = {
    "struct",
    "union",
    "enum",
    "const",
    "volatile",
    "unsigned",
    "signed",
    "int",
    "char",
    "short",
    "long",
    "float",
    "double",
    "void",
    "inline",
    "register",
    "restrict",
    "_Thread_local",
    "__thread",
}
CFLAGS = ["-std=c11", "-O0", "-fPIC", "-ffp-contract=off", "-fno-strict-aliasing", "-w"]


# ---- source level -----------------------------------------------------------------------------------


def strip_c(src: str) -> str:
    """C source without comments, string and character literals (each left as a space or an empty pair)."""
    token = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)

    def blank(m: re.Match) -> str:
        text = m.group(0)
        if text.startswith("/"):
            return " " if text.startswith("//") else re.sub(r"[^\n]", " ", text)
        return text[0] * 2

    return token.sub(blank, src)


def external_definitions(src: str) -> set[str]:
    """Names of the functions and variables that a C file defines at file scope with external linkage
    (not static, not extern declarations or prototypes)."""
    code = strip_c(src)
    code = re.sub(r"\\\n", " ", code)  # macro continuation lines
    code = re.sub(r"^[ \t]*#[^\n]*", " ", code, flags=re.M)  # preprocessor lines
    code = re.sub(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)", " ", code)
    names: set[str] = set()
    depth, stmt = 0, []

    def declared(tokens: list[str], function: bool) -> None:
        if {"static", "extern", "typedef"} & set(tokens):
            return
        if function:  # the name before the parameter list
            names.add(
                next(t for t in reversed(tokens[: tokens.index("(")]) if re.fullmatch(IDENT, t))
            )
            return
        parts, cur, paren = [], [], 0  # declarators, split at commas outside parentheses
        for t in tokens:
            paren += {"(": 1, ")": -1}.get(t, 0)
            if t == "," and paren == 0:
                parts, cur = parts + [cur], []
            else:
                cur.append(t)
        for part in parts + [cur]:
            head = part[: part.index("=")] if "=" in part else part
            if "(" in head:
                at = head.index("(")
                if at + 2 < len(head) and head[at + 1] == "*":  # a function pointer: (*name)(...)
                    names.add(head[at + 2])
                continue  # else a prototype
            head = head[: head.index("[")] if "[" in head else head
            ids = [t for t in head if re.fullmatch(IDENT, t) and t not in KEYWORDS]
            if ids and not (
                head[0] in ("struct", "union", "enum") and len(ids) == 1 and "*" not in head
            ):
                names.add(ids[-1])

    for tok in re.findall(r"\w+|\S", code):
        if tok == "{":
            if depth == 0 and "(" in stmt and "=" not in stmt:
                declared(stmt, function=True)
                stmt = ["<function>"]
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0 and stmt == ["<function>"]:
                stmt = []
        elif depth == 0:
            if tok == ";":
                if stmt != ["<function>"]:
                    declared(stmt, function=False)
                stmt = []
            elif stmt != ["<function>"]:
                stmt.append(tok)
    return names


def identifiers(src: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", strip_c(src)))


def layout_violations(csrc: Path) -> list[str]:
    """What breaks the layout in csrc (a copy of codec/csrc/ or the real one); empty if nothing."""
    found = []
    bindings = (csrc / BINDINGS).read_text()
    exported = external_definitions(bindings)
    if exported - {"PyInit__kernels"}:
        found.append(f"{BINDINGS} defines non-static {sorted(exported - {'PyInit__kernels'})}")
    for path in sorted(csrc.glob("*.c")):
        if path.name == BINDINGS:
            continue
        src = path.read_text()
        ours = re.findall(r'^\s*#\s*include\s*"([^"]+)"', src, re.M)
        if ours != ["internal.h"]:
            found.append(f"{path.name} includes {ours}, not internal.h alone")
        if re.search(r"^\s*#\s*include\s*[<\"]Python\.h", src, re.M):
            found.append(f"{path.name} includes Python.h")
        reached = identifiers(src) & exported
        if reached:
            found.append(f"{path.name} references {sorted(reached)}, defined in {BINDINGS}")
    header = (csrc / "internal.h").read_text()
    if re.search(r"^\s*#\s*include\s*[<\"]Python\.h", header, re.M):
        found.append("internal.h includes Python.h")
    return found


def test_definitions_parser_sees_external_and_skips_static():
    src = """
    #define HELPER(x) x
    int counter = 0, other;
    static int hidden;
    extern int elsewhere;
    typedef struct { int a; } Thing;
    static const char *names[] = {"a{", "b"};
    void *(*hook)(unsigned long) = 0;
    int proto(int);
    struct Later;
    enum { RED, GREEN };
    int table[4][2] = {{1, 2}};
    static int helper(void) { return 1; }
    __attribute__((target("avx2"))) int vector_path(const char *s) { if (s) { return 1; } return 0; }
    PyMODINIT_FUNC PyInit__kernels(void) { return 0; }
    """
    assert external_definitions(src) == {
        "counter",
        "other",
        "hook",
        "table",
        "vector_path",
        "PyInit__kernels",
    }


def test_csrc_layout():
    assert layout_violations(CSRC) == []


def test_layout_check_catches_a_kernel_reaching_module_c(tmp_path):
    """The allocator defined in the bindings again (as it was before runtime.c): the check names it."""
    broken = tmp_path / "csrc"
    shutil.copytree(CSRC, broken)
    module = broken / BINDINGS
    module.write_text(
        module.read_text()
        + "\nvoid *ss_malloc(size_t n) { return PyMem_RawMalloc(n); }\nint cpu_has_avx2 = 0;\n"
    )
    found = layout_violations(broken)
    assert any("defines non-static ['cpu_has_avx2', 'ss_malloc']" in f for f in found), found
    assert any(f.startswith("rans_encode.c references") and "ss_malloc" in f for f in found), found
    assert any(f.startswith("quantize.c references ['cpu_has_avx2']") for f in found), found
    (broken / "stats.c").write_text('#include "module.h"\n' + (broken / "stats.c").read_text())
    assert any(
        f.startswith("stats.c includes ['module.h', 'internal.h']")
        for f in layout_violations(broken)
    )


def test_setup_compiles_every_csrc_file():
    tree = ast.parse((ROOT / "setup.py").read_text())
    sources = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "SOURCES" for t in node.targets)
    )
    assert sorted(sources) == sorted(p.name for p in CSRC.glob("*.c"))
    assert "runtime.c" in sources


# ---- object level -----------------------------------------------------------------------------------


def _compile(cc: str, src: Path, out: Path, include: Path) -> Path:
    obj = out / (src.stem + ".o")
    cmd = [
        cc,
        *CFLAGS,
        "-I",
        str(include),
        "-I",
        sysconfig.get_paths()["include"],
        "-c",
        str(src),
        "-o",
        str(obj),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return obj


def _symbols(obj: Path, undefined: bool) -> set[str]:
    cmd = ["nm", "-g", "--undefined-only" if undefined else "--defined-only", str(obj)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in done.stdout.splitlines() if line.strip()}


def _link_alone(cc: str, objs: list[Path], out: Path) -> subprocess.CompletedProcess:
    cmd = [
        cc,
        "-shared",
        "-o",
        str(out / "kernels_alone.so"),
        *map(str, objs),
        "-Wl,--no-undefined",
        "-lm",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> tuple[str, dict[str, Path]]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or shutil.which("nm") is None:
        pytest.skip("no C compiler or nm")
    out = tmp_path_factory.mktemp("csrc-objects")
    sources = sorted(CSRC.glob("*.c"))
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda p: _compile(cc, p, out, CSRC), sources))
    return cc, {p.name: o for p, o in zip(sources, built, strict=True)}


def test_kernel_objects_link_without_the_bindings(objects, tmp_path):
    cc, objs = objects
    kernels = [o for name, o in objs.items() if name != BINDINGS]
    done = _link_alone(cc, kernels, tmp_path)
    assert done.returncode == 0, done.stderr
    exported = _symbols(objs[BINDINGS], undefined=False)
    for name, obj in objs.items():
        if name != BINDINGS:
            needed = _symbols(obj, undefined=True)
            assert not needed & exported, (name, sorted(needed & exported))
            assert not {s for s in needed if s.startswith(("Py", "_Py"))}, name


def test_link_check_catches_a_missing_runtime(objects, tmp_path):
    """runtime.c without its allocator (as if ss_malloc were still in the bindings): the kernels no longer
    link alone."""
    cc, objs = objects
    src = tmp_path / "src"
    src.mkdir()
    text = (CSRC / "runtime.c").read_text()
    text, count = re.subn(r"^void \*ss_malloc\(size_t n\) \{[^\n]*\}$", "", text, flags=re.M)
    assert count == 1
    (src / "runtime.c").write_text(text)
    runtime = _compile(cc, src / "runtime.c", src, CSRC)
    kernels = [
        runtime if name == "runtime.c" else o for name, o in objs.items() if name != BINDINGS
    ]
    done = _link_alone(cc, kernels, tmp_path)
    assert done.returncode != 0 and "ss_malloc" in done.stderr
