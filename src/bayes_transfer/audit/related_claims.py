"""Claims about the related methods of issue 14 (BYOV, BayesAdapter), tested like the paper's C1-C11.

* **R1** "A BBB prior transfers as well as a SWAG prior": per (method, size, seed), the error with the Bayes-by-
  Backprop prior of a pre-training (the prior variant ``<pretraining>_bbb``, ``prior.variants``) minus the error
  with its SWAG prior (the pre-training itself, or its variant ``<pretraining>_swag``). An equivalence-type claim:
  the claimed direction is "the BBB prior is not worse by delta", ``error(BBB) - error(SWAG) < delta``
  (``direction=-1``, ``margin="delta"``), as C1b tests a saturation. Methods with a learned prior are pooled.
* **R2** "Variational fine-tuning with a learned prior beats it with an isotropic prior": per (pretraining,
  size, seed), ``error(vi_isotropic_prior) - error(vi_learned_prior) > 0``, as C3's Bayesian part.

Each part gets the audit's paired t-test and one of its four verdicts (:mod:`bayes_transfer.audit.stats`);
:func:`evaluate_related_claims` returns rows in the columns of :func:`~bayes_transfer.audit.claims.evaluate_claims`
and :func:`with_related_claims` appends them to an audit's result, so the claims table, the parts, the pairs and
the per-size tests list R1 and R2 after C11. The power hook (:func:`~bayes_transfer.audit.paper_effects.power_hook`)
applies unchanged; the paper's tables give no effect for these parts, which their power note says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from bayes_transfer.audit.extract import RUN_UNIT, Part, method_part, missing_table
from bayes_transfer.audit.settings import AuditSettings
from bayes_transfer.audit.stats import PowerFn

__all__ = ["RELATED_CLAIMS", "RELATED_TITLES", "RELATED_TESTS", "RELATED_FUNCTIONS", "claim_bbb_vs_swag",
           "claim_vi_learned_vs_isotropic", "evaluate_related_claims", "with_related_claims"]

#: the methods whose runs use the learned prior, pooled in R1
LEARNED_PRIOR_METHODS = ("sgd_learned_prior", "bnn_learned_prior", "vi_learned_prior")

RELATED_TITLES = {
    "R1": "BBB prior transfers as well as a SWAG prior",
    "R2": "VI fine-tuning: learned prior beats isotropic prior",
}
RELATED_CLAIMS = {
    "R1": ("A prior learned by Bayes by Backprop (BYOV) transfers as well as a SWAG prior of the same checkpoint: "
           "its downstream error is not worse by the smallest relevant effect", "issue 14; BYOV (METHOD_NOTES §7)"),
    "R2": ("Variational fine-tuning with a learned prior beats variational fine-tuning with an isotropic prior",
           "issue 14; BayesAdapter (METHOD_NOTES §6)"),
}
_PAIRED = "two-sided paired t-test over seeds"
RELATED_TESTS = {
    "R1": f"{_PAIRED}, one pair per (method, size, seed), learned-prior methods pooled; equivalence-type: "
          "error(BBB) - error(SWAG) tested against +delta",
    "R2": f"{_PAIRED}, one pair per (pretraining, size, seed), pooled over sizes",
}


def _swag_and_bbb_runs(runs: pd.DataFrame, source: str) -> pd.DataFrame:
    """The learned-prior runs of pre-training ``source`` with its SWAG prior (labelled ``source``: its own runs,
    and those of a ``<source>_swag`` variant that its own runs lack) and with its BBB prior (``<source>_bbb``)."""
    t = runs[runs["method"].isin(LEARNED_PRIOR_METHODS)]
    key = [k for k in ("dataset", "arch", "method", "n_train", "seed") if k in t.columns]
    own, variant = t[t["pretraining"] == source], t[t["pretraining"] == f"{source}_swag"]
    if len(variant):
        seen = own[key].drop_duplicates().assign(_own=True)
        clash = variant[key].merge(seen, on=key, how="left")["_own"].fillna(False).to_numpy(bool)
        variant = variant[~clash].assign(pretraining=source)
    return pd.concat([own, variant, t[t["pretraining"] == f"{source}_bbb"]], ignore_index=True)


def claim_bbb_vs_swag(tables: Mapping[str, pd.DataFrame | None], s: AuditSettings) -> list[Part]:
    """R1, one part per pre-training with a BBB prior variant (a conjunction over them)."""
    runs = tables.get("runs")
    unit = ["dataset", "arch", "method", "n_train", "seed"]
    reason = missing_table(runs, "runs")
    names = [] if reason else sorted(set(runs["pretraining"].astype(str)))
    sources = [n[:-len("_bbb")] for n in names if n.endswith("_bbb")]
    if not sources:
        p = method_part("R1", "R1", "A BBB prior is not worse than the SWAG prior", None if reason else runs,
                        "runs", "error", "pretraining", "<pretraining>_bbb", "<pretraining>", unit)
        p.no_data = reason or "no runs with a BBB prior (prior.variants with method bbb)"
        return [_equivalence(p)]
    parts = []
    for src in sources:
        statement = (f"The BBB prior of {src} is not worse than its SWAG prior "
                     f"(methods {', '.join(LEARNED_PRIOR_METHODS)} pooled)")
        parts.append(_equivalence(method_part("R1", "R1" if len(sources) == 1 else f"R1 {src}", statement,
                                              _swag_and_bbb_runs(runs, src), "runs", "error", "pretraining",
                                              f"{src}_bbb", src, unit)))
    return parts


def _equivalence(p: Part) -> Part:
    """error(BBB) - error(SWAG) < delta (method_part's contrast is error(SWAG) - error(BBB): negated)."""
    p.contrast, p.direction, p.margin, p.relevance = "error[bbb] - error[swag]", -1, "delta", False
    if len(p.pairs):
        p.pairs = p.pairs.assign(contrast=-p.pairs["contrast"])
    p.statement += " (claimed: error(BBB) - error(SWAG) < delta)"
    return p


def claim_vi_learned_vs_isotropic(tables: Mapping[str, pd.DataFrame | None], s: AuditSettings) -> list[Part]:
    return [method_part("R2", "R2", "Variational fine-tuning with a learned prior beats it with an isotropic prior",
                        tables.get("runs"), "runs", "error", "method", "vi_learned_prior", "vi_isotropic_prior",
                        RUN_UNIT)]


RELATED_FUNCTIONS: dict[str, Callable[[Mapping, AuditSettings], list[Part]]] = {
    "R1": claim_bbb_vs_swag, "R2": claim_vi_learned_vs_isotropic,
}


def evaluate_related_claims(tables: Mapping[str, pd.DataFrame | None], settings: AuditSettings | None = None,
                            power: PowerFn | None = None) -> dict[str, pd.DataFrame]:
    """R1 and R2 over the tidy tables: ``claims``, ``parts``, ``pairs`` and ``strata`` frames in the columns of
    :func:`~bayes_transfer.audit.claims.evaluate_claims` (a claim without runs is inconclusive, saying why)."""
    from bayes_transfer.audit.claims import _evaluate

    return _evaluate(tables, settings or AuditSettings(), None, power, functions=RELATED_FUNCTIONS,
                     texts=(RELATED_CLAIMS, RELATED_TITLES, RELATED_TESTS))


def with_related_claims(result: Mapping[str, pd.DataFrame], tables: Mapping[str, pd.DataFrame | None],
                        settings: AuditSettings | None = None, power: PowerFn | None = None) -> dict:
    """``result`` (of :func:`~bayes_transfer.audit.claims.evaluate_claims`) with R1 and R2 appended to its
    ``claims``, ``parts``, ``pairs`` and ``strata`` frames (columns the related claims lack stay empty)."""
    related = evaluate_related_claims(tables, settings, power)
    out = dict(result)
    for name, frame in related.items():
        if name not in out:
            out[name] = frame
        elif len(frame):
            base = out[name]
            out[name] = pd.concat([base, frame[[c for c in frame.columns if c in base.columns or not len(base)]]],
                                  ignore_index=True)
    return out

