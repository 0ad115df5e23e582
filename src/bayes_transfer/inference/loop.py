"""The downstream training loop shared by every method: SGD (MAP) or an SG-MCMC chain with a BMA.

The objective is always the mean per-datum potential ``U(theta) / N``:

    mean cross-entropy over the batch
    - log p_backbone(theta_backbone) / N      (learned or isotropic-around-the-mean prior, if any;
                                              its gradient is added by BoundPrior.add_grad_)
    + weight_decay / 2 * |theta_backbone|^2     (zero-mean isotropic backbone prior, variance 1/(N wd))
    + head_weight_decay / 2 * |theta_head|^2    (the new head's zero-mean isotropic prior)

with N the number of training examples actually used. Weight-decay terms are applied by the optimizer
(they are the gradients of the isotropic zero-mean priors), the learned prior through a
:class:`~bayes_transfer.priors.gaussian.BoundPrior`, so a step never concatenates the parameters.

Long fits are resumable: inside :func:`resumable` every fit saves its whole state (model, optimiser, batch
stream position, random-number generators, Bayesian model average, log) every ``checkpoint_every`` steps and,
when run again after a kill, continues from the last saved step, with the same numbers on the CPU as an
uninterrupted fit. A finished fit leaves its result in its state file, so a rerun of a job skips it.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import logging
import math
import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayes_transfer.inference.bma import BayesianModelAverage
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.inference.samplers import SGHMC, SGLD, CyclicalSchedule, cosine_factor, set_lr

log = logging.getLogger("bayes_transfer.inference.loop")

INFERENCE = ("sgd", "sgld", "sghmc")


@dataclass
class Hyper:
    """Hyper-parameters of one downstream fit (the keys of a method's config)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0  # zero-mean isotropic prior on the backbone (sgd_transfer, ensembles)
    head_weight_decay: float = 1e-3  # zero-mean isotropic prior on the new head
    prior_scale: float = 1.0  # lambda, multiplies the learned prior's covariance
    prior_convention: str = "exact"  # "exact" (lambda * Sigma) or "priorbox" (the authors' code)
    prior_rank: int | None = None  # keep this many low-rank directions of the learned prior (None: all)
    prior_truncation: str = "svd"  # "svd" (top singular directions) or "first" (first stored rows)
    sampler: str = "sghmc"  # the SG-MCMC sampler of the BNN methods: "sghmc" or "sgld"
    ensemble_size: int = 0  # members of sgd_ensemble; 0: as many as the BMA has samples
    isotropic_variance: float = 1.0  # alpha of an isotropic backbone prior
    temperature: float = 1.0
    cycles: int = 2
    exploration_fraction: float = 0.5
    samples_per_cycle: int = 2
    log_every: int = 50

    @classmethod
    def from_dict(cls, values: Mapping) -> "Hyper":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    """What one fit produced: predictive probabilities per evaluation set and diagnostics."""

    probs: dict[str, Tensor]
    success: bool
    reason: str = ""
    num_samples: int = 0
    steps_run: int = 0
    wall_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)

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
        }


class Diverged(RuntimeError):
    """A numerical failure of a chain or an optimisation (recorded as data, not raised to the user)."""


