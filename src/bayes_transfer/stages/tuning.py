"""Tuning cut into cluster-shaped jobs, and budgeted tuning by successive halving.

The protocol (data, score, flags) is :func:`bayes_transfer.stages.experiment.tune_stage`'s; this module runs it
in other shapes (``workflow.tune_split``, ``tuning.strategy``) and writes the same tuning file:

- :func:`tune_sizes`: every size of one method in one job (``tune_split: method`` or ``size``), all rungs of
  successive halving in-process (the grid strategy runs :func:`~bayes_transfer.stages.experiment.tune_stage`);
- :func:`point_stage`: ``workflow.points_per_job`` grid points of one rung at one size (``tune_split: point``);
  rung 0's slot j is grid point j, a later rung's slot j the j-th best point of the rung before
  (:func:`rung_stage`'s ranking); a slot without a point (fewer successful points than slots) stays empty;
- :func:`rung_stage`: the ranking of one rung's points and the points promoted to the next (a small job);
- :func:`select_stage`: the selection among the last rung's points, written as the tuning file (a small job).

With the grid strategy the selection, its flags and the rows equal :func:`tune_stage`'s whatever the split
(tests/stages/test_halving.py). Successive halving's files add ``strategy``, ``rungs`` (each rung's steps,
grid indices and rows) and ``cost`` (fits and training steps); ``grid`` is the last rung's rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from bayes_transfer.device import get_device
from bayes_transfer.inference.loop import Hyper
from bayes_transfer.inference.methods import run_method
from bayes_transfer.inference.state import remove_checkpoints, resumable
from bayes_transfer.integrity import input_checksums
from bayes_transfer.io import write_json
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.stages import halving, selection
from bayes_transfer.stages.experiment import _flags, _labels_tensor, _point_metrics
from bayes_transfer.stages.job import code_version
from bayes_transfer.stages.source import load_pretrained
from bayes_transfer.stages.task import Task, load_task, tuning_data

log = logging.getLogger("bayes_transfer.stages.tuning")

NAN_SCORES = {"nll": float("nan"), "accuracy": float("nan"), "error": float("nan")}


@dataclass
class Tuning:
    """One method's tuning setting (the config slices of a tune job) with its task, network and grid points."""

    method: str
    pretraining: str
    checkpoint: str
    prior_path: str | None
    data_cfg: Mapping
    model_cfg: Mapping
    train_cfg: Mapping
    grid: Mapping
    tuning_cfg: Mapping
    device: str | None = None
    task: Task = field(init=False)
    _data: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.task = load_task(self.data_cfg)
        cfg = self.tuning_cfg
        self.seed = int(cfg.get("seed", 1000))
        self.metric = cfg.get("metric") or self.task.metric
        self.score = cfg.get("score", "nll")
        self.validation = cfg.get("validation") or ("task" if self.task.val is not None else "holdout")
        selection.sort_key({"nll": 0.0, "error": 0.0}, self.score)  # a clear error for an unknown score
        self.wd_over_lr = bool(cfg.get("weight_decay_over_lr", True))
        self.points = selection.expand_grid(self.grid, self.wd_over_lr, self.train_cfg.get("lr", Hyper.lr))
        self.schedule = halving.plan(len(self.points), int(self.train_cfg.get("steps", Hyper.steps)), cfg,
                                     halving.min_fit_steps(self.method, self.train_cfg))
        self._state = self._prior = None

    def data(self, n: int):
        if n not in self._data:
            self._data[n] = tuning_data(self.task, n, self.seed, self.validation,
                                        float(self.tuning_cfg.get("holdout_fraction", 0.3)))
        return self._data[n]

    def inputs(self) -> dict:
        """The checksums of what a tuning file is computed from (as tune_stage records them)."""
        return input_checksums({"data": self.data_cfg, "model": self.model_cfg, "train": self.train_cfg,
                                "grid": self.grid, "tuning": self.tuning_cfg},
                               checkpoint=self.checkpoint, prior=self.prior_path)

    def fit(self, n: int, index: int, steps: int, prefix: str, checkpoint_every: int = 0) -> dict:
        """Grid point ``index`` fitted for ``steps`` steps on the size's tuning data: its row (as tune_stage's)."""
        if self._state is None:
            self._state = load_pretrained(self.checkpoint)["state_dict"]
            self._prior = GaussianPrior.load(self.prior_path) if self.prior_path else None
        train, val = self.data(n)
        point, fitted = self.points[index]
        hp = Hyper.from_dict(dict(self.train_cfg) | fitted | {"steps": int(steps)})
        with resumable(prefix, checkpoint_every):
            res = run_method(self.method, arch=self.model_cfg["arch"], pretrained_state=self._state,
                             num_classes=self.task.num_classes, train_set=train, eval_sets={"val": val}, hp=hp,
                             seed=self.seed, learned_prior=self._prior, device=get_device(self.device),
                             arch_kwargs=self.model_cfg.get("kwargs"))
        m = (_point_metrics(self.task, res.probs["val"], _labels_tensor(self.task, val), self.metric)
             if res.success else dict(NAN_SCORES))
        log.info("tune %s n=%d %s steps %d -> nll %.4f accuracy %.4f %s", self.method, n, point, steps, m["nll"],
                 m["accuracy"], res.reason)
        return {"values": point, "fitted": fitted, **m, "success": res.success, "reason": res.reason,
                # ranked after every point above chance (selection.sort_key)
                "at_chance": bool(res.success and selection.at_chance(m["accuracy"], self.task.num_classes,
                                                                      len(val)))}

    def record(self, n: int, best: Mapping | None, rows: list, rungs: list | None, wall: float,
               inputs: Mapping, out: str, counts: tuple[int, int] | None = None) -> dict:
        """The tuning file of size n (tune_stage's fields; successive halving adds strategy, rungs and cost).
        ``counts``: (training, validation) examples, when the slot files give them."""
        n_train, n_val = counts or tuple(len(ds) for ds in self.data(n))
        flags = _flags(self.task, self.grid, best, n_val)
        if best is not None and (flags["edge"] or flags["chance"] or flags["small_validation"]):
            log.warning("tune %s %s n=%d: selection %s flagged %s (%s)", self.method, self.pretraining, n,
                        best["values"], {k: v for k, v in flags.items() if v}, out)
        result = {
            "method": self.method, "pretraining": self.pretraining, "n_train": n, "metric": self.metric,
            "score": self.score, "validation": self.validation, "tuning_seed": self.seed,
            "n_tune_train": n_train, "n_tune_val": n_val, "weight_decay_over_lr": self.wd_over_lr,
            "grid": rows, "selected": best["fitted"] if best else None,
            "selected_grid": best["values"] if best else None,
            "selected_scores": {k: best[k] for k in ("nll", "accuracy", "error")} if best else None,
            "chance_accuracy": selection.chance_accuracy(self.task.num_classes, n_val), **flags,
            "success": best is not None, "reason": "" if best else "every grid point failed",
            "wall_time_s": wall, "code_version": code_version(),
        }
        if rungs is not None:
            result |= {"strategy": "successive_halving", "rungs": rungs, "cost": halving.cost(rungs)}
        result["inputs"] = dict(inputs)
        return result


