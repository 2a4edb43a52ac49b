"""Fairness and beyond-accuracy metrics of an evaluation run.

They are computed from the top-k lists every model made for the evaluated users (kept
by :class:`~shelfrank.server.evaluation.metrics.MetricAccumulator`), in the shared item
index of the run's :class:`~shelfrank.server.training_data.TrainingData`.

User side, per user feature column (``age``, ``gender``, ...): users are grouped by their
value of the column, i.e. their ``column=value`` tokens in the users file (a user with
several values is in each of those groups; users without one form the group ``(none)``,
which is shown but left out of the gaps). Per group: mean P@k and NDCG@k over its users.
The gap of a metric over a column is ``max - min`` of the group means and ``min / max``
(1.0 when every group scores 0); with fewer than two groups there is no gap (``None``).

Item side, per model, over every recommended slot of every list (a list of k items is k
slots). The catalogue is the set of items a list could contain: every item of the run,
or the candidate items of a protocol that restricts them (cold-items).

- exposure Gini: :func:`gini` of the slots each catalogue item got, items never
  recommended counting 0. 0 is a perfectly even exposure; all slots on one item of n
  gives the maximum, ``(n - 1) / n`` (the plain, not the n/(n-1)-corrected, Gini).
- coverage: share of catalogue items recommended at least once.
- novelty: mean self-information of the recommended slots, in bits:
  ``-log2(p_i)``, ``p_i = (u_i + 1) / (U + 1)``, where ``u_i`` is the number of users with
  a positive training interaction with item ``i`` and ``U`` the number of users with any
  (add-one smoothing, as if one more user had interacted with every item: an item nobody
  interacted with gets ``log2(U + 1)`` bits, an item everybody did 0).
- intra-list diversity (ILD): per list, the mean over its unordered item pairs of the
  Jaccard distance of their feature token sets, ``1 - |A & B| / |A | B|`` (two items
  without any token are at distance 0); the model's figure is the mean over lists of two
  items or more. One definition for every model (popularity and EASE have no item
  vectors), on the tokens of the item columns asked for (default: every item column).
  ``None`` without an items file.
- exposure by an item column (``--exposure-by genre``): each value's share of the
  recommended slots, against its share of the catalogue and of the positive training
  (user, item) pairs. An item with m values of the column gives 1/m of its slot (of its
  catalogue place, of its pairs) to each value and an item without a value gives it to
  ``(none)``, so each set of shares sums to 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.errors import InvalidInputError, InvariantError
from shelfrank.datasets.records import FeatureTable
from shelfrank.server.evaluation.metrics import MetricAccumulator
from shelfrank.server.training_data import TrainingData

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

NONE = "(none)"
DIGITS = 5
# Dense scratch of the intra-list diversity: lists x items x tokens at most this many cells.
DIVERSITY_CHUNK_CELLS = 1 << 22


# ---------------------------------------------------------------- the metrics themselves


def gini(values: npt.ArrayLike) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, ``(n - 1) / n`` when
    one value holds everything; 0 when all are 0 (nothing to share unevenly)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise InvalidInputError("gini: needs at least one value")
    if not np.isfinite(x).all() or x[0] < 0:
        raise InvalidInputError("gini: values must be finite and non-negative")
    total = float(x.sum())
    if total == 0.0:
        return 0.0
    n = x.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    value = float(2.0 * np.dot(ranks, x) / (n * total) - (n + 1) / n)
    return min(max(value, 0.0), (n - 1) / n)  # rounding must not leave the range


def exposure(lists: Sequence[IntArray], n_items: int) -> IntArray:
    """Slots each item row in ``[0, n_items)`` got over ``lists``."""
    if not lists:
        return np.zeros(n_items, dtype=np.int64)
    flat = np.concatenate([np.asarray(top, dtype=np.int64) for top in lists])
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise InvalidInputError(f"lists: item rows must be in [0, {n_items})")
    return np.bincount(flat, minlength=n_items).astype(np.int64)


def coverage(catalogue_exposure: npt.ArrayLike) -> float:
    """Share of catalogue items with exposure above 0."""
    x = np.asarray(catalogue_exposure)
    if x.size == 0:
        raise InvalidInputError("coverage: the catalogue is empty")
    return float(np.count_nonzero(x) / x.size)


def self_information(user_counts: npt.ArrayLike, n_users: int) -> FloatArray:
    """``-log2((u_i + 1) / (n_users + 1))`` per item, ``u_i`` its number of users."""
    counts = np.asarray(user_counts, dtype=np.float64)
    if n_users < 0 or (counts < 0).any() or (counts > n_users).any():
        raise InvalidInputError("user_counts: must be in [0, n_users]")
    return np.asarray(-np.log2((counts + 1.0) / (n_users + 1.0)), dtype=np.float64)


def novelty(lists: Sequence[IntArray], information: FloatArray) -> float:
    """Mean self-information (bits) of the recommended slots; 0 without any slot."""
    slots = [np.asarray(top, dtype=np.int64) for top in lists if len(top)]
    if not slots:
        return 0.0
    return float(information[np.concatenate(slots)].mean())


def token_matrix(tokens: Sequence[Iterable[str]]) -> sp.csr_matrix:
    """Binary (items x distinct tokens) incidence of per-item token sets."""
    vocabulary: dict[str, int] = {}
    indptr = [0]
    indices: list[int] = []
    for item_tokens in tokens:
        columns = {vocabulary.setdefault(t, len(vocabulary)) for t in item_tokens}
        indices.extend(sorted(columns))
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.ones(len(indices), np.float32), np.array(indices, np.int64), np.array(indptr)),
        shape=(len(tokens), max(1, len(vocabulary))),
    )


def intra_list_diversity(lists: Sequence[IntArray], tokens: sp.csr_matrix) -> float | None:
    """Mean over lists (of two items or more) of the mean pairwise Jaccard distance of
    the items' token sets (rows of the binary ``tokens``); None without such a list."""
    sizes = np.asarray(tokens.getnnz(axis=1), dtype=np.float64)
    by_length: dict[int, list[IntArray]] = {}
    for top in lists:
        if len(top) >= 2:
            by_length.setdefault(len(top), []).append(np.asarray(top, dtype=np.int64))
    per_list: list[FloatArray] = []
    for length, group in by_length.items():
        rows = np.stack(group)
        upper = np.triu_indices(length, 1)
        chunk = max(1, DIVERSITY_CHUNK_CELLS // (length * tokens.shape[1]))
        for start in range(0, rows.shape[0], chunk):
            block = rows[start : start + chunk]
            dense = tokens[block.ravel()].toarray().reshape(block.shape[0], length, -1)
            inter = np.matmul(dense, dense.transpose(0, 2, 1)).astype(np.float64)
            size = sizes[block]
            union = size[:, :, None] + size[:, None, :] - inter
            similarity = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
            per_list.append((1.0 - similarity[:, upper[0], upper[1]]).mean(axis=1))
    if not per_list:
        return None
    return float(np.concatenate(per_list).mean())


def value_shares(weights: npt.ArrayLike, values: Sequence[Sequence[str]]) -> dict[str, float]:
    """Each value's share of the total weight; an item with m values gives 1/m of its
    weight to each, one without any to ``(none)``. Sums to 1 (all 0 if the weight is)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(values),):
        raise InvalidInputError("weights: one per item")
    totals: dict[str, float] = {}
    for weight, item_values in zip(w.tolist(), values, strict=True):
        labels = list(dict.fromkeys(item_values)) or [NONE]
        for label in labels:
            totals[label] = totals.get(label, 0.0) + weight / len(labels)
    total = float(w.sum())
    return {label: (value / total if total > 0 else 0.0) for label, value in totals.items()}


@dataclass(frozen=True, kw_only=True)
class Gap:
    """The spread of one metric's group means over one user column."""

    difference: float  # max - min
    ratio: float  # min / max (1.0 when every group scores 0)
    lowest: str
    highest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "difference": round(self.difference, DIGITS),
            "ratio": round(self.ratio, DIGITS),
            "lowest": self.lowest,
            "highest": self.highest,
        }


