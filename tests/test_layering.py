"""The package's import graph has no cycles, and no module imports another module's private names.

The intended layering (``/work/shared/STYLE.md``, issue 15): data -> models -> rollout / forcing ->
training -> evaluation -> comparison -> cli, with the fast paths (``dsrecon.fast``) below training.
Every ``import`` statement counts, at module level and inside functions alike (a deferred import
hides a cycle from the interpreter, not from the design). Walked with :mod:`ast`, nothing is
imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dsrecon"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, source: str, is_pkg: bool, modules) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every import statement of one module.

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module of the package
    (a submodule), else of ``a.b`` with name ``c``; relative imports are resolved against ``name``.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = []
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    out.append((f"{base}.{alias.name}", [], node.lineno))
                else:
                    names.append(alias.name)
            if names:
                out.append((base, names, node.lineno))
    return out


def _packages_run(importer: str, target: str, modules) -> list[str]:
    """The modules an import of ``target`` executes: ``target`` and every package above it (their
    ``__init__``), except the packages above ``importer`` itself (already initialised by then)."""
    parts = target.split(".")
    run = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    return [m for m in run if m in modules and (m == target or m not in own)]


def _is_lazy(path: Path) -> bool:
    """A package ``__init__`` that defines a module ``__getattr__``: its names load on first use."""
    return any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
               for node in ast.parse(path.read_text()).body)


def _graph() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """Edges between the package's modules (importer -> imported), the private-name imports, and
    the imports of a lazy package's re-exported names from inside the package."""
    modules = _modules()
    lazy = {name for name, path in modules.items() if path.name == "__init__.py" and _is_lazy(path)}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private, through_lazy = [], []
    for name, path in modules.items():
        for target, names, line in _imports(name, path.read_text(), path.name == "__init__.py", modules):
            if target not in modules:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: from {target} import"
            edges[name].update(m for m in _packages_run(name, target, modules) if m != name)
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__"):
                    private.append(f"{where} {imported}")
                elif target in lazy and target != name:
                    through_lazy.append(f"{where} {imported}")
    return edges, private, through_lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_walker_sees_submodules_parents_and_function_level_imports():
    """The walker's rules on a made-up module ``dsrecon.fast.x`` of the real package."""
    modules = _modules()
    source = "import os\nfrom dsrecon.fast import _kernels, radam\nfrom .ensemble import EnsembleShPLRNN\n" \
             "def f():\n    from dsrecon.models.plrnn import ShPLRNN\n    from ..data import load\n"
    found = _imports("dsrecon.fast.x", source, False, modules)
    assert [(t, n) for t, n, _ in found] == [
        ("os", []), ("dsrecon.fast._kernels", []), ("dsrecon.fast.radam", []),
        ("dsrecon.fast.ensemble", ["EnsembleShPLRNN"]), ("dsrecon.models.plrnn", ["ShPLRNN"]),
        ("dsrecon.data", ["load"])]
    # importing a submodule runs the packages above it, except the importer's own
    assert _packages_run("dsrecon.rollout", "dsrecon.fast._kernels", modules) == ["dsrecon.fast",
                                                                                   "dsrecon.fast._kernels"]
    assert _packages_run("dsrecon.fast.x", "dsrecon.fast._kernels", modules) == ["dsrecon.fast._kernels"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    edges, _, _ = _graph()
    cycles = _cycles(edges)
    detail = []
    for component in cycles:
        inside = set(component)
        detail.append(" <-> ".join(component) + "\n    " + "\n    ".join(
            f"{a} -> {b}" for a in component for b in sorted(edges[a] & inside)))
    assert not cycles, "import cycles in dsrecon:\n" + "\n".join(detail)


def test_no_private_imports_across_modules():
    _, private, _ = _graph()
    assert not private, "private names imported from another module:\n" + "\n".join(private)


def test_package_code_imports_from_defining_modules():
    """A lazy package (``__getattr__`` in its ``__init__``, e.g. ``dsrecon.fast``) loads its names on
    first use, which the graph above cannot see; code inside dsrecon imports them from the module
    that defines them, so every real dependency is an edge."""
    _, _, through_lazy = _graph()
    assert not through_lazy, "import from the defining module instead:\n" + "\n".join(through_lazy)
