"""Tests for bayes_transfer.results.metrics and results.iou with hand-computed answers."""

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from bayes_transfer.results.iou import ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou, mean_iou_torchmetrics
from bayes_transfer.results.metrics import (
    PROB_FLOOR,
    accuracy,
    brier,
    classification_metrics,
    ece,
    mean_per_class_accuracy,
    nll,
    per_class_accuracy,
    reliability_bins,
    reliability_table,
)

# 4 examples, 3 classes. Predictions: 0 (correct), 1 (wrong), 2 (wrong), 1 (correct).
PROBS = torch.tensor(
    [
        [0.70, 0.20, 0.10],
        [0.10, 0.50, 0.40],
        [0.25, 0.25, 0.50],
        [0.05, 0.90, 0.05],
    ]
)
LABELS = torch.tensor([0, 2, 0, 1])


def test_hand_example_accuracy():
    assert accuracy(PROBS, LABELS) == pytest.approx(0.5)


def test_hand_example_nll():
    expected = -(math.log(0.7) + math.log(0.4) + math.log(0.25) + math.log(0.9)) / 4
    assert nll(PROBS, LABELS) == pytest.approx(expected, rel=1e-6)


def test_hand_example_brier():
    # per example sum_c (p_c - onehot_c)^2
    rows = [
        0.3**2 + 0.2**2 + 0.1**2,  # 0.14
        0.1**2 + 0.5**2 + 0.6**2,  # 0.62
        0.75**2 + 0.25**2 + 0.5**2,  # 0.875
        0.05**2 + 0.1**2 + 0.05**2,  # 0.015
    ]
    assert brier(PROBS, LABELS) == pytest.approx(sum(rows) / 4, rel=1e-6)
    assert brier(PROBS, LABELS) == pytest.approx(0.4125, rel=1e-6)


def test_hand_example_ece():
    # 15 bins of width 1/15: conf 0.7 -> (0.667, 0.733], correct; conf 0.5 twice -> (0.467, 0.533],
    # both wrong; conf 0.9 -> (0.867, 0.933], correct.
    expected = (abs(1 - 0.7) + 2 * abs(0 - 0.5) + abs(1 - 0.9)) / 4
    assert expected == pytest.approx(0.35)
    assert ece(PROBS, LABELS) == pytest.approx(expected, abs=1e-6)


def _calibration_cases():
    """Random softmax outputs (float32 and float64), rows with confidence exactly 1 and confidences on bin edges."""
    for seed in range(120):
        g = torch.Generator().manual_seed(seed)
        n, c = int(torch.randint(1, 600, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
        dtype = torch.float64 if seed % 3 == 0 else torch.float32
        probs = (float(8 * torch.rand(1, generator=g)) * torch.randn(n, c, generator=g, dtype=dtype)).softmax(1)
        if seed % 5 == 0:  # one-hot rows: confidence 1.0, the bin of its own
            probs[: n // 3] = torch.nn.functional.one_hot(torch.randint(0, c, (n // 3,), generator=g), c).to(dtype)
        if seed % 7 == 0:  # confidences 0.5 and 0.8, on the edges of 10 and 5 bins
            c, probs = 2, torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=dtype).repeat(n, 1)
        yield probs, torch.randint(0, c, (probs.shape[0],), generator=g), [15, 10, 5, 20][seed % 4]


def test_ece_is_torchmetrics_value_to_the_bit():
    """Our float32 binning gives exactly torchmetrics' L1 calibration error (it used to be computed by it)."""
    for probs, labels, n_bins in _calibration_cases():
        reference = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
        assert ece(probs, labels, n_bins=n_bins) == float(reference.item()), (tuple(probs.shape), n_bins)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ece(torch.ones(3, 1), torch.zeros(3, dtype=torch.long))


def test_classification_metrics_import_neither_torchmetrics_nor_pandas():
    """A fit job's metrics must not pay for torchmetrics (seconds) or pandas at start-up."""
    code = (
        "import sys, torch\n"
        "from bayes_transfer.results.metrics import classification_metrics, reliability_table\n"
        "p = torch.tensor([[0.7, 0.3], [0.4, 0.6]]); y = torch.tensor([0, 0])\n"
        "classification_metrics(p, y, 2); reliability_table(p, y)\n"
        "print(sorted(m for m in ('torchmetrics', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_hand_example_mean_per_class_accuracy():
    # class 0: 1 of 2 right; class 1: 1 of 1; class 2: 0 of 1
    assert mean_per_class_accuracy(PROBS, LABELS, 3) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    pca = per_class_accuracy(PROBS, LABELS, 3)
    assert pca.tolist() == pytest.approx([0.5, 1.0, 0.0])


def test_mean_per_class_accuracy_skips_absent_classes():
    probs = torch.tensor([[0.9, 0.05, 0.05, 0.0], [0.1, 0.8, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0]])
    labels = torch.tensor([0, 1, 1])  # classes 2 and 3 absent
    assert mean_per_class_accuracy(probs, labels, 4) == pytest.approx((1.0 + 0.5) / 2)
    pca = per_class_accuracy(probs, labels, 4)
    assert math.isnan(pca[2]) and math.isnan(pca[3])


def test_classification_metrics_dict():
    out = classification_metrics(PROBS, LABELS, 3, per_class=True)
    assert set(out) == {
        "accuracy", "error", "nll", "ece", "brier", "mean_per_class_accuracy", "per_class_accuracy",
    }
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["error"] == pytest.approx(0.5)
    assert out["ece"] == pytest.approx(0.35, abs=1e-6)
    assert out["brier"] == pytest.approx(0.4125, rel=1e-6)
    assert out["mean_per_class_accuracy"] == pytest.approx(0.5)
    assert out["per_class_accuracy"] == pytest.approx([0.5, 1.0, 0.0])
    assert "per_class_accuracy" not in classification_metrics(PROBS, LABELS, 3)
    assert all(isinstance(v, float) for k, v in out.items() if k != "per_class_accuracy")


def test_nll_zero_probability_is_finite():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1])
    value = nll(probs, labels)
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(PROB_FLOOR) / 2)


