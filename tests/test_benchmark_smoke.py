"""Smoke test: benchmarks/prior_overhead.py --quick runs and prints finite ratios.

Slow (about 1-2 minutes and ~10 GB of RAM on a 2-core CPU: the quick run still builds a rank-20 prior
over all 23.5M resnet50 backbone parameters).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_overhead.py"


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
