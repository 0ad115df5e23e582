"""The paper's effect per claim part (matched cells of its tables) and the power hook the audit calls."""

import math

import numpy as np
import pandas as pd
import pytest

from bayes_transfer.audit.paper_effects import PAPER_CONTRASTS, paper_effect, power_hook
from bayes_transfer.audit.power import power_summary
from bayes_transfer.audit.stats import POWER_COLUMNS


def _published(rows):
    cols = ["table", "task", "dataset", "eval_set", "backbone", "pretraining", "method", "n_train", "metric",
            "value", "se"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def _cifar10(table, pretraining, method, n_train, error):
    """A published CIFAR-10 test-error cell of the ResNet-50 (no SE)."""
    return (table, "classification", "cifar10", "test", "resnet50", pretraining, method, n_train, "test_error",
            error, None)


def test_effect_is_the_mean_matched_difference_oriented_positive_for_a_better_treatment():
    pub = _published([
        _cifar10(2, "supervised", "sgd_learned_prior", "10", 40.0),
        _cifar10(2, "supervised", "sgd_transfer", "10", 50.0),
        _cifar10(2, "supervised", "sgd_learned_prior", "100", 20.0),
        _cifar10(2, "supervised", "sgd_transfer", "100", 22.0),
        # the same cell printed in a second table counts once
        _cifar10(10, "supervised", "sgd_transfer", "100", 22.0),
        # an unmatched cell (no control at n = 1000) is not used
        _cifar10(2, "supervised", "sgd_learned_prior", "1000", 5.0),
    ])
    effect, cells = paper_effect("C3 SGD", pub)
    assert cells == 2
    assert effect == pytest.approx(((50 - 40) + (22 - 20)) / 2 / 100)  # error falls: positive, in fractions


def test_simclr_part_compares_pretrainings_of_one_method_and_miou_is_higher_is_better():
    pub = _published([
        _cifar10(10, "simclr", "bnn_learned_prior", "10", 30.0),
        _cifar10(2, "supervised", "bnn_learned_prior", "10", 33.0),
        _cifar10(10, "simclr", "sgd_learned_prior", "10", 90.0),
        (1, "segmentation", "voc2012", "val", "resnet50", "supervised", "bnn_learned_prior", "full", "miou", 72.0, None),
        (1, "segmentation", "voc2012", "val", "resnet50", "supervised", "bnn_isotropic_prior", "full", "miou", 70.0, None),
    ])
    assert paper_effect("C6 bnn_learned_prior", pub) == (pytest.approx(0.03), 1)
    assert paper_effect("C6 sgd_learned_prior", pub) is None  # no supervised counterpart
    assert paper_effect("C9 BNN", pub) == (pytest.approx(0.02), 1)
    assert paper_effect("C7 nll vs sgd_transfer", pub) is None  # the tables report no NLL


def test_every_contrast_part_has_an_effect_in_the_shipped_tables_where_both_arms_are_printed():
    got = {part: paper_effect(part) for part in PAPER_CONTRASTS}
    # C3/C4/C8 are printed for every classification table; mean IoU for both segmentation datasets
    for part in ("C3 SGD", "C3 BNN", "C4", "C8", "C9 SGD", "C9 BNN"):
        assert got[part] is not None and got[part][1] >= 4, part


def test_hook_returns_only_the_audits_columns_and_agrees_with_power_summary():
    diffs = np.array([0.01, 0.02, -0.005, 0.03, 0.0])
    pub = _published([
        _cifar10(2, "supervised", "bnn_learned_prior", "10", 40.0),
        _cifar10(2, "supervised", "sgd_learned_prior", "10", 45.0),
    ])
    out = power_hook(pub)(diffs, alpha=0.05, direction=1, margin=0.0, metric="error", claim="C4", part="C4")
    assert set(out) <= set(POWER_COLUMNS)
    ref = power_summary(diffs, alpha=0.05, target_effect=0.05)
    assert out["mde"] == pytest.approx(ref.detectable.value)
    assert out["power_at_target"] == pytest.approx(ref.power_at_target)
    assert "1 matched cells" in out["power_note"]
    none = power_hook(pub)(diffs, alpha=0.05, direction=1, margin=0.0, metric="nll", claim="C7", part="C7 x")
    assert none.get("power_at_target") is None or math.isnan(none["power_at_target"])
    assert "no effect for this part" in none["power_note"]
