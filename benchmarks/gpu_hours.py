"""Estimated GPU-hours of the paper-scale sweep, per experiment and stage, from a FLOP count.

    python benchmarks/gpu_hours.py                      # markdown tables for configs/paper.yaml
    python benchmarks/gpu_hours.py --tflops 70          # another sustained throughput (e.g. an H100)
    python benchmarks/gpu_hours.py --prior-source swag  # priors learned by SWAG on ImageNet, not imported
    python benchmarks/gpu_hours.py --json               # machine-readable

No GPU was available to measure step times, so the estimate is arithmetic, with every assumption stated:

* Forward pass of one 224 x 224 image: ResNet-50 4.1 GMAC = 8.2 GFLOP, ResNet-101 7.8 GMAC = 15.7 GFLOP,
  ResNet-18 1.8 GMAC = 3.6 GFLOP (the usual counts, e.g. torchvision's model cards), scaling with
  (image_size / 224)^2. A training step costs 3 forward passes per image (backward ~ 2 x forward).
* Sustained throughput (``--tflops``, default 35): ResNet training in bf16 autocast with channels-last in
  PyTorch eager mode on one A100 sustains roughly 1,400 images/s (~35 TFLOP/s, about 11 % of the bf16 peak)
  when the data loader keeps up; an H100 roughly twice that. Small batches (16 on Flowers, 32 on Pets) use the
  GPU less well, so their hours are lower bounds.
* The learned prior's cost per step (a few GFLOP for d = 25M and rank 10) and data loading are ignored.
* Evaluations: every Bayesian-model-average sample and every final model is evaluated on the test sets
  (CIFAR 10,000; CIFAR-10.1 2,000; Flowers-102 6,149; Pets 3,669) or, when tuning, on the held-out part.

The sweep is read exactly as the workflow reads it (bayes_transfer.config.experiments), so the table follows the config.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bayes_transfer.inference.methods import METHODS  # noqa: E402
from bayes_transfer.config.experiments import merged, sweep_experiments  # noqa: E402

FORWARD_GFLOP_224 = {"resnet18": 3.6, "resnet50": 8.2, "resnet101": 15.7}
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "flowers102": 6_149, "oxford_pets": 3_669}
SHIFTED_SIZES = {"cifar10.1": 2_000}
STAGES = ("pretrain", "prior", "tune", "fit")


def load_config(path: Path) -> dict:
    """The config as Snakemake sees it: the embedded default config.yaml updated by ``path``."""
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return merged(base, yaml.safe_load(Path(path).read_text()))


def _fwd(cfg: dict) -> float:
    arch = cfg["model"]["arch"]
    if arch not in FORWARD_GFLOP_224:
        raise ValueError(f"no FLOP count for model.arch {arch!r}; known: {sorted(FORWARD_GFLOP_224)}")
    return FORWARD_GFLOP_224[arch] * 1e9 * (cfg["data"]["image_size"] / 224) ** 2


def _fit_flop(method: str, hp: dict, fwd: float, eval_images: int) -> float:
    """One run of ``method``: its training steps and its evaluations."""
    spec = METHODS[method]
    samples = hp["cycles"] * hp["samples_per_cycle"]
    train = 3 * fwd * hp["batch_size"] * hp["steps"]
    if spec.ensemble:
        members = hp.get("ensemble_size") or samples
        return members * (train + fwd * eval_images)
    return train + fwd * eval_images * (samples if spec.bayesian else 1)


def experiment_flop(cfg: dict) -> dict[str, dict]:
    """Stage -> {"flop": total, "jobs": number of jobs, "max_job_flop": the largest job} for one experiment."""
    fwd = _fwd(cfg)
    hp = cfg["train"]
    grids, inherit = cfg["tuning"]["grids"], cfg["tuning"]["inherit"]
    holdout = cfg["tuning"]["holdout_fraction"]
    data = cfg["data"]
    test_images = TEST_SIZES[data["dataset"]] + SHIFTED_SIZES.get(data.get("shifted_test"), 0)
    out = {s: {"flop": 0.0, "jobs": 0, "max_job_flop": 0.0} for s in STAGES}

    def add(stage, flop):
        out[stage]["flop"] += flop
        out[stage]["jobs"] += 1
        out[stage]["max_job_flop"] = max(out[stage]["max_job_flop"], flop)

    for pretraining in cfg["pretrainings"]:
        add("pretrain", 0.0)  # conversion of a downloaded checkpoint
        if cfg["prior"]["source"] == "swag":
            sw = cfg["swag"]
            views = 2 if pretraining == "simclr" else 1  # SimCLR's loss passes two views of each image
            add("prior", 3 * fwd * views * sw["batch_size"] * sw["cycles"] * sw["steps_per_cycle"])
        else:
            add("prior", 0.0)  # import of the released prior
        tuned = set()
        for method in cfg["methods"]:
            source = inherit.get(method, method)
            if grids.get(source) and source not in tuned:
                tuned.add(source)
                grid = grids[source]
                points = [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
                job = 0.0
                for n in cfg["sizes"]:
                    n_val = max(1, round(holdout * n))
                    job += sum(_fit_flop(source, hp | p, fwd, n_val) for p in points)
                add("tune", job)
            for _n in cfg["sizes"]:
                add("fit", len(cfg["seeds"]) * _fit_flop(method, hp, fwd, test_images))
    return out


def sweep_table(config: dict, tflops: float) -> dict:
    experiments = {"main (" + f"{config['data']['dataset']}_{config['model']['arch']})": config}
    experiments |= sweep_experiments(config)
    rows = {}
    for name, cfg in experiments.items():
        flop = experiment_flop(cfg)
        rows[name] = {
            stage: {"gpu_hours": v["flop"] / (tflops * 1e12) / 3600, "jobs": v["jobs"],
                    "max_job_gpu_hours": v["max_job_flop"] / (tflops * 1e12) / 3600}
            for stage, v in flop.items()
        }
    return rows


def markdown(rows: dict, tflops: float) -> str:
    lines = [f"GPU-hours at a sustained {tflops:g} TFLOP/s (bf16; see benchmarks/gpu_hours.py for the assumptions)",
             "", "| experiment | " + " | ".join(STAGES) + " | total |", "|---" * (len(STAGES) + 2) + "|"]
    totals = dict.fromkeys(STAGES, 0.0)
    for name, stages in rows.items():
        cells = []
        for s in STAGES:
            totals[s] += stages[s]["gpu_hours"]
            cells.append(f"{stages[s]['gpu_hours']:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(v['gpu_hours'] for v in stages.values()):,.0f} |")
    lines.append("| **sweep** | " + " | ".join(f"**{totals[s]:,.0f}**" for s in STAGES)
                 + f" | **{sum(totals.values()):,.0f}** |")
    lines += ["", "| stage | jobs | largest job (GPU-hours) |", "|---|---|---|"]
    for s in STAGES:
        jobs = sum(r[s]["jobs"] for r in rows.values())
        largest = max(r[s]["max_job_gpu_hours"] for r in rows.values())
        lines.append(f"| {s} | {jobs} | {largest:,.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    parser.add_argument("--tflops", type=float, default=35.0, help="sustained training throughput per GPU")
    parser.add_argument("--prior-source", choices=["swag", "priorbox"], default=None,
                        help="price the priors as learned here (swag) or imported (priorbox); default: the config's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    config = load_config(Path(args.config))
    if args.prior_source:
        config = merged(config, {"prior": {"source": args.prior_source}})
    rows = sweep_table(config, args.tflops)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows, args.tflops))


if __name__ == "__main__":
    main()
