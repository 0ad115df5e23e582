"""Semantic segmentation with a learned prior over the backbone of DeepLabv3+ (paper section 4.4, App. C).

Model. DeepLabv3+ from ``segmentation_models_pytorch`` (smp): a ResNet encoder, the ASPP + decoder
(``DeepLabV3PlusDecoder``) and a 1x1 segmentation head. Every model built here has the attributes
``encoder``, ``decoder`` and ``segmentation_head``, so the parameters of the backbone are exactly those
whose names start with ``encoder.``; without that prefix they are the torchvision names (``conv1.weight``,
``bn1.bias``, ``layer1.0.conv1.weight``, ...) under which checkpoints and learned priors are stored.

* ``resnet50`` / ``resnet101`` (paper scale): ``smp.DeepLabV3Plus(encoder_name=arch, encoder_weights=None,
  encoder_output_stride=16, decoder_atrous_rates=(6, 12, 18))``. smp's ResNet encoder *is* a torchvision
  ResNet without ``fc``/``avgpool`` (same parameter names), its last stage dilated for output stride 16.
  Nothing is downloaded: our pre-trained backbone is loaded into ``model.encoder`` by name.
* ``small_resnet`` (embedded default): the digits backbone (:class:`~bayes_transfer.models.resnets.SmallResNet`,
  the same class, hence the same names) as an encoder, with smp's own decoder and head around it
  (:class:`DeepLabV3PlusSmall`). Its strides are fixed by the 8 x 8 digits it was pre-trained on
  (stem and ``layer1`` stride 1, ``layer2`` and ``layer3`` stride 2), so its **effective output stride is
  4**, not 16: at stride 16 a digit would be a fraction of one feature cell. The ASPP runs on the stride-4
  map and its output is upsampled x4 to join the stride-1 ``layer1`` features (the role of DeepLabv3+'s
  stride-4 low-level features). The atrous rates are a config value; the default's (1, 2, 3) are the
  paper's (6, 12, 18) scaled to the feature map (DeepLab's 513 crop gives a 33 x 33 map at stride 16, so
  the rates reach 0.18, 0.36 and 0.55 of it; a 24 x 24 scene gives 6 x 6 at stride 4, where 1, 2, 3 do).

Priors (the objective is the mean per-datum potential U(theta)/N, N = number of training images, as in
:mod:`bayes_transfer.inference.loop`; the data term is the mean per-pixel cross-entropy, label 255 ignored):

=====================  ===========  =================================================  ======================
method                 inference    backbone (``encoder.*``)                           ASPP, decoder, head
=====================  ===========  =================================================  ======================
sgd_transfer           SGD          N(0, I / (N wd)) (weight decay ``weight_decay``)   weight decay
sgd_learned_prior      SGD (MAP)    learned SWAG prior, covariance x lambda            ``decoder_weight_decay``
bnn_isotropic_prior    SG-MCMC      N(0, I / (N wd)), the "non-learned prior"          (zero-mean isotropic
bnn_learned_prior      SG-MCMC      learned SWAG prior, covariance x lambda            in every method)
=====================  ===========  =================================================  ======================

The learned prior is bound to the backbone parameters by name (:meth:`GaussianPrior.bind` checks names,
order and shapes and raises :class:`~bayes_transfer.priors.gaussian.PriorMismatchError` otherwise); its gradient is
added by :meth:`BoundPrior.add_grad_` without an autograd graph.

Optimisation (paper App. C.1): SGD with Nesterov momentum and the poly learning-rate policy
``lr * (1 - t / T) ** power``. The Bayesian methods run the same poly schedule within each cycle of a
:class:`~bayes_transfer.inference.samplers.CyclicalSchedule` (one cycle = the paper's single poly run); the first
``exploration_fraction`` of a cycle adds no noise, afterwards Langevin noise at temperature T is injected
and ``samples_per_cycle`` samples are kept. The paper's "SGLD" runs with Nesterov momentum 0.9, like its
SGD. Langevin dynamics with momentum is what :class:`~bayes_transfer.inference.samplers.SGHMC` implements (momentum =
1 - friction, noise scaled so the chain targets exp(-U/T)); :class:`NesterovSGHMC` adds Nesterov's
look-ahead, so ``sampler="sghmc"`` with ``nesterov=True`` is the paper's setting (at the paper's T = 2e-8 it
is Nesterov SGD plus negligible noise, so the Bayesian and SGD columns differ by their prior and the model
average only). ``sampler="sgld"`` is the momentum-free :class:`~bayes_transfer.inference.samplers.SGLD`.

Evaluation: the predictive probabilities of the kept samples are averaged per pixel (a Bayesian model
average; SGD: the final model alone), the arg-max is scored with torchmetrics'
``MulticlassJaccardIndex`` (macro mean over classes present in target or prediction, ``ignore_index``
255) accumulated over the whole evaluation set, and cross-checked against our own streaming
:class:`~bayes_transfer.results.metrics.ConfusionMatrix`. The average is taken batch by batch on the device, not
with :class:`~bayes_transfer.inference.bma.BayesianModelAverage` (which keeps float64 copies of a whole evaluation
set: ~45 GB of probabilities for Pascal VOC val).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from bayes_transfer.device import runtime_options
from bayes_transfer.inference.methods import METHODS, prepare_learned_prior
from bayes_transfer.models.resnets import SmallResNet, load_backbone_state
from bayes_transfer.priors.gaussian import BoundPrior, GaussianPrior
from bayes_transfer.inference.samplers import SGHMC, SGLD, CyclicalSchedule, NesterovSGHMC, set_lr  # noqa: F401 (re-exported)

log = logging.getLogger("bayes_transfer.segmentation")

IGNORE_INDEX = 255
ENCODER_PREFIX = "encoder."
#: the methods of Tables 1, 15 and 16
SEGMENTATION_METHODS = ("sgd_transfer", "bnn_isotropic_prior", "bnn_learned_prior", "sgd_learned_prior")
SMP_ARCHS = ("resnet18", "resnet50", "resnet101")  # resnet18: fast tests of the smp path
SAMPLERS = ("sghmc", "sgld")


# ------------------------------------------------------------------------------------------- models
class SmallResNetEncoder(SmallResNet):
    """The digits backbone without its head, returning DeepLab's list of feature maps.

    A subclass of :class:`SmallResNet` with ``fc`` and ``avgpool`` removed, so parameter names are the
    classifier's (``conv1.weight``, ``layer3.0.bn2.bias``, ...) and a checkpoint or prior of the
    classifier's feature extractor maps onto it one to one. ``forward`` returns
    ``[x, stem, layer1, layer2, layer3]`` at strides 1, 1, 1, 2, 4 (smp's encoder convention).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__(num_classes=1, in_channels=in_channels, width=width, blocks=blocks)
        del self.fc
        del self.avgpool
        self.out_channels = [in_channels, width, width, 2 * width, 4 * width]
        self.output_stride = 4
        #: stride of the feature map the decoder takes as its high-resolution input (``layer1``)
        self.highres_stride = 1

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        feats = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        feats.append(x)
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x)
            feats.append(x)
        return feats


