"""Loss along directions in parameter space (the paper's Fig. 3a).

The question behind the figure: are the directions in which the learned prior has most variance the
directions in which the *downstream* loss is flat? The recipe:

1. fix the pre-trained feature extractor theta and train a linear head on its features (downstream data);
2. take the top singular directions of the prior's low-rank factor, and random Gaussian directions;
3. filter-normalise every direction (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"):
   each filter of the direction (a slice along the output-channel dimension of a weight with >= 2 dims)
   is rescaled to the norm of the same filter of theta, so that distances are comparable across
   directions and across layers whatever their scale; 1-d parameters (BatchNorm weight and bias,
   biases) get a zero direction, Li et al.'s default;
4. evaluate the test loss of theta + t * d (head fixed) for t on a grid, with the BatchNorm running
   statistics **recomputed at every point** from training batches (:func:`recompute_batchnorm_`). Filter
   normalisation relies on a network being invariant to rescaling a filter; BatchNorm makes it so only when
   its statistics follow the weights. With the checkpoint's stale statistics (``bn_batches=None``, the old
   evaluation) a perturbed network is mis-normalised and the loss grows for that reason alone.

Beside it, the *source* loss along the same directions (:func:`source_loss_along`, the objective the prior
was learned on, on source training data): a control that tells "the prior's directions are steep for the
downstream task" apart from "they are steep for any task". Every distance is also given in units of the
prior's standard deviation along the direction (:func:`prior_std_along`). :func:`landscape_stage` writes
the table.

A flat curve means the loss does not care about moving along that direction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.io import write_csv

Direction = dict[str, Tensor]


def filter_normalise(direction: Mapping[str, Tensor], params: Mapping[str, Tensor], eps: float = 1e-10,
                     ignore_1d: bool = True) -> Direction:
    """Li et al.'s filter normalisation of ``direction`` with respect to ``params`` (both keyed by name).

    For a parameter with >= 2 dimensions, each filter ``d[i]`` (index ``i`` along dim 0) becomes
    ``d[i] * ||theta[i]|| / (||d[i]|| + eps)``. One-dimensional parameters get a zero direction when
    ``ignore_1d`` (else they are normalised as a single filter).
    """
    missing = [n for n in direction if n not in params]
    if missing:
        raise KeyError(f"filter_normalise: direction has parameters the model lacks: {missing[:3]}")
    out: Direction = {}
    for name, d in direction.items():
        p = params[name].detach()
        if d.shape != p.shape:
            raise ValueError(f"filter_normalise: {name} has shape {tuple(d.shape)}, parameter {tuple(p.shape)}")
        d = d.detach().to(p.dtype)
        if p.dim() <= 1:
            if ignore_1d:
                out[name] = torch.zeros_like(p)
            else:
                out[name] = d * (p.norm() / (d.norm() + eps))
            continue
        d_rows = d.reshape(d.shape[0], -1)
        p_rows = p.reshape(p.shape[0], -1)
        scale = p_rows.norm(dim=1) / (d_rows.norm(dim=1) + eps)
        out[name] = (d_rows * scale[:, None]).reshape(p.shape)
    return out


def prior_directions(prior: GaussianPrior, count: int) -> list[Direction]:
    """The top-``count`` right singular vectors of the prior's low-rank factor, by parameter name.

    These are the principal axes of the low-rank part of the learned covariance, largest variance first.
    """
    if count > prior.rank:
        raise ValueError(f"prior_directions: {count} directions asked, the prior has rank {prior.rank}")
    if count <= 0:
        return []
    _, _, vh = torch.linalg.svd(prior.factor.double(), full_matrices=False)
    return [{k: v.to(prior.mean.dtype) for k, v in prior.unflatten(vh[i]).items()} for i in range(count)]


def random_directions(params: Mapping[str, Tensor], count: int, generator: torch.Generator) -> list[Direction]:
    """``count`` standard-normal directions with the shapes of ``params``."""
    return [{n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}
            for _ in range(count)]


def train_linear_head(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-3,
                      max_iter: int = 200) -> nn.Linear:
    """A multinomial logistic regression on fixed features (full-batch L-BFGS, deterministic).

    The weights start at zero, so the result depends only on the data and ``weight_decay``.
    """
    features = features.detach().double()
    head = nn.Linear(features.shape[1], num_classes).double()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.float()


def batchnorm_modules(*modules: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``modules`` (model, head, projector ...), in order."""
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm_(modules: Sequence[nn.Module], batches: Iterable, forward: Callable) -> None:
    """Reset the running statistics of every BatchNorm layer in ``modules`` and recompute them as the
    plain average over ``batches`` (``momentum=None``), running ``forward(batch)`` with only the BatchNorm
    layers in train mode. Training flags and momenta are restored; the new statistics stay."""
    bns = batchnorm_modules(*modules)
    if not bns:
        return
    flags = [(m, m.training) for mod in modules for m in mod.modules()]
    momenta = [bn.momentum for bn in bns]
    try:
        for mod in modules:
            mod.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        seen = 0
        for batch in batches:
            forward(batch)
            seen += 1
        if seen == 0:
            raise ValueError("recompute_batchnorm_: no batches to recompute the BatchNorm statistics from")
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, flag in flags:
            m.train(flag)


