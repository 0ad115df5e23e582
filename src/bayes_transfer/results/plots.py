"""Figures from the summary table (matplotlib/seaborn, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METHOD_LABELS = {
    "sgd_transfer": "SGD transfer",
    "sgd_learned_prior": "SGD learned prior",
    "bnn_learned_prior": "BNN learned prior",
    "bnn_isotropic_prior": "BNN non-learned prior",
    "sgd_ensemble": "SGD ensemble",
    "sgd_learned_mean": "SGD learned mean (isotropic)",
    "bnn_learned_mean": "BNN learned mean (isotropic)",
}


def error_vs_size(summary: pd.DataFrame, out: str | Path, *, metric: str = "error", eval_set: str = "test",
                  title: str = "", ylabel: str = "test error (%)", scale: float = 100.0) -> None:
    """Fig. 4 analogue: a metric against the number of training examples (log x), ± 1 SE over seeds."""
    import seaborn as sns

    s = summary[(summary["metric"] == metric) & (summary["eval_set"] == eval_set)].sort_values("n_train")
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    palette = sns.color_palette("colorblind", n_colors=max(len(s["method"].unique()), 1))
    for color, (method, g) in zip(palette, s.groupby("method", sort=True)):
        y = g["mean"] * scale
        ax.plot(g["n_train"], y, marker="o", ms=3, color=color, label=METHOD_LABELS.get(method, method))
        se = g["se"].fillna(0) * scale
        ax.fill_between(g["n_train"], y - se, y + se, color=color, alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("number of training examples")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def _theme():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return sns


def _save(fig, out: str | Path) -> None:
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def metric_vs_value(summary: pd.DataFrame, x: str, out: str | Path, *, logx: bool = False, title: str = "",
                    xlabel: str = "", ylabel: str = "test accuracy (%)", scale: float = 100.0) -> None:
    """One line per method of ``mean`` ± 1 SE against column ``x`` (Fig. 3b: rank, Fig. 3d: lambda).

    Values whose runs all failed are drawn as crosses on the x axis, annotated with the failure count,
    so a diverged setting is visible instead of silently missing.
    """
    sns = _theme()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    methods = sorted(summary["method"].unique())
    palette = sns.color_palette("colorblind", n_colors=max(len(methods), 1))
    for row, (color, method) in enumerate(zip(palette, methods)):
        g = summary[summary["method"] == method].sort_values(x)
        ok = g[g["mean"].notna()]
        y = ok["mean"] * scale
        se = ok["se"].fillna(0) * scale
        ax.errorbar(ok[x], y, yerr=se, marker="o", ms=3, capsize=2, color=color,
                    label=METHOD_LABELS.get(method, method))
        failed = g[g["n_failed"] > 0]
        for _, r in failed.iterrows():
            ax.annotate(f"{int(r['n_failed'])}✗", (r[x], 0.01 + 0.05 * row), xycoords=("data", "axes fraction"),
                        color=color,
                        fontsize=6, ha="center", va="bottom")
    xs = summary[x].astype(float)
    if logx:
        ax.set_xscale("log")
        ax.set_xlim(xs.min() / 2, xs.max() * 2)
    else:
        pad = 0.05 * max(xs.max() - xs.min(), 1.0)
        ax.set_xlim(xs.min() - pad, xs.max() + pad)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, out)


def landscape_plot(table: pd.DataFrame, out: str | Path, *, title: str = "") -> None:
    """Fig. 3a: test loss against filter-normalised distance, prior directions vs random directions.

    Thin lines: each direction averaged over seeds; thick lines: mean over directions of each type,
    band ± 1 SE over seeds (of the per-seed mean over directions).
    """
    sns = _theme()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    colors = dict(zip(["prior", "random"], sns.color_palette("colorblind", 2)))
    labels = {"prior": "top singular directions of the learned prior", "random": "random directions"}
    for kind, g in table.groupby("direction_type"):
        for _, d in g.groupby("direction"):
            m = d.groupby("distance")["loss"].mean()
            ax.plot(m.index, m.values, color=colors.get(kind), lw=0.5, alpha=0.4)
        per_seed = g.groupby(["seed", "distance"])["loss"].mean().unstack(0)
        mean = per_seed.mean(axis=1)
        se = per_seed.std(axis=1, ddof=1) / per_seed.shape[1] ** 0.5 if per_seed.shape[1] > 1 else mean * 0
        ax.plot(mean.index, mean.values, color=colors.get(kind), lw=2,
                label=f"{labels.get(kind, kind)} ({g['direction'].nunique()})")
        ax.fill_between(mean.index, mean - se.fillna(0), mean + se.fillna(0), color=colors.get(kind), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("filter-normalised distance from the pre-trained parameters")
    ax.set_ylabel("test loss (cross-entropy)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, out)


def reliability_diagrams(bins: pd.DataFrame, out: str | Path, *, title: str = "") -> None:
    """Fig. 9: one panel per method, accuracy against confidence per bin (pooled over seeds), with the
    diagonal of perfect calibration; bar width = bin, bar height = accuracy, and the bin's mean
    confidence marked, so over-confidence shows as bars below the diagonal."""
    _theme()
    methods = list(dict.fromkeys(bins["method"]))
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(2.4 * max(len(methods), 1), 2.8),
                             sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        g = bins[(bins["method"] == method) & (bins["count"] > 0)]
        width = g["bin_upper"] - g["bin_lower"]
        ax.bar(g["bin_lower"], g["accuracy"], width=width, align="edge", edgecolor="k", lw=0.4, alpha=0.8,
               label="accuracy")
        ax.plot(g["mean_confidence"], g["accuracy"], "o", ms=2, color="k", label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(METHOD_LABELS.get(method, method), fontsize=7)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=9)
    _save(fig, out)
