"""Out-of-distribution detection from a fit's predictions (issue 14, BayesAdapter's and BYOV's evaluation).

A fit predicts on the downstream test set (in-distribution) and on the tier's OOD sets
(:meth:`bayes_transfer.stages.task.Task.eval_sets`); each example gets an uncertainty score, and an OOD set is
scored by how well that score separates its examples (positives) from the test set's (negatives):

* **predictive entropy** ``H[p]`` of the (model-averaged) predictive distribution, for every method;
* **mutual information** ``H[p] - E_s H[p_s]`` between the prediction and the weights (the spread of the
  samples' predictions: epistemic uncertainty), for methods with more than one sample (SG-MCMC, VI, the
  ensemble's members); it is identically 0 for a single network, so it is not reported there.

Per score: the area under the ROC curve (``auroc``: the probability that a random OOD example scores above a
random test example, ties counting 1/2) and the average precision (``ap``: sum over the distinct thresholds of
recall increase x precision, scikit-learn's definition). Both are computed here in float64 from ranks, checked
against scikit-learn in the tests; importing scikit-learn in every fit job would cost ~1 s.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["entropy", "mutual_information", "auroc", "average_precision", "ood_scores", "OOD_METRICS"]

#: the metric names a fit records per OOD set (the ``_mi`` ones only with more than one sample)
OOD_METRICS = ("auroc_entropy", "ap_entropy", "auroc_mi", "ap_mi")


def entropy(probs: Tensor) -> Tensor:
    """``-sum_c p_c log p_c`` per row (nats; 0 log 0 = 0)."""
    p = probs.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


def mutual_information(probs: Tensor, expected_entropy: Tensor) -> Tensor:
    """``H[mean p] - mean H[p_s]`` per row, clamped at 0 (float rounding); ``probs`` the model average."""
    return (entropy(probs) - expected_entropy.double()).clamp_min(0.0)


def _check(negatives: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    neg, pos = negatives.double().reshape(-1), positives.double().reshape(-1)
    if neg.numel() == 0 or pos.numel() == 0:
        raise ValueError("OOD detection needs at least one in-distribution and one OOD example")
    if not (torch.isfinite(neg).all() and torch.isfinite(pos).all()):
        raise ValueError("OOD detection scores must be finite")
    return neg, pos


def auroc(negatives: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of scores where higher means OOD: the Mann-Whitney statistic with average ranks
    for ties, ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``."""
    neg, pos = _check(negatives, positives)
    scores = torch.cat([neg, pos])
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # rank k (1-based) in sorted order; a group of tied scores gets the mean of its ranks
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1.0) / 2.0
    ranks[order] = mean_rank[inverse]
    n_pos, n_neg = pos.numel(), neg.numel()
    return float((ranks[neg.numel():].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(negatives: Tensor, positives: Tensor) -> float:
    """Average precision of scores where higher means OOD (OOD the positive class): ``sum_k (R_k - R_{k-1}) P_k``
    over the distinct score thresholds from the highest down, tied scores entering together."""
    neg, pos = _check(negatives, positives)
    scores = torch.cat([neg, pos])
    labels = torch.cat([torch.zeros_like(neg), torch.ones_like(pos)])
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1.0 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last position of each group of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / pos.numel()
    previous = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def ood_scores(test_probs: Tensor, ood_probs: Tensor, test_expected_entropy: Tensor | None = None,
               ood_expected_entropy: Tensor | None = None, num_samples: int = 1) -> dict[str, float]:
    """AUROC and AP of the predictive entropy (and, with ``num_samples > 1`` and the samples' expected entropies,
    of the mutual information) for separating an OOD set from the test set."""
    out = {}
    h_test, h_ood = entropy(test_probs), entropy(ood_probs)
    out["auroc_entropy"], out["ap_entropy"] = auroc(h_test, h_ood), average_precision(h_test, h_ood)
    if num_samples > 1 and test_expected_entropy is not None and ood_expected_entropy is not None:
        mi_test = mutual_information(test_probs, test_expected_entropy)
        mi_ood = mutual_information(ood_probs, ood_expected_entropy)
        out["auroc_mi"], out["ap_mi"] = auroc(mi_test, mi_ood), average_precision(mi_test, mi_ood)
    return out
