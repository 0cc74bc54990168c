"""The layout the README and docs/architecture.md describe is the tree: subpackages listed, no module over
300 lines, at most 10 top-level modules, no import cycles between modules nor between packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("adaprune_edge", "cli", "exporters")
MAX_LINES = 300
MAX_TOP_LEVEL = 10  # modules directly in adaprune_edge/ besides __init__.py


def _modules() -> dict[str, Path]:
    out = {}
    for base in SOURCES:
        for p in (ROOT / base).rglob("*.py"):
            if any((ROOT / x).is_symlink() for x in p.relative_to(ROOT).parents):
                continue  # cli/, exporters/ linked into the package in a clone are counted once, at their own path
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[0] != "adaprune_edge":
                parts = ["adaprune_edge"] + parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def test_readme_layout_lists_every_subpackage_and_nothing_else():
    block = ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    listed = set(re.findall(r"^  (\w+)/", block, flags=re.M))
    # (a clone may link cli/, exporters/, device_profiles/ into the package: those are not subpackages)
    actual = {p.parent.name for p in (ROOT / "adaprune_edge").glob("*/__init__.py") if not p.parent.is_symlink()}
    assert listed == actual
    for top in re.findall(r"^(\w+)/", block, flags=re.M):
        assert (ROOT / top).is_dir(), top


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_at_most_ten_top_level_modules():
    top = sorted(p.name for p in (ROOT / "adaprune_edge").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL, top


def _package(module: str) -> str:
    """adaprune_edge.prune.obs → 'prune'; a top-level module is its own node ('models')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> list[str] | None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return path[path.index(d):] + [n, d] if d in path else path + [n, d]
            if d not in state and (found := visit(d, path + [n])):
                return found
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n, [])):
            return found
    return None


def test_packages_have_no_import_cycles():
    """Every import (lazy ones inside functions too) between packages: the package graph is a DAG, so a
    low-level package (runtime, gguf, archs) never reaches up into a high-level one (evaluate, pipeline)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        src = _package(m)
        graph.setdefault(src, set())
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adaprune_edge"):
                for a in node.names:
                    dep = f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                    if dep in mods and (d := _package(dep)) not in (src, "<root>"):
                        graph[src].add(d)
                        graph.setdefault(d, set())
    assert _cycle(graph) is None, "package import cycle: " + " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_module_level_imports_have_no_cycles():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adaprune_edge"):
                for a in node.names:
                    dep = f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                    if dep in mods and dep != m:
                        graph[m].add(dep)
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_pyproject_lists_every_subpackage():
    text = ROOT.joinpath("pyproject.toml").read_text()
    for p in (ROOT / "adaprune_edge").glob("*/__init__.py"):
        if not p.parent.is_symlink():
            assert f'"adaprune_edge.{p.parent.name}"' in text, p.parent.name  # a wheel would leave it out


HF_LAYOUT = ("self_attn", "mlp", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _layout_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every HF module-layout name in code: Name ids, attributes (and `model.model.layers`),
    arguments and string constants that are not docstrings (comments are not in the AST)."""
    word = re.compile(r"\b(" + "|".join(HF_LAYOUT) + r")\b")
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in HF_LAYOUT:
            found.append((n.lineno, n.id))
        elif isinstance(n, ast.arg) and n.arg in HF_LAYOUT:
            found.append((n.lineno, n.arg))
        elif isinstance(n, ast.Attribute) and n.attr in HF_LAYOUT:
            found.append((n.lineno, n.attr))
        elif (isinstance(n, ast.Attribute) and n.attr == "layers" and isinstance(n.value, ast.Attribute)
              and n.value.attr == "model"):
            found.append((n.lineno, "model.model.layers"))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and word.search(n.value):
            found.append((n.lineno, repr(n.value[:40])))
    return found


def test_only_archs_knows_the_hf_module_layout():
    """Outside adaprune_edge/archs/ code reaches decoder layers and projections through the family's adapter
    (`layers`, `linear(layer, role)` with GGUF roles), so a family with another layout needs only an adapter."""
    files = [p for p in _modules().values() if "archs" not in p.relative_to(ROOT).parts[:2]]
    files += sorted((ROOT / "bench").rglob("*.py"))
    leaks = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in files for line, name in _layout_names(ast.parse(p.read_text()))]
    assert leaks == []


def test_layout_finder_sees_code_not_docstrings():
    src = '"""self_attn in a docstring"""\n# q_proj in a comment\nx = layer.self_attn\ny = m.model.layers\nz = "mlp.up_proj"\n'
    assert [name for _, name in _layout_names(ast.parse(src))] == ["self_attn", "model.model.layers", "'mlp.up_proj'"]
