"""Methods and the training loop on the embedded digits: priors by name, BMA, ensembles, failures as data."""

import copy
import math
import subprocess
import sys

import pytest
import torch

from bayes_transfer.results import metrics
from bayes_transfer.data.digits import augment, load_digits_tasks, train_subset
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.inference.methods import METHODS, TABLE_METHODS, run_method
from bayes_transfer.models.resnets import build_model, split_named_parameters
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError
from bayes_transfer.inference.loop import Hyper

FAST = Hyper(steps=24, batch_size=16, lr=0.05, cycles=2, samples_per_cycle=2, temperature=1e-3,
             prior_scale=1e8, log_every=5)


@pytest.fixture(scope="module")
def setup():
    data = load_digits_tasks()
    model, objective, _ = pretrain("small_resnet", "supervised", data.source_train, 5,
                                   PretrainConfig(steps=40, batch_size=32), seed=0)
    state = copy.deepcopy(model.state_dict())
    prior = learn_prior(model, objective, data.source_train,
                        SWAGConfig(cycles=4, steps_per_cycle=5, max_rank=3, lr=0.1), seed=0)
    return data, state, prior


def run(setup, method, hp=FAST, seed=0, n=10, prior=None):
    data, state, learned = setup
    return run_method(method, arch="small_resnet", pretrained_state=state, num_classes=5,
                      train_set=train_subset(data, n, seed), eval_sets={"test": data.test}, hp=hp, seed=seed,
                      learned_prior=learned if prior is None else prior)


def test_learned_prior_covers_feature_extractor_by_name(setup):
    _, _, prior = setup
    model = build_model("small_resnet", 5)
    backbone, head = split_named_parameters(model)
    assert prior.names == list(backbone)
    assert "bn1.weight" in prior.names and not any(n.startswith("fc.") for n in prior.names)
    assert not any("running" in n for n in prior.names)
    assert prior.rank == 3 and prior.metadata["source_loss"] == "supervised"


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_and_gives_probabilities(setup, method):
    res = run(setup, method)
    assert res.success, res.reason
    p = res.probs["test"]
    assert p.shape == (300, 5) and torch.allclose(p.sum(1), torch.ones(300, dtype=p.dtype))
    spec = METHODS[method]
    expected_samples = 1 if not (spec.bayesian or spec.ensemble or spec.variational) else 4
    assert res.num_samples == expected_samples
    assert 0.0 <= metrics.accuracy(p, setup[0].test.tensors[1]) <= 1.0


def test_same_seed_same_numbers_and_other_seed_differs(setup):
    a = run(setup, "bnn_learned_prior", seed=3)
    b = run(setup, "bnn_learned_prior", seed=3)
    c = run(setup, "bnn_learned_prior", seed=4)
    assert torch.equal(a.probs["test"], b.probs["test"])
    assert not torch.equal(a.probs["test"], c.probs["test"])


def test_bma_is_mean_of_sample_predictions(setup):
    """The online BMA equals averaging the probabilities recorded at the schedule's sample steps."""
    from bayes_transfer.inference.bma import BayesianModelAverage

    bma = BayesianModelAverage()
    p1, p2 = torch.tensor([[0.2, 0.8]]), torch.tensor([[0.6, 0.4]])
    bma.add({"t": p1})
    bma.add({"t": p2})
    torch.testing.assert_close(bma.probs()["t"], torch.tensor([[0.4, 0.6]], dtype=torch.float64))
    # the samples' mean entropy (for the mutual information): (H(0.2, 0.8) + H(0.6, 0.4)) / 2
    h = lambda a: -(a * math.log(a) + (1 - a) * math.log(1 - a))  # noqa: E731
    assert float(bma.expected_entropy()["t"]) == pytest.approx((h(0.2) + h(0.6)) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="same evaluation sets"):
        bma.add({"other": p1})


def test_diverged_chain_is_recorded_not_raised(setup):
    # the explicit prior update at an absurd learning rate (the split one bounds the prior's step)
    hp = Hyper.from_dict(FAST.to_dict() | {"lr": 1e6, "prior_scale": 1.0, "prior_update": "explicit"})
    res = run(setup, "bnn_learned_prior", hp=hp)
    assert not res.success
    assert "step" in res.reason and ("not finite" in res.reason or "non-finite" in res.reason)
    assert "prior_update 'explicit'" in res.reason and "stability limit" in res.reason
    assert res.probs == {}
    assert res.diagnostics()["prior_energy_per_datum"] is None


