"""Plots of evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shelfrank.core.blend import COMPONENTS
from shelfrank.server.evaluation.fairness import NONE, FairnessReport
from shelfrank.server.evaluation.metrics import METRIC_NAMES
from shelfrank.server.evaluation.runner import EvaluationReport

if TYPE_CHECKING:
    from shelfrank.server.evaluation.tradeoffs import TradeoffReport


def save_plot(report: EvaluationReport, path: str | Path) -> None:
    """Grouped bar chart: one group per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in report.results]
    positions = np.arange(len(METRIC_NAMES))
    width = 0.8 / max(1, len(names))
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for index, result in enumerate(report.results):
        values = [result.metrics[m] for m in METRIC_NAMES]
        axes.bar(positions + index * width, values, width, label=result.name)
    axes.set_xticks(positions + width * (len(names) - 1) / 2)
    k = report.k
    axes.set_xticklabels(
        [f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", "AUC", "coverage", "pop. bias"]
    )
    axes.set_ylim(0, 1)
    axes.set_title(f"shelfrank evaluation: protocol {report.protocol}")
    axes.legend(loc="upper left")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def save_group_plot(fairness: FairnessReport, path: str | Path) -> None:
    """P@k per user group: one panel per grouped column, one bar per model in each group
    (the groups' users are in the report's JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(fairness.group_by)
    names = list(fairness.models)
    figure, panels = plt.subplots(len(columns), 1, figsize=(10, 3.2 * len(columns)), squeeze=False)
    width = 0.8 / max(1, len(names))
    for axes, column in zip(panels[:, 0], columns, strict=True):
        by_model = {
            name: {g.value: g.precision for g in fairness.models[name].group(column).groups}
            for name in names
        }
        values = sorted(
            {v for groups in by_model.values() for v in groups}, key=lambda v: (v == NONE, v)
        )
        positions = np.arange(len(values))
        for index, name in enumerate(names):
            axes.bar(
                positions + index * width,
                [by_model[name].get(v, np.nan) for v in values],
                width,
                label=name,
            )
        axes.set_xticks(positions + width * (len(names) - 1) / 2)
        axes.set_xticklabels(values, rotation=20 if len(values) > 8 else 0, fontsize=8)
        axes.set_ylabel(f"P@{fairness.k}")
        axes.set_title(f"P@{fairness.k} by user {column}")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def save_blend_plot(blend_fit: dict[str, Any], path: str | Path) -> None:
    """What the validation split chose: NDCG@10 per half-life (left) and the blend
    weights per segment and mode (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve: dict[str, dict[str, float]] = blend_fit.get("validation_ndcg_at_10_by_half_life", {})
    weights: dict[str, dict[str, dict[str, float]]] = blend_fit.get("weights", {})
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = sorted(curve, key=lambda h: float("inf") if h == "none" else float(h))
    settings = sorted({s for values in curve.values() for s in values})
    for setting in settings:
        left.plot(
            labels, [curve[h].get(setting, np.nan) for h in labels], marker="o", label=setting
        )
    chosen = blend_fit.get("half_life_days")
    left.set_title(f"validation NDCG@10 by half-life (chosen: {chosen} days)")
    left.set_xlabel("half-life, days ('none': no decay)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    rows = [
        (f"{s}/{m}", w) for s, modes in sorted(weights.items()) for m, w in sorted(modes.items())
    ]
    components = COMPONENTS
    positions = np.arange(len(rows))
    width = 0.8 / len(components)
    for index, component in enumerate(components):
        right.bar(
            positions + index * width,
            [w.get(component, 0.0) for _, w in rows],
            width,
            label=component,
        )
    right.set_xticks(positions + width * (len(components) - 1) / 2)
    right.set_xticklabels([name for name, _ in rows], rotation=20, fontsize=8)
    right.set_title("blend weights per segment/mode")
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def save_tradeoff_plot(report: TradeoffReport, path: str | Path) -> None:
    """The tradeoffs protocol's curves: P@k and intra-list diversity against the diversity
    setting (left), warm-test P@k and the cold items' share of the slots against the
    exploration share (right); accuracy on the left axes, the other figures on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report.k
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    curve = report.diversity
    xs = [p.diversity for p in curve.points]
    left.plot(xs, [p.precision for p in curve.points], marker="o", color="C0", label=f"P@{k}")
    left.set_xlabel("diversity")
    left.set_ylabel(f"P@{k}", color="C0")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    ild = left.twinx()
    ild.plot(
        xs,
        [np.nan if p.ild_cosine is None else p.ild_cosine for p in curve.points],
        marker="s",
        color="C1",
        label="ILD (cosine of item vectors)",
    )
    if any(p.ild_jaccard is not None for p in curve.points):
        columns = ", ".join(curve.diversity_by or ())
        ild.plot(
            xs,
            [np.nan if p.ild_jaccard is None else p.ild_jaccard for p in curve.points],
            marker="^",
            color="C2",
            label=f"ILD (Jaccard of {columns})" if columns else "ILD (Jaccard)",
        )
    ild.set_ylabel("intra-list diversity")
    best = curve.best
    left.axvline(best.diversity, color="grey", linestyle="--", linewidth=1)
    left.set_title(
        f"diversity: best {best.diversity:g} (max ILD with P@{k} loss "
        f"<= {100 * curve.max_precision_loss:g}%)"
    )
    lines = left.get_lines()[:1] + ild.get_lines()
    left.legend(
        lines,
        [line.get_label() for line in lines],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
        fontsize=8,
    )

    explore = report.exploration
    es = [p.exploration for p in explore.points]
    right.plot(
        es, [p.precision for p in explore.points], marker="o", color="C0", label=f"P@{k} (warm)"
    )
    right.set_xlabel("exploration share")
    right.set_ylabel(f"P@{k} on the warm test", color="C0")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    share = right.twinx()
    share.plot(
        es,
        [p.cold_slot_share for p in explore.points],
        marker="s",
        color="C3",
        label="cold items' share of slots",
    )
    share.plot(
        es,
        [p.cold_coverage for p in explore.points],
        marker="^",
        color="C4",
        label="share of cold items shown",
    )
    share.plot(es, es, color="grey", linestyle=":", linewidth=1, label="exploration share")
    share.set_ylabel("share")
    share.set_ylim(bottom=0)
    right.set_title(f"exploration ({explore.held_out_items} held-out items)")
    lines = right.get_lines()[:1] + share.get_lines()
    right.legend(
        lines,
        [line.get_label() for line in lines],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
        fontsize=8,
    )
    figure.suptitle("shelfrank evaluation: protocol tradeoffs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
