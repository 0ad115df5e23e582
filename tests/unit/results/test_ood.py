"""OOD detection scores: known answers, and scikit-learn's AUROC and average precision on random and tied scores."""

import math

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from bayes_transfer.results import ood


def test_entropy_and_mutual_information_known_answers():
    uniform, onehot = torch.full((1, 5), 0.2, dtype=torch.float64), torch.tensor([[1.0, 0, 0, 0, 0]])
    assert float(ood.entropy(uniform)) == pytest.approx(math.log(5), abs=1e-12)
    assert float(ood.entropy(onehot)) == 0.0
    # two confident samples that disagree: the average is uniform over 2 classes, each sample has entropy 0
    avg = torch.tensor([[0.5, 0.5]])
    assert float(ood.mutual_information(avg, torch.zeros(1))) == pytest.approx(math.log(2), abs=1e-12)
    # samples that agree: MI = 0 (never negative from rounding)
    assert float(ood.mutual_information(avg, ood.entropy(avg))) == 0.0


def test_perfect_random_and_reversed_separation():
    neg, pos = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.7, 0.8])
    assert ood.auroc(neg, pos) == 1.0 and ood.average_precision(neg, pos) == 1.0
    assert ood.auroc(pos, neg) == 0.0
    assert ood.auroc(torch.ones(4), torch.ones(3)) == 0.5  # every score tied: chance
    assert ood.average_precision(torch.ones(4), torch.ones(3)) == pytest.approx(3 / 7)  # the positives' share


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tied", [False, True])
def test_auroc_and_ap_equal_scikit_learn(seed, tied):
    g = torch.Generator().manual_seed(seed)
    neg, pos = torch.randn(200, generator=g), torch.randn(150, generator=g) + 0.7
    if tied:  # rounded scores: many ties across the two groups
        neg, pos = torch.round(neg * 2) / 2, torch.round(pos * 2) / 2
    y = [0] * len(neg) + [1] * len(pos)
    s = torch.cat([neg, pos]).numpy()
    assert ood.auroc(neg, pos) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ood.average_precision(neg, pos) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ood_scores_report_mi_only_with_several_samples():
    g = torch.Generator().manual_seed(0)
    test = torch.softmax(3 * torch.randn(50, 5, generator=g), -1)
    far = torch.full((40, 5), 0.2)  # uniform predictions: maximal entropy
    single = ood.ood_scores(test, far)
    assert set(single) == {"auroc_entropy", "ap_entropy"} and single["auroc_entropy"] == 1.0
    both = ood.ood_scores(test, far, ood.entropy(test) * 0.5, torch.zeros(40), num_samples=4)
    assert set(both) == set(ood.OOD_METRICS)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least one"):
        ood.auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        ood.average_precision(torch.tensor([math.nan]), torch.tensor([1.0]))
