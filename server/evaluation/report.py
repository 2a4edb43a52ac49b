"""Plots of evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
