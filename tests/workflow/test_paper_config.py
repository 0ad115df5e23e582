"""configs/paper.yaml: valid under the same schema, the paper's values, and a fast dry run of the whole sweep."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bayes_transfer.config.experiments import merged, sweep_experiments
from bayes_transfer.config.schema import prepare_config

ROOT = Path(__file__).resolve().parents[2]

#: the paper's data sizes (appendix B.1; Tables 2-13)
PAPER_SIZES = {
    "cifar10": [10, 100, 1000, 10000, 50000],
    "cifar100": [10, 100, 1000, 10000, 50000],
    "flowers102": [5, 10, 50, 100, 500, 1000],
    "oxford_pets": [5, 10, 50, 100, 500, 1000, 3000],
}
PAPER_BATCH = {"cifar10": 128, "cifar100": 128, "flowers102": 16, "oxford_pets": 32}


def _config() -> dict:
    """configs/paper.yaml as Snakemake sees it (config.yaml updated by it)."""
    return merged(yaml.safe_load((ROOT / "config.yaml").read_text()),
                  yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text()))


def _experiments() -> dict[str, dict]:
    """Every experiment's config as the workflow prepares it: the main one first (its settings that follow the
    lists filled in), then each experiment derived from it."""
    config = prepare_config(_config())
    main = f"{config['data']['dataset']}_{config['model']['arch']}"
    return {main: config} | {name: prepare_config(cfg) for name, cfg in sweep_experiments(config).items()}


def test_every_experiment_is_valid_under_the_schema_and_checks():
    experiments = _experiments()  # prepare_config raises on any problem
    assert len(experiments) == 8
    for name, cfg in experiments.items():
        assert name == f"{cfg['data']['dataset']}_{cfg['model']['arch']}"


def test_the_paper_values():
    experiments = _experiments()
    combos = {(c["data"]["dataset"], c["model"]["arch"], p) for c in experiments.values() for p in c["pretrainings"]}
    assert combos == {(d, "resnet50", p) for d in PAPER_SIZES for p in ("supervised", "simclr")} | {
        (d, "resnet101", "supervised") for d in PAPER_SIZES}
    for cfg in experiments.values():
        dataset = cfg["data"]["dataset"]
        assert cfg["sizes"] == PAPER_SIZES[dataset]
        assert cfg["train"]["batch_size"] == PAPER_BATCH[dataset]
        assert cfg["train"]["steps"] == 30000 and cfg["train"]["momentum"] == 0.9
        assert cfg["seeds"] == [0, 1, 2, 3, 4] and cfg["data"]["image_size"] == 224
        assert cfg["data"]["shifted_test"] == ("cifar10.1" if dataset == "cifar10" else None)
        assert cfg["train"]["cycles"] * cfg["train"]["samples_per_cycle"] == 10  # a BMA of 10 samples
        assert set(cfg["methods"]) == {"sgd_transfer", "sgd_learned_prior", "bnn_learned_prior",
                                       "bnn_isotropic_prior", "sgd_ensemble"}
        grids = cfg["tuning"]["grids"]
        assert np.allclose(grids["sgd_transfer"]["lr"], np.logspace(-4, -1, 7), rtol=1e-3)
        assert grids["sgd_transfer"]["weight_decay"][0] == 0.0
        assert np.allclose(grids["sgd_transfer"]["weight_decay"][1:], np.logspace(-6, -2, 7), rtol=1e-3)
        for method in ("bnn_learned_prior", "bnn_isotropic_prior"):
            assert np.allclose(grids[method]["temperature"], np.logspace(0, -8, 8), rtol=1e-3)
        # only the main experiment runs the Fig. 3 ablations, with the SimCLR prior at n = 1000 (followed lists)
        if cfg is experiments["cifar10_resnet50"]:
            assert cfg["ablations"]["pretraining"] == "simclr" and cfg["ablations"]["n_train"] == 1000
        else:
            assert not cfg["ablations"]["rank"]["methods"] and not cfg["ablations"]["landscape"]["enabled"]


def _points(grid: dict) -> int:
    return int(np.prod([len(v) for v in grid.values()]))


def _job_counts(text: str) -> dict[str, int]:
    block = text[text.index("Job stats:"):]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def test_dry_run_lists_the_whole_sweep_fast_without_data(workdir):
    assert not (workdir / "data").exists()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "configs/paper.yaml", "--quiet",
                          "rules"], cwd=workdir, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert wall <= 30, f"the dry run took {wall:.1f} s"
    counts = _job_counts(out.stdout + out.stderr)
    for name, cfg in _experiments().items():
        prefix = "" if name == "cifar10_resnet50" else f"{name}_"
        pretrainings, methods, sizes = cfg["pretrainings"], cfg["methods"], cfg["sizes"]
        inherit, grids = cfg["tuning"]["inherit"], cfg["tuning"]["grids"]
        tuned = {inherit.get(m, m) for m in methods if grids.get(inherit.get(m, m))}
        # Fig. 3c (main experiment only): its methods at every size, with one pre-training's prior
        fig3c = cfg["ablations"]["learned_mean"]["methods"] if not prefix else []
        fig3c_tuned = {inherit.get(m, m) for m in fig3c if grids.get(inherit.get(m, m))}
        # one fit job per seed (workflow.seeds_per_job: 1)
        assert cfg["workflow"]["seeds_per_job"] == 1
        cells = len(pretrainings) * len(methods) * len(sizes) + len(fig3c) * len(sizes)
        assert counts[f"{prefix}fit"] == cells * len(cfg["seeds"]), name
        # tuning (workflow.tune_split point): one job per points_per_job grid points at every size, one selection
        # job per size
        per_job = cfg["workflow"]["points_per_job"]
        assert cfg["workflow"]["tune_split"] == "point" and cfg["tuning"]["strategy"] == "grid"
        cells = [m for m in tuned for _ in pretrainings] + sorted(fig3c_tuned)
        assert counts[f"{prefix}tune"] == len(cells) * len(sizes), name
        assert counts[f"{prefix}tune_point"] == sum(-(-_points(grids[m]) // per_job) for m in cells) * len(sizes)
        assert counts[f"{prefix}prepare_data"] == 1, name
        for rule in ("fetch_weights", "pretrain", "import_prior"):
            assert counts[f"{prefix}{rule}"] == len(pretrainings), (name, rule)
    sweep_fits = sum(v for k, v in counts.items() if k.endswith("_fit"))
    # ResNet-50 (2 pre-trainings), ResNet-101, 5 seeds each
    assert sweep_fits == (2 * 5 * (5 + 6 + 7) + 5 * (5 + 5 + 6 + 7)) * 5
    # the cost model prices every job of the rules it knows as often as the dry run plans it, the Fig. 3 ablations
    # and segmentation included: one rank job per (method, rank, seed): 2 x 5 x 5, one lambda job per (method,
    # convention, lambda, seed): 2 x 2 x 10 x 5 (workflow.seeds_per_job 1), the landscape, 100 segment jobs
    # (2 datasets x (ResNet-50: 6 cells, ResNet-101: 4) x 5 seeds)
    gh = _gpu_hours()
    priced = {}
    for job in gh.sweep_jobs(prepare_config(_config()), gh.StepTimes()):
        priced[job.job_class] = priced.get(job.job_class, 0) + 1
    assert {r: counts.get(r, 0) for r in priced} == priced
    assert [priced.get(r, 0) for r in ("ablation_rank", "ablation_lambda", "landscape", "segment",
                                       "segment_pretrain", "segment_prior")] == [50, 200, 1, 100, 0, 0]
    assert not (workdir / "results").exists() and not (workdir / "data").exists()


def test_sweep_experiments_merge_and_switch_off():
    config = {"data": {"dataset": "cifar10", "root": "d"}, "sizes": [1, 2], "ablations": {"n_train": 5},
              "sweep": {"experiments": {"e": {"data": {"dataset": "cifar100"}, "sizes": [3]}}}}
    (e,) = sweep_experiments(config).values()
    assert e["data"] == {"dataset": "cifar100", "root": "d"} and e["sizes"] == [3] and "sweep" not in e
    assert e["ablations"]["n_train"] == 5 and e["ablations"]["rank"]["methods"] == []
    assert "segmentation" not in e  # only sections the config has are switched off
    assert config["data"]["dataset"] == "cifar10"  # the input is not modified
    assert sweep_experiments({"data": {}}) == {}


def test_slurm_profile_covers_every_training_rule_of_the_sweep():
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    resources, groups = profile["set-resources"], profile["groups"]
    for name in _experiments():
        prefix = "" if name == "cifar10_resnet50" else f"{name}_"
        for rule in ("learn_prior", "tune", "fit"):
            assert resources[f"{prefix}{rule}"]["gpu"] == 1, (name, rule)
            assert resources[f"{prefix}{rule}"]["runtime"] >= 60
        assert "gpu" not in resources[f"{prefix}pretrain"]  # a conversion needs no GPU
        assert groups[f"{prefix}pretrain"] == "convert"
    assert profile["group-components"]["convert"] > 1


def _requests(resources: dict) -> dict:
    """What a job asks of the scheduler: GPUs, CPUs, memory (MB), time (minutes)."""
    gpus = resources.get("gpu", 0)
    cpus = resources["cpus_per_gpu"] * gpus if "cpus_per_gpu" in resources else resources["cpus_per_task"]
    return {"gpu": gpus, "cpus": cpus, "mem_mb": resources["mem_mb"], "runtime": resources["runtime"]}


def test_cluster_generic_profile_asks_what_the_slurm_profile_asks():
    profiles = ROOT / "workflow" / "profiles"
    slurm = yaml.safe_load((profiles / "slurm" / "config.yaml").read_text())
    generic = yaml.safe_load((profiles / "cluster-generic" / "config.yaml").read_text())
    assert generic["executor"] == "cluster-generic" and generic["cluster-generic-cancel-cmd"] == "scancel"
    assert set(generic["set-resources"]) == set(slurm["set-resources"])
    for rule, res in slurm["set-resources"].items():
        assert _requests(generic["set-resources"][rule]) == _requests(res), rule
    assert _requests(generic["default-resources"]) == _requests(slurm["default-resources"])
    assert generic["groups"] == slurm["groups"] and generic["group-components"] == slurm["group-components"]
    submit = generic["cluster-generic-submit-cmd"]
    assert "sbatch --parsable" in submit
    for flag, key in (("--gpus", "gpu"), ("--cpus-per-task", "cpus_per_task"), ("--mem", "mem_mb"),
                      ("--time", "runtime")):
        assert f"{flag}={{resources.{key}}}" in submit, flag
        assert key in generic["default-resources"]  # every job has every resource the command names
    status = profiles / "cluster-generic" / generic["cluster-generic-status-cmd"]
    assert status.is_file() and os.access(status, os.X_OK)


def _fake_slurm(bin_dir: Path, squeue: str = "", scontrol: str = "", sacct: str = "", fail: str = "") -> None:
    """squeue/scontrol/sacct stand-ins printing the given text; those in ``fail`` exit 1 with Slurm's message
    for an unknown job ("invalid") or for an unreachable controller ("down")."""
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("squeue", squeue), ("scontrol", scontrol), ("sacct", sacct)):
        how = dict(part.split(":") for part in fail.split(",") if part).get(name)
        if how == "invalid":
            body = "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"
        elif how == "down":
            body = "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1"
        else:
            body = f"printf '%s' '{text}'"
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("fake, expected", [
    ({"squeue": "RUNNING\n"}, "running"),
    ({"squeue": "PENDING\n"}, "running"),
    ({"squeue": "COMPLETED\n"}, "success"),
    ({"squeue": "TIMEOUT\n"}, "failed"),
    ({"squeue": "OUT_OF_MEMORY\n"}, "failed"),
    # accounting off: sacct fails, squeue knows nothing, scontrol still has the finished job
    ({"scontrol": "JobId=7 JobName=fit-3 JobState=COMPLETED Reason=None", "fail": "sacct:down"}, "success"),
    ({"scontrol": "JobId=7 JobState=FAILED Reason=NonZeroExitCode", "fail": "squeue:invalid,sacct:down"},
     "failed"),
    # the controller forgot the job, accounting remembers it
    ({"sacct": "CANCELLED by 0\n", "fail": "squeue:invalid,scontrol:invalid"}, "failed"),
    ({"sacct": "COMPLETED\n", "fail": "squeue:invalid,scontrol:invalid"}, "success"),
    # nobody knows the job: failed (Snakemake retries it); nobody answers: still running, ask again
    ({"fail": "squeue:invalid,scontrol:invalid,sacct:invalid"}, "failed"),
    ({"fail": "squeue:down,scontrol:down,sacct:down"}, "running"),
])
def test_cluster_generic_status_command_maps_slurm_states(tmp_path, fake, expected):
    _fake_slurm(tmp_path / "bin", **fake)
    script = ROOT / "workflow" / "profiles" / "cluster-generic" / "status.py"
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = subprocess.run([sys.executable, str(script), "7;cluster"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + "\n", (out.stdout, out.stderr)


def _dry_run_jobs(workdir: Path, *args: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run plans."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=workdir, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \S+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\S+):", block)
        output = re.search(r"^\s+output: (.*)$", block, re.M)
        if rule and output:
            jobs.append((rule.group(1), output.group(1).split(", ")))
    return jobs


def test_fit_job_granularity_never_changes_the_result_files(workdir):
    """The embedded default fits every size and seed of a main (pre-training, method) in one job (the prior
    variants per size, rule fit_size); sizes_per_job 1 plans one job per size, and with seeds_per_job 1 (as
    --config strings, the way a user overrides them) one per seed, and the rank and lambda ablations one job per
    (value, seed) instead of one per method (and convention), and segmentation one per (cell, seed); all write the
    same files and leave every other job alone."""
    fit_rules = ("fit", "fit_size")
    ablation_rules = ("ablation_rank", "ablation_lambda", "segment")
    default = _dry_run_jobs(workdir)
    per_size = _dry_run_jobs(workdir, "--config", "workflow={seeds_per_job: all, sizes_per_job: 1}")
    per_seed = _dry_run_jobs(workdir, "--config", "workflow={seeds_per_job: 1}")  # sizes_per_job then moot
    cfg = prepare_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert cfg["workflow"]["seeds_per_job"] == "all" and cfg["workflow"]["sizes_per_job"] == "all"
    seeds, sizes = len(cfg["seeds"]), len(cfg["sizes"])
    merged = [outs for rule, outs in default if rule == "fit"]
    assert merged and all(len(outs) == sizes * seeds for outs in merged)
    assert all(len(outs) == seeds for rule, outs in default if rule == "fit_size")
    assert all(len(outs) == seeds for rule, outs in per_size if rule in fit_rules)
    assert all(len(outs) == 1 for rule, outs in per_seed if rule in fit_rules + ablation_rules)
    ranks = cfg["ablations"]["rank"]
    assert sum(r == "ablation_rank" for r, _o in default) == len(ranks["methods"])
    assert sum(r == "ablation_rank" for r, _o in per_seed) == len(ranks["methods"]) * len(ranks["ranks"]) * seeds
    for rules in (fit_rules, ablation_rules):
        files = [sorted(f for r, o in jobs if r in rules for f in o) for jobs in (default, per_size, per_seed)]
        assert files[0] and files[0] == files[1] == files[2], rules
    files = sorted(f for r, o in default if r in fit_rules for f in o)
    assert all(re.fullmatch(r"results/runs/\w+/\w+/n\d+/seed\d\.json", f) for f in files)
    rules = fit_rules + ablation_rules
    others = [sorted((r, sorted(o)) for r, o in jobs if r not in rules) for jobs in (default, per_size, per_seed)]
    assert others[0] == others[1] == others[2]


def _gpu_hours():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_hours", ROOT / "benchmarks" / "gpu_hours.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_gpu_hours_known_answer_and_the_paper_table():
    gh = _gpu_hours()
    cfg = {"model": {"arch": "resnet50"}, "data": {"dataset": "cifar10", "image_size": 112, "shifted_test": None},
           "pretrainings": ["supervised"], "methods": ["sgd_transfer", "bnn_isotropic_prior"], "sizes": [10],
           "seeds": [0, 1], "prior": {"source": "priorbox"}, "workflow": {"seeds_per_job": "all"},
           "train": {"steps": 100, "batch_size": 8, "cycles": 2, "samples_per_cycle": 3, "ensemble_size": 0},
           "tuning": {"grids": {"sgd_transfer": {"lr": [0.1, 0.01]}}, "inherit": {}, "holdout_fraction": 0.3}}
    t = gh.StepTimes(tflops=35.0)
    fwd = 8.2e9 / 4 / 35e12  # seconds per image forward pass: half the resolution, a quarter of the FLOPs
    train = 3 * fwd * 8 * 100
    sgd, bnn = train + fwd * 10_000, train + 6 * fwd * 10_000  # the BMA evaluates each of its 6 samples

    def by_stage(jobs):
        return {s: [j.seconds for j in jobs if j.stage == s] for s in gh.STAGES}

    stages = by_stage(gh.experiment_jobs(cfg, t))
    assert stages["tune"] == [pytest.approx(2 * (train + fwd * 3))]
    assert stages["fit"] == [pytest.approx(2 * sgd), pytest.approx(2 * bnn)]  # one job per cell: both seeds
    assert stages["prior"] == [0.0] and stages["pretrain"] == [0.0]
    per_seed = by_stage(gh.experiment_jobs(cfg | {"workflow": {"seeds_per_job": 1}}, t))
    assert per_seed["fit"] == [pytest.approx(sgd)] * 2 + [pytest.approx(bnn)] * 2
    # successive halving (2 rungs, eta 2: 2 points for 50 steps, the better one for 100), one point a job; the
    # ranking and the selection fit nothing
    sh = cfg | {"workflow": {"seeds_per_job": "all", "tune_split": "point", "points_per_job": 1},
                "tuning": cfg["tuning"] | {"strategy": "successive_halving",
                                           "successive_halving": {"rungs": 2, "eta": 2, "min_steps": None}}}
    assert gh.tune_jobs(sh, "sgd_transfer", t, "resnet50", 112, 0.3) == [
        ("tune_point", pytest.approx(train / 2 + fwd * 3))] * 2 + [
        ("tune_point", pytest.approx(train + fwd * 3)), ("tune_rung", 0.0), ("tune", 0.0)]
    # the paper sweep: every experiment, fits and tuning jobs as the dry run counts them (Fig. 3c aside)
    rep = gh.report(_config(), t, gpus=100)
    assert rep["stages"]["fit"]["jobs"] == (2 * 5 * 23 + 5 * 23) * 5  # sizes: 5 + 5 + 6 + 7; 5 seeds, one a job
    # tune_split point, 2 points a job: sgd_transfer 56, sgd_learned_prior 42, bnn_learned_prior 48 and
    # bnn_isotropic_prior 24 points -> 28 + 21 + 24 + 12 = 85 jobs per pre-training and size, and one selection
    assert rep["stages"]["tune"]["jobs"] == (85 + 4) * (2 * 23 + 23)
    assert rep["stages"]["tune"]["largest_job_gpu_hours"] < 4
    # every job of the faithful config under 24 GPU-hours
    assert rep["sweep"]["largest_job_gpu_hours"] < 24
    experiments = {j.experiment for j in gh.sweep_jobs(_config(), t)}
    assert experiments == set(_experiments())
    assert all(rep["classes"][f"{p}fit"]["gpu_hours"] > 0 for p in ["", *(f"{e}_" for e in experiments
                                                                          if e != "cifar10_resnet50")])


def test_cost_model_prices_the_ablations_and_segmentation_known_answer():
    """With 1 s per training step (calibration), a forward pass costs 1 / (3 x batch) s per image: the rank
    ablation is ranks x seeds runs of each method, the lambda ablation scales x seeds per method and convention,
    the landscape (1 + 2) directions x 5 points of (BatchNorm on n_train + the test set) per seed."""
    gh = _gpu_hours()
    t = gh.StepTimes(calibration={"step_seconds": [
        {"arch": "resnet50", "image_size": 112, "batch_size": 8, "seconds": 1.0},
        {"arch": "deeplabv3plus_resnet50", "image_size": 513, "batch_size": 4, "seconds": 2.0}]})
    landscape = {"enabled": True, "n_train": 50, "prior_directions": 1, "random_directions": 2, "points": 5,
                 "batchnorm": "recompute", "source_examples": 0}
    cfg = {"model": {"arch": "resnet50"}, "data": {"dataset": "cifar10", "image_size": 112, "shifted_test": None},
           "pretrainings": ["supervised", "simclr"], "methods": ["sgd_learned_prior", "bnn_learned_prior"],
           "sizes": [10], "seeds": [0, 1], "prior": {"source": "priorbox"}, "workflow": {"seeds_per_job": 1},
           "train": {"steps": 100, "batch_size": 8, "cycles": 2, "samples_per_cycle": 3, "ensemble_size": 0},
           "tuning": {"grids": {}, "inherit": {}, "holdout_fraction": 0.2},
           "ablations": {"pretraining": "simclr", "n_train": 10,
                         "rank": {"methods": ["sgd_learned_prior", "bnn_learned_prior"], "ranks": [0, 1, 2]},
                         "lambda": {"methods": ["sgd_learned_prior"], "prior_scales": [1.0, 10.0],
                                    "conventions": ["exact", "priorbox"]},
                         "learned_mean": {"methods": []}, "landscape": landscape},
           "segmentation": {"enabled": False}}
    image = 1 / (3 * 8)
    sgd, bnn = 100 + 10_000 * image, 100 + 6 * 10_000 * image  # the BMA evaluates each of its 6 samples
    def priced_jobs(config):
        out = {}
        for job in gh.extra_jobs(config, t):
            out.setdefault(job.job_class, []).append(job.seconds)
        return out

    # one job per method (and convention) for every value and seed ...
    jobs = priced_jobs(cfg | {"workflow": {"seeds_per_job": "all"}})
    assert jobs["ablation_rank"] == [pytest.approx(3 * 2 * sgd), pytest.approx(3 * 2 * bnn)]
    assert jobs["ablation_lambda"] == [pytest.approx(2 * 2 * sgd)] * 2
    # ... or, with one seed a job (paper scale), one per (value, seed): ranks 3 x seeds 2 per method; scales 2 x
    # seeds 2 per convention
    jobs = priced_jobs(cfg)
    assert jobs["ablation_rank"] == [pytest.approx(sgd)] * 6 + [pytest.approx(bnn)] * 6
    assert jobs["ablation_lambda"] == [pytest.approx(sgd)] * 8
    assert jobs["landscape"] == [pytest.approx(2 * (50 + 50 + 3 * 5 * (50 + 10_000)) * image)]
    assert set(jobs) == {"ablation_rank", "ablation_lambda", "landscape"}
    # segmentation: VOC's 1,449 val images of 512 x 384 (padded) against 528 x 528 crops; SGD evaluates once,
    # SGLD each of its 5 samples; one job per cell: sgd_transfer (supervised), bnn_learned_prior x 2 priors
    seg = {"enabled": True, "datasets": ["voc2012"], "backbones": ["resnet50"], "seeds": [0, 1],
           "methods": ["sgd_transfer", "bnn_learned_prior"],
           "resnet50": {"arch": None, "pretrainings": ["supervised", "simclr"]}, "voc2012": {"crop_size": 513},
           "train": {"steps": 10, "batch_size": 4, "cycles": 1, "samples_per_cycle": 5}}
    seg_image = 2.0 / (3 * 4) * 512 * 384 / 528 ** 2
    off = {"rank": {"methods": []}, "lambda": {"methods": []}, "learned_mean": {"methods": []},
           "landscape": {"enabled": False}}
    one_job = {"workflow": {"seeds_per_job": "all"}}
    priced = gh.extra_jobs(cfg | {"segmentation": seg, "ablations": off} | one_job, t)
    assert [(j.job_class, j.stage) for j in priced] == [("segment", "segmentation")] * 3
    assert [j.seconds for j in priced] == [pytest.approx(2 * (10 * 2.0 + k * 1449 * seg_image)) for k in (1, 5, 5)]
    # one job per (cell, seed) with one seed a job
    priced = gh.extra_jobs(cfg | {"segmentation": seg, "ablations": off}, t)
    assert [j.seconds for j in priced] == [pytest.approx(10 * 2.0 + k * 1449 * seg_image) for k in (1, 1, 5, 5, 5, 5)]
    # the FLOP estimate: 62.7 GMAC per 513 x 513 forward pass, 3 passes a step, at 35 TFLOP/s
    step = gh.cost_ablations.seg_step(gh.StepTimes(tflops=35.0), "resnet50", 513, 16)
    assert step == pytest.approx(3 * 2 * 62.7e9 * (528 / 513) ** 2 * 16 / 35e12)
    # ablations switched off and segmentation disabled price nothing
    assert gh.extra_jobs(cfg | {"ablations": off}, t) == []


def _budget_config() -> dict:
    """configs/paper_budget.yaml read over configs/paper.yaml (as --configfile configs/paper.yaml
    configs/paper_budget.yaml reads them)."""
    return merged(_config(), yaml.safe_load((ROOT / "configs" / "paper_budget.yaml").read_text()))


def test_budget_config_keeps_the_papers_tables_and_its_price_is_the_documented_one():
    gh = _gpu_hours()
    faithful, budget = prepare_config(_config()), prepare_config(_budget_config())
    # the same tables and figures: experiments, pre-trainings, methods, sizes, seeds, grids, ablations, cells
    for key in ("pretrainings", "methods", "sizes", "seeds", "sweep", "ablations"):
        assert budget[key] == faithful[key], key
    assert budget["tuning"]["grids"] == faithful["tuning"]["grids"]
    # the documented deviations, and nothing else of train / tuning / segmentation
    assert budget["tuning"]["strategy"] == "successive_halving"
    assert {k for k in budget["train"] if budget["train"][k] != faithful["train"][k]} == {
        "steps", "ensemble_size", "log_every"}
    seg, seg_paper = budget["segmentation"], faithful["segmentation"]
    assert {k for k in seg if seg[k] != seg_paper[k]} == {"train"}
    assert {k for k in seg["train"] if seg["train"][k] != seg_paper["train"][k]} == {"steps"}
    t = gh.StepTimes(tflops=35.0)
    rep, paper = gh.report(budget, t, gpus=100), gh.report(faithful, t, gpus=100)
    assert rep["sweep"]["gpu_hours"] < paper["sweep"]["gpu_hours"] / 20
    assert rep["sweep"]["largest_job_gpu_hours"] < 4
    assert rep["stages"]["fit"]["jobs"] == paper["stages"]["fit"]["jobs"]
    # docs/cluster.md states both totals as the cost model prints them (the aim: 310 GPU-hours)
    doc = (ROOT / "docs" / "cluster.md").read_text()
    for name, r in (("configs/paper.yaml", paper), ("+ configs/paper_budget.yaml", rep)):
        row = re.search(rf"^\| {re.escape(name)} \|(.*)$", doc, flags=re.M)
        assert row, f"docs/cluster.md has no price row for {name}"
        total = float(row.group(1).split("|")[4].strip().strip("*").replace(",", ""))
        assert total == pytest.approx(r["sweep"]["gpu_hours"], abs=0.05), (name, total)


def test_budget_dry_run_plans_the_rungs_fast(workdir):
    t0 = time.perf_counter()
    jobs = _dry_run_jobs(workdir, "--configfile", "configs/paper.yaml", "configs/paper_budget.yaml")
    wall = time.perf_counter() - t0
    assert wall <= 30, f"the dry run took {wall:.1f} s"
    gh = _gpu_hours()
    priced = gh.sweep_jobs(prepare_config(_budget_config()), gh.StepTimes())
    # the cost model prices the tuning jobs the dry run plans for each experiment's pre-trainings (the main
    # experiment's Fig. 3c tuning aside: the cost model leaves the ablations out)
    for name, cfg in _experiments().items():
        if name == "cifar10_resnet50":
            continue
        for rule in ("tune_point", "tune_rung", "tune"):
            planned = [outs for r, outs in jobs if r == f"{name}_{rule}"
                       and outs[0].split("/")[3] in cfg["pretrainings"]]
            assert len(planned) == sum(j.job_class == f"{name}_{rule}" for j in priced), (name, rule)
    selections = [o for r, o in jobs if r == "tune"]
    assert sum(r == "tune_rung" for r, _o in jobs) == 2 * len(selections)  # two rungs before the last
    # the main experiment's jobs, Fig. 3c's tuning and fits, the ablations and segmentation among them, as the
    # dry run plans them
    main = [j for j in priced if j.experiment == "cifar10_resnet50"]
    for rule in {j.job_class for j in main}:
        assert sum(r == rule for r, _o in jobs) == sum(j.job_class == rule for j in main), rule
    assert {j.job_class for j in main if j.stage == "ablation"} == {
        "ablation_rank", "ablation_lambda", "landscape", "tune_point", "tune_rung", "tune", "fit"}
