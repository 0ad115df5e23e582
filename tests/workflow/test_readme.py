"""The README's commands work as written, and the README and docs/ stay short and linked to files that exist.

Every line of a ```bash block in README.md is a command (a line ending in a backslash continues on the next).
Each one is run in a copy of the workflow with the repository's .venv, in a fresh shell (no virtual environment
on PATH, nothing activated), and must exit 0:

- as written, when it is cheap: it matches :data:`CHEAP_FLAGS` (a dry run, ``--help``, ``--lint``, the demo's
  ``--quick``) or is listed in :data:`RUN_AS_WRITTEN`;
- as a dry run (``-n`` added), when it is listed in :data:`DRY_RUN_INSTEAD` (it would train);
- not at all, when it is listed in :data:`SKIPPED` with the reason.

A README command that is none of these fails the test: classify it here when you add it to the README.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150

#: a command with one of these is cheap: run it as written
CHEAP_FLAGS = (" -n ", " --dry-run", " --help", " --lint", " --quick", " --version")

#: cheap commands without such a flag, run as written
RUN_AS_WRITTEN = {
    ".venv/bin/python benchmarks/gpu_hours.py": "arithmetic on the paper config, seconds",
}

#: commands that would train; run with ``-n --quiet rules`` after ``.venv/bin/snakemake``
DRY_RUN_INSTEAD = {
    ".venv/bin/snakemake --cores 2 results/figures/fig4_supervised.png":
        "trains a pre-training's whole data-size evidence",
    ".venv/bin/snakemake --cores 2 --config pretrainings='[supervised]' methods='[sgd_transfer,bnn_learned_prior]' "
    "sizes='[10,100]'": "trains a subset of the default",
    ".venv/bin/snakemake --configfile configs/fashion.yaml --cores 2":
        "the Fashion-MNIST tier (1 h 35 min, docs/results/2026-12-02-fashion.md); its plan needs no data",
}

#: commands not run, with the reason
SKIPPED = {
    'python3 -m venv .venv && .venv/bin/pip install -e ".[all]"':
        "the set-up itself; .ci/run runs it in a fresh clone, and this test uses its .venv",
    '.venv/bin/python -m pytest -m "not slow"': "the test suite itself",
    ".venv/bin/python -m pytest -m slow": "the slow tests of the suite itself",
    ".venv/bin/snakemake --cores 2": "the whole default (about 12 minutes); its dry run is a README command",
    ".venv/bin/python -m bayes_transfer demo":
        "~40 s of training; `demo --quick`, a README command, runs the same code",
    ".venv/bin/snakemake --report results/report.html":
        "needs a finished run; tests/workflow/test_report.py builds the report of a smoke run",
}

#: what the command may need beside the workflow (Snakefile, configs, workflow/)
EXTRA_ITEMS = ("benchmarks",)


def strip_comment(command: str) -> str:
    """The command without a trailing ``# comment`` (none of the README's commands has a # inside quotes)."""
    return re.sub(r"\s+#\s.*$", "", command).strip()


def bash_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks of a Markdown text, continuation lines joined, comments stripped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        logical = re.sub(r"\s*\\\n\s*", " ", block)
        for line in logical.splitlines():
            line = strip_comment(line)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def classify(command: str) -> str:
    if command in SKIPPED:
        return "skip"
    if command in DRY_RUN_INSTEAD:
        return "dry run"
    if command in RUN_AS_WRITTEN or any(flag in f"{command} " for flag in CHEAP_FLAGS):
        return "run"
    return "unclassified"


COMMANDS = bash_commands(README.read_text())


def test_readme_is_short_and_has_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    assert COMMANDS, "README.md has no ```bash block"


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    unclassified = [c for c in COMMANDS if classify(c) == "unclassified"]
    assert not unclassified, (
        "README commands that tests/workflow/test_readme.py neither runs nor skips; add each to RUN_AS_WRITTEN, "
        f"DRY_RUN_INSTEAD or SKIPPED: {unclassified}")
    listed = set(RUN_AS_WRITTEN) | set(DRY_RUN_INSTEAD) | set(SKIPPED)
    stale = sorted(listed - set(COMMANDS))
    assert not stale, f"tests/workflow/test_readme.py lists commands that README.md no longer has: {stale}"