def gap(means: Mapping[str, float]) -> Gap | None:
    """Max - min and min / max of group means (``(none)`` left out); None below 2 groups."""
    kept = {name: value for name, value in means.items() if name != NONE}
    if len(kept) < 2:
        return None
    lowest = min(kept, key=lambda name: (kept[name], name))
    highest = max(kept, key=lambda name: (kept[name], name))
    low, high = kept[lowest], kept[highest]
    if low < 0:
        raise InvalidInputError("means: gaps are defined for non-negative metrics")
    return Gap(
        difference=high - low, ratio=low / high if high > 0 else 1.0, lowest=lowest, highest=highest
    )


@dataclass(frozen=True, kw_only=True)
class GroupScore:
    value: str
    users: int
    precision: float
    ndcg: float


@dataclass(frozen=True, kw_only=True)
class ColumnGroups:
    """P@k and NDCG@k per group of one user column, and their gaps."""

    column: str
    groups: tuple[GroupScore, ...]
    precision_gap: Gap | None
    ndcg_gap: Gap | None

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": {
                g.value: {
                    "users": g.users,
                    "precision": round(g.precision, DIGITS),
                    "ndcg": round(g.ndcg, DIGITS),
                }
                for g in self.groups
            },
            "gaps": {
                "precision": self.precision_gap.to_json() if self.precision_gap else None,
                "ndcg": self.ndcg_gap.to_json() if self.ndcg_gap else None,
            },
        }


