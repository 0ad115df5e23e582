"""The paper's claims C1-C11 as statistical tests over our runs, each with a verdict computed from the tables.

Every claim is reduced to one or more *parts*. A part is a contrast computed per *pair*: two runs (or two
groups of runs) that share everything but the factor the claim is about, above all the seed
(:mod:`bayes_transfer.audit.extract`). Each part gets a two-sided paired t-test and a verdict, *supported*,
*contradicted*, *no relevant effect* or *inconclusive*, and a claim's verdict combines its parts'
(:mod:`bayes_transfer.audit.stats` states both rules). Sizes are combined by pooling: every (size, seed) is one
pair and the verdict comes from the pooled test (the claim is about the method "over the sizes we ran", which is
how the paper states it). Per-size (per-stratum) tests are reported too, Holm-corrected within each part, with
the number of strata whose mean has the claimed sign.

This module holds the claims' statements and tests, the method comparisons C3-C10 and :func:`evaluate_claims`;
C1, C2 and C11 (the Fig. 3 ablations) are in :mod:`bayes_transfer.audit.ablation_claims`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from bayes_transfer.audit.ablation_claims import claim_landscape, claim_rank, claim_rescaling
from bayes_transfer.audit.extract import (RUN_UNIT, TABLE_FILES, Part, cached_values, empty_pairs, finish_pairs,
                                          fmt_values, method_part, missing_table, used_by)
from bayes_transfer.audit.render import numbers_text
from bayes_transfer.audit.settings import AuditSettings, display
from bayes_transfer.audit.stats import SUPPORTED, PowerFn, combine, holm, paired_test

LEARNED = ("sgd_learned_prior", "bnn_learned_prior")
#: the five methods of the paper's data-size comparison (Fig. 4, Tables 2-13)
PAPER_METHODS = ("bnn_learned_prior", "sgd_learned_prior", "sgd_transfer", "bnn_isotropic_prior", "sgd_ensemble")

#: short titles for the overview table
TITLES = {
    "C1": "Rank: rises from 0, saturates at a low rank",
    "C2": "Rescaling: too small a lambda hurts, best lambda interior",
    "C3": "Learned beat non-learned priors (SGD and BNN)",
    "C4": "Bayesian inference beats SGD, same learned prior",
    "C5": "Learned-prior gain largest at small/intermediate sizes",
    "C6": "SimCLR priors beat supervised priors",
    "C7": "Learned-prior BNN: best NLL and ECE; non-learned BNN: better NLL than SGD",
    "C8": "BMA beats an equally sized SGD ensemble",
    "C9": "Segmentation: learned priors raise mean IoU",
    "C10": "Learned covariance beats isotropic around the learned mean",
    "C11": "Test loss flatter along prior directions than random ones",
}

#: the claims: id -> (what the paper says, where)
CLAIMS = {
    "C1": ("Accuracy rises as the prior's covariance rank grows from 0 (diagonal) and saturates at a low rank",
           "Sec. 3.1, Fig. 3b"),
    "C2": ("Rescaling matters: too small a lambda hurts, and the best lambda is interior to the grid",
           "Sec. 3.2, Fig. 3d"),
    "C3": ("Learned priors beat non-learned priors, with SGD (vs. SGD transfer) and with Bayesian inference "
           "(vs. an isotropic prior)", "Sec. 4.2, Fig. 4, Tables 2-13"),
    "C4": ("With the same learned prior, Bayesian inference beats SGD", "Sec. 3.3, 4.2, Fig. 3c, 4"),
    "C5": ("Data efficiency: the learned-prior gain is largest at small and intermediate training sizes",
           "Sec. 4.2 (iv), Fig. 4"),
    "C6": ("SimCLR (self-supervised) priors beat supervised priors", "Sec. 4.2, App. B.2"),
    "C7": ("Bayesian inference with a learned prior has the best NLL and calibration (ECE); a non-learned BNN "
           "has better NLL than SGD transfer", "Sec. 4.2, Fig. 5b, 8, 9"),
    "C8": ("The Bayesian model average beats an equally sized SGD ensemble", "Sec. 4.2, App. A, B.3"),
    "C9": ("Segmentation: learned priors raise mean IoU (SGD and Bayesian inference)", "Sec. 4.4, Tables 1, 15, 16"),
    "C10": ("A learned covariance beats an isotropic covariance around the learned mean", "Sec. 3.1, Fig. 3c"),
    "C11": ("The downstream test loss is flatter along the prior's leading directions than along random ones",
            "Sec. 3.1, Fig. 3a"),
}

PAIRED = "two-sided paired t-test over seeds"
POOLED = f"{PAIRED}, one pair per (pretraining, size, seed), pooled over sizes"
TESTS = {
    "C1": f"{PAIRED}, one pair per (method, seed) at the ablation's size; (a) rank 0 vs the mean over ranks > 0, "
          "(b) equivalence-type: gain from the saturation rank to the largest rank tested against delta",
    "C2": f"{PAIRED}, one pair per (method, seed); best lambda chosen on the other seeds (leave-one-seed-out); "
          "a diverged run counts as error 1.0",
    "C3": POOLED,
    "C4": POOLED,
    "C5": f"{PAIRED}, one pair per (pretraining, seed): mean gain below the largest size vs gain at it",
    "C6": f"{PAIRED}, one pair per (method, size, seed), learned-prior methods pooled",
    "C7": f"{POOLED}; 'best' = beats every other method (intersection-union: each comparison at alpha)",
    "C8": POOLED,
    "C9": f"{PAIRED}, one pair per (dataset, backbone, pretraining, seed)",
    "C10": POOLED,
    "C11": f"{PAIRED}, one pair per (pretraining, seed): mean loss over directions and non-zero distances",
}


def claim_learned_vs_nonlearned(tables, s) -> list[Part]:
    runs = tables.get("runs")
    return [
        method_part("C3", "C3 SGD", "SGD with a learned prior beats SGD transfer (weight decay)", runs, "runs",
                    "error", "method", "sgd_learned_prior", "sgd_transfer", RUN_UNIT),
        method_part("C3", "C3 BNN", "Bayesian inference with a learned prior beats an isotropic prior", runs,
                    "runs", "error", "method", "bnn_learned_prior", "bnn_isotropic_prior", RUN_UNIT),
    ]


def claim_bayes_vs_sgd(tables, s) -> list[Part]:
    return [method_part("C4", "C4", "Bayesian inference beats SGD with the same learned prior", tables.get("runs"),
                        "runs", "error", "method", "bnn_learned_prior", "sgd_learned_prior", RUN_UNIT)]


def claim_data_efficiency(tables, s) -> list[Part]:
    """C5: per (pretraining, seed), the gain of the learned prior over its non-learned counterpart averaged over
    the sizes below the largest, minus the gain at the largest size (claimed > 0)."""
    parts = []
    for label, treat, ctrl in (("SGD", "sgd_learned_prior", "sgd_transfer"),
                               ("BNN", "bnn_learned_prior", "bnn_isotropic_prior")):
        base = method_part("C5", f"C5 {label}", "", tables.get("runs"), "runs", "error", "method", treat, ctrl,
                           RUN_UNIT)
        p = Part("C5", f"C5 {label}", f"The gain of {treat} over {ctrl} is larger below the largest size than at it",
                 "mean gain(n < n_max) - gain(n_max), gain = error(control) - error(learned)", "error", "runs",
                 n_dropped=base.n_dropped, no_data=base.no_data, what=f"gain of {treat} over {ctrl} by size",
                 notes=list(base.notes))
        pairs = base.pairs
        if not p.no_data and len(pairs):
            ukeys = [k for k in RUN_UNIT if k in pairs.columns and k != "n_train"]
            rows, dropped = [], 0
            for key, g in pairs.groupby(ukeys, dropna=False):
                k = dict(zip(ukeys, key if isinstance(key, tuple) else (key,)))
                grp = pairs
                for col, val in k.items():
                    if col != "seed":
                        grp = grp[grp[col] == val]
                n_max = grp["n_train"].max()
                g = g.set_index("n_train")
                small = g[g.index < n_max]
                if n_max not in g.index or small.empty:
                    dropped += 1
                    continue
                rows.append(k | {"contrast": small["contrast"].mean() - g.loc[n_max, "contrast"],
                                 "treatment_value": small["contrast"].mean(), "control_value": g.loc[n_max, "contrast"],
                                 "detail": f"gain at n {fmt_values(small.index)} vs n={n_max}",
                                 "paths": ";".join(g["paths"].astype(str))})
            p.pairs = finish_pairs(rows, ukeys)
            p.used = used_by(base.used, p.pairs, ukeys)
            p.n_dropped += dropped
            if pairs["n_train"].nunique() < 2:
                p.no_data = "needs at least two training sizes"
        parts.append(p)
    return parts


def claim_ssl_vs_supervised(tables, s) -> list[Part]:
    runs = tables.get("runs")
    unit = ["dataset", "arch", "method", "n_train", "seed"]
    parts = [method_part("C6", f"C6 {method}", f"SimCLR prior beats the supervised prior ({method})", runs, "runs",
                         "error", "pretraining", "simclr", "supervised", unit, methods=(method,))
             for method in LEARNED]
    if all(p.no_data for p in parts):
        return parts
    # one verdict over both learned-prior methods: pool their pairs
    present = [p for p in parts if not p.no_data]
    pooled = Part("C6", "C6", "SimCLR priors beat supervised priors (learned-prior methods pooled)",
                  "error[supervised] - error[simclr]", "error", "runs",
                  n_dropped=sum(p.n_dropped for p in present), what="pretraining simclr vs supervised",
                  used=pd.concat([p.used for p in present], ignore_index=True),
                  notes=[n for p in present for n in p.notes])
    pooled.pairs = finish_pairs(pd.concat([p.pairs for p in present], ignore_index=True)
                                .drop(columns=["unit", "stratum"]).to_dict("records"), unit)
    for p in parts:
        p.in_verdict = False
    return [pooled] + parts


def claim_uncertainty(tables, s) -> list[Part]:
    runs = tables.get("runs")
    parts = []
    for metric, what in (("nll", "NLL"), ("ece", "calibration (ECE)")):
        for other in PAPER_METHODS:
            if other == "bnn_learned_prior":
                continue
            parts.append(method_part("C7", f"C7 {metric} vs {other}",
                                     f"BNN with a learned prior has better {what} than {other}", runs, "runs",
                                     metric, "method", "bnn_learned_prior", other, RUN_UNIT))
    parts.append(method_part("C7", "C7 nll non-learned BNN vs SGD",
                             "A BNN with a non-learned prior has better NLL than SGD transfer", runs, "runs", "nll",
                             "method", "bnn_isotropic_prior", "sgd_transfer", RUN_UNIT))
    return parts


def claim_bma_vs_ensemble(tables, s) -> list[Part]:
    return [method_part("C8", "C8", "The BMA (learned prior) beats an equally sized SGD ensemble",
                        tables.get("runs"), "runs", "error", "method", "bnn_learned_prior", "sgd_ensemble", RUN_UNIT)]


def claim_segmentation(tables, s) -> list[Part]:
    seg = tables.get("segmentation")
    unit = ["dataset", "arch", "pretraining", "n_train", "seed"]
    return [
        method_part("C9", "C9 SGD", "SGD with a learned prior raises mean IoU over SGD transfer", seg,
                    "segmentation", "miou", "method", "sgd_learned_prior", "sgd_transfer", unit, eval_set=None),
        method_part("C9", "C9 BNN", "Bayesian inference with a learned prior raises mean IoU over an isotropic prior",
                    seg, "segmentation", "miou", "method", "bnn_learned_prior", "bnn_isotropic_prior", unit,
                    eval_set=None),
    ]


def claim_learned_covariance(tables, s) -> list[Part]:
    lm, runs = tables.get("ablation_learned_mean"), tables.get("runs")
    reason = missing_table(lm, "ablation_learned_mean") or missing_table(runs, "runs")
    parts = []
    for treat, ctrl in (("sgd_learned_prior", "sgd_learned_mean"), ("bnn_learned_prior", "bnn_learned_mean")):
        both = None if reason else pd.concat([runs[runs["method"] == treat], lm[lm["method"] == ctrl]],
                                             ignore_index=True)
        p = method_part("C10", f"C10 {treat.split('_')[0].upper()}", f"The learned covariance ({treat}) beats an "
                        f"isotropic covariance around the learned mean ({ctrl})", both, "ablation_learned_mean",
                        "error", "method", treat, ctrl, RUN_UNIT)
        p.no_data = reason or p.no_data
        p.files = f"{TABLE_FILES['runs']} + {TABLE_FILES['ablation_learned_mean']}"
        parts.append(p)
    return parts


CLAIM_FUNCTIONS: dict[str, Callable[[Mapping, AuditSettings], list[Part]]] = {
    "C1": claim_rank, "C2": claim_rescaling, "C3": claim_learned_vs_nonlearned, "C4": claim_bayes_vs_sgd,
    "C5": claim_data_efficiency, "C6": claim_ssl_vs_supervised, "C7": claim_uncertainty,
    "C8": claim_bma_vs_ensemble, "C9": claim_segmentation, "C10": claim_learned_covariance,
    "C11": claim_landscape,
}
STRATA_COLUMNS = ["claim", "part", "stratum", "n_pairs", "effect", "unit", "ci_low", "ci_high", "d_z", "degenerate",
                  "p_value", "p_holm"]


def strata_tests(parts: list[Part], settings: AuditSettings) -> pd.DataFrame:
    """Per-stratum paired t-tests of every part (e.g. one per training size), Holm-corrected within each part."""
    rows = []
    for p in parts:
        if not len(p.pairs):
            continue
        scale, unit = display(p.metric)
        margin = settings.delta(p.metric) if p.margin == "delta" else float(p.margin)
        block = []
        for stratum, g in p.pairs.groupby("stratum", sort=False):
            r = paired_test(g["contrast"], alpha=settings.alpha, direction=p.direction, margin=margin,
                            wilcoxon=False)
            block.append({"claim": p.claim, "part": p.part, "stratum": stratum, "n_pairs": r["n_pairs"],
                          "effect": r["mean"] * scale, "unit": unit, "ci_low": r["ci_low"] * scale,
                          "ci_high": r["ci_high"] * scale, "d_z": r["d_z"], "degenerate": r["degenerate"],
                          "p_value": r["p_value"]})
        for b, a in zip(block, holm([b["p_value"] for b in block])):
            rows.append(b | {"p_holm": a})
    return pd.DataFrame(rows, columns=STRATA_COLUMNS)


def evaluate_claims(tables: Mapping[str, pd.DataFrame | None], settings: AuditSettings | None = None,
                    report: pd.DataFrame | None = None, power: PowerFn | None = None) -> dict[str, pd.DataFrame]:
    """All claims over the given tidy tables (``None`` = not produced by this config).

    Returns ``claims`` (one row per claim: verdict and evidence), ``parts`` (one row per tested part),
    ``pairs`` (every pair each part used, with the run files) and ``strata`` (per-size tests, Holm-corrected).
    ``report``: the reproducibility report's verdicts (bayes_transfer.audit.reference.report_verdicts()) to show
    beside ours. ``power``: a power analysis per part (:data:`bayes_transfer.audit.stats.PowerFn`).
    """
    settings = settings or AuditSettings()
    with cached_values():
        return _evaluate(tables, settings, report, power)


def _evaluate(tables, settings: AuditSettings, report: pd.DataFrame | None, power: PowerFn | None,
              functions: Mapping | None = None, texts: tuple[Mapping, Mapping, Mapping] | None = None
              ) -> dict[str, pd.DataFrame]:
    """The claims of ``functions`` (id -> parts function; default: C1-C11) with their ``texts`` (statement and
    paper location, title, test, each by id) evaluated into the claims, parts, pairs and strata frames."""
    functions = CLAIM_FUNCTIONS if functions is None else functions
    statements, titles, tests = (CLAIMS, TITLES, TESTS) if texts is None else texts
    all_parts: list[Part] = []
    part_rows, claim_rows, pair_frames = [], [], []
    for cid, fn in functions.items():
        parts = fn(tables, settings)
        all_parts += parts
        evaluated = [p.evaluate(settings, power) for p in parts]
        part_rows += evaluated
        pair_frames += [p.pairs.assign(claim=p.claim, part=p.part) for p in parts if len(p.pairs)]
        used = [e for e in evaluated if e["in_verdict"]]
        verdict = combine(e["verdict"] for e in used)
        why = ("all parts supported" if verdict == SUPPORTED else
               "; ".join(f"{e['part']}: {e['verdict']} ({e['reason']})" for e in used if e["verdict"] != SUPPORTED))
        statement, where = statements[cid]
        key = _decisive(used, verdict)
        claim_rows.append({"claim": cid, "title": titles[cid], "statement": statement, "paper": where,
                           "verdict": verdict, "test": tests[cid], "alpha": settings.alpha, "parts": len(used),
                           "decisive_part": key["part"] if key else "",
                           "decisive_reason": key["reason"] if key else "",
                           **{c: key[c] if key else np.nan for c in ("effect", "unit", "ci_low", "ci_high", "d_z",
                                                                     "p_value", "n_pairs")},
                           "degenerate": key["degenerate"] if key else "",
                           "evidence": "; ".join(numbers_text(e) for e in used), "why": why,
                           "runs": " | ".join(dict.fromkeys(e["runs"] for e in used if e["runs"]))})
    claims = pd.DataFrame(claim_rows)
    if report is not None and len(report):
        rep = report.rename(columns={"report_claim": "report_claim_no"})
        claims = claims.merge(rep[["claim", "report_claim_no", "report_verdict", "report_basis"]], on="claim",
                              how="left")
    else:
        claims = claims.assign(report_claim_no=np.nan, report_verdict=np.nan, report_basis=np.nan)
    pairs = (pd.concat(pair_frames, ignore_index=True) if pair_frames else empty_pairs().assign(claim=[], part=[]))
    front = ["claim", "part", "unit", "stratum", "contrast", "treatment_value", "control_value", "detail", "paths"]
    pairs = pairs[front + [c for c in pairs.columns if c not in front]]
    for col in ("n_train", "seed", "prior_rank"):
        if col in pairs.columns and pd.api.types.is_numeric_dtype(pairs[col]):
            pairs[col] = pairs[col].astype("Int64")
    return {"claims": claims, "parts": pd.DataFrame(part_rows), "pairs": pairs,
            "strata": strata_tests(all_parts, settings)}


def _decisive(parts: list[dict], verdict: str) -> dict | None:
    """The part whose numbers decide the claim's verdict: the weakest supported part (largest p) when all are
    supported, else the first part with the claim's verdict."""
    if not parts:
        return None
    if verdict == SUPPORTED:
        return max(parts, key=lambda e: e["p_value"])
    return next((e for e in parts if e["verdict"] == verdict), parts[0])
