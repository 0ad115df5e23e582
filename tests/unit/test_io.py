"""bayes_transfer.io: atomic writes leave either the old file or the whole new one, never a part or a temp file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bayes_transfer.io import atomic_open, atomic_write_text, save_torch, write_json


def test_write_json_converts_numpy_and_tensors_and_sorts_keys(tmp_path):
    path = tmp_path / "deep" / "r.json"  # parents are created
    write_json(path, {"b": np.int64(3), "a": np.float32(0.5), "t": torch.tensor([[1.0, 2.0]]), "n": None})
    assert path.read_text() == '{\n "a": 0.5,\n "b": 3,\n "n": null,\n "t": [\n  [\n   1.0,\n   2.0\n  ]\n ]\n}'
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "n": None, "t": [[1.0, 2.0]]}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"old": 1})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(path, {"bad": object()})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path, "w") as f:
            f.write('{"half": ')
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_files_get_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode


def test_save_torch_round_trip_and_replace(tmp_path):
    path = tmp_path / "s.pt"
    save_torch({"w": torch.arange(3.0)}, path)
    save_torch({"w": torch.arange(4.0), "step": 7}, path)  # replaces the first
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["w"], torch.arange(4.0)) and state["step"] == 7
    assert os.listdir(tmp_path) == ["s.pt"]


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_the_pipeline_writes_results_only_through_the_atomic_writers():
    """Every table, figure, page and tensor file of src/ and workflow/scripts/ goes through bayes_transfer.io, so a
    kill mid-write never leaves half a file (job logs, written line by line as the job runs, are the exception)."""
    import re

    root = Path(__file__).resolve().parents[2]
    in_place = re.compile(r"\.to_csv\(|\.write_text\(|\bopen\([^)]*[\"']w|torch\.save\(|savefig\((?!fh\b)")
    files = [*(root / "src" / "bayes_transfer").rglob("*.py"), *(root / "workflow" / "scripts").glob("*.py")]
    found = [f"{f.relative_to(root)}:{i}" for f in files if f.name != "io.py" and f.name != "logs.py"
             for i, line in enumerate(f.read_text().splitlines(), 1) if in_place.search(line)]
    assert not found, found