def _along(model: nn.Module, direction: Mapping[str, Tensor], distances: Iterable[float], evaluate: Callable,
           bn_modules: Sequence[nn.Module], bn_batches: Iterable | None, bn_forward: Callable) -> list[float]:
    """``evaluate()`` at theta + t * direction for every t (eval mode; BatchNorm recomputed per point if
    ``bn_batches``); parameters, BatchNorm buffers and training flags are restored afterwards."""
    params = dict(model.named_parameters())
    missing = [n for n in direction if n not in params]
    if missing:
        raise KeyError(f"the direction moves parameters the model lacks: {missing[:3]}")
    original = {n: params[n].detach().clone() for n in direction}
    bns = batchnorm_modules(*bn_modules)
    buffers = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    flags = [(m, m.training) for mod in bn_modules for m in mod.modules()]
    batches = list(bn_batches) if bn_batches is not None else None
    out = []
    try:
        with torch.no_grad():
            for mod in bn_modules:
                mod.eval()
            for t in distances:
                for n, d in direction.items():
                    params[n].copy_(original[n] + float(t) * d.to(original[n].device, original[n].dtype))
                if batches is not None:
                    recompute_batchnorm_(bn_modules, batches, bn_forward)
                out.append(float(evaluate()))
    finally:
        with torch.no_grad():
            for n, v in original.items():
                params[n].copy_(v)
            for bn, state in zip(bns, buffers):
                bn.load_state_dict(state)
        for m, flag in flags:
            m.train(flag)
    return out


def loss_along(model: nn.Module, head: nn.Module, direction: Mapping[str, Tensor], distances: Iterable[float],
               x: Tensor, y: Tensor, batch_size: int = 1024, *, bn_batches: Iterable[Tensor] | None = None
               ) -> list[float]:
    """Mean cross-entropy of ``head(model.features(x))`` at theta + t * direction for every t.

    ``bn_batches`` (input tensors, e.g. the downstream training batches): the BatchNorm running statistics
    are recomputed from them at every point (what :func:`landscape_stage` does by default). ``None`` keeps
    the model's running statistics unchanged at every point (stale for a perturbed network; the old Fig. 3a).
    The model's parameters, BatchNorm buffers and mode are restored afterwards.
    """

    def evaluate():
        total = 0.0
        for i in range(0, len(x), batch_size):
            logits = head(model.features(x[i:i + batch_size]))
            total += float(F.cross_entropy(logits.double(), y[i:i + batch_size], reduction="sum"))
        return total / len(x)

    return _along(model, direction, distances, evaluate, [model], bn_batches, model.features)


def source_loss_along(model: nn.Module, objective: nn.Module, direction: Mapping[str, Tensor],
                      distances: Iterable[float], x: Tensor, y: Tensor, batch_size: int = 256, *,
                      recompute_batchnorm: bool = True, seed: int = 0) -> list[float]:
    """The source objective ``objective(model, x, y)`` (e.g. a :class:`~bayes_transfer.objectives.pretrain.
    SourceObjective`: cross-entropy of the source head, or SimCLR's NT-Xent) along the direction.

    Mean over the batches of ``x`` (weighted by their size). The objective's random views are re-seeded with
    ``seed`` before every pass, so every point sees the same augmentations. With ``recompute_batchnorm`` the
    BatchNorm statistics of the model *and* the objective (SimCLR's projector) are recomputed at every point
    from the same source batches.
    """
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    generator = getattr(objective, "generator", None)

    def reseed():
        if isinstance(generator, torch.Generator):
            generator.manual_seed(int(seed))

    def forward(batch):
        objective(model, *batch)

    def evaluate():
        reseed()
        return sum(float(objective(model, xb, yb)) * len(xb) for xb, yb in batches) / len(x)

    def recompute_forward(batch):
        if batch is batches[0]:
            reseed()
        forward(batch)

    return _along(model, direction, distances, evaluate, [model, objective],
                  batches if recompute_batchnorm else None, recompute_forward)


