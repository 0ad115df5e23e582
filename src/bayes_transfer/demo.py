"""``python -m bayes_transfer demo``: the whole method on the embedded digits, in under a minute.

Pre-trains the small residual CNN on the source digits (0-4), learns the SWAG prior from it on the same
source loss, then fits every method on class-balanced subsamples of the downstream digits (5-9), one per
seed, and prints test accuracy, NLL and ECE (and the shifted-test accuracy) as mean ± standard error over the
seeds. It ends with two sentences computed from those numbers (:func:`interpret`): which method won, by how
much, and whether the difference to the runner-up is beyond the seed noise (a paired t-test over seeds; the
same seed means the same training subsample for every method).

Hyper-parameters are fixed demo values (:class:`DemoSettings`), except lambda, which is chosen on the
validation split from a small grid as in the paper's protocol. ``--quick`` (:data:`QUICK`) runs the same
code with a few steps per stage, in seconds: a smoke test whose numbers say nothing about the method.
The Snakemake workflow runs the full protocol (tuning of every method, 5 seeds, all sizes).
"""

from __future__ import annotations

import copy
import math
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from bayes_transfer.data.digits import augment, load_digits_tasks, train_subset
from bayes_transfer.device import get_device
from bayes_transfer.inference.loop import Hyper
from bayes_transfer.inference.methods import METHODS, run_method
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.results import metrics


@dataclass(frozen=True)
class DemoSettings:
    """Every setting of the demo. Source pre-training and the prior use the first seed; each seed then draws
    its own downstream subsample and initialisation. Lambda is selected on the first seed's subsample."""

    n_train: int = 25  # downstream training examples (class-balanced)
    seeds: tuple[int, ...] = (0, 1, 2)
    pretraining: str = "supervised"
    pretrain_steps: int = 600
    swag_cycles: int = 20
    swag_steps_per_cycle: int = 25
    steps: int = 150  # downstream optimisation steps per fit (batch 32: full-batch at n = 25)
    lambdas: tuple[float, ...] = (1e6, 1e8)  # lambda grid, scored on the validation split


#: ``--quick``: the same stages with a few steps each (seconds, not a minute); the numbers are not evidence
QUICK = DemoSettings(seeds=(0, 1), pretrain_steps=60, swag_cycles=4, swag_steps_per_cycle=10, steps=30,
                     lambdas=(1e8,))

#: significance level of "beyond the seed noise" (two-sided paired t-test over seeds)
ALPHA = 0.05


def interpret(accuracy: Mapping[str, Sequence[float | None]], alpha: float = ALPHA) -> str:
    """Two sentences on a demo's outcome: which method won, by how much, and whether that is beyond seed noise.

    ``accuracy[method][i]`` is the test accuracy (a fraction) of ``method`` on the i-th seed, the same seeds in
    the same order for every method; ``None`` or NaN marks a failed run. The winner has the highest mean
    accuracy (ties: the first in ``accuracy``'s order); its gap to the runner-up is tested by a two-sided
    paired t-test over the seeds on which both ran, at level ``alpha``.
    """
    clean = {m: [float("nan") if a is None else float(a) for a in accs] for m, accs in accuracy.items()}
    means = {m: _nanmean(a) for m, a in clean.items()}
    ran = [m for m in clean if not math.isnan(means[m])]
    if not ran:
        return "Every method failed, so there is no winner. The reasons are in the table above."
    if len(ran) == 1:
        return (f"{ran[0]} was the only method that finished ({100 * means[ran[0]]:.1f} % test accuracy). "
                "With nothing to compare it with, the demo draws no conclusion.")
    order = sorted(ran, key=lambda m: -means[m])  # stable: ties keep the given order
    win, runner = order[0], order[1]
    k = len(clean[win])
    first = (f"{win} won with {100 * means[win]:.1f} % test accuracy (mean over {_seeds(k)}), "
             f"{100 * (means[win] - means[runner]):.1f} points ahead of the runner-up {runner} "
             f"({100 * means[runner]:.1f} %).")
    diffs = [a - b for a, b in zip(clean[win], clean[runner]) if not (math.isnan(a) or math.isnan(b))]
    if len(diffs) < 2:
        shared = "one seed" if len(diffs) == 1 else "no seed on which both ran"
        return first + (f" With {shared} the demo cannot tell this difference from seed noise; "
                        "run several seeds (--seeds 0 1 2) to find out.")
    d, se, p = _paired_test(diffs)
    verdict = (f"beyond the seed noise (p < {alpha:g})" if p < alpha else
               f"within the seed noise (p >= {alpha:g}), so these seeds cannot separate the two methods")
    second = (f" Paired over {_seeds(len(diffs))} (each seed is one training subsample shared by all methods), "
              f"the difference is {100 * d:.1f} ± {100 * se:.1f} points (mean ± SE; paired t-test p = {p:.2g}): "
              f"{verdict}.")
    return first + second


def _seeds(k: int) -> str:
    return "1 seed" if k == 1 else f"{k} seeds"


