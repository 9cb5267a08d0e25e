"""The config's JSON Schema, which holds every default, and its validator: the bottom layer,
which every part of lossatlas may read (validation of a whole config sits in
:mod:`lossatlas.config`, above the library)."""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path

import yaml

__all__ = [
    "SCHEMA_RESOURCE",
    "ConfigError",
    "best_match",
    "validator",
    "describe",
    "field_name",
    "load_schema",
    "package_schema",
    "section",
]

# Shipped inside the package, so a plain (non-editable) install and a workflow used as a
# Snakemake module from another folder both find it.
SCHEMA_RESOURCE = resources.files("lossatlas").joinpath("config.schema.yaml")


class ConfigError(ValueError):
    """A config field is wrong; the message names the field and the fix."""


@functools.cache
def _validator_class():
    """Draft 2020-12 validation that fills in the schema's defaults. Built at the first
    validation: most jobs never validate, and jsonschema costs every process that imports it."""
    import jsonschema

    validator_class = jsonschema.Draft202012Validator
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validator(schema: dict):
    """A validator of ``schema`` that fills in its defaults as it validates."""
    return _validator_class()(schema)


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema: the package's own, or the file at ``path``."""
    if path is None:
        return copy.deepcopy(package_schema())
    with open(path) as fh:
        return yaml.safe_load(fh)


def field_name(path) -> str:
    """A config field's dotted name from its path of keys."""
    return ".".join(str(p) for p in path) or "<top level>"


def describe(error) -> str:
    """One line on a validation error: the field, what is wrong, the field's description."""
    field = field_name(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = field_name(list(error.absolute_path) + [extra[0]]) if extra else field
        return f"{where}: unknown key; allowed keys here are {', '.join(allowed)}"
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    hint = f" ({desc.strip()})" if desc else ""
    return f"{field}: {error.message}{hint}"


def best_match(errors):
    """The error jsonschema judges most relevant among ``errors``."""
    import jsonschema

    return jsonschema.exceptions.best_match(errors)


@functools.cache
def package_schema() -> dict:
    """The package's schema, read once (never modify it: :func:`load_schema` gives copies)."""
    # libyaml's parser where PyYAML has it (the same document, eight times faster; the jobs
    # that fill defaults from the schema read it at every start)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_RESOURCE.read_text(), Loader=loader)


def section(name: str, values: dict | None = None) -> dict:
    """The top-level section ``name`` with ``values`` validated and the schema's defaults filled
    in: library calls outside the workflow (notebooks, tests, benchmarks) get the workflow's
    defaults, which live in the schema only."""
    schema = package_schema()  # read only: the validator fills defaults into copies
    sub = {**schema, "properties": {name: schema["properties"][name]}, "required": []}
    cfg = {name: copy.deepcopy(values or {})}
    errors = list(validator(sub).iter_errors(cfg))
    if errors:
        best = best_match(errors)
        raise ConfigError(f"invalid {name} settings: {describe(best)}; see config/README.md")
    return cfg[name]
