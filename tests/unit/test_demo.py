"""The demo's closing interpretation (made-up numbers with known answers) and one tiny end-to-end run."""

import math
import re

from scipy import stats

from bayes_transfer.demo import DemoSettings, accuracy_by_method, interpret, run_demo
from bayes_transfer.inference.methods import METHODS


def sentences(text: str) -> list[str]:
    # sentences end with "." before a capitalised word; method names (first words) are lower case
    return re.split(r"(?<=\.) (?=[A-Z])", text)


def test_clear_winner_is_beyond_the_seed_noise():
    acc = {"sgd_transfer": [0.80, 0.815, 0.82], "bnn_learned_prior": [0.90, 0.91, 0.92], "other": [0.5, 0.5, 0.5]}
    text = interpret(acc)
    p = stats.ttest_rel(acc["bnn_learned_prior"], acc["sgd_transfer"]).pvalue  # 2.9e-4
    assert len(sentences(text)) == 2
    assert text.startswith("bnn_learned_prior won with 91.0 % test accuracy (mean over 3 seeds), 9.8 points ahead "
                           "of the runner-up sgd_transfer (81.2 %).")
    # paired differences 10.0, 9.5, 10.0 points: mean 9.83, SE 0.167
    assert "the difference is 9.8 ± 0.2 points" in text
    assert f"p = {p:.2g}" in text and p < 1e-3
    assert "beyond the seed noise" in text


def test_small_gap_with_large_spread_is_within_the_seed_noise():
    acc = {"a": [0.90, 0.80, 0.85], "b": [0.85, 0.86, 0.82]}  # means 85.0 vs 84.3; differences 5, -6, 3 points
    text = interpret(acc)
    p = stats.ttest_rel(acc["a"], acc["b"]).pvalue
    assert p > 0.05
    assert text.startswith("a won with 85.0 % test accuracy (mean over 3 seeds), 0.7 points ahead of the runner-up b")
    assert f"p = {p:.2g}" in text
    assert "within the seed noise" in text and "cannot separate" in text
    assert len(sentences(text)) == 2


def test_one_seed_cannot_tell_noise_from_effect():
    text = interpret({"a": [0.93], "b": [0.90]})
    assert text.startswith("a won with 93.0 % test accuracy (mean over 1 seed), 3.0 points ahead")
    assert "cannot tell this difference from seed noise" in text
    assert len(sentences(text)) == 2


def test_failed_runs_are_left_out_of_the_means_and_the_pairs():
    # b failed on seed 1: its mean is over seeds 0 and 2, and the pairs are seeds 0 and 2
    acc = {"a": [0.90, 0.70, 0.92], "b": [0.80, None, 0.81]}
    text = interpret(acc)
    p = stats.ttest_rel([0.90, 0.92], [0.80, 0.81]).pvalue
    assert text.startswith("a won with 84.0 % test accuracy (mean over 3 seeds), 3.5 points ahead")
    assert "a won with 84.0 % test accuracy" in text and "runner-up b (80.5 %)" in text
    assert "Paired over 2 seeds" in text and "the difference is 10.5 ± 0.5 points" in text
    assert f"p = {p:.2g}" in text
    nan_text = interpret({"a": [0.90, 0.70, 0.92], "b": [0.80, math.nan, 0.81]})
    assert nan_text == text


def test_ties_keep_the_given_order_and_identical_runs_are_no_effect():
    text = interpret({"first": [0.9, 0.8], "second": [0.9, 0.8]})
    assert text.startswith("first won") and "0.0 points ahead of the runner-up second" in text
    assert "p = 1" in text and "within the seed noise" in text


def test_nothing_to_compare():
    assert "no winner" in interpret({"a": [None, None], "b": [math.nan, None]})
    assert interpret({"a": [0.9, None], "b": [None, None]}).startswith("a was the only method that finished (90.0 %")


def test_accuracy_by_method_lines_up_seeds():
    rows = [{"method": "a", "seed": 3, "accuracy": 0.5}, {"method": "a", "seed": 1, "accuracy": 0.6},
            {"method": "b", "seed": 1}, {"method": "b", "seed": 3, "accuracy": 0.7}]
    assert accuracy_by_method(rows, [1, 3]) == {"a": [0.6, 0.5], "b": [None, 0.7]}


def test_tiny_demo_prints_its_table_and_the_interpretation_of_its_own_numbers(capsys):
    settings = DemoSettings(seeds=(0, 1), pretrain_steps=5, swag_cycles=3, swag_steps_per_cycle=3, steps=8,
                            lambdas=(1e8,))
    rows = run_demo(settings, device="cpu", threads=1, quick=True)
    out = capsys.readouterr().out
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted((m, s) for m in METHODS for s in (0, 1))
    for method in METHODS:
        assert re.search(rf"^{method}\s", out, re.M)
    expected = interpret(accuracy_by_method(rows, settings.seeds))
    assert " ".join(expected.split()) in " ".join(out.split())
    assert "quick mode" in out and "total" in out