def prior_std_along(prior: GaussianPrior, direction: Mapping[str, Tensor]) -> float:
    """Standard deviation of the prior's marginal along the unit vector u = d / |d|:
    ``sqrt(u^T (diag(v) + F^T F) u) = sqrt(sum v u^2 + |F u|^2)``, O(d k), never a dense matrix.
    Parameters the direction leaves out count as zero; a parameter the prior lacks is an error."""
    extra = [n for n in direction if n not in prior.names]
    if extra:
        raise KeyError(f"prior_std_along: the prior does not cover {extra[:3]}")
    flat = torch.cat([direction[n].detach().reshape(-1).double().cpu() if n in direction
                      else torch.zeros(math.prod(s), dtype=torch.float64)
                      for n, s in zip(prior.names, prior.shapes)])
    norm = float(flat.norm())
    if norm == 0:
        raise ValueError("prior_std_along: the direction is zero")
    u = flat / norm
    var = float((prior.variance.double() * u * u).sum()) + float((prior.factor.double() @ u).square().sum())
    return math.sqrt(var)


def direction_norm(direction: Mapping[str, Tensor]) -> float:
    """Euclidean norm of a direction over all its parameters."""
    return math.sqrt(sum(float(d.double().square().sum()) for d in direction.values()))


#: the keys of the stage's ``cfg`` (the config's ``ablations.landscape`` section, whose schema holds the defaults)
STAGE_KEYS = ("n_train", "prior_directions", "random_directions", "max_distance", "points", "head_weight_decay",
              "batchnorm", "bn_batch_size", "source_examples", "source_batch_size")


