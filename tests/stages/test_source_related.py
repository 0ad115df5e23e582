"""The source stages of issue 14: BYOL as a pre-training (EMA target, heads outside the model) and the prior learned
by Bayes by Backprop (prior.method / prior.variants bbb) in the SWAG prior's file format, used downstream unchanged."""

import json

import pytest
import torch

from bayes_transfer.models.resnets import build_model, split_named_parameters
from bayes_transfer.objectives.byol import BYOLObjective
from bayes_transfer.objectives.pretrain import PRETRAININGS, make_objective
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.stages.experiment import fit_stage
from bayes_transfer.stages.source import load_pretrained, pretrain_stage, prior_stage

DATA = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}
MODEL = {"arch": "small_resnet"}
SWAG = {"cycles": 3, "steps_per_cycle": 2, "batch_size": 16, "max_rank": 2}
BBB = {"steps": 6, "batch_size": 16, "lr": 1e-2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    out = {}
    for kind in ("supervised", "byol"):
        out[kind] = str(root / f"{kind}.pt")
        pretrain_stage(kind, DATA, MODEL, {"steps": 4, "batch_size": 16}, out[kind])
    return root, out


def test_byol_is_a_pre_training_whose_heads_and_target_live_in_the_objective(checkpoints):
    assert "byol" in PRETRAININGS
    _, ckpts = checkpoints
    ckpt = load_pretrained(ckpts["byol"])
    assert ckpt["metadata"]["pretraining"] == "byol"
    model = build_model("small_resnet", 5)
    model.load_state_dict(ckpt["state_dict"])  # the model holds no BYOL head
    objective = make_objective("byol", model, augment=lambda x, g: x)
    assert isinstance(objective, BYOLObjective)
    objective.load_state_dict(ckpt["objective"])
    target = dict(objective.target_encoder.named_parameters())
    online = dict(model.named_parameters())
    # the EMA target followed the online network, but lags it (tau < 1 for the first steps)
    moved = [n for n in online if not torch.equal(target[n], online[n])]
    assert moved and all(not p.requires_grad for p in objective.target_encoder.parameters())


@pytest.mark.parametrize("kind", ["supervised", "byol"])
def test_bbb_prior_is_diagonal_in_the_swag_file_format_saying_how_it_was_learned(checkpoints, kind):
    root, ckpts = checkpoints
    out = root / f"{kind}_bbb.pt"
    prior = prior_stage(kind, ckpts[kind], DATA, MODEL, SWAG, str(out), method="bbb", bbb_cfg=BBB)
    loaded = GaussianPrior.load(str(out))
    backbone, _ = split_named_parameters(build_model("small_resnet", 5))
    assert loaded.names == list(backbone) and loaded.rank == 0
    assert loaded.metadata["prior_method"] == "bbb" and loaded.metadata["source_loss"] == kind
    assert loaded.metadata["pretraining"] == kind and loaded.metadata["bbb"]["steps"] == BBB["steps"]
    assert torch.equal(loaded.variance, prior.variance) and bool((loaded.variance > 0).all())
    # BYOV's start: log sigma^2 = -10, moved by at most ~steps x lr (Adam)
    assert loaded.variance.log().sub(-10.0).abs().max() < BBB["steps"] * BBB["lr"] * 1.5


def test_a_bbb_prior_is_used_downstream_unchanged(checkpoints):
    root, ckpts = checkpoints
    prior_path = root / "supervised_bbb.pt"
    if not prior_path.exists():
        prior_stage("supervised", ckpts["supervised"], DATA, MODEL, SWAG, str(prior_path), method="bbb", bbb_cfg=BBB)
    for method in ("bnn_learned_prior", "vi_learned_prior"):
        out = root / f"{method}.json"
        fit_stage(method, 10, "supervised_bbb", [0], checkpoint=ckpts["supervised"], prior_path=str(prior_path),
                  tuning_path=None, data_cfg=DATA, model_cfg=MODEL,
                  train_cfg={"steps": 4, "batch_size": 8, "cycles": 1, "samples_per_cycle": 2}, outs=[str(out)])
        record = json.loads(out.read_text())
        assert record["success"], record["reason"]
        assert record["pretraining"] == "supervised_bbb" and record["metrics"]["test"]["accuracy"] >= 0


def test_unknown_prior_method_is_an_error(checkpoints):
    root, ckpts = checkpoints
    with pytest.raises(ValueError, match="prior method must be one of"):
        prior_stage("supervised", ckpts["supervised"], DATA, MODEL, SWAG, str(root / "x.pt"), method="laplace")
