"""configs/paper.yaml: valid under the same schema, the paper's values, and a fast dry run of the whole sweep."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bayes_transfer.config.check import check_config
from bayes_transfer.config.experiments import merged, sweep_experiments

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

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
    config = _config()
    main = f"{config['data']['dataset']}_{config['model']['arch']}"
    return {main: config} | sweep_experiments(config)


def test_every_experiment_is_valid_under_the_schema():
    from snakemake.utils import validate

    experiments = _experiments()
    assert len(experiments) == 8
    for name, cfg in experiments.items():
        validate(cfg, str(SCHEMA), set_default=True)
        check_config(cfg)
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
        # only the main experiment runs the Fig. 3 ablations
        if cfg is not experiments["cifar10_resnet50"]:
            assert not cfg["ablations"]["rank"]["methods"] and not cfg["ablations"]["landscape"]["enabled"]


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
        assert counts[f"{prefix}fit"] == len(pretrainings) * len(methods) * len(sizes) + len(fig3c) * len(sizes)
        assert counts[f"{prefix}tune"] == len(pretrainings) * len(tuned) + len(fig3c_tuned), name
        assert counts[f"{prefix}prepare_data"] == 1, name
        for rule in ("fetch_weights", "pretrain", "import_prior"):
            assert counts[f"{prefix}{rule}"] == len(pretrainings), (name, rule)
    sweep_fits = sum(v for k, v in counts.items() if k.endswith("_fit"))
    assert sweep_fits == 2 * 5 * (5 + 6 + 7) + 5 * (5 + 5 + 6 + 7)  # ResNet-50 (2 pre-trainings), ResNet-101
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


def _gpu_hours():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_hours", ROOT / "benchmarks" / "gpu_hours.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_hours_known_answer_and_the_paper_table():
    gh = _gpu_hours()
    cfg = {"model": {"arch": "resnet50"}, "data": {"dataset": "cifar10", "image_size": 112, "shifted_test": None},
           "pretrainings": ["supervised"], "methods": ["sgd_transfer", "bnn_isotropic_prior"], "sizes": [10],
           "seeds": [0, 1], "prior": {"source": "priorbox"},
           "train": {"steps": 100, "batch_size": 8, "cycles": 2, "samples_per_cycle": 3, "ensemble_size": 0},
           "tuning": {"grids": {"sgd_transfer": {"lr": [0.1, 0.01]}}, "inherit": {}, "holdout_fraction": 0.3}}
    fwd = 8.2e9 / 4  # half the resolution: a quarter of the FLOPs
    stages = gh.experiment_flop(cfg)
    train = 3 * fwd * 8 * 100
    assert stages["tune"]["jobs"] == 1 and stages["tune"]["flop"] == pytest.approx(2 * (train + fwd * 3))
    sgd, bnn = train + fwd * 10_000, train + 6 * fwd * 10_000  # the BMA evaluates each of its 6 samples
    assert stages["fit"]["jobs"] == 2 and stages["fit"]["flop"] == pytest.approx(2 * sgd + 2 * bnn)
    assert stages["prior"]["flop"] == 0 and stages["pretrain"]["jobs"] == 1
    # the paper sweep: every experiment, fits and tuning jobs as the dry run counts them (Fig. 3c aside)
    rows = gh.sweep_table(_config(), tflops=35.0)
    assert len(rows) == 8
    assert sum(r["fit"]["jobs"] for r in rows.values()) == 2 * 5 * 23 + 5 * 23  # sizes: 5 + 5 + 6 + 7
    assert sum(r["tune"]["jobs"] for r in rows.values()) == 4 * (2 * 4 + 4)
    assert all(r["fit"]["gpu_hours"] > 0 for r in rows.values())
