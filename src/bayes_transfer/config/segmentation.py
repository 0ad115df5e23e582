"""The checks of the ``segmentation`` section beyond its JSON schema (run when the Snakefile is parsed)."""

from __future__ import annotations

from typing import Mapping

from bayes_transfer.inference.samplers import CyclicalSchedule
from bayes_transfer.inference.segmentation import SegmentationHyper
from bayes_transfer.models.deeplab import SMP_ARCHS


def segmentation_config_problems(config: Mapping) -> list[str]:
    """Problems of a config's ``segmentation`` section that its schema cannot express (each names its key).

    Used by :func:`bayes_transfer.config.check.check_config` when the Snakefile is parsed.
    """
    seg = config.get("segmentation") or {}
    if not seg.get("enabled", True):
        return []
    problems: list[str] = []
    from bayes_transfer.data.registry import is_embedded

    paper_scale = not is_embedded((config.get("data") or {}).get("dataset", "digits"))
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
        d = SegmentationHyper()
        try:
            CyclicalSchedule(int(train.get("steps", d.steps)), int(train.get("cycles", d.cycles)),
                             float(train.get("exploration_fraction", d.exploration_fraction)),
                             int(train.get("samples_per_cycle", d.samples_per_cycle)))
        except ValueError as err:
            problems.append(f"segmentation.train (steps, cycles, exploration_fraction, samples_per_cycle): {err}")
    rank = train.get("prior_rank")
    if rank is not None and learned and not paper_scale and rank > (config.get("swag") or {}).get("max_rank", 20):
        problems.append(f"segmentation.train.prior_rank: {rank} is above swag.max_rank")
    return problems
