"""Helpers of the fault tests (tests/workflow/test_chaos.py, tests/cluster/test_preemption.py): start, kill and
recover a Snakemake run, check that every result file on disk is whole, and read from Snakemake's own logs which
jobs ran to the end.

Kept apart from the tests so each reads as its scenario: reference run, interruptions, recovery, checks.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
#: columns of the tidy tables that record how long a run took, not what it computed: never equal across runs
TIMING_COLUMNS = ("wall_time_s",)


def snakemake(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own session (process group), so a SIGKILL of the group is the loss of the whole node."""
    return subprocess.Popen([*SNAKEMAKE, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def running_jobs(snakemake_pid: int) -> dict[int, str]:
    """Pid -> script name of the rule scripts Snakemake runs now (``python .snakemake/scripts/tmp….<script>.py``)."""
    jobs = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        scripts = [part.decode() for part in cmd if b".snakemake/scripts/" in part]
        if ppid == snakemake_pid and scripts:
            jobs[int(proc.name)] = scripts[0].rsplit(".", 2)[-2]
    return dict(sorted(jobs.items()))


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)


def incomplete_outputs(workdir: Path) -> set[str]:
    """The outputs Snakemake has flagged incomplete (a job started on them and did not finish)."""
    marks = workdir / ".snakemake" / "incomplete"
    out = set()
    for mark in marks.rglob("*") if marks.is_dir() else []:
        if mark.is_file():
            try:
                out.add(base64.urlsafe_b64decode(mark.name.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                out.add(mark.name)
    return out


def _is_temporary(path: Path) -> bool:
    """An atomic writer's temporary file (bayes_transfer.io: ``.<name>.<pid>.<random>.tmp``), never an output."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def unreadable_files(results: Path) -> tuple[list[str], list[str]]:
    """(problems, temporaries): every result file that does not parse, and the writers' temporary files left.

    .csv and .tsv parse with pandas (and csv: the same number of fields on every row), .json with json,
    .pt/.pth with the project's integrity check (torch.load, then the tensor checksum), resume states
    (.ckpt) with torch.load, .png with Pillow's verify; logs are appended while a job runs and are not checked.
    """
    import pandas as pd
    import torch

    from bayes_transfer.integrity import load_torch_file

    problems, temporaries = [], []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        rel = str(path.relative_to(results.parent))
        if _is_temporary(path):
            temporaries.append(rel)
            continue
        try:
            if path.suffix in (".csv", ".tsv"):
                sep = "\t" if path.suffix == ".tsv" else ","
                text = path.read_text()
                pd.read_csv(io.StringIO(text), sep=sep)
                widths = {len(row) for row in csv.reader(io.StringIO(text), delimiter=sep) if row}
                if len(widths) > 1:
                    raise ValueError(f"rows of {sorted(widths)} fields")
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".pt", ".pth"):
                load_torch_file(path)
            elif path.suffix == ".ckpt":
                torch.load(path, weights_only=False)
            elif path.suffix == ".png":
                from PIL import Image

                with Image.open(path) as im:
                    im.verify()
            elif path.suffix != ".log" and path.stat().st_size == 0:
                raise ValueError("empty file")
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{rel}: {type(exc).__name__}: {str(exc)[:200]}")
    return problems, temporaries


def table_text(path: Path) -> bytes:
    """The bytes of a table; of a tidy CSV with a timing column, the bytes with that column removed."""
    raw = path.read_bytes()
    if path.suffix != ".csv":
        return raw
    rows = list(csv.reader(io.StringIO(raw.decode())))
    drop = [i for i, name in enumerate(rows[0] if rows else []) if name in TIMING_COLUMNS]
    if not drop:
        return raw
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[v for i, v in enumerate(r) if i not in drop] for r in rows])
    return buf.getvalue().encode()


def differing_tables(reference: Path, other: Path, dirs=("results/tables", "results/audit"),
                     require_all: bool = True) -> list[str]:
    """The tables under ``dirs`` that differ between two copies (or, with require_all, exist in one only)."""
    diffs = []
    for d in dirs:
        names = {p.name for p in (reference / d).glob("*") if p.is_file()}
        mine = {p.name for p in (other / d).glob("*") if p.is_file() and not _is_temporary(p)}
        for name in sorted(names | mine):
            a, b = reference / d / name, other / d / name
            if not b.exists():
                if require_all:
                    diffs.append(f"{d}/{name}: missing")
            elif not a.exists():
                diffs.append(f"{d}/{name}: not in the reference run")
            elif table_text(a) != table_text(b):
                diffs.append(f"{d}/{name}: differs")
    return diffs


_JOB = re.compile(r"^\s*(?:local)?rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(output|jobid): (.*)$")
_DONE = re.compile(r"Finished jobid: (\d+)")


def finished_jobs(workdir: Path) -> list[tuple[str, str, str]]:
    """(log, rule, outputs) of every job any Snakemake run in ``workdir`` reported finished, from its logs."""
    done = []
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        jobs, rule, fields = {}, None, {}
        for line in log.read_text().splitlines():
            if m := _JOB.match(line):
                rule, fields = m.group(1), {}
            elif rule and (m := _FIELD.match(line)):
                fields[m.group(1)] = m.group(2).strip()
                if "jobid" in fields:
                    jobs[fields["jobid"]] = (rule, fields.get("output", ""))
                    rule = None
            elif m := _DONE.search(line):
                if m.group(1) in jobs:
                    done.append((log.name, *jobs[m.group(1)]))
    return done


def wait_until(predicate, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()
