"""Writing a GetSnapshot stream into a folder (private): shared by the sync and asyncio
clients, which only differ in how they wait for the next message.

The stream is one header, then the payload (``snapshot.npz``) in chunks. The files are
not verified here (no numpy in the client): ``shelfrank.core.snapshot`` checks their
sha256 against the manifest. A local write failure is a ``StorageError`` naming the
file, a stream that breaks the contract a ``DataLossError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from shelfrank.client import _validation as check
from shelfrank.client.errors import DataLossError
from shelfrank.client.types import SnapshotInfo
from shelfrank.core.errors import StorageError
from shelfrank.proto._generated import edge_sync_pb2

METHOD = "GetSnapshot"
PAYLOAD_NAME = "snapshot.npz"
MANIFEST_NAME = "manifest.json"


def destination_folder(destination: object) -> Path:
    """The caller's ``destination`` as a Path (checked before any RPC)."""
    return check.local_path("destination", destination)


class SnapshotDownload:
    """Receives the stream's messages in order; ``result()`` once the stream has ended."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._header: edge_sync_pb2.SnapshotHeader | None = None
        self._handle: BinaryIO | None = None
        self._received = 0

    def _storage_error(self, path: Path, exc: OSError) -> StorageError:
        return StorageError(f"destination: cannot write {path}: {exc.strerror or exc}")

    def add(self, chunk: edge_sync_pb2.SnapshotChunk) -> None:
        if self._header is None:
            if chunk.WhichOneof("part") != "header":
                raise DataLossError("the stream did not start with a header", METHOD, "DATA_LOSS")
            self._header = chunk.header
            if not chunk.header.user_erased:
                path = self._folder / PAYLOAD_NAME
                try:
                    self._folder.mkdir(parents=True, exist_ok=True)
                    self._handle = path.open("wb")
                except OSError as exc:
                    raise self._storage_error(path, exc) from exc
            return
        if chunk.WhichOneof("part") != "data" or self._handle is None:
            raise DataLossError("a second header, or data after an erasure", METHOD, "DATA_LOSS")
        try:
            self._handle.write(chunk.data)
        except OSError as exc:
            raise self._storage_error(self._folder / PAYLOAD_NAME, exc) from exc
        self._received += len(chunk.data)

    def close(self) -> None:
        """Close the payload file (also after a failure); safe to call more than once."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                raise self._storage_error(self._folder / PAYLOAD_NAME, exc) from exc

    def result(self) -> SnapshotInfo:
        """Check the stream was complete, write the manifest last, describe the download."""
        self.close()
        header = self._header
        if header is None:
            raise DataLossError("the stream ended before its header", METHOD, "DATA_LOSS")
        if self._received != header.payload_bytes:
            raise DataLossError(
                f"received {self._received} of {header.payload_bytes} payload bytes",
                METHOD,
                "DATA_LOSS",
            )
        if not header.user_erased:
            path = self._folder / MANIFEST_NAME
            try:
                path.write_text(header.manifest_json, encoding="utf-8")
            except OSError as exc:
                raise self._storage_error(path, exc) from exc
        return SnapshotInfo(
            version=header.version,
            base_version=header.base_version,
            model_version=header.model_version,
            user_erased=header.user_erased,
            payload_bytes=self._received,
            erasure_id=header.erasure_id,
        )
