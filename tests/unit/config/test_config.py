"""The config: schema defaults = dataclass defaults (every key), string overrides typed, settings that follow the
lists, one line per problem, and the README's --config override as written."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bayes_transfer.config.check import ConfigError
from bayes_transfer.config.experiments import merged
from bayes_transfer.config.schema import (apply_dependent_defaults, coerce_strings, load_schema,
                                          parse_string, prepare_config, resolve)

ROOT = Path(__file__).resolve().parents[3]


def _dataclass_sections():
    """(schema section, dataclass, schema keys that are no field, fields that are no key of the section)."""
    from bayes_transfer.audit.settings import AuditSettings
    from bayes_transfer.data.scenes import SceneConfig
    from bayes_transfer.inference.loop import Hyper
    from bayes_transfer.inference.segmentation import SegmentationHyper
    from bayes_transfer.models.deeplab import ModelSpec
    from bayes_transfer.objectives.pretrain import PretrainConfig
    from bayes_transfer.priors.bbb import BBBConfig
    from bayes_transfer.priors.learning import SWAGConfig

    return [
        ("train", Hyper, set(), set()),
        ("swag", SWAGConfig, set(), set()),
        ("bbb", BBBConfig, set(), set()),
        ("pretrain", PretrainConfig, set(), set()),
        # the learning rate of a segmentation run is its dataset's (scenes.lr, voc2012.lr, cityscapes.lr)
        ("segmentation.train", SegmentationHyper, set(), {"lr"}),
        ("segmentation.scenes", SceneConfig, {"lr"}, set()),
        # arch and classes come from the backbone column and the dataset, not from segmentation.model
        ("segmentation.model", ModelSpec, set(), {"arch", "num_classes", "arch_kwargs"}),
        # tiers names other runs' claims files the audit rule reads and shows (bayes_transfer.audit.tiers)
        ("audit", AuditSettings, {"tiers"}, set()),
    ]


def _section(schema: dict, dotted: str) -> dict:
    sub = schema
    for key in dotted.split("."):
        sub = resolve(sub["properties"][key], schema)
    return sub


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    """Tuples as lists and mappings as dicts, as they appear in YAML."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("section", [s[0] for s in _dataclass_sections()])
def test_every_schema_default_is_its_dataclass_default(section):
    schema = load_schema()
    _, cls, schema_only, fields_only = next(s for s in _dataclass_sections() if s[0] == section)
    props = {k: resolve(v, schema) for k, v in _section(schema, section)["properties"].items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(props) - schema_only == set(fields) - fields_only, (
        f"{section}: only in the schema {sorted(set(props) - schema_only - set(fields))}, "
        f"only in {cls.__name__} {sorted(set(fields) - fields_only - set(props))}")
    wrong = []
    for key in sorted(set(props) - schema_only):
        want = _plain(_field_default(fields[key]))
        prop = props[key]
        if "properties" in prop and isinstance(want, dict):  # a mapping field: one schema key per entry
            got = {k: resolve(v, schema).get("default") for k, v in prop["properties"].items()}
        else:
            got = prop.get("default", "(no default)")
        if got != want or type(got) is not type(want):
            wrong.append(f"{section}.{key}: schema {got!r}, {cls.__name__} {want!r}")
    assert not wrong, "\n".join(wrong)


def _defaults(sub: dict, schema: dict, path: str = ""):
    """(key path, default, property schema) of every default in the schema."""
    sub = resolve(sub, schema)
    for key, prop in (sub.get("properties") or {}).items():
        prop = resolve(prop, schema)
        if "default" in prop:
            yield f"{path}{key}", prop["default"], prop
        yield from _defaults(prop, schema, f"{path}{key}.")


def test_every_default_is_valid_under_its_own_schema():
    from jsonschema import Draft202012Validator

    schema = load_schema()
    found = list(_defaults(schema, schema))
    assert len(found) > 150
    bad = [f"{path}: {err.message}" for path, default, prop in found
           for err in Draft202012Validator({**prop, "$defs": schema["$defs"]}).iter_errors(default)]
    assert not bad, "\n".join(bad)


def test_shared_keys_are_written_once():
    """The prior-use and sampler keys of both training sections, and both backbone columns, are references
    to one definition each (a section adds only its default and, where it says more, its description)."""
    schema = load_schema()
    raw = lambda dotted: _section(schema, dotted)["properties"]  # noqa: E731
    for section in ("train", "segmentation.train"):
        for key in ("prior_scale", "prior_convention", "prior_rank", "prior_truncation", "sampler", "temperature",
                    "cycles", "exploration_fraction", "samples_per_cycle"):
            prop = raw(section)[key]
            assert prop.get("$ref") == f"#/$defs/{key}" and set(prop) <= {"$ref", "default", "description"}, (
                section, key)
    for backbone in ("resnet50", "resnet101"):
        assert raw("segmentation")[backbone]["$ref"] == "#/$defs/segmentation_backbone"


# ---------------------------------------------------------------------------------------------- typing strings
@pytest.mark.parametrize("text,value", [("10", 10), ("-3", -3), ("1e-3", 0.001), ("0.5", 0.5), ("true", True),
                                        ("False", False), ("null", None), ("~", None), ("[1, 2]", [1, 2]),
                                        ("{a: 1}", {"a": 1}), ("simclr", "simclr"), ("inf", "inf"),
                                        ("nan", "nan"), ("[unclosed", "[unclosed")])
def test_parse_string_known_answers(text, value):
    assert parse_string(text) == value and type(parse_string(text)) is type(value)


def test_string_leaves_get_the_types_the_schema_wants():
    schema = load_schema()
    # what `snakemake --config sizes='[10,100]' train='{steps: 1e3, prior_rank: null}' ...` delivers under Snakemake 9
    cfg = {"sizes": ["10", "100"], "seeds": "[0, 1]", "methods": ["sgd_transfer"],
           "train": {"steps": "1e3", "temperature": "1e-3", "prior_rank": "null", "prior_convention": "exact"},
           "data": {"dataset": "digits", "shifted_test": "null", "download": "true"},
           "tuning": {"grids": {"sgd_transfer": {"lr": ["0.1", "1e-2"], "prior_truncation": ["first"]}},
                      "inherit": {"sgd_ensemble": "sgd_transfer"}},
           "segmentation": {"enabled": "false", "scenes": {"canvas": "16"}},
           "ablations": {"n_train": "null", "rank": {"ranks": ["0", "3"]}}}
    coerce_strings(cfg, schema, schema)
    assert cfg["sizes"] == [10, 100] and all(type(n) is int for n in cfg["sizes"]) and cfg["seeds"] == [0, 1]
    assert cfg["train"] == {"steps": 1000, "temperature": 0.001, "prior_rank": None, "prior_convention": "exact"}
    assert type(cfg["train"]["steps"]) is int
    assert cfg["data"] == {"dataset": "digits", "shifted_test": None, "download": True}
    assert cfg["tuning"]["grids"]["sgd_transfer"] == {"lr": [0.1, 0.01], "prior_truncation": ["first"]}
    assert cfg["segmentation"] == {"enabled": False, "scenes": {"canvas": 16}}
    assert cfg["ablations"] == {"n_train": None, "rank": {"ranks": [0, 3]}}
    assert cfg["methods"] == ["sgd_transfer"] and cfg["tuning"]["inherit"] == {"sgd_ensemble": "sgd_transfer"}


# ---------------------------------------------------------------------------------------------- settings that follow
def _default_config(**overrides) -> dict:
    return merged(yaml.safe_load((ROOT / "config.yaml").read_text()), overrides)


def test_ablation_and_segmentation_settings_follow_the_lists_unless_set():
    cfg = prepare_config(_default_config())
    assert cfg["ablations"]["pretraining"] == "simclr" and cfg["ablations"]["n_train"] == 50
    assert cfg["segmentation"]["resnet50"]["pretrainings"] == ["supervised", "simclr"]
    assert cfg["segmentation"]["resnet101"]["pretrainings"] == ["supervised"]  # set in config.yaml
    cfg = prepare_config(_default_config(pretrainings=["supervised"], sizes=[100, 10]))
    assert cfg["ablations"]["pretraining"] == "supervised" and cfg["ablations"]["n_train"] == 100
    assert cfg["segmentation"]["resnet50"]["pretrainings"] == ["supervised"]
    explicit = {"n_train": 25, "pretraining": "supervised"}
    cfg = prepare_config(_default_config(sizes=[10, 25, 50, 100], ablations=explicit))
    assert cfg["ablations"]["n_train"] == 25 and cfg["ablations"]["pretraining"] == "supervised"
    assert apply_dependent_defaults(copy.deepcopy(cfg)) == cfg  # a second pass changes nothing
    with pytest.raises(ConfigError) as err:
        prepare_config(_default_config(pretrainings=["supervised"], ablations={"pretraining": "simclr"}))
    assert err.value.problems == ["ablations.pretraining: expected one of pretrainings ['supervised'] (or unset: "
                                  "it follows them), got 'simclr'"]


# ---------------------------------------------------------------------------------------------- one line per problem
def test_every_schema_problem_is_one_line_naming_key_expectation_and_value():
    cfg = _default_config(sizes=[10, "abc"], methods=["sgd_magic"], seeds=[],
                          train={"prior_scale": -1, "temprature": 0.1, "steps": 2.5},
                          segmentation={"scenes": {"canvas": 26}, "resnet50": {"arch": "vgg"}})
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    assert sorted(err.value.problems) == sorted([
        "sizes[1]: expected an integer, got 'abc'",
        "methods[0]: expected one of sgd_transfer, sgd_learned_prior, bnn_learned_prior, bnn_isotropic_prior, "
        "sgd_ensemble, sgd_learned_mean, bnn_learned_mean, vi_learned_prior, vi_isotropic_prior, got 'sgd_magic'",
        "seeds: expected at least 1 item(s), got []",
        "train.prior_scale: expected a number > 0, got -1",
        "train.temprature: unknown key; expected one of batch_size, chains, cycles, ensemble_size, exploration_fraction, "
        "grad_clip, head_weight_decay, isotropic_variance, log_every, lr, momentum, prior_convention, prior_rank, "
        "prior_scale, prior_truncation, prior_update, sampler, samples_per_cycle, steps, temperature, vi_ood_margin, vi_ood_weight, vi_reparameterisation, weight_decay, "
        "got 0.1",
        "train.steps: expected an integer, got 2.5",
        "segmentation.scenes.canvas: expected a multiple of 4, got 26",
        "segmentation.resnet50.arch: expected one of small_resnet, resnet50, resnet101, null, got 'vgg'",
    ])
    assert str(err.value) == "\n".join(err.value.problems)


def test_every_problem_beyond_the_schema_is_one_line_too():
    with pytest.raises(ConfigError) as err:
        prepare_config(_default_config(sizes=[10, 5000], ablations={"n_train": 7, "rank": {"ranks": [0, 50]}},
                                       tuning={"grids": {"sgd_transfer": {"lr": [0.1, 0.0]}}}))
    assert err.value.problems == [
        "tuning.grids.sgd_transfer.lr[1]: expected a number > 0, got 0.0",
        "sizes[1]: training size 5000 is larger than the training pool of digits (596 examples)",
        "ablations.n_train: 7 must be one of sizes [10, 5000] (the ablations reuse the values tuned at that size; "
        "unset, it follows them)",
        "ablations.rank.ranks[1]: rank 50 is above swag.max_rank (20)",
    ]


# ---------------------------------------------------------------------------------------------- the command line
#: the README's override example, as a user types it (run with -n --quiet rules added)
README_OVERRIDE = ("snakemake --cores 2 --config pretrainings='[supervised]' "
                   "methods='[sgd_transfer,bnn_learned_prior]' sizes='[10,100]'")


def _job_counts(text: str) -> dict[str, int]:
    block = text[text.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, flags=re.M)}