def test_prior_of_another_architecture_names_first_mismatch(setup):
    other = build_model("small_resnet", 5, width=8)
    backbone, _ = split_named_parameters(other)
    wrong = GaussianPrior.isotropic(backbone, 1.0)
    with pytest.raises(PriorMismatchError, match="conv1.weight"):
        run(setup, "sgd_learned_prior", prior=wrong)


def test_unknown_method_and_hyper_errors(setup):
    with pytest.raises(ValueError, match="unknown method 'sgd_magic'"):
        run(setup, "sgd_magic")
    with pytest.raises(KeyError, match="lambda_"):
        Hyper.from_dict({"lambda_": 1.0})


def test_simclr_pretraining_and_prior(setup):
    data = setup[0]
    model, objective, hist = pretrain("small_resnet", "simclr", data.source_train, 5,
                                      PretrainConfig(steps=6, batch_size=16), augment=augment, seed=0)
    prior = learn_prior(model, objective, data.source_train, SWAGConfig(cycles=3, steps_per_cycle=3, max_rank=2),
                        seed=0)
    assert prior.metadata["source_loss"] == "simclr" and prior.rank == 2
    assert all(h["loss"] == h["loss"] for h in hist)


def test_table_methods_are_the_papers_five():
    assert set(TABLE_METHODS) == {"sgd_transfer", "sgd_learned_prior", "bnn_learned_prior",
                                  "bnn_isotropic_prior", "sgd_ensemble"}


def test_demo_command_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bayes_transfer", "demo", "--steps", "40", "--threads", "1"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    for method in METHODS:
        assert method in out.stdout
    assert "total" in out.stdout


def test_sample_checkpoints_are_optional(setup, tmp_path):
    from bayes_transfer.inference.methods import downstream_model
    from bayes_transfer.inference.loop import fit

    data, state, _ = setup
    model = downstream_model("small_resnet", state, 5, seed=0)
    res = fit(model, train_subset(data, 10, 0), inference="sgld", hp=FAST, eval_sets={"val": data.val},
              seed=0, sample_dir=str(tmp_path / "samples"))
    assert res.success and res.num_samples == 4
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"sample_00{i}.pt" for i in range(4)]


def test_relevant_hyper_names_only_the_keys_a_method_reads():
    """The keys that rerun a method's jobs (Snakemake params): common keys, its prior's, the sampler's, the ensemble's."""
    from bayes_transfer.inference.methods import relevant_hyper

    cfg = Hyper().to_dict()
    common = {"steps", "batch_size", "lr", "momentum", "head_weight_decay", "log_every", "grad_clip"}
    sampler = {"temperature", "sampler", "cycles", "exploration_fraction", "samples_per_cycle", "chains"}
    learned = {"prior_scale", "prior_convention", "prior_rank", "prior_truncation", "prior_update"}
    expected = {
        "sgd_transfer": common | {"weight_decay"},
        "sgd_learned_prior": common | learned,
        "bnn_learned_prior": common | learned | sampler,
        "bnn_isotropic_prior": common | {"isotropic_variance"} | sampler,
        # a bound isotropic prior around the mean: its update (split or explicit) counts too
        "sgd_learned_mean": common | {"isotropic_variance", "prior_update"},
        "bnn_learned_mean": common | {"isotropic_variance", "prior_update"} | sampler,
        # ensemble_size 0: as many members as the BMA has samples, cycles x samples_per_cycle
        "sgd_ensemble": common | {"weight_decay", "ensemble_size", "cycles", "samples_per_cycle"},
        # variational: the temperature weights the KL, S = cycles x samples_per_cycle draws; no prior step
        "vi_learned_prior": common | (learned - {"prior_update"}) | {"temperature", "cycles", "samples_per_cycle", "vi_reparameterisation", "vi_ood_weight", "vi_ood_margin"},
        "vi_isotropic_prior": common | {"isotropic_variance", "temperature", "cycles", "samples_per_cycle", "vi_reparameterisation", "vi_ood_weight", "vi_ood_margin"},
    }
    assert set(expected) == set(METHODS)
    for method, keys in expected.items():
        assert set(relevant_hyper(method, cfg)) == keys, method
    assert set(relevant_hyper("sgd_ensemble", cfg | {"ensemble_size": 3})) == common | {"weight_decay", "ensemble_size"}
    assert relevant_hyper("sgd_transfer", {"lr": 0.1, "temperature": 1.0}) == {"lr": 0.1}  # only keys given
    with pytest.raises(ValueError, match="unknown method"):
        relevant_hyper("sgd_transferr", cfg)
