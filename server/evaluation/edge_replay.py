"""Edge replay: does reranking with the on-device session beat the stale server model?

The server model lags behind the shopper; the device knows the session. The protocol:

1. **Split** (:func:`replay_split`). Per user, events sorted by timestamp; the *session* is
   the last ``session_length`` (10) events, shortened so that it never splits a group of
   events sharing one timestamp (it is the events strictly later than the timestamp of
   the ``session_length + 1``-th last event). Users with at most ``session_length +
   min_history`` events are not replayed; all their events train. Everything that is not a
   session trains the server model (``TrainConfig`` as given; seed it).
2. **Steps** (:func:`replay_steps`). A user's session is replayed one *moment* at a time,
   a moment being one distinct timestamp: MovieLens-100k stores whole pages of ratings
   under one second (48% of the gaps in the last 11 events are 0 s), so their order inside
   a moment is unknown and nothing in a moment may be used to predict the rest of it. At
   each moment the targets are its events of a ``relevant`` type (default: every positive
   type, i.e. whatever the shopper did next; with MovieLens any rating), minus items the
   user had already touched; the device has seen the session's earlier moments (real event
   types and timestamps; ``now`` = the moment's timestamp); the candidates are all items
   the user has not touched (training history plus the session so far).
3. **Scoring**. ``server-stale`` ranks the candidates by the model's score (user · item +
   biases); ``edge-rerank`` reranks *all* the candidates with
   :func:`shelfrank.core.session.rerank` (1.7k items on ml-100k: cheap, and no target is
   lost outside a top-M). Both rankings see the same candidates and targets. A session's
   first moment has an empty session, where both agree; it is kept (the device starts
   there too), so the improvement is not flattered by leaving it out.
   Metrics are means over scored moments: HR@k (a target in the top k), NDCG@k, and the
   usual precision, recall, MAP, AUC, coverage and popularity bias.

Tuning (:func:`tune_session_config`) repeats the split on the training side only: the last
session of each user's *training* events is the validation replay, and a model trained
without them scores it. The test sessions are never looked at. The committed
``SessionConfig`` defaults come from that search on MovieLens-100k (u.data, default
``TrainConfig`` with seed 1 and one thread; 822 users, 3,924 validation moments, stale
NDCG@10 0.0679):

- strength {4..12} x half_life_seconds {600 s .. 1 day, inf} x half_life_events {0.5 .. 4,
  inf}, then a finer grid around the top: a plateau at strength 10-12, 10 min to 1 day,
  1-2 events (NDCG@10 0.099-0.100); no time fade or no recency (inf) is worse;
- then one knob at a time: view weight 0.75 (of 0.25 .. 1, purchase 1), diversity 0 (0.1
  ties, 1 and more lose), max_events makes no difference above 10 (sessions here are <= 10);
- chosen: strength 10, 600 s, 1.5 events, view 0.75: NDCG@10 0.1006, +48% on validation.
  Blending vectors instead of scores (dot product with raw item vectors) peaked at 0.0903.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import POSITIVE_EVENT_TYPES, EventType
from shelfrank.core.scoring import top_k
from shelfrank.core.serving import ServingModel
from shelfrank.core.session import SessionConfig, SessionEvent, rerank
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.metrics import (
    MetricAccumulator,
    auc_score,
    popularity_percentiles,
)
from shelfrank.server.evaluation.runner import EvaluationReport, ModelResult
from shelfrank.server.hybrid import HybridModel

IndexArray = npt.NDArray[np.int64]
STALE, EDGE = "server-stale", "edge-rerank"


@dataclass(frozen=True)
class ReplaySplit:
    """``train`` for the server model, ``sessions`` to replay (see the module docstring)."""

    train: Interactions
    sessions: Interactions
    notes: dict[str, int] = field(default_factory=dict)


def replay_split(
    interactions: Interactions, session_length: int = 10, min_history: int = 5
) -> ReplaySplit:
    """Per user, the events after the ``session_length + 1``-th last timestamp replay."""
    if session_length < 1:
        raise InvalidInputError(f"session_length: must be >= 1, got {session_length}")
    if min_history < 1:
        raise InvalidInputError(f"min_history: must be >= 1, got {min_history}")
    stamps = interactions.timestamps
    if np.isnan(stamps).any():
        raise InvalidInputError("timestamp: the edge replay needs a timestamp on every event")
    by_user: dict[str, list[int]] = {}
    for index, user in enumerate(interactions.user_ids):
        by_user.setdefault(user, []).append(index)
    in_session = np.zeros(len(interactions), dtype=bool)
    replayed = 0
    for indices in by_user.values():
        if len(indices) <= session_length + min_history:
            continue
        rows = np.array(indices, dtype=np.int64)
        ordered = rows[np.argsort(stamps[rows], kind="stable")]
        cut = stamps[ordered[-(session_length + 1)]]
        chosen = ordered[stamps[ordered] > cut]
        if chosen.size:
            in_session[chosen] = True
            replayed += 1
    return ReplaySplit(
        interactions.take(~in_session),
        interactions.take(in_session),
        notes={
            "session_length": session_length,
            "min_history": min_history,
            "replayed_users": replayed,
        },
    )


@dataclass(frozen=True, kw_only=True)
class ReplayStep:
    """One moment of one user's session: what the device knows and what happened next."""

    user: int  # user row of the serving model
    events: tuple[SessionEvent, ...]  # the session's earlier moments, oldest first
    exclude: IndexArray  # items touched before this moment (training + session so far)
    targets: IndexArray  # item rows of the moment's relevant events
    now: float


