"""Resumable training: a job killed mid-way and run again continues from its last state, same numbers on CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.models.resnets import build_model
from bayes_transfer.objectives.pretrain import PretrainConfig, SourceObjective, pretrain
from bayes_transfer.inference.batches import BatchStream
from bayes_transfer.inference.loop import Hyper, fit
from bayes_transfer.inference.state import Checkpointing, remove_checkpoints, resumable, state_path
from stiff_prior import stiff_prior

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs, no cleanup in the code under test."""


def _data(n=48, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g))


class NoisyImages(Dataset):
    """A dataset read item by item (the DataLoader path) whose augmentation draws from torch's global RNG,
    like torchvision's random transforms in a loader without workers."""

    def __init__(self, base: TensorDataset):
        self.base = base
        self.targets = base.tensors[1].tolist()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x + 0.1 * torch.randn(x.shape), int(y)


_stiff_prior = stiff_prior


def _fit(train, inference, prefix=None, kill_at=None, every=4, checkpoint=None, prior=False, nesterov=False):
    torch.manual_seed(1)
    model = build_model("small_resnet", 3)
    hp = Hyper(steps=20, batch_size=8, lr=0.05, cycles=2, samples_per_cycle=2, log_every=1)
    backbone_prior = _stiff_prior(model) if prior else None

    def hook(step, record):
        if kill_at is not None and step == kill_at:
            raise Killed

    with resumable(prefix or "unused", every if prefix else 0):
        return fit(model, train, inference=inference, hp=hp, eval_sets={"test": _data(20, seed=9)}, seed=3,
                   on_step=hook, checkpoint=checkpoint, backbone_prior=backbone_prior, nesterov=nesterov), model


@pytest.mark.parametrize("inference, loader, prior, nesterov", [
    ("sgd", False, False, False), ("sghmc", False, False, False), ("sgld", True, False, False),
    # the split optimizers of a stiff learned prior (ProximalSGD, PreconditionedSGHMC, ExponentialSGLD)
    ("sgd", False, True, True), ("sghmc", False, True, True), ("sghmc", False, True, False),
    ("sgld", False, True, False)])
def test_killed_fit_resumes_with_identical_numbers(tmp_path, inference, loader, prior, nesterov):
    train = NoisyImages(_data()) if loader else _data()
    kw = dict(prior=prior, nesterov=nesterov)
    reference, ref_model = _fit(train, inference, **kw)
    assert reference.success, reference.reason
    assert (reference.prior_energy is not None) == prior
    prefix = tmp_path / "seed0.json"
    with pytest.raises(Killed):
        _fit(train, inference, prefix, kill_at=10, **kw)  # states saved after steps 4 and 8
    state = tmp_path / "seed0.json.fit0.ckpt"
    assert state.is_file() and torch.load(state, weights_only=False)["step"] == 8
    resumed, model = _fit(train, inference, prefix, **kw)
    assert resumed.success and resumed.steps_run == 20 and resumed.num_samples == reference.num_samples
    assert torch.equal(resumed.probs["test"], reference.probs["test"])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
    assert resumed.prior_energy == reference.prior_energy
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), name
    # a finished fit's result is kept: running the job again does not train again
    again, _ = _fit(train, inference, prefix, kill_at=0, **kw)
    assert torch.equal(again.probs["test"], reference.probs["test"])
    remove_checkpoints(prefix)
    assert not list(tmp_path.iterdir())


def test_an_explicit_state_path_resumes_like_a_resumable_block(tmp_path):
    """The one design: a fit given a Checkpointing (as segmentation runs are) saves and resumes the same way."""
    train = _data()
    reference, _ = _fit(train, "sghmc")

    def explicit(kill_at=None):  # inside a resumable block, which gives an explicit checkpoint no path
        return _fit(train, "sghmc", tmp_path / "block", kill_at,
                    checkpoint=Checkpointing(state_path(tmp_path / "run"), 4, {"data": "x"}))[0]

    with pytest.raises(Killed):
        explicit(kill_at=13)
    assert torch.load(tmp_path / "run.fit0.ckpt", weights_only=False)["step"] == 12
    resumed = explicit()
    assert torch.equal(resumed.probs["test"], reference.probs["test"]) and resumed.history == reference.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.fit0.ckpt"]
    with pytest.raises(ValueError, match="interval"):
        Checkpointing(tmp_path / "x", 0)


