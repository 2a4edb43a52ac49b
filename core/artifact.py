"""Checksummed on-disk artifacts: a ``manifest.json`` plus ``.npz`` array files.

Used for model directories and edge snapshots. No pickle: arrays are loaded with
``allow_pickle=False`` and every file is verified against the sha256 and size recorded in
the manifest before it is parsed, so a truncated or tampered file is refused with an
error naming it instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import (
    InvalidInputError,
    ModelFileError,
    StorageError,
    UnsupportedFormatError,
)

MANIFEST_NAME = "manifest.json"
Arrays = dict[str, npt.NDArray[Any]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (disk full, no permission, a file where a folder should be) becomes a
    StorageError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{path}: cannot write: {exc}") from exc


def _fsync_directory(folder: Path) -> None:
    """Makes the renames inside ``folder`` durable: a rename lives in the folder's entry,
    which a power cut can lose though both files were synced (POSIX; a no-op where folders
    cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is done
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def publish_directory(parent: Path, name: str, write: Callable[[Path], object]) -> Path:
    """Fill a staging folder under ``parent`` with ``write(folder)``, then move it to
    ``parent/name`` (replacing an older one): nobody ever sees a half-written directory."""
    if not name or name.startswith(".") or Path(name).name != name:
        raise InvalidInputError(f"directory name {name!r} must be a plain, non-hidden name")
    target = parent / name
    with _writing(target):
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
        retired = parent / f".{name}.old-{uuid.uuid4().hex[:8]}"
        try:
            write(staging)
            # Move the old one aside first: at every instant one complete directory exists.
            if target.exists():
                os.replace(target, retired)
            _fsync_directory(staging)  # the files' entries in the folder
            os.replace(staging, target)
            _fsync_directory(parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if retired.exists() and not target.exists():
                os.replace(retired, target)
            raise
    shutil.rmtree(retired, ignore_errors=True)
    return target


def write_pointer(path: Path, value: str) -> None:
    """Atomically (and durably) replace a one-line pointer file such as ``CURRENT``."""
    with _writing(path):
        _atomic_write_bytes(path, (value + "\n").encode("utf-8"))


def write_artifact(
    directory: str | Path,
    *,
    kind: str,
    format_version: int,
    metadata: Mapping[str, Any],
    groups: Mapping[str, Mapping[str, npt.NDArray[Any]]],
    compress: bool = False,
) -> dict[str, Any]:
    """Write ``groups`` as ``<group>.npz`` files and then the manifest (last, atomically).

    A directory without a manifest is never loadable, so an interrupted write cannot be
    mistaken for a model.
    """
    root = Path(directory)
    for group, arrays in groups.items():
        if not group.isidentifier():
            raise InvalidInputError(f"artifact group name {group!r} must be an identifier")
        for name, array in arrays.items():
            if array.dtype.hasobject:
                raise InvalidInputError(f"{group}.{name}: object arrays would need pickle")
    try:
        json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata: not representable in JSON: {exc}") from None
    files: dict[str, dict[str, Any]] = {}
    with _writing(root):
        root.mkdir(parents=True, exist_ok=True)
        for group, arrays in groups.items():
            path = root / f"{group}.npz"
            tmp = root / f".{group}.npz.tmp"
            with tmp.open("wb") as handle:
                save = np.savez_compressed if compress else np.savez
                save(handle, **arrays)  # type: ignore[arg-type]
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            files[path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
        manifest = {"format": kind, "format_version": format_version, **metadata, "files": files}
        _atomic_write_bytes(
            root / MANIFEST_NAME, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
    return manifest


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest and its arrays, grouped by file stem."""

    directory: Path
    manifest: dict[str, Any]
    groups: dict[str, Arrays]

    def array(self, group: str, name: str, *, ndim: int, kind: str) -> npt.NDArray[Any]:
        """Fetch one array, checking it exists with the expected rank and dtype kind."""
        path = self.directory / f"{group}.npz"
        arrays = self.groups.get(group)
        if arrays is None or name not in arrays:
            raise ModelFileError(path, f"array {name!r} is missing")
        value = arrays[name]
        if value.ndim != ndim or value.dtype.kind not in kind:
            raise ModelFileError(
                path,
                f"array {name!r} has dtype {value.dtype} and {value.ndim} dims, "
                f"expected kind {kind!r} with {ndim} dims",
            )
        return value


def read_manifest(directory: str | Path, *, kind: str, max_version: int) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).is_dir():
        raise ModelFileError(directory, "not a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(path, "manifest is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"cannot read manifest: {exc}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(path, "manifest must be a JSON object")
    if manifest.get("format") != kind:
        raise ModelFileError(path, f"format is {manifest.get('format')!r}, expected {kind!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"format_version {version!r} is not a positive integer")
    if version > max_version:
        raise UnsupportedFormatError(
            path,
            f"format_version {version} is newer than this shelfrank supports ({max_version}); "
            "upgrade shelfrank to load it",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in files.values()
    ):
        raise ModelFileError(path, "'files' must map file names to {sha256, bytes}")
    return manifest


def read_artifact(directory: str | Path, *, kind: str, max_version: int) -> Artifact:
    """Read and verify an artifact written by :func:`write_artifact`."""
    root = Path(directory)
    manifest = verify_artifact(root, kind=kind, max_version=max_version)
    groups = {name[: -len(".npz")]: load_npz(root / name) for name in manifest["files"]}
    return Artifact(directory=root, manifest=manifest, groups=groups)


def verify_artifact(directory: str | Path, *, kind: str, max_version: int) -> dict[str, Any]:
    """Check the manifest and every file's size and checksum without loading arrays;
    returns the manifest."""
    root = Path(directory)
    manifest = read_manifest(root, kind=kind, max_version=max_version)
    for name, entry in manifest["files"].items():
        if Path(name).name != name or not name.endswith(".npz"):
            raise ModelFileError(root / MANIFEST_NAME, f"file entry {name!r} is not a local .npz")
        path = root / name
        try:
            size = path.stat().st_size
            digest = sha256_of(path) if size == entry["bytes"] else ""
        except FileNotFoundError:
            raise ModelFileError(path, "file listed in the manifest is missing") from None
        except OSError as exc:
            raise ModelFileError(path, f"cannot read: {exc}") from None
        if size != entry["bytes"]:
            raise ModelFileError(path, f"size is {size} bytes, manifest says {entry['bytes']}")
        if digest != entry["sha256"]:
            raise ModelFileError(path, "sha256 does not match the manifest (tampered or corrupt)")
    return manifest


def load_npz(path: Path) -> Arrays:
    """Load every array of an ``.npz`` without pickle; errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(path, f"unreadable array file: {exc}") from None
