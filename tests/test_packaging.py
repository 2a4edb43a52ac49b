"""The built distribution: one namespace, every subpackage, typed, light base install."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("shelfrank-*.whl")
    return found


def test_wheel_maps_folders_into_one_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "core/scoring.py",
        "core/py.typed",
        "datasets/readers.py",
        "server/cli/__init__.py",
        "server/evaluation/runner.py",
        "proto/shelfrank/v1/recommender.proto",  # the contract ships with the package
        "proto/_generated/recommender_pb2.py",
        "server/dashboard/static/layout.html",  # the dashboard's pages are made from these
        "server/dashboard/static/pages/overview.html",
        "server/dashboard/static/vendor/uPlot.iife.min.js",
    ):
        assert f"shelfrank/{module}" in names
    assert not any(name.startswith(("tests/", "core/", "server/")) for name in names)


def test_base_install_does_not_pull_lightfm(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(meta_name))
    requires = metadata.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    assert not any("lightfm" in r or "scipy" in r for r in base)
    assert any(r.startswith("rectools-lightfm==") and 'extra == "server"' in r for r in requires)


def test_installed_wheel_imports_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = "import shelfrank.core.scoring, shelfrank.server.hybrid as h; print(h.__file__)"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(target))
