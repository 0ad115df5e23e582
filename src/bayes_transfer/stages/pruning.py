"""SNR pruning of a Gaussian posterior (issue 14, BYOV's Fig.): accuracy of the network whose backbone weights
are the posterior means with a fraction pruned, by |mu| / sigma against |mu|, without retraining.

Two posteriors are pruned. A Bayes-by-Backprop prior (:func:`pruning_stage`, rule ``pruning``) on the source task,
described next; and every variational downstream fit (:func:`posterior_pruning_curve`, called by the fit stage
on the fitted q: the downstream network with its new head, its backbone's means pruned by their SNR or
magnitude, BatchNorm statistics recomputed from the fit's own training images, scored on the downstream test
set; the head, a point estimate, is never pruned).

The network is the prior's checkpoint with its source head; its backbone weights are replaced by the prior's
means, then the lowest-score fraction of every convolution and linear weight tensor is set to 0 (``scope="layer"``,
BYOV's per-layer percentile; :mod:`bayes_transfer.results.pruning`; BatchNorm scales and shifts are kept), without
retraining. The BatchNorm statistics are recomputed from source training images for every pruned network
(:func:`~bayes_transfer.stages.landscape.recompute_batchnorm_`): the checkpoint's belong to other weights (with
them the unpruned BBB means of the default score 69 % source accuracy, with recomputed ones 100 %). The network is
scored on the source task's held-out test images. A posterior whose sigma carries
information prunes better by SNR than by magnitude; the curve says whether this one does.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch

from bayes_transfer.io import write_csv
from bayes_transfer.models.resnets import build_model
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.results.pruning import prior_mean_and_std, pruning_curve
from bayes_transfer.stages.landscape import recompute_batchnorm_
from bayes_transfer.stages.source import load_pretrained
from bayes_transfer.stages.task import load_task

__all__ = ["FRACTIONS", "pruning_stage", "posterior_pruning_curve"]

#: source training images the BatchNorm statistics are recomputed from, in batches of BN_BATCH
BN_EXAMPLES, BN_BATCH = 1024, 256
#: the pruned fractions of the curve
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@torch.no_grad()
def pruning_stage(prior_path: str, checkpoint: str, data_cfg: Mapping, model_cfg: Mapping, out: str,
                  fractions: Sequence[float] = FRACTIONS) -> list[dict]:
    """The pruning curve (rows of :func:`~bayes_transfer.results.pruning.pruning_curve` plus the prior's name)
    of one prior, written to ``out`` (CSV)."""
    task = load_task(data_cfg)
    if task.source_test is None:
        raise ValueError(f"dataset {task.name!r} has no source test set here: SNR pruning runs on the embedded tiers")
    prior = GaussianPrior.load(prior_path)
    state = load_pretrained(checkpoint)["state_dict"]
    x, y = task.source_test.tensors

    xs = task.source_train.tensors[0][:BN_EXAMPLES]
    bn_batches = [xs[i:i + BN_BATCH] for i in range(0, len(xs), BN_BATCH)]
    means, sigmas = prior_mean_and_std(prior)
    weights = [n for n, m in means.items() if m.dim() > 1]  # convolution and linear weights

    def accuracy(pruned: Mapping[str, torch.Tensor]) -> float:
        net = build_model(model_cfg["arch"], task.source_classes, **(model_cfg.get("kwargs") or {}))
        return _pruned_accuracy(net, state, means | dict(pruned), bn_batches, [(x, y)])

    rows = pruning_curve({n: means[n] for n in weights}, {n: sigmas[n] for n in weights}, fractions, accuracy)
    for r in rows:
        r["prior"] = prior_path
        r["prior_method"] = (prior.metadata or {}).get("prior_method", "swag")
    import pandas as pd  # slow to import; only this job needs it

    write_csv(out, pd.DataFrame(rows))
    return rows


def _pruned_accuracy(net: torch.nn.Module, state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                     bn_batches: Sequence[torch.Tensor], eval_batches) -> float:
    """Accuracy on ``eval_batches`` ((inputs, labels) pairs) of ``net`` holding ``state`` with ``weights``
    replaced, its BatchNorm statistics recomputed from ``bn_batches``."""
    device = next(net.parameters()).device
    net.load_state_dict(state)
    net.load_state_dict(dict(weights), strict=False)
    recompute_batchnorm_([net], bn_batches, lambda xb: net(xb.to(device)))
    net.eval()
    correct = total = 0
    for xb, yb in eval_batches:
        correct += int((net(xb.to(device)).argmax(-1).cpu() == yb).sum())
        total += len(yb)
    return correct / total


def _batches(ds, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``ds`` in order as (inputs, labels) batches of at most ``batch`` examples."""
    if isinstance(ds, torch.utils.data.TensorDataset):
        xs, ys = ds.tensors[0], ds.tensors[1]
        for i in range(0, len(ds), batch):
            yield xs[i:i + batch], ys[i:i + batch].long()
        return
    for i in range(0, len(ds), batch):
        items = [ds[j] for j in range(i, min(i + batch, len(ds)))]
        yield torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.long)


@torch.no_grad()
def posterior_pruning_curve(posterior: Mapping, net: torch.nn.Module, train_set, test_set,
                            fractions: Sequence[float] = FRACTIONS) -> list[dict]:
    """The pruning curve of a variational fit's posterior (``FitResult.posterior``: ``state``, the network's
    state dict at the means; ``sigma``, the backbone's standard deviations): downstream test accuracy of ``net``
    (a network of the fit's architecture and classes) with the backbone's convolution and linear weights pruned,
    BatchNorm statistics recomputed from ``train_set`` (at most :data:`BN_EXAMPLES` of its images). Rows as
    :func:`~bayes_transfer.results.pruning.pruning_curve`'s."""
    state, sigma = posterior["state"], posterior["sigma"]
    weights = [n for n, s in sigma.items() if s.dim() > 1]
    if not weights:
        raise ValueError("the posterior has no convolution or linear weights to prune")
    kept, seen = [], 0  # the first BN_EXAMPLES training images, read no further
    for x, _ in _batches(train_set, BN_BATCH):
        if seen >= BN_EXAMPLES:
            break
        kept.append(x[:BN_EXAMPLES - seen])
        seen += len(kept[-1])
    test = list(_batches(test_set, BN_BATCH))

    def accuracy(pruned: Mapping[str, torch.Tensor]) -> float:
        return _pruned_accuracy(net, state, pruned, kept, test)

    try:
        return pruning_curve({n: state[n] for n in weights}, {n: sigma[n] for n in weights}, fractions, accuracy)
    finally:
        net.load_state_dict(state)
