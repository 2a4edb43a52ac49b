"""The server's side of the feedback loop: which variant serves a request, recording what
was served and shown, and the report (README "Feedback and experiments").

The service asks :meth:`FeedbackLoop.arm` before ranking (the experiment active on that
surface now, and the user's variant by the stable hash of ``core/experiments.py``), and
hands every response to :meth:`FeedbackLoop.served`. Everything else (attribution,
statistics) is computed from the stored impressions and events when a report is asked
for, so every process sharing the store reports the same figures, and an erased user's
rows are simply gone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from shelfrank.core.errors import InvalidInputError, StorageError, UnknownIdError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.core.experiments import (
    Experiment,
    Variant,
    active_experiment,
    assign,
    load_experiments,
)
from shelfrank.core.ranking import Steering
from shelfrank.server.feedback.attribution import CLOCK_SKEW_MS, DEFAULT_ATTRIBUTION_WINDOW_MS
from shelfrank.server.feedback.recorder import ImpressionRecorder
from shelfrank.server.feedback.report import FeedbackReport, build_report
from shelfrank.server.requests import NotFoundError
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import EventStore, Impression, ImpressionKind
from shelfrank.server.store_common import KIND_CODES

log = logging.getLogger("shelfrank.feedback")

# Responses a process remembers for its live attribution counters (see FeedbackLoop).
REMEMBERED_RESPONSES = 100_000
# The event types attribution counts (clicks, carts, purchases, dismissals).
COUNTED = frozenset({EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.DISMISS})

# How often a process looks at the experiment file's modification time (seconds).
RELOAD_CHECK_SECONDS = 1.0


# Who holds the store's pins of the versions experiment variants serve (EventStore.pin_models).
PIN_OWNER = "experiments"


def pinned_versions_of(experiments: Sequence[Experiment]) -> set[str]:
    """The model versions the variants of ``experiments`` pin."""
    return {
        version
        for experiment in experiments
        for variant in experiment.variants
        if (version := variant.pinned_version) is not None
    }


@dataclass(frozen=True)
class Arm:
    """The variant that serves one request."""

    experiment: str
    variant: Variant

    @property
    def popularity(self) -> bool:
        return self.variant.setting == "popularity"

    def steering(self, default: Steering) -> Steering:
        """The server's default steering with the variant's options where it sets them."""
        variant = self.variant
        if (
            variant.diversity is None
            and variant.exploration is None
            and variant.max_per_feature is None
        ):
            return default
        return Steering(
            diversity=default.diversity if variant.diversity is None else variant.diversity,
            max_per_feature=(
                default.max_per_feature
                if variant.max_per_feature is None
                else variant.max_per_feature
            ),
            exploration=default.exploration if variant.exploration is None else variant.exploration,
            exploration_max_age_ms=default.exploration_max_age_ms,
        )


class ExperimentFile:
    """The experiments of ``--experiments FILE``, reloaded when the file changes (checked
    at most every second). A change that does not load is logged and the experiments
    loaded before keep running; at start a bad file is refused (InvalidInputError)."""

    def __init__(
        self, path: Path, check: Callable[[tuple[Experiment, ...]], None] | None = None
    ) -> None:
        self.path = path
        # More checks than the file's own (pinned versions the store must hold): raise
        # InvalidInputError to refuse a load.
        self.check = check
        stamp = self._modified()
        self._experiments = self._load()
        # The file's (mtime, size) when last loaded, and when it last failed to load (a
        # bad file is tried again only once it changes; a store error, every check).
        self._stamp = stamp
        self._refused: tuple[int, int] | None = None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _load(self) -> tuple[Experiment, ...]:
        experiments = load_experiments(self.path)
        if self.check is not None:
            try:
                self.check(experiments)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{self.path}: {exc}") from None
        return experiments

    def _modified(self) -> tuple[int, int]:
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_size

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_SECONDS and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                self._reload_if_changed()
            finally:
                self._lock.release()
        return self._experiments

    def reload(self) -> tuple[Experiment, ...]:
        """Load the file now (InvalidInputError, and nothing changed, if it does not load)."""
        with self._lock:
            stamp = self._modified()
            self._experiments = self._load()
            self._stamp = stamp
            return self._experiments

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._modified()
        except OSError as exc:
            log.error("experiments: %s unreadable (%s); keeping the loaded ones", self.path, exc)
            return
        if stamp in (self._stamp, self._refused):
            return
        try:
            self._experiments = self._load()
        except InvalidInputError as exc:
            self._refused = stamp
            log.error("experiments: not reloaded, keeping the loaded ones: %s", exc)
            return
        except StorageError as exc:  # checking pinned versions needs the store: retried
            log.warning("experiments: reload deferred, the store is unavailable: %s", exc)
            return
        self._stamp = stamp
        self._refused = None
        log.info("experiments: reloaded %s (%d)", self.path, len(self._experiments))


class FeedbackLoop:
    """Experiments, impression recording and reports for one serving process."""

    def __init__(
        self,
        store: EventStore,
        *,
        experiments: ExperimentFile | None = None,
        record: bool = True,
        window_ms: int = DEFAULT_ATTRIBUTION_WINDOW_MS,
        recorder: ImpressionRecorder | None = None,
        on_served: Callable[[str, str, str], None] | None = None,
        on_attributed: Callable[[str, str, EventType], None] | None = None,
        remembered: int = REMEMBERED_RESPONSES,
        load_model: Callable[[str], ServingState] | None = None,
    ) -> None:
        if window_ms <= 0:
            raise InvalidInputError(f"attribution window: must be positive, got {window_ms} ms")
        self._store = store
        # Loads a stored model version for the variants that pin one (None: none may).
        self.load_model = load_model
        self.experiment_file = experiments
        if experiments is not None:
            experiments.check = self.check_pinned
            try:
                experiments.reload()  # the pinned versions checked too, at start
            except BaseException:
                if recorder is not None:
                    recorder.close()
                raise
        self.window_ms = window_ms
        self._on_served = on_served  # (surface, experiment, variant): metrics
        # (experiment, variant, event type) of each accepted event carrying the id of a
        # response this process served lately: live per-variant counters (metrics). The
        # report's attribution (every rule, every process) is the reference.
        self._on_attributed = on_attributed
        self._recent: LRUCache[str, tuple[str, str, str, frozenset[str]]] = LRUCache(
            maxsize=remembered
        )
        self._recent_lock = threading.Lock()
        self.recorder = (recorder or ImpressionRecorder(store)) if record else None

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        return () if self.experiment_file is None else self.experiment_file.experiments

    def pinned_versions(self) -> set[str]:
        """The model versions this process's experiment variants pin."""
        return pinned_versions_of(self.experiments)

    def check_pinned(self, experiments: tuple[Experiment, ...]) -> None:
        """Refuse experiments pinning a version this server cannot serve, else pin their
        versions in the store (owner :data:`PIN_OWNER`, replacing the pins of the file
        loaded before), so that no process prunes them: a dedicated trainer knows no
        experiments. A process that only reports (no ``load_model``) checks nothing."""
        if self.load_model is None:
            return
        missing = self._store.pin_models(PIN_OWNER, pinned_versions_of(experiments))
        for experiment in experiments:
            for variant in experiment.variants:
                version = variant.pinned_version
                if version in missing:
                    raise InvalidInputError(
                        f"experiment {experiment.name!r}: variant {variant.name!r}: pins "
                        f"model {version!r}, which the store does not hold"
                    )

    def arm(self, surface: str, user_id: str, now_ms: int) -> Arm | None:
        """The variant serving ``user_id`` on ``surface`` now (None: no experiment)."""
        if not user_id or self.experiment_file is None:
            return None
        experiment = active_experiment(self.experiments, surface, now_ms)
        if experiment is None:
            return None
        return Arm(experiment.name, assign(experiment, user_id))

    def served(
        self,
        *,
        recommendation_id: str,
        user_id: str,
        surface: str,
        arm: Arm | None,
        model_version: str,
        item_ids: Sequence[str],
        now_ms: int,
        erasure_seen: int | None = None,
    ) -> None:
        """Count a response and record it as served (when recording is on)."""
        experiment = "" if arm is None else arm.experiment
        variant = "" if arm is None else arm.variant.name
        if self._on_served is not None:
            self._on_served(surface, experiment, variant)
        if self._on_attributed is not None and user_id:
            with self._recent_lock:
                self._recent[recommendation_id] = (
                    user_id,
                    experiment,
                    variant,
                    frozenset(item_ids),
                )
        if self.recorder is None:
            return
        self.recorder.record(
            Impression(
                recommendation_id=recommendation_id,
                kind=ImpressionKind.SERVED,
                user_id=user_id,
                time_ms=now_ms,
                surface=surface,
                experiment=experiment,
                variant=variant,
                model_version=model_version,
                item_ids=tuple(item_ids),
                erasure_seen=erasure_seen,
            )
        )

    def tracked(self, events: Sequence[StoredEvent]) -> None:
        """Count accepted events that carry the id of a response served here lately,
        for the same user and an item it showed (live metrics only)."""
        if self._on_attributed is None:
            return
        for event in events:
            if not event.recommendation_id or event.event_type not in COUNTED:
                continue
            with self._recent_lock:
                served = self._recent.get(event.recommendation_id)
            if served is None:
                continue
            user_id, experiment, variant, items = served
            if user_id == event.user_id and event.item_id in items:
                self._on_attributed(experiment, variant, event.event_type)

    def flush(self) -> None:
        """Write this process's pending impressions (before an erasure or a report)."""
        if self.recorder is not None:
            self.recorder.flush()

    def report_shown(self, impressions: Sequence[Impression]) -> tuple[int, int]:
        """Store what callers or devices showed: (newly stored, duplicates)."""
        accepted = self._store.record_impressions(impressions)
        return accepted, len(impressions) - accepted

    def report(self, experiment: str = "", from_ms: int = 0, to_ms: int = 0) -> FeedbackReport:
        """The report of the responses served in ``[from_ms, to_ms)`` (0: from the start;
        to now) and the events attributed to them. Impressions and events around the
        range are read too, so that attribution inside it is the same as over all time
        (an event goes to the latest impression, which may lie after the range)."""
        self.flush()
        now_ms = int(time.time() * 1000)
        until = to_ms or now_ms + 1
        margin = self.window_ms + CLOCK_SKEW_MS
        # (The stores clamp times beyond 64 bits: a range may reach the end of time.)
        impressions = list(self._store.impressions_between(from_ms - margin, until + margin))
        events = list(
            self._store.events_between(from_ms - CLOCK_SKEW_MS, until + self.window_ms + 1)
        )
        missed = self._other_halves(impressions, events)
        if missed:  # in the stores' order, as attribution reads them
            impressions = sorted(
                impressions + missed,
                key=lambda i: (i.time_ms, i.recommendation_id, KIND_CODES[i.kind]),
            )
        try:
            return build_report(
                impressions,
                events,
                self.experiments,
                window_ms=self.window_ms,
                now_ms=now_ms,
                experiment=experiment or None,
                between=(from_ms, until),
            )
        except UnknownIdError:
            raise NotFoundError(f"experiment: no experiment named {experiment!r}") from None

    def _other_halves(
        self, impressions: list[Impression], events: list[StoredEvent]
    ) -> list[Impression]:
        """The stored records the time-range read missed: a SHOWN record carries the time
        its caller sent, so the SERVED half of a response may lie far outside the range
        (and the other way round), and an event in the range may answer a response served
        long before it. Without them a range counts a response twice or under another
        group, or calls an expired response unknown: read by their ids (primary-key
        lookups of the ids with one record in the range, or none)."""
        kinds: dict[str, set[ImpressionKind]] = {}
        for impression in impressions:
            kinds.setdefault(impression.recommendation_id, set()).add(impression.kind)
        wanted = {rid for rid, found in kinds.items() if len(found) < len(ImpressionKind)}
        wanted |= {e.recommendation_id for e in events if e.recommendation_id} - kinds.keys()
        return [
            impression
            for impression in self._store.impressions_of(wanted)
            if impression.kind not in kinds.get(impression.recommendation_id, ())
        ]

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


__all__ = ["PIN_OWNER", "Arm", "ExperimentFile", "FeedbackLoop", "pinned_versions_of"]
