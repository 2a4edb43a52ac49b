"""Edge snapshots served from the live state: full, or deltas from versions still known.

The item part of a snapshot depends only on the serving state's item table, so it is
built once per state version and the last few are kept to compute deltas against; the
user's own vector (trained, folded in from fresh events, or from the profile) is added per
request.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from shelfrank.core.snapshot import (
    Snapshot,
    SnapshotDelta,
    diff,
    snapshot_of,
    write_delta,
    write_snapshot,
)
from shelfrank.server.requests import check_id
from shelfrank.server.service import RecommenderService
from shelfrank.server.serving_state import ServingState

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SnapshotPayload:
    version: str
    base_version: str
    model_version: str
    user_erased: bool
    manifest_json: str
    payload: bytes
    erasure_id: int  # the user's latest erasure (0: never); see EventStore.latest_erasure


class SnapshotService:
    def __init__(self, service: RecommenderService, keep_versions: int = 4) -> None:
        self.service = service
        self.keep_versions = keep_versions
        self._items: OrderedDict[str, Snapshot] = OrderedDict()
        # The item part of a delta is the same for every user syncing from one version to
        # another, and costs a pass in Python over the catalogue (about 1 s at 100k items):
        # made once per (base, target) pair, the user's vector put in per request.
        self._deltas: OrderedDict[tuple[str, str], SnapshotDelta] = OrderedDict()
        self._lock = threading.Lock()

    def _item_delta(self, base: Snapshot, items: Snapshot) -> SnapshotDelta:
        key = (base.version, items.version)
        with self._lock:
            cached = self._deltas.get(key)
            if cached is not None:
                return cached
        delta = diff(base, items)
        with self._lock:
            self._deltas[key] = delta
            while len(self._deltas) > self.keep_versions:
                self._deltas.popitem(last=False)
        return delta

    def _item_snapshot(self, state: ServingState) -> Snapshot:
        version = state.snapshot_version
        with self._lock:
            cached = self._items.get(version)
            if cached is not None:
                return cached
        snapshot = snapshot_of(
            state.model,
            version,
            available=state.available,
            new_items=state.new_items,
            added_ms=state.added_ms,
        )
        with self._lock:
            self._items[version] = snapshot
            while len(self._items) > self.keep_versions:
                self._items.popitem(last=False)
        return snapshot

    def for_user(self, user_id: str, have_version: str = "") -> SnapshotPayload:
        check_id(user_id, "user_id")
        store = self.service.store
        erasure_id, erased = store.erasure_state(user_id)
        if erased:
            return SnapshotPayload(
                version="",
                base_version="",
                model_version="",
                user_erased=True,
                manifest_json="",
                payload=b"",
                erasure_id=erasure_id,
            )
        state, user = self.service.user_vector(user_id)
        items = self._item_snapshot(state)
        personal = replace(items, user_id=user_id, user_vector=user.vector, user_bias=user.bias)
        with self._lock:
            base = self._items.get(have_version) if have_version else None
        if base is not None and base.vectors.shape[1] != personal.vectors.shape[1]:
            base = None  # a model of another dimension since: no delta bridges it
        with tempfile.TemporaryDirectory(prefix="shelfrank-snapshot-") as scratch:
            folder = Path(scratch)
            if base is not None:
                delta = self._item_delta(base, items)
                upserts = replace(
                    delta.upserts, user_id=user_id, user_vector=user.vector, user_bias=user.bias
                )
                write_delta(folder, replace(delta, upserts=upserts))
                base_version = base.version
            else:
                write_snapshot(folder, personal)
                base_version = ""
            payload = (folder / "snapshot.npz").read_bytes()
            manifest_json = (folder / "manifest.json").read_text(encoding="utf-8")
        return SnapshotPayload(
            version=personal.version,
            base_version=base_version,
            model_version=state.model_version,
            user_erased=False,
            manifest_json=manifest_json,
            payload=payload,
            erasure_id=erasure_id,
        )


def chunks(payload: bytes) -> Iterator[bytes]:
    for start in range(0, len(payload), CHUNK_BYTES):
        yield payload[start : start + CHUNK_BYTES]
