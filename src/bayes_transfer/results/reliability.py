"""Fig. 9: reliability diagrams per method, pooled over seeds, with bin counts and the pooled ECE (the shared
palette, theme and saving of :mod:`bayes_transfer.results.plots`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.patheffects import withStroke

from bayes_transfer.results.plots import (FAILED_MARK, METHOD_LABELS, _figure, _save, _theme, method_color)

__all__ = ["pooled_ece", "reliability_diagrams"]


def pooled_ece(bins: pd.DataFrame) -> float:
    """Expected calibration error of pooled reliability bins: sum_b n_b |acc_b - conf_b| / sum_b n_b (the ECE
    of all the pooled predictions with these bins); NaN without any prediction."""
    g = bins[bins["count"] > 0]
    n = float(g["count"].sum())
    if n == 0:
        return float("nan")
    return float((g["count"] * (g["accuracy"] - g["mean_confidence"]).abs()).sum() / n)


def reliability_diagrams(bins: pd.DataFrame, out: str | Path | None = None, *, title: str = ""):
    """Fig. 9: one panel per method, accuracy against confidence per bin (pooled over seeds), with the
    diagonal of perfect calibration; bar width = bin, bar height = accuracy, the bin's mean confidence
    marked, so over-confidence shows as bars below the diagonal. Each panel prints every bin's number of
    predictions at the bar's foot and the pooled ECE (``pooled_ece``) with the total count; failed runs
    (column ``n_failed``) are named in the panel."""
    _theme()
    methods = list(dict.fromkeys(bins["method"]))
    for m in methods:
        method_color(m)
    fig, axes = _figure(nrows=1, ncols=max(len(methods), 1), figsize=(2.8 * max(len(methods), 1), 3.0),
                             sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        b = bins[bins["method"] == method]
        g = b[b["count"] > 0]
        color = method_color(method)
        width = g["bin_upper"] - g["bin_lower"]
        ax.bar(g["bin_lower"], g["accuracy"], width=width, align="edge", color=color, edgecolor="k", lw=0.4,
               alpha=0.6, label="accuracy in the bin")
        ax.plot(g["mean_confidence"], g["accuracy"], "o", ms=2, color="k", label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        for _, r in g.iterrows():
            ax.text((r["bin_lower"] + r["bin_upper"]) / 2, 0.015, f"{int(r['count'])}", rotation=90, ha="center",
                    va="bottom", fontsize=5.5, color="k", path_effects=[withStroke(linewidth=1.5, foreground="w")])
        n_failed = int(b["n_failed"].max()) if "n_failed" in b and len(b) else 0
        n_runs = int(b["n_runs"].max()) if "n_runs" in b and len(b) and b["n_runs"].notna().any() else 0
        if len(g):
            note = f"ECE {100 * pooled_ece(g):.1f} %\nn = {int(g['count'].sum())} predictions"
            if n_runs:
                note += f", {n_runs} runs"
        else:
            note = "no predictions"
        if n_failed:
            note += f"\n{FAILED_MARK} {n_failed} run{'s' if n_failed > 1 else ''} failed"
        ax.text(0.03, 0.97, note, transform=ax.transAxes, ha="left", va="top", fontsize=6,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max. probability)")
        ax.set_title(METHOD_LABELS.get(method, method), fontsize=7, color=color)
    axes[0][0].set_ylabel("accuracy in the bin")
    if methods:
        handles = [Patch(facecolor="0.6", edgecolor="k", lw=0.4, label="accuracy in the bin (method's colour); "
                         "number of predictions at its foot"),
                   Line2D([], [], ls="", marker="o", ms=2, color="k", label="(mean confidence, accuracy)"),
                   Line2D([], [], ls="--", color="grey", label="perfect calibration")]
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7,
                   frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)
