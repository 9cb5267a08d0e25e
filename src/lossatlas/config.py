"""Load and validate the workflow config against its JSON Schema, with defaults filled in."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lossatlas.schema import (  # noqa: F401 (ConfigError, section: the public names here too)
    ConfigError,
    best_match,
    describe,
    field_name,
    load_schema,
    section,
    validator,
)


def validate(
    config: dict | None,
    schema: dict | str | Path | None = None,
    *,
    command_line: dict | None = None,
) -> dict:
    """Return a validated deep copy of ``config`` with defaults filled in. ``command_line``:
    the values Snakemake's ``--config`` set, whose strings are read as the schema's numbers,
    booleans or null (a nested ``--config sampler='{n_chains: 64}'`` arrives as strings); a
    config file's quoted values stay strings.

    Raises ConfigError with one line naming the first bad field.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    cfg = _coerce(copy.deepcopy(config or {}), schema, command_line or {})
    for path, value in _non_finite(cfg):
        # JSON Schema compares NaN with nothing, so `minimum` lets it through
        raise ConfigError(
            f"invalid config: {field_name(path)}: {value} is not a finite number; give a number"
        )
    errors = sorted(
        validator(schema).iter_errors(cfg), key=lambda e: (len(e.absolute_path), e.path)
    )
    if errors:
        best = best_match(errors)
        raise ConfigError(f"invalid config: {describe(best)}; see config/README.md")
    _check_semantics(cfg)
    return cfg


_JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _coerce(obj, schema: dict, given):
    """At the places ``given`` (the command line's values) sets, strings where the schema
    wants a number, an integer, a boolean or null, read as YAML."""
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        for key, value in obj.items():
            if key in props and isinstance(given, dict) and key in given:
                obj[key] = _coerce(value, props[key], given[key])
        return obj
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"], v) for v in obj]
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if not isinstance(obj, str) or "string" in types or not types:
        return obj
    try:
        value = yaml.safe_load(obj)
    except yaml.YAMLError:
        return obj
    for t in types:
        want = _JSON_TYPES.get(t)
        # True is an int to Python, never an integer or a number to the schema
        if want and isinstance(value, want) and (t == "boolean" or not isinstance(value, bool)):
            return value
    return obj


def _non_finite(obj, path=()):
    if isinstance(obj, float) and not math.isfinite(obj):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _non_finite(v, (*path, i))


def _check_semantics(cfg: dict) -> None:
    """Rules JSON Schema cannot express."""
    ds = cfg["dataset"]
    if ds["low"] >= ds["high"]:
        raise ConfigError(
            f"invalid config: dataset.low: {ds['low']} must be below dataset.high ({ds['high']})"
        )
    if "rotate" in cfg["experiments"]["sweep"] and ds["n_features"] != 2:
        raise ConfigError(
            "invalid config: dataset.n_features: experiments.sweep.rotate needs 2-D inputs "
            f"(got {ds['n_features']}); drop the rotation or set dataset.n_features: 2"
        )
    sweep = cfg["experiments"]["sweep"]
    for name in ("reflect", "shear"):
        if name in sweep and ds["n_features"] < 2:
            raise ConfigError(
                f"invalid config: dataset.n_features: experiments.sweep.{name} needs "
                f"at least 2 (got {ds['n_features']})"
            )
    if ds["generator"] in ("xor", "moons", "circles"):
        for key in ("n_features", "n_classes"):
            if ds[key] != 2:
                raise ConfigError(
                    f"invalid config: dataset.{key}: must be 2 for dataset.generator "
                    f"{ds['generator']} (got {ds[key]})"
                )
    _check_model_and_data(cfg)
    _check_network(cfg)
    _check_expected(cfg)
    if cfg["landscape"]["cells"]["when"] == "always":
        for name in experiments(cfg):
            if unmet := cells_unmet(cfg, name):
                raise ConfigError(
                    f"invalid config: landscape.cells.when: always, but experiment {name} "
                    f"lacks {unmet}; set it to auto to skip such networks"
                )
    if cfg["landscape"]["band"]["when"] == "always" and (unmet := band_unmet(cfg)):
        raise ConfigError(
            f"invalid config: landscape.band.when: always, but the config lacks {unmet}; "
            "set it to auto to skip the band"
        )
    lc = cfg.get("landscape", {}).get("dimension", {})
    if lc and lc["mle_k1"] >= lc["mle_k2"]:
        raise ConfigError(
            f"invalid config: landscape.dimension.mle_k1: {lc['mle_k1']} must be below "
            f"landscape.dimension.mle_k2 ({lc['mle_k2']})"
        )
    names = list(experiments(cfg))
    ref = cfg["experiments"]["reference"]
    if ref is not None and ref not in names:
        raise ConfigError(
            f"invalid config: experiments.reference: {ref!r} is not one of {', '.join(names)}"
        )
    dask = cfg["dask"]
    for placement in ("address", "scheduler_file"):
        if dask["placement"] == placement and not dask[placement]:
            raise ConfigError(
                f"invalid config: dask.{placement}: must be set when dask.placement is {placement}"
            )