class BatchStream:
    """An endless stream of shuffled mini-batches (epochs without replacement, last partial batch dropped).

    Each epoch is ``torch.randperm(n, generator=generator)``. In-memory ``TensorDataset``s are indexed directly
    (fast for the embedded default); other datasets are read by one ``DataLoader`` (the runtime's workers and
    pinned memory) whose batch sampler draws the same epochs, ahead of use when workers prefetch.
    :meth:`state_dict` / :meth:`load_state_dict` save and restore the position of the last batch *used* (the
    generator's state at the start of its epoch and the offset in it), so a resumed stream yields the same
    batches without reading the skipped ones. With data-loader workers the random augmentations after a resume
    differ from an uninterrupted run's (each worker has its own generator); without workers (the CPU default)
    they come from torch's global generator, which a fit's state includes.
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator,
                 device: torch.device | str, runtime: RuntimeOptions | None = None) -> None:
        self.dataset = dataset
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("cannot draw mini-batches from an empty dataset")
        self.bs = min(int(batch_size), self.n)
        self.generator = generator
        self.device = torch.device(device)
        self.runtime = runtime or RuntimeOptions()
        self._tensors = (tuple(t.to(self.device) for t in dataset.tensors[:2])
                         if isinstance(dataset, TensorDataset) else None)
        # where the next batch of indices comes from
        self._epoch, self._epoch_state, self._perm, self._pos = -1, None, None, 0
        # the position after the last batch handed out, and those drawn by the loader but not yet handed out
        self._used = {"generator": generator.get_state(), "epoch": -1, "epoch_state": None, "pos": 0}
        self._pending: deque[dict] = deque()
        self._loader_iter = None

    def __iter__(self) -> "BatchStream":
        return self

    def _next_indices(self) -> tuple[Tensor, dict]:
        if self._perm is None or self._pos + self.bs > self.n:
            self._epoch += 1
            self._epoch_state = self.generator.get_state()
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.bs]
        self._pos += self.bs
        return idx, {"epoch": self._epoch, "epoch_state": self._epoch_state, "pos": self._pos}

    def _index_batches(self) -> Iterator[list[int]]:
        """The loader's batch sampler: endless, drawn in the main process, remembered until used."""
        while True:
            idx, position = self._next_indices()
            self._pending.append(position)
            yield idx.tolist()

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._tensors is not None:
            idx, self._used = self._next_indices()
            x, y = self._tensors
            idx = idx.to(self.device)
            return x[idx], y[idx]
        if self._loader_iter is None:
            workers = self.runtime.num_workers
            self._loader_iter = iter(DataLoader(
                self.dataset, batch_sampler=_Endless(self._index_batches), num_workers=workers,
                pin_memory=self.runtime.pin_memory, prefetch_factor=4 if workers else None,
                # the loader's own seed source: creating it never draws from torch's global generator
                generator=torch.Generator().manual_seed(1_000_003 * (self._epoch + 1) + 17),
            ))
        xb, yb = next(self._loader_iter)
        self._used = self._pending.popleft()
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return dict(self._used)

    def load_state_dict(self, state: Mapping) -> None:
        self._loader_iter = None
        self._pending.clear()
        self._used = dict(state)
        if state["epoch_state"] is None:  # saved before the first batch
            self._epoch, self._epoch_state, self._perm, self._pos = -1, None, None, 0
            self.generator.set_state(state["generator"])
            return
        self._epoch, self._epoch_state = int(state["epoch"]), state["epoch_state"]
        self.generator.set_state(self._epoch_state)
        self._perm = torch.randperm(self.n, generator=self.generator)
        self._pos = int(state["pos"])


