"""``python -m bayes_transfer demo``: the whole method on the embedded digits, in about a minute.

Pre-trains the small residual CNN on the source digits (0-4), learns the SWAG prior from it on the same
source loss, then fits every method on a class-balanced subsample of the downstream digits (5-9) and
prints test accuracy, NLL and ECE (and the shifted-test accuracy). Hyper-parameters are fixed demo values,
except lambda, which is chosen on the validation split from a small grid as in the paper's protocol.
The Snakemake workflow runs the full protocol (tuning of every method, 5 seeds, all sizes).
"""

from __future__ import annotations

import copy
import time

import torch

from bayes_transfer.results import metrics
from bayes_transfer.data.digits import augment, load_digits_tasks, train_subset
from bayes_transfer.device import get_device
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.inference.methods import METHODS, run_method
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.inference.loop import Hyper


def run_demo(n_train: int = 25, seed: int = 0, pretraining: str = "supervised", steps: int = 300,
             lambdas=(1e6, 1e8), device: str | None = None, threads: int | None = None) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    dev = get_device(device)
    t0 = time.perf_counter()
    data = load_digits_tasks()
    print(f"device {dev}; source train {len(data.source_train)}, downstream pool {len(data.pool)}, "
          f"val {len(data.val)}, test {len(data.test)}; n_train = {n_train}, seed {seed}")
    model, objective, hist = pretrain("small_resnet", pretraining, data.source_train, data.num_classes,
                                      PretrainConfig(steps=600), augment=augment, seed=seed, device=dev)
    print(f"[{time.perf_counter() - t0:5.1f}s] pre-trained ({pretraining}), final source loss {hist[-1]['loss']:.4f}")
    state = copy.deepcopy(model.state_dict())
    prior = learn_prior(model, objective, data.source_train, SWAGConfig(cycles=20, steps_per_cycle=25, lr=0.1),
                        seed=seed, device=dev, metadata={"arch": "small_resnet", "pretraining": pretraining})
    print(f"[{time.perf_counter() - t0:5.1f}s] learned prior: d = {prior.dim}, rank {prior.rank}, "
          f"median variance {prior.variance.median().item():.3g}")
    train = train_subset(data, n_train, seed)
    base = Hyper(steps=steps, lr=0.05, temperature=1e-3, head_weight_decay=1e-3, isotropic_variance=1.0)

    def run(method, hp, eval_sets):
        return run_method(method, arch="small_resnet", pretrained_state=state, num_classes=data.num_classes,
                          train_set=train, eval_sets=eval_sets, hp=hp, seed=seed, learned_prior=prior, device=dev)

    # choose lambda for the learned prior on the validation split (MAP fit, cheapest)
    val_acc = {}
    for lam in lambdas:
        res = run("sgd_learned_prior", Hyper.from_dict(base.to_dict() | {"prior_scale": lam}), {"val": data.val})
        val_acc[lam] = metrics.accuracy(res.probs["val"], data.val.tensors[1]) if res.success else float("nan")
    finite = {k: v for k, v in val_acc.items() if v == v}
    lam = max(finite, key=finite.get) if finite else max(lambdas)
    print(f"[{time.perf_counter() - t0:5.1f}s] lambda on validation: "
          + ", ".join(f"{k:.0e}: {v:.3f}" for k, v in val_acc.items()) + f" -> {lam:.0e}")
    hp = Hyper.from_dict(base.to_dict() | {"prior_scale": lam})
    rows = []
    for method in METHODS:
        t = time.perf_counter()
        res = run(method, hp, {"test": data.test, "shifted_test": data.shifted_test})
        row = {"method": method, "success": res.success, "samples": res.num_samples,
               "time_s": time.perf_counter() - t, "reason": res.reason}
        if res.success:
            m = metrics.classification_metrics(res.probs["test"], data.test.tensors[1], data.num_classes)
            row |= {"accuracy": m["accuracy"], "nll": m["nll"], "ece": m["ece"],
                    "shifted_accuracy": metrics.accuracy(res.probs["shifted_test"], data.shifted_test.tensors[1])}
        rows.append(row)
    print(f"\n{'method':<22}{'acc':>8}{'nll':>8}{'ece':>8}{'shift acc':>11}{'samples':>9}{'time s':>8}")
    for r in rows:
        if r["success"]:
            print(f"{r['method']:<22}{r['accuracy']:>8.3f}{r['nll']:>8.3f}{r['ece']:>8.3f}"
                  f"{r['shifted_accuracy']:>11.3f}{r['samples']:>9d}{r['time_s']:>8.1f}")
        else:
            print(f"{r['method']:<22}  failed: {r['reason']}")
    print(f"\ntotal {time.perf_counter() - t0:.1f}s")
    return rows