def test_perfect_predictions():
    probs = torch.eye(4, dtype=torch.float64)
    labels = torch.arange(4)
    assert accuracy(probs, labels) == 1.0
    assert nll(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert brier(probs, labels) == 0.0
    assert ece(probs, labels) == pytest.approx(0.0, abs=1e-7)


def test_reliability_bins_hand_example():
    probs = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],  # conf 0.25 -> bin 0 (0, 0.25], pred 0, correct
            [0.50, 0.50, 0.00, 0.00],  # conf 0.50 -> bin 1 (0.25, 0.5], pred 0, wrong
            [0.10, 0.60, 0.20, 0.10],  # conf 0.60 -> bin 2 (0.5, 0.75], correct
            [0.00, 0.00, 0.00, 1.00],  # conf 1.00 -> bin 3 (0.75, 1], correct
            [0.20, 0.10, 0.70, 0.00],  # conf 0.70 -> bin 2, wrong
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 1, 3, 0])
    table = reliability_bins(probs, labels, n_bins=4)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
    assert table["bin_lower"].tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert table["bin_upper"].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert table["count"].tolist() == [1, 1, 2, 1]
    assert table["mean_confidence"].tolist() == pytest.approx([0.25, 0.5, 0.65, 1.0])
    assert table["accuracy"].tolist() == pytest.approx([1.0, 0.0, 0.5, 1.0])

    # finer bins: nothing at or below 0.2, so the first two bins are empty (NaN)
    fine = reliability_bins(probs, labels, n_bins=10)
    assert fine["count"].tolist() == [0, 0, 1, 0, 1, 1, 1, 0, 0, 1]
    assert fine["mean_confidence"][:2].isna().all() and fine["accuracy"][:2].isna().all()
    assert fine["count"].sum() == 5


def test_reliability_table_is_the_dataframe_as_plain_columns():
    """What fit records (plain lists, no pandas) is exactly the DataFrame's columns, NaN for the empty bins."""
    g = torch.Generator().manual_seed(3)
    probs = (3.0 * torch.randn(50, 4, generator=g)).softmax(dim=1)
    labels = torch.randint(0, 4, (50,), generator=g)
    table = reliability_table(probs, labels, n_bins=20)
    frame = reliability_bins(probs, labels, n_bins=20).to_dict(orient="list")
    assert list(table) == list(frame) and all(type(v) is list and len(v) == 20 for v in table.values())
    for key in table:
        assert [type(v) for v in table[key]] == [type(v) for v in frame[key]], key
        assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(table[key], frame[key])), key
    assert sum(table["count"]) == 50 and any(math.isnan(v) for v in table["accuracy"])


