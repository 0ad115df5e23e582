"""BYOV's pruning figures: accuracy against the fraction of weights pruned, by SNR |mu| / sigma and by |mu|
(:mod:`bayes_transfer.results.pruning`), for a Bayes-by-Backprop prior and for the variational fits; drawn with
:mod:`bayes_transfer.results.plots`' theme and checklist."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bayes_transfer.results.plots import _figure, _save, _theme

__all__ = ["PRUNING_STYLES", "pruning_plot", "fit_pruning_plot"]

#: line styles of the pruning criteria
PRUNING_STYLES = {"snr": {"color": "#1b6ca8", "marker": "o", "label": "by SNR |mu| / sigma"},
                  "magnitude": {"color": "#b5651d", "marker": "s", "linestyle": "--", "label": "by magnitude |mu|"}}


def fit_pruning_plot(summary: pd.DataFrame, out: str | Path | None = None, *, title: str = ""):
    """The variational fits' pruning curves (:func:`~bayes_transfer.results.pruning.fit_pruning_summary`): one
    panel per pre-training, method and training size, one line per criterion (mean over seeds, band ± 1 SE)."""
    _theme()
    cells = list(summary.groupby(["pretraining", "method", "n_train"], sort=False))
    fig, axes = _figure(figsize=(4.2 * max(len(cells), 1), 3.6), ncols=max(len(cells), 1), squeeze=False)
    for ax, ((pretraining, method, n), cell) in zip(axes[0], cells):
        for criterion, g in cell.groupby("criterion", sort=False):
            g = g.sort_values("pruned_fraction")
            style = PRUNING_STYLES.get(criterion, {"label": criterion})
            x, y, se = 100 * g["pruned_fraction"], 100 * g["mean"], 100 * g["se"]
            ax.plot(x, y, ms=3.5, **style)
            ax.fill_between(x, y - se, y + se, color=style.get("color"), alpha=0.15, lw=0)
        seeds, failed = int(cell["n_seeds"].max()), int(cell["n_failed"].max())
        ax.set_title(f"{method}, {pretraining}, n = {n}\n{seeds} seeds" + (f", {failed} failed" if failed else ""),
                     fontsize=8)
        ax.set_xlabel("backbone weights pruned (%), per layer")
    axes[0][0].set_ylabel("downstream test accuracy (%)")
    axes[0][0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9, y=1.06)  # above the panels' two-line titles
    return _save(fig, out)


def pruning_plot(table: pd.DataFrame, out: str | Path | None = None, *, title: str = "",
                 ylabel: str = "source test accuracy (%)"):
    """BYOV's pruning figure: accuracy against the fraction of weights pruned, one line per criterion."""
    _theme()
    fig, ax = _figure(figsize=(5.0, 3.6))
    for criterion, g in table.groupby("criterion", sort=False):
        g = g.sort_values("pruned_fraction")
        ax.plot(100 * g["pruned_fraction"], 100 * g["value"], ms=3.5, **PRUNING_STYLES.get(criterion, {"label": criterion}))
    ax.set_xlabel("weights pruned (%), per layer, no retraining")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, out)