class _Endless:
    """A re-iterable wrapper that DataLoader accepts as ``batch_sampler`` (it has no length)."""

    def __init__(self, make: Callable[[], Iterator[list[int]]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[list[int]]:
        return self.make()


def batches(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
            runtime: RuntimeOptions | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless stream of shuffled mini-batches on ``device`` (a :class:`BatchStream`)."""
    return BatchStream(dataset, batch_size, generator, device, runtime)


# ---------------------------------------------------------------------------------------------- resuming
@dataclass
class _Resume:
    prefix: str
    every: int
    calls: int = 0


_RESUME: contextvars.ContextVar[_Resume | None] = contextvars.ContextVar("bayes_transfer_resume", default=None)


@contextlib.contextmanager
def resumable(prefix: str | os.PathLike, checkpoint_every: int):
    """Make the fits run inside this block resumable; their states are ``<prefix>.fit<k>.ckpt``.

    The k-th call of :func:`fit` in the block (k = 0, 1, ...; the order of fits in a job is deterministic)
    saves its state every ``checkpoint_every`` steps and its result when it finishes. Run again after a
    kill, finished fits return their saved result and an unfinished one continues from its last state.
    ``checkpoint_every <= 0`` makes the block a no-op. The files stay when the block raises (or the process
    is killed); call :func:`remove_checkpoints` once the job's outputs are written.
    """
    every = int(checkpoint_every or 0)
    token = _RESUME.set(_Resume(os.fspath(prefix), every) if every > 0 else None)
    try:
        yield
    finally:
        _RESUME.reset(token)


def remove_checkpoints(prefix: str | os.PathLike) -> None:
    """Delete the state files ``<prefix>.*.ckpt`` (of :func:`resumable` blocks whose prefixes start with
    ``prefix.``), once the job's outputs are written."""
    prefix = Path(prefix)
    for path in prefix.parent.glob(f"{glob.escape(prefix.name)}.*.ckpt"):
        path.unlink(missing_ok=True)


def _checkpoint_slot() -> tuple[Path, int] | None:
    ctx = _RESUME.get()
    if ctx is None:
        return None
    path = Path(f"{ctx.prefix}.fit{ctx.calls}.ckpt")
    ctx.calls += 1
    return path, ctx.every


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then an atomic rename: a kill never leaves a truncated state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike) -> dict:
    """A state written by :func:`save_state` (this library's own file: it pickles RNG states, so it is
    read with ``weights_only=False``)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_matching_state(path: str | os.PathLike, key: Mapping) -> dict | None:
    """The state at ``path`` if it exists and was saved by a run with this ``key`` (its settings); a state of
    other settings (a stale file from before a config change) is ignored with a log line."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_state(path)
    if state.get("key") != key:
        log.warning("ignoring %s: it was saved with other settings", path)
        return None
    return state


def rng_states(device: torch.device) -> dict:
    """The global random-number generators' states (torch CPU and CUDA, numpy, Python)."""
    out = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(states: Mapping, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@torch.no_grad()
def predict_probs(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512,
                  runtime: RuntimeOptions | None = None) -> Tensor:
    """Softmax predictive probabilities (float64, on CPU) of ``model`` in eval mode."""
    runtime = runtime or RuntimeOptions()
    was_training = model.training
    model.eval()
    out = []
    if isinstance(dataset, TensorDataset):
        x = dataset.tensors[0]
        chunks = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=runtime.num_workers,
                            pin_memory=runtime.pin_memory, generator=torch.Generator().manual_seed(0))
        chunks = (xb for xb, _ in loader)
    for xb in chunks:
        with runtime.autocast_context(device):
            logits = model(runtime.prepare_input(xb.to(device, non_blocking=True)))
        out.append(torch.softmax(logits.double(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out)


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
    hp: Hyper,
    eval_sets: Mapping[str, Dataset],
    backbone_prior: GaussianPrior | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "fit",
    on_step: Callable[[int, dict], None] | None = None,
    sample_dir: str | None = None,
    runtime: RuntimeOptions | None = None,
) -> FitResult:
    """Train ``model`` (already initialised from the pre-trained checkpoint) on ``train_set``.

    ``inference="sgd"``: SGD with momentum and a cosine learning-rate decay; the final model's
    probabilities are returned. ``"sgld"``/``"sghmc"``: a cyclical SG-MCMC chain; at the schedule's
    sample steps the model's probabilities on every evaluation set are added to an online Bayesian
    model average. ``backbone_prior`` (if given) is bound to the feature extractor's parameters by name.
    A non-finite loss, prior or prediction ends the fit with ``success=False`` and a reason.
    ``sample_dir`` (optional) also writes each sample's state dict there as ``sample_XXX.pt``; the
    Bayesian model average itself never needs them. ``runtime`` (default: :func:`~bayes_transfer.device.
    runtime_options` of ``device``) sets autocast, channels-last and the data loader; all off on the CPU.
    Inside :func:`resumable` the fit saves its state periodically and resumes from it.
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    t0 = time.perf_counter()
    slot = _checkpoint_slot()
    # a state is only used by the same fit: a changed config makes the workflow rerun the job from scratch
    key = {"inference": inference, "hp": hp.to_dict(), "seed": seed, "num_data": len(train_set), "desc": desc}
    saved = load_matching_state(slot[0], key) if slot is not None else None
    if saved is not None and saved.get("done"):
        log.info("%s: finished before, result read from %s", desc, slot[0])
        return FitResult(**saved["result"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    model = runtime.prepare_model(model.to(device)).train()
    num_data = len(train_set)
    backbone, head = split_named_parameters(model)
    bound = backbone_prior.bind(backbone).to(device) if backbone_prior is not None else None
    groups = [
        dict(params=list(backbone.values()), weight_decay=hp.weight_decay),
        dict(params=list(head.values()), weight_decay=hp.head_weight_decay),
    ]
    if inference == "sgd":
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        schedule = None
        sample_steps: set[int] = set()
    else:
        cls = SGLD if inference == "sgld" else SGHMC
        kwargs = dict(lr=hp.lr, num_data=num_data, temperature=hp.temperature)
        if inference == "sghmc":
            kwargs["momentum"] = hp.momentum
        opt = cls(groups, **kwargs)
        schedule = CyclicalSchedule(hp.steps, hp.cycles, hp.exploration_fraction, hp.samples_per_cycle)
        sample_steps = set(schedule.sample_steps())
    bma = BayesianModelAverage()
    history: list[dict] = []
    stream = BatchStream(train_set, hp.batch_size, gen, device, runtime)
    start, elapsed = 0, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        stream.load_state_dict(saved["stream"])
        noise_gen.set_state(saved["noise_generator"])
        bma.__dict__.update(saved["bma"])
        history = saved["history"]
        start, elapsed = int(saved["step"]), float(saved["wall_time_s"])
        set_rng_states(saved["rng"], device)
        log.info("%s: resumed at step %d/%d from %s", desc, start, hp.steps, slot[0])

    def save(next_step: int) -> None:
        save_state({"key": key, "step": next_step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "stream": stream.state_dict(), "noise_generator": noise_gen.get_state(),
                    "bma": dict(bma.__dict__), "history": history, "rng": rng_states(device),
                    "wall_time_s": elapsed + time.perf_counter() - t0}, slot[0])

    bar = _progress(hp.steps, desc)
    reason = ""
    step = start - 1
    try:
        for step in range(start, hp.steps):
            lr = hp.lr * (schedule.lr_factor(step) if schedule else cosine_factor(step, hp.steps))
            set_lr(opt, lr)
            xb, yb = next(stream)
            with runtime.autocast_context(device):
                loss = F.cross_entropy(model(runtime.prepare_input(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if bound is not None:  # gradient of -log p(theta) / N, added without an autograd graph
                bound.add_grad_(1.0 / num_data)
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
                probs = {k: predict_probs(model, ds, device, runtime=runtime) for k, ds in eval_sets.items()}
                if not all(torch.all(torch.isfinite(p)) for p in probs.values()):
                    raise Diverged(f"non-finite predictions at sample step {step}")
                bma.add(probs)
                if sample_dir is not None:
                    Path(sample_dir).mkdir(parents=True, exist_ok=True)
                    torch.save(model.state_dict(), Path(sample_dir) / f"sample_{bma.num_samples - 1:03d}.pt")
            if bar is not None:
                bar.update(1)
            if slot is not None and (step + 1) % slot[1] == 0 and step + 1 < hp.steps:
                save(step + 1)
    except Diverged as err:
        reason = str(err)
    except FloatingPointError as err:
        reason = f"{err} at step {step}"

    finally:
        if bar is not None:
            bar.close()
    success = not reason
    if success and inference == "sgd":
        probs = {k: predict_probs(model, ds, device, runtime=runtime) for k, ds in eval_sets.items()}
        if not all(torch.all(torch.isfinite(p)) for p in probs.values()):
            success, reason = False, "non-finite predictions of the final model"
        else:
            bma.add(probs)
    result = FitResult(
        probs=bma.probs() if success else {},
        success=success,
        reason=reason,
        num_samples=bma.num_samples,
        steps_run=step + 1,
        wall_time_s=elapsed + time.perf_counter() - t0,
        history=history,
    )
    if slot is not None:
        save_state({"key": key, "done": True, "result": asdict(result)}, slot[0])
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
