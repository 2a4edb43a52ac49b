"""Plots of evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shelfrank.core.blend import COMPONENTS
from shelfrank.server.evaluation.metrics import METRIC_NAMES
from shelfrank.server.evaluation.runner import EvaluationReport


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