def _call_supported(cls, **kwargs):
    """Construct ``cls`` with the keyword arguments its signature accepts (smp's vary across versions)."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


class DeepLabV3PlusSmall(nn.Module):
    """DeepLabv3+ with smp's ASPP/decoder and head around :class:`SmallResNetEncoder` (see module doc)."""

    def __init__(self, encoder: SmallResNetEncoder, num_classes: int, atrous_rates: Sequence[int],
                 decoder_channels: int = 32, aspp_separable: bool = True, aspp_dropout: float = 0.1) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

        self.encoder = encoder
        self.decoder = _call_supported(
            DeepLabV3PlusDecoder, encoder_channels=encoder.out_channels, encoder_depth=len(encoder.out_channels) - 1,
            out_channels=decoder_channels, atrous_rates=tuple(atrous_rates), output_stride=16,
            aspp_separable=aspp_separable, aspp_dropout=aspp_dropout)
        # smp derives this factor from output_stride; here it is the actual ratio between the ASPP's input
        # (stride 4) and the high-resolution features (stride 1)
        self.decoder.up = nn.Upsample(scale_factor=encoder.output_stride // encoder.highres_stride,
                                      mode="bilinear", align_corners=True)
        self.segmentation_head = SegmentationHead(decoder_channels, num_classes, kernel_size=1,
                                                  upsampling=encoder.highres_stride)

    def forward(self, x: Tensor) -> Tensor:
        s = self.encoder.output_stride
        if x.shape[-1] % s or x.shape[-2] % s:
            raise RuntimeError(f"input height and width must be divisible by the output stride {s}, "
                               f"got {tuple(x.shape[-2:])}")
        return self.segmentation_head(self.decoder(self.encoder(x)))


