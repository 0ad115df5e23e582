"""The controls in the config and on the audit's pages: the ``controls`` schema section = its dataclass defaults,
the settings a prepared config gives the controls, the expected-outcome rule, and the "Pipeline controls" table
in claims.md, claims.html and the report's front page on a synthetic controls table."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bayes_transfer.audit.run import read_controls, run_audit, write_audit
from bayes_transfer.config.schema import load_schema, prepare_config, resolve
from bayes_transfer.controls.config import TUNING_KEYS, ControlsConfig, control_params
from bayes_transfer.controls.run import CONTROL_METHODS, ControlSettings
from bayes_transfer.controls.task import ControlSpec
from bayes_transfer.controls.view import CONTROLS_NOTE, REPORTED, control_rows, outcome

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "audit"))  # the synthetic tables of test_audit.py
from test_audit import base_error, make_runs  # noqa: E402


def _default_config(**overrides) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(copy.deepcopy(overrides))
    return prepare_config(cfg)


def test_schema_defaults_are_the_dataclass_defaults():
    schema = load_schema()
    section = resolve(schema["properties"]["controls"], schema)["properties"]
    want = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(ControlsConfig)}
    assert set(section) == set(want)
    for key in ("enabled", "variants", "sizes", "seeds"):
        assert section[key]["default"] == want[key] and type(section[key]["default"]) is type(want[key]), key
    for key in ("data", "model"):  # mapping sections: one schema key per entry
        got = {k: v["default"] for k, v in section[key]["properties"].items()}
        assert got == want[key] and all(type(got[k]) is type(want[key][k]) for k in got), key
    assert want["data"] == dataclasses.asdict(ControlSpec())
    assert want["model"] == ControlSettings().model_kwargs


def test_the_default_config_gives_the_controls_its_own_sections():
    cfg = _default_config()
    assert cfg["controls"]["enabled"] and cfg["controls"]["variants"] == ["positive", "negative"]
    params = control_params(cfg)
    settings = ControlSettings(**params)
    assert settings.seeds == cfg["seeds"] == [0, 1, 2, 3, 4]
    assert settings.sizes == [10, 30, 100]
    assert settings.pretrain == cfg["pretrain"] and settings.train == cfg["train"] and settings.swag == cfg["swag"]
    assert settings.grids == {m: cfg["tuning"]["grids"][m] for m in CONTROL_METHODS}
    assert set(settings.tuning) <= set(TUNING_KEYS) and settings.tuning["validation"] == "task"
    assert settings.spec == dataclasses.asdict(ControlSpec()) and settings.model_kwargs == {"feature_dim": 8}
    # today's config.yaml values are the ones the controls were measured with (docs/controls.md)
    measured = ControlSettings()
    assert settings.grids == measured.grids and settings.sizes == measured.sizes
    assert {k: settings.tuning[k] for k in measured.tuning} == measured.tuning


def test_controls_seeds_and_task_keys_override_and_a_missing_grid_names_the_key():
    cfg = _default_config(controls={"seeds": [3, 4], "data": {"seed": 2}})
    params = control_params(cfg)
    assert params["seeds"] == [3, 4] and params["spec"]["seed"] == 2
    grids = {k: v for k, v in cfg["tuning"]["grids"].items() if k != "bnn_learned_mean"}
    with pytest.raises(ValueError, match=r"tuning.grids has no grid for \['bnn_learned_mean'\]"):
        control_params({**cfg, "tuning": {**cfg["tuning"], "grids": grids}})
    with pytest.raises(ValueError, match="unknown keys"):
        control_params({**cfg, "controls": {**cfg["controls"], "data": {"sede": 1}}})


def _claim(control, claim, verdict, effect=1.0):
    return {"control": control, "claim": claim, "verdict": verdict, "decisive_part": f"{claim} SGD",
            "effect": effect, "unit": "pp", "ci_low": effect - 1, "ci_high": effect + 1, "p_value": 0.01,
            "n_pairs": 15, "degenerate": "", "decisive_reason": "claimed sign, p < 0.05"}


def _controls(positive=("supported", "inconclusive", "supported"), negative=("no relevant effect",) * 3):
    return pd.DataFrame([_claim("positive", c, v, 12.0) for c, v in zip(("C3", "C4", "C10"), positive)]
                        + [_claim("negative", c, v, 0.1) for c, v in zip(("C3", "C4", "C10"), negative)])


def test_expected_outcome_rule():
    assert outcome("positive", {"C3": "supported", "C10": "supported", "C4": "contradicted"})["passed"]
    bad = outcome("positive", {"C3": "supported", "C10": "inconclusive"})
    assert not bad["passed"] and bad["why"] == "not supported: C10 inconclusive"
    assert not outcome("positive", {"C3": "supported"})["passed"]  # a claim without a verdict is not supported
    assert outcome("negative", {"C3": "contradicted", "C4": "inconclusive", "C10": "no relevant effect"})["passed"]
    assert outcome("negative", {"C4": "supported"}) == {"passed": False, "why": "supported on an unrelated prior: C4"}


def test_control_rows_mark_each_claim_and_a_missing_claim():
    table = _controls(negative=("no relevant effect", "supported", "inconclusive")).iloc[:-1]  # without the negative C10
    rows = {(r["control"], r["claim"]): r for r in control_rows(table)}
    assert len(rows) == 6
    assert rows[("positive", "C3")]["as_expected"] == "yes" and rows[("positive", "C4")]["as_expected"] == REPORTED
    assert rows[("negative", "C4")]["as_expected"] == "no" and not rows[("negative", "C4")]["passed"]
    assert rows[("negative", "C10")]["verdict"] == "missing" and rows[("negative", "C10")]["as_expected"] == "yes"
    assert all(r["passed"] for (c, _), r in rows.items() if c == "positive")
    with pytest.raises(ValueError, match="`control` column"):
        control_rows(table.drop(columns="control"))


def _audit(tmp_path, controls):
    runs = make_runs(lambda p, m, n, s: base_error(n, s))
    result = run_audit({"runs": runs}, controls=controls)
    outputs = {"claims_md": tmp_path / "claims.md", "claims_html": tmp_path / "claims.html",
               "overview_html": tmp_path / "claims_overview.html"}
    write_audit(result, outputs)
    return {k: Path(v).read_text() for k, v in outputs.items()}


def test_pages_show_the_controls_table_with_verdicts_and_outcome(tmp_path):
    path = tmp_path / "controls_claims.csv"
    _controls(positive=("supported", "inconclusive", "not supported")).to_csv(path, index=False)
    pages = _audit(tmp_path, read_controls(path))
    note = CONTROLS_NOTE.split(";")[0]
    for name, text in pages.items():
        assert "Pipeline controls" in text, name
        assert text.count("positive (FAILED)") == 3 and text.count("negative (passed)") == 3, name
        assert "C3 SGD: +12.00 [+11.00, +13.00] pp, p 0.010, n = 15" in text, name
        assert note in text.replace("&#x27;", "'"), name
    md = pages["claims_md"]  # the rows end after n: empty text columns read back from CSV as NaN, not as flags
    assert "| positive (FAILED) | C10 | not supported | C10 SGD: +12.00 [+11.00, +13.00] pp, p 0.010, n = 15 " \
           "| supported | no |" in md
    assert f"| positive (FAILED) | C4 | inconclusive | C4 SGD: +12.00 [+11.00, +13.00] pp, p 0.010, n = 15 " \
           f"| {REPORTED} | {REPORTED} |" in md
    assert 'id="audit-controls"' in pages["overview_html"] and '<td class="v-supported">supported</td>' \
        in pages["overview_html"]


def test_pages_without_controls_have_no_controls_section(tmp_path):
    pages = _audit(tmp_path, None)
    assert all("Pipeline controls" not in text for text in pages.values())
    assert read_controls(None) is None
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"claim": ["C3"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="not the controls' claims table"):
        read_controls(bad)
