"""GPU-hours and wall-clock time of the paper-scale sweep, per stage and per job class, for planning a cluster run.

    python benchmarks/gpu_hours.py                                # paper.yaml and paper_budget.yaml, 100 GPUs
    python benchmarks/gpu_hours.py --gpus 8                       # wall-clock time on 8 GPUs
    python benchmarks/gpu_hours.py --config configs/paper.yaml --config my.yaml    # several configs
    python benchmarks/gpu_hours.py --config configs/paper.yaml,configs/paper_budget.yaml   # one read over another
    python benchmarks/gpu_hours.py --calibration benchmarks/calibration.json      # measured step times
    python benchmarks/gpu_hours.py --tflops 70                    # FLOP estimate at another throughput
    python benchmarks/gpu_hours.py --prior-source swag            # priors learned by SWAG on ImageNet
    python benchmarks/gpu_hours.py --json                         # machine-readable

Every job the workflow would submit is listed with its GPU time (the config is read exactly as the workflow
reads it, bayes_transfer.config.experiments, including workflow.seeds_per_job, sizes_per_job, workflow.tune_split and
points_per_job, and tuning.strategy: successive halving's rungs are priced at their steps), then summed per stage
and per job class (the Snakemake rule: ``fit``, ``cifar100_resnet50_tune_point``, ...). Wall-clock time on K GPUs
(``--gpus``): the jobs of each stage are placed longest first on the least loaded GPU (a greedy list schedule; the best such
schedule on at most K GPUs, so more GPUs are never slower), and the stages run one after another (pretrain,
prior, tune, fit: each needs the one before; then ablation, segmentation). The Fig. 3 ablations (stage
``ablation``: rules ablation_rank, ablation_lambda, landscape, and Fig. 3c's tune and fit jobs) and segmentation
(stage ``segmentation``: segment_pretrain, segment_prior, segment) are priced in benchmarks/cost_ablations.py,
which gives their counts and DeepLabv3+'s FLOPs. The rank and lambda ablations read the tuning at
ablations.n_train, so they come after tune; they, the landscape and segmentation (which needs only checkpoints
and priors) could run beside fit, so summing them after it makes the wall-clock an upper bound. Within a stage,
jobs that need others of the same stage run in phases, their makespans added (Fig. 3c: tuning, then fits;
segment_pretrain, segment_prior, segment); the rungs of successive halving are not phased.

Time of a training step, per (model.arch, data.image_size, batch size):

* **Measured** where the calibration file (``--calibration``, default benchmarks/calibration.json when it exists;
  format: benchmarks/calibration.example.json) has an entry: seconds per training step (forward, backward,
  optimiser step) on one GPU. The forward pass of one evaluated image is taken as a third of the step time per
  image (backward ~ 2 x forward).
* **Else the FLOP estimate**: a forward pass of one 224 x 224 image costs ResNet-50 4.1 GMAC = 8.2 GFLOP,
  ResNet-101 7.8 GMAC = 15.7 GFLOP, ResNet-18 1.8 GMAC = 3.6 GFLOP (the usual counts, e.g. torchvision's model
  cards), scaling with (image_size / 224)^2; a training step costs 3 forward passes per image; sustained
  throughput ``--tflops`` (default 35: ResNet training in bf16 autocast, channels-last, eager PyTorch on one A100,
  ~1,400 images/s, ~11 % of the bf16 peak, when the data loader keeps up; an H100 roughly twice that). Small
  batches (16 on Flowers, 32 on Pets) use the GPU less well, so their hours are lower bounds.

Either way the learned prior's cost per step (a few GFLOP for d = 25M and rank 10), data loading and job
start-up are ignored. Evaluations: every Bayesian-model-average sample and every final model is evaluated on the
test sets (CIFAR 10,000; CIFAR-10.1 2,000; Flowers-102 6,149; Pets 3,669) or, when tuning, on the held-out part.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from bayes_transfer.config.experiments import merged, sweep_experiments
from bayes_transfer.config.schema import prepare_config
from bayes_transfer.inference.methods import METHODS
from bayes_transfer.stages import halving

import cost_ablations  # beside this file (the script's folder is on sys.path; tests: pytest's pythonpath)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CALIBRATION = ROOT / "benchmarks" / "calibration.json"
FORWARD_GFLOP_224 = {"resnet18": 3.6, "resnet50": 8.2, "resnet101": 15.7}
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "flowers102": 6_149, "oxford_pets": 3_669}
SHIFTED_SIZES = {"cifar10.1": 2_000}
STAGES = ("pretrain", "prior", "tune", "fit", "ablation", "segmentation")
COLUMNS = ("jobs", "GPU-hours", "largest job (GPU-h)", "wall on K GPUs (h)")


#: the configs priced by default: the paper's protocol, and the budget config read over it
DEFAULT_CONFIGS = ["configs/paper.yaml", "configs/paper.yaml,configs/paper_budget.yaml"]


def load_config(path: Path | str) -> dict:
    """The config as Snakemake sees it: the embedded default config.yaml updated by ``path``, prepared
    (validated, defaults filled in) like the workflow's. ``path`` may list several files separated by commas,
    read in turn as ``--configfile a.yaml b.yaml`` does (e.g. configs/paper.yaml,configs/paper_budget.yaml);
    relative paths are taken from the repository root when they do not exist from here."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for part in str(path).split(","):
        file = Path(part) if Path(part).exists() else ROOT / part
        cfg = merged(cfg, yaml.safe_load(file.read_text()))
    return prepare_config(cfg)


