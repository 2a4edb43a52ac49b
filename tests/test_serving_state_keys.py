"""A serving state finds catalogue entries' rows by the store's integer item keys: the same
state as by their string ids, whatever the order of upserts and availability flips."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.server.bootstrap import read_state_without_model
from shelfrank.server.config import TrainConfig
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import CatalogueEntry
from shelfrank.server.store import SQLiteStore

ITEMS = [f"i{n}" for n in range(8)]
TOKENS = ["brand=a", "brand=b", "size=s"]

upsert = st.tuples(
    st.just("upsert"),
    st.lists(st.tuples(st.sampled_from(ITEMS), st.sets(st.sampled_from(TOKENS))), max_size=4),
)
flip = st.tuples(st.just("flip"), st.lists(st.sampled_from(ITEMS), max_size=4), st.booleans())


def _without_keys(entries: list[CatalogueEntry]) -> list[tuple[object, ...]]:
    return [tuple(entry)[:5] for entry in entries]  # as a store before item keys hands them


def _described(state: ServingState, items: list[str]) -> list[tuple[str, tuple[str, ...], bool]]:
    rows = [state.model.item_ids.index(item) for item in items]
    available = state.available
    return [
        (item, tuple(sorted(state.item_tokens(item))), available is None or bool(available[row]))
        for item, row in zip(items, rows, strict=True)
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(upsert, flip), min_size=1, max_size=12))
def test_rows_by_key_give_the_state_rows_by_id_give(operations: list[tuple]) -> None:  # type: ignore[type-arg]
    config = TrainConfig(num_threads=1)
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLiteStore(Path(scratch) / "s.db")
        store.upsert_items([(ITEMS[0], ["brand=a"])])
        keyed = read_state_without_model(store, config)
        plain = keyed
        for operation in operations:
            if operation[0] == "upsert":
                store.upsert_items([(item, sorted(tokens)) for item, tokens in operation[1]])
            else:
                store.set_availability(operation[1], operation[2])
            revision, changes = store.catalogue_changes(keyed.catalogue_through)
            keyed = keyed.with_catalogue(changes, revision=revision)
            plain = plain.with_catalogue(_without_keys(changes), revision=revision)
            stored = store.catalogue_changes()[1]
            items = [entry.item_id for entry in stored]
            truth = [(e.item_id, tuple(sorted(e.tokens)), e.available) for e in stored]
            assert _described(keyed, items) == truth
            assert _described(plain, items) == truth
            assert keyed.model.item_ids.ids == plain.model.item_ids.ids
            # Every key the state learned names its item's row.
            assert keyed.key_rows is not None
            for entry in stored:
                assert keyed.key_rows[entry.key] == keyed.model.item_ids.index(entry.item_id)
        store.close()


def test_a_flip_of_known_items_reuses_the_key_table() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLiteStore(Path(scratch) / "s.db")
        store.upsert_items([(item, ["brand=a"]) for item in ITEMS])
        state = read_state_without_model(store, TrainConfig(num_threads=1))
        table = state.key_rows
        assert table is not None
        store.set_availability(ITEMS[2:5], False)
        revision, changes = store.catalogue_changes(state.catalogue_through)
        flipped = state.with_catalogue(changes, revision=revision)
        assert flipped.key_rows is table  # nothing new to learn: no copy
        assert flipped.available is not None
        unavailable = np.flatnonzero(~flipped.available).tolist()
        assert sorted(flipped.model.item_ids.id_of(r) for r in unavailable) == ITEMS[2:5]
        store.close()
