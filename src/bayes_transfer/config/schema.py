"""A pipeline config made ready to run: typed, validated against its JSON schema, defaults filled in, checked.

:func:`prepare_config` is what the Snakefile calls (workflow/rules/common.smk) on the merged config
(``config.yaml``, then ``--configfile`` files, then ``--config`` values):

1. **Strings typed.** Snakemake 9 passes nested ``--config`` values as strings (``sizes='[10,100]'`` arrives as
   ``['10', '100']``). A string where the schema wants a number, integer, list, mapping, true/false or null is
   read as YAML (``'10'`` -> 10, ``'1e-3'`` -> 0.001, ``'null'`` -> None); a key the schema leaves untyped (the
   values of ``tuning.grids``, ``model.kwargs``) is read the same way.
2. **Validated, defaults set.** Every problem the schema finds is one line naming the key, what was expected and
   the value given; a missing key gets the schema's default (the dataclass default, tests/unit/config/test_config.py).
3. **Dependent defaults.** Keys whose schema default is ``null`` "follows" take their value from the lists they
   depend on (:func:`apply_dependent_defaults`), so overriding ``pretrainings`` or ``sizes`` keeps them valid.
4. **Checked** beyond the schema (:mod:`bayes_transfer.config.check`), again one line per problem.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping

import yaml

from bayes_transfer.config.check import ConfigError, config_problems

#: the schema of a repository checkout (the workflow passes its own path)
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
#: YAML's spellings of null
NULL_WORDS = ("null", "Null", "NULL", "~")


@functools.lru_cache(maxsize=4)
def _load_schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema (a fresh copy: validation stores defaults in the config, never in the schema)."""
    return copy.deepcopy(_load_schema(str(path or SCHEMA_PATH)))


# ---------------------------------------------------------------------------------------------- 1. strings typed
def resolve(sub: Mapping, schema: Mapping) -> dict:
    """``sub`` with a local ``$ref`` (``#/$defs/...``) replaced by its target; sibling keywords win."""
    sub = dict(sub)
    while "$ref" in sub:
        ref = sub.pop("$ref")
        if not ref.startswith("#/"):
            raise ValueError(f"config schema: only local references are supported, got {ref!r}")
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target[part]
        sub = {**target, **sub}
    return sub


def _types(sub: Mapping) -> set[str]:
    t = sub.get("type")
    return {t} if isinstance(t, str) else set(t or ())


def parse_string(text: str) -> Any:
    """A ``--config`` string read as YAML: null, true/false, an int, a finite float, a list or a mapping;
    anything else (or a string that does not parse) is returned unchanged."""
    t = text.strip()
    if t in NULL_WORDS:
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        value = float(t)
        return value if math.isfinite(value) else text
    except ValueError:
        pass
    try:
        value = yaml.safe_load(t)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (list, dict)) else text


def coerce_strings(value: Any, sub: Mapping, schema: Mapping) -> Any:
    """``value`` with every string leaf typed as its (sub)schema wants (see the module docstring); dicts and
    lists are changed in place, the (possibly new) value is returned."""
    sub = resolve(sub, schema)
    types = _types(sub)
    if isinstance(value, str):
        if "string" not in types:
            parsed = parse_string(value)
            if isinstance(parsed, float) and parsed.is_integer() and "integer" in types and "number" not in types:
                parsed = int(parsed)
            value = parsed
        elif "null" in types and value.strip() in NULL_WORDS:
            value = None
    if isinstance(value, dict):
        props = sub.get("properties") or {}
        extra = sub.get("additionalProperties")
        for key in list(value):
            child = props.get(key, extra if isinstance(extra, dict) else ({} if extra is None else None))
            if child is not None:
                value[key] = coerce_strings(value[key], child, schema)
    elif isinstance(value, list):
        items = sub.get("items")
        value[:] = [coerce_strings(v, items if isinstance(items, dict) else {}, schema) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- 2. validation
_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "array": "a list", "object": "a mapping", "null": "null"}


