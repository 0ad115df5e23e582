"""Network architectures with a torchvision-ResNet parameter layout.

Every model built here has

* a classifier head called ``fc`` (an ``nn.Linear``),
* ``features(x)``: the pooled feature vector that feeds ``fc``, and
* ``feature_dim``: the length of that vector (``fc.in_features``).

:class:`SmallResNet` (``small_resnet``, the digits) and :class:`ResNet28` (``resnet28``, Fashion-MNIST's 28 px
images) are small residual CNNs with BatchNorm and torchvision's parameter names.
Torchvision ResNets get ``features`` from :class:`ResNetWithFeatures`, a subclass of
``torchvision.models.ResNet``; its parameter names are exactly torchvision's, so checkpoints
load unchanged. Torchvision is only imported when such a model is requested.
:func:`extract_features` calls ``model.features`` and works for every model here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "HEAD_PREFIX",
    "KNOWN_ARCHS",
    "BasicBlock",
    "SmallResNet",
    "ResNet28",
    "build_model",
    "extract_features",
    "split_named_parameters",
    "replace_head",
    "load_backbone_state",
]

HEAD_PREFIX = "fc."
KNOWN_ARCHS = ("small_resnet", "resnet28", "resnet18", "resnet50", "resnet101")

# torchvision constructor arguments (block type name, blocks per stage) for each arch.
_TORCHVISION_LAYOUT = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_sizes(num_classes: int, in_channels: int, width: int, blocks: Sequence[int], stages: int) -> tuple:
    """The checked sizes of a residual network with ``stages`` stages; returns ``blocks`` as a tuple."""
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("width", width)
    blocks = tuple(blocks)
    if len(blocks) != stages:
        raise ValueError(f"blocks must have {stages} entries (one per stage), got {blocks!r}")
    for i, b in enumerate(blocks):
        _check_positive_int(f"blocks[{i}]", b)
    return blocks


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut, as in torchvision."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SmallResNet(nn.Module):
    """A three-stage residual CNN for small images (e.g. 8x8 sklearn digits).

    Stages have ``width``, ``2*width`` and ``4*width`` channels; stages 2 and 3 use stride 2
    (8x8 -> 4x4 -> 2x2). The stem is a 3x3 conv without max-pooling. Parameter names follow
    torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``).
    With the defaults (width 16, one block per stage, 5 classes) it has 77,429 parameters.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        blocks: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        blocks = _check_sizes(num_classes, in_channels, width, blocks, stages=3)

        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(width, width, blocks[0], stride=1)
        self.layer2 = self._make_stage(width, 2 * width, blocks[1], stride=2)
        self.layer3 = self._make_stage(2 * width, 4 * width, blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 4 * width
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    @staticmethod
    def _make_stage(in_planes: int, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(n_blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector of shape ``(N, feature_dim)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet28(SmallResNet):
    """A four-stage residual CNN for 28 px images (Fashion-MNIST), torchvision's layout at a small width.

    Like torchvision's ResNet-18 it has a stem (here one 3x3 conv-BN with stride ``stem_stride``, no
    max-pooling) and four stages ``layer1``..``layer4`` of BasicBlocks with ``width``, ``2*width``, ``4*width``
    and ``8*width`` channels and strides 1, 2, 2, 2; parameter names are torchvision's (``conv1``, ``bn1``,
    ``layer1.0.conv1``, ..., ``layer4.0.downsample.0``, ``fc``). With the defaults (width 16, one block per stage,
    stem stride 2) a 28 px image becomes feature maps of 14, 7, 4 and 2 px; 5 classes give 307,893 parameters.
    ``stem_stride=1`` keeps the stem at full resolution (4x the compute; for 14 px inputs).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 2,
    ) -> None:
        nn.Module.__init__(self)
        blocks = _check_sizes(num_classes, in_channels, width, blocks, stages=4)
        _check_positive_int("stem_stride", stem_stride)

        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(width, width, blocks[0], stride=1)
        self.layer2 = self._make_stage(width, 2 * width, blocks[1], stride=2)
        self.layer3 = self._make_stage(2 * width, 4 * width, blocks[2], stride=2)
        self.layer4 = self._make_stage(4 * width, 8 * width, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 8 * width
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector of shape ``(N, feature_dim)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@functools.lru_cache(maxsize=1)
def _resnet_with_features_class() -> type:
    """Create the torchvision ResNet subclass (imports torchvision on first use)."""
    try:
        from torchvision.models.resnet import ResNet
    except Exception as exc:  # noqa: BLE001 - any import failure means the same thing here
        raise ImportError(
            "torchvision is needed for the resnet18/resnet50/resnet101 architectures "
            f"but could not be imported: {exc}"
        ) from exc

    class ResNetWithFeatures(ResNet):
        """torchvision ResNet plus ``features(x)`` and ``feature_dim``; names are unchanged."""

        @property
        def feature_dim(self) -> int:
            return int(self.fc.in_features)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """Pooled feature vector (input of ``fc``) of shape ``(N, feature_dim)``."""
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

    ResNetWithFeatures.__module__ = __name__
    ResNetWithFeatures.__qualname__ = "ResNetWithFeatures"
    return ResNetWithFeatures


def __getattr__(name: str) -> Any:
    # Lazy module attribute so ``bayes_transfer.models.resnets.ResNetWithFeatures`` (and pickling of
    # such models) works without importing torchvision when this module is imported.
    if name == "ResNetWithFeatures":
        return _resnet_with_features_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_torchvision_resnet(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    from torchvision.models.resnet import BasicBlock as TVBasic
    from torchvision.models.resnet import Bottleneck

    block_name, layers = _TORCHVISION_LAYOUT[arch]
    block = TVBasic if block_name == "basic" else Bottleneck
    cls = _resnet_with_features_class()
    try:
        # weights are never loaded: the constructor only initialises randomly.
        model = cls(block, list(layers), num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise TypeError(f"invalid keyword arguments for arch {arch!r}: {exc}") from exc
    return model


def build_model(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a randomly initialised model; ``arch`` is one of :data:`KNOWN_ARCHS`.

    ``kwargs`` go to :class:`SmallResNet` or :class:`ResNet28` (``in_channels``, ``width``, ``blocks``; ResNet28
    also ``stem_stride``) or to the
    torchvision ``ResNet`` constructor (e.g. ``zero_init_residual``). Nothing is downloaded.
    """
    _check_positive_int("num_classes", num_classes)
    if arch == "small_resnet":
        return SmallResNet(num_classes, **kwargs)
    if arch == "resnet28":
        return ResNet28(num_classes, **kwargs)
    if arch in _TORCHVISION_LAYOUT:
        return _build_torchvision_resnet(arch, num_classes, **kwargs)
    raise ValueError(f"unknown arch {arch!r}; known archs: {', '.join(KNOWN_ARCHS)}")


def extract_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features (the input of ``model.fc``) for any model from :func:`build_model`."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise TypeError(
            f"model of type {type(model).__name__} has no features(x) method; "
            "build it with bayes_transfer.models.resnets.build_model"
        )
    return features(x)


def split_named_parameters(
    model: nn.Module,
) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """Split parameters into (feature extractor, head) by name; head = names starting ``fc.``.

    BatchNorm weights/biases belong to the feature extractor; buffers are never included.
    Both dicts keep ``model.named_parameters()`` order.
    """
    backbone: dict[str, nn.Parameter] = {}
    head: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        (head if name.startswith(HEAD_PREFIX) else backbone)[name] = param
    return backbone, head


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace ``model.fc`` by a freshly initialised ``nn.Linear`` with ``num_classes`` outputs.

    The new layer uses torch's default init (global RNG, so deterministic under
    ``torch.manual_seed``) and the old layer's device and dtype. Returns the model.
    """
    _check_positive_int("num_classes", num_classes)
    old = getattr(model, "fc", None)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"model must have an nn.Linear head named 'fc', got {type(old).__name__}")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    model.fc = new.to(device=old.weight.device, dtype=old.weight.dtype)
    return model


def _strip_module_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def load_backbone_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    strict_backbone: bool = True,
) -> list[str]:
    """Load every non-``fc`` parameter and buffer of ``model`` from ``state_dict``.

    Keys are taken with a leading ``module.`` removed and ``fc.*`` keys are ignored, so the
    model keeps its own head. A backbone key of the model that is missing from ``state_dict``
    or has another shape raises ``ValueError`` naming the first such key (in model order) and
    both shapes; the only key allowed to be absent is BatchNorm's ``num_batches_tracked``
    counter. With ``strict_backbone=True`` extra non-``fc`` keys that the model lacks also raise;
    with ``False`` they are ignored. Nothing is ever left at random init silently.
    Returns the list of keys that were loaded.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    incoming: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _strip_module_prefix(key)
        if name.startswith(HEAD_PREFIX):
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(value).__name__}")
        incoming[name] = value

    own = model.state_dict()
    merged: dict[str, torch.Tensor] = {}
    loaded: list[str] = []
    for name, target in own.items():
        if name.startswith(HEAD_PREFIX):
            merged[name] = target
            continue
        if name not in incoming:
            if name.endswith("num_batches_tracked"):
                merged[name] = target
                continue
            raise ValueError(
                f"backbone key {name!r} (expected shape {tuple(target.shape)}) is missing "
                "from state_dict (shape: absent)"
            )
        value = incoming[name]
        if value.shape != target.shape:
            raise ValueError(
                f"backbone key {name!r} has shape {tuple(value.shape)} in state_dict but "
                f"{tuple(target.shape)} in the model"
            )
        merged[name] = value
        loaded.append(name)

    if strict_backbone:
        extra = [name for name in incoming if name not in own]
        if extra:
            raise ValueError(
                f"state_dict has backbone key {extra[0]!r} that the model does not have "
                f"({len(extra)} unexpected key(s)); pass strict_backbone=False to ignore them"
            )
    model.load_state_dict(merged, strict=True)
    return loaded
