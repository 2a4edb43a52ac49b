"""Checksummed model directories: round trips, and every way a file can be bad."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.artifact import read_artifact, write_artifact
from shelfrank.core.errors import ModelFileError, StorageError, UnsupportedFormatError


def _write(tmp_path: Path) -> Path:
    write_artifact(
        tmp_path,
        kind="test-kind",
        format_version=1,
        metadata={"note": "x"},
        groups={"main": {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 3), np.int64)}},
    )
    return tmp_path


def test_round_trip(tmp_path: Path) -> None:
    artifact = read_artifact(_write(tmp_path), kind="test-kind", max_version=1)
    assert artifact.manifest["note"] == "x"
    assert np.array_equal(artifact.groups["main"]["a"], np.arange(10, dtype=np.float32))
    assert artifact.array("main", "b", ndim=2, kind="i").shape == (2, 3)
    with pytest.raises(ModelFileError, match="array 'a' has dtype"):
        artifact.array("main", "a", ndim=2, kind="f")
    with pytest.raises(ModelFileError, match="'zzz' is missing"):
        artifact.array("main", "zzz", ndim=1, kind="f")


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path) / "main.npz"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"main\.npz: sha256 does not match"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path) / "main.npz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ModelFileError, match=r"main\.npz: size is 50 bytes"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)


def test_missing_array_file_and_manifest(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "main.npz").unlink()
    with pytest.raises(ModelFileError, match="file listed in the manifest is missing"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match="manifest is missing"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)
    with pytest.raises(ModelFileError, match="not a directory"):
        read_artifact(tmp_path / "nope", kind="test-kind", max_version=1)


def test_newer_format_version_is_refused_clearly(tmp_path: Path) -> None:
    manifest = _write(tmp_path) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(UnsupportedFormatError, match="format_version 99 is newer"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)


def test_wrong_kind_and_bad_json_name_the_file_and_line(tmp_path: Path) -> None:
    manifest = _write(tmp_path) / "manifest.json"
    with pytest.raises(ModelFileError, match="format is 'test-kind', expected 'other'"):
        read_artifact(tmp_path, kind="other", max_version=1)
    manifest.write_text('{\n  "format": "test-kind",\n  oops\n}')
    with pytest.raises(ModelFileError, match=r"manifest\.json:3: invalid JSON"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)


def test_manifest_cannot_point_outside_the_directory(tmp_path: Path) -> None:
    manifest = _write(tmp_path) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"] = {"../evil.npz": {"sha256": "0" * 64, "bytes": 1}}
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=r"not a local \.npz"):
        read_artifact(tmp_path, kind="test-kind", max_version=1)


def test_pickle_payload_is_never_executed(tmp_path: Path) -> None:
    """An object array (which needs pickle) inside a correctly checksummed file is refused."""
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.write_text, ("pwned",))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        payload = io.BytesIO()
        np.lib.format.write_array(payload, np.array([Exploit()], dtype=object), allow_pickle=True)
        archive.writestr("a.npy", payload.getvalue())
    target = tmp_path / "model"
    _write(target)
    path = target / "main.npz"
    path.write_bytes(buffer.getvalue())
    manifest = target / "manifest.json"
    data = json.loads(manifest.read_text())
    import hashlib

    data["files"]["main.npz"] = {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
    }
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="unreadable array file"):
        read_artifact(target, kind="test-kind", max_version=1)
    assert not marker.exists()


def test_object_arrays_are_never_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would need pickle"):
        write_artifact(
            tmp_path,
            kind="k",
            format_version=1,
            metadata={},
            groups={"g": {"x": np.array([{"a": 1}], dtype=object)}},
        )


def test_publish_directory_never_leaves_nothing_behind(tmp_path: Path) -> None:
    import os

    from shelfrank.core.artifact import publish_directory

    def write(text: str):  # type: ignore[no-untyped-def]
        return lambda folder: (folder / "f").write_text(text)

    publish_directory(tmp_path, "v1", write("one"))
    real_replace = os.replace
    calls = 0

    def failing_second_move(src: object, dst: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the move of the new directory into place fails (crash, full disk)
            raise OSError("disk full")
        real_replace(src, dst)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", failing_second_move)
        with pytest.raises(StorageError, match="disk full") as failed:
            publish_directory(tmp_path, "v1", write("two"))
    assert isinstance(failed.value.__cause__, OSError)
    assert (tmp_path / "v1" / "f").read_text() == "one"
    publish_directory(tmp_path, "v1", write("three"))
    assert (tmp_path / "v1" / "f").read_text() == "three"
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]
    with pytest.raises(ValueError, match="plain, non-hidden"):
        publish_directory(tmp_path, "..", write("x"))
