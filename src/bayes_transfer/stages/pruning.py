"""SNR pruning of a Bayes-by-Backprop prior (issue 14, BYOV's Fig.): source-task accuracy of the pre-trained
network whose backbone weights are the posterior means with a fraction pruned, by |mu| / sigma against |mu|.

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

from typing import Mapping, Sequence

import torch

from bayes_transfer.io import write_csv
from bayes_transfer.models.resnets import build_model
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.results.pruning import prior_mean_and_std, pruning_curve
from bayes_transfer.stages.landscape import recompute_batchnorm_
from bayes_transfer.stages.source import load_pretrained
from bayes_transfer.stages.task import load_task

__all__ = ["FRACTIONS", "pruning_stage"]

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
        net.load_state_dict(state)
        net.load_state_dict(means | dict(pruned), strict=False)
        recompute_batchnorm_([net], bn_batches, net)
        net.eval()
        return float((net(x).argmax(-1) == y).double().mean())

    rows = pruning_curve({n: means[n] for n in weights}, {n: sigmas[n] for n in weights}, fractions, accuracy)
    for r in rows:
        r["prior"] = prior_path
        r["prior_method"] = (prior.metadata or {}).get("prior_method", "swag")
    import pandas as pd  # slow to import; only this job needs it

    write_csv(out, pd.DataFrame(rows))
    return rows