@dataclass(frozen=True)
class ModelSpec:
    """The segmentation network of a config (``segmentation.model`` plus the backbone's arch)."""

    arch: str
    num_classes: int
    arch_kwargs: dict = field(default_factory=dict)
    output_stride: int = 16
    atrous_rates: tuple[int, int, int] = (6, 12, 18)
    decoder_channels: int = 256
    aspp_separable: bool = True
    aspp_dropout: float = 0.5

    def effective_output_stride(self) -> int:
        return 4 if self.arch == "small_resnet" else int(self.output_stride)


def build_segmentation_model(spec: ModelSpec) -> nn.Module:
    """A randomly initialised DeepLabv3+ (``encoder`` / ``decoder`` / ``segmentation_head``); nothing downloaded."""
    if len(tuple(spec.atrous_rates)) != 3:
        raise ValueError(f"atrous_rates must have 3 entries, got {spec.atrous_rates!r}")
    if spec.arch == "small_resnet":
        encoder = SmallResNetEncoder(**(spec.arch_kwargs or {}))
        return DeepLabV3PlusSmall(encoder, spec.num_classes, spec.atrous_rates, spec.decoder_channels,
                                  spec.aspp_separable, spec.aspp_dropout)
    if spec.arch in SMP_ARCHS:
        if spec.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16 for {spec.arch}, got {spec.output_stride!r}")
        if spec.arch_kwargs:
            raise ValueError(f"arch_kwargs are not supported for {spec.arch}: {spec.arch_kwargs!r}")
        import segmentation_models_pytorch as smp

        return _call_supported(
            smp.DeepLabV3Plus, encoder_name=spec.arch, encoder_weights=None,
            encoder_output_stride=spec.output_stride, decoder_atrous_rates=tuple(spec.atrous_rates),
            decoder_channels=spec.decoder_channels, decoder_aspp_separable=spec.aspp_separable,
            decoder_aspp_dropout=spec.aspp_dropout, in_channels=3, classes=spec.num_classes)
    raise ValueError(f"unknown segmentation backbone {spec.arch!r}; known: small_resnet, {', '.join(SMP_ARCHS)}")


def read_backbone_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of a checkpoint file: ours (``{"state_dict": ...}``) or a plain torchvision one."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping) or not ckpt or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a dict with a 'state_dict' entry)")
    return dict(ckpt)


def load_pretrained_backbone(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load a classifier's feature extractor (torchvision names; ``fc.*`` and ``module.`` dropped) into
    ``model.encoder``. Every encoder parameter and buffer must be present with its shape and no other
    backbone key may be left over; anything else raises ``ValueError`` naming the key."""
    return load_backbone_state(model.encoder, state_dict, strict_backbone=True)


def backbone_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The backbone's parameters under their classifier names (``encoder.`` removed), in model order."""
    return {n[len(ENCODER_PREFIX):]: p for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX)}


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """ASPP, decoder and segmentation head: the parameters that are not pre-trained (full names)."""
    return {n: p for n, p in model.named_parameters() if not n.startswith(ENCODER_PREFIX)}


