"""Figures from the summary tables (matplotlib, Agg backend, no display needed).

Every figure follows the checklist in docs/figures.md: labelled axes with units, the legend outside the
axes (never on the data), the error bands or bars its title states, integer ticks for integer quantities,
one colour-blind-safe colour per method that is the same in every figure (``METHOD_COLORS``), and failed
runs marked (a cross on the x axis with the number of failed runs). Each function draws one figure,
saves it to ``out`` (when given) and returns the matplotlib Figure, so tests can inspect what was drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (FixedFormatter, FixedLocator, FuncFormatter, MaxNLocator, NullFormatter,
                               NullLocator)

from bayes_transfer.io import atomic_open

METHOD_LABELS = {
    "sgd_transfer": "SGD transfer",
    "sgd_learned_prior": "SGD learned prior",
    "bnn_learned_prior": "BNN learned prior",
    "bnn_isotropic_prior": "BNN non-learned prior",
    "sgd_ensemble": "SGD ensemble",
    "sgd_learned_mean": "SGD learned mean (isotropic)",
    "bnn_learned_mean": "BNN learned mean (isotropic)",
    "vi_learned_prior": "VI learned prior",
    "vi_isotropic_prior": "VI non-learned prior",
}

#: one colour per method, the same in every figure: the Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008,
#: "Color Universal Design"). Orange and vermillion, the pair hardest to tell apart, never share a figure:
#: orange is a main-table method (Figs. 4, 5, 8, 9), vermillion a learned-mean method (Fig. 3c only).
METHOD_COLORS = {
    "sgd_transfer": "#000000",  # black
    "sgd_learned_prior": "#CC79A7",  # reddish purple
    "bnn_learned_prior": "#0072B2",  # blue
    "bnn_isotropic_prior": "#E69F00",  # orange
    "sgd_ensemble": "#009E73",  # bluish green
    "sgd_learned_mean": "#D55E00",  # vermillion
    "bnn_learned_mean": "#56B4E9",  # sky blue
    # the variational methods (issue 14), beyond the 8 Okabe-Ito colours: Paul Tol's indigo and olive
    "vi_learned_prior": "#332288",  # indigo
    "vi_isotropic_prior": "#999933",  # olive
}

#: Fig. 3a compares kinds of direction, not methods: colours outside the method palette (Paul Tol's wine, grey)
DIRECTION_COLORS = {"prior": "#882255", "random": "#777777"}

#: marks a setting with failed runs (at the bottom of the axes, with the count)
FAILED_MARK = "x"


def method_color(method: str) -> str:
    """The fixed colour of ``method`` (``METHOD_COLORS``); a method without one is an error, not a grey line."""
    try:
        return METHOD_COLORS[method]
    except KeyError:
        raise KeyError(f"no colour for method {method!r}: add it to bayes_transfer.results.plots.METHOD_COLORS "
                       f"(known: {sorted(METHOD_COLORS)})") from None


def method_style(method: str) -> dict:
    """Line style of ``method``: its colour, a circle for SG-MCMC (bnn_*) and a square for SGD, dashed lines
    for the isotropic learned-mean priors (Fig. 3c), so the methods differ in more than hue."""
    return {"color": method_color(method), "marker": "o" if method.startswith("bnn") else "s",
            "linestyle": "--" if method.endswith("learned_mean") else "-", "label": METHOD_LABELS.get(method, method)}


def ordered_methods(methods) -> list[str]:
    """``methods`` in the palette's (the paper's) order, so legends list methods the same way everywhere."""
    methods = list(dict.fromkeys(methods))
    for m in methods:
        method_color(m)
    return sorted(methods, key=list(METHOD_COLORS).index)


def _theme() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")


def _figure(**kwargs):
    """A Figure and its axes on an Agg canvas, outside pyplot (no display, nothing to close): ``Figure.subplots``."""
    fig = Figure(figsize=kwargs.pop("figsize"))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**kwargs)


def _save(fig, out: str | Path | None):
    if out is not None:
        # atomically: a killed job never leaves half a PNG; "tight" keeps the legend outside the axes in the file
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, format=Path(out).suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")
    return fig


def _legend_outside(ax, extra: list | None = None) -> None:
    """The legend to the right of the axes, off the data; ``extra`` adds proxy entries (failed runs, clipped)."""
    handles, labels = ax.get_legend_handles_labels()
    for h in extra or []:
        handles.append(h)
        labels.append(h.get_label())
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
                  frameon=False)


def _failed_proxy() -> Line2D:
    return Line2D([], [], ls="", marker=FAILED_MARK, color="grey", label="failed runs (count)")


def _mark_failed(ax, x, n_failed: int, color: str, row: int = 0, y=None) -> None:
    """Failed runs at ``x``: a cross with their number, at the point ``y`` (data) when the other seeds gave
    one, else on the bottom of the axes (stacked by ``row`` when several methods failed at the same x)."""
    if y is None:
        coords, y, clip = ax.get_xaxis_transform(), 0.03 + 0.05 * row, False
        xycoords = ("data", "axes fraction")
    else:
        coords, xycoords, clip = ax.transData, "data", True
    ax.plot([x], [y], ls="", marker=FAILED_MARK, ms=6, mew=1.3, color=color, transform=coords, clip_on=clip,
            zorder=5)
    ax.annotate(f"{n_failed}", (x, y), xycoords=xycoords, xytext=(4, -5), textcoords="offset points", color=color,
                fontsize=6, ha="left", va="center")


def _failures(ax, rows: pd.DataFrame, x: str, scale: float, by: list[str] | None = None) -> bool:
    """Mark every setting of ``rows`` (summary rows) with failed runs; True when there was one. ``by``: further
    columns that tell the curves of a method apart."""
    failed = (rows[rows["n_failed"] > 0].drop_duplicates(["method", *(by or []), x]) if "n_failed" in rows
              else rows.iloc[:0])
    stacked: dict = {}
    for _, r in failed.iterrows():
        color = method_color(r["method"])
        if r["mean"] == r["mean"]:
            _mark_failed(ax, r[x], int(r["n_failed"]), color, y=r["mean"] * scale)
        else:
            row = stacked[r[x]] = stacked.get(r[x], -1) + 1
            _mark_failed(ax, r[x], int(r["n_failed"]), color, row=row)
    return len(failed) > 0


def _integer_ticks(axis, values) -> None:
    """Ticks only at integers: at the values themselves when there are few, else an integer locator."""
    values = sorted({int(v) for v in values})
    if len(values) <= 12:
        axis.set_major_locator(FixedLocator(values))
        axis.set_major_formatter(FixedFormatter([str(v) for v in values]))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_minor_locator(NullLocator())


def bulk_upper_limit(values, whisker: float = 3.0) -> float | None:
    """Upper y limit that keeps the bulk of ``values`` readable when a few are far above it (a collapsed
    method): Tukey's far-out fence Q3 + ``whisker`` x IQR. None when no value is beyond the fence (or there
    are too few values to tell), i.e. the axis needs no clipping."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 4:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    fence = q3 + whisker * max(q3 - q1, 1e-12)
    return fence if (v > fence).any() else None


