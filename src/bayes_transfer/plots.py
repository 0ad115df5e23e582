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
