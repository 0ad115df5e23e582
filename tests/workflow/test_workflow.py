"""The Snakemake workflow: lint, dry runs, config validation, and a tiny real run of the smoke config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_has_no_findings():
    out = snakemake("--lint")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def _rule_scripts() -> dict[str, set[str]]:
    """Script file -> the rules that run it (every rule file of workflow/rules)."""
    import re

    scripts: dict[str, set[str]] = {}
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        for m in re.finditer(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", text, flags=re.M | re.S):
            script = re.search(r"script:\s*\n\s*\"\.\./scripts/([\w.]+)\"", m.group(2))
            if script:
                scripts.setdefault(script.group(1), set()).add(m.group(1))
    return scripts


def test_scripts_import_the_installed_package_and_each_does_one_rules_job():
    import re

    scripts_dir = ROOT / "workflow" / "scripts"
    files = [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk"), *scripts_dir.glob("*.py")]
    assert not [f.name for f in files if "sys.path" in f.read_text()]
    scripts = _rule_scripts()
    assert set(scripts) == {p.name for p in scripts_dir.glob("*.py")}  # none unused
    # no script picks its job by the rule's name; the two that serve two rules do one job with the rule's params
    assert not [name for name in scripts if re.search(r"\brule\s*(==|!=|in\b)", (scripts_dir / name).read_text())]
    assert {name: rules for name, rules in scripts.items() if len(rules) > 1} == {
        "ablation.py": {"ablation_rank", "ablation_lambda"}, "figure_ablation.py": {"figure_rank", "figure_lambda"},
        # the tuning of a prior variant per size, of a split tuning's rungs: the same jobs on fewer sizes / points
        "tune.py": {"tune", "tune_variant"}, "tune_select.py": {"tune", "tune_rung"}}


def test_dry_run_of_default_lists_every_stage(workdir):
    out = snakemake("-n", "--cores", "2", "--quiet", "rules", cwd=workdir)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for rule in ("pretrain", "learn_prior", "tune", "fit", "aggregate", "figure_vs_size", "tables", "ablation_rank",
                 "ablation_lambda", "ablation_table", "landscape", "figure_landscape", "figure_rank", "figure_lambda",
                 "figure_learned_mean", "figure_reliability", "table_ece"):
        assert rule in text


@pytest.mark.parametrize(
    "change,message",
    [
        ({"methods": ["sgd_transfer", "sgd_magic"]}, "sgd_magic"),
        ({"data": {"dataset": "imagenet21k"}}, "imagenet21k"),
        ({"tuning": {"grids": {"sgd_learned_prior": {"prior_scale": [1.0, 0.0]}}}},
         r"tuning.grids.sgd_learned_prior.prior_scale[1]: expected a number > 0"),
        ({"train": {"prior_scale": -1.0}}, "prior_scale"),
        ({"sizes": [10, 5000]}, "sizes[1]: training size 5000 is larger than the training pool"),
        ({"seeeds": [0, 1]}, "seeeds"),
        ({"train": {"temprature": 0.1}}, "temprature"),
        ({"ablations": {"n_train": 7}}, "ablations.n_train: 7 must be one of sizes"),
        ({"ablations": {"pretraining": "simclr", "rank": {"ranks": [0, 50]}}},
         "ablations.rank.ranks[1]: rank 50 is above swag.max_rank"),
        # another tier's claims file that is not there: named before any job
        ({"audit": {"tiers": {"fashion": "docs/results/no-such-claims.csv"}}}, "docs/results/no-such-claims.csv"),
    ],
)
def test_invalid_config_fails_before_any_job(workdir, change, message):
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "data":
            cfg[key].update(value)
        else:
            cfg[key] = value
    (workdir / "bad.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=workdir)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr, out.stdout + out.stderr
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_smoke_run_end_to_end_then_nothing_to_do_then_only_dependents_rerun(workdir):
    import json
    import re

    import pandas as pd

    out = snakemake("--cores", "2", "--configfile", "configs/smoke.yaml", cwd=workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = workdir / "results"
    for fig in ("fig4_supervised", "fig5a_supervised", "fig5b_supervised", "fig9_reliability_supervised",
                "fig3a_landscape", "fig3b_rank", "fig3d_lambda"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 1000, fig
        assert len((res / "figures" / f"{fig}.csv").read_text().splitlines()) > 1, fig
    seg = pd.read_csv(res / "tables" / "segmentation_runs.csv")
    assert len(seg) > 0 and seg["success"].all() and set(seg["metric"]) == {"miou"}
    seg_rec = json.loads((workdir / seg["path"].iloc[0]).read_text())
    assert seg_rec["metrics"][seg_rec["eval_set"]]["miou"] == pytest.approx(seg["value"].iloc[0])
    for table in ("table1", "table15", "table16"):
        assert (res / "tables" / f"{table}_segmentation.md").stat().st_size > 100, table
    claims = pd.read_csv(res / "audit" / "claims.csv")
    assert {f"C{i}" for i in range(1, 10)} <= set(claims["claim"])
    assert set(claims["verdict"]) <= {"supported", "contradicted", "no relevant effect", "inconclusive"}
    # the HTML report holds every figure (its page: the image with its caption under it)
    report = snakemake("--configfile", "configs/smoke.yaml", "--report", "results/report.html", cwd=workdir)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (res / "report.html").read_text()
    listed = re.search(r"var results = (\{.*?\});\n", html, flags=re.DOTALL).group(1)
    in_report = {str(Path(k)) for k in json.loads(listed)}
    figures = sorted(str(p.relative_to(workdir)) for p in (res / "figures").glob("*.png"))
    assert figures and not [f for f in figures if str(Path(f).with_suffix(".html")) not in in_report]
    rank = pd.read_csv(res / "tables" / "ablation_rank.csv")
    assert set(rank["prior_rank"]) == {0, 3} and set(rank["truncation"]) == {"svd"}
    assert len(rank[["prior_rank", "seed"]].drop_duplicates()) == 2 * 2
    lam = pd.read_csv(res / "tables" / "ablation_lambda.csv")  # both conventions, each run's prior energy
    assert set(lam["prior_convention"]) == {"exact", "priorbox"} and lam["success"].all()
    assert len(lam[["prior_convention", "prior_scale", "seed"]].drop_duplicates()) == 2 * 2 * 2
    assert lam["prior_energy_per_datum"].notna().all()
    assert set(pd.read_csv(res / "figures" / "fig3d_lambda.csv")["prior_convention"]) == {"exact", "priorbox"}
    table = (res / "tables" / "table_supervised.md").read_text()
    assert "sgd_transfer" in table and "±" in table
    runs = sorted((res / "runs").rglob("seed*.json"))
    # 3 methods x 2 sizes x 2 seeds, and config.yaml's BBB prior variant: bnn_learned_prior at n = 10 (its sizes
    # among the smoke config's), 2 seeds (the VI variant runs at n = 50 only, not a smoke size)
    assert len(runs) == 3 * 2 * 2 + 2

    tidy = pd.read_csv(res / "tables" / "runs.csv")
    assert set(tidy["method"]) == {"sgd_transfer", "bnn_learned_prior", "sgd_ensemble"}
    # the table's numbers are the runs' numbers
    rec = json.loads((res / "runs" / "supervised" / "sgd_transfer" / "n10" / "seed0.json").read_text())
    row = tidy[(tidy.method == "sgd_transfer") & (tidy.n_train == 10) & (tidy.seed == 0)
               & (tidy.eval_set == "test") & (tidy.metric == "error")]
    assert row["value"].item() == pytest.approx(rec["metrics"]["test"]["error"])

    # a second run has nothing to do
    again = snakemake("-n", "--cores", "2", "--configfile", "configs/smoke.yaml", cwd=workdir)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout

    # changing a sampler hyper-parameter reruns only the jobs that depend on it
    cfg = yaml.safe_load((workdir / "configs" / "smoke.yaml").read_text())
    cfg["train"]["temperature"] = 0.5
    (workdir / "changed.yaml").write_text(yaml.safe_dump(cfg))  # also reorders keys: must not matter
    dry = snakemake("-n", "--cores", "2", "--configfile", "changed.yaml", cwd=workdir)
    text = dry.stdout + dry.stderr
    rerun = [line for line in text.splitlines() if line.strip().startswith("wildcards:") and "method=" in line]
    assert rerun and all("method=bnn_learned_prior" in line for line in rerun), text
    rules = {line.split()[1].rstrip(":") for line in text.splitlines() if line.startswith(("rule ", "localrule "))}
    assert {"tune", "fit", "aggregate", "tables", "ablation_rank", "ablation_lambda", "all"} <= rules, rules
    assert not rules & {"pretrain", "learn_prior", "landscape", "figure_landscape"}, rules


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_completed_runs(workdir):
    """SIGTERM mid-run (Ctrl-C or a scheduler's kill), then rerun: finished runs are kept untouched."""
    import signal
    import time

    target = "results/tables/runs.csv"  # the data-size runs only: the rest of the DAG adds time, not coverage
    proc = subprocess.Popen([*SNAKEMAKE, target, "--cores", "2", "--configfile", "configs/smoke.yaml"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = workdir / "results" / "runs"
    deadline = time.time() + 600
    while time.time() < deadline and len(list(runs.rglob("seed*.json"))) < 2:
        assert proc.poll() is None, "snakemake ended before any run finished"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    done = {p: p.stat().st_mtime_ns for p in runs.rglob("seed*.json")}
    assert done, "no run finished before the kill"
    assert len(done) < 14, "the run finished before it could be killed"
    assert not list(workdir.rglob("*.json.tmp"))
    time.sleep(1)
    out = snakemake(target, "--cores", "2", "--configfile", "configs/smoke.yaml", cwd=workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(list(runs.rglob("seed*.json"))) == 14  # 12 main runs and the BBB variant's 2 (see above)
    for path, mtime in done.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
