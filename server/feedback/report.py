"""The feedback report: how the responses of each experiment variant fared.

:func:`build_report` attributes events to responses (:mod:`.attribution`) and counts per
experiment and variant, and within a variant per model version and per UTC day (of the
response). Responses outside any experiment (experiment ``""``) are counted apart, under
"all traffic", per surface.

The unit is one response (its effective impression). A rate is the share of responses
with at least one attributed event of its kind: ``ctr`` (a view), ``add_to_cart_rate``
(an add to cart), ``conversion`` (a purchase), ``dismissal_rate`` (a dismissal), each
with its 95% Wilson interval. ``clicks``, ``carts``, ``purchases`` and ``dismissals``
count the attributed events.

Every variant is compared with the experiment's control on ``ctr`` and ``conversion``:
the difference (variant - control) with Newcombe's 95% interval, which is valid for one
look at a horizon fixed in advance, and the always-valid 95% confidence sequence and
p-value of the mSPRT over the days' cumulative counts, valid however often the report is
looked at (:mod:`.stats`). The verdict ("ahead", "behind", "no difference yet") is the
mSPRT's. The control is the configuration's; for an experiment found only in the data,
its variant named "control" (if none, no comparisons).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shelfrank.core.errors import InvalidInputError, UnknownIdError
from shelfrank.core.events import StoredEvent
from shelfrank.core.experiments import Experiment
from shelfrank.server.feedback.attribution import (
    DEFAULT_ATTRIBUTION_WINDOW_MS,
    ResponseOutcome,
    attribute,
)
from shelfrank.server.feedback.stats import (
    Checkpoint,
    Verdict,
    difference_interval,
    sequential_test,
    wilson_interval,
)
from shelfrank.server.storage import Impression

DAY_MS = 86_400_000
ALL_TRAFFIC = "all traffic"
CONFIDENCE = 0.95
ALPHA = 0.05
# (JSON name, attributed-event count, responses-with-one field) of every rate.
RATES = (
    ("ctr", "clicks", "clicked"),
    ("add_to_cart_rate", "carts", "carted"),
    ("conversion", "purchases", "purchased"),
    ("dismissal_rate", "dismissals", "dismissed"),
)
COMPARED: tuple[Literal["ctr", "conversion"], ...] = ("ctr", "conversion")


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Counts of a set of responses: the responses, the attributed events, and the
    responses with at least one event of each kind."""

    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    dismissals: int = 0
    clicked: int = 0
    carted: int = 0
    purchased: int = 0
    dismissed: int = 0

    def _rate(self, responses: int) -> float:
        return responses / self.impressions if self.impressions else 0.0

    @property
    def ctr(self) -> float:
        return self._rate(self.clicked)

    @property
    def add_to_cart_rate(self) -> float:
        return self._rate(self.carted)

    @property
    def conversion(self) -> float:
        return self._rate(self.purchased)

    @property
    def dismissal_rate(self) -> float:
        return self._rate(self.dismissed)

    def successes(self, rate: str) -> int:
        """Responses with at least one event of the rate's kind (``"ctr"``, ...)."""
        for name, _, field_name in RATES:
            if name == rate:
                value: int = getattr(self, field_name)
                return value
        raise InvalidInputError(f"rate: unknown {rate!r}")

    def interval(self, rate: str) -> tuple[float, float]:
        """The 95% Wilson interval of a rate."""
        return wilson_interval(self.successes(rate), self.impressions, CONFIDENCE)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "impressions": self.impressions,
            "clicks": self.clicks,
            "carts": self.carts,
            "purchases": self.purchases,
            "dismissals": self.dismissals,
        }
        for name, _, _ in RATES:
            out[name] = self._rate(self.successes(name))
            out[f"{name}_ci"] = list(self.interval(name))
        return out


class _Tally:
    __slots__ = tuple(f.name for f in dataclasses.fields(Metrics))

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, outcome: ResponseOutcome) -> None:
        self.impressions += 1
        if outcome.clicks:
            self.clicks += outcome.clicks
            self.clicked += 1
        if outcome.carts:
            self.carts += outcome.carts
            self.carted += 1
        if outcome.purchases:
            self.purchases += outcome.purchases
            self.purchased += 1
        if outcome.dismissals:
            self.dismissals += outcome.dismissals
            self.dismissed += 1

    def freeze(self) -> Metrics:
        return Metrics(**{name: getattr(self, name) for name in self.__slots__})

    # Attributes made by __slots__ (declared for the type checker).
    impressions: int
    clicks: int
    carts: int
    purchases: int
    dismissals: int
    clicked: int
    carted: int
    purchased: int
    dismissed: int


