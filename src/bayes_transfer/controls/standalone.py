"""Both controls end to end, measured: ``python -m bayes_transfer.controls [--out DIR]``.

Runs :func:`~bayes_transfer.controls.run.run_control` for the positive and the negative control, judges each with
:func:`~bayes_transfer.controls.run.control_verdicts` (the audit's C3, C4, C10), checks the verdicts against
what each control must show (:func:`expected_outcome`) and writes, under ``--out``: ``runs_<variant>.csv`` (the
rows of results/tables/runs.csv), ``claims.csv`` and ``parts.csv`` (the audit's columns plus ``control``) and
``controls.json`` (verdicts, effects, the prior's subspace shares, CPU seconds per stage, the threads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bayes_transfer.controls.run import ControlSettings, control_verdicts, run_control
from bayes_transfer.controls.task import VARIANTS
from bayes_transfer.controls.view import outcome
from bayes_transfer.io import atomic_write_text, write_csv

__all__ = ["expected_outcome", "run_controls", "main"]


def expected_outcome(variant: str, claims: pd.DataFrame) -> dict:
    """``{"passed": bool, "why": str}``: the positive control passes when C3 and C10 are supported; the negative
    one when none of C3, C4, C10 is (the rule: :func:`bayes_transfer.controls.view.outcome`)."""
    return outcome(variant, dict(zip(claims["claim"], claims["verdict"])))


def run_controls(out: str | Path, settings: ControlSettings | None = None, workdir: str | Path | None = None,
                 variants=VARIANTS) -> dict:
    """Run and judge the controls; write the files listed in the module docstring under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
               "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
               "load_average_start": os.getloadavg(), "controls": {}}
    claims, parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            r = run_control(variant, workdir or tmp, settings)
            write_csv(out / f"runs_{variant}.csv", r.runs)
            v = control_verdicts(r.runs)
            claims.append(v["claims"].assign(control=variant))
            parts.append(v["parts"].assign(control=variant))
            summary["controls"][variant] = {
                "cpu_s": round(r.cpu_s, 2), "wall_s": round(r.wall_s, 2),
                "stage_cpu_s": {k: round(x, 2) for k, x in r.stage_cpu_s.items()},
                "prior_shares": r.prior_shares, "shared_vs_nuisance_contrast": r.contrast,
                "outcome": expected_outcome(variant, v["claims"]),
                "claims": v["claims"][["claim", "verdict", "decisive_part", "effect", "unit", "ci_low", "ci_high",
                                       "d_z", "p_value", "n_pairs"]].to_dict("records"),
                "parts": v["parts"][["part", "verdict", "effect", "ci_low", "ci_high", "d_z", "p_value",
                                     "n_pairs", "n_dropped"]].to_dict("records"),
                "n_runs": int(r.runs["path"].nunique()), "n_failed": int((~r.runs["success"]).sum()),
            }
    summary["load_average_end"] = os.getloadavg()
    summary["cpu_s_total"] = round(sum(c["cpu_s"] for c in summary["controls"].values()), 2)
    write_csv(out / "claims.csv", pd.concat(claims, ignore_index=True))
    write_csv(out / "parts.csv", pd.concat(parts, ignore_index=True))
    atomic_write_text(out / "controls.json", json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bayes_transfer.controls", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/controls", help="directory for the tables and controls.json")
    ap.add_argument("--workdir", default=None, help="keep the stage files here (default: a temporary directory)")
    args = ap.parse_args(argv)
    s = run_controls(args.out, workdir=args.workdir)
    for variant, c in s["controls"].items():
        print(f"{variant} control ({c['cpu_s']} CPU-s): {'PASS' if c['outcome']['passed'] else 'FAIL'} "
              f"({c['outcome']['why']})")
        for row in c["claims"]:
            print(f"  {row['claim']}: {row['verdict']} ({row['decisive_part']}: {row['effect']:+.2f} {row['unit']}, "
                  f"CI {row['ci_low']:+.2f}..{row['ci_high']:+.2f}, p {row['p_value']:.2g}, {row['n_pairs']} pairs)")
    print(f"total {s['cpu_s_total']} CPU-s; files in {args.out}")
    return 0 if all(c["outcome"]["passed"] for c in s["controls"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