class StepTimes:
    """Seconds per training step and per evaluated image, measured (calibration file) or from the FLOP count."""

    def __init__(self, tflops: float = 35.0, calibration: dict | None = None, source: str = ""):
        self.tflops = tflops
        self.measured: dict[tuple[str, int, int], float] = {}
        self.source = source
        self.used: set[str] = set()  # "measured" / "FLOP estimate": which kinds the priced jobs used
        for i, entry in enumerate((calibration or {}).get("step_seconds", [])):
            try:
                key = (str(entry["arch"]), int(entry["image_size"]), int(entry["batch_size"]))
                seconds = float(entry["seconds"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{source}: step_seconds[{i}] needs arch, image_size, batch_size and seconds "
                                 f"(a number > 0), got {entry!r}") from err
            if not seconds > 0:
                raise ValueError(f"{source}: step_seconds[{i}].seconds must be > 0, got {seconds!r}")
            self.measured[key] = seconds

    @classmethod
    def from_file(cls, path: Path | None, tflops: float) -> "StepTimes":
        if path is None or not Path(path).exists():
            return cls(tflops)
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from err
        if not isinstance(data, dict) or not isinstance(data.get("step_seconds"), list):
            raise ValueError(f"{path}: expected a JSON object with a list 'step_seconds', see "
                             "benchmarks/calibration.example.json")
        return cls(tflops, data, str(path))

    def _forward_flop(self, arch: str, image_size: int) -> float:
        if arch not in FORWARD_GFLOP_224:
            raise ValueError(f"no FLOP count for model.arch {arch!r}; known: {sorted(FORWARD_GFLOP_224)}")
        return FORWARD_GFLOP_224[arch] * 1e9 * (image_size / 224) ** 2

    def step(self, arch: str, image_size: int, batch: int) -> float:
        """Seconds of one training step of ``batch`` images."""
        key = (arch, image_size, batch)
        if key in self.measured:
            self.used.add("measured")
            return self.measured[key]
        self.used.add("FLOP estimate")
        return 3 * self._forward_flop(arch, image_size) * batch / (self.tflops * 1e12)

    def image_forward(self, arch: str, image_size: int, batch: int) -> float:
        """Seconds of the forward pass of one evaluated image."""
        return self.step(arch, image_size, batch) / (3 * batch)


@dataclass(frozen=True)
class Job:
    experiment: str
    job_class: str  # the Snakemake rule
    stage: str
    seconds: float
    phase: int = 0  # jobs of a stage that need others of it come in a later phase


def _run_seconds(method: str, hp: dict, t: StepTimes, arch: str, size: int, eval_images: int) -> float:
    """One run of ``method``: its training steps and its evaluations."""
    spec = METHODS[method]
    samples = hp["cycles"] * hp["samples_per_cycle"]
    batch = hp["batch_size"]
    train = hp["steps"] * t.step(arch, size, batch)
    evaluate = eval_images * t.image_forward(arch, size, batch)
    if spec.ensemble:
        members = hp.get("ensemble_size") or samples
        return members * (train + evaluate)
    return train + evaluate * (samples if spec.bayesian else 1)


def tune_jobs(cfg: dict, method: str, t: StepTimes, arch: str, size: int, holdout: float) -> list[tuple[str, float]]:
    """(rule, GPU seconds) of the tuning jobs of one method (workflow.tune_split, tuning.strategy).

    Each rung of successive halving (bayes_transfer.stages.halving.plan; the grid: one rung of every point at
    train.steps) fits its points for the rung's steps; a grid point's cost does not depend on which point it is
    (the grids' keys change no step count), so a rung costs its number of points times the mean point. method: one
    job for every size; size: one per size; point: one ``tune_point`` job per ``workflow.points_per_job`` slots of
    a rung, plus the selection (and ranking) jobs, which fit nothing (local rules).
    """
    hp, grid = cfg["train"], cfg["tuning"]["grids"][method]
    points = [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
    schedule = halving.plan(len(points), hp["steps"], cfg["tuning"])
    split = cfg["workflow"].get("tune_split", "method")
    jobs = []
    for n in cfg["sizes"]:
        evaluated = max(1, round(holdout * n))
        rungs = [[_run_seconds(method, hp | p | {"steps": steps}, t, arch, size, evaluated) for p in points]
                 for steps, _k in schedule]
        slots = [(sum(c) / len(c), k) for c, (_s, k) in zip(rungs, schedule)]
        if split == "point":
            per_job = cfg["workflow"].get("points_per_job", 1)
            jobs += [("tune_point", mean * min(per_job, k - first)) for mean, k in slots
                     for first in range(0, k, per_job)]
            jobs += [("tune_rung", 0.0)] * (len(schedule) - 1) + [("tune", 0.0)]
        else:
            jobs.append(("tune", sum(mean * k for mean, k in slots)))
    if split == "method":
        jobs = [("tune", sum(s for _r, s in jobs))]
    return jobs


def experiment_jobs(cfg: dict, t: StepTimes, name: str = "", prefix: str = "") -> list[Job]:
    """Every job of one experiment (rules named ``prefix + stage``) with its GPU seconds."""
    arch, size = cfg["model"]["arch"], cfg["data"]["image_size"]
    hp = cfg["train"]
    grids, inherit = cfg["tuning"]["grids"], cfg["tuning"]["inherit"]
    holdout = cfg["tuning"]["holdout_fraction"]
    data = cfg["data"]
    test_images = TEST_SIZES[data["dataset"]] + SHIFTED_SIZES.get(data.get("shifted_test"), 0)
    seeds = cfg["seeds"]
    per_seed = cfg["workflow"]["seeds_per_job"] == 1  # one fit job per seed, else one for all seeds
    all_sizes = cfg["workflow"].get("sizes_per_job", 1) == "all" and not per_seed  # one fit job per method
    jobs = []

    def add(stage, seconds, rule=None):
        jobs.append(Job(name, prefix + (rule or stage), stage, seconds))

    for pretraining in cfg["pretrainings"]:
        add("pretrain", 0.0)  # conversion of a downloaded checkpoint (a CPU job)
        if cfg["prior"]["source"] == "swag":
            sw = cfg["swag"]
            views = 2 if pretraining == "simclr" else 1  # SimCLR's loss passes two views of each image
            add("prior", views * sw["cycles"] * sw["steps_per_cycle"] * t.step(arch, size, sw["batch_size"]),
                "learn_prior")
        else:
            add("prior", 0.0, "import_prior")  # import of the released prior (a local rule)
        tuned = set()
        for method in cfg["methods"]:
            source = inherit.get(method, method)
            if grids.get(source) and source not in tuned:
                tuned.add(source)
                for rule, seconds in tune_jobs(cfg, source, t, arch, size, holdout):
                    add("tune", seconds, rule)
            run = _run_seconds(method, hp, t, arch, size, test_images)
            if all_sizes:  # one job for every size and seed of the method
                add("fit", len(cfg["sizes"]) * len(seeds) * run)
                continue
            for _n in cfg["sizes"]:
                if per_seed:
                    for _seed in seeds:
                        add("fit", run)
                else:
                    add("fit", len(seeds) * run)
    return jobs


def extra_jobs(cfg: dict, t: StepTimes, name: str = "", prefix: str = "") -> list[Job]:
    """The Fig. 3 ablations and segmentation of one experiment (benchmarks/cost_ablations.py)."""
    data = cfg["data"]
    test, shifted = TEST_SIZES[data["dataset"]], SHIFTED_SIZES.get(data.get("shifted_test"), 0)
    ablation = cost_ablations.ablation_jobs(cfg, t, test, shifted, _run_seconds, experiment_jobs)
    segmentation = cost_ablations.segmentation_jobs(cfg, t)
    return ([Job(name, prefix + rule, "ablation", s, phase) for rule, s, phase in ablation]
            + [Job(name, prefix + rule, "segmentation", s, phase) for rule, s, phase in segmentation])


def sweep_jobs(config: dict, t: StepTimes) -> list[Job]:
    """Every job of the sweep: the main experiment (unprefixed rules), then each of ``sweep.experiments``."""
    config = prepare_config(config)  # idempotent; fills in what follows the lists (ablations.pretraining, ...)
    name = f"{config['data']['dataset']}_{config['model']['arch']}"
    jobs = experiment_jobs(config, t, name) + extra_jobs(config, t, name)
    for name, cfg in sweep_experiments(config).items():
        cfg = prepare_config(cfg)
        jobs += experiment_jobs(cfg, t, name, f"{name}_") + extra_jobs(cfg, t, name, f"{name}_")
    return jobs


def makespan(seconds: list[float], gpus: int) -> float:
    """Wall-clock time of the jobs on at most ``gpus`` GPUs: the best greedy schedule (longest job first onto
    the least loaded GPU) over 1..gpus GPUs, so that more GPUs are never slower."""
    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {gpus}")
    ordered = sorted(seconds, reverse=True)
    best = sum(ordered)
    for k in range(2, min(gpus, len(ordered)) + 1):
        loads = [0.0] * k
        for s in ordered:
            heapq.heapreplace(loads, loads[0] + s)
        best = min(best, max(loads))
    return best


def summarise(jobs: list[Job], gpus: int, key) -> dict[str, dict]:
    """Rows ``key(job)`` -> jobs, GPU-hours, largest job and wall-clock hours on ``gpus`` GPUs."""
    groups: dict[str, list[float]] = {}
    for job in jobs:
        groups.setdefault(key(job), []).append(job.seconds)
    return {k: {"jobs": len(v), "gpu_hours": sum(v) / 3600, "largest_job_gpu_hours": max(v) / 3600,
                "wall_hours": makespan(v, gpus) / 3600} for k, v in groups.items()}


def report(config: dict, t: StepTimes, gpus: int) -> dict:
    """The cost model of one config: per stage, per job class, and the sweep (stages one after another)."""
    jobs = sweep_jobs(config, t)
    stages = summarise(jobs, gpus, lambda j: j.stage)
    stages = {s: stages[s] for s in STAGES if s in stages}
    for s, row in stages.items():  # phases one after another
        phases = sorted({j.phase for j in jobs if j.stage == s})
        row["wall_hours"] = sum(makespan([j.seconds for j in jobs if j.stage == s and j.phase == p], gpus)
                                for p in phases) / 3600
        row["phases"] = len(phases)
    classes = summarise(jobs, gpus, lambda j: j.job_class)
    total = {"jobs": len(jobs), "gpu_hours": sum(j.seconds for j in jobs) / 3600,
             "largest_job_gpu_hours": max(j.seconds for j in jobs) / 3600,
             "wall_hours": sum(r["wall_hours"] for r in stages.values())}
    return {"gpus": gpus, "step_times": sorted(t.used), "stages": stages, "classes": classes, "sweep": total}


def _row(name: str, r: dict) -> str:
    return (f"| {name} | {r['jobs']:,} | {r['gpu_hours']:,.1f} | {r['largest_job_gpu_hours']:,.2f} | "
            f"{r['wall_hours']:,.1f} |")


def markdown(name: str, rep: dict, t: StepTimes) -> str:
    how = " and ".join(rep["step_times"])
    if "FLOP estimate" in rep["step_times"]:
        how += f" (at a sustained {t.tflops:g} TFLOP/s)"
    if "measured" in rep["step_times"]:
        how += f" (measured step times: {t.source})"
    header = ["| {} | " + " | ".join(COLUMNS).replace("K GPUs", f"{rep['gpus']} GPUs") + " |",
              "|---" * (len(COLUMNS) + 1) + "|"]
    lines = [f"### {name}", "", f"Step times: {how}; see benchmarks/gpu_hours.py for the assumptions.", ""]
    lines += [header[0].format("stage"), header[1]]
    lines += [_row(s, r) for s, r in rep["stages"].items()]
    lines.append(_row("**sweep** (stages in turn)", rep["sweep"]))
    lines += ["", header[0].format("job class (rule)"), header[1]]
    lines += [_row(c, r) for c, r in rep["classes"].items() if r["gpu_hours"] > 0]
    lines += ["", "Job classes without GPU time (checkpoint conversions, prior imports) are left out of the second "
              "table; they are in --json."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=None,
                        help="a config file (read over config.yaml, as --configfile does), or several separated "
                             "by commas (read in turn); repeat for several reports; default configs/paper.yaml and "
                             "configs/paper.yaml,configs/paper_budget.yaml")
    parser.add_argument("--gpus", type=int, default=100, help="K, GPUs for the wall-clock column")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION,
                        help="measured step times (JSON, see benchmarks/calibration.example.json); used when the "
                             "file exists, default benchmarks/calibration.json")
    parser.add_argument("--tflops", type=float, default=35.0, help="sustained training throughput per GPU")
    parser.add_argument("--prior-source", choices=["swag", "priorbox"], default=None,
                        help="price the priors as learned here (swag) or imported (priorbox); default: the config's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be >= 1, got {args.gpus}")
    out = {}
    for path in args.config or DEFAULT_CONFIGS:
        config = load_config(path)
        if args.prior_source:
            config = prepare_config(merged(config, {"prior": {"source": args.prior_source}}))
        t = StepTimes.from_file(args.calibration, args.tflops)
        out[path] = (report(config, t, args.gpus), t)
    if args.json:
        print(json.dumps({p: rep for p, (rep, _t) in out.items()}, indent=1))
    else:
        print("\n\n".join(markdown(p, rep, t) for p, (rep, t) in out.items()))


if __name__ == "__main__":
    main()