def tune_sizes(setting: Tuning, sizes: Sequence[int], outs: Sequence[str], checkpoint_every: int = 0) -> list[dict]:
    """Successive halving (all rungs in this process) at each size; one tuning file per size."""
    if len(outs) != len(sizes):
        raise ValueError("one output path per training size is needed")
    results = []
    for n, out in zip(sizes, outs):
        t0 = time.perf_counter()
        best, rungs = halving.run_halving(
            len(setting.points), lambda i, steps, r: setting.fit(n, i, steps, f"{out}.rung{r}.point{i}",
                                                                 checkpoint_every),
            setting.score, setting.schedule)
        result = setting.record(n, best, rungs[-1]["rows"], rungs, time.perf_counter() - t0, setting.inputs(), out)
        write_json(out, result)
        results.append(result)
    for out in outs:
        remove_checkpoints(out)
    return results


def parts(size: int, per_job: int) -> list[range]:
    """The slots of a rung of ``size`` points cut into jobs of ``per_job`` (workflow.points_per_job)."""
    if per_job < 1:
        raise ValueError(f"workflow.points_per_job must be >= 1, got {per_job}")
    return [range(a, min(a + per_job, size)) for a in range(0, size, per_job)]


def point_stage(setting: Tuning, n: int, rung: int, part: int, out: str, ranking: str | None = None,
                per_job: int = 1, checkpoint_every: int = 0) -> dict:
    """Part ``part`` (``per_job`` slots) of rung ``rung`` at size n. Rung 0's slot j is grid point j, a later
    rung's the j-th promoted point of ``ranking`` (the rung before's :func:`rung_stage` file); an empty slot (fewer
    successful points than slots) has ``index`` None."""
    if not 0 <= rung < len(setting.schedule):
        raise ValueError(f"rung {rung} out of range: the schedule has {len(setting.schedule)} rung(s)")
    steps, size = setting.schedule[rung]
    cut = parts(size, per_job)
    if not 0 <= part < len(cut):
        raise ValueError(f"part {part} out of range: rung {rung} has {len(cut)} part(s) of {per_job} point(s)")
    if rung:
        if ranking is None:
            raise ValueError(f"rung {rung} needs the ranking of rung {rung - 1}")
        promoted = json.loads(Path(ranking).read_text())["promoted"]
    train, val = setting.data(n)
    records = []
    for slot in cut[part]:
        index = slot if rung == 0 else (promoted[slot] if slot < len(promoted) else None)
        t0 = time.perf_counter()
        row = setting.fit(n, index, steps, f"{out}.slot{slot}", checkpoint_every) if index is not None else None
        records.append({"rung": rung, "slot": slot, "index": index, "steps": steps, "row": row,
                        "n_tune_train": len(train), "n_tune_val": len(val), "inputs": setting.inputs(),
                        "wall_time_s": time.perf_counter() - t0})
    result = {"method": setting.method, "pretraining": setting.pretraining, "n_train": n, "rung": rung,
              "part": part, "slots": records, "code_version": code_version()}
    write_json(out, result)
    remove_checkpoints(out)
    return result


