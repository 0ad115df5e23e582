"""Reading and writing backbone checkpoints in torchvision's ResNet parameter layout.

* :func:`load_checkpoint_state` reads a checkpoint file in any of the common layouts (a plain
  state dict, ``{"state_dict": ...}``, ``{"model": ...}``, SimCLR's converted
  ``{"resnet": ...}``) and returns a plain state dict whose keys follow torchvision's ResNet
  (``conv1.weight``, ``layer1.0.bn1.running_mean``, ..., ``fc.weight``), ready for
  :func:`bayes_transfer.models.resnets.load_backbone_state`.
* :func:`torchvision_imagenet_state` returns torchvision's supervised ImageNet weights from
  the torch hub cache (``$TORCH_HOME/hub/checkpoints``), downloading them only where that is
  possible, with an error that says which file to place where when it is not.
* :func:`save_backbone_checkpoint` writes ``{"state_dict": ..., "metadata": ...}``
  atomically, the metadata holding the tensors' checksum; :func:`load_checkpoint_metadata` reads the
  metadata back (both readers verify the checksum, :mod:`bayes_transfer.integrity`).

Everything is loaded onto the CPU; moving to a device is the caller's business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from bayes_transfer.integrity import CHECKSUM_KEY, IntegrityError, load_torch_file, stamp, verify
from bayes_transfer.io import save_torch

__all__ = [
    "CONTAINER_KEYS",
    "WRAPPER_PREFIXES",
    "load_checkpoint_state",
    "normalize_state_keys",
    "load_checkpoint_metadata",
    "torchvision_imagenet_state",
    "save_backbone_checkpoint",
]

# Keys under which checkpoints nest their state dict, tried in this order.
CONTAINER_KEYS = ("state_dict", "model", "resnet")
# Prefixes that wrap a whole backbone (SimCLR/BYOL "encoder.", MoCo "encoder_q.", ...).
WRAPPER_PREFIXES = ("encoder.", "encoder_q.", "backbone.", "model.")
# First name component of every ResNet backbone key (torchvision and SmallResNet).
_BACKBONE_ROOTS = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"})
_TORCHVISION_ARCHS = ("resnet18", "resnet50", "resnet101")


# --------------------------------------------------------------------------- loading
def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _is_backbone_key(key: str) -> bool:
    return key.split(".", 1)[0] in _BACKBONE_ROOTS


def _wraps_backbone_key(key: str) -> bool:
    """Whether ``key`` is a backbone key under one or more wrapper prefixes."""
    for prefix in WRAPPER_PREFIXES:
        if key.startswith(prefix):
            rest = _strip_module(key[len(prefix) :])
            if _is_backbone_key(rest) or _wraps_backbone_key(rest):
                return True
    return False


def normalize_state_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Torchvision-layout keys: strip ``module.`` and whole-backbone wrapper prefixes.

    Every leading ``module.`` (DataParallel / DDP) is removed. Then, while no key is a
    backbone key itself (first component ``conv1``, ``bn1`` or ``layer1``..``layer4``) but
    keys under one of :data:`WRAPPER_PREFIXES` are, i.e. *all* backbone keys carry that
    prefix, the prefix is stripped and keys without it (projection heads, MoCo's key encoder
    and queue, ...) are dropped. A state dict whose backbone keys are already unprefixed is
    returned with only ``module.`` removed.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _strip_module(str(key))
        if name in out:
            raise ValueError(f"key {name!r} occurs twice once 'module.' prefixes are removed")
        out[name] = value
    for _ in range(4):  # nested wrappers such as "model.encoder." peel off one per round
        if any(_is_backbone_key(k) for k in out):
            break
        for prefix in WRAPPER_PREFIXES:
            if any(k.startswith(prefix) and _wraps_backbone_key(k) for k in out):
                out = {
                    _strip_module(k[len(prefix) :]): v
                    for k, v in out.items()
                    if k.startswith(prefix)
                }
                break
        else:
            break
    return out


def _find_state(obj: Any, where: str, depth: int = 0) -> Mapping[str, Any]:
    """The mapping of tensors inside a loaded checkpoint object (nested containers allowed)."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{where} holds a {type(obj).__name__}, expected a state dict (a mapping of "
            f"names to tensors) or a dict with one under {', '.join(map(repr, CONTAINER_KEYS))}"
        )
    if depth < 3:
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return _find_state(inner, f"{where}[{key!r}]", depth + 1)
    return obj