class _Group:
    """A tally with its breakdowns per model version and per UTC day."""

    __slots__ = ("by_day", "by_model_version", "total")

    def __init__(self) -> None:
        self.total = _Tally()
        self.by_model_version: dict[str, _Tally] = {}
        self.by_day: dict[int, _Tally] = {}

    def add(self, outcome: ResponseOutcome) -> None:
        self.total.add(outcome)
        impression = outcome.impression
        version = self.by_model_version.get(impression.model_version)
        if version is None:
            version = self.by_model_version[impression.model_version] = _Tally()
        version.add(outcome)
        day_number = impression.time_ms // DAY_MS
        day = self.by_day.get(day_number)
        if day is None:
            day = self.by_day[day_number] = _Tally()
        day.add(outcome)


@dataclass(frozen=True, kw_only=True)
class Breakdown:
    """The responses of one variant (or one surface outside experiments): in total, per
    model version and per UTC day (``YYYY-MM-DD``)."""

    name: str
    metrics: Metrics
    by_model_version: tuple[tuple[str, Metrics], ...] = ()
    by_day: tuple[tuple[str, Metrics], ...] = ()

    def to_json(self, key: str = "name") -> dict[str, Any]:
        return {
            key: self.name,
            **self.metrics.to_json(),
            "by_model_version": [
                {"model_version": version, **metrics.to_json()}
                for version, metrics in self.by_model_version
            ],
            "by_day": [{"day": day, **metrics.to_json()} for day, metrics in self.by_day],
        }


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A variant against the control on one rate: the difference (variant - control) with
    Newcombe's interval, the mSPRT's always-valid interval and p-value, its verdict."""

    variant: str
    control: str
    metric: Literal["ctr", "conversion"]
    difference: float
    ci: tuple[float, float]
    always_valid_ci: tuple[float, float]
    p_value: float
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "control": self.control,
            "metric": self.metric,
            "difference": self.difference,
            "ci": list(self.ci),
            "always_valid_ci": list(self.always_valid_ci),
            "p_value": self.p_value,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, kw_only=True)
class ExperimentReport:
    """The variants of one experiment (control first) and their comparisons with it
    (``control`` None: no comparisons)."""

    name: str
    control: str | None
    variants: tuple[Breakdown, ...]
    comparisons: tuple[Comparison, ...]

    def variant(self, name: str) -> Breakdown:
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(repr(v.name) for v in self.variants)
        raise UnknownIdError(f"variant: experiment {self.name!r} has no variant {name!r} ({known})")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variants": [variant.to_json() for variant in self.variants],
            "comparisons": [comparison.to_json() for comparison in self.comparisons],
        }


@dataclass(frozen=True, kw_only=True)
class FeedbackReport:
    """Experiments (configured ones in configuration order, then those found only in the
    data), the traffic outside experiments per surface, the events not attributed by
    reason."""

    experiments: tuple[ExperimentReport, ...]
    traffic: tuple[Breakdown, ...]  # per surface, responses outside any experiment
    unattributed: Mapping[str, int]
    attributed: int
    window_ms: int
    generated_ms: int

    def experiment(self, name: str) -> ExperimentReport:
        """The report of one experiment; UnknownIdError if neither the data nor the
        configuration has it."""
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        known = ", ".join(repr(e.name) for e in self.experiments) or "none"
        raise UnknownIdError(
            f"experiment: no experiment {name!r} in the data or the configuration (known: {known})"
        )

    def only(self, name: str) -> FeedbackReport:
        """This report restricted to one experiment (no traffic section); UnknownIdError
        if there is no such experiment."""
        return dataclasses.replace(self, experiments=(self.experiment(name),), traffic=())

    def to_json(self) -> dict[str, Any]:
        return {
            "experiments": [experiment.to_json() for experiment in self.experiments],
            "traffic": {
                "name": ALL_TRAFFIC,
                "surfaces": [surface.to_json("surface") for surface in self.traffic],
            },
            "unattributed": dict(self.unattributed),
            "window_ms": self.window_ms,
            "generated_ms": self.generated_ms,
        }

    def table(self) -> str:
        """The report as plain-text tables for a terminal."""
        from shelfrank.server.evaluation.fairness import format_table

        headers = [
            "",
            "impressions",
            "clicks",
            "carts",
            "purchases",
            "dismissals",
            "ctr [95% CI]",
            "cart rate",
            "conversion",
            "dismissal rate",
        ]
        blocks: list[str] = []
        for experiment in self.experiments:
            control = f" (control: {experiment.control})" if experiment.control else ""
            blocks.append(f"experiment {experiment.name}{control}")
            rows = [_metrics_row(v.name, v.metrics) for v in experiment.variants]
            blocks.append(format_table(["variant", *headers[1:]], rows))
            if experiment.comparisons:
                blocks.append(
                    format_table(
                        [
                            "variant",
                            "metric",
                            "difference [95% CI]",
                            "always valid",
                            "p",
                            "verdict",
                        ],
                        [
                            [
                                f"{c.variant} vs {c.control}",
                                c.metric,
                                f"{_points(c.difference)} {_interval(c.ci, points=True)}",
                                _interval(c.always_valid_ci, points=True),
                                f"{c.p_value:.3g}",
                                c.verdict,
                            ]
                            for c in experiment.comparisons
                        ],
                    )
                )
            blocks.append("")
        if self.traffic:
            blocks.append(f"{ALL_TRAFFIC} outside experiments")
            rows = [_metrics_row(s.name, s.metrics) for s in self.traffic]
            blocks.append(format_table(["surface", *headers[1:]], rows))
            blocks.append("")
        if not self.experiments and not self.traffic:
            blocks.append("no impressions")
            blocks.append("")
        hours = self.window_ms / 3_600_000
        not_attributed = ", ".join(f"{k} {v:,}" for k, v in self.unattributed.items())
        blocks.append(
            "rates: % of responses with at least one such event [95% Wilson interval]; "
            "differences: variant - control in percentage points"
        )
        blocks.append(
            f"events attributed: {self.attributed:,} (window {hours:g} h); "
            f"not attributed: {not_attributed}"
        )
        return "\n".join(blocks)

    def plot(self, path: str | Path) -> None:
        """A PNG: ctr (left) and conversion (right) per UTC day, one line per variant with
        its 95% Wilson band; one row per experiment (then one for the traffic outside
        experiments, one line per surface)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sections: list[tuple[str, tuple[Breakdown, ...]]] = [
            (f"experiment {e.name}", e.variants) for e in self.experiments
        ]
        if self.traffic:
            sections.append((f"{ALL_TRAFFIC} outside experiments", self.traffic))
        rows = max(1, len(sections))
        figure, panels = plt.subplots(rows, 2, figsize=(12, 3.6 * rows), squeeze=False)
        if not sections:
            for axes in panels[0]:
                axes.text(0.5, 0.5, "no impressions", ha="center", va="center")
                axes.set_axis_off()
        for (title, series), row in zip(sections, panels, strict=False):
            days = sorted({day for breakdown in series for day, _ in breakdown.by_day})
            position = {day: index for index, day in enumerate(days)}
            for axes, metric in zip(row, COMPARED, strict=True):
                for breakdown in series:
                    xs = [position[day] for day, _ in breakdown.by_day]
                    values = [_rate_of(m, metric) for _, m in breakdown.by_day]
                    intervals = [m.interval(metric) for _, m in breakdown.by_day]
                    lows = [low for low, _ in intervals]
                    highs = [high for _, high in intervals]
                    (line,) = axes.plot(xs, values, marker="o", label=breakdown.name)
                    if len(xs) > 1:
                        axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
                    elif xs:
                        axes.vlines(xs, lows, highs, color=line.get_color(), alpha=0.5)
                axes.set_title(f"{title}: {metric}", fontsize=10)
                axes.set_xticks(range(len(days)))
                axes.set_xticklabels(days, rotation=30 if len(days) > 6 else 0, fontsize=7)
                axes.set_ylim(bottom=0)
                axes.grid(alpha=0.3)
                if series:
                    axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)