def _validator(schema: dict):
    """A Draft 2020-12 validator that also stores each missing property's default (a copy) in the instance."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def key_path(parts: Iterable) -> str:
    """``("tuning", "grids", "sgd_transfer", "lr", 1)`` -> ``tuning.grids.sgd_transfer.lr[1]``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _error_lines(error) -> list[str]:
    """One line per problem of a jsonschema error: the key, what was expected, the value given."""
    path, kind, want, got = key_path(error.absolute_path), error.validator, error.validator_value, error.instance
    if "propertyNames" in error.relative_schema_path:
        return [f"{path}: expected key names matching {want!r}, got key {got!r}"]
    if kind == "additionalProperties" and want is False:
        known = sorted((error.schema.get("properties") or {}))
        extra = [k for k in got if k not in known]
        return [f"{key_path([*error.absolute_path, k])}: unknown key; expected one of {', '.join(known)}, "
                f"got {_shown(got[k])}" for k in extra]
    if kind == "type":
        words = [_TYPE_WORDS.get(t, t) for t in ([want] if isinstance(want, str) else want)]
        return [f"{path}: expected {' or '.join(words)}, got {_shown(got)}"]
    if kind == "enum":
        return [f"{path}: expected one of {', '.join('null' if v is None else str(v) for v in want)}, "
                f"got {_shown(got)}"]
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [f"{path}: expected a number {bounds[kind]} {want:g}, got {_shown(got)}"]
    if kind in ("minItems", "maxItems"):
        return [f"{path}: expected at {'least' if kind == 'minItems' else 'most'} {want} item(s), got {_shown(got)}"]
    if kind == "uniqueItems":
        return [f"{path}: expected distinct items, got {_shown(got)}"]
    if kind == "multipleOf":
        return [f"{path}: expected a multiple of {want:g}, got {_shown(got)}"]
    return [f"{path}: {error.message}"]


def schema_problems(config: MutableMapping, schema: dict) -> list[str]:
    """Every problem the schema finds in ``config``, one line each (and the defaults stored in ``config``)."""
    errors = sorted(_validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for e in errors for line in _error_lines(e)]


# ---------------------------------------------------------------------------------------------- 3. dependent defaults
def apply_dependent_defaults(config: MutableMapping) -> MutableMapping:
    """Fill in the keys whose default follows other settings (each only where it is null), as the schema
    describes them:

    * ``ablations.pretraining``: ``simclr`` when it is one of ``pretrainings`` (the paper's Fig. 3), else the
      first of ``pretrainings``;
    * ``ablations.n_train``: the middle one of ``sizes`` (sorted; the upper middle one for an even count);
    * ``segmentation.<backbone>.pretrainings``: the top-level ``pretrainings``;
    * ``swag.weight_decay``: ``pretrain.weight_decay`` (SWAG keeps the pre-training's weight decay).
    """
    abl = config["ablations"]
    if abl.get("pretraining") is None:
        pretrainings = config["pretrainings"]
        abl["pretraining"] = "simclr" if "simclr" in pretrainings else pretrainings[0]
    if abl.get("n_train") is None:
        sizes = sorted(config["sizes"])
        abl["n_train"] = sizes[len(sizes) // 2]
    seg = config["segmentation"]
    for backbone in ("resnet50", "resnet101"):
        if seg[backbone].get("pretrainings") is None:
            seg[backbone]["pretrainings"] = list(config["pretrainings"])
    if config["swag"].get("weight_decay") is None:
        config["swag"]["weight_decay"] = config["pretrain"]["weight_decay"]
    return config


# ---------------------------------------------------------------------------------------------- all steps
def prepare_config(config: MutableMapping, schema_path: str | Path | None = None) -> MutableMapping:
    """Type, validate, complete and check ``config`` in place (the module docstring); return it.

    Raises :class:`~bayes_transfer.config.check.ConfigError` listing every problem, one per line: all schema
    problems if there are any, else all problems of the checks beyond the schema.
    """
    schema = load_schema(schema_path)
    coerce_strings(config, schema, schema)
    problems = schema_problems(config, schema)
    if problems:
        raise ConfigError(problems)
    apply_dependent_defaults(config)
    problems = config_problems(config)
    if problems:
        raise ConfigError(problems)
    return config