def landscape_stage(pretraining: str, seeds: Sequence[int], *, checkpoint: str, prior_path: str,
                    data_cfg: Mapping, model_cfg: Mapping, cfg: Mapping, out: str, device: str | None = None,
                    source_set=None):
    """Downstream test loss (and source loss) along the prior's top directions and random ones; one CSV.

    ``cfg`` keys: ``n_train`` (downstream examples the linear head is trained on and BatchNorm is recomputed
    from; the seed draws them), ``prior_directions``, ``random_directions``, ``max_distance``, ``points``,
    ``head_weight_decay``, ``batchnorm`` ("recompute" at every point, or "stale", the old evaluation),
    ``bn_batch_size``, ``source_examples`` (source training examples the source loss is evaluated on, drawn by
    the seed; 0: no source rows), ``source_batch_size`` (all of :data:`STAGE_KEYS`; their defaults are the
    config schema's ``ablations.landscape``, the one place they are written). ``source_set``
    overrides the source training set (default: the task's, :func:`~bayes_transfer.stages.task.source_train_set`).
    Columns: pretraining, seed, loss_set (downstream | source), direction_type (prior | random), direction,
    distance (filter-normalised t), distance_prior_std (``t |d| / prior_std_along(prior, d)``, the stored prior,
    i.e. lambda = 1), loss, batchnorm. With ``batchnorm="stale"`` and no source rows the losses are those of
    the former ``stages.ablation.landscape_stage`` (bit-identical).
    """
    import numpy as np
    import pandas as pd

    from bayes_transfer.device import get_device
    from bayes_transfer.inference.methods import downstream_model
    from bayes_transfer.models.resnets import build_model, split_named_parameters
    from bayes_transfer.objectives.pretrain import SourceObjective
    from bayes_transfer.stages.experiment import code_version, load_pretrained
    from bayes_transfer.stages.task import load_task, source_train_set, training_subset

    missing = [k for k in STAGE_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"landscape cfg (ablations.landscape): missing key(s) {', '.join(missing)}")
    if cfg["batchnorm"] not in ("recompute", "stale"):
        raise ValueError(f"landscape cfg: batchnorm must be 'recompute' or 'stale', got {cfg['batchnorm']!r}")
    recompute = cfg["batchnorm"] == "recompute"
    task, dev = load_task(data_cfg), get_device(device)
    ckpt = load_pretrained(checkpoint)
    prior = GaussianPrior.load(prior_path)
    top = prior_directions(prior, int(cfg["prior_directions"]))
    distances = np.linspace(-float(cfg["max_distance"]), float(cfg["max_distance"]), int(cfg["points"]))
    test_x, test_y = _tensors(task.test)
    n_source = int(cfg["source_examples"])
    source = None
    if n_source > 0:
        source = source_set if source_set is not None else source_train_set(task, data_cfg)
    rows = []
    for seed in seeds:
        model = downstream_model(model_cfg["arch"], ckpt["state_dict"], task.num_classes, seed,
                                 model_cfg.get("kwargs")).to(dev).eval()
        backbone, _ = split_named_parameters(model)
        prior.check_params(backbone)
        train_x, train_y = _tensors(training_subset(task, int(cfg["n_train"]), seed))
        bn_batches = [train_x[i:i + int(cfg["bn_batch_size"])].to(dev)
                      for i in range(0, len(train_x), int(cfg["bn_batch_size"]))] if recompute else None
        if recompute:  # the head is fitted to the network it is evaluated with at t = 0
            recompute_batchnorm_([model], bn_batches, model.features)
        with torch.no_grad():
            feats = model.features(train_x.to(dev))
        head = train_linear_head(feats.cpu(), train_y, task.num_classes,
                                 weight_decay=float(cfg["head_weight_decay"])).to(dev)
        gen = torch.Generator().manual_seed(int(seed))
        theta = {k: v.detach().cpu() for k, v in backbone.items()}
        directions = [("prior", i, d) for i, d in enumerate(top)]
        directions += [("random", i, d)
                       for i, d in enumerate(random_directions(theta, int(cfg["random_directions"]), gen))]
        directions = [(kind, i, filter_normalise(d, theta)) for kind, i, d in directions]
        sets = {"downstream": lambda d: loss_along(model, head, d, distances, test_x.to(dev), test_y.to(dev),
                                                    bn_batches=bn_batches)}
        if source is not None:
            src_model = build_model(model_cfg["arch"], task.source_classes, **(model_cfg.get("kwargs") or {}))
            src_model.load_state_dict(ckpt["state_dict"])
            objective = SourceObjective(pretraining, src_model.feature_dim, augment=task.augment, seed=int(seed))
            objective.load_state_dict(ckpt["objective"])
            src_model, objective = src_model.to(dev).eval(), objective.to(dev).eval()
            sx, sy = _tensors(source, n_source, int(seed))
            sets["source"] = lambda d: source_loss_along(
                src_model, objective, d, distances, sx.to(dev), sy.to(dev), int(cfg["source_batch_size"]),
                recompute_batchnorm=recompute, seed=int(seed))
        for kind, i, d in directions:
            scale = direction_norm(d) / prior_std_along(prior, d)
            for loss_set, along in sets.items():
                rows += [{"pretraining": pretraining, "seed": int(seed), "loss_set": loss_set,
                          "direction_type": kind, "direction": i, "distance": float(t),
                          "distance_prior_std": float(t) * scale, "loss": float(v), "batchnorm": cfg["batchnorm"]}
                         for t, v in zip(distances, along(d))]
    table = pd.DataFrame(rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.attrs["code_version"] = code_version()
    write_csv(out, table)
    return table


def _tensors(ds, n: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs and labels of ``ds`` (or of ``n`` of its examples drawn by ``seed``) as two tensors."""
    idx = range(len(ds)) if n is None or n >= len(ds) else \
        torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    if isinstance(ds, torch.utils.data.TensorDataset):
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        return ds.tensors[0][idx], ds.tensors[1][idx].long()
    xs, ys = zip(*(ds[i] for i in idx))
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def landscape_summary(table):
    """Mean ± SE over seeds, per loss set (if the table has one), direction type and distance, of the
    per-seed mean loss over directions; with ``distance_prior_std`` also its mean at each point."""
    import numpy as np

    keys = ["pretraining"] + (["loss_set"] if "loss_set" in table else []) + ["direction_type", "distance"]
    per_seed = table.groupby(keys + ["seed"])["loss"].mean().reset_index()
    out = per_seed.groupby(keys)["loss"].agg(mean="mean", sd="std", n_seeds="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n_seeds"])
    if "distance_prior_std" in table:
        out = out.merge(table.groupby(keys)["distance_prior_std"].mean().reset_index(), on=keys)
    return out