def _rate_of(metrics: Metrics, rate: str) -> float:
    return metrics.successes(rate) / metrics.impressions if metrics.impressions else 0.0


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _points(value: float) -> str:
    return f"{100 * value:+.2f} pt"


def _interval(bounds: tuple[float, float], *, points: bool = False) -> str:
    low, high = bounds
    if points:
        return f"[{100 * low:+.2f}, {100 * high:+.2f}]"
    return f"[{100 * low:.2f}, {100 * high:.2f}]"


def _metrics_row(name: str, metrics: Metrics) -> list[str]:
    return [
        name,
        f"{metrics.impressions:,}",
        f"{metrics.clicks:,}",
        f"{metrics.carts:,}",
        f"{metrics.purchases:,}",
        f"{metrics.dismissals:,}",
        *(
            f"{_percent(_rate_of(metrics, rate))} {_interval(metrics.interval(rate))}"
            for rate, _, _ in RATES
        ),
    ]


def _breakdown(name: str, group: _Group | None) -> Breakdown:
    if group is None:
        return Breakdown(name=name, metrics=Metrics())
    return Breakdown(
        name=name,
        metrics=group.total.freeze(),
        by_model_version=tuple((v, t.freeze()) for v, t in sorted(group.by_model_version.items())),
        by_day=tuple((_day(d), t.freeze()) for d, t in sorted(group.by_day.items())),
    )