def test_readme_override_example_plans_as_written(workdir):
    command = README_OVERRIDE.replace("snakemake ", f"{sys.executable} -m snakemake -n --quiet rules ", 1)
    out = subprocess.run(command, shell=True, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    counts = _job_counts(out.stdout + out.stderr)
    # one pre-training (segmentation's ResNet-50 column follows it), 2 methods x 2 sizes, Fig. 3c's 2 methods too;
    # prior.variants: the BBB prior of the supervised checkpoint with bnn_learned_prior at its sizes in `sizes`
    # (10), the VI variant at n = 50 only (not in `sizes`, so not run)
    assert counts["pretrain"] == 1 and counts["learn_prior"] == 2
    # (workflow.sizes_per_job all: one fit job per main method for both sizes; the variant's per size)
    assert counts["fit"] == 2 + 2 and counts["fit_size"] == 1
    # the ablations use the supervised prior at n = 100 (one job per method; lambda: per method and convention)
    assert counts["ablation_rank"] == 2 and counts["ablation_lambda"] == 2 * 2
    assert not (workdir / "results").exists()


def test_bad_command_line_values_fail_with_one_line_each(workdir):
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "sizes=[10,abc]",
                          "train={temprature: 1}"], cwd=workdir, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert ("invalid config (2 problem(s)):\nsizes[1]: expected an integer, got 'abc'\n"
            "train.temprature: unknown key; expected one of batch_size, ") in text
    assert "Failed validating" not in text and "'properties'" not in text  # no schema dump
    assert not (workdir / "results").exists()
