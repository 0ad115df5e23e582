"""The figure checklist (docs/figures.md), checked on every figure the library draws, from small synthetic data
whose answers are known: titles and axis labels, integer ticks on integer axes, the legend outside the axes,
one fixed colour per method in every figure, the SE bands or bars the title promises, failed runs marked,
a collapsed method clipped and marked in Fig. 4, and bin counts and ECE in each panel of Fig. 9."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from bayes_transfer.inference.methods import METHODS, TABLE_METHODS, VI_METHODS
from bayes_transfer.results import plots, reliability

SIZES = [10, 25, 100, 250, 1000]


def size_summary(methods=TABLE_METHODS, collapsed=None, failed=None, all_failed=None) -> pd.DataFrame:
    """Summary rows (error on test) like bayes_transfer.results.aggregate.summarise gives: error 0.5/sqrt(n)
    + 0.05 + 0.01 * i for method i, SE 0.01; ``collapsed`` = (method, n) at 80 % error; ``failed`` = (method, n)
    with one failed run beside the others; ``all_failed`` = (method, n) whose 3 runs all failed."""
    rows = []
    for i, m in enumerate(methods):
        for n in SIZES:
            mean, se, n_failed = 0.5 / math.sqrt(n) + 0.05 + 0.01 * i, 0.01, 0
            if (m, n) == collapsed:
                mean = 0.8
            if (m, n) == failed:
                n_failed = 1
            if (m, n) == all_failed:
                mean, se, n_failed = np.nan, np.nan, 3
            rows.append({"method": m, "n_train": n, "metric": "error", "eval_set": "test", "mean": mean, "se": se,
                         "n_failed": n_failed})
    return pd.DataFrame(rows)


def sweep_summary(x: str, values, failed_value=None) -> pd.DataFrame:
    rows = []
    for i, m in enumerate(["sgd_learned_prior", "bnn_learned_prior"]):
        for j, v in enumerate(values):
            dead = v == failed_value
            rows.append({"method": m, x: v, "mean": np.nan if dead else 0.8 + 0.01 * j + 0.005 * i,
                         "se": np.nan if dead else 0.01, "n_failed": 3 if dead else 0})
    return pd.DataFrame(rows)


def landscape(seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for dtype, count, slope in (("prior", 2, 0.3), ("random", 3, 2.0)):
            for d in range(count):
                for t in np.linspace(-1, 1, 5):
                    rows.append({"pretraining": "supervised", "seed": s, "direction_type": dtype, "direction": d,
                                 "distance": t, "loss": 0.3 + slope * t * t * (1 + 0.2 * s) + 0.01 * d})
    return pd.DataFrame(rows)


#: two methods' pooled bins: counts, accuracy and mean confidence per bin (3 equal-width bins, one empty)
BINS = {"sgd_transfer": [(10, 0.5, 0.6), (30, 0.9, 0.8), (0, np.nan, np.nan)],
        "bnn_learned_prior": [(0, np.nan, np.nan), (20, 0.5, 0.5), (20, 0.7, 0.9)]}


def reliability_bins(failed=("bnn_learned_prior", 1)) -> pd.DataFrame:
    rows = []
    for m, bins in BINS.items():
        for (count, acc, conf), lo in zip(bins, (0.0, 1 / 3, 2 / 3)):
            rows.append({"method": m, "bin_lower": lo, "bin_upper": lo + 1 / 3, "count": count, "accuracy": acc,
                         "mean_confidence": conf, "n_runs": 2, "n_failed": failed[1] if m == failed[0] else 0})
    return pd.DataFrame(rows)


def all_figures(tmp_path):
    """Every figure of the workflow, drawn by the library from synthetic data (name -> Figure)."""
    return {
        "fig4": plots.error_vs_size(size_summary(), tmp_path / "fig4.png", title="test error vs size (± 1 SE)"),
        "fig3c": plots.error_vs_size(size_summary(["sgd_learned_prior", "bnn_learned_prior", "sgd_learned_mean",
                                                   "bnn_learned_mean"]), tmp_path / "fig3c.png",
                                     title="learned covariance vs learned mean (± 1 SE)"),
        "fig3b": plots.metric_vs_value(sweep_summary("prior_rank", [0, 1, 2, 5, 10, 20]), "prior_rank",
                                       tmp_path / "fig3b.png", xlabel="rank k", title="rank (± 1 SE)"),
        "fig3d": plots.metric_vs_value(sweep_summary("prior_scale", [1e0, 1e3, 1e6, 1e9], failed_value=1e0),
                                       "prior_scale", tmp_path / "fig3d.png", logx=True, xlabel="prior rescaling λ",
                                       title="lambda (± 1 SE)"),
        "fig3a": plots.landscape_plot(landscape(), tmp_path / "fig3a.png", title="loss along directions (± 1 SE)"),
        "fig9": reliability.reliability_diagrams(reliability_bins(), tmp_path / "fig9.png", title="reliability"),
    }


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figures")
    figs = all_figures(tmp)
    for fig in figs.values():
        fig.canvas.draw()
    return tmp, figs


def data_axes(fig):
    return [ax for ax in fig.axes if ax.has_data()]


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def legend_colours(fig) -> dict[str, str]:
    """Legend label -> colour of the entry's line or patch, over every legend of ``fig``."""
    out = {}
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    for leg in legends:
        for handle, text in zip(leg.legend_handles, leg.get_texts()):
            colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            out[text.get_text()] = to_hex(colour)
    return out