def _read_slots(paths: Sequence[str], rung: int) -> list[dict]:
    """The slots of one rung from its part files, in slot order."""
    slots = []
    for p in paths:
        part = json.loads(Path(p).read_text())
        if part.get("rung") != rung:
            raise ValueError(f"{p}: a part of rung {part.get('rung')}, expected rung {rung}")
        slots += part["slots"]
    return sorted(slots, key=lambda s: s["slot"])


def _rung(slots: list[dict], rung: int, steps: int) -> dict:
    filled = [s for s in slots if s["index"] is not None]
    return {"rung": rung, "steps": int(steps), "points": [s["index"] for s in filled],
            "rows": [s["row"] for s in filled]}


def rung_stage(setting: Tuning, rung: int, slot_paths: Sequence[str], out: str) -> dict:
    """The points of rung ``rung`` (its part files) and those promoted to rung ``rung + 1``, best first."""
    if not 0 <= rung < len(setting.schedule) - 1:
        raise ValueError(f"rung {rung} has no next rung to promote to ({len(setting.schedule)} rung(s))")
    result = _rung(_read_slots(slot_paths, rung), rung, setting.schedule[rung][0])
    k = setting.schedule[rung + 1][1]
    result["promoted"] = [result["points"][i] for i in halving.promote(result["rows"], k, setting.score)]
    write_json(out, result)
    return result


def select_stage(setting: Tuning, n: int, slot_paths: Sequence[str], out: str,
                 ranking_paths: Sequence[str] = ()) -> dict:
    """The tuning file of size n from the last rung's part files (and the earlier rungs' rankings)."""
    last = len(setting.schedule) - 1
    slots = _read_slots(slot_paths, last)
    inputs = [s["inputs"] for s in slots]
    if any(i != inputs[0] for i in inputs):
        raise ValueError(f"{out}: the slot files of one selection were computed from different inputs")
    final = _rung(slots, last, setting.schedule[last][0])
    best = selection.select(final["rows"], setting.score)
    rungs = None
    if setting.tuning_cfg.get("strategy", "grid") != "grid":
        earlier = [json.loads(Path(p).read_text()) for p in ranking_paths]
        rungs = [{k: r[k] for k in ("rung", "steps", "points", "rows")} for r in earlier] + [final]
    wall = sum(s["wall_time_s"] for s in slots)
    counts = (slots[0]["n_tune_train"], slots[0]["n_tune_val"]) if slots else None
    result = setting.record(n, best, final["rows"], rungs, wall, inputs[0] if inputs else setting.inputs(), out,
                            counts)
    write_json(out, result)
    return result
