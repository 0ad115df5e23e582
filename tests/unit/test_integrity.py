"""Integrity of what the pipeline writes: tensor checksums verified on load (a flipped byte is an error naming
the file), old files without one load with a warning, result records carry their inputs' checksums, and runs of
one setting computed from different inputs are refused by the tidy step."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from bayes_transfer.integrity import (CHECKSUM_KEY, IntegrityError, MissingChecksumWarning, check_consistent_inputs,
                                      config_checksum, input_checksums, stamp, tensor_checksum)
from bayes_transfer.io import save_torch
from bayes_transfer.models.checkpoints import (load_checkpoint_metadata, load_checkpoint_state,
                                               save_backbone_checkpoint)
from bayes_transfer.priors.gaussian import GaussianPrior

MEAN = torch.arange(1, 65, dtype=torch.float32)


def _prior() -> GaussianPrior:
    return GaussianPrior(MEAN.clone(), torch.full((64,), 0.5), torch.ones(2, 64) * 0.25, ["a.weight", "b.bias"],
                         [(8, 6), (16,)], {"arch": "toy"})


def _flip_byte_of(path, pattern: bytes, offset: int = 5) -> None:
    """Flip one byte inside the stored bytes of a tensor (found by its contents)."""
    data = bytearray(path.read_bytes())
    at = data.find(pattern)
    assert at >= 0, "tensor bytes not found in the file"
    data[at + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checksum_is_canonical_and_sees_names_dtypes_shapes_and_bytes():
    a = {"x": torch.arange(6.0).reshape(2, 3), "y": torch.ones(2, dtype=torch.int64), "metadata": {"k": 1}}
    same = {"y": torch.ones(2, dtype=torch.int64), "x": torch.arange(6.0).reshape(2, 3), "metadata": {"k": 2}}
    assert tensor_checksum(a) == tensor_checksum(same)  # key order and metadata do not count
    assert tensor_checksum(a).startswith("sha256:") and len(tensor_checksum(a)) == 7 + 64
    changed = [
        {"x": torch.arange(6.0).reshape(3, 2), "y": a["y"]},  # shape
        {"x": torch.arange(6.0, dtype=torch.float64).reshape(2, 3), "y": a["y"]},  # dtype
        {"z": a["x"], "y": a["y"]},  # name
        {"x": a["x"].clone().index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(1e-7)), "y": a["y"]},
    ]
    assert len({tensor_checksum(a), *map(tensor_checksum, changed)}) == 5


def test_prior_round_trip_keeps_the_checksum_out_of_its_metadata(tmp_path):
    path = tmp_path / "prior.pt"
    _prior().save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["metadata"][CHECKSUM_KEY] == tensor_checksum(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = GaussianPrior.load(path)
    assert torch.equal(back.mean, MEAN) and back.metadata == {"arch": "toy"}


def test_a_flipped_byte_in_a_saved_prior_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "prior.pt"
    _prior().save(path)
    _flip_byte_of(path, MEAN.numpy().tobytes())
    with pytest.raises(IntegrityError, match=r"prior file '.*prior\.pt' is corrupted: its tensors have checksum"):
        GaussianPrior.load(path)


def test_a_truncated_prior_is_an_error_naming_the_file_and_what_was_expected(tmp_path):
    path = tmp_path / "prior.pt"
    _prior().save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(IntegrityError, match=r"could not read prior file '.*prior\.pt'.*expected a complete "
                                             r"torch\.save file"):
        GaussianPrior.load(path)


def test_a_prior_without_checksum_loads_with_a_warning(tmp_path):
    path = tmp_path / "old.pt"
    save_torch(_prior().state(), path)  # the format before checksums
    with pytest.warns(MissingChecksumWarning, match=r"old\.pt.*carries no tensor checksum"):
        back = GaussianPrior.load(path)
    assert torch.equal(back.mean, MEAN)


def test_a_flipped_byte_in_a_saved_checkpoint_is_an_error_naming_the_file(tmp_path):
    weight = torch.linspace(-1, 1, 48).reshape(4, 3, 2, 2)
    path = save_backbone_checkpoint({"conv1.weight": weight, "bn1.bias": torch.zeros(4)}, tmp_path / "ckpt.pt",
                                    {"arch": "toy"})
    assert load_checkpoint_metadata(path) == {"arch": "toy"}
    assert torch.equal(load_checkpoint_state(path)["conv1.weight"], weight)
    _flip_byte_of(path, weight.numpy().tobytes(), offset=17)
    for reader in (load_checkpoint_state, load_checkpoint_metadata):
        with pytest.raises(IntegrityError, match=r"checkpoint '.*ckpt\.pt' is corrupted"):
            reader(path)


def test_a_flipped_byte_in_a_pretrain_checkpoint_is_an_error_naming_the_file(tmp_path):
    from bayes_transfer.stages.source import load_pretrained

    weight = torch.linspace(0, 1, 32)
    path = tmp_path / "supervised.pt"
    save_torch(stamp({"state_dict": {"fc.weight": weight}, "objective": {}, "metadata": {"arch": "x"}}), path)
    assert torch.equal(load_pretrained(str(path))["state_dict"]["fc.weight"], weight)
    _flip_byte_of(path, weight.numpy().tobytes())
    with pytest.raises(IntegrityError, match=r"pre-trained checkpoint '.*supervised\.pt' is corrupted"):
        load_pretrained(str(path))


def test_input_checksums_name_config_and_files_and_follow_their_contents(tmp_path):
    prior = tmp_path / "prior.pt"
    _prior().save(prior)
    tuning = tmp_path / "n10.json"
    tuning.write_text(json.dumps({"selected": {"lr": 0.1}}))
    got = input_checksums({"train": {"lr": 0.1}}, prior=prior, tuning=tuning, checkpoint=None)
    assert got["config"] == config_checksum({"train": {"lr": 0.1}}) != config_checksum({"train": {"lr": 0.2}})
    assert got["prior"] == torch.load(prior, weights_only=True)["metadata"][CHECKSUM_KEY]
    assert got["tuning"].startswith("file-sha256:") and got["checkpoint"] is None
    _prior().rescale(2.0).save(prior)
    assert input_checksums(None, prior=prior)["prior"] != got["prior"]


def _run_record(tmp_path, name: str, prior: str, pretraining: str = "supervised") -> str:
    rec = {"dataset": "digits", "arch": "small_resnet", "pretraining": pretraining, "method": "bnn_learned_prior",
           "n_train": 10, "seed": int(name[-1]), "success": True, "metrics": {"test": {"accuracy": 0.5}},
           "inputs": {"config": "sha256:c", "checkpoint": "sha256:k", "prior": prior}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(rec))
    return str(path)


def test_tidy_refuses_runs_of_one_setting_computed_from_different_priors_and_says_which(tmp_path):
    from bayes_transfer.results.aggregate import tidy_runs

    same = [_run_record(tmp_path, "seed0", "sha256:p1"), _run_record(tmp_path, "seed1", "sha256:p1"),
            _run_record(tmp_path, "other2", "sha256:p9", pretraining="simclr")]  # another setting: its own prior
    assert len(tidy_runs(same)) == 3
    stale = _run_record(tmp_path, "seed2", "sha256:p2")
    with pytest.raises(IntegrityError, match=r"pretraining=supervised.*different prior files: .*seed0\.json used "
                                             r"sha256:p1 but .*seed2\.json used sha256:p2"):
        tidy_runs(same + [stale])


def test_records_without_inputs_and_unused_inputs_are_not_compared():
    records = [("a", {"pretraining": "s", "inputs": {"prior": None, "checkpoint": "k"}}),
               ("b", {"pretraining": "s", "inputs": {"prior": "p", "checkpoint": "k"}}),
               ("c", {"pretraining": "s"})]
    check_consistent_inputs(records, key=("pretraining",))
    with pytest.raises(IntegrityError, match="different checkpoint files: a used k but d used k2"):
        check_consistent_inputs(records + [("d", {"pretraining": "s", "inputs": {"checkpoint": "k2"}})],
                                key=("pretraining",))


def test_tuning_and_fit_records_carry_the_checksums_of_their_inputs(tmp_path):
    from bayes_transfer.stages.experiment import fit_stage, tune_stage
    from bayes_transfer.stages.source import pretrain_stage

    data = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}
    model = {"arch": "small_resnet"}
    ckpt = str(tmp_path / "supervised.pt")
    pretrain_stage("supervised", data, model, {"steps": 2, "batch_size": 16}, ckpt)
    stored = torch.load(ckpt, weights_only=True)["metadata"][CHECKSUM_KEY]
    train = {"steps": 2, "batch_size": 8}
    out = tmp_path / "seed0.json"
    fit_stage("sgd_transfer", 10, "supervised", [0], checkpoint=ckpt, prior_path=None, tuning_path=None,
              data_cfg=data, model_cfg=model, train_cfg=train, outs=[str(out)])
    inputs = json.loads(out.read_text())["inputs"]
    assert inputs == {"config": config_checksum({"data": data, "model": model, "train": train, "overrides": {}}),
                      "checkpoint": stored, "prior": None, "tuning": None}
    tuned = tmp_path / "n10.json"
    grid, tuning = {"lr": [0.01]}, {"seed": 1000}
    tune_stage("sgd_transfer", [10], "supervised", checkpoint=ckpt, prior_path=None, data_cfg=data, model_cfg=model,
               train_cfg=train, grid=grid, tuning_cfg=tuning, outs=[str(tuned)])
    assert json.loads(tuned.read_text())["inputs"] == {
        "config": config_checksum({"data": data, "model": model, "train": train, "grid": grid, "tuning": tuning}),
        "checkpoint": stored, "prior": None}


def test_segmentation_tables_refuse_runs_of_one_cell_computed_from_different_checkpoints(tmp_path):
    from bayes_transfer.stages.segmentation import tidy_segmentation_runs

    paths = []
    for seed, ckpt in enumerate(["sha256:k1", "sha256:k1", "sha256:k2"]):
        rec = {"dataset": "scenes", "backbone": "resnet50", "arch": "small_resnet", "pretraining": "supervised",
               "method": "sgd_transfer", "seed": seed, "success": False, "reason": "x",
               "inputs": {"config": "sha256:c", "checkpoint": ckpt, "prior": None}}
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(rec))
    assert len(tidy_segmentation_runs(paths[:2])) == 2
    with pytest.raises(IntegrityError, match=r"backbone=resnet50.*different checkpoint files: .*seed0\.json used "
                                             r"sha256:k1 but .*seed2\.json used sha256:k2"):
        tidy_segmentation_runs(paths)