def test_readme_uses_the_venv_everywhere():
    """Bare ``python``/``snakemake``/``pip``/``pytest`` fail in a fresh shell (no torch); only the venv's own."""
    bare = [segment for c in COMMANDS for segment in re.split(r"&&|\|\||\||;", c)
            if segment.split()[0] in ("python", "python3", "snakemake", "pip", "pip3", "pytest")
            and segment.strip() != "python3 -m venv .venv"]
    assert not bare, f"README commands outside .venv/bin: {bare}"


def test_ci_runs_exactly_the_readme_setup_and_test_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in ('python3 -m venv .venv && .venv/bin/pip install -e ".[all]"',
                    '.venv/bin/python -m pytest -m "not slow"', ".venv/bin/python -m pytest -m slow"):
        assert command in COMMANDS, f"README.md lost its command {command!r}"
        assert command in ci, f".ci/run does not run the README's command {command!r}"


def fresh_shell_env() -> dict:
    """The environment of a new login shell: no virtual environment on PATH, nothing activated."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv = str(ROOT / ".venv")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv))
    env.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared; the commands' results do not depend on it
    return env


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_readme_command_works_as_written(command, copy_workflow, tmp_path):
    kind = classify(command)
    if kind == "skip":
        pytest.skip(SKIPPED[command])
    if kind == "unclassified":
        pytest.fail(f"unclassified README command (see test_every_readme_command_is_run_or_skipped): {command}")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: run the README's set-up first")
    work = copy_workflow(tmp_path / "repo", extra=EXTRA_ITEMS)
    (work / ".venv").symlink_to(ROOT / ".venv")
    if kind == "dry run":
        command = command.replace(".venv/bin/snakemake", ".venv/bin/snakemake -n --quiet rules", 1)
    out = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=work, env=fresh_shell_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}\nexit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.strip() or out.stderr.strip(), f"{command} printed nothing"


def markdown_files() -> list[Path]:
    return [README] + sorted(DOCS.rglob("*.md"))


def local_links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file (web links and in-page anchors left out)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_every_link_in_readme_and_docs_points_to_a_file_that_exists():
    missing = [f"{path.relative_to(ROOT)} -> {target}" for path in markdown_files() for target in local_links(path)
               if not (path.parent / target).exists()]
    assert not missing, f"links to missing files: {missing}"


def test_readme_links_every_doc():
    linked = {(README.parent / t).resolve() for t in local_links(README)}
    unlinked = [p.relative_to(ROOT) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs/ pages the README does not link: {unlinked}"
    results = DOCS / "results"
    indexed = {(results / t).resolve() for t in local_links(results / "README.md")}
    unindexed = [p.name for p in sorted(results.glob("*.md")) if p.name != "README.md" and p.resolve() not in indexed]
    assert not unindexed, f"docs/results/ files missing from docs/results/README.md: {unindexed}"


def test_command_extraction_and_classification_on_a_known_text():
    text = ("intro\n```bash\n.venv/bin/snakemake --cores 2 \\\n    --configfile x.yaml   # a comment\n\n"
            "# a comment line\n.venv/bin/snakemake -n\n```\n```python\nnot_a_command()\n```\n"
            "```bash\n.venv/bin/python train_everything.py\n```\n")
    assert bash_commands(text) == [".venv/bin/snakemake --cores 2 --configfile x.yaml", ".venv/bin/snakemake -n",
                                   ".venv/bin/python train_everything.py"]
    assert [classify(c) for c in bash_commands(text)] == ["unclassified", "run", "unclassified"]
    assert classify(".venv/bin/snakemake --cores 2") == "skip"


def test_link_check_sees_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [anchor](#x) [web](https://example.org/a.md) [gone](docs/missing.md#part)\n")
    assert local_links(page) == ["page.md", "docs/missing.md"]
    assert not (tmp_path / "docs/missing.md").exists()