def _nanmean(values: Sequence[float]) -> float:
    return _mean_se([v for v in values if not math.isnan(v)])[0]


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample SD / sqrt(n)); NaN where there are too few values."""
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    se = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1) / n) if n > 1 else float("nan")
    return mean, se


def _paired_test(diffs: Sequence[float]) -> tuple[float, float, float]:
    """Mean, standard error and two-sided one-sample t-test p-value of paired differences (at least two)."""
    from scipy import stats

    mean, se = _mean_se(diffs)
    n = len(diffs)
    if se == 0.0:
        return mean, 0.0, (1.0 if mean == 0.0 else 0.0)
    return mean, se, float(2 * stats.t.sf(abs(mean) / se, n - 1))


def run_demo(settings: DemoSettings = DemoSettings(), device: str | None = None, threads: int | None = None,
             quick: bool = False) -> list[dict]:
    """Run the demo, print its table and interpretation; return one row per (method, seed)."""
    if threads:
        torch.set_num_threads(threads)
    s = settings
    dev = get_device(device)
    t0 = time.perf_counter()
    data = load_digits_tasks()
    print(f"device {dev}; source train {len(data.source_train)}, downstream pool {len(data.pool)}, "
          f"val {len(data.val)}, test {len(data.test)}; n_train = {s.n_train}, seeds {list(s.seeds)}")
    if quick:
        print(f"quick mode: {s.pretrain_steps} pre-training steps, {s.steps} steps per fit; a smoke test, "
              "not evidence about the method")
    seed0 = s.seeds[0]
    model, objective, hist = pretrain("small_resnet", s.pretraining, data.source_train, data.num_classes,
                                      PretrainConfig(steps=s.pretrain_steps), augment=augment, seed=seed0,
                                      device=dev)
    print(f"[{time.perf_counter() - t0:5.1f}s] pre-trained ({s.pretraining}), final source loss {hist[-1]['loss']:.4f}")
    state = copy.deepcopy(model.state_dict())
    swag = SWAGConfig(cycles=s.swag_cycles, steps_per_cycle=s.swag_steps_per_cycle, lr=0.1)
    prior = learn_prior(model, objective, data.source_train, swag, seed=seed0, device=dev,
                        metadata={"arch": "small_resnet", "pretraining": s.pretraining})
    print(f"[{time.perf_counter() - t0:5.1f}s] learned prior: d = {prior.dim}, rank {prior.rank}, "
          f"median variance {prior.variance.median().item():.3g}")
    base = Hyper(steps=s.steps, lr=0.05, temperature=1e-3, head_weight_decay=1e-3, isotropic_variance=1.0)

    def run(method, hp, eval_sets, seed):
        return run_method(method, arch="small_resnet", pretrained_state=state, num_classes=data.num_classes,
                          train_set=train_subset(data, s.n_train, seed), eval_sets=eval_sets, hp=hp, seed=seed,
                          learned_prior=prior, device=dev)

    # choose lambda for the learned prior on the validation split (MAP fit, cheapest), on the first seed
    val_acc = {}
    for lam in s.lambdas:
        res = run("sgd_learned_prior", Hyper.from_dict(base.to_dict() | {"prior_scale": lam}), {"val": data.val},
                  seed0)
        val_acc[lam] = metrics.accuracy(res.probs["val"], data.val.tensors[1]) if res.success else float("nan")
    finite = {k: v for k, v in val_acc.items() if v == v}
    lam = max(finite, key=finite.get) if finite else max(s.lambdas)
    print(f"[{time.perf_counter() - t0:5.1f}s] lambda on validation: "
          + ", ".join(f"{k:.0e}: {v:.3f}" for k, v in val_acc.items()) + f" -> {lam:.0e}")
    hp = Hyper.from_dict(base.to_dict() | {"prior_scale": lam})
    rows = []
    for seed in s.seeds:
        for method in METHODS:
            t = time.perf_counter()
            res = run(method, hp, {"test": data.test, "shifted_test": data.shifted_test}, seed)
            row = {"method": method, "seed": seed, "success": res.success, "samples": res.num_samples,
                   "time_s": time.perf_counter() - t, "reason": res.reason}
            if res.success:
                m = metrics.classification_metrics(res.probs["test"], data.test.tensors[1], data.num_classes)
                row |= {"accuracy": m["accuracy"], "nll": m["nll"], "ece": m["ece"],
                        "shifted_accuracy": metrics.accuracy(res.probs["shifted_test"],
                                                             data.shifted_test.tensors[1])}
            rows.append(row)
        print(f"[{time.perf_counter() - t0:5.1f}s] seed {seed}: {len(METHODS)} methods fitted")
    print_table(rows, s.seeds)
    print("\n" + textwrap.fill(interpret(accuracy_by_method(rows, s.seeds)), width=110))
    print(f"\ntotal {time.perf_counter() - t0:.1f}s")
    return rows


def accuracy_by_method(rows: Sequence[Mapping], seeds: Sequence[int]) -> dict[str, list[float | None]]:
    """``{method: [test accuracy on seeds[0], seeds[1], ...]}`` from the demo's rows (None: failed run)."""
    by_key = {(r["method"], r["seed"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return {m: [by_key[(m, s)].get("accuracy") if (m, s) in by_key else None for s in seeds] for m in methods}


def print_table(rows: Sequence[Mapping], seeds: Sequence[int]) -> None:
    """One line per method: mean ± SE over seeds of accuracy, and means of NLL, ECE and shifted accuracy."""
    k = len(seeds)
    print(f"\nmean over {_seeds(k)}" + ("" if k == 1 else " (± standard error)"))
    print(f"{'method':<22}{'acc':>15}{'nll':>8}{'ece':>8}{'shift acc':>11}{'samples':>9}{'time s':>8}")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["success"]]
        if not ok:
            print(f"{method:<22}  failed: {mine[0]['reason']}")
            continue
        mean, se = _mean_se([r["accuracy"] for r in ok])
        acc = f"{mean:.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}")
        avg = {key: sum(r[key] for r in ok) / len(ok) for key in ("nll", "ece", "shifted_accuracy")}
        note = "" if len(ok) == len(mine) else f"  ({len(mine) - len(ok)} of {len(mine)} seeds failed)"
        print(f"{method:<22}{acc:>15}{avg['nll']:>8.3f}{avg['ece']:>8.3f}{avg['shifted_accuracy']:>11.3f}"
              f"{ok[0]['samples']:>9d}{sum(r['time_s'] for r in mine):>8.1f}{note}")