def group_scores(
    column: str,
    user_ids: Sequence[str],
    precision: Sequence[float],
    ndcg: Sequence[float],
    values_of: Mapping[str, Sequence[str]],
) -> ColumnGroups:
    """Per-user P@k and NDCG@k (parallel to ``user_ids``) averaged per value of
    ``column`` (``values_of``: a user's values; absent or empty: ``(none)``)."""
    if not len(user_ids) == len(precision) == len(ndcg):
        raise InvalidInputError("user_ids, precision and ndcg must be parallel")
    members: dict[str, list[int]] = {}
    for position, user in enumerate(user_ids):
        for value in list(dict.fromkeys(values_of.get(user, ()))) or [NONE]:
            members.setdefault(value, []).append(position)
    p = np.asarray(precision, dtype=np.float64)
    n = np.asarray(ndcg, dtype=np.float64)
    order = sorted(members, key=lambda v: (v == NONE, v))
    groups = tuple(
        GroupScore(
            value=value,
            users=len(members[value]),
            precision=float(p[members[value]].mean()),
            ndcg=float(n[members[value]].mean()),
        )
        for value in order
    )
    return ColumnGroups(
        column=column,
        groups=groups,
        precision_gap=gap({g.value: g.precision for g in groups}),
        ndcg_gap=gap({g.value: g.ndcg for g in groups}),
    )


# ---------------------------------------------------------------- per model, per run


@dataclass(frozen=True, kw_only=True)
class FairnessSettings:
    """What to measure. ``group_by``: user columns (None: every column of the users
    file); ``exposure_by``: item columns whose exposure shares are reported;
    ``diversity_by``: item columns whose tokens ILD compares (None: every item column)."""

    group_by: tuple[str, ...] | None = None
    exposure_by: tuple[str, ...] = ()
    diversity_by: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ModelFairness:
    groups: tuple[ColumnGroups, ...]
    lists: int
    slots: int
    exposure_gini: float
    coverage: float
    novelty_bits: float
    intra_list_diversity: float | None
    exposure_shares: dict[str, dict[str, float]]  # item column -> value -> share of slots

    def group(self, column: str) -> ColumnGroups:
        for groups in self.groups:
            if groups.column == column:
                return groups
        raise InvalidInputError(f"column: no groups by {column!r}")

    def to_json(self) -> dict[str, Any]:
        ild = self.intra_list_diversity
        return {
            "lists": self.lists,
            "slots": self.slots,
            "exposure_gini": round(self.exposure_gini, DIGITS),
            "coverage": round(self.coverage, DIGITS),
            "novelty_bits": round(self.novelty_bits, DIGITS),
            "intra_list_diversity": None if ild is None else round(ild, DIGITS),
            "groups": {g.column: g.to_json() for g in self.groups},
            "exposure_by": {
                column: {v: round(s, DIGITS) for v, s in shares.items()}
                for column, shares in self.exposure_shares.items()
            },
        }


@dataclass(frozen=True, kw_only=True)
class CatalogueProfile:
    """What the models' exposure is compared with (the same for every model)."""

    items: int  # catalogue size
    training_users: int  # users with a positive training interaction (U of novelty)
    training_pairs: int  # positive training (user, item) pairs
    catalogue_shares: dict[str, dict[str, float]]  # item column -> value -> share of items
    interaction_shares: dict[str, dict[str, float]]  # ... -> share of training pairs


