"""The package's layering, read from the source with ``ast`` (nothing is imported):

(a) the library never imports a command-line tool, the tools' CLI toolkit or ``bench/``, and no
    module under ``nlfs/`` imports ``bench/``;
(b) no two modules under ``nlfs/`` import each other, counting every import statement at any level
    (a function-level import is still an import);
(c) no module under ``nlfs/`` imports another package's underscored module: a package's private
    modules are for itself and the packages inside it; others use its public face (``__all__``);
(d) no test file defines a fixture that ``tests/conftest.py`` already defines, by name or as a copy
    of its body under another name;
(e) no helper function (module level, neither a test nor a fixture) is copied into a second test file,
    under any name, even where a copy passes its parameters on differently (``Search(cfg)`` and
    ``Search(cfg, resume=resume)``): shared helpers live in one module (``tests/runs.py``,
    ``tests/processes.py``).
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The command-line tools and their toolkit: the library sits below them. Entry points
# (``__main__`` modules, e.g. ``python -m nlfs.train``) are tools too. Tools may import each other.
TOOLS = frozenset({"nlfs.tune", "nlfs.eliminate", "nlfs.transfer", "nlfs.evolve", "nlfs.heldout", "nlfs._cli"})



# ---------------------------------------------------------------- the import graph
def modules(root: Path, package: str = "nlfs") -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every ``.py`` file under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path, is_package)
    return out


def imported_names(name: str, path: Path, is_package: bool, known: set[str] | dict) -> set[str]:
    """Every module ``name`` imports, at any level of the file: ``import a.b`` names ``a.b``;
    ``from a import x`` names ``a.x`` where that is a module, else ``a``; relative imports are
    resolved against ``name``'s package."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module under ``nlfs/`` -> the ``nlfs`` and ``bench`` modules it imports."""
    mods = modules(root)
    bench = modules(root, "bench") if (root / "bench").is_dir() else {}
    known = mods.keys() | bench.keys()
    graph = {}
    for name, (path, is_package) in mods.items():
        graph[name] = {m for m in imported_names(name, path, is_package, known)
                       if m != name and m.split(".")[0] in ("nlfs", "bench")}
    return graph


def is_tool(module: str) -> bool:
    """A tool, a module of a tool's package (``nlfs.transfer._run``), or an entry point."""
    in_tool = module.startswith(tuple(t + "." for t in TOOLS))
    return module in TOOLS or in_tool or module.rpartition(".")[2] == "__main__"


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported): a library module importing a tool, or any module importing bench/."""
    bad = set()
    for a, targets in graph.items():
        for b in targets:
            if b.split(".")[0] == "bench" or (not is_tool(a) and is_tool(b)):
                bad.add((a, b))
    return bad


def circles(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Pairs of modules that import each other, each in sorted order."""
    return {tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())}