def load_checkpoint_state(
    path: str | os.PathLike, *, weights_only: bool = True
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its backbone state dict in torchvision's layout.

    Accepted layouts: a plain state dict, or a dict holding one under ``"state_dict"``,
    ``"model"`` or ``"resnet"`` (SimCLR's converted checkpoints), possibly nested. Keys are
    normalised by :func:`normalize_state_keys` (``module.``, ``encoder.``, ``backbone.``, ...
    removed); non-tensor entries are dropped. The file is read onto the CPU with
    ``torch.load(weights_only=weights_only)``; pass ``weights_only=False`` only for trusted
    files that pickle other Python objects (e.g. an ``argparse.Namespace``).

    A checkpoint whose metadata records a tensor checksum (:func:`save_backbone_checkpoint`, the pretrain
    stage) is verified against it (:func:`bayes_transfer.integrity.verify`).

    Raises ``FileNotFoundError`` if ``path`` does not exist, and ``ValueError`` naming the
    file if it cannot be unpickled under ``weights_only`` (truncated, corrupted), its tensors do not match
    their checksum (both :class:`~bayes_transfer.integrity.IntegrityError`) or it holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        hint = (
            " If the file is trusted and pickles other Python objects, pass weights_only=False."
            if weights_only
            else ""
        )
        raise IntegrityError(
            f"could not read checkpoint {str(path)!r} ({path.stat().st_size} bytes): expected a complete "
            f"torch.save file; it may be truncated or corrupted ({type(exc).__name__}: {exc}).{hint}"
        ) from exc
    verify(obj, path, "checkpoint")
    state = _find_state(obj, f"checkpoint {str(path)!r}")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = list(obj.keys())[:10] if isinstance(obj, Mapping) else []
        raise ValueError(
            f"checkpoint {str(path)!r} holds no tensors: expected a state dict or a dict with "
            f"one under {', '.join(map(repr, CONTAINER_KEYS))}; top-level keys: {keys}"
        )
    return normalize_state_keys(tensors)


def load_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"metadata"`` dict of a checkpoint (``{}`` if it has none), its tensor checksum verified and left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    obj = load_torch_file(path, "checkpoint")
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(
            f"checkpoint {str(path)!r}: 'metadata' should be a dict, got {type(meta).__name__}"
        )
    return {k: v for k, v in meta.items() if k != CHECKSUM_KEY}


# --------------------------------------------------------------------------- torchvision weights
def _hub_checkpoint_dir(torch_home: str | os.PathLike | None) -> Path:
    if torch_home is not None:
        return Path(torch_home).expanduser() / "hub" / "checkpoints"
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_imagenet_state(
    arch: str, weights: Any = "DEFAULT", torch_home: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Torchvision's supervised ImageNet weights for ``arch`` as a state dict (CPU).

    ``arch`` is ``resnet50`` or ``resnet101`` (``resnet18`` also works); ``weights`` is a name
    of ``torchvision.models.get_model_weights(arch)`` (``"DEFAULT"``, ``"IMAGENET1K_V1"``,
    ``"ResNet50_Weights.IMAGENET1K_V2"``) or the enum member itself. The file is read from
    ``<torch_home>/hub/checkpoints/`` (default: torch's hub dir, i.e.
    ``$TORCH_HOME/hub/checkpoints``) and downloaded there by torch only if absent. If that
    fails (e.g. no internet access) a ``RuntimeError`` names the expected file and its URL.
    The 1000-class ``fc`` is included; ``load_backbone_state`` ignores it.
    """
    from torchvision.models import get_model_weights

    if arch not in _TORCHVISION_ARCHS:
        raise ValueError(
            f"unknown arch {arch!r} for torchvision ImageNet weights; known: "
            f"{', '.join(_TORCHVISION_ARCHS)}"
        )
    enum_cls = get_model_weights(arch)
    try:
        member = enum_cls.verify(weights)
    except (KeyError, TypeError) as exc:
        names = ", ".join(["DEFAULT", *enum_cls.__members__])
        raise ValueError(
            f"unknown weights {weights!r} for {arch}; choose one of {names}"
        ) from exc
    if member is None:
        raise ValueError(f"weights must name pretrained weights for {arch}, got None")

    model_dir = _hub_checkpoint_dir(torch_home)
    file_name = os.path.basename(urlparse(member.url).path)
    expected = model_dir / file_name
    try:
        state = member.get_state_dict(
            progress=False, model_dir=str(model_dir), weights_only=True
        )
    except Exception as exc:  # noqa: BLE001 - network, file and unpickling errors alike
        torch_home_now = (
            str(torch_home) if torch_home is not None else os.environ.get("TORCH_HOME", "(unset)")
        )
        state_of_file = (
            "exists but could not be read (corrupted or partial download?)"
            if expected.exists()
            else "is not in the cache and could not be downloaded"
        )
        raise RuntimeError(
            f"could not load torchvision ImageNet weights {member} for {arch}: the file "
            f"{str(expected)!r} {state_of_file}. TORCH_HOME is {torch_home_now}; torch looks "
            f"for weights in TORCH_HOME/hub/checkpoints. To place them manually, download "
            f"{member.url} on a machine with internet access and copy it to that exact path "
            f"(file name {file_name!r}). Original error: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, Mapping) or not state:
        raise RuntimeError(f"{str(expected)!r} did not contain a state dict for {arch}")
    return normalize_state_keys(state)


# --------------------------------------------------------------------------- saving
def _plain(value: Any, where: str) -> Any:
    """A copy of ``value`` made of types that ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return _plain(value.item(), where)  # numpy / torch scalars
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"metadata key {where}[{k!r}] must be a str, got {type(k).__name__}"
                )
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"metadata value {where} has type {type(value).__name__}; expected None, bool, int, "
        "float, str, a path, or lists/tuples/dicts of these"
    )


def save_backbone_checkpoint(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{"state_dict": ..., "metadata": ...}`` to ``path`` atomically; return the path.

    ``model`` is a module (``module.`` prefixes of DataParallel/DDP wrappers are removed) or a
    state dict; all its tensors, the head included, are saved detached on the CPU.
    ``metadata`` must be a dict of plain values (numpy/torch scalars and paths are converted)
    so that the file loads with ``torch.load(weights_only=True)``; the checksum of the tensors is added to it
    (:func:`bayes_transfer.integrity.stamp`, key ``tensor_sha256``). The file is written atomically
    (:func:`bayes_transfer.io.save_torch`), so readers never see a partial checkpoint. Parent
    directories are created.
    """
    if isinstance(model, nn.Module):
        raw = model.state_dict()
    elif isinstance(model, Mapping):
        raw = model
    else:
        raise TypeError(f"model must be an nn.Module or a state dict, got {type(model).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(value).__name__}")
        name = _strip_module(str(key))
        if name in state:
            raise ValueError(f"key {name!r} occurs twice once 'module.' prefixes are removed")
        state[name] = value.detach().to("cpu")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = _plain(metadata, "metadata")

    return save_torch(stamp({"state_dict": state, "metadata": meta}), path)


# --------------------------------------------------------------------------- the paper's source checkpoints
SIMCLR_SOURCE = (
    "SimCLR v1 (Chen et al. 2020) ResNet-50 (1x) from https://github.com/google-research/simclr "
    "(checkpoint ResNet50_1x), converted to PyTorch in torchvision key layout, e.g. with "
    "https://github.com/tonylins/simclr-converter (writes {'state_dict': ...}); "
    "{'resnet': ...} files and 'module.'/'encoder.' prefixes are accepted too"
)


def fetch_source_weights(
    arch: str, pretraining: str, cfg: Mapping[str, Any], root: str | os.PathLike = "data"
) -> dict[str, Any]:
    """Make the ImageNet source checkpoint of (``arch``, ``pretraining``) available; return its manifest.

    ``cfg`` is the ``checkpoints`` config section. ``supervised``: torchvision's
    ``cfg["torchvision_weights"]`` weights, read from (or downloaded once into)
    ``<torch_home>/hub/checkpoints``. ``simclr``: the converted file ``cfg["simclr"][arch]`` (``{root}``
    replaced by ``root``). Either file is read and checked to hold every backbone tensor of ``arch``
    in torchvision's layout. The manifest (arch, pretraining, path, bytes, number of backbone tensors,
    origin) is what the pretrain stage reads.
    """
    from bayes_transfer.models.resnets import build_model, load_backbone_state

    torch_home = cfg.get("torch_home")
    if pretraining == "supervised":
        from torchvision.models import get_model_weights

        weights = cfg.get("torchvision_weights", "IMAGENET1K_V1")
        state = torchvision_imagenet_state(arch, weights, torch_home=torch_home)
        member = get_model_weights(arch).verify(weights)
        path = _hub_checkpoint_dir(torch_home) / os.path.basename(urlparse(member.url).path)
        origin = f"torchvision {member} ({member.url})"
    elif pretraining == "simclr":
        files = cfg.get("simclr") or {}
        if arch not in files:
            raise ValueError(
                f"checkpoints.simclr has no file for {arch!r} (it lists {sorted(files)}); add "
                f"checkpoints.simclr.{arch}: <path> pointing to {SIMCLR_SOURCE}"
            )
        path = Path(str(files[arch]).format(root=os.fspath(root))).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"SimCLR checkpoint for {arch} not found: expected the file {str(path)!r} "
                f"(config checkpoints.simclr.{arch}). To obtain it: {SIMCLR_SOURCE}."
            )
        state = load_checkpoint_state(path)
        origin = f"SimCLR converted checkpoint {path}"
    else:
        raise ValueError(f"unknown pre-training {pretraining!r}; expected supervised or simclr")
    model = build_model(arch, 1000)
    try:
        loaded = load_backbone_state(model, state)
    except ValueError as err:
        raise ValueError(f"{path} is not a {arch} checkpoint in torchvision layout: {err}") from err
    return {
        "arch": arch,
        "pretraining": pretraining,
        "path": str(Path(path).resolve()),
        "bytes": Path(path).stat().st_size,
        "backbone_tensors": len(loaded),
        "origin": origin,
    }


def load_source_weights(manifest: Mapping[str, Any], arch: str) -> dict[str, torch.Tensor]:
    """The backbone state dict a :func:`fetch_source_weights` manifest points to (checked against ``arch``)."""
    if manifest.get("arch") != arch:
        raise ValueError(f"the weights manifest is for {manifest.get('arch')!r}, the model is {arch!r}")
    return load_checkpoint_state(manifest["path"])
