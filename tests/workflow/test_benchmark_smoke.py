"""Smoke tests of the benchmarks: benchmarks/prior_overhead.py --quick runs and prints finite ratios;
benchmarks/gpu_hours.py prints its table, schedules sensibly and reads a calibration file.

prior_overhead is slow (about 1-2 minutes and ~10 GB of RAM on a 2-core CPU: the quick run still builds a rank-20 prior
over all 23.5M resnet50 backbone parameters).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prior_overhead.py"


@pytest.mark.slow
def test_prior_overhead_quick(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out_json)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "prior/plain" in out and "peer/plain" in out
    rows = [line for line in out.splitlines() if line.startswith(("small_resnet", "resnet50"))]
    assert {r.split()[0] for r in rows} == {"small_resnet", "resnet50"}, out
    for row in rows:
        # "<median> [<q1>-<q3>]" three times: prior/plain, autograd/plain and peer/plain
        ratios = re.findall(r"(\d+\.\d+) \[(\d+\.\d+)-(\d+\.\d+)\]", row)
        assert len(ratios) == 3, row
        for med, q1, q3 in ratios:
            med, q1, q3 = float(med), float(q1), float(q3)
            assert math.isfinite(med) and med > 0, row
            assert q1 <= med <= q3, row
    assert out_json.exists()


# ---------------------------------------------------------------------------------------------- gpu_hours.py
GPU_HOURS = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_hours.py"
PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"


def _gpu_hours_json(*args) -> dict:
    proc = subprocess.run([sys.executable, str(GPU_HOURS), "--json", "--config", str(PAPER), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)[str(PAPER)]


def _gpu_hours_module():
    spec = importlib.util.spec_from_file_location("gpu_hours", GPU_HOURS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_gpu_hours_prints_the_columns_per_stage_and_job_class(tmp_path):
    proc = subprocess.run([sys.executable, str(GPU_HOURS), "--gpus", "8", "--calibration", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    headers = [line for line in proc.stdout.splitlines() if line.startswith("| stage") or line.startswith("| job")]
    assert len(headers) == 4, proc.stdout  # two tables for each of paper.yaml and paper.yaml + paper_budget.yaml
    for line in headers:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:] == ["jobs", "GPU-hours", "largest job (GPU-h)", "wall on 8 GPUs (h)"], line
    rows = {line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"tune", "fit", "cifar100_resnet50_fit", "oxford_pets_resnet101_tune_point"} <= rows
    assert "### configs/paper.yaml,configs/paper_budget.yaml" in proc.stdout
    assert "FLOP estimate" in proc.stdout and "measured" not in proc.stdout


def test_gpu_hours_wall_clock_one_gpu_is_the_total_and_more_gpus_are_never_slower(tmp_path):
    none = ["--calibration", str(tmp_path / "none")]
    reps = {k: _gpu_hours_json("--gpus", str(k), *none) for k in (1, 2, 7, 64, 1000)}
    one = reps[1]
    for part in ("stages", "classes"):
        for name, row in one[part].items():
            assert row["wall_hours"] == pytest.approx(row["gpu_hours"], rel=1e-9), (part, name)
    assert one["sweep"]["wall_hours"] == pytest.approx(one["sweep"]["gpu_hours"], rel=1e-9)
    assert one["sweep"]["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in one["stages"].values()))
    for small, large in zip((1, 2, 7, 64), (2, 7, 64, 1000)):
        for part in ("stages", "classes"):
            for name, row in reps[large][part].items():
                assert row["wall_hours"] <= reps[small][part][name]["wall_hours"] * (1 + 1e-12), (part, name)
                # never below the bound max(largest job, total / K)
                bound = max(row["largest_job_gpu_hours"], row["gpu_hours"] / large)
                assert row["wall_hours"] >= bound * (1 - 1e-12), (part, name, large)
    # with a GPU for every job, each stage of one phase takes as long as its largest job (the paper's ~6,000
    # tuning jobs of workflow.tune_split point outnumber 1000 GPUs); a stage in phases (the ablations: Fig. 3c's
    # tuning, then its fits) as long as the largest job of each phase in turn
    for row in reps[1000]["stages"].values():
        if row["jobs"] <= 1000 and row["phases"] == 1:
            assert row["wall_hours"] == pytest.approx(row["largest_job_gpu_hours"])
    ablation = reps[1000]["stages"]["ablation"]
    assert ablation["phases"] == 2 and ablation["wall_hours"] > ablation["largest_job_gpu_hours"]
    assert reps[1000]["stages"]["segmentation"]["phases"] == 1  # paper scale: no segment_pretrain / prior


def test_gpu_hours_greedy_schedule_known_answer():
    gh = _gpu_hours_module()
    # longest first onto the least loaded GPU: (3, 2, 2) and (3, 2) on 2 GPUs -> 7 (the optimum would be 6);
    # (3, 2), (3) and (2, 2) on 3 GPUs -> 5; one job per GPU -> the largest job
    assert gh.makespan([3, 3, 2, 2, 2], 1) == 12
    assert gh.makespan([3, 3, 2, 2, 2], 2) == 7
    assert gh.makespan([3, 3, 2, 2, 2], 3) == 5
    assert gh.makespan([3, 3, 2, 2, 2], 10) == 3
    with pytest.raises(ValueError, match="--gpus"):
        gh.makespan([1.0], 0)


def test_gpu_hours_calibration_file_overrides_the_flop_estimate(tmp_path):
    flop = _gpu_hours_json("--calibration", str(tmp_path / "none"))
    flop_step = 3 * 8.2e9 * 128 / 35e12  # ResNet-50, 224 px, batch 128 at the default 35 TFLOP/s
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"step_seconds": [
        {"arch": "resnet50", "image_size": 224, "batch_size": 128, "seconds": 10 * flop_step}]}))
    measured = _gpu_hours_json("--calibration", str(calibration))
    assert measured["step_times"] == ["FLOP estimate", "measured"]
    # the main experiment and CIFAR-100 (ResNet-50, batch 128): every step and evaluation 10 x longer
    for cls in ("fit", "tune", "cifar100_resnet50_fit"):
        assert measured["classes"][cls]["gpu_hours"] == pytest.approx(10 * flop["classes"][cls]["gpu_hours"])
    # other (arch, batch) pairs keep the FLOP estimate
    for cls in ("flowers102_resnet50_fit", "cifar10_resnet101_fit", "oxford_pets_resnet50_tune"):
        assert measured["classes"][cls]["gpu_hours"] == pytest.approx(flop["classes"][cls]["gpu_hours"])
    calibration.write_text(json.dumps({"step_seconds": [{"arch": "resnet50", "seconds": 1.0}]}))
    proc = subprocess.run([sys.executable, str(GPU_HOURS), "--calibration", str(calibration)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "step_seconds[0]" in proc.stderr and str(calibration) in proc.stderr


def test_gpu_hours_example_calibration_is_the_flop_estimate():
    """The example file's numbers are the FLOP estimate (it says so), so pricing with it changes nothing."""
    example = GPU_HOURS.parent / "calibration.example.json"
    with_example = _gpu_hours_json("--calibration", str(example))
    assert "measured" in with_example["step_times"]
    flop = _gpu_hours_json("--calibration", str(example.with_name("no-such-file.json")))
    assert with_example["sweep"]["gpu_hours"] == pytest.approx(flop["sweep"]["gpu_hours"], rel=1e-4)