def bind_backbone_prior(model: nn.Module, prior: GaussianPrior) -> BoundPrior:
    """Bind ``prior`` to exactly the backbone parameters (by name; raises on any mismatch)."""
    return prior.bind(backbone_parameters(model))


# ------------------------------------------------------------------------------------------- hyper
@dataclass
class SegHyper:
    """Hyper-parameters of one segmentation run (``segmentation.train`` plus the dataset's ``lr``)."""

    steps: int = 200
    batch_size: int = 8
    lr: float = 0.05
    lr_power: float = 0.9
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    decoder_weight_decay: float = 1e-4
    prior_scale: float = 1e6
    prior_convention: str = "exact"
    prior_rank: int | None = None
    prior_truncation: str = "svd"
    sampler: str = "sghmc"
    temperature: float = 2e-8
    cycles: int = 1
    exploration_fraction: float = 0.8
    samples_per_cycle: int = 3
    eval_batch_size: int = 32
    num_workers: int = 0
    log_every: int = 50

    @classmethod
    def from_dict(cls, values: Mapping) -> "SegHyper":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise KeyError(f"unknown segmentation hyper-parameter(s) {unknown}; known: "
                           f"{sorted(cls.__dataclass_fields__)}")
        hp = cls(**dict(values))
        if hp.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {hp.sampler!r}")
        return hp

    def to_dict(self) -> dict:
        return asdict(self)


_COMMON_KEYS = ("steps", "batch_size", "lr", "lr_power", "momentum", "nesterov", "decoder_weight_decay",
                "eval_batch_size", "num_workers", "log_every")
_PRIOR_KEYS = {"weight_decay": ("weight_decay",), "isotropic_zero": ("weight_decay",),
               "learned": ("prior_scale", "prior_convention", "prior_rank", "prior_truncation")}
_SAMPLER_KEYS = ("sampler", "temperature", "cycles", "exploration_fraction", "samples_per_cycle")


def relevant_segmentation_hyper(method: str, train_cfg: Mapping) -> dict:
    """The keys of ``segmentation.train`` that can change ``method``'s result (only those rerun a job)."""
    spec = _spec(method)
    keys = list(_COMMON_KEYS) + list(_PRIOR_KEYS[spec.prior])
    keys += list(_SAMPLER_KEYS) if spec.bayesian else []
    return {k: train_cfg[k] for k in keys if k in train_cfg}


def _spec(method: str):
    if method not in SEGMENTATION_METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; known: {', '.join(SEGMENTATION_METHODS)}")
    return METHODS[method]


# ------------------------------------------------------------------------------------------- data
def pad_batch(images: Tensor, masks: Tensor, multiple: int, ignore_index: int = IGNORE_INDEX
              ) -> tuple[Tensor, Tensor]:
    """Pad a batch on the bottom/right to a multiple of ``multiple`` (image 0, mask ``ignore_index``).

    DeepLab needs sides divisible by its output stride (e.g. the paper's 513 crop -> 528 at stride 16);
    padded pixels carry the ignore label, so they are neither trained on nor scored.
    """
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), value=0.0)
        masks = F.pad(masks, (0, pw, 0, ph), value=ignore_index)
    return images, masks


def pad_collate(batch: Sequence[tuple[Tensor, Tensor]], multiple: int = 1, ignore_index: int = IGNORE_INDEX
                ) -> tuple[Tensor, Tensor]:
    """Stack (image (C, H, W), mask (H, W)) pairs of different sizes, padded to a common, divisible size."""
    h = max(int(x.shape[-2]) for x, _ in batch)
    w = max(int(x.shape[-1]) for x, _ in batch)
    h, w = h + (-h) % multiple, w + (-w) % multiple
    xs = torch.zeros((len(batch), batch[0][0].shape[0], h, w), dtype=batch[0][0].dtype)
    ys = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        xs[i, :, :x.shape[-2], :x.shape[-1]] = x
        ys[i, :y.shape[-2], :y.shape[-1]] = torch.as_tensor(y, dtype=torch.long)
    return xs, ys


