"""The downstream training loop of every method and task: SGD (MAP) or an SG-MCMC chain with a BMA.

The objective is always the mean per-datum potential ``U(theta) / N``:

    data term (classification: mean cross-entropy; segmentation: mean per-pixel cross-entropy)
    - log p_backbone(theta_backbone) / N      (learned or isotropic-around-the-mean prior, if any)
    + weight_decay / 2 * |theta_backbone|^2     (zero-mean isotropic backbone prior, variance 1/(N wd))
    + head_weight_decay / 2 * |theta_head|^2    (zero-mean isotropic prior on what is not pre-trained)

with N the number of training examples actually used. Weight-decay terms are applied by the optimizer
(they are the gradients of the isotropic zero-mean priors), the backbone prior through a
:class:`~bayes_transfer.priors.bound.BoundPrior`, so a step never concatenates the parameters.

How the backbone prior enters a step (``prior_update``, :mod:`~bayes_transfer.inference.prior_step`):

* ``"split"`` (default): its diagonal part ``diag(1 / (N v))`` is taken exactly by the optimizer (SGD:
  :class:`~bayes_transfer.inference.prior_step.ProximalSGD`, SGLD:
  :class:`~bayes_transfer.inference.prior_step.ExponentialSGLD`, SGHMC:
  :class:`~bayes_transfer.inference.prior_step.PreconditionedSGHMC`; Nesterov variants where ``nesterov``),
  with the weight decays folded in, and only the low-rank remainder is added to the gradient. The target
  (MAP, stationary law) is unchanged and the step is stable however stiff the prior's coordinates.
* ``"explicit"``: the whole prior gradient is added to the data gradient and the library's plain SGD / SGLD /
  SGHMC step it; a coordinate with ``lr / (N v)`` beyond the step's stability limit diverges (the run then
  fails, its reason naming the stiffness).

A fit without a backbone prior uses the plain optimizers either way. ``grad_clip > 0`` clips the norm of the
whole gradient (data + what of the prior is in it) before every step, as the authors' code does (2.0, with
``prior_convention: priorbox``; METHOD_NOTES §5b); it changes the target wherever it is active. Every fit
with a backbone prior records its prior energy per datum ``-log p(theta) / N`` at the end
(:meth:`FitResult.diagnostics`).

:func:`fit` is the one loop. What differs between the tasks is passed in: the data term, the learning-rate
policy (:mod:`~bayes_transfer.inference.schedules`), Nesterov momentum, how parameters split into backbone
and head, the padding of batches, the device runtime (channels-last) and what is kept at the sample steps
(:mod:`~bayes_transfer.inference.samples`). Classification calls it with the defaults
(:func:`~bayes_transfer.inference.methods.run_method`), segmentation through
:func:`~bayes_transfer.inference.segmentation.fit_segmentation`.

Long fits are resumable (:mod:`~bayes_transfer.inference.state`): given a
:class:`~bayes_transfer.inference.state.Checkpointing` (or inside a ``resumable`` block) a fit saves its whole
state every ``checkpoint_every`` steps and, run again after a kill, continues from the last saved step with
the same numbers on the CPU as an uninterrupted fit. A finished fit leaves its result in its state file.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.inference.batches import BatchStream
from bayes_transfer.inference.optimizers import explicit_stiffness, make_optimizer
from bayes_transfer.inference.prior_step import (AUTHORS_CLIP_NORM, add_low_rank_grad_, clip_gradient_norm_,
                                                 diagonal_part, prior_energy_per_datum)
from bayes_transfer.inference.samplers import CyclicalSchedule, set_lr
from bayes_transfer.inference.samples import Diverged, EvalSetAverage, SampleKeeper
from bayes_transfer.inference.schedules import cosine_lr
from bayes_transfer.inference.state import (Checkpointing, load_matching_state, next_checkpointing, rng_states,
                                            save_state, set_rng_states)
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["INFERENCE", "SAMPLERS", "PRIOR_UPDATES", "PRIOR_CONVENTIONS", "LoopHyper", "Hyper", "FitResult",
           "Diverged", "fit", "only_for", "make_optimizer", "explicit_stiffness"]

log = logging.getLogger("bayes_transfer.inference.loop")

INFERENCE = ("sgd", "sgld", "sghmc")
SAMPLERS = ("sghmc", "sgld")  # the SG-MCMC samplers of the Bayesian methods
PRIOR_UPDATES = ("split", "explicit")  # how the backbone prior enters a step (module docstring)
PRIOR_CONVENTIONS = ("exact", "priorbox")  # GaussianPrior.rescale's conventions


def only_for(*uses: str, default):
    """A hyper-parameter that only some methods read: those whose backbone prior is one of ``uses``
    (``weight_decay``, ``learned``, ``isotropic_zero``, ``isotropic_mean``), the Bayesian ones (``sampler``)
    or the ensemble (``ensemble``). A change of it reruns only their jobs
    (:func:`~bayes_transfer.inference.methods.relevant_hyper`)."""
    return field(default=default, metadata={"only_for": uses})


@dataclass
class LoopHyper:
    """The hyper-parameters :func:`fit` reads (the keys of a method's config); the tasks' dataclasses extend it."""

    #: the methods these hyper-parameters configure (None: every method of the methods table)
    methods: ClassVar[tuple[str, ...] | None] = None

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    # zero-mean isotropic prior on the backbone (sgd_transfer, ensembles)
    weight_decay: float = only_for("weight_decay", default=0.0)
    head_weight_decay: float = 1e-3  # zero-mean isotropic prior on the new head
    # lambda, multiplies the learned prior's covariance
    prior_scale: float = only_for("learned", default=1.0)
    # "exact" (lambda * Sigma) or "priorbox" (the authors' code)
    prior_convention: str = only_for("learned", default="exact")
    # keep this many low-rank directions of the learned prior (None: all)
    prior_rank: int | None = only_for("learned", default=None)
    # "svd" (top singular directions) or "first" (first stored rows)
    prior_truncation: str = only_for("learned", default="svd")
    # "split" (the prior's diagonal part taken exactly: stable at any stiffness) or "explicit" (its whole
    # gradient added to the data gradient); see the module docstring
    prior_update: str = only_for("learned", "isotropic_mean", default="split")
    # clip the norm of the whole gradient to this before every step (the authors' code: 2.0); 0: no clipping
    grad_clip: float = 0.0
    sampler: str = only_for("sampler", default="sghmc")  # "sghmc" or "sgld"
    temperature: float = only_for("sampler", default=1.0)
    cycles: int = only_for("sampler", default=2)
    exploration_fraction: float = only_for("sampler", default=0.5)
    samples_per_cycle: int = only_for("sampler", default=2)
    log_every: int = 50

    @classmethod
    def from_dict(cls, values: Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(known)}")
        hp = cls(**dict(values))
        if hp.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {hp.sampler!r}")
        if hp.prior_update not in PRIOR_UPDATES:
            raise ValueError(f"prior_update must be one of {PRIOR_UPDATES}, got {hp.prior_update!r}")
        if hp.prior_convention not in PRIOR_CONVENTIONS:
            raise ValueError(f"prior_convention must be one of {PRIOR_CONVENTIONS}, got {hp.prior_convention!r}")
        if not (isinstance(hp.grad_clip, (int, float)) and hp.grad_clip >= 0):
            raise ValueError(f"grad_clip must be a number >= 0 (0: off; the authors' {AUTHORS_CLIP_NORM}), "
                             f"got {hp.grad_clip!r}")
        return hp

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hyper(LoopHyper):
    """Hyper-parameters of one downstream classification fit (the ``train`` section and the tuned values)."""

    ensemble_size: int = only_for("ensemble", default=0)  # members of sgd_ensemble; 0: as many as BMA samples
    isotropic_variance: float = only_for("isotropic_zero", "isotropic_mean", default=1.0)  # alpha
    # independent chains of the Bayesian methods averaged into one BMA (stages.experiment.fit_stage; paper: 5)
    chains: int = only_for("sampler", default=1)
    # the variational methods' estimate of the expected NLL: BayesAdapter's "exemplar" (a draw per example),
    # "flipout" (~0.4x its CPU cost) or "shared" (one draw per batch); inference.variational_fit
    vi_reparameterisation: str = only_for("variational", default="exemplar")
    # BayesAdapter's OOD regulariser (weight alpha, 0 = off; MI margin gamma): inference.variational_fit
    vi_ood_weight: float = only_for("variational", default=0.0)
    vi_ood_margin: float = only_for("variational", default=0.75)


@dataclass
class FitResult:
    """What one fit produced: the evaluation of what it kept, and diagnostics.

    ``probs`` (classification): the Bayesian model average's probabilities per evaluation set, and
    ``expected_entropy`` the samples' mean predictive entropy per example (for the mutual information); ``metrics``
    (segmentation): mean IoU etc. of the per-pixel Bayesian model average. Both are empty after a failure.
    ``prior_energy``: ``-log p(theta) / N`` of the backbone prior at the end (None without one, or after a
    failure); ``prior_quadratic`` its data-dependent part ``(theta - mu)^T Sigma^{-1} (theta - mu) / (2 N)``,
    which is ~0 when the prior does not bind. ``posterior``: a variational fit's q when asked (``fit_variational``).
    """

    probs: dict[str, Tensor]
    success: bool
    reason: str = ""
    num_samples: int = 0
    steps_run: int = 0
    wall_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    prior_energy: float | None = None
    prior_quadratic: float | None = None
    expected_entropy: dict[str, Tensor] = field(default_factory=dict)
    posterior: dict | None = None

    def diagnostics(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "success": self.success,
            "reason": self.reason,
            "num_samples": self.num_samples,
            "steps_run": self.steps_run,
            "wall_time_s": round(self.wall_time_s, 3),
            "final_loss": last.get("loss"),
            "final_prior_term": last.get("prior_term"),
            "prior_energy_per_datum": self.prior_energy,
            "prior_quadratic_per_datum": self.prior_quadratic,
        }


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, leave=False)
        except ImportError:  # pragma: no cover
            pass
    return None


def fit(
    model: nn.Module,
    train_set: Dataset,
    *,
    inference: str,
    hp: LoopHyper,
    eval_sets: Mapping[str, Dataset] | None = None,
    backbone_prior: GaussianPrior | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "fit",
    on_step: Callable[[int, dict], None] | None = None,
    sample_dir: str | None = None,
    runtime: RuntimeOptions | None = None,
    checkpoint: Checkpointing | None = None,
    samples: SampleKeeper | None = None,
    split: Callable[[nn.Module], tuple[dict, dict]] = split_named_parameters,
    data_term: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    lr_factor: Callable[[int, int, CyclicalSchedule | None], float] = cosine_lr,
    nesterov: bool = False,
    pad=None,
) -> FitResult:
    """Train ``model`` (already initialised from the pre-trained checkpoint) on ``train_set``.

    ``inference="sgd"``: SGD with momentum; the final model is the one sample. ``"sgld"``/``"sghmc"``: a
    cyclical SG-MCMC chain whose schedule's sample steps are kept. ``backbone_prior`` (if given) is bound to
    the backbone parameters by name. A non-finite loss, prior or prediction ends the fit with
    ``success=False`` and a reason. ``runtime`` (default: :func:`~bayes_transfer.device.runtime_options` of
    ``device``) sets autocast, channels-last and the data loader; all off on the CPU. ``checkpoint`` (or
    the enclosing ``resumable`` block's next one) makes the fit save its state periodically and resume from it.

    The defaults are classification's; the rest is what a task changes:
    ``samples`` what is kept at the sample steps (default: the BMA of the probabilities on ``eval_sets``,
    optionally each sample's state dict in ``sample_dir``); ``split`` model -> (backbone, head) parameters by
    name (backbone names are the prior's); ``data_term(outputs, targets)`` the mean data loss;
    ``lr_factor(step, steps, schedule)`` the learning-rate policy; ``nesterov`` Nesterov momentum for SGD and
    SGHMC; ``pad`` the training batches' padding (:class:`~bayes_transfer.data.padding.PadTo`).
    ``hp.prior_update`` and ``hp.grad_clip`` choose how the prior enters a step (module docstring).
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    if samples is None:
        if eval_sets is None:
            raise ValueError("fit needs eval_sets (or another keeper of the samples)")
        samples = EvalSetAverage(eval_sets, device, runtime, sample_dir)
    t0 = time.perf_counter()
    checkpoint = checkpoint if checkpoint is not None else next_checkpointing()
    # a state is only used by the same fit: a changed config makes the workflow rerun the job from scratch
    key = {"inference": inference, "hp": hp.to_dict(), "seed": seed, "num_data": len(train_set), "desc": desc}
    key |= dict(checkpoint.key) if checkpoint is not None else {}
    saved = load_matching_state(checkpoint.path, key) if checkpoint is not None else None
    if saved is not None and saved.get("done"):
        log.info("%s: finished before, result read from %s", desc, checkpoint.path)
        return FitResult(**saved["result"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    model = runtime.prepare_model(model.to(device)).train()
    num_data = len(train_set)
    backbone, head = split(model)
    bound = backbone_prior.bind(backbone).to(device) if backbone_prior is not None else None
    groups = [
        dict(params=list(backbone.values()), weight_decay=hp.weight_decay),
        dict(params=list(head.values()), weight_decay=hp.head_weight_decay),
    ]
    split_prior = bound is not None and hp.prior_update == "split"
    diagonal = diagonal_part(bound, 1.0 / num_data) if split_prior else None
    opt, schedule = make_optimizer(inference, groups, hp, num_data, nesterov, diagonal)
    clipped = [p for g in groups for p in g["params"]] if hp.grad_clip else None
    sample_steps = set(schedule.sample_steps()) if schedule is not None else {hp.steps - 1}
    history: list[dict] = []
    stream = BatchStream(train_set, hp.batch_size, gen, device, runtime, pad=pad)
    start, elapsed = 0, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        stream.load_state_dict(saved["stream"])
        noise_gen.set_state(saved["noise_generator"])
        samples.load_state_dict(saved["samples"])
        history = saved["history"]
        start, elapsed = int(saved["step"]), float(saved["wall_time_s"])
        set_rng_states(saved["rng"], device)
        log.info("%s: resumed at step %d/%d from %s", desc, start, hp.steps, checkpoint.path)

    def save(next_step: int) -> None:
        save_state({"key": key, "step": next_step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "stream": stream.state_dict(), "noise_generator": noise_gen.get_state(),
                    "samples": samples.state_dict(), "history": history, "rng": rng_states(device),
                    "wall_time_s": elapsed + time.perf_counter() - t0}, checkpoint.path)

    bar = _progress(hp.steps, desc)
    reason = ""
    step = start - 1
    try:
        for step in range(start, hp.steps):
            lr = hp.lr * lr_factor(step, hp.steps, schedule)
            set_lr(opt, lr)
            xb, yb = next(stream)
            with runtime.autocast_context(device):
                loss = data_term(model(runtime.prepare_input(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if split_prior:  # the low-rank remainder; the optimizer takes the diagonal part exactly
                add_low_rank_grad_(bound, 1.0 / num_data)
            elif bound is not None:  # gradient of -log p(theta) / N, added without an autograd graph
                bound.add_grad_(1.0 / num_data)
            if clipped is not None:
                clip_gradient_norm_(clipped, hp.grad_clip)
            if schedule is None:
                opt.step()
            else:
                opt.step(noise=not schedule.is_exploring(step), generator=noise_gen)
            if step % hp.log_every == 0 or step == hp.steps - 1 or step in sample_steps:
                record = _record(step, lr, loss, backbone, head, hp, bound, num_data, schedule)
                history.append(record)
                if not math.isfinite(record["loss"]) or not math.isfinite(record["objective"]):
                    raise Diverged(f"non-finite loss at step {step}")
                if on_step is not None:
                    on_step(step, record)
                log.info("%s step %d/%d loss %.4f lr %.3g prior %.4g", desc, step, hp.steps,
                         record["loss"], lr, record["prior_term"])
            if step in sample_steps:
                samples.add(model, step)
            if bar is not None:
                bar.update(1)
            if checkpoint is not None and (step + 1) % checkpoint.every == 0 and step + 1 < hp.steps:
                save(step + 1)
    except Diverged as err:
        reason = str(err)
    except FloatingPointError as err:
        reason = f"{err} at step {step}"
    finally:
        if bar is not None:
            bar.close()
    outputs: dict = {"probs": {}}
    if not reason:
        try:
            outputs |= samples.result(model)
        except Diverged as err:
            reason = str(err)
    if not reason and bound is not None:
        try:
            outputs["prior_energy"] = prior_energy_per_datum(bound, num_data)
            outputs["prior_quadratic"] = outputs["prior_energy"] + bound.const / num_data
        except FloatingPointError as err:
            reason = f"{err} at the end"
    if reason and bound is not None and not split_prior:
        stiff = explicit_stiffness(bound, hp.lr, num_data)
        limit = 2.0 * (1.0 + (hp.momentum if inference != "sgld" else 0.0))
        if stiff > limit:
            reason += (f" (prior_update 'explicit': the stiffest prior coordinate has lr / (N v) = {stiff:.3g}, "
                       f"above the explicit step's stability limit ~{limit:g}; 'split' is stable)")
    result = FitResult(
        **outputs,
        success=not reason,
        reason=reason,
        num_samples=samples.num_samples,
        steps_run=step + 1,
        wall_time_s=elapsed + time.perf_counter() - t0,
        history=history,
    )
    if checkpoint is not None:
        save_state({"key": key, "done": True, "result": asdict(result)}, checkpoint.path)
    return result


@torch.no_grad()
def _record(step, lr, loss, backbone, head, hp, bound, num_data, schedule) -> dict:
    """One line of the training log: data loss, the prior term (-log prior / N, with weight decays)."""
    prior_term = 0.0
    if bound is not None:
        prior_term -= float(bound.log_prob()) / num_data
    if hp.weight_decay:
        prior_term += 0.5 * hp.weight_decay * sum(float(p.square().sum()) for p in backbone.values())
    if hp.head_weight_decay:
        prior_term += 0.5 * hp.head_weight_decay * sum(float(p.square().sum()) for p in head.values())
    loss_v = float(loss)
    return {
        "step": step,
        "lr": lr,
        "loss": loss_v,
        "prior_term": prior_term,
        "objective": loss_v + prior_term,
        "phase": "sgd" if schedule is None else ("explore" if schedule.is_exploring(step) else "sample"),
    }
