"""One function per workflow rule: the only code that reads the validated config.

Each module of this package holds the steps of one rule family and declares, in its ``READS``,
the config settings each step's numbers depend on. The rule passes exactly those as its
``params`` (:func:`settings`), so the rerun trigger and the step's interface are one thing; a
step reading a setting it did not declare fails with a message that names it. A module's
``RUNTIME`` lists settings that say where a step runs and change no number (the Dask
placement): they reach the step from the config at run time and never rerun a job.

A step is found by its rule's name: a new analysis adds a module here (found by
:data:`FAMILIES`, never listed by hand), a rule, and its library code. Every rule runs the one
script ``workflow/scripts/step.py``, which calls :func:`run_job`.

Below this layer the library (model, samplers, engine, store, analyses, plots) takes plain
arguments and never sees the config.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from lossatlas import config as lacfg
from lossatlas.steps.settings import Settings, UndeclaredSetting, experiment, experiment_param, pick

__all__ = [
    "FAMILIES",
    "READS",
    "RUNTIME",
    "Settings",
    "UndeclaredSetting",
    "experiment",
    "experiment_param",
    "home",
    "run_job",
    "runtime",
    "settings",
    "settings_of_experiment",
]

# modules of this package that hold no step
_HELPERS = ("arguments", "settings")

# the modules that hold steps, each with its READS (and RUNTIME): every one in this package
FAMILIES: dict[str, ModuleType] = {
    m.name: importlib.import_module(f"{__name__}.{m.name}")
    for m in pkgutil.iter_modules(__path__)
    if m.name not in _HELPERS
}
READS: dict[str, tuple[str, ...]] = {}
RUNTIME: dict[str, tuple[str, ...]] = {}
_HOME: dict[str, ModuleType] = {}
for _module in FAMILIES.values():
    for _step in _module.READS:
        if _step in READS:
            raise RuntimeError(f"step {_step!r} is declared by two modules of {__name__}")
        _HOME[_step] = _module
    READS.update(_module.READS)
    RUNTIME.update(getattr(_module, "RUNTIME", {}))
# steps.sample is the step, not the module of that name (FAMILIES["sample"]): importing a
# module binds its name on the package, so the steps are bound after
globals().update({_step: getattr(_HOME[_step], _step) for _step in READS})


def home(step: str) -> ModuleType:
    """The module that holds ``step``."""
    return _HOME[step]


def settings(step: str, cfg: Mapping) -> Settings:
    """The settings of a validated config that ``step`` reads (its module's ``READS``)."""
    return Settings(pick(cfg, READS[step]), step)


def runtime(step: str, cfg: Mapping) -> Settings:
    """The run-time settings of ``step`` (``RUNTIME``): where it runs, not what it computes."""
    return Settings(pick(cfg, RUNTIME.get(step, ())), step)


def settings_of_experiment(step: str, cfg: dict, name: str) -> Settings:
    """:func:`settings` of ``step`` as experiment ``name`` runs it (its own hidden widths)."""
    return settings(step, lacfg.for_experiment(cfg, name))


def run_job(job, log: logging.Logger) -> Any:
    """Run the step named after ``job``'s rule (``job``: a rule script's ``snakemake``).

    A step names what it takes by its parameters: ``inputs``, ``outputs``, ``s`` (its
    settings), ``name`` (the job's experiment or network), ``exp`` (the ``experiment``
    param), ``names`` (the experiments a rule across them reads), ``threads``, ``run`` (its
    ``RUNTIME`` settings) and ``log``.
    """
    step = getattr(home(job.rule), job.rule)
    wildcards = job.wildcards
    offered = {
        "inputs": lambda: job.input,
        "outputs": lambda: job.output,
        "s": lambda: job.params.settings,
        "name": lambda: wildcards.exp if hasattr(wildcards, "exp") else wildcards.network,
        "exp": lambda: job.params.experiment,
        "names": lambda: job.params.names,
        "threads": lambda: job.threads,
        "run": lambda: runtime(job.rule, job.config),
        "log": lambda: log,
    }
    wanted = inspect.signature(step).parameters
    return step(**{k: offered[k]() for k in wanted if k in offered})


def __getattr__(name: str) -> Any:
    # steps.census, steps.target, ...: the library of every step module, under one name
    for module in (importlib.import_module(f"{__name__}.arguments"), *FAMILIES.values()):
        if not name.startswith("_") and name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
