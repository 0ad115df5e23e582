"""environment.yml lists the same dependencies (names and version bounds) as pyproject.toml, and it is the rule
environment of `--sdm conda`, which also installs the project."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["all"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert any(str(d).startswith("python>=3.11") for d in env["dependencies"])


def test_rule_environment_is_environment_yml_and_installs_the_project():
    """`--sdm conda`: every rule runs in workflow/envs/pipeline.yaml (environment.yml), and Snakemake's
    post-deploy script of that file (same name, .post-deploy.sh) installs the project into it."""
    env = ROOT / "workflow" / "envs" / "pipeline.yaml"
    assert env.resolve() == (ROOT / "environment.yml").resolve()
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    envs = set(re.findall(r"conda:\s*\n\s*\"([^\"]+)\"", rules))
    assert envs == {"../envs/pipeline.yaml"}, envs
    deploy = env.with_name("pipeline.post-deploy.sh").read_text()
    commands = [line.strip() for line in deploy.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "python -m pip install --no-deps -e .", commands
    # it checks it stands in this project's root (pyproject.toml's name line) before installing
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == "bayes_transfer"
    assert '^name = "bayes_transfer"' in deploy and 'name = "bayes_transfer"' in (ROOT / "pyproject.toml").read_text()