def _check_model_and_data(cfg: dict) -> None:
    from lossatlas import data

    ds, m, sweep = cfg["dataset"], cfg["model"], cfg["experiments"]["sweep"]
    if ds["generator"] == "file":
        if not ds["path"]:
            raise ConfigError(
                "invalid config: dataset.path: must be set for dataset.generator file"
            )
        try:
            regression = data.is_regression(ds)
        except ValueError as err:
            raise ConfigError(f"invalid config: {err}") from None
    else:
        regression = ds["generator"] in data.REGRESSION_GENERATORS
    if ds["generator"] == "digits" and (ds["subset"] or 0) > 1797:
        raise ConfigError("invalid config: dataset.subset: digits has 1797 images; set <= 1797")
    if ds["generator"] == "mnist1d" and importlib.util.find_spec("mnist1d") is None:
        raise ConfigError(
            "invalid config: dataset.generator: mnist1d needs the mnist1d package: pip install "
            '-e ".[mnist1d]" (it generates the data here, no download)'
        )
    n_test = cfg["predict"]["n_test"]
    if n_test and (available := data.heldout_available(ds)) is not None and n_test > available:
        where = {
            "permute3": "permute3 has no test points (its 3 are the task)",
            "mnist1d": f"mnist1d's test split has {available} sequences",
            "digits": f"digits has {available} images outside dataset.subset",
            "file": f"dataset.path has {available} test points (arrays X_test, y_test or Y_test)",
        }[ds["generator"]]
        raise ConfigError(
            f"invalid config: predict.n_test: {n_test}, but {where}; set predict.n_test: "
            f"{available}" + (" or lower" if available else "")
        )
    if regression and m["loss"] != "mse":
        raise ConfigError(
            f"invalid config: model.loss: dataset.generator {ds['generator']} gives float "
            f"targets; set model.loss: mse (got {m['loss']})"
        )
    if m["loss"] == "mse" and not regression:
        raise ConfigError(
            "invalid config: model.loss: mse needs float targets; use dataset.generator "
            "regression, permute3 or a file with Y, or a classification loss"
        )
    if regression and "label_noise" in sweep:
        raise ConfigError(
            "invalid config: experiments.sweep.label_noise: a regression dataset has no labels"
        )
    if m["bias"] == "none" and "translate" in sweep:
        raise ConfigError(
            "invalid config: experiments.sweep.translate: without a first-layer bias a "
            "translation is no reparametrisation; drop it or set model.bias: all or hidden"
        )
    if m["bias"] != "all" and m["activation"] == "sigmoid":
        raise ConfigError(
            "invalid config: model.bias: sigmoid's sign symmetry moves the next layer's bias; "
            "use model.bias: all with sigmoid"
        )
    backend = cfg["sampler"]["backend"]
    if m["bias"] != "all" and backend in ("cuda", "jax"):
        raise ConfigError(
            f"invalid config: sampler.backend: {backend} runs networks with every bias only; "
            "set model.bias: all or sampler.backend: numba"
        )
    if backend == "jax" and importlib.util.find_spec("jax") is None:
        raise ConfigError(
            "invalid config: sampler.backend: jax needs JAX, which is not installed: pip "
            'install -e ".[jax]", or set sampler.backend: numba'
        )
    if ds["linear_map"] is not None:
        rows = ds["linear_map"]
        if len(rows) != ds["n_targets"] or any(len(r) != ds["n_features"] for r in rows):
            raise ConfigError(
                f"invalid config: dataset.linear_map: must be {ds['n_targets']} rows "
                f"(n_targets) of {ds['n_features']} numbers (n_features)"
            )