def test_every_figure_is_written_and_has_a_title_and_labelled_axes(figures):
    tmp, figs = figures
    for name, fig in figs.items():
        assert (tmp / f"{name}.png").stat().st_size > 5000, name
        title = fig._suptitle.get_text() if fig._suptitle else data_axes(fig)[0].get_title()
        assert title.strip(), name
        for ax in data_axes(fig):
            assert ax.get_xlabel().strip(), name
        assert data_axes(fig)[0].get_ylabel().strip(), name


def test_units_are_named_on_the_axes(figures):
    _, figs = figures
    assert "(%)" in data_axes(figs["fig4"])[0].get_ylabel()
    assert "(%)" in data_axes(figs["fig3b"])[0].get_ylabel()
    assert "nats" in data_axes(figs["fig3a"])[0].get_ylabel()
    assert "log scale" in data_axes(figs["fig4"])[0].get_xlabel()


def visible_ticks(axis, lo, hi):
    return [t for t in axis.get_majorticklocs() if lo <= t <= hi]


def test_integer_quantities_get_integer_ticks(figures):
    _, figs = figures
    ax = data_axes(figs["fig3b"])[0]
    ticks = visible_ticks(ax.xaxis, *ax.get_xlim())
    assert ticks == [0, 1, 2, 5, 10, 20]  # the ranks swept, not 2.5/7.5/12.5
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "5", "10", "20"]
    assert not ax.xaxis.get_minorticklocs().size
    ax = data_axes(figs["fig4"])[0]
    ticks = visible_ticks(ax.xaxis, *ax.get_xlim())
    assert ticks == SIZES and all(float(t.get_text()) == int(t.get_text()) for t in ax.get_xticklabels())


def test_legends_sit_outside_the_axes(figures):
    _, figs = figures
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
        assert legends, name
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in data_axes(fig):
                assert not box.overlaps(ax.get_window_extent(renderer)), (name, "legend on the data")


def test_one_fixed_colour_per_method_in_every_figure(figures):
    _, figs = figures
    colours = set(plots.METHOD_COLORS.values())
    assert len(colours) == len(plots.METHOD_COLORS) and set(plots.METHOD_COLORS) == set(METHODS)
    seen = {}
    for name in ("fig4", "fig3c", "fig3b", "fig3d"):
        for label, colour in legend_colours(figs[name]).items():
            method = {v: k for k, v in plots.METHOD_LABELS.items()}.get(label)
            if method:
                assert colour == plots.METHOD_COLORS[method].lower(), (name, method)
                seen.setdefault(method, set()).add(name)
    assert seen["sgd_learned_prior"] == {"fig4", "fig3c", "fig3b", "fig3d"}
    # every method of the paper's figures (the VI methods run as prior variants, whose tables have no figure of
    # their own here; their colours are distinct by the first assertion)
    assert set(seen) == set(METHODS) - set(VI_METHODS)
    for ax in data_axes(figs["fig9"]):  # Fig. 9: the bars and the panel title in the method's colour
        method = {v: k for k, v in plots.METHOD_LABELS.items()}[ax.get_title()]
        bar_colours = {to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches}
        assert bar_colours == {plots.METHOD_COLORS[method].lower()}
    # orange and vermillion, the pair hardest to tell apart, never share a figure
    main = {plots.METHOD_COLORS[m] for m in TABLE_METHODS}
    assert not ({"#E69F00", "#D55E00"} <= main)
    assert not ({"#E69F00", "#D55E00"} <= {plots.METHOD_COLORS[m] for m in
                                           ("sgd_learned_prior", "bnn_learned_prior", "sgd_learned_mean",
                                            "bnn_learned_mean")})


