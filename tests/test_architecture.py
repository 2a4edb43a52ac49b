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


def _imports(folder: str) -> list[tuple[Path, int, str]]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.lineno, node.module))
    return found


@pytest.mark.parametrize("folder", PACKAGES)
def test_dependency_direction(folder: str) -> None:
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path, line, module in _imports(folder):
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
