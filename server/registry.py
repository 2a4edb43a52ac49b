"""Model versions on disk under the server's state directory.

``<state>/models/<version>/`` holds each model directory; ``<state>/models/CURRENT``
names the active one and is replaced atomically, so a restart serves the same version
and a crash mid-save leaves the previous version active.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from shelfrank.core.artifact import publish_directory, write_pointer
from shelfrank.core.errors import ModelFileError
from shelfrank.core.model_format import load_serving_model, verify_model_directory
from shelfrank.server.ann import SearchPolicy
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.serving_state import ServingState

WATERMARK_KEY = "trained_through_seq"


class ModelRegistry:
    def __init__(
        self, state_dir: str | Path, keep: int = 3, search: SearchPolicy | None = None
    ) -> None:
        self.root = Path(state_dir) / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.search = search or SearchPolicy()

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def current_version(self) -> str | None:
        try:
            version = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return version or None

    def save(self, model: HybridModel, watermark_seq: int, *, activate: bool = True) -> str:
        """Write a new version and (unless ``activate`` is False) make it current."""
        version = model.model_version
        publish_directory(
            self.root,
            version,
            lambda folder: model.save(folder, extra_metadata={WATERMARK_KEY: watermark_seq}),
        )
        if activate:
            self.activate(version)
        return version

    def import_directory(self, directory: str | Path) -> str:
        """Copy an existing model directory in (verifying it) and make it current."""
        # Verified before it is imported (a corrupt model never becomes CURRENT), without
        # building it: the copy is loaded once, by whoever serves it.
        version = str(verify_model_directory(directory)["model_version"])
        if not (self.root / version).exists():
            publish_directory(
                self.root,
                version,
                lambda folder: shutil.copytree(directory, folder, dirs_exist_ok=True),
            )
        self.activate(version)
        return version

    def import_once(self, directory: str | Path) -> str | None:
        """Import ``directory`` unless this same model was imported before; returns the
        version imported, or None when it was already."""
        # Verified before it is imported (a corrupt model never becomes CURRENT), without
        # building it: the copy is loaded once, by whoever serves it.
        version = str(verify_model_directory(directory)["model_version"])
        marker = self.root / "IMPORTED"
        try:
            already = marker.read_text(encoding="utf-8").split()
        except FileNotFoundError:
            already = []
        if version in already and self.current_version() is not None:
            return None
        self.import_directory(directory)
        write_pointer(marker, " ".join([*already, version]))
        return version

    def activate(self, version: str) -> None:
        write_pointer(self.current_file, version)
        self._prune(version)

    def _prune(self, current: str) -> None:
        versions = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for old in [p for p in versions if p.name != current][: max(0, len(versions) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_current(self) -> ServingState | None:
        version = self.current_version()
        if version is None:
            return None
        return load_state(self.root / version, self.search)


def manifest_config(directory: str | Path, manifest: Mapping[str, Any]) -> TrainConfig:
    """The training configuration a model directory's manifest records."""
    try:
        return TrainConfig.from_json(manifest["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(Path(directory) / "manifest.json", f"bad params: {exc}") from None


def load_state(directory: str | Path, search: SearchPolicy | None = None) -> ServingState:
    """A servable state from a model directory; ``search`` may attach an approximate index."""
    model, manifest = load_serving_model(directory)
    (search or SearchPolicy()).prepare(model.items)
    config = manifest_config(directory, manifest)
    try:
        trained_at = manifest.get("trained_at")
        trained_at_ms = (
            int(datetime.fromisoformat(trained_at).timestamp() * 1000) if trained_at else 0
        )
        watermark = int(manifest.get(WATERMARK_KEY, 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(Path(directory) / "manifest.json", f"bad metadata: {exc}") from None
    return ServingState.build(model, config, trained_at_ms=trained_at_ms, watermark_seq=watermark)