@dataclass(kw_only=True)
class FairnessReport:
    k: int
    group_by: tuple[str, ...]
    exposure_by: tuple[str, ...]
    diversity_by: tuple[str, ...]
    catalogue: CatalogueProfile
    models: dict[str, ModelFairness] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        catalogue = self.catalogue
        return {
            "group_by": list(self.group_by),
            "exposure_by": list(self.exposure_by),
            "diversity_by": list(self.diversity_by),
            "catalogue": {
                "items": catalogue.items,
                "training_users": catalogue.training_users,
                "training_pairs": catalogue.training_pairs,
                "exposure_by": {
                    column: {
                        value: {
                            "catalogue_share": round(share, DIGITS),
                            "interaction_share": round(
                                catalogue.interaction_shares[column].get(value, 0.0), DIGITS
                            ),
                        }
                        for value, share in shares.items()
                    }
                    for column, shares in catalogue.catalogue_shares.items()
                },
            },
            "models": {name: model.to_json() for name, model in self.models.items()},
        }

    def table(self) -> str:
        """Compact text tables: groups per user column, item-side metrics, exposure."""
        names = list(self.models)
        k = self.k
        blocks: list[str] = []
        for column in self.group_by:
            per_model = {name: self.models[name].group(column) for name in names}
            by_value = {
                name: {g.value: g for g in groups.groups} for name, groups in per_model.items()
            }
            values = sorted(
                {v for groups in by_value.values() for v in groups}, key=lambda v: (v == NONE, v)
            )
            if not values:
                continue
            rows = []
            for value in values:
                counts = {groups[value].users for groups in by_value.values() if value in groups}
                # models scored on other users (the temporal settings) have their own counts
                cells = [value, str(counts.pop()) if len(counts) == 1 else "varies"]
                for name in names:
                    g = by_value[name].get(value)
                    cells.append("-" if g is None else f"{g.precision:.4f} / {g.ndcg:.4f}")
                rows.append(cells)
            for label, part in (("max - min", "difference"), ("min / max", "ratio")):
                cells = [label, ""]
                for name in names:
                    pg, ng = per_model[name].precision_gap, per_model[name].ndcg_gap
                    cells.append(
                        f"{getattr(pg, part):.4f} / {getattr(ng, part):.4f}"
                        if pg is not None and ng is not None
                        else "-"
                    )
                rows.append(cells)
            title = f"P@{k} / NDCG@{k} by user {column}"
            blocks.append(title + "\n" + format_table([column, "users", *names], rows))
        ild_name = "ILD (Jaccard" + (
            f": {', '.join(self.diversity_by)})" if self.diversity_by else ")"
        )
        rows = [
            [
                name,
                f"{m.exposure_gini:.4f}",
                f"{m.coverage:.4f}",
                f"{m.novelty_bits:.3f}",
                "-" if m.intra_list_diversity is None else f"{m.intra_list_diversity:.4f}",
                str(m.lists),
            ]
            for name, m in self.models.items()
        ]
        blocks.append(
            f"beyond accuracy over the top-{k} lists (catalogue: {self.catalogue.items} items)\n"
            + format_table(
                ["model", "exposure Gini", "coverage", "novelty bits", ild_name, "lists"], rows
            )
        )
        for column in self.exposure_by:
            catalogue = self.catalogue.catalogue_shares[column]
            interactions = self.catalogue.interaction_shares[column]
            values = sorted(
                set(catalogue) | set(interactions),
                key=lambda v: (v == NONE, -interactions.get(v, 0.0), v),
            )
            rows = [
                [
                    value,
                    f"{catalogue.get(value, 0.0):.4f}",
                    f"{interactions.get(value, 0.0):.4f}",
                    *(
                        f"{self.models[name].exposure_shares[column].get(value, 0.0):.4f}"
                        for name in names
                    ),
                ]
                for value in values
            ]
            blocks.append(
                f"share of recommended slots by item {column} (catalogue: share of items, "
                f"interactions: of {self.catalogue.training_pairs} training pairs)\n"
                + format_table([column, "catalogue", "interactions", *names], rows)
            )
        return "\n\n".join(blocks)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _column_values(tokens: Sequence[str], column: str) -> tuple[str, ...]:
    prefix = column + "="
    return tuple(t[len(prefix) :] for t in tokens if t.startswith(prefix))


def _check_columns(
    asked: Iterable[str], table: FeatureTable | None, option: str, what: str
) -> tuple[str, ...]:
    asked = tuple(dict.fromkeys(asked))
    if not asked:
        return ()
    if table is None:
        raise InvalidInputError(f"{option}: needs the {what} file")
    unknown = [c for c in asked if c not in table.columns]
    if unknown:
        raise InvalidInputError(
            f"{option}: no {what} column {', '.join(map(repr, unknown))}; the {what} file "
            f"has {', '.join(table.columns) or 'no feature columns'}"
        )
    return asked