def _ece_from_bins(table, n):
    full = table[table["count"] > 0]
    return float((full["count"] * (full["accuracy"] - full["mean_confidence"]).abs()).sum() / n)


@pytest.mark.parametrize("seed,n_bins", [(0, 15), (1, 10), (2, 5)])
def test_reliability_bins_reproduce_torchmetrics_ece(seed, n_bins):
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(400, 7, generator=g)
    probs = logits.softmax(dim=1)
    labels = torch.randint(0, 7, (400,), generator=g)
    table = reliability_bins(probs, labels, n_bins=n_bins)
    reference = multiclass_calibration_error(probs, labels, num_classes=7, n_bins=n_bins, norm="l1").item()
    assert _ece_from_bins(table, 400) == pytest.approx(reference, abs=1e-5)
    assert ece(probs, labels, n_bins=n_bins) == pytest.approx(reference, abs=1e-7)


def test_hand_example_bins_match_ece():
    table = reliability_bins(PROBS, LABELS)
    assert _ece_from_bins(table, 4) == pytest.approx(0.35, abs=1e-6)


@pytest.mark.parametrize(
    "probs,labels,match",
    [
        (torch.full((3, 2), 0.5), torch.tensor([0, 1]), "disagree on N"),
        (torch.full((3,), 0.5), torch.tensor([0, 1, 0]), r"shape \(N, C\)"),
        (torch.full((2, 2), 0.5), torch.tensor([[0], [1]]), r"shape \(N,\)"),
        (torch.tensor([[0.6, 0.6], [0.5, 0.5]]), torch.tensor([0, 1]), "sum to 1"),
        (torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([0, 1]), ">= 0"),
        (torch.tensor([[0.5, 0.5], [0.5, 0.5]]), torch.tensor([0, 2]), r"labels must lie in \[0, 1\]"),
        (torch.tensor([[0.5, 0.5], [0.5, 0.5]]), torch.tensor([-1, 0]), "labels must lie"),
        (torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), torch.tensor([0, 0]), "NaN"),
    ],
)
@pytest.mark.parametrize("fn", [accuracy, nll, ece, brier, reliability_bins])
def test_classification_validation(fn, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, labels)


def test_classification_validation_types_and_num_classes():
    with pytest.raises(TypeError, match="integer"):
        accuracy(PROBS, LABELS.float())
    with pytest.raises(TypeError, match="floating"):
        accuracy(torch.ones(2, 1, dtype=torch.long), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="num_classes=4"):
        classification_metrics(PROBS, LABELS, 4)
    with pytest.raises(ValueError, match="num_classes=2"):
        mean_per_class_accuracy(PROBS, LABELS, 2)


def test_sum_tolerance_accepts_small_rounding():
    probs = torch.tensor([[0.7004, 0.3], [0.2, 0.7996]])
    assert accuracy(probs, torch.tensor([0, 1])) == 1.0
    assert math.isfinite(ece(probs, torch.tensor([0, 1])))


# ----------------------------------------------------------------------------- segmentation

SEG_TARGET = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 255]])
SEG_PRED = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
# scored pixels (target, pred): (0,0) (0,1) (1,1) (2,2) (2,0) (1,1); the two ignore pixels would
# add (.,2) and (.,0) if they were counted.
SEG_CM = torch.tensor(
    [
        [1, 1, 0],
        [0, 2, 0],
        [1, 0, 1],
    ]
)


def test_confusion_matrix_hand_example():
    cm = confusion_matrix(SEG_PRED, SEG_TARGET, 3)
    assert cm.dtype == torch.long
    assert torch.equal(cm, SEG_CM)


def test_mean_iou_hand_example():
    # IoU_c = tp / (row_c + col_c - tp): class0 1/(2+2-1), class1 2/(2+3-2), class2 1/(2+1-1)
    ious = [1 / 3, 2 / 3, 1 / 2]
    assert iou_per_class(SEG_CM).tolist() == pytest.approx(ious)
    assert mean_iou(SEG_PRED, SEG_TARGET, 3) == pytest.approx(sum(ious) / 3)
    assert mean_iou(SEG_PRED, SEG_TARGET, 3) == pytest.approx(0.5)
    assert mean_iou_torchmetrics(SEG_PRED, SEG_TARGET, 3) == pytest.approx(0.5, abs=1e-6)