class _Collate:
    """Picklable collate function (DataLoader workers)."""

    def __init__(self, multiple: int, ignore_index: int) -> None:
        self.multiple, self.ignore_index = multiple, ignore_index

    def __call__(self, batch):
        return pad_collate(batch, self.multiple, self.ignore_index)


def train_batches(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                  multiple: int, ignore_index: int = IGNORE_INDEX, num_workers: int = 0
                  ) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled mini-batches (epochs without replacement, last partial batch dropped) on ``device``."""
    n = len(dataset)
    bs = min(batch_size, n)
    if isinstance(dataset, TensorDataset):
        x, y = (t.to(device) for t in dataset.tensors[:2])
        while True:
            perm = torch.randperm(n, generator=generator)
            for i in range(0, n - bs + 1, bs):
                idx = perm[i:i + bs].to(device)
                yield pad_batch(x[idx], y[idx].long(), multiple, ignore_index)
    loader = DataLoader(dataset, batch_size=bs, sampler=RandomSampler(dataset, generator=generator),
                        drop_last=True, num_workers=num_workers, collate_fn=_Collate(multiple, ignore_index),
                        pin_memory=runtime_options(device, num_workers=num_workers).pin_memory,
                        persistent_workers=num_workers > 0)
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def eval_batches(dataset: Dataset, batch_size: int, device: torch.device, multiple: int,
                 ignore_index: int = IGNORE_INDEX, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        for i in range(0, len(x), batch_size):
            xb, yb = pad_batch(x[i:i + batch_size], y[i:i + batch_size].long(), multiple, ignore_index)
            yield xb.to(device), yb.to(device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_Collate(multiple, ignore_index),
                        pin_memory=runtime_options(device, num_workers=num_workers).pin_memory)
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


# ------------------------------------------------------------------------------------------- training
@dataclass
class SegFitResult:
    """What one segmentation run produced: evaluation metrics (fractions in [0, 1]) and diagnostics."""

    success: bool
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    num_samples: int = 0
    steps_run: int = 0
    wall_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)

    def diagnostics(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"success": self.success, "reason": self.reason, "num_samples": self.num_samples,
                "steps_run": self.steps_run, "wall_time_s": round(self.wall_time_s, 3),
                "final_loss": last.get("loss"), "final_prior_term": last.get("prior_term")}


class _Diverged(RuntimeError):
    pass


def poly_factor(t: int, period: int, power: float) -> float:
    """The poly learning-rate policy ``(1 - t / period) ** power`` (clamped at 0)."""
    return max(0.0, 1.0 - t / period) ** power


def pixel_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the scored pixels (0 when a batch has none, instead of NaN)."""
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = target.ne(ignore_index).sum()
    return total / count.clamp_min(1)


