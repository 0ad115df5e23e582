"""DeepLabv3+ for the segmentation experiments (paper section 4.4, App. C), with the backbone under its
classifier names, so pre-trained checkpoints and learned priors bind to it by name.

DeepLabv3+ from ``segmentation_models_pytorch`` (smp): a ResNet encoder, the ASPP + decoder
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

The learned prior is bound to the backbone parameters by name (:meth:`GaussianPrior.bind` checks names,
order and shapes and raises :class:`~bayes_transfer.priors.gaussian.PriorMismatchError` otherwise).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from torch import Tensor, nn

from bayes_transfer.models.resnets import SmallResNet, load_backbone_state
from bayes_transfer.priors.bound import BoundPrior
from bayes_transfer.priors.gaussian import GaussianPrior

ENCODER_PREFIX = "encoder."
SMP_ARCHS = ("resnet18", "resnet50", "resnet101")  # resnet18: fast tests of the smp path


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
    """The state dict of a checkpoint file: ours (``{"state_dict": ...}``, its checksum verified) or a plain
    torchvision one."""
    from bayes_transfer.integrity import load_torch_file

    ckpt = load_torch_file(path, "checkpoint")
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


def split_parameters(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """(backbone, rest): the training loop's split of a DeepLabv3+ (backbone under its classifier names)."""
    return backbone_parameters(model), head_parameters(model)
