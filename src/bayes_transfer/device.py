"""The one place where the compute device and the way it is used (precision, memory format, loaders) are chosen."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch


def get_device(preference: str | None = None) -> torch.device:
    """Return the device to run on.

    ``preference`` (or the environment variable ``BAYES_TRANSFER_DEVICE``) may be ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (the default): the first accelerator that is
    available, otherwise the CPU.
    """
    choice = (preference or os.environ.get("BAYES_TRANSFER_DEVICE") or "auto").lower()
    if choice != "auto":
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was requested but torch sees no CUDA device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class RuntimeOptions:
    """How training and prediction use the device: chosen once, by :func:`runtime_options`.

    ``autocast``: dtype of ``torch.autocast`` around forward passes and losses (None: off; parameters,
    optimiser states, priors and the Bayesian model average stay float32/float64 either way).
    ``channels_last``: model and image batches in NHWC memory format (faster convolutions on tensor cores).
    ``num_workers`` / ``pin_memory``: of the ``DataLoader`` of datasets that decode images from disk.
    """

    autocast: torch.dtype | None = None
    channels_last: bool = False
    num_workers: int = 0
    pin_memory: bool = False

    def autocast_context(self, device: torch.device):
        """``torch.autocast`` for ``device`` with this dtype, or a no-op context when off."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def _available_cpus() -> int:
    slurm = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    if slurm and slurm.isdigit():
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def runtime_options(
    device: torch.device | str,
    *,
    autocast: str | None = "auto",
    channels_last: bool | None = None,
    num_workers: int | None = None,
) -> RuntimeOptions:
    """The runtime options for ``device``; every argument left at its default is chosen automatically.

    On a CUDA device: bf16 autocast where the GPU supports bf16, channels-last, pinned memory and one
    data-loader worker per CPU of the job but one (at most 16; ``SLURM_CPUS_PER_TASK`` counts). On anything
    else all of it is off, so CPU runs are exactly the plain float32 code path (and reproducible).
    ``autocast`` may be ``"auto"``, ``"bf16"`` or ``None``/``"off"``; requesting bf16 explicitly
    also works on the CPU, which is how the tests run that code path. The environment variable
    ``BAYES_TRANSFER_AUTOCAST`` (``off``, ``bf16``) overrides ``"auto"``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if autocast == "auto":
        autocast = os.environ.get("BAYES_TRANSFER_AUTOCAST", "auto").lower()
    if autocast == "auto":
        # bf16 needs no loss scaling (fp16 would, which the SG-MCMC noise, scaled by the lr, does not allow):
        # on GPUs without bf16 (before Ampere) training stays float32
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    elif autocast in (None, "off", "none", "false"):
        dtype = None
    elif autocast in ("bf16", "bfloat16"):
        dtype = torch.bfloat16
    else:
        raise ValueError(f"autocast must be 'auto', 'bf16' or 'off', got {autocast!r}")
    if num_workers is None:
        num_workers = min(16, max(_available_cpus() - 1, 0)) if cuda else 0
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return RuntimeOptions(
        autocast=dtype,
        channels_last=cuda if channels_last is None else bool(channels_last),
        num_workers=int(num_workers),
        pin_memory=cuda,
    )


def run_eagerly() -> list[str]:
    """Declare that this process runs torch eagerly (a stage job: no ``torch.compile``), so that the first
    call of an optimiser method does not import ``torch._dynamo``.

    ``torch.optim.Optimizer`` wraps ``zero_grad``, ``add_param_group``, ``state_dict`` and ``load_state_dict``
    in ``torch._disable_dynamo``, which imports the compiler stack on its first call (about 1-1.5 s of every
    training job here; ``benchmarks/startup.py``) only to mark the method as not to be traced. Without a
    compiler in the process there is nothing to mark, so each wrapper is given the plain method as its cached
    "disabled" version. Numbers do not change (the wrapper calls the same function either way). Returns the
    names of the methods so marked (empty where this torch wraps them differently: then nothing is changed).
    Not for library users who compile optimiser code in the same process.

    The ``step`` of torch's own optimisers (``torch.optim.SGD``, ``Adam``, ...) is wrapped in
    ``_use_grad_for_differentiable``, which imports ``torch._dynamo`` on *every* call to insert graph breaks
    (no-ops in eager mode) around ``torch.set_grad_enabled(defaults["differentiable"])``; that wrapper is
    replaced by the same grad mode without the import (marked ``"<Class>.step"`` in the list).
    """
    import torch._compile as compile_api
    from torch.optim import optimizer as optim_module

    marker = compile_api._disable_dynamo(lambda: None).__code__  # the wrapper's code object
    marked = []
    for cls in torch.optim.Optimizer.__mro__:
        for name, method in vars(cls).items():
            if getattr(method, "__code__", None) is marker and hasattr(method, "__wrapped__"):
                setattr(method.__wrapped__, "__dynamo_disable", method.__wrapped__)
                marked.append(name)
    use_grad = optim_module._use_grad_for_differentiable(lambda self: None).__code__
    for cls in vars(torch.optim).values():
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and "step" in vars(cls):
            step = _eager_step(vars(cls)["step"], use_grad)
            if step is not None:
                cls.step = torch.optim.Optimizer.profile_hook_step(step)
                cls.step.hooked = True  # what torch.optim.Optimizer._patch_step_function checks
                _EAGER_STEPS.add(f"{cls.__name__}.step")
    return marked + sorted(_EAGER_STEPS)


#: the torch optimisers whose step run_eagerly has replaced in this process
_EAGER_STEPS: set[str] = set()


def _eager_step(step, use_grad_code):
    """The optimiser step under ``step``'s wrappers with its grad mode but without the compiler import; None
    when no ``_use_grad_for_differentiable`` wrapper is in its chain (nothing to replace)."""
    fn = step
    while getattr(fn, "__code__", None) is not use_grad_code:
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return None
    plain = fn.__wrapped__

    @functools.wraps(plain)
    def eager_step(self, *args, **kwargs):
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, *args, **kwargs)

    return eager_step
