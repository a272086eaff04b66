"""The library never imports its command-line tools or the benchmarks (bench/ may import nlfs, not
the other way round)."""

import ast
from pathlib import Path

NLFS = Path(__file__).resolve().parents[1] / "nlfs"
TOOLS = {"nlfs.tune", "nlfs.eliminate", "nlfs.transfer", "nlfs.evolve", "nlfs.heldout"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(NLFS.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` (or ``source`` as if it were there) imports: relative imports resolved,
    ``from pkg import name`` counting ``pkg.name`` too, since the name may be a module."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_library_modules_import_no_tool_and_nothing_imports_bench():
    bad = []
    for path in sorted(NLFS.rglob("*.py")):
        name = _module_name(path)
        for mod in _imports(path):
            if mod == "bench" or mod.startswith("bench."):
                bad.append(f"{name} imports {mod}")
            if name not in TOOLS and any(mod == t or mod.startswith(t + ".") for t in TOOLS):
                bad.append(f"{name} imports the tool {mod}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_relative_imports():
    assert "nlfs.tune.make_storage" in _imports(NLFS / "search/_x.py", "from ..tune import make_storage\n")
    assert "nlfs.tune" in _imports(NLFS / "search/_x.py", "from .. import tune\n")
    assert "bench._schema" in _imports(NLFS / "transfer.py", "from bench._schema import today\n")
