"""The layers of src/ckpt: no module imports from a layer above its own, and every
module says what it does in a docstring.

The layer table is docs/design.md's (the block after ``<!-- layers -->``): defined
there once, read here, so the doc a newcomer reads is the rule the suite enforces.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DESIGN = ROOT / "docs" / "design.md"


def read_layers(text: str) -> list[tuple[str, list[str]]]:
    """The table in ``text``: (layer name, module patterns) lowest first."""
    m = re.search(r"<!-- layers -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"{DESIGN}: no layer table (a fenced block after <!-- layers -->)"
    layers = []
    for line in m.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *patterns = line.split()
            layers.append((name, patterns))
    return layers


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((SRC / "ckpt").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The index of ``module``'s layer: an exact name wins over ``pkg.*`` (which covers
    ``pkg`` and everything under it), a longer ``pkg.*`` over a shorter one."""
    best: tuple[int, int] | None = None  # (specificity, layer index)
    for i, (_, patterns) in enumerate(layers):
        for p in patterns:
            if p == module:
                score = 10_000
            elif p.endswith(".*") and (module == p[:-2] or fnmatch.fnmatchcase(module, p)):
                score = len(p)
            else:
                continue
            if best is None or score > best[0]:
                best = (score, i)
    return None if best is None else best[1]


def imports_of(module: str, source: str, is_package: bool, modules: dict[str, Path]
               ) -> list[tuple[int, str]]:
    """(line, module of ckpt) for every import in ``module``'s source, functions' included."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if sub in modules else target))
    return [(line, m) for line, m in out if m == "ckpt" or m.startswith("ckpt.")]


LAYERS = read_layers(DESIGN.read_text())
MODULES = module_names()


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m, LAYERS) is None]
    assert not missing, (f"{', '.join(missing)}: in no layer; add to the table in "
                         "docs/design.md (and a sentence on what it does)")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    own = layer_of(module, LAYERS)
    if own is None:
        pytest.skip("in no layer (test_every_module_has_a_layer says so)")
    upward = []
    path = MODULES[module]
    for line, target in imports_of(module, path.read_text(), path.name == "__init__.py",
                                   MODULES):
        theirs = layer_of(target, LAYERS)
        if theirs is not None and theirs > own:
            upward.append(f"line {line}: {target} ({LAYERS[theirs][0]})")
    assert not upward, (f"{module} ({LAYERS[own][0]}) imports from a layer above: "
                        + "; ".join(upward))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_says_what_it_does(module):
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc and len(doc.split()) >= 5, f"{module}: no docstring saying what it does"


def test_the_rule_catches_an_upward_import():
    """The checker itself: a kernel module importing a resource is reported."""
    layers = [("low", ["ckpt.kernel.*"]), ("mid", ["ckpt.resources.*"]),
              ("top", ["ckpt.resources.files", "ckpt"])]
    assert layer_of("ckpt.kernel.libc", layers) == 0
    assert layer_of("ckpt.kernel", layers) == 0
    assert layer_of("ckpt.resources.pipes", layers) == 1
    assert layer_of("ckpt.resources.files", layers) == 2  # the exact name wins
    assert layer_of("ckpt.dumper", layers) is None
    modules = {"ckpt": Path("__init__.py"), "ckpt.resources.files": Path("files.py"),
               "ckpt.kernel.libc": Path("libc.py")}
    source = ("import os\nfrom ..resources import files\nfrom . import other\n"
              "def f():\n    from .. import x\n")
    got = imports_of("ckpt.kernel.libc", source, False, modules)
    assert got == [(2, "ckpt.resources.files"), (3, "ckpt.kernel"), (5, "ckpt")]
    assert layer_of(got[0][1], layers) > layer_of("ckpt.kernel.libc", layers)