def is_private(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last.startswith("_") and not last.startswith("__")


def private_reaches(graph: dict[str, set[str]], packages: set[str]) -> set[tuple[str, str]]:
    """(importer, imported): an underscored module imported from outside its package, i.e. from a
    module whose own package is neither that package nor inside it (``nlfs._io`` serves all of
    ``nlfs``; ``nlfs.search._report`` only ``nlfs.search``)."""
    bad = set()
    for a, targets in graph.items():
        own = a if a in packages else a.rpartition(".")[0]
        for b in targets:
            home = b.rpartition(".")[0]
            if is_private(b) and b.split(".")[0] == "nlfs" and not (own + ".").startswith(home + "."):
                bad.add((a, b))
    return bad




# ---------------------------------------------------------------- fixtures
def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture")


def fixtures(path: Path) -> dict[str, ast.FunctionDef]:
    """Fixture name (``name=`` where given) -> its definition, for the fixtures ``path`` defines."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            if _is_fixture(dec):
                name = node.name
                if isinstance(dec, ast.Call):
                    for kw in dec.keywords:
                        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                            name = kw.value.value
                out[name] = node
    return out


class _Anonymous(ast.NodeTransformer):
    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        node.arg = "_"
        return node


class _PassThroughDropped(_Anonymous):
    """Also drops keyword arguments that pass a variable on (``resume=resume``), so copies of a helper
    that differ only in which parameters they forward look alike; keywords with values stay (two
    configurations built alike from different settings are different helpers)."""

    def visit_Call(self, node):
        node.keywords = [k for k in node.keywords if not isinstance(k.value, ast.Name)]
        return self.generic_visit(node)


def body_shape(fn: ast.FunctionDef, anonymous: type[ast.NodeTransformer] = _Anonymous) -> str:
    """The function's body without its docstring, with every variable named alike."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    module = ast.Module(body=[anonymous().visit(copy.deepcopy(stmt)) for stmt in body], type_ignores=[])
    return ast.dump(module, annotate_fields=False)


def copied_fixtures(tests: Path) -> list[str]:
    """``file: name`` for each fixture outside ``tests/conftest.py`` that redefines one of its
    fixtures, by name or with the same body."""
    shared = fixtures(tests / "conftest.py")
    shapes = {body_shape(fn): name for name, fn in shared.items()}
    found = []
    for path in sorted(tests.rglob("*.py")):
        if path == tests / "conftest.py":
            continue
        for name, fn in fixtures(path).items():
            if name in shared:
                found.append(f"{path.relative_to(tests.parent)}: {name} (defined in tests/conftest.py)")
            elif body_shape(fn) in shapes:
                found.append(f"{path.relative_to(tests.parent)}: {name} (a copy of {shapes[body_shape(fn)]} "
                             "in tests/conftest.py)")
    return found


def helpers(path: Path) -> list[ast.FunctionDef]:
    """The module-level functions of a test file that are neither tests nor fixtures."""
    tree = ast.parse(path.read_text(), str(path))
    return [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not node.name.startswith("test") and not any(_is_fixture(d) for d in node.decorator_list)]


def copied_helpers(tests: Path) -> list[str]:
    """``file: name, file: name`` for each helper function whose body (``_PassThroughDropped``) is in more
    than one test file."""
    seen: dict[str, list[tuple[Path, str]]] = {}
    for path in sorted(tests.rglob("*.py")):
        for fn in helpers(path):
            seen.setdefault(body_shape(fn, _PassThroughDropped), []).append((path, fn.name))
    return [", ".join(f"{p.relative_to(tests.parent)}: {name}" for p, name in where)
            for where in seen.values() if len({p for p, _ in where}) > 1]


# ---------------------------------------------------------------- the checks
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_the_library_imports_no_tool_and_nothing_imports_bench(graph):
    bad = sorted(upward_imports(graph))
    assert not bad, "imports from the library up into a tool or bench/: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_no_two_modules_import_each_other(graph):
    bad = sorted(circles(graph))
    assert not bad, "modules that import each other: " + ", ".join(f"{a} <-> {b}" for a, b in bad)


def test_no_module_reaches_into_another_packages_private_modules(graph):
    packages = {name for name, (_, is_package) in modules(ROOT).items() if is_package}
    found = private_reaches(graph, packages)
    bad = sorted(found)
    assert not bad, ("imports of another package's underscored module (use its public face): "
                     + ", ".join(f"{a} -> {b}" for a, b in bad))


def test_no_test_file_copies_a_conftest_fixture():
    found = copied_fixtures(ROOT / "tests")
    assert not found, "fixtures that tests/conftest.py already defines: " + "; ".join(found)


def test_no_helper_function_is_copied_between_test_files():
    found = copied_helpers(ROOT / "tests")
    assert not found, "helper functions copied between test files (move them to one module): " + "; ".join(found)


# ---------------------------------------------------------------- the checks catch what they should
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_import_checks_see_function_level_and_relative_imports(tmp_path):
    root = _tree(tmp_path, {
        "nlfs/__init__.py": "from . import expr\n",
        "nlfs/tune.py": "from .expr import parse\nimport bench.report\n",
        "nlfs/expr/__init__.py": "from ._node import Expr\n",
        "nlfs/expr/_node.py": "def canonical():\n    from ._canonical import rules\n",
        "nlfs/expr/_canonical.py": "from . import _node\n",
        "nlfs/search/__init__.py": "",
        "nlfs/search/_taylor.py": "def f():\n    from ..tune import finished\n",
        "nlfs/search/_runner.py": "import nlfs.tune\n",
        "nlfs/search/__main__.py": "from nlfs import tune\n",
        "bench/__init__.py": "",
        "bench/report.py": "",
    })
    g = import_graph(root)
    assert g["nlfs.expr._canonical"] == {"nlfs.expr._node"}  # `from . import x` names the module x
    assert circles(g) == {("nlfs.expr._canonical", "nlfs.expr._node")}
    assert upward_imports(g) == {("nlfs.search._taylor", "nlfs.tune"), ("nlfs.search._runner", "nlfs.tune"),
                                 ("nlfs.tune", "bench.report")}  # an entry point may import a tool


def test_the_private_import_check_allows_own_and_enclosing_packages_only(tmp_path):
    root = _tree(tmp_path, {
        "nlfs/__init__.py": "from ._io import write\n",
        "nlfs/_io.py": "",
        "nlfs/tune.py": "def f():\n    from .search._report import top\n",
        "nlfs/expr/__init__.py": "from ._node import Expr\n",
        "nlfs/expr/_node.py": "",
        "nlfs/search/__init__.py": "from ._report import top\n",
        "nlfs/search/_report.py": "from .._io import write\nfrom ..expr import _node\n",
    })
    g = import_graph(root)
    packages = {name for name, (_, is_package) in modules(root).items() if is_package}
    assert private_reaches(g, packages) == {("nlfs.tune", "nlfs.search._report"),
                                            ("nlfs.search._report", "nlfs.expr._node")}


def test_the_fixture_check_sees_names_and_copies(tmp_path):
    shared = ("import pytest\n\n@pytest.fixture\ndef one_thread():\n    before = get()\n    set(1)\n"
              "    yield\n    set(before)\n")
    tests = _tree(tmp_path, {
        "tests/conftest.py": shared,
        "tests/a/conftest.py": shared.replace("before", "old") + "\n@pytest.fixture\ndef other():\n    return 1\n",
        "tests/test_b.py": "import pytest\n\n@pytest.fixture(name='one_thread')\ndef f():\n    return 2\n",
    }) / "tests"
    assert copied_fixtures(tests) == ["tests/a/conftest.py: one_thread (defined in tests/conftest.py)",
                                      "tests/test_b.py: one_thread (defined in tests/conftest.py)"]
    (tests / "a/conftest.py").write_text(shared.replace("before", "old").replace("one_thread", "_one"))
    (tests / "test_b.py").unlink()
    assert copied_fixtures(tests) == ["tests/a/conftest.py: _one (a copy of one_thread in tests/conftest.py)"]


def test_the_helper_check_sees_copies_that_forward_parameters_differently(tmp_path):
    run = ("def _run(cfg, executor=None, resume=False):\n    s = Search(cfg, resume=resume)\n    try:\n"
           "        return s.run(executor=executor)\n    finally:\n        s.close()\n")
    tests = _tree(tmp_path, {
        "tests/test_a.py": run + "\n\ndef _cfg(d):\n    return SearchConfig(run_dir=d, budget=3)\n",
        "tests/search/test_b.py": run.replace("_run(cfg, executor=None, resume=False)", "run(c)")
        .replace("cfg, resume=resume", "c").replace("executor=executor", "")
        + "\n\ndef _cfg(d):\n    return SearchConfig(run_dir=d, budget=4)\n",  # other settings: no copy
        "tests/test_c.py": "def _run(x):\n    return x + 1\n",  # a name alone is no copy
    }) / "tests"
    assert copied_helpers(tests) == ["tests/search/test_b.py: run, tests/test_a.py: _run"]