def _check_network(cfg: dict) -> None:
    """A convolutional network (``model.layers``) or a user's (``model.python``): JAX runs it,
    and its layers fit the data. A user's model is imported by :func:`lossatlas.preflight.
    check_environment`, not here."""
    from lossatlas import data
    from lossatlas.model import spec

    m, sweep = cfg["model"], cfg["experiments"]["sweep"]
    which = spec.kind(m)
    if m["layers"] and m["python"]:
        raise ConfigError(
            "invalid config: model.python: model.layers also describes the network; keep one"
        )
    if m["input_shape"] and which != "conv":
        raise ConfigError("invalid config: model.input_shape: only model.layers reads it")
    if which == "mlp":
        return
    field = "model.layers" if which == "conv" else "model.python"
    if cfg["sampler"]["backend"] != "jax":
        raise ConfigError(
            f"invalid config: {field}: JAX evaluates this network; set sampler.backend: jax "
            '(pip install -e ".[jax]")'
        )
    if "hidden" in sweep:
        raise ConfigError(
            f"invalid config: experiments.sweep.hidden: sweeps the MLP's widths, and {field} "
            "describes another network; sweep with one config per network instead"
        )
    if which == "python":
        # a user's network has no known symmetry group, hence no canonical parameters
        for key, value in (
            ("coordinates", cfg["coordinates"]),
            ("landscape.census.key", cfg["landscape"]["census"]["key"]),
        ):
            if value == "canonical":
                raise ConfigError(
                    f"invalid config: {key}: canonical needs a known symmetry group, and "
                    "model.python's network has none; use raw (coordinates) or logits (census)"
                )
    if which == "conv":
        n_features, n_outputs = data.feature_and_class_counts(cfg["dataset"])
        try:
            spec.conv_net(m, n_features, n_outputs)
        except ValueError as e:
            raise ConfigError(f"invalid config: {e}") from None


def _check_expected(cfg: dict) -> None:
    if not cfg["expected"]:
        return
    # here, not above: the theory checks' imports (SciPy's optimisers, matplotlib) cost a
    # second of every Snakemake start that validates a config without them
    from lossatlas import data
    from lossatlas.analysis import theory

    m, ds = cfg["model"], cfg["dataset"]
    _, n_features, n_outputs = data.shape_of(ds)  # a user's file: its real shape
    for name in cfg["expected"]:
        problem = theory.unmet_requirement(
            name,
            loss=m["loss"],
            energy=cfg["target"]["energy"],
            activation=m["activation"],
            hidden=list(m["hidden"]),
            bias=m["bias"],
            generator=ds["generator"],
            n_features=n_features,
            n_outputs=n_outputs,
        )
        if problem:
            raise ConfigError(f"invalid config: expected: {name} needs {problem}")


def load(path: str | Path, schema: dict | str | Path | None = None) -> dict:
    """Read a YAML config file and validate it."""
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    return validate(raw, schema)


@dataclass(frozen=True)
class Experiment:
    """One point of the sweep: a name, the ordered dataset transforms and, when the sweep
    varies the architecture, the hidden widths (None: ``model.hidden``)."""

    name: str
    index: int
    transforms: tuple[tuple[str, Any], ...]
    hidden: tuple[int, ...] | None = None


# sweep keys that change the network, not the data
MODEL_SWEEPS = ("hidden",)


