#!/usr/bin/env python
"""Start-up cost of the workflow's jobs: the imports of each ``workflow/scripts/*.py``, timed in fresh interpreters.

Every Snakemake ``script:`` job is a new Python process that runs Snakemake's preamble (unpickling the
``snakemake`` object imports ``snakemake.logging`` and ``snakemake.iocontainers``) and then the script's own
top-level imports. This benchmark replays exactly those imports: for each script it collects the top-level
``import`` / ``from ... import`` statements (read with :mod:`ast`, nothing of the script is run) and times them
in ``--runs`` fresh subprocesses of the same interpreter, in a rotating order so a noisy machine hits every row
alike. Per row, each the median over the runs:

* ``wall ms``: the whole process (``python -c "<imports>"``), interpreter start and exit included;
* ``CPU ms``: user + system time of that process (``os.wait4``), the number that holds up on a busy machine;
* ``imports ms``: the cumulative import time that ``python -X importtime`` reports for the row's top-level
  imports, split into ``torch`` (which every training job needs) and what comes on top of it
  (``beyond torch``); the heavy third-party packages that got loaded are listed with their cumulative time.

Reference rows (:data:`REFERENCE`): ``python -c pass`` (the interpreter alone), ``import torch``, the Snakemake
preamble, torchmetrics and pandas, and ``fit's metrics``: what a fit job computes for each evaluation set (the
classification metrics and the reliability bins), i.e. the imports it triggers while it runs.

    python benchmarks/startup.py                         # every workflow script, 5 runs each
    python benchmarks/startup.py --runs 9 --preamble     # with Snakemake's preamble in front of every script
    python benchmarks/startup.py --modules bayes_transfer.stages.experiment bayes_transfer.results.plots
    python benchmarks/startup.py --json benchmarks/out/startup.json
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
#: what Snakemake's preamble imports in every ``script:`` job (snakemake/script/__init__.py, generate_preamble)
PREAMBLE = "import pickle\nfrom snakemake.logging import logger\nfrom snakemake.iocontainers import Snakemake"
#: what fit_stage computes for each evaluation set (classification metrics and reliability bins), on a tiny input:
#: the imports these trigger while a fit job runs (older trees without reliability_table use the DataFrame)
FIT_METRICS = """import torch
from bayes_transfer.results import metrics as m
p, y = torch.tensor([[0.7, 0.3], [0.4, 0.6]]), torch.tensor([0, 0])
m.classification_metrics(p, y, 2)
m.reliability_table(p, y) if hasattr(m, "reliability_table") else m.reliability_bins(p, y).to_dict(orient="list")"""
#: a training job's first optimiser calls (torch wraps them so that the first one imports torch._dynamo), plain
#: and after bayes_transfer.device.run_eagerly(), which every stage job calls through set_threads
FIRST_OPTIMISER = """import torch
opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
opt.zero_grad()
opt.load_state_dict(opt.state_dict())"""
EAGER_OPTIMISER = "from bayes_transfer.device import run_eagerly\nrun_eagerly()\n" + FIRST_OPTIMISER
#: reference rows: the interpreter alone, torch, Snakemake's preamble, torchmetrics (which the ECE of every fit
#: used to import), pandas (what the tables and audit jobs read with) and what a fit job's metrics import
REFERENCE = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "snakemake preamble": PREAMBLE,
    "import torch, torchmetrics": "import torch\nimport torchmetrics",
    "import pandas": "import pandas",
    "fit's metrics": FIT_METRICS,
    "first optimiser calls": FIRST_OPTIMISER,
    "first optimiser calls, run_eagerly": EAGER_OPTIMISER,
}
#: third-party packages whose cumulative import time is reported when a row loads them
HEAVY = ("torch", "numpy", "pandas", "torchmetrics", "torchvision", "matplotlib", "seaborn", "scipy", "sklearn",
         "segmentation_models_pytorch", "timm", "PIL", "yaml", "jsonschema", "snakemake")


def script_imports(path: Path) -> str:
    """The top-level import statements of ``path`` as source (``__future__`` and ``sys``/``pathlib`` skipped)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Import) and all(a.name in ("sys", "os") for a in node.names):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "pathlib":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.append(ast.unparse(node))
    return "\n".join(lines)


