"""Make the controls' task and network known to the library's stages for the duration of a ``with`` block.

The stages find a dataset through :func:`bayes_transfer.stages.task.load_task` and a network through
:func:`bayes_transfer.models.resnets.build_model`; neither knows the controls yet. Inside :func:`registered` both
names, in every module that imported them, are wrapped so that ``data.dataset: control_positive |
control_negative`` and ``model.arch: control_linear`` resolve to :mod:`bayes_transfer.controls` and every other
name goes to the original function. Once the two functions know the controls themselves (the two-line change
docs/controls.md gives for the workflow wiring), :func:`registered` sees that and changes nothing.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

from bayes_transfer.controls.model import ARCH, build_control_model
from bayes_transfer.controls.task import DATASETS, control_task

__all__ = ["registered", "LOAD_TASK_USERS", "BUILD_MODEL_USERS"]

#: modules that call ``load_task`` / ``build_model`` through a name of their own (imported at module level or,
#: for resnets, looked up there at call time by the stages' function-level imports)
LOAD_TASK_USERS = ("bayes_transfer.stages.task", "bayes_transfer.stages.source", "bayes_transfer.stages.experiment",
                   "bayes_transfer.stages.tuning")
BUILD_MODEL_USERS = ("bayes_transfer.models.resnets", "bayes_transfer.objectives.pretrain",
                     "bayes_transfer.inference.methods")


def _modules(names: tuple[str, ...]) -> list:
    """The modules of ``names`` that this checkout has (a module it lacks cannot call the function)."""
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError:
            continue
    return out


def _knows(fn, name, *args) -> bool:
    try:
        fn(name, *args)
        return True
    except Exception:  # noqa: BLE001 - any refusal means the name is not registered
        return False


@contextmanager
def registered() -> Iterator[None]:
    """Within the block the stages load the control datasets and build the control network."""
    from bayes_transfer.models import resnets
    from bayes_transfer.stages import task as task_module

    original_load, original_build = task_module.load_task, resnets.build_model
    swaps: list[tuple[object, str, object]] = []
    if not _knows(original_build, ARCH, 2):
        def build_model(arch, num_classes, **kwargs):
            return build_control_model(num_classes, **kwargs) if arch == ARCH else original_build(arch, num_classes,
                                                                                                  **kwargs)
        swaps += [(m, "build_model", build_model) for m in _modules(BUILD_MODEL_USERS)]
    if not _knows(lambda name: original_load({"dataset": name}), DATASETS[0]):
        def load_task(data_cfg):
            return control_task(data_cfg) if data_cfg.get("dataset") in DATASETS else original_load(data_cfg)
        swaps += [(m, "load_task", load_task) for m in _modules(LOAD_TASK_USERS)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in swaps]
    try:
        for mod, name, new in swaps:
            setattr(mod, name, new)
        yield
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)
