"""Fixtures shared by the workflow tests: copies of the workflow, so runs never touch the repository's results."""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the workflow reads besides src/: docs/results holds the other tiers' claims records that the audit shows
#: (config.yaml's and configs/fashion.yaml's audit.tiers)
WORKFLOW_ITEMS = ("Snakefile", "config.yaml", "environment.yml", "workflow", "configs", "docs/results")


def _copy_workflow(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy the Snakefile, configs and workflow/ (plus ``extra`` items, e.g. ``src``) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in WORKFLOW_ITEMS + tuple(extra):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / item)
    return dest


@pytest.fixture
def copy_workflow():
    """The function that copies the workflow into a directory (for tests that need several copies)."""
    return _copy_workflow


@pytest.fixture
def workdir(tmp_path):
    """A copy of the workflow in a fresh temporary directory."""
    return _copy_workflow(tmp_path)