def _fmt(value) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_fmt(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def experiments(cfg: Mapping) -> dict[str, Experiment]:
    """Expand the sweep into experiments, named like ``rotate-120`` or ``hidden-2x2``, in a
    stable order."""
    sweep = cfg["experiments"]["sweep"]
    keys = list(sweep)
    out = {}
    for i, values in enumerate(itertools.product(*(sweep[k] for k in keys))):
        pairs = tuple(zip(keys, values, strict=True))
        name = "_".join(f"{k}-{_fmt(v)}" for k, v in pairs)
        transforms = tuple((k, v) for k, v in pairs if k not in MODEL_SWEEPS)
        hidden = next((tuple(v) for k, v in pairs if k == "hidden"), None)
        out[name] = Experiment(name=name, index=i, transforms=transforms, hidden=hidden)
    return out


def experiment_pattern(cfg: Mapping) -> str:
    """A regular expression that matches exactly the names :func:`experiments` gives: the
    sweep's factors one after another. A list of every name would grow with the product of the
    value lists (1,080 names: 20 kB, which Snakemake scans in every file pattern it applies);
    this grows with their sum."""
    return "_".join(
        f"{re.escape(key)}-(?:{'|'.join(re.escape(_fmt(v)) for v in values)})"
        for key, values in cfg["experiments"]["sweep"].items()
    )


def hidden_of(cfg: Mapping, name: str) -> list[int]:
    """The hidden widths of experiment ``name``, from its name: a workflow asks this of every
    experiment, and expanding the whole sweep each time would cost n^2 (1,080 experiments:
    half a minute)."""
    # every list of the sweep, read: a name, hence its widths, depends on them all
    sweep = {key: cfg["experiments"]["sweep"][key] for key in cfg["experiments"]["sweep"]}
    if "hidden" not in sweep:
        return list(cfg["model"]["hidden"])
    widths = {f"hidden-{_fmt(v)}": v for v in sweep["hidden"]}
    part = next((p for p in name.split("_") if p in widths), None)
    if part is None:
        raise KeyError(name)
    return list(widths[part])


def cells_unmet(cfg: Mapping, name: str) -> str | None:
    """Why experiment ``name``'s network has no Liu cells analysis, or None when it has one:
    one hidden ReLU layer with a bias, one output, squared loss. (Decided here, as the band's
    is, not in the analysis: planning a run would otherwise import its LP solvers.)"""
    if cfg["landscape"]["cells"]["when"] == "never":
        return "landscape.cells.when: never"
    from lossatlas import data
    from lossatlas.model import spec

    m = cfg["model"]
    if spec.kind(m) != "mlp":
        return "a fully connected network (model.hidden; Liu's cells are an MLP's)"
    one_of_each = len(hidden_of(cfg, name)) == 1 and data.shape_of(cfg["dataset"])[2] == 1
    if m["activation"] != "relu" or m["loss"] != "mse" or not one_of_each:
        return "model.activation: relu, model.loss: mse, one hidden layer and one output"
    if m["bias"] == "none":
        return "a hidden-layer bias (model.bias: all or hidden)"
    return None


def band_unmet(cfg: Mapping) -> str | None:
    """Why the config has no band analysis (Choromanska), or None when it has one."""
    if cfg["landscape"]["band"]["when"] == "never":
        return "landscape.band.when: never"
    if len(cfg["experiments"]["sweep"].get("hidden", [])) < 2:
        return "a width sweep (experiments.sweep.hidden with two or more networks)"
    if cfg["model"]["loss"] != "mse":
        return "model.loss: mse (with cross-entropy the minima lie at infinity)"
    if cfg["model"]["activation"] == "relu":
        return (
            "a smooth model.activation (the band counts Hessian indices at zeros of the "
            "gradient; a ReLU network's ends sit on kinks, its Hessian piecewise constant)"
        )
    return None


def network_name(cfg: Mapping, name: str) -> str:
    """A file name for experiment ``name``'s network: the experiments with one network share
    what does not depend on their data. A convolutional or user's network is the config's one
    (only the MLP's widths are swept)."""
    from lossatlas.model import spec

    if spec.kind(cfg["model"]) != "mlp":
        return spec.kind(cfg["model"])
    return "hidden-" + ("-".join(map(str, hidden_of(cfg, name))) or "none")


def for_experiment(cfg: dict, name: str) -> dict:
    """The validated config ``cfg`` as experiment ``name`` runs it: ``model.hidden`` replaced
    when the sweep varies it (else ``cfg`` itself)."""
    e = experiments(cfg)[name]
    if e.hidden is None:
        return cfg
    return {**cfg, "model": {**cfg["model"], "hidden": list(e.hidden)}}


def reference(cfg: dict) -> str:
    return cfg["experiments"]["reference"] or next(iter(experiments(cfg)))