def replay_steps(
    sessions: Interactions,
    serving: ServingModel,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
) -> tuple[list[ReplayStep], dict[str, int]]:
    """The scored moments of every session, plus counts of what could not be scored."""
    wanted = {int(kind) for kind in relevant}
    by_user: dict[str, list[int]] = {}
    for index, user_id in enumerate(sessions.user_ids):
        by_user.setdefault(user_id, []).append(index)
    dropped = {"session_users_unknown": 0, "session_events_unknown_item": 0}
    steps: list[ReplayStep] = []
    for user_id in sorted(by_user, key=lambda u: (len(u), u)):
        user = serving.user_ids.get(user_id)
        if user is None:
            dropped["session_users_unknown"] += 1
            continue
        indices = np.array(by_user[user_id], dtype=np.int64)
        indices = indices[np.argsort(sessions.timestamps[indices], kind="stable")]
        touched = set(serving.seen.row(user).tolist())
        history: list[SessionEvent] = []
        for moment in _moments(sessions, indices):
            now = float(sessions.timestamps[moment[0]])
            known = [
                (row, index)
                for index in moment.tolist()
                if (row := serving.item_ids.get(sessions.item_ids[index])) is not None
            ]
            dropped["session_events_unknown_item"] += len(moment) - len(known)
            targets = sorted(
                {
                    row
                    for row, index in known
                    if int(sessions.event_types[index]) in wanted and row not in touched
                }
            )
            if targets:
                steps.append(
                    ReplayStep(
                        user=user,
                        events=tuple(history),
                        exclude=np.array(sorted(touched), dtype=np.int64),
                        targets=np.array(targets, dtype=np.int64),
                        now=now,
                    )
                )
            for row, index in known:
                history.append(SessionEvent(row, EventType(int(sessions.event_types[index])), now))
                touched.add(row)
    return steps, dropped


def _moments(sessions: Interactions, ordered: IndexArray) -> Iterable[IndexArray]:
    stamps = sessions.timestamps[ordered]
    starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    return np.split(ordered, starts[1:])


@dataclass
class _Scores:
    """Metric accumulator plus HR@k (the accumulator's recall is per target, not per step)."""

    metrics: MetricAccumulator
    hits: list[float] = field(default_factory=list)

    def add(self, top: IndexArray, targets: IndexArray, auc: float) -> None:
        self.metrics.add(top, targets, auc)
        self.hits.append(float(np.isin(top, targets).any()))

    def result(self) -> dict[str, float]:
        out = self.metrics.result()
        out["hr"] = float(np.mean(self.hits)) if self.hits else float("nan")
        return out


