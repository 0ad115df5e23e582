"""SNR pruning of a Gaussian posterior: hand-computed answers and exact fractions."""

import pytest
import torch

from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.results.pruning import prior_mean_and_std, prune, prune_masks, pruning_curve, pruning_scores


def test_hand_example_snr_versus_magnitude():
    mu = {"w": torch.tensor([3.0, -1.0, 0.5, 2.0])}
    sigma = {"w": torch.tensor([1.0, 0.1, 1.0, 4.0])}  # SNR 3, 10, 0.5, 0.5
    assert torch.equal(pruning_scores(mu["w"], sigma["w"]), torch.tensor([3.0, 10.0, 0.5, 0.5]))
    assert torch.equal(prune(mu, sigma, 0.5)["w"], torch.tensor([3.0, -1.0, 0.0, 0.0]))
    assert torch.equal(prune(mu, sigma, 0.5, criterion="magnitude")["w"], torch.tensor([3.0, 0.0, 0.0, 2.0]))
    assert torch.equal(prune(mu, sigma, 0.25)["w"], torch.tensor([3.0, -1.0, 0.0, 2.0]))  # tie: first position
    assert torch.equal(prune(mu, sigma, 0.0)["w"], mu["w"]) and torch.equal(prune(mu, sigma, 1.0)["w"], torch.zeros(4))
    assert torch.equal(mu["w"], torch.tensor([3.0, -1.0, 0.5, 2.0]))  # inputs untouched


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.9])
def test_removes_exactly_the_lowest_snr_weights(scope, fraction):
    g = torch.Generator().manual_seed(0)
    mu = {"a": torch.randn(10, 7, generator=g), "b": torch.randn(33, generator=g)}
    sigma = {n: 0.05 + torch.rand(m.shape, generator=g) for n, m in mu.items()}
    scores = {n: (mu[n].abs() / sigma[n]) for n in mu}
    masks = prune_masks(scores, fraction, scope)
    pruned = prune(mu, sigma, fraction, scope=scope)
    groups = [[n] for n in mu] if scope == "layer" else [list(mu)]
    for names in groups:
        n_all = sum(mu[n].numel() for n in names)
        k = int(fraction * n_all + 0.5)
        got = torch.cat([masks[n].reshape(-1) for n in names])
        assert int(got.sum()) == k  # the fraction is exact: k = round(f n)
        s = torch.cat([scores[n].reshape(-1) for n in names])
        assert float(s[got].max()) <= float(s[~got].min())  # every pruned weight has a lower SNR than any kept
        vals = torch.cat([pruned[n].reshape(-1) for n in names])
        kept = torch.cat([mu[n].reshape(-1) for n in names])[~got]
        assert torch.all(vals[got] == 0) and torch.equal(vals[~got], kept)


def test_pruning_curve_and_prior_helpers():
    g = torch.Generator().manual_seed(1)
    prior = GaussianPrior(torch.randn(20, generator=g), 0.1 + torch.rand(20, generator=g), None,
                          names=["x", "y"], shapes=[(4, 3), (8,)])
    mu, sd = prior_mean_and_std(prior)
    assert torch.allclose(torch.cat([sd["x"].reshape(-1), sd["y"]]), prior.variance.sqrt())
    rows = pruning_curve(mu, sd, [0.0, 0.25, 0.5], lambda p: sum(float((t != 0).sum()) for t in p.values()))
    assert [(r["criterion"], r["fraction"]) for r in rows] == [
        ("snr", 0.0), ("snr", 0.25), ("snr", 0.5), ("magnitude", 0.0), ("magnitude", 0.25), ("magnitude", 0.5)]
    # per layer: x loses round(12 f), y round(8 f) -> 0 + 0, 3 + 2, 6 + 4 weights
    assert [r["value"] for r in rows[:3]] == [20.0, 15.0, 10.0]
    assert [r["pruned_fraction"] for r in rows[:3]] == [0.0, 0.25, 0.5]
    lowrank = GaussianPrior(torch.zeros(3), torch.ones(3), torch.tensor([[1.0, 2.0, 0.0]]))
    assert torch.allclose(prior_mean_and_std(lowrank)[1]["theta"], torch.tensor([2.0, 5.0, 1.0]).sqrt())


def test_bad_arguments():
    mu = {"w": torch.ones(3)}
    with pytest.raises(ValueError, match="fraction"):
        prune(mu, {"w": torch.ones(3)}, 1.5)
    with pytest.raises(ValueError, match="criterion"):
        prune(mu, {"w": torch.ones(3)}, 0.5, criterion="random")
    with pytest.raises(ValueError, match="sigma > 0"):
        prune(mu, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="needs the posterior"):
        prune(mu, None, 0.5)
    assert torch.equal(prune(mu, None, 1 / 3, criterion="magnitude")["w"], torch.tensor([0.0, 1.0, 1.0]))


def test_pruning_stage_on_the_digits_prunes_weights_only_and_recomputes_batchnorm(tmp_path):
    """The stage on a digits checkpoint with a prior at its weights: unpruned it scores the checkpoint's own
    source accuracy (BatchNorm recomputed from source images), only conv/linear weights are pruned, and the
    achieved fraction is the requested one over those weights."""
    from bayes_transfer.io import save_torch
    from bayes_transfer.models.resnets import build_model, split_named_parameters
    from bayes_transfer.stages.pruning import pruning_stage

    torch.manual_seed(0)
    model = build_model("small_resnet", 5)
    save_torch({"state_dict": model.state_dict()}, str(tmp_path / "ckpt.pt"))
    backbone, _ = split_named_parameters(model)
    mean = torch.cat([p.detach().reshape(-1) for p in backbone.values()])
    prior = GaussianPrior(mean, torch.full_like(mean, 1e-2), None, names=list(backbone),
                          shapes=[tuple(p.shape) for p in backbone.values()])
    prior.save(str(tmp_path / "prior.pt"))
    data = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}
    rows = pruning_stage(str(tmp_path / "prior.pt"), str(tmp_path / "ckpt.pt"), data, {"arch": "small_resnet"},
                         str(tmp_path / "curve.csv"), fractions=[0.0, 0.5, 1.0])
    assert [(r["criterion"], r["fraction"]) for r in rows] == [
        (c, f) for c in ("snr", "magnitude") for f in (0.0, 0.5, 1.0)]
    # equal sigmas: SNR and magnitude rank alike, so the two curves coincide
    assert [r["value"] for r in rows[:3]] == [r["value"] for r in rows[3:]]
    assert rows[0]["pruned_fraction"] == 0.0 and rows[2]["pruned_fraction"] == 1.0
    assert abs(rows[1]["pruned_fraction"] - 0.5) < 1e-3
    # unpruned: the checkpoint network itself (the prior's means are its weights), BatchNorm recomputed
    from bayes_transfer.stages.landscape import recompute_batchnorm_
    from bayes_transfer.stages.task import load_task

    task = load_task(data)
    xs = task.source_train.tensors[0][:1024]
    recompute_batchnorm_([model], [xs[i:i + 256] for i in range(0, len(xs), 256)], model)
    model.eval()
    x, y = task.source_test.tensors
    with torch.no_grad():
        assert rows[0]["value"] == float((model(x).argmax(-1) == y).double().mean())
    assert (tmp_path / "curve.csv").read_text().startswith("criterion,scope,fraction,pruned_fraction,value")
