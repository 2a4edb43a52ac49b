"""The dependency rules of the package, checked on the source and on real imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "datasets", "server", "client", "edge", "proto")
# Third-party modules each folder may import (standard library always allowed).
ALLOWED = {
    "core": {"numpy"},
    "datasets": {"numpy"},
    "client": {"grpc", "google"},
    "proto": {"grpc", "google"},
    "edge": {"numpy", "grpc", "google", "cachetools"},
    "server": None,  # anything
}
# shelfrank subpackages each folder may import.
ALLOWED_INTERNAL = {
    "core": {"core"},
    "datasets": {"core", "datasets"},
    "client": {"client", "proto._generated", "core.errors", "core.events"},
    "proto": {"proto"},
    "edge": {"core", "client", "edge"},
    "server": None,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "shelfrank." + ".".join(parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:``: imported for the type checker, never at run time."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }


def _imports(folder: str) -> list[tuple[Path, int, str, list[str]]]:
    """Every run-time import in the folder's modules (at any depth, relative ones resolved):
    (file, line, module, names imported from it)."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _type_checking_only(tree)
        module, is_package = _module_name(path), path.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found += [(path, node.lineno, alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
                found.append((path, node.lineno, _absolute(module, is_package, node), names))
    return found


@pytest.mark.parametrize("folder", PACKAGES)
def test_dependency_direction(folder: str) -> None:
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path, line, module, _ in _imports(folder):
        top = module.split(".")[0]
        where = f"{path.relative_to(REPO)}:{line}"
        if top == "shelfrank":
            allowed = ALLOWED_INTERNAL[folder]
            inner = module.removeprefix("shelfrank.")
            if allowed is not None and not any(
                inner == a or inner.startswith(a + ".") for a in allowed
            ):
                problems.append(f"{where} imports {module}")
        elif top not in stdlib and ALLOWED[folder] is not None and top not in ALLOWED[folder]:  # type: ignore[operator]
            problems.append(f"{where} imports {module}")
    assert problems == []


def _import_graph() -> dict[str, set[str]]:
    """shelfrank module -> the shelfrank modules it imports at run time."""
    modules = {_module_name(p) for f in PACKAGES for p in (REPO / f).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for folder in PACKAGES:
        for path, _, module, names in _imports(folder):
            source = _module_name(path)
            # ``from package import module`` imports the module; ``from module import name``
            # the module itself.
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in modules}
            if not targets or len(targets) < len(names):
                targets.add(module)
            graph.setdefault(source, set()).update(t for t in targets if t in modules)
    for source, targets in graph.items():
        targets.discard(source)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    """No module imports, at any depth or lazily inside a function, a module that imports
    it back (type-checking-only imports aside): layers stay layers."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_edge_and_client_imports_stay_light() -> None:
    for statement in (
        "import shelfrank.edge",
        "import shelfrank.client",
        "import shelfrank.core.model_format",
    ):
        modules = _modules_after(statement)
        heavy = {
            m for m in modules if m.split(".")[0] in {"lightfm", "scipy", "matplotlib", "tqdm"}
        }
        assert not heavy, f"{statement} pulled in {sorted(heavy)[:5]}"
        assert "shelfrank.server" not in modules
    assert "numpy" not in _modules_after("import shelfrank.client; import shelfrank.core.errors")


def test_no_pickle_and_no_assert_in_package_code() -> None:
    problems = []
    for folder in PACKAGES:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Assert):
                    problems.append(f"{path}:{node.lineno}: assert")
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                    if any(
                        n.split(".")[0] in {"pickle", "cPickle", "dill", "joblib", "cloudpickle"}
                        for n in names
                    ):
                        problems.append(f"{path}:{node.lineno}: pickle import")
                if (
                    isinstance(node, ast.keyword)
                    and node.arg == "allow_pickle"
                    and not (isinstance(node.value, ast.Constant) and node.value.value is False)
                ):
                    problems.append(f"{path}:{node.lineno}: allow_pickle not False")
    assert problems == []


def test_every_package_folder_is_declared_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    for folder in PACKAGES:
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO)
            name = "shelfrank." + ".".join(relative.parts)
            assert name in declared, f"{relative} is a package but {name} is not in pyproject"


RESULT_SUFFIXES = ("Result", "Info", "Summary", "Report", "Outcome", "Payload", "Delta", "Step")


def test_result_types_of_more_than_three_fields_are_built_by_keyword() -> None:
    """``SyncResult(0, 0, 0, "", 0, False, True, False)`` says nothing to its reader: a
    result dataclass with more than three fields is keyword-only."""
    problems = []
    for folder in PACKAGES:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef) or not node.name.endswith(RESULT_SUFFIXES):
                    continue
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if not any(d.startswith("dataclass") for d in decorators):
                    continue
                fields = [n for n in node.body if isinstance(n, ast.AnnAssign)]
                if len(fields) > 3 and not any("kw_only=True" in d for d in decorators):
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert problems == []
