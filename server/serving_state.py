"""An immutable snapshot of everything a request reads: model, filter index, metadata.

Requests take the current snapshot once and use it to the end, so a model swap or a
catalogue upsert (which publish a new snapshot) never shows a request a half-applied
state. Snapshots are built off to the side and published by a single reference
assignment (atomic in CPython).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from shelfrank.core.filters import FeatureIndex
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.server.config import TrainConfig


@dataclass(frozen=True)
class ServingState:
    model: ServingModel
    config: TrainConfig
    features: FeatureIndex
    model_version: str
    trained_at_ms: int
    # Store sequence number up to which events are inside the model; newer ones are
    # folded in at request time.
    watermark_seq: int
    erased_users: frozenset[str] = field(default_factory=frozenset)
    # Bumped by every catalogue change; with the model version and this process's nonce it
    # names one item table (a restart starts a new nonce: revisions are not reused).
    catalogue_revision: int = 0
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # False before the first model (server/bootstrap.py): items are ranked by popularity
    # over the store's events, counted through ``watermark_seq``.
    trained: bool = True

    @property
    def snapshot_version(self) -> str:
        version = f"{self.model_version}.{self.instance}.r{self.catalogue_revision}"
        # Before the first model the popularity moves with every event counted.
        return version if self.trained else f"{version}.w{self.watermark_seq}"

    def with_catalogue(
        self, catalogue: Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]]
    ) -> ServingState:
        """This state with every catalogue item present with exactly the given tokens
        (only the differences are applied; the catalogue may be streamed)."""
        pairs = catalogue.items() if isinstance(catalogue, Mapping) else catalogue
        ids = self.model.item_ids
        changes = {
            item: tokens
            for item, tokens in pairs
            if item not in ids or self.item_tokens(item) != tuple(tokens)
        }
        return self.with_items(changes) if changes else self

    def with_erased_users(self, users: Iterable[str]) -> ServingState:
        users = frozenset(users)
        return replace(self, erased_users=self.erased_users | users) if users else self

    @classmethod
    def build(
        cls, model: ServingModel, config: TrainConfig, *, trained_at_ms: int, watermark_seq: int
    ) -> ServingState:
        return cls(
            model, config, _feature_index(model), model.model_version, trained_at_ms, watermark_seq
        )

    def item_tokens(self, item_id: str) -> tuple[str, ...]:
        vocabulary = self.model.item_token_embeddings.vocabulary
        row = self.model.item_ids.index(item_id)
        return tuple(vocabulary.id_of(int(c)) for c in self.model.item_tokens.row(row))

    def with_erased_user(self, user_id: str) -> ServingState:
        return replace(self, erased_users=self.erased_users | {user_id})

    def with_items(self, items: Mapping[str, Sequence[str]]) -> ServingState:
        """A new snapshot where ``items`` (id -> tokens) exist with these tokens. New items
        get their vector from their tokens (cold start); known items keep their trained
        vector and only change tokens (filters). Cost: one copy of the item table."""
        model = self.model
        old_vocab = model.item_token_embeddings.vocabulary
        vocab = old_vocab.copy()
        for tokens in items.values():
            for token in tokens:
                vocab.add(token)
        grown = len(vocab) - len(old_vocab)
        embeddings = TokenEmbeddings(
            vocab,
            np.vstack(
                [
                    model.item_token_embeddings.embeddings,
                    np.zeros((grown, model.items.dim), np.float32),
                ]
            ),
            np.concatenate([model.item_token_embeddings.biases, np.zeros(grown, np.float32)]),
            identity_weight=model.item_token_embeddings.identity_weight,
            weighting=model.item_token_embeddings.weighting,
        )
        item_ids = model.item_ids.copy()
        token_rows: list[list[int]] = [
            model.item_tokens.row(i).tolist() for i in range(len(item_ids))
        ]
        vectors = [model.items.item_vectors]
        biases = [model.items.item_biases]
        for item_id, tokens in items.items():
            columns = sorted({vocab.index(t) for t in tokens})
            row = item_ids.get(item_id)
            if row is None:
                item_ids.add(item_id)
                token_rows.append(columns)
                vector, bias = model.item_token_embeddings.compose(tokens)
                vectors.append(vector[None, :])
                biases.append(np.array([bias], np.float32))
            else:
                token_rows[row] = columns
        added = len(item_ids) - len(model.item_ids)
        # Appending keeps the table's search structures (pruned scan extended, not rebuilt;
        # approximate index and compiled kernel carried over).
        items_table = (
            model.items.with_rows_appended(
                item_ids, np.vstack(vectors[1:]), np.concatenate(biases[1:])
            )
            if added
            else model.items
        )
        indptr = np.zeros(len(item_ids) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in token_rows], out=indptr[1:])
        indices = np.array([c for r in token_rows for c in r], dtype=np.int64)
        new_model = replace(
            model,
            items=items_table,
            item_tokens=SparseRows(indptr, indices),
            item_token_embeddings=embeddings,
            item_popularity=np.concatenate([model.item_popularity, np.zeros(added, np.float32)]),
            signals=None if model.signals is None else model.signals.with_items_appended(added),
        )
        return replace(
            self,
            model=new_model,
            features=_feature_index(new_model),
            catalogue_revision=self.catalogue_revision + 1,
        )


def _feature_index(model: ServingModel) -> FeatureIndex:
    return FeatureIndex(
        model.item_token_embeddings.vocabulary,
        model.item_tokens.indptr,
        model.item_tokens.indices,
        len(model.items),
    )


__all__ = ["ServingState"]
