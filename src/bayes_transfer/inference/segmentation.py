"""Segmentation methods (paper section 4.4, App. C): DeepLabv3+ trained by the one downstream loop.

Priors (the objective is the mean per-datum potential U(theta)/N, N = number of training images, as in
:mod:`bayes_transfer.inference.loop`; the data term is the mean per-pixel cross-entropy, label 255 ignored):

=====================  ===========  =================================================  ======================
method                 inference    backbone (``encoder.*``)                           ASPP, decoder, head
=====================  ===========  =================================================  ======================
sgd_transfer           SGD          N(0, I / (N wd)) (weight decay ``weight_decay``)   weight decay
sgd_learned_prior      SGD (MAP)    learned SWAG prior, covariance x lambda            ``head_weight_decay``
bnn_isotropic_prior    SG-MCMC      N(0, I / (N wd)), the "non-learned prior"          (zero-mean isotropic
bnn_learned_prior      SG-MCMC      learned SWAG prior, covariance x lambda            in every method)
=====================  ===========  =================================================  ======================

The model, and how the prior binds to its backbone by name, are in :mod:`bayes_transfer.models.deeplab`.

Optimisation (paper App. C.1): SGD with Nesterov momentum and the poly learning-rate policy
``lr * (1 - t / T) ** power`` (:class:`~bayes_transfer.inference.schedules.PolyLR`). The Bayesian methods run
the same poly schedule within each cycle of a :class:`~bayes_transfer.inference.samplers.CyclicalSchedule`
(one cycle = the paper's single poly run); the first ``exploration_fraction`` of a cycle adds no noise,
afterwards Langevin noise at temperature T is injected and ``samples_per_cycle`` samples are kept. The
paper's "SGLD" runs with Nesterov momentum 0.9, like its SGD. Langevin dynamics with momentum is what
:class:`~bayes_transfer.inference.samplers.SGHMC` implements (momentum = 1 - friction, noise scaled so the
chain targets exp(-U/T)); :class:`~bayes_transfer.inference.samplers.NesterovSGHMC` adds Nesterov's
look-ahead, so ``sampler="sghmc"`` with ``nesterov=True`` is the paper's setting (at the paper's T = 2e-8 it
is Nesterov SGD plus negligible noise, so the Bayesian and SGD columns differ by their prior and the model
average only). ``sampler="sgld"`` is the momentum-free :class:`~bayes_transfer.inference.samplers.SGLD`.
Activations are channels-last (~20 % faster convolutions on CPU and GPU alike); no autocast.

Evaluation: the per-pixel Bayesian model average of the kept samples (:mod:`~bayes_transfer.inference.pixel_bma`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from bayes_transfer.data.padding import PadTo
from bayes_transfer.data.scenes import IGNORE_INDEX
from bayes_transfer.device import runtime_options
from bayes_transfer.inference.loop import FitResult, LoopHyper, fit, only_for
from bayes_transfer.inference.methods import METHODS, MethodSpec, prepare_learned_prior
from bayes_transfer.inference.pixel_bma import PixelAverage
from bayes_transfer.inference.schedules import PolyLR
from bayes_transfer.inference.state import Checkpointing
from bayes_transfer.models.deeplab import split_parameters
from bayes_transfer.priors.gaussian import GaussianPrior

#: the methods of Tables 1, 15 and 16
SEGMENTATION_METHODS = ("sgd_transfer", "bnn_isotropic_prior", "bnn_learned_prior", "sgd_learned_prior")


@dataclass
class SegmentationHyper(LoopHyper):
    """Hyper-parameters of one segmentation run (``segmentation.train`` plus the dataset's ``lr``): the
    loop's, with the paper's App. C.1 settings as defaults (at 200 iterations of batch 8, not 30k of 16)."""

    methods = SEGMENTATION_METHODS

    steps: int = 200
    batch_size: int = 8
    lr_power: float = 0.9  # exponent of the poly policy
    # here also the non-learned prior of bnn_isotropic_prior: N(0, I / (N wd))
    weight_decay: float = only_for("weight_decay", "isotropic_zero", default=1e-4)
    head_weight_decay: float = 1e-4  # ASPP, decoder and head, in every method
    prior_scale: float = only_for("learned", default=1e6)
    nesterov: bool = True  # Nesterov momentum of SGD and SGHMC
    temperature: float = only_for("sampler", default=2e-8)
    cycles: int = only_for("sampler", default=1)
    exploration_fraction: float = only_for("sampler", default=0.8)
    samples_per_cycle: int = only_for("sampler", default=3)
    eval_batch_size: int = 32
    num_workers: int = 0  # data-loader workers of disk datasets


def segmentation_method(method: str) -> MethodSpec:
    if method not in SEGMENTATION_METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; known: {', '.join(SEGMENTATION_METHODS)}")
    return METHODS[method]


def pixel_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the scored pixels (0 when a batch has none, instead of NaN)."""
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = target.ne(ignore_index).sum()
    return total / count.clamp_min(1)


def fit_segmentation(model: nn.Module, train_set: Dataset, eval_set: Dataset, *, method: str,
                     hp: SegmentationHyper, num_classes: int, learned_prior: GaussianPrior | None = None,
                     seed: int = 0, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX,
                     desc: str = "segment", checkpoint: Checkpointing | None = None, on_step=None) -> FitResult:
    """Train ``model`` (backbone already pre-trained, decoder fresh) with ``method`` and score the per-pixel
    Bayesian model average on ``eval_set`` (``FitResult.metrics``, fractions in [0, 1]). Non-finite losses,
    priors or predictions end the run with ``success=False`` and a reason. ``checkpoint`` makes the run
    resumable (:mod:`~bayes_transfer.inference.state`: the same numbers on the CPU as an uninterrupted run).
    """
    spec = segmentation_method(method)
    device = torch.device(device)
    prior = None
    if spec.prior == "learned":
        if learned_prior is None:
            raise ValueError(f"method {method!r} needs a learned prior")
        prior = prepare_learned_prior(learned_prior, hp)
        hp = replace(hp, weight_decay=0.0)  # the learned prior replaces the backbone's weight decay
    pad = PadTo(int(getattr(model.encoder, "output_stride", 16)), ignore_index)
    runtime = runtime_options(device, autocast="off", channels_last=True, num_workers=hp.num_workers)
    keeper = PixelAverage(eval_set, num_classes, device, pad, hp.eval_batch_size, runtime)
    return fit(model, train_set, inference=hp.sampler if spec.bayesian else "sgd", hp=hp, backbone_prior=prior,
               seed=seed, device=device, desc=desc, on_step=on_step, runtime=runtime, checkpoint=checkpoint,
               samples=keeper, split=split_parameters,
               data_term=functools.partial(pixel_cross_entropy, ignore_index=ignore_index),
               lr_factor=PolyLR(hp.lr_power), nesterov=hp.nesterov, pad=pad)