def test_mean_iou_excludes_zero_union_classes():
    # class 3 appears in neither map -> excluded; mean unchanged
    assert mean_iou(SEG_PRED, SEG_TARGET, 4) == pytest.approx(0.5)
    assert mean_iou_torchmetrics(SEG_PRED, SEG_TARGET, 4) == pytest.approx(0.5, abs=1e-6)
    # class 3 predicted once (where target is 1) -> IoU 0 included, class 1 loses a tp
    pred = SEG_PRED.clone()
    pred[0, 2] = 3
    ious = [1 / 3, 1 / (2 + 2 - 1), 1 / 2, 0.0]
    assert mean_iou(pred, SEG_TARGET, 4) == pytest.approx(sum(ious) / 4)
    assert mean_iou_torchmetrics(pred, SEG_TARGET, 4) == pytest.approx(sum(ious) / 4, abs=1e-6)


def test_no_ignore_counts_everything():
    target = SEG_TARGET.clamp_max(2)  # the two ignore pixels become class 2
    cm = confusion_matrix(SEG_PRED, target, 3, ignore_index=None)
    assert torch.equal(cm, SEG_CM + torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 1]]))


def _random_maps(seed, shape, num_classes, ignore_index=255, p_ignore=0.15):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=g)
    pred = torch.where(
        torch.rand(shape, generator=g) < 0.6, target, torch.randint(0, num_classes, shape, generator=g)
    )
    target[torch.rand(shape, generator=g) < p_ignore] = ignore_index
    return pred, target


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(64,), (2, 16, 16), (3, 1, 8, 9)])
def test_mean_iou_agrees_with_torchmetrics(seed, shape):
    pred, target = _random_maps(seed, shape, 6)
    assert mean_iou(pred, target, 6) == pytest.approx(mean_iou_torchmetrics(pred, target, 6), abs=1e-6)


def test_mean_iou_agrees_with_torchmetrics_missing_classes():
    pred, target = _random_maps(7, (4, 10, 10), 4)
    # declare 8 classes; 4..7 never appear, one appears only in pred
    pred[0, 0, 0] = 6
    target[0, 0, 0] = 0
    assert mean_iou(pred, target, 8) == pytest.approx(mean_iou_torchmetrics(pred, target, 8), abs=1e-6)


def test_mean_iou_ignore_index_inside_class_range():
    pred, target = _random_maps(3, (2, 12, 12), 5, ignore_index=0, p_ignore=0.0)
    assert mean_iou(pred, target, 5, ignore_index=0) == pytest.approx(
        mean_iou_torchmetrics(pred, target, 5, ignore_index=0), abs=1e-6
    )


def test_streaming_confusion_matrix():
    pred, target = _random_maps(11, (6, 20, 20), 5)
    acc = ConfusionMatrix(5)
    assert math.isnan(acc.mean_iou())
    for i in range(0, 6, 2):
        assert acc.update(pred[i : i + 2], target[i : i + 2]) is acc
    assert torch.equal(acc.matrix, confusion_matrix(pred, target, 5))
    assert acc.mean_iou() == pytest.approx(mean_iou(pred, target, 5))
    assert acc.mean_iou() == pytest.approx(mean_iou_torchmetrics(pred, target, 5), abs=1e-6)
    valid = target != 255
    assert acc.pixel_accuracy() == pytest.approx((pred[valid] == target[valid]).double().mean().item())
    acc.reset()
    assert acc.matrix.sum() == 0


def test_segmentation_validation():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\]"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 3, 255]), 3)
    with pytest.raises(ValueError, match="pred values"):
        mean_iou(torch.tensor([0, 5, 0, 0]), torch.tensor([0, 1, 2, 255]), 3)
    # out-of-range pred at an ignored pixel is fine
    assert mean_iou(torch.tensor([0, 1, 2, 99]), torch.tensor([0, 1, 2, 255]), 3) == 1.0
    with pytest.raises(TypeError, match="integer label map"):
        mean_iou(torch.zeros(4), torch.zeros(4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="square"):
        iou_per_class(torch.zeros(2, 3))