def test_a_method_without_a_colour_is_an_error():
    with pytest.raises(KeyError, match="no colour for method 'mystery'"):
        plots.error_vs_size(size_summary(["mystery"]))


def band_heights(ax) -> list[float]:
    """Vertical extent of every filled band (PolyCollection) in ``ax``."""
    out = []
    for coll in ax.collections:
        if isinstance(coll, PolyCollection):
            for path in coll.get_paths():
                ys = path.vertices[:, 1]
                out.append(float(ys.max() - ys.min()))
    return out


def test_se_bands_and_bars_are_drawn_where_the_title_promises_them(figures):
    _, figs = figures
    for name, n_bands in (("fig4", len(TABLE_METHODS)), ("fig3c", 4), ("fig3a", 2)):
        ax = data_axes(figs[name])[0]
        assert "± 1 SE" in (figs[name].get_suptitle() if name == "fig3a" else ax.get_title())  # 3a: panels
        heights = band_heights(ax)
        assert len(heights) == n_bands and all(h > 0 for h in heights), name
    for name in ("fig3b", "fig3d"):
        ax = data_axes(figs[name])[0]
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
        assert len(bars) == 2, name
        for c in bars:
            segments = c.lines[2][0].get_segments()
            assert segments and all(abs(s[1][1] - s[0][1]) == pytest.approx(2 * 1.0) for s in segments), name


def test_fig3a_band_is_the_se_over_seeds():
    table = landscape()
    fig = plots.landscape_plot(table)
    ax = fig.axes[0]
    band = [c for c in ax.collections if isinstance(c, PolyCollection)][0]  # "prior", the first direction type
    per_seed = table[table.direction_type == "prior"].groupby(["seed", "distance"])["loss"].mean().unstack(0)
    se = per_seed.std(axis=1, ddof=1) / math.sqrt(3)
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx((per_seed.mean(axis=1) + se).max(), rel=1e-9)
    # one seed: no SE, so no band (and the glue's title does not promise one)
    assert not band_heights(plots.landscape_plot(landscape(seeds=(0,))).axes[0])


def test_failed_runs_are_marked_with_their_count():
    fig = plots.error_vs_size(size_summary(failed=("sgd_ensemble", 25), all_failed=("sgd_transfer", 1000)))
    ax = fig.axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == plots.FAILED_MARK]
    assert len(crosses) == 2
    assert {"1", "3"} <= set(texts(ax))
    at_point = [line for line in crosses if to_hex(line.get_color()) == plots.METHOD_COLORS["sgd_ensemble"].lower()]
    assert at_point[0].get_ydata()[0] == pytest.approx(100 * (0.5 / 5 + 0.05 + 0.04))  # on the point itself
    assert "failed runs (count)" in legend_colours(fig)
    fig = plots.metric_vs_value(sweep_summary("prior_scale", [1e0, 1e3], failed_value=1e0), "prior_scale", logx=True)
    assert sum(line.get_marker() == plots.FAILED_MARK for line in fig.axes[0].lines) == 2
    assert texts(fig.axes[0]).count("3") == 2


def test_a_collapsed_method_does_not_squash_the_others():
    fig = plots.error_vs_size(size_summary(collapsed=("bnn_isotropic_prior", 10)))
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    bulk = size_summary().query("not (method == 'bnn_isotropic_prior' and n_train == 10)")
    assert hi < 80 and hi == pytest.approx(100 * (bulk["mean"] + bulk["se"]).max(), rel=0.1)
    assert "80.0" in texts(ax)  # the clipped point's value is printed
    tri = [line for line in ax.lines if line.get_marker() == "^"]
    assert len(tri) == 1 and to_hex(tri[0].get_color()) == plots.METHOD_COLORS["bnn_isotropic_prior"].lower()
    assert "above the y range (value printed)" in legend_colours(fig)
    # without an outlier nothing is clipped
    ax = plots.error_vs_size(size_summary()).axes[0]
    assert ax.get_ylim()[1] > 100 * size_summary()["mean"].max()
    assert not [line for line in ax.lines if line.get_marker() == "^"]


