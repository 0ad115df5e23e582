"""configs/fashion.yaml, the Fashion-MNIST evidence tier: the issue's protocol under the same schema, a dry run
that plans every stage of the default's rules, a tiny real run on fake idx files in the real format, and the
error a run gives when the files are missing."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bayes_transfer.config.experiments import merged
from bayes_transfer.config.schema import prepare_config
from bayes_transfer.inference.methods import METHODS
from fashion_files import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
FIVE_METHODS = {"sgd_transfer", "sgd_learned_prior", "bnn_learned_prior", "bnn_isotropic_prior", "sgd_ensemble"}


def snakemake(*args, cwd, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _config() -> dict:
    """configs/fashion.yaml as Snakemake sees it (config.yaml updated by it), prepared like the workflow does."""
    return prepare_config(merged(yaml.safe_load((ROOT / "config.yaml").read_text()),
                                 yaml.safe_load((ROOT / "configs" / "fashion.yaml").read_text())))


def test_the_tier_is_the_papers_protocol_on_fashion_mnist():
    cfg = _config()  # prepare_config raises on any problem
    data = cfg["data"]
    assert data["dataset"] == "fashion_mnist" and data["image_size"] in (28, 14)
    assert data["fashion_mnist_dir"] == "/usr/share/datasets/fashion-mnist" and data["n_val"] >= 500
    assert cfg["model"]["arch"] == "resnet28"
    assert cfg["pretrainings"] == ["supervised", "simclr"] and set(cfg["methods"]) == FIVE_METHODS
    assert cfg["seeds"] == [0, 1, 2, 3, 4]
    assert cfg["sizes"][0] == 10 and cfg["sizes"][-1] >= 1000 and cfg["sizes"] == sorted(cfg["sizes"])
    assert cfg["swag"]["augment"] and cfg["tuning"]["validation"] == "task"
    abl = cfg["ablations"]
    assert abl["pretraining"] == "simclr" and abl["n_train"] in cfg["sizes"] and abl["landscape"]["enabled"]
    assert abl["rank"]["methods"] and abl["lambda"]["methods"] and abl["learned_mean"]["methods"]
    assert not cfg["segmentation"]["enabled"]
    assert set(cfg["tuning"]["grids"]) <= set(METHODS)


def test_dry_run_plans_every_stage_and_nothing_of_paper_scale(workdir):
    out = snakemake("-n", "--cores", "2", "--quiet", "rules", "--configfile", "configs/fashion.yaml", cwd=workdir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    counts = {}
    for line in text.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    for rule in ("pretrain", "learn_prior", "tune", "fit", "aggregate", "tables", "figure_vs_size", "ablation_rank",
                 "ablation_lambda", "ablation_table", "landscape", "figure_landscape", "figure_rank", "figure_lambda",
                 "figure_learned_mean", "figure_reliability", "table_ece", "prior_diagnostics", "tuning_flags",
                 "audit"):
        assert counts.get(rule), (rule, counts)
    # trained here like the digits: no dataset check or checkpoint download of paper scale; segmentation is off
    assert not {"prepare_data", "fetch_weights", "import_prior", "segment", "segment_pretrain"} & set(counts), counts
    # the two SWAG priors and the supervised checkpoint's BBB prior (prior.variants), with its tuning and fits
    assert counts["pretrain"] == 2 and counts["learn_prior"] == 3
    assert counts["tune_variant"] == 3 and counts["fit_size"] == 3 and counts["pruning"] == 1
    # 5 methods x 2 pre-trainings, plus the learned-mean ablation's 2 methods: one job each for the 5 sizes x 5
    # seeds (workflow.sizes_per_job: all, inherited from config.yaml)
    assert counts["fit"] == 12


def _tiny_overlay(fmnist_dir: Path) -> dict:
    """configs/fashion.yaml shrunk to seconds (few steps, sizes, seeds, grid points) on the fake files."""
    return {
        "data": {"fashion_mnist_dir": str(fmnist_dir), "n_val": 20},
        "pretrain": {"steps": 4, "batch_size": 16, "log_every": 2},
        "swag": {"cycles": 3, "steps_per_cycle": 3, "max_rank": 2},
        "bbb": {"steps": 4},
        "methods": ["sgd_transfer", "bnn_learned_prior"],
        "sizes": [10, 20],
        "seeds": [0, 1],
        "train": {"steps": 6, "batch_size": 8, "cycles": 1, "samples_per_cycle": 2, "log_every": 2},
        "tuning": {"grids": {"sgd_transfer": {"lr": [0.01, 0.05], "weight_decay": [0.0]},
                             "bnn_learned_prior": {"prior_scale": [1.0e+8], "temperature": [1.0e-4, 1.0e-2]}}},
        "ablations": {"rank": {"methods": ["bnn_learned_prior"], "ranks": [0, 2]},
                      "lambda": {"methods": ["bnn_learned_prior"], "prior_scales": [1.0e+2, 1.0e+8]},
                      "learned_mean": {"methods": []},
                      "landscape": {"n_train": 20, "prior_directions": 2, "random_directions": 2, "points": 3,
                                    "source_examples": 16}},
        # the digits-free controls are tested on their own (tests/workflow/test_controls_workflow.py)
        "controls": {"enabled": False},
    }


@pytest.mark.slow
def test_tiny_real_run_of_the_fashion_path(workdir):
    write_fashion_mnist(workdir / "fmnist", per_class_train=40, per_class_test=8)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(_tiny_overlay(workdir / "fmnist")))
    out = snakemake("--cores", "2", "--configfile", "configs/fashion.yaml", "tiny.yaml", cwd=workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = workdir / "results"
    runs = pd.read_csv(res / "tables" / "runs.csv")
    assert set(runs["dataset"]) == {"fashion_mnist"} and set(runs["arch"]) == {"resnet28"}
    # the two pre-trainings, and the supervised checkpoint's BBB prior with bnn_learned_prior at its n = 10
    assert set(runs["pretraining"]) == {"supervised", "simclr", "supervised_bbb"} and set(runs["n_train"]) == {10, 20}
    assert {"test", "shifted_test", "ood_source", "ood_noise"} <= set(runs["eval_set"]) and runs["success"].all()
    assert len(list((res / "runs").rglob("seed*.json"))) == 2 * 2 * 2 * 2 + 2
    assert (res / "figures" / "pruning_supervised_bbb.png").stat().st_size > 1000
    for fig in ("fig4_supervised", "fig5a_simclr", "fig5b_simclr", "fig9_reliability_simclr", "fig3a_landscape",
                "fig3b_rank", "fig3d_lambda"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    claims = pd.read_csv(res / "audit" / "claims.csv")
    assert {f"C{i}" for i in range(1, 10)} <= set(claims["claim"])
    assert not (res / "tables" / "segmentation_runs.csv").exists()


def test_missing_files_stop_the_first_job_with_the_expected_paths(workdir):
    empty = workdir / "no-fashion-here"
    (workdir / "missing.yaml").write_text(yaml.safe_dump({"data": {"fashion_mnist_dir": str(empty)}}))
    out = snakemake("results/pretrain/supervised.pt", "--cores", "1", "--configfile", "configs/fashion.yaml",
                    "missing.yaml", cwd=workdir, timeout=300)
    assert out.returncode != 0
    log = (workdir / "results" / "logs" / "pretrain" / "supervised.log").read_text()
    assert "Fashion-MNIST: 4 of the 4 idx files missing" in log
    assert f"{empty / 'train-images-idx3-ubyte'}  or  {empty / 'train-images-idx3-ubyte'}.gz   [MISSING]" in log
    assert "apt-get install dataset-fashion-mnist" in log