def replay(
    serving: ServingModel,
    steps: Sequence[ReplayStep],
    session_config: SessionConfig,
    k: int = 10,
    *,
    with_auc: bool = True,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Metrics of the stale ranking and of the edge rerank over ``steps``."""
    if k <= 0:
        raise InvalidInputError(f"k: must be positive, got {k}")
    n_items = len(serving.items)
    percentiles = popularity_percentiles(serving.item_popularity)
    scores = {name: _Scores(MetricAccumulator(k, n_items, percentiles)) for name in (STALE, EDGE)}
    vectors = serving.items.item_vectors
    base = np.empty(0, dtype=np.float32)
    base_user = -1  # steps come grouped by user: score each user's items once
    nan = float("nan")
    for step in tqdm(steps, desc="edge replay", unit="step", disable=not progress, leave=False):
        if step.user != base_user:
            base_user = step.user
            base = serving.items.scores(
                serving.user_vectors[step.user], float(serving.user_biases[step.user])
            )
        allowed = np.ones(n_items, dtype=bool)
        allowed[step.exclude] = False
        candidates = np.flatnonzero(allowed)
        stale = top_k(base, k, exclude=step.exclude)
        edge = rerank(candidates, base[candidates], vectors, step.events, step.now, session_config)
        stale_auc = edge_auc = nan
        if with_auc:
            is_target = np.isin(candidates, step.targets)
            stale_auc = auc_score(base[candidates], is_target)
            aligned = np.empty(candidates.size, dtype=np.float32)
            aligned[np.searchsorted(candidates, edge.rows)] = edge.scores
            edge_auc = auc_score(aligned, is_target)
        scores[STALE].add(stale.indices, step.targets, stale_auc)
        scores[EDGE].add(edge.rows[:k], step.targets, edge_auc)
    return {name: value.result() for name, value in scores.items()}


def evaluate_edge_replay(
    interactions: Interactions,
    config: TrainConfig,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    session_config: SessionConfig | None = None,
    session_length: int = 10,
    min_history: int = 5,
    k: int = 10,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
    progress: bool = False,
) -> EvaluationReport:
    """The test replay: train on everything but the sessions, replay the sessions."""
    session_cfg = session_config or SessionConfig()
    split = replay_split(interactions, session_length, min_history)
    if len(split.sessions) == 0:
        raise InvalidInputError(
            f"interactions: no user has more than {session_length + min_history} events "
            "with distinct enough timestamps to replay"
        )
    model = HybridModel.train(split.train, config, items=items, users=users, progress=progress)
    serving = model.to_serving()
    steps, dropped = replay_steps(split.sessions, serving, relevant)
    if not steps:
        raise InvalidInputError("sessions: no replayed moment has a target the model can rank")
    results = replay(serving, steps, session_cfg, k, progress=progress)
    fit_seconds = model.summary.total_seconds if model.summary else 0.0
    users_scored = len({step.user for step in steps})
    report = EvaluationReport(
        protocol="edge-replay",
        k=k,
        results=[
            ModelResult(
                name=name, metrics=results[name], users=users_scored, fit_seconds=fit_seconds
            )
            for name in results
        ],
        notes={
            **split.notes,
            **dropped,
            "train_events": len(split.train),
            "session_events": len(split.sessions),
            "steps": len(steps),
            "steps_with_session": sum(1 for step in steps if step.events),
        },
    )
    stale, edge = results[STALE]["ndcg"], results[EDGE]["ndcg"]
    report.notes["ndcg_relative_improvement"] = (
        round(edge / stale - 1.0, 4) if stale > 0 else float("nan")
    )
    report.notes[f"hr@{k}_stale"] = round(results[STALE]["hr"], 4)
    report.notes[f"hr@{k}_edge"] = round(results[EDGE]["hr"], 4)
    report.notes.update(_config_notes(session_cfg))
    return report


def _config_notes(config: SessionConfig) -> dict[str, float | int]:
    return {f"session_{key}": value for key, value in asdict(config).items()}


@dataclass(frozen=True)
class TuningResult:
    """The validation replay: the stale baseline and each candidate config, best first."""

    stale: dict[str, float]
    ranked: list[tuple[SessionConfig, dict[str, float]]]

    @property
    def best(self) -> SessionConfig:
        return self.ranked[0][0]


def tune_session_config(
    interactions: Interactions,
    config: TrainConfig,
    candidates: Sequence[SessionConfig],
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    session_length: int = 10,
    min_history: int = 5,
    k: int = 10,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
    progress: bool = False,
) -> TuningResult:
    """Rank ``candidates`` by NDCG@k on the validation replay, carved from the training
    side of :func:`replay_split` so that the test sessions play no part in the choice."""
    if not candidates:
        raise InvalidInputError("candidates: need at least one SessionConfig")
    outer = replay_split(interactions, session_length, min_history)
    inner = replay_split(outer.train, session_length, min_history)
    model = HybridModel.train(inner.train, config, items=items, users=users, progress=progress)
    serving = model.to_serving()
    steps, _ = replay_steps(inner.sessions, serving, relevant)
    if not steps:
        raise InvalidInputError("sessions: the validation replay has no scorable moment")
    stale: dict[str, float] = {}
    ranked: list[tuple[SessionConfig, dict[str, float]]] = []
    for candidate in tqdm(candidates, desc="tuning", disable=not progress, leave=False):
        results = replay(serving, steps, candidate, k, with_auc=False)
        stale = results[STALE]
        ranked.append((candidate, results[EDGE]))
    ranked.sort(key=lambda pair: -pair[1]["ndcg"])  # stable: earlier candidates win ties
    return TuningResult(stale, ranked)


__all__ = [
    "EDGE",
    "STALE",
    "ReplaySplit",
    "ReplayStep",
    "TuningResult",
    "evaluate_edge_replay",
    "replay",
    "replay_split",
    "replay_steps",
    "tune_session_config",
]
