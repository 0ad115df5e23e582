"""The one-node Slurm cluster of the tests in this folder (tests/cluster/slurm_support.py starts it), once per
test session: the profiles' smoke runs (test_slurm.py) and the preemption test (test_preemption.py) share it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_support import install_slurm, run, skip, start_munge, write_conf


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("Slurm cannot start here: the test starts munged/slurmctld/slurmd and needs root on Linux")
    install_slurm()
    munged = start_munge()
    base = tmp_path_factory.mktemp("slurm")
    conf = Path("/etc/slurm/slurm.conf")
    backup = base / "slurm.conf.before"
    if conf.exists():
        shutil.copy2(conf, backup)
    conf.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(write_conf(base), conf)
    env = dict(os.environ, SLURM_CONF=str(conf))
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                            stderr=open(base / f"{daemon}.stderr", "w")))
            time.sleep(1)
        for _ in range(60):
            if any(d.poll() is not None for d in daemons):
                skip("a Slurm daemon exited", base / "slurmctld.log")
            sinfo = run(["sinfo", "-h", "-o", "%t"], env=env, timeout=20)
            if sinfo.returncode == 0 and sinfo.stdout.strip() in ("idle", "mix", "alloc"):
                break
            time.sleep(1)
        else:
            skip(f"the node never became idle (sinfo: {sinfo.stdout.strip()} {sinfo.stderr.strip()})",
                  base / "slurmd.log")
        yield {"env": env, "base": base}
    finally:
        for d in reversed(daemons):
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
                try:
                    d.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    d.kill()
        if munged is not None:
            try:
                os.kill(munged, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if backup.exists():
            shutil.copy2(backup, conf)
        else:
            conf.unlink(missing_ok=True)
