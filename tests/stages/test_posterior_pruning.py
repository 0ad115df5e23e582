"""SNR pruning of the variational fits' posteriors (issue 14): the curve of a fitted mean-field Gaussian on the
downstream test set, written into the fit's run record and summarised over seeds."""

import copy
import json

import pytest
import torch

from bayes_transfer.data.digits import load_digits_tasks, train_subset
from bayes_transfer.models.resnets import build_model, split_named_parameters
from bayes_transfer.results.pruning import fit_pruning_summary
from bayes_transfer.stages.experiment import fit_stage
from bayes_transfer.stages.pruning import FRACTIONS, posterior_pruning_curve
from bayes_transfer.stages.source import pretrain_stage

DATA = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}
MODEL = {"arch": "small_resnet"}


@pytest.fixture(scope="module")
def network():
    data = load_digits_tasks()
    torch.manual_seed(0)
    net = build_model("small_resnet", 5)
    return data, net, copy.deepcopy(net.state_dict())


def _posterior(net, state, sigma_of):
    """A posterior of ``net``'s backbone at ``state``, with sigma_of(name, mean) as its standard deviations."""
    return {"state": state, "sigma": {n: sigma_of(n, state[n]) for n in split_named_parameters(net)[0]}}


def test_constant_sigma_per_tensor_ranks_as_magnitude_and_the_network_is_restored(network):
    data, net, state = network
    # sigma constant within each tensor: |mu| / sigma orders every tensor's weights as |mu| does, so the per-layer
    # SNR and magnitude curves are the same numbers
    post = _posterior(net, state, lambda n, p: torch.full_like(p, 0.1 + 0.01 * len(n)))
    rows = posterior_pruning_curve(post, net, train_subset(data, 20, 0), data.test, fractions=(0.0, 0.5, 0.9))
    by = {(r["criterion"], r["fraction"]): r for r in rows}
    assert len(rows) == 6
    for f in (0.0, 0.5, 0.9):
        assert by[("snr", f)]["value"] == by[("magnitude", f)]["value"]
        assert abs(by[("snr", f)]["pruned_fraction"] - f) < 0.01
        assert 0.0 <= by[("snr", f)]["value"] <= 1.0
    for k, v in net.state_dict().items():  # the caller's network holds the posterior mean again
        assert torch.equal(v, state[k]), k


def test_sigma_small_on_the_large_weights_makes_snr_prune_as_magnitude(network):
    data, net, state = network
    # every weight tensor: sigma tiny on the larger-|mu| half, huge on the other; SNR pruning of half the weights
    # then removes exactly the small-|mu| half, which is what magnitude pruning removes too (a sigma that does not
    # follow |mu| would make them differ; results/pruning's unit tests check which weights each removes)
    def sigma(n, p):
        s = torch.full_like(p, 1e3)
        s[p.abs() >= p.abs().median()] = 1e-3
        return s

    rows = posterior_pruning_curve(_posterior(net, state, sigma), net, train_subset(data, 20, 0), data.test,
                                   fractions=(0.5,))
    assert rows[0]["criterion"] == "snr" and rows[0]["value"] == rows[1]["value"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("vi_pruning")
    path = str(root / "supervised.pt")
    pretrain_stage("supervised", DATA, MODEL, {"steps": 30, "batch_size": 32}, path)
    return root, path


def test_a_variational_fit_records_its_pruning_curve_and_keeps_no_posterior(checkpoint):
    root, ckpt = checkpoint
    train = {"steps": 6, "batch_size": 8, "cycles": 1, "samples_per_cycle": 2, "isotropic_variance": 1.0}
    outs = [str(root / f"vi_seed{s}.json") for s in (0, 1)]
    fit_stage("vi_isotropic_prior", 10, "supervised", [0, 1], checkpoint=ckpt, prior_path=None, tuning_path=None,
              data_cfg=DATA, model_cfg=MODEL, train_cfg=train, outs=outs)
    records = [json.loads(open(p).read()) for p in outs]
    for rec in records:
        assert rec["success"], rec["reason"]
        assert "posterior" not in rec
        rows = rec["pruning"]
        assert len(rows) == 2 * len(FRACTIONS)
        assert {r["criterion"] for r in rows} == {"snr", "magnitude"}
        first = [r["value"] for r in rows if r["fraction"] == 0.0]
        assert first[0] == first[1]  # nothing pruned: the same mean network by either criterion
    # a method without a Gaussian posterior records no curve; nor does a variational fit asked not to prune
    sgd = str(root / "sgd.json")
    fit_stage("sgd_transfer", 10, "supervised", [0], checkpoint=ckpt, prior_path=None, tuning_path=None,
              data_cfg=DATA, model_cfg=MODEL, train_cfg=train, outs=[sgd])
    assert "pruning" not in json.loads(open(sgd).read())
    quiet = str(root / "vi_quiet.json")
    fit_stage("vi_isotropic_prior", 10, "supervised", [0], checkpoint=ckpt, prior_path=None, tuning_path=None,
              data_cfg=DATA, model_cfg=MODEL, train_cfg=train, outs=[quiet], prune=False)
    assert "pruning" not in json.loads(open(quiet).read())

    # the summary over seeds: mean and standard error per criterion and fraction, failures counted, never averaged
    failed = dict(records[0], success=False, pruning=None, seed=2)
    summary = fit_pruning_summary(records + [failed])
    assert len(summary) == 2 * len(FRACTIONS)
    row = summary[(summary.criterion == "snr") & (summary.fraction == 0.9)].iloc[0]
    values = [next(r["value"] for r in rec["pruning"] if r["criterion"] == "snr" and r["fraction"] == 0.9)
              for rec in records]
    assert row["mean"] == pytest.approx(sum(values) / 2)
    assert row["se"] == pytest.approx(abs(values[0] - values[1]) / 2)  # sd / sqrt(2) of two values
    assert row["n_seeds"] == 2 and row["n_failed"] == 1
    assert fit_pruning_summary([]).empty