def check_settings(
    settings: FairnessSettings, users: FeatureTable | None, items: FeatureTable | None
) -> None:
    """InvalidInputError for a column the users or items file lacks (before any training)."""
    _check_columns(settings.group_by or (), users, "group_by", "users")
    _check_columns(settings.exposure_by, items, "exposure_by", "items")
    _check_columns(settings.diversity_by or (), items, "diversity_by", "items")


class FairnessContext:
    """Everything model-independent, computed once per run; :meth:`measure` a model."""

    def __init__(
        self,
        settings: FairnessSettings,
        data: TrainingData,
        k: int,
        *,
        catalogue: IntArray | None = None,
        users: FeatureTable | None = None,
        items: FeatureTable | None = None,
    ) -> None:
        n_items = data.shape[1]
        self.n_items = n_items
        self.catalogue = (
            np.arange(n_items, dtype=np.int64)
            if catalogue is None
            else np.asarray(catalogue, dtype=np.int64)
        )
        if self.catalogue.size == 0:
            raise InvalidInputError("catalogue: no item can be recommended")
        group_by = (
            tuple(users.columns if users is not None else ())
            if settings.group_by is None
            else _check_columns(settings.group_by, users, "group_by", "users")
        )
        self.exposure_by = _check_columns(settings.exposure_by, items, "exposure_by", "items")
        diversity_by = (
            tuple(items.columns if items is not None else ())
            if settings.diversity_by is None
            else _check_columns(settings.diversity_by, items, "diversity_by", "items")
        )
        user_tokens = users.as_dict() if users is not None else {}
        self.user_values = {
            column: {user: _column_values(t, column) for user, t in user_tokens.items()}
            for column in group_by
        }
        item_table = items.as_dict() if items is not None else {}
        item_tokens = [item_table.get(item, ()) for item in data.items.entities]
        self.item_values = {
            column: [_column_values(t, column) for t in item_tokens] for column in self.exposure_by
        }
        self.tokens: sp.csr_matrix | None = None
        if items is not None:
            prefixes = tuple(c + "=" for c in diversity_by)
            self.tokens = token_matrix(
                [[t for t in tokens if t.startswith(prefixes)] for tokens in item_tokens]
            )
        pairs = sp.csr_matrix(data.weights, dtype=np.float64)
        pairs.sum_duplicates()
        pairs.eliminate_zeros()
        user_counts = np.diff(pairs.tocsc().indptr).astype(np.int64)
        training_users = int(np.count_nonzero(np.diff(pairs.indptr)))
        self.information = self_information(user_counts, training_users)
        in_catalogue = np.zeros(n_items, dtype=np.float64)
        in_catalogue[self.catalogue] = 1.0
        self.report = FairnessReport(
            k=k,
            group_by=group_by,
            exposure_by=self.exposure_by,
            diversity_by=diversity_by,
            catalogue=CatalogueProfile(
                items=int(self.catalogue.size),
                training_users=training_users,
                training_pairs=int(pairs.nnz),
                catalogue_shares={
                    c: value_shares(in_catalogue, v) for c, v in self.item_values.items()
                },
                interaction_shares={
                    c: value_shares(user_counts, v) for c, v in self.item_values.items()
                },
            ),
        )

    def measure(self, name: str, accumulator: MetricAccumulator) -> ModelFairness:
        """The model's figures from its accumulated lists; recorded in :attr:`report`."""
        lists = accumulator.top_lists
        if len(accumulator.user_ids) != len(lists):
            raise InvariantError("fairness: every evaluated list needs its user's id")
        slots = exposure(lists, self.n_items)
        if int(slots.sum()) != int(slots[self.catalogue].sum()):
            raise InvariantError("fairness: a list recommended an item outside the catalogue")
        groups = tuple(
            group_scores(
                column,
                accumulator.user_ids,
                accumulator.per_user["precision"],
                accumulator.per_user["ndcg"],
                values,
            )
            for column, values in self.user_values.items()
        )
        result = ModelFairness(
            groups=groups,
            lists=len(lists),
            slots=int(slots.sum()),
            exposure_gini=gini(slots[self.catalogue]),
            coverage=coverage(slots[self.catalogue]),
            novelty_bits=novelty(lists, self.information),
            intra_list_diversity=(
                None if self.tokens is None else intra_list_diversity(lists, self.tokens)
            ),
            exposure_shares={c: value_shares(slots, v) for c, v in self.item_values.items()},
        )
        self.report.models[name] = result
        return result