def fit_segmentation(model: nn.Module, train_set: Dataset, eval_set: Dataset, *, method: str, hp: SegHyper,
                     num_classes: int, learned_prior: GaussianPrior | None = None, seed: int = 0,
                     device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX,
                     desc: str = "segment", state_path: str | None = None, checkpoint_every: int = 0,
                     state_key: Mapping | None = None) -> SegFitResult:
    """Train ``model`` (backbone already pre-trained, decoder fresh) with ``method`` and score it on
    ``eval_set``. Non-finite losses, priors or predictions end the run with ``success=False`` and a reason.

    ``state_path`` with ``checkpoint_every > 0`` saves the training state (model, optimiser, samples so far,
    random-number generators, log) every ``checkpoint_every`` iterations; if the file exists with the same
    ``state_key`` the run continues from it (paper-scale jobs outlive a Slurm time limit). After a resume
    the batch order is drawn afresh from a generator seeded with (seed, iteration), so a resumed run is a
    run of the same distribution, not bit-identical to an uninterrupted one.
    """
    from bayes_transfer.inference.loop import load_matching_state, rng_states, save_state, set_rng_states

    spec = _spec(method)
    device = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    # channels-last activations: ~20 % faster convolutions on CPU (oneDNN) and GPU alike; same numbers per device
    model.to(device=device, memory_format=torch.channels_last).train()
    num_data = len(train_set)
    multiple = int(getattr(model.encoder, "output_stride", 16))
    backbone, rest = backbone_parameters(model), head_parameters(model)
    bound = None
    backbone_wd = hp.weight_decay
    if spec.prior == "learned":
        if learned_prior is None:
            raise ValueError(f"method {method!r} needs a learned prior")
        bound = bind_backbone_prior(model, prepare_learned_prior(learned_prior, hp)).to(device)
        backbone_wd = 0.0
    elif spec.prior not in ("weight_decay", "isotropic_zero"):
        raise ValueError(f"method {method!r}: backbone prior {spec.prior!r} is not used in segmentation")
    groups = [dict(params=list(backbone.values()), weight_decay=backbone_wd),
              dict(params=list(rest.values()), weight_decay=hp.decoder_weight_decay)]
    if spec.bayesian:
        schedule = CyclicalSchedule(hp.steps, hp.cycles, hp.exploration_fraction, hp.samples_per_cycle)
        if hp.sampler == "sghmc":
            cls = NesterovSGHMC if hp.nesterov else SGHMC
            opt = cls(groups, lr=hp.lr, num_data=num_data, momentum=hp.momentum, temperature=hp.temperature)
        else:
            opt = SGLD(groups, lr=hp.lr, num_data=num_data, temperature=hp.temperature)
        sample_steps = set(schedule.sample_steps())
    else:
        schedule = None
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0)
        sample_steps = {hp.steps - 1}
    samples: list[dict[str, Tensor]] = []
    history: list[dict] = []
    start = 0
    saved = load_matching_state(state_path, dict(state_key or {})) if state_path and checkpoint_every > 0 else None
    if saved is not None and "train" in saved:
        st = saved["train"]
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        samples, history, start = st["samples"], st["history"], int(st["step"]) + 1
        set_rng_states(st["rng"], device)
        noise_gen.set_state(st["noise_rng"])
        gen.manual_seed(seed * 1_000_003 + start)
        log.info("%s: resumed from %s at iteration %d", desc, state_path, start)
    stream = train_batches(train_set, hp.batch_size, gen, device, multiple, ignore_index, hp.num_workers)
    reason, step = "", start - 1
    try:
        for step in range(start, hp.steps):
            lr = hp.lr * _lr_factor(step, hp, schedule)
            set_lr(opt, lr)
            xb, yb = next(stream)
            loss = pixel_cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb, ignore_index)
            if not torch.isfinite(loss):
                raise _Diverged(f"non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if bound is not None:  # gradient of -log p(theta_backbone) / N
                bound.add_grad_(1.0 / num_data)
            if schedule is None:
                opt.step()
            else:
                opt.step(noise=not schedule.is_exploring(step), generator=noise_gen)
            if step % hp.log_every == 0 or step == hp.steps - 1:
                rec = _record(step, lr, loss, backbone, rest, backbone_wd, hp, bound, num_data, schedule)
                history.append(rec)
                if not math.isfinite(rec["objective"]):
                    raise _Diverged(f"non-finite objective at step {step}")
                log.info("%s step %d/%d loss %.4f lr %.3g prior %.4g", desc, step, hp.steps, rec["loss"], lr,
                         rec["prior_term"])
            if step in sample_steps:
                samples.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            if state_path and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0 and step + 1 < hp.steps:
                save_state({"key": dict(state_key or {}), "train": {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "samples": samples,
                    "history": history, "step": step, "rng": rng_states(device),
                    "noise_rng": noise_gen.get_state()}}, state_path)
    except _Diverged as err:
        reason = str(err)
    except FloatingPointError as err:
        reason = f"{err} at step {step}"
    metrics: dict = {}
    if not reason:
        metrics = evaluate(model, samples, eval_set, num_classes, device, hp.eval_batch_size, multiple,
                           ignore_index, hp.num_workers)
        if not metrics.pop("finite"):
            reason = "non-finite predictions"
    return SegFitResult(not reason, reason, metrics if not reason else {}, len(samples), step + 1,
                        time.perf_counter() - t0, history)


def _lr_factor(step: int, hp: SegHyper, schedule: CyclicalSchedule | None) -> float:
    if schedule is None:
        return poly_factor(step, hp.steps, hp.lr_power)
    cycle, within = schedule.position(step)
    start = cycle * schedule.steps_per_cycle
    length = (hp.steps - start) if cycle == schedule.cycles - 1 else schedule.steps_per_cycle
    return poly_factor(within, length, hp.lr_power)


@torch.no_grad()
def _record(step, lr, loss, backbone, rest, backbone_wd, hp, bound, num_data, schedule) -> dict:
    """One training-log line: data loss and the prior term (-log prior / N incl. weight decays)."""
    prior_term = 0.0
    if bound is not None:
        prior_term -= float(bound.log_prob()) / num_data
    if backbone_wd:
        prior_term += 0.5 * backbone_wd * sum(float(p.square().sum()) for p in backbone.values())
    if hp.decoder_weight_decay:
        prior_term += 0.5 * hp.decoder_weight_decay * sum(float(p.square().sum()) for p in rest.values())
    loss_v = float(loss)
    return {"step": step, "lr": lr, "loss": loss_v, "prior_term": prior_term, "objective": loss_v + prior_term,
            "phase": "sgd" if schedule is None else ("explore" if schedule.is_exploring(step) else "sample")}


@torch.no_grad()
def evaluate(model: nn.Module, samples: Sequence[Mapping[str, Tensor]], eval_set: Dataset, num_classes: int,
             device: torch.device, batch_size: int = 32, multiple: int = 16, ignore_index: int = IGNORE_INDEX,
             num_workers: int = 0) -> dict:
    """Mean IoU of the per-pixel Bayesian model average of ``samples`` (state dicts of ``model``).

    Returns ``miou`` (torchmetrics' Jaccard index, macro over classes present in target or prediction,
    ignore label skipped), ``miou_confusion`` (the same from our confusion matrix; must agree),
    ``iou_per_class`` (NaN -> None for absent classes), ``pixel_accuracy``, ``pixel_nll`` (mean -log of
    the averaged probability of the true label over scored pixels) and ``finite``.
    """
    from torchmetrics.classification import MulticlassJaccardIndex

    from bayes_transfer.results.metrics import PROB_FLOOR, ConfusionMatrix

    if not samples:
        raise ValueError("evaluate: no samples to average")
    members = []
    for state in samples:
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        members.append(m.eval())
    jaccard = MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=ignore_index
                                     ).to(device)
    cm = ConfusionMatrix(num_classes, ignore_index)
    nll_sum, scored, finite = 0.0, 0, True
    for xb, yb in eval_batches(eval_set, batch_size, device, multiple, ignore_index, num_workers):
        xb = xb.contiguous(memory_format=torch.channels_last)
        probs = sum(torch.softmax(m(xb).float(), dim=1) for m in members) / len(members)
        if not torch.all(torch.isfinite(probs)):
            finite = False
            break
        pred = probs.argmax(dim=1)
        jaccard.update(pred, yb)
        cm.update(pred, yb)
        valid = yb.ne(ignore_index)
        if valid.any():
            p_true = probs.gather(1, yb.clamp(0, num_classes - 1).unsqueeze(1)).squeeze(1)[valid]
            nll_sum += float(-torch.log(p_true.double().clamp_min(PROB_FLOOR)).sum())
            scored += int(valid.sum())
    if not finite:
        return {"finite": False}
    iou = cm.iou_per_class()
    return {
        "finite": True,
        "miou": float(jaccard.compute()),
        "miou_confusion": cm.mean_iou(),
        "iou_per_class": [None if math.isnan(v) else float(v) for v in iou.tolist()],
        "pixel_accuracy": cm.pixel_accuracy(),
        "pixel_nll": nll_sum / scored if scored else float("nan"),
        "num_samples": len(members),
        "scored_pixels": scored,
    }