def test_bulk_upper_limit_is_tukeys_far_out_fence():
    assert plots.bulk_upper_limit([1, 2, 3, 4, 5]) is None
    v = [10, 11, 12, 13, 80]
    q1, q3 = 11, 13
    assert plots.bulk_upper_limit(v) == pytest.approx(q3 + 3 * (q3 - q1))
    assert plots.bulk_upper_limit([1, 100, np.nan]) is None  # too few values to tell


def test_pooled_ece_known_answer():
    bins = reliability_bins()
    # sgd_transfer: (10 * |0.5 - 0.6| + 30 * |0.9 - 0.8|) / 40 = 0.1; bnn: (20 * 0 + 20 * 0.2) / 40 = 0.1
    assert reliability.pooled_ece(bins[bins.method == "sgd_transfer"]) == pytest.approx(0.1)
    bnn = bins[bins.method == "bnn_learned_prior"].assign(accuracy=[np.nan, 0.5, 0.6])
    assert reliability.pooled_ece(bnn) == pytest.approx((20 * 0.0 + 20 * 0.3) / 40)
    assert math.isnan(reliability.pooled_ece(bins.assign(count=0)))


def test_fig9_panels_print_bin_counts_ece_and_failures(figures):
    _, figs = figures
    panels = {ax.get_title(): ax for ax in data_axes(figs["fig9"])}
    sgd, bnn = panels["SGD transfer"], panels["BNN learned prior"]
    assert {"10", "30"} <= set(texts(sgd)) and "0" not in texts(sgd)  # non-empty bins' counts, not the empty one
    assert {"20"} <= set(texts(bnn))
    assert any("ECE 10.0 %" in t and "n = 40 predictions" in t for t in texts(sgd))
    assert any("ECE 10.0 %" in t and "1 run failed" in t for t in texts(bnn))
    assert not any("failed" in t for t in texts(sgd))


def test_fig3a_has_downstream_and_source_panels_and_a_prior_std_row():
    table = pd.concat([landscape().assign(loss_set=name, loss=lambda t, k=k: t["loss"] * k,
                                          distance_prior_std=lambda t: t["distance"] * (1 + 9 * (t.direction_type == "random")))
                       for name, k in (("downstream", 1.0), ("source", 10.0))])
    fig = plots.landscape_plot(table, title="t")
    axes = data_axes(fig)
    assert len(axes) == 4  # 2 loss sets x (filter-normalised distance, prior standard deviations)
    top, bottom = axes[:2], axes[2:]
    assert [a.get_title() for a in top] == ["downstream loss", "source loss"]
    # each panel shows only its loss set: the source panel's thick prior line is 10x the downstream one
    mean = lambda ax: max(line.get_ydata().max() for line in ax.lines if line.get_linewidth() == 1.5)  # noqa: E731
    assert mean(top[1]) == pytest.approx(10 * mean(top[0]), rel=1e-9)
    assert all("prior standard deviations" in a.get_xlabel() for a in bottom)
    assert max(abs(x) for line in bottom[0].lines for x in line.get_xdata()) == pytest.approx(10.0)
    # a table without loss_set (an older landscape) is all downstream
    assert len(data_axes(plots.landscape_plot(landscape()))) == 1


def test_fig3d_draws_one_line_style_per_convention_in_the_method_colours():
    both = pd.concat([sweep_summary("prior_scale", [1e0, 1e3, 1e6]).assign(prior_convention="exact"),
                      sweep_summary("prior_scale", [1e0, 1e3, 1e6], failed_value=1e0)
                      .assign(prior_convention="priorbox")], ignore_index=True)
    fig = plots.metric_vs_value(both, "prior_scale", logx=True, style_by="prior_convention",
                                style_order=["exact", "priorbox"])
    ax = fig.axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) > 1 and line.get_linestyle() != "None"]
    styles = {(to_hex(line.get_color()), line.get_linestyle()) for line in curves}
    colours = {plots.METHOD_COLORS[m].lower() for m in ("sgd_learned_prior", "bnn_learned_prior")}
    assert styles == {(c, ls) for c in colours for ls in ("-", "--")}
    assert sum(line.get_marker() == plots.FAILED_MARK for line in ax.lines) == 2  # priorbox at lambda 1
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.endswith(", priorbox") for label in labels) and any(label.endswith(", exact") for label in labels)