def error_vs_size(summary: pd.DataFrame, out: str | Path | None = None, *, metric: str = "error",
                  eval_set: str = "test", title: str = "", ylabel: str = "test error (%)", scale: float = 100.0):
    """Fig. 4 analogue: a metric against the number of training examples (log x), line = mean over seeds,
    band = ± 1 SE over seeds.

    A method whose points lie far above the others (a collapsed method, e.g. 80 % error beside 10-30 %)
    would squash every other curve; then the y axis is clipped to the bulk (``bulk_upper_limit``) and each
    point above it is drawn as a triangle on the top edge with its value printed. Settings with failed runs
    get a cross with the count: on the point when other seeds gave one, else on the x axis.
    """
    _theme()
    s = summary[(summary["metric"] == metric) & (summary["eval_set"] == eval_set)]
    fig, ax = _figure(figsize=(5.0, 3.6))
    failed_rows = s[s["n_failed"] > 0] if "n_failed" in s else s.iloc[:0]
    methods = ordered_methods(list(s["method"]) + list(failed_rows["method"]))
    curves = {}
    for method in methods:
        g = s[(s["method"] == method) & s["mean"].notna()].sort_values("n_train")
        y = g["mean"].to_numpy(float) * scale
        se = g["se"].fillna(0).to_numpy(float) * scale
        style = method_style(method)
        ax.plot(g["n_train"], y, ms=3.5, **style)
        ax.fill_between(g["n_train"], y - se, y + se, color=style["color"], alpha=0.15, lw=0)
        curves[method] = (g["n_train"].to_numpy(), y, se)
    top = bulk_upper_limit(np.concatenate([c[1] for c in curves.values()])) if curves else None
    extra = []
    if top is not None:
        hi = float(np.concatenate([(c[1] + c[2])[c[1] <= top] for c in curves.values()]).max())
        lo = float(np.concatenate([(c[1] - c[2])[c[1] <= top] for c in curves.values()]).min())
        pad = 0.05 * max(hi - lo, 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
        for method, (xs, y, _) in curves.items():
            for x, v in zip(xs[y > top], y[y > top]):
                ax.plot([x], [0.985], ls="", marker="^", ms=6, color=method_color(method),
                        transform=ax.get_xaxis_transform(), clip_on=False)
                ax.annotate(f"{v:.1f}", (x, 0.985), xycoords=("data", "axes fraction"), xytext=(5, -2),
                            textcoords="offset points", ha="left", va="top", fontsize=6,
                            color=method_color(method))
        extra.append(Line2D([], [], ls="", marker="^", color="grey", label="above the y range (value printed)"))
    if _failures(ax, failed_rows, "n_train", scale):
        extra.append(_failed_proxy())
    ax.set_xscale("log")
    sizes = pd.concat([s["n_train"], failed_rows["n_train"]]) if len(failed_rows) else s["n_train"]
    if len(sizes):
        _integer_ticks(ax.xaxis, sizes)
    ax.set_xlabel("number of training examples (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _legend_outside(ax, extra)
    return _save(fig, out)


#: line styles of the curves of one method that ``metric_vs_value``'s ``style_by`` tells apart (Fig. 3d: the
#: exact convention solid, the authors' dashed)
STYLE_LINES = ("-", "--", ":", "-.")


def metric_vs_value(summary: pd.DataFrame, x: str, out: str | Path | None = None, *, logx: bool = False,
                    title: str = "", xlabel: str = "", ylabel: str = "test accuracy (%)", scale: float = 100.0,
                    style_by: str | None = None, style_order: list | None = None):
    """One line per method of ``mean`` with ± 1 SE error bars against column ``x`` (Fig. 3b: rank, Fig. 3d:
    lambda). An integer-valued ``x`` (a rank) gets integer ticks at the values swept.

    ``style_by`` (Fig. 3d: ``prior_convention``): one line per method and value of that column, in the
    method's colour with one line style per value (:data:`STYLE_LINES`, in ``style_order`` or sorted order).
    Values with failed runs are marked with crosses annotated with the failure count (on the x axis when
    every run failed), so a diverged setting is visible instead of silently missing.
    """
    _theme()
    fig, ax = _figure(figsize=(5.0, 3.6))
    methods = ordered_methods(summary["method"])
    styled = style_by is not None and style_by in summary.columns
    levels = [None]
    if styled:
        present = list(summary[style_by].dropna().unique())
        levels = [v for v in (style_order or []) if v in present] + sorted(v for v in present
                                                                          if v not in (style_order or []))
    for method in methods:
        for i, level in enumerate(levels):
            sel = (summary["method"] == method) & summary["mean"].notna()
            style = method_style(method)
            if styled:
                sel &= summary[style_by] == level
                style |= {"linestyle": STYLE_LINES[i % len(STYLE_LINES)], "label": f"{style['label']}, {level}"}
            ok = summary[sel].sort_values(x)
            if styled and ok.empty:
                continue
            ax.errorbar(ok[x], ok["mean"] * scale, yerr=ok["se"].fillna(0) * scale, ms=3.5, capsize=2, **style)
    any_failed = _failures(ax, summary, x, scale, [style_by] if styled else None)
    xs = summary[x].astype(float)
    if logx:
        ax.set_xscale("log")
        ax.set_xlim(xs.min() / 2, xs.max() * 2)
    else:
        pad = 0.05 * max(xs.max() - xs.min(), 1.0)
        ax.set_xlim(xs.min() - pad, xs.max() + pad)
        if np.allclose(xs, np.round(xs)):
            _integer_ticks(ax.xaxis, xs)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _legend_outside(ax, [_failed_proxy()] if any_failed else None)
    return _save(fig, out)


#: the loss sets of Fig. 3a's panels, in order, and their y labels
LANDSCAPE_SETS = {"downstream": "downstream test loss (nats; log scale)",
                  "source": "source loss (the prior's objective; log scale)"}


def _log_axis(ax) -> None:
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    # minor ticks labelled only within about one decade, where the major ticks alone would be too few
    ax.yaxis.set_minor_formatter(plain if hi / lo < 20 else NullFormatter())
    ax.tick_params(axis="both", which="both", labelsize=7)


def _landscape_panel(ax, table: pd.DataFrame, labels: dict) -> None:
    """Loss against filter-normalised distance: thin lines per direction (mean over seeds), thick lines the
    mean over directions of each type, band ± 1 SE over seeds."""
    for kind, g in table.groupby("direction_type"):
        color = DIRECTION_COLORS.get(kind, "#444444")
        for _, d in g.groupby("direction"):
            m = d.groupby("distance")["loss"].mean()
            ax.plot(m.index, m.values, color=color, lw=0.5, alpha=0.35)
        per_seed = g.groupby(["seed", "distance"])["loss"].mean().unstack(0)
        mean = per_seed.mean(axis=1)
        ax.plot(mean.index, mean.values, color=color, lw=1.5,
                label=f"{labels.get(kind, kind)} ({g['direction'].nunique()}), mean")
        if per_seed.shape[1] > 1:
            se = (per_seed.std(axis=1, ddof=1) / per_seed.shape[1] ** 0.5).fillna(0)
            lower = np.maximum(mean - se, mean * 1e-3)  # log axis: keep the band's lower edge positive
            ax.fill_between(mean.index, lower, mean + se, color=color, alpha=0.35, lw=0)
            for edge in (lower, mean + se):
                ax.plot(mean.index, edge, color=color, lw=0.8, ls=":")
    _log_axis(ax)


def _prior_std_panel(ax, table: pd.DataFrame) -> None:
    """Loss against the distance in units of the prior's standard deviation along each direction (one line
    per direction, mean over seeds; symmetric-log x axis: prior and random directions differ by decades)."""
    for kind, g in table.groupby("direction_type"):
        color = DIRECTION_COLORS.get(kind, "#444444")
        for _, d in g.groupby("direction"):
            m = d.groupby("distance")[["distance_prior_std", "loss"]].mean().sort_values("distance_prior_std")
            ax.plot(m["distance_prior_std"], m["loss"], color=color, lw=0.8, alpha=0.6)
    finite = table["distance_prior_std"].abs()
    small = finite[finite > 0].min() if (finite > 0).any() else 1.0
    ax.set_xscale("symlog", linthresh=float(small))
    _log_axis(ax)


def landscape_plot(table: pd.DataFrame, out: str | Path | None = None, *, title: str = ""):
    """Fig. 3a: loss against filter-normalised distance, prior directions vs random directions.

    One column per loss set of the table (``loss_set``: the downstream test loss and, where computed, the
    source loss of the prior's own objective, the control; a table without the column is all downstream).
    Top row: thin lines each direction averaged over seeds; thick lines the mean over directions of each type,
    band ± 1 SE over seeds (of the per-seed mean over directions), drawn with its edges so that a narrow band
    still shows; with a single seed there is no SE and no band. Bottom row (with ``distance_prior_std``): the
    same losses against the distance in units of the prior's standard deviation along the direction.
    """
    _theme()
    if "loss_set" not in table:
        table = table.assign(loss_set="downstream")
    sets = [k for k in LANDSCAPE_SETS if k in set(table["loss_set"])]
    sets += sorted(set(table["loss_set"]) - set(sets))
    rows = 2 if "distance_prior_std" in table else 1
    fig, axes = _figure(figsize=(4.2 * len(sets) + 1.6, 3.3 * rows), nrows=rows, ncols=len(sets), squeeze=False)
    labels = {"prior": "top singular directions of the learned prior", "random": "random directions"}
    n_seeds = table["seed"].nunique()
    for j, name in enumerate(sets):
        part = table[table["loss_set"] == name]
        ax = axes[0][j]
        _landscape_panel(ax, part, labels)
        ax.set_xlabel("filter-normalised distance from the pre-trained parameters", fontsize=8)
        ax.set_ylabel(LANDSCAPE_SETS.get(name, f"{name} loss (log scale)"), fontsize=8)
        ax.set_title(f"{name} loss", fontsize=8)
        if rows == 2:
            _prior_std_panel(axes[1][j], part)
            axes[1][j].set_xlabel("distance in prior standard deviations along the direction", fontsize=8)
            axes[1][j].set_ylabel(LANDSCAPE_SETS.get(name, f"{name} loss (log scale)"), fontsize=8)
    extra = [Line2D([], [], color="grey", lw=0.5, alpha=0.6, label="single directions (mean over seeds)")]
    if n_seeds > 1:
        extra.append(Patch(facecolor="grey", alpha=0.35, edgecolor="grey", linestyle=":",
                           label=f"band: ± 1 SE over {n_seeds} seeds"))
    fig.suptitle(title, fontsize=9)
    _legend_outside(axes[0][-1], extra)
    return _save(fig, out)