# ------------------------------------------------------------------------------------------- config
def segmentation_config_problems(config: Mapping) -> list[str]:
    """Problems of a config's ``segmentation`` section that its schema cannot express (each names its key).

    Used by :func:`bayes_transfer.config.check.check_config` when the Snakefile is parsed.
    """
    seg = config.get("segmentation") or {}
    if not seg.get("enabled", True):
        return []
    problems: list[str] = []
    paper_scale = (config.get("data") or {}).get("dataset", "digits") != "digits"
    main_arch = (config.get("model") or {}).get("arch", "small_resnet")
    datasets = seg.get("datasets") or []
    methods = seg.get("methods") or []
    learned = [m for m in methods if m in ("bnn_learned_prior", "sgd_learned_prior")]
    for b in seg.get("backbones") or []:
        entry = seg.get(b) or {}
        arch = entry.get("arch") or main_arch
        key = f"segmentation.{b}"
        if entry.get("blocks") and arch != "small_resnet":
            problems.append(f"{key}.blocks: only a small_resnet stand-in has blocks, but the backbone is {arch}")
        if "digit_scenes" in datasets and arch != "small_resnet":
            problems.append(f"{key}.arch: digit_scenes needs a small_resnet backbone (1-channel 8x8 digits), "
                            f"got {arch}")
        for d in datasets:
            if d != "digit_scenes" and arch not in SMP_ARCHS:
                problems.append(f"{key}.arch: {d} needs a ResNet-50/101 backbone (RGB images), got {arch}")
        if entry.get("arch") is not None and paper_scale:
            needed = (["supervised"] if set(methods) - set(learned) else []) + (
                list(entry.get("pretrainings") or []) if learned else [])
            for p in dict.fromkeys(needed):
                if not (entry.get("checkpoints") or {}).get(p):
                    problems.append(f"{key}.checkpoints.{p}: a backbone with its own arch needs a checkpoint file at "
                                    "paper scale (stand-ins are pre-trained on the digits only)")
            for p in (entry.get("pretrainings") or []) if learned else []:
                if not (entry.get("priors") or {}).get(p):
                    problems.append(f"{key}.priors.{p}: a backbone with its own arch needs a learned-prior file at "
                                    "paper scale")
    scenes = seg.get("scenes") or {}
    if "digit_scenes" in datasets and scenes:
        try:
            from bayes_transfer.data.scenes import SceneConfig

            SceneConfig(**{k: v for k, v in scenes.items() if k in SceneConfig.__dataclass_fields__})
        except ValueError as err:
            problems.append(f"segmentation.{err}")
        if scenes.get("canvas", 24) % 4:
            problems.append(f"segmentation.scenes.canvas: must be divisible by small_resnet's output stride 4, "
                            f"got {scenes['canvas']}")
    train = seg.get("train") or {}
    if any(m.startswith("bnn_") for m in methods):
        try:
            CyclicalSchedule(int(train.get("steps", 200)), int(train.get("cycles", 1)),
                             float(train.get("exploration_fraction", 0.8)), int(train.get("samples_per_cycle", 3)))
        except ValueError as err:
            problems.append(f"segmentation.train (steps, cycles, exploration_fraction, samples_per_cycle): {err}")
    rank = train.get("prior_rank")
    if rank is not None and learned and not paper_scale and rank > (config.get("swag") or {}).get("max_rank", 20):
        problems.append(f"segmentation.train.prior_rank: {rank} is above swag.max_rank")
    return problems