def test_removing_the_states_also_removes_the_temporaries_of_interrupted_state_writes(tmp_path):
    """A job stopped inside a save (a Slurm requeue or scancel lands anywhere) leaves the writer's temporary
    file (bayes_transfer.io: .<name>.<pid>.<random>.tmp); the job that finishes removes those of its states
    and its output with its states, and leaves every other job's files alone."""
    mine = ["seed0.json.fit0.ckpt", "seed0.json.fit3.ckpt", "seed0.json.point2.fit0.ckpt",
            ".seed0.json.fit0.ckpt.3195.d0d897cc.tmp", ".seed0.json.point2.fit1.ckpt.77.0a1b2c3d.tmp",
            ".seed0.json.51.aaaaaaaa.tmp"]
    others = ["seed0.json", "seed1.json.fit0.ckpt", ".seed1.json.fit0.ckpt.12.ffffffff.tmp",
              ".seed1.json.8.bbbbbbbb.tmp", "seed0.jsonl"]  # another seed's; another file
    for name in mine + others:
        (tmp_path / name).write_bytes(b"x")
    remove_checkpoints(tmp_path / "seed0.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_a_state_saved_with_other_settings_is_not_resumed(tmp_path):
    """A config change reruns the job: a stale state of the old settings must not be continued."""
    train = _data()
    prefix = tmp_path / "seed0.json"
    with pytest.raises(Killed):
        _fit(train, "sgd", prefix, kill_at=10)

    def fresh_fit(prefix):
        torch.manual_seed(1)
        model = build_model("small_resnet", 3)
        hp = Hyper(steps=20, batch_size=8, lr=0.01, log_every=1)  # another learning rate
        with resumable(prefix, 4):
            return fit(model, train, inference="sgd", hp=hp, eval_sets={"test": _data(20, seed=9)}, seed=3)

    changed = fresh_fit(prefix)
    reference = fresh_fit(tmp_path / "other")
    assert torch.equal(changed.probs["test"], reference.probs["test"])


def test_batch_stream_state_roundtrip():
    ds = _data(37)
    a = BatchStream(ds, 8, torch.Generator().manual_seed(5), "cpu")
    for _ in range(6):  # into the second epoch
        next(a)
    b = BatchStream(ds, 8, torch.Generator().manual_seed(123), "cpu")
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert torch.equal(next(a)[1], next(b)[1])


def test_batch_stream_loader_with_workers_yields_and_saves_the_same_positions():
    """Workers prefetch ahead of use; the saved position is still the one after the last batch used."""
    from bayes_transfer.device import RuntimeOptions

    ds = NoisyImages(_data(37))
    plain = BatchStream(ds, 8, torch.Generator().manual_seed(5), "cpu")
    workers = BatchStream(ds, 8, torch.Generator().manual_seed(5), "cpu", RuntimeOptions(num_workers=2))
    for _ in range(7):
        assert torch.equal(next(plain)[1], next(workers)[1])
    a, b = plain.state_dict(), workers.state_dict()
    assert (a["epoch"], a["pos"]) == (b["epoch"], b["pos"]) == (1, 24)
    assert torch.equal(a["epoch_state"], b["epoch_state"])
    resumed = BatchStream(ds, 8, torch.Generator(), "cpu", RuntimeOptions(num_workers=2))
    resumed.load_state_dict(b)
    for _ in range(6):
        assert torch.equal(next(plain)[1], next(resumed)[1])


def _kill_after_saves(monkeypatch, module, saves):
    import bayes_transfer.inference.state as state_mod

    calls = []

    def save_then_maybe_die(obj, path):
        state_mod.save_state(obj, path)
        calls.append(obj["step"])
        if len(calls) == saves:
            raise Killed

    monkeypatch.setattr(module, "save_state", save_then_maybe_die)
    return calls


@pytest.mark.parametrize("kind", ["supervised", "simclr"])
def test_killed_pretraining_resumes(tmp_path, monkeypatch, kind):
    import bayes_transfer.objectives.pretrain as pretrain_mod
    from bayes_transfer.data.digits import augment

    cfg = PretrainConfig(steps=12, batch_size=8, log_every=1)
    kwargs = dict(augment=augment, seed=0, device="cpu")

    ref_model, ref_obj, ref_hist = pretrain("small_resnet", kind, _data(), 3, cfg, **kwargs)
    ckpt = tmp_path / "simclr.pt.ckpt"
    calls = _kill_after_saves(monkeypatch, pretrain_mod, 2)
    with pytest.raises(Killed):
        pretrain("small_resnet", kind, _data(), 3, cfg, checkpoint_path=ckpt, checkpoint_every=3, **kwargs)
    assert calls == [3, 6]
    monkeypatch.undo()
    model, obj, hist = pretrain("small_resnet", kind, _data(), 3, cfg, checkpoint_path=ckpt, checkpoint_every=3,
                                **kwargs)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    for a, b in zip(list(model.state_dict().values()) + list(obj.state_dict().values()),
                    list(ref_model.state_dict().values()) + list(ref_obj.state_dict().values())):
        assert torch.equal(a, b)


def test_killed_swag_resumes_with_the_same_prior(tmp_path, monkeypatch):
    import bayes_transfer.priors.learning as learn_prior_mod

    cfg = SWAGConfig(cycles=4, steps_per_cycle=3, batch_size=8, max_rank=3, lr=0.05, burn_in_cycles=1)

    def run(**kw):
        torch.manual_seed(2)
        model = build_model("small_resnet", 3)
        return learn_prior(model, SourceObjective("supervised"), _data(), cfg, seed=1, **kw)

    reference = run()
    ckpt = tmp_path / "prior.pt.ckpt"
    calls = _kill_after_saves(monkeypatch, learn_prior_mod, 2)
    with pytest.raises(Killed):
        run(checkpoint_path=ckpt, checkpoint_every=4)
    assert calls == [4, 8]  # killed after 8 of 12 steps: 1 of 3 snapshots taken (the first cycle is burn-in)
    monkeypatch.undo()
    prior = run(checkpoint_path=ckpt, checkpoint_every=4)
    for attr in ("mean", "variance", "factor"):
        assert torch.equal(getattr(prior, attr), getattr(reference, attr)), attr
    assert prior.metadata["n_snapshots"] == 3
    assert prior.metadata["diagnostics"] == reference.metadata["diagnostics"]  # the trend moments resumed too


# ------------------------------------------------------------------ a real job, SIGKILLed and resubmitted
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
#: the smoke config (kept valid by the workflow's owners) with one method, one size and long enough fits
RESUME_OVERRIDES = {
    "methods": ["sgd_transfer"],
    "sizes": [25],
    "seeds": [0, 1],
    "train": {"steps": 600, "log_every": 50},
    "tuning": {"grids": {"sgd_transfer": {"lr": [0.05]}}},
    "resume": {"checkpoint_every": 25},
}
FIT = "results/runs/supervised/sgd_transfer/n25/seed{}.json"


def _snakemake(cwd, *args, timeout=600):
    return subprocess.run([*SNAKEMAKE, "--configfile", "resume.yaml", "--cores", "1", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sigkilled_fit_job_resubmitted_resumes_and_ends_with_the_same_numbers(tmp_path, copy_workflow):
    base = copy_workflow(tmp_path / "base")
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    for key, value in RESUME_OVERRIDES.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    cfg["tuning"]["grids"] = RESUME_OVERRIDES["tuning"]["grids"]
    (base / "resume.yaml").write_text(yaml.safe_dump(cfg))
    # the job's inputs (checkpoint, tuning) once; then the fit job uninterrupted in one copy, killed in another
    out = _snakemake(base, "results/tuning/supervised/sgd_transfer/n25.json")
    assert out.returncode == 0, out.stderr[-3000:]
    killed = tmp_path / "killed"
    shutil.copytree(base, killed, symlinks=True)
    out = _snakemake(base, FIT.format(0))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not list((base / "results" / "runs").rglob("*.ckpt"))  # removed once the job finished

    proc = subprocess.Popen([*SNAKEMAKE, "--configfile", "resume.yaml", "--cores", "1", FIT.format(0)],
                            cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = killed / (FIT.format(0) + ".fit0.ckpt")
    deadline = time.time() + 300
    while time.time() < deadline and not state.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "the job never saved a state"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, like a preempted Slurm allocation
    proc.wait(timeout=60)
    saved_step = torch.load(state, weights_only=False)["step"]
    assert not (killed / FIT.format(1)).exists()

    # a killed snakemake leaves its lock (inside a Slurm job there is none: job steps run with --nolock)
    assert _snakemake(killed, "--unlock").returncode == 0
    out = _snakemake(killed, FIT.format(0), "--rerun-incomplete")  # what the Slurm profile does
    assert out.returncode == 0, out.stderr[-3000:]
    # one fit job for the method's sizes (workflow.sizes_per_job: all; here the one size, n = 25)
    log = (killed / "results/logs/fit/supervised/sgd_transfer.log").read_text()
    assert "resumed at step" in log, log[-2000:]
    for seed in (0, 1):
        a = json.loads((base / FIT.format(seed)).read_text())
        b = json.loads((killed / FIT.format(seed)).read_text())
        assert a["metrics"] == b["metrics"] and a["diagnostics"]["final_loss"] == b["diagnostics"]["final_loss"]
    assert not list((killed / "results" / "runs").rglob("*.ckpt"))
    assert saved_step < 600