def parse_importtime(stderr: str) -> dict[str, float]:
    """``{"total": ms, name: cumulative ms}`` from ``-X importtime`` output (``total``: the top-level imports)."""
    out: dict[str, float] = {"total": 0.0}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        depth = len(name) - len(name.lstrip(" "))
        name = name.strip()
        ms = int(cumulative_us) / 1000.0
        if depth <= 1:  # a top-level import of the measured code (one space follows the bar)
            out["total"] += ms
        if name in HEAVY and name not in out:
            out[name] = ms
    return out


def run_once(code: str, importtime: bool) -> tuple[float, float, str]:
    """(wall ms, CPU ms = user + system of the child, stderr) of one fresh interpreter running ``code``."""
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-c", code]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - t0) * 1000.0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({code!r}):\n{stderr[-2000:]}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000.0, stderr


def measure(rows: dict[str, str], runs: int) -> dict[str, dict]:
    """Median wall and import times per row; rounds rotate the row order."""
    walls: dict[str, list[float]] = {k: [] for k in rows}
    cpus: dict[str, list[float]] = {k: [] for k in rows}
    times: dict[str, list[dict]] = {k: [] for k in rows}
    names = list(rows)
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            wall, cpu, _ = run_once(rows[name], importtime=False)
            walls[name].append(wall)
            cpus[name].append(cpu)
            _, _, err = run_once(rows[name], importtime=True)
            times[name].append(parse_importtime(err))
    result = {}
    for name in names:
        keys = set().union(*times[name])
        med = {k: statistics.median(t.get(k, 0.0) for t in times[name]) for k in keys}
        result[name] = {"code": rows[name], "wall_ms": statistics.median(walls[name]),
                        "cpu_ms": statistics.median(cpus[name]), "imports_ms": med.pop("total"),
                        "packages_ms": dict(sorted(med.items(), key=lambda kv: -kv[1]))}
    return result


def table(result: dict[str, dict]) -> str:
    lines = ["| row | wall ms | CPU ms | imports ms | torch ms | beyond torch ms | heavy packages loaded (cumulative ms) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in result.items():
        torch_ms = r["packages_ms"].get("torch", 0.0)
        heavy = ", ".join(f"{k} {v:.0f}" for k, v in r["packages_ms"].items() if k != "torch") or "-"
        lines.append(f"| {name} | {r['wall_ms']:.0f} | {r['cpu_ms']:.0f} | {r['imports_ms']:.0f} | {torch_ms:.0f} | "
                     f"{r['imports_ms'] - torch_ms:.0f} | {heavy} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per row (the median is reported)")
    parser.add_argument("--scripts", nargs="*", type=Path, default=None,
                        help="workflow scripts to measure (default: every workflow/scripts/*.py)")
    parser.add_argument("--modules", nargs="*", default=None, help="measure 'import MODULE' rows instead of scripts")
    parser.add_argument("--preamble", action="store_true", help="put Snakemake's preamble in front of every script")
    parser.add_argument("--no-reference", action="store_true", help="skip the python/torch/preamble rows")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    rows: dict[str, str] = {}
    if not args.no_reference:
        rows |= REFERENCE
    if args.modules is not None:
        rows |= {m: f"import {m}" for m in args.modules}
    else:
        for path in args.scripts or sorted(SCRIPTS.glob("*.py")):
            code = script_imports(Path(path))
            rows[Path(path).name] = (PREAMBLE + "\n" + code) if args.preamble else code
    result = measure(rows, args.runs)
    print(f"# start-up: median of {args.runs} runs, Python {platform.python_version()}, {platform.machine()}, "
          f"{sys.executable}")
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "python": sys.version, "rows": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