def _day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * (DAY_MS // 1000), UTC).date().isoformat()


def _compare(
    name: str, control_name: str, variant: _Group | None, control: _Group | None, metric: str
) -> Comparison:
    field_name = next(f for n, _, f in RATES if n == metric)
    empty = _Group()
    variant = variant or empty
    control = control or empty
    s_control: int = getattr(control.total, field_name)
    s_variant: int = getattr(variant.total, field_name)
    n_control, n_variant = control.total.impressions, variant.total.impressions
    checkpoints: list[Checkpoint] = []
    totals = [0, 0, 0, 0]
    for day in sorted(set(control.by_day) | set(variant.by_day)):
        for offset, group in ((0, control), (2, variant)):
            tally = group.by_day.get(day)
            if tally is not None:
                totals[offset] += getattr(tally, field_name)
                totals[offset + 1] += tally.impressions
        checkpoints.append(Checkpoint(*totals))
    sequential = sequential_test(checkpoints, alpha=ALPHA)
    rate_variant = s_variant / n_variant if n_variant else 0.0
    rate_control = s_control / n_control if n_control else 0.0
    return Comparison(
        variant=name,
        control=control_name,
        metric="ctr" if metric == "ctr" else "conversion",
        difference=rate_variant - rate_control,
        ci=difference_interval(s_control, n_control, s_variant, n_variant, CONFIDENCE),
        always_valid_ci=sequential.confidence_sequence,
        p_value=sequential.p_value,
        verdict=sequential.verdict,
    )


def build_report(
    impressions: Iterable[Impression],
    events: Iterable[StoredEvent],
    experiments: Sequence[Experiment] = (),
    *,
    window_ms: int = DEFAULT_ATTRIBUTION_WINDOW_MS,
    now_ms: int,
    experiment: str | None = None,
    between: tuple[int, int] | None = None,
) -> FeedbackReport:
    """The report of these impressions and events (see the module docstring); the
    configured ``experiments`` give the order of the variants and the controls, and are
    listed even without impressions. ``now_ms`` is the report's ``generated_ms``. With
    ``experiment``, the report of that experiment alone (:meth:`FeedbackReport.only`:
    UnknownIdError if neither the data nor the configuration has it). With ``between``
    (from, to), only responses served in ``[from, to)`` and events in it not attributed
    are reported; the others given only make attribution the same as over all time."""
    attribution = attribute(
        impressions, events, window_ms=window_ms, details=False, unattributed_between=between
    )
    lowest, highest = between or (-(2**63), 2**63)
    by_experiment: dict[str, dict[str, _Group]] = {}
    by_surface: dict[str, _Group] = {}
    attributed = 0
    for outcome in attribution.outcomes.values():
        impression = outcome.impression
        if not lowest <= impression.time_ms < highest:
            continue
        attributed += outcome.clicks + outcome.carts + outcome.purchases + outcome.dismissals
        if impression.experiment:
            variants = by_experiment.get(impression.experiment)
            if variants is None:
                variants = by_experiment[impression.experiment] = {}
            group = variants.get(impression.variant)
            if group is None:
                group = variants[impression.variant] = _Group()
        else:
            group = by_surface.get(impression.surface)
            if group is None:
                group = by_surface[impression.surface] = _Group()
        group.add(outcome)

    configured = {config.name: config for config in experiments}
    reports: list[ExperimentReport] = []
    for name in [*configured, *sorted(set(by_experiment) - set(configured))]:
        groups = by_experiment.get(name, {})
        config = configured.get(name)
        if config is not None:
            control: str | None = config.control
            names = [variant.name for variant in config.variants]
        else:
            control = "control" if "control" in groups else None
            names = []
        names += sorted(set(groups) - set(names))
        if control is not None:
            names.remove(control)
            names.insert(0, control)
        comparisons = (
            tuple(
                _compare(variant, control, groups.get(variant), groups.get(control), metric)
                for variant in names
                if variant != control
                for metric in COMPARED
            )
            if control is not None
            else ()
        )
        reports.append(
            ExperimentReport(
                name=name,
                control=control,
                variants=tuple(_breakdown(v, groups.get(v)) for v in names),
                comparisons=comparisons,
            )
        )
    traffic = tuple(_breakdown(s, by_surface[s]) for s in sorted(by_surface))
    report = FeedbackReport(
        experiments=tuple(reports),
        traffic=traffic,
        unattributed=dict(attribution.unattributed),
        attributed=attributed,
        window_ms=window_ms,
        generated_ms=now_ms,
    )
    return report if experiment is None else report.only(experiment)


__all__ = [
    "ALL_TRAFFIC",
    "Breakdown",
    "Comparison",
    "ExperimentReport",
    "FeedbackReport",
    "Metrics",
    "build_report",
]
