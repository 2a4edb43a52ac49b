"""Model versions in the store, shared by every process, with a verified local copy each.

A version's files (manifest + ``.npz``, checksummed) are stored whole in the event store
(``EventStore.save_model``) and one pointer there names the version to serve
(``publish_model``): a process started later, on any machine, serves the current version;
a process that sees the pointer move fetches the version into its local cache
(``<cache>/models/<version>/``, verified against the manifest's checksums before it is
loaded) and swaps atomically (``ModelFollower``). A version is verified before it is
stored and loaded before the pointer moves, so a half-written or unloadable model is
never published; with a lease, only the elected trainer can move the pointer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shelfrank.core.artifact import publish_directory
from shelfrank.core.errors import ModelFileError
from shelfrank.core.model_format import load_serving_model, verify_model_directory
from shelfrank.server.ann import SearchPolicy
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import EventStore, ModelFiles, ModelPointer

log = logging.getLogger("shelfrank.registry")

WATERMARK_KEY = "trained_through_seq"
# The store's latest erasure when the training events were read (absent: 0, so a user
# erased at any time is not served a trained vector by that model).
ERASURES_KEY = "erasures_through"


def _trained_later(version: str, than: str) -> bool:
    """Whether model ``version`` was trained after model ``than``: versions begin with
    their UTC training time, ``%Y%m%dT%H%M%SZ`` (HybridModel.content_version). A name not
    of that form counts as later: it is imported, as before."""
    stamps = [name.partition("-")[0] for name in (version, than)]
    if not all(len(stamp) == 16 and stamp[8] == "T" and stamp.endswith("Z") for stamp in stamps):
        return True
    return stamps[0] > stamps[1]


class ModelRegistry:
    def __init__(
        self,
        store: EventStore,
        cache_dir: str | Path,
        keep: int = 3,
        search: SearchPolicy | None = None,
    ) -> None:
        self.store = store
        self.root = Path(cache_dir) / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.search = search or SearchPolicy()

    def current(self) -> ModelPointer | None:
        return self.store.current_model()

    def current_version(self) -> str | None:
        pointer = self.store.current_model()
        return pointer.version if pointer is not None else None

    def save(
        self,
        model: HybridModel,
        watermark_seq: int,
        *,
        erasures_through: int = 0,
        activate: bool = True,
    ) -> str:
        """Write a new version (locally, verified, then into the store) and unless
        ``activate`` is False make it current."""
        version = model.model_version
        metadata = {WATERMARK_KEY: watermark_seq, ERASURES_KEY: erasures_through}
        publish_directory(
            self.root, version, lambda folder: model.save(folder, extra_metadata=metadata)
        )
        self._store_directory(version, self.root / version)
        if activate:
            self.activate(version)
        return version

    def _store_directory(self, version: str, directory: Path) -> None:
        verify_model_directory(directory)  # a damaged write never reaches the store
        self.store.save_model(version, _files_of(directory))

    def import_directory(self, directory: str | Path) -> str:
        """Copy an existing model directory in (verifying it) and make it current."""
        # Verified before it is imported (a corrupt model never becomes current), without
        # building it: the copy is loaded once, by whoever serves it.
        version = str(verify_model_directory(directory)["model_version"])
        self._store_directory(version, Path(directory))
        self.activate(version)
        return version

    def import_once(self, directory: str | Path) -> str | None:
        """Import ``directory`` when no model is current, or when it is a model trained
        after the current one; returns the version imported, or None. Later starts with
        the same ``--model`` keep serving the versions retrained since, even once the
        imported version was pruned from the store (checking only that it is stored
        rolled every replica back to it then)."""
        version = str(verify_model_directory(directory)["model_version"])
        current = self.store.current_model()
        if current is not None and (
            self.store.has_model(version) or not _trained_later(version, current.version)
        ):
            return None
        return self.import_directory(directory)

    def activate(self, version: str, *, lease: tuple[str, str] | None = None) -> ModelPointer:
        """Point every process at ``version`` (see EventStore.publish_model)."""
        pointer = self.store.publish_model(version, lease=lease)
        self._prune(version)
        return pointer

    def _prune(self, current: str) -> None:
        # The store spares the versions pinned in it (experiment variants serve them) too.
        self.store.prune_models(self.keep, {current})
        self.prune_local(current)

    def prune_local(self, current: str) -> None:
        """Drop this machine's copies of old versions beyond ``keep`` (never ``current``
        nor a pinned one). The publisher prunes in ``activate``; a replica that only
        follows the pointer calls this after each swap, or its cache grows by a model a
        publication."""
        spared = {current, *self.store.pinned_models()}
        local = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in [p for p in local if p.name not in spared][: max(0, len(local) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def local_copy(self, version: str) -> Path:
        """A verified local directory of ``version``, fetched from the store when this
        machine has none (or a damaged one)."""
        target = self.root / version
        if target.is_dir():
            try:
                verify_model_directory(target)
                return target
            except ModelFileError:
                log.warning("local copy of model %s is damaged: fetching it again", version)
                shutil.rmtree(target, ignore_errors=True)
        _place_directory(target, self.store.model_files(version))
        verify_model_directory(target)
        return target

    def load(self, version: str) -> ServingState:
        return load_state(self.local_copy(version), self.search)

    def load_current(self) -> tuple[ServingState, ModelPointer] | None:
        pointer = self.store.current_model()
        if pointer is None:
            return None
        return self.load(pointer.version), pointer


def _files_of(directory: Path) -> ModelFiles:
    return [
        (path.relative_to(directory).as_posix(), path.read_bytes())
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def _place_directory(target: Path, files: ModelFiles) -> None:
    """Write ``files`` into a staging folder and move it to ``target``; if another process
    sharing the cache placed it first, theirs stays (same version, same bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name, data in files:
            path = (staging / name).resolve()
            if staging.resolve() not in path.parents:
                raise ModelFileError(target / name, "a stored file path leaves its directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def manifest_config(directory: str | Path, manifest: Mapping[str, Any]) -> TrainConfig:
    """The training configuration a model directory's manifest records."""
    try:
        return TrainConfig.from_json(manifest["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(Path(directory) / "manifest.json", f"bad params: {exc}") from None


def load_state(directory: str | Path, search: SearchPolicy | None = None) -> ServingState:
    """A servable state from a model directory; ``search`` may attach an approximate index."""
    model, manifest = load_serving_model(directory)
    policy = search or SearchPolicy()
    policy.prepare(model.items)
    policy.warm_up(model)
    config = manifest_config(directory, manifest)
    try:
        trained_at = manifest.get("trained_at")
        trained_at_ms = (
            int(datetime.fromisoformat(trained_at).timestamp() * 1000) if trained_at else 0
        )
        watermark = int(manifest.get(WATERMARK_KEY, 0))
        erasures = int(manifest.get(ERASURES_KEY, 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(Path(directory) / "manifest.json", f"bad metadata: {exc}") from None
    state = ServingState.build(model, config, trained_at_ms=trained_at_ms, watermark_seq=watermark)
    return replace(state, erasures_through=erasures)
