"""Experiment names, output paths and the config pieces each rule depends on."""

import functools
import re

from lossatlas import lifecycle, preflight, steps
from lossatlas.storage import maintenance

EXPERIMENTS = lacfg.experiments(CFG)
RESULTS = CFG["results"].rstrip("/")
# Each run keeps its job logs and benchmarks beside its results, so two configs never mix them.
LOGS = f"{RESULTS}/logs"


def network_name(exp):
    """A file name for ``exp``'s network (lossatlas.config.network_name)."""
    return lacfg.network_name(CFG, exp)


# network name -> the first experiment with that network, whose dataset gives its sizes
NETWORKS = {network_name(name): name for name in reversed(list(EXPERIMENTS))}


wildcard_constraints:
    exp=lacfg.experiment_pattern(CFG),
    network="|".join(re.escape(name) for name in NETWORKS),


def unknown_experiment_pattern():
    """Any first path component under results/ that is neither an experiment nor shared."""
    known = [*EXPERIMENTS, "figures", "landscape", "logs"]
    return "(?!(" + "|".join(re.escape(k) for k in known) + ")/)[^/]+"


def refuse_unknown_experiment(wildcards):
    raise ValueError(
        f"{RESULTS}/{wildcards.other}/{wildcards.path}: {wildcards.other!r} is not an "
        f"experiment of this config; its experiments are {', '.join(EXPERIMENTS)} "
        "(experiments.sweep), and `snakemake -n` with no target plans them all"
    )


def step_settings(step):
    """The settings ``step`` reads, as its params: the rerun trigger and its interface. When
    the sweep varies the architecture, a job of one experiment (or of one network) gets its
    experiment's; which jobs those are, its wildcards say."""
    if "hidden" not in CFG["experiments"]["sweep"]:
        return steps.settings(step, CFG)
    whole_run = steps.settings(step, CFG)

    def of_job(wildcards):
        if not (hasattr(wildcards, "exp") or hasattr(wildcards, "network")):
            return whole_run
        return steps.settings_of_experiment(step, CFG, experiment_of(wildcards))

    return of_job


def experiment_of(wildcards):
    """The experiment a job's settings and dataset come from: its own, or for a job of a
    whole network, the network's first experiment."""
    return wildcards.exp if hasattr(wildcards, "exp") else NETWORKS[wildcards.network]


def experiment_params(wildcards):
    """Name, sweep index (it seeds the chains) and transforms of one experiment."""
    return steps.experiment_param(EXPERIMENTS[wildcards.exp])


@functools.cache
def diagnose_threads():
    """The diagnose rule's processes: one per block of parameters (diagnose.param_block) of
    the largest network, at most all cores; more would sit idle, holding cores another job
    could use."""
    p = preflight.largest_network(CFG)[1]
    return max(1, min(workflow.cores, -(-p // CFG["diagnose"]["param_block"])))


def user_data_file():
    """The user's dataset file (dataset.generator: file), so that changing it reruns."""
    ds = CFG["dataset"]
    return [ds["path"]] if ds["generator"] == "file" else []


def n_batches():
    s = CFG["sampler"]
    return -(-s["n_chains"] // s["chains_per_batch"])


def sample_threads():
    """The sample rule's threads, one Dask worker each: no more than the batches, and the
    cores shared among the experiments so that they all sample at once. A sample job computes
    alone for part of its time (its start, the convergence checks, the store), and another
    job's workers fill those gaps: on the default config (2 cores, 3 experiments), one each
    ran the workflow in 106 s against 122 s with two each, with the same files."""
    return max(1, min(n_batches(), workflow.cores // len(EXPERIMENTS)))


@functools.cache
def pending_restores():
    """The experiments whose batches `lossatlas verify --repair` moved aside (read once)."""
    return set(maintenance.pending_restores(RESULTS, EXPERIMENTS))


# The rules whose outputs a run holds only where a condition says so: for a rule of one
# experiment, experiment name -> bool; for a rule across experiments, () -> bool. Every
# other rule's outputs are in the default target, so a new rule needs no line here.
WHEN = {
    # what `lossatlas verify --repair` moved aside, sampled again
    "restore": lambda exp: exp in pending_restores(),
    # Liu's cells, where the network qualifies (landscape.cells.when)
    "cells": lambda exp: lacfg.cells_unmet(CFG, exp) is None,
    # Choromanska's band, when the config sweeps the width (landscape.band.when)
    "critical_points": lambda exp: lacfg.band_unmet(CFG) is None,
    "band": lambda: lacfg.band_unmet(CFG) is None,
    # the draws on test points, when the config holds some out (predict.n_test)
    "predict": lambda exp: CFG["predict"]["n_test"] > 0,
    # the checks against known answers, when the config expects some
    "theory": lambda: bool(CFG["expected"]),
    # the comparison with the reference, when there is another experiment to compare
    "compare": lambda: len(EXPERIMENTS) > 1,
}
# what a rule of one experiment (or one network) runs over
OVER = {"exp": lambda: EXPERIMENTS, "network": lambda: NETWORKS}


def rule_outputs(r, files=None):
    """Every output of rule ``r`` (or those of ``files``) for each experiment (network) it
    runs on here; none where :data:`WHEN` leaves it out. Rules with other wildcards make no
    target."""
    files = r.output if files is None else files
    wildcards = set(r.wildcard_names)
    when = WHEN.get(r.name, lambda *key: True)
    if not wildcards:
        return [str(f) for f in files] if when() else []
    if len(wildcards) > 1 or next(iter(wildcards)) not in OVER:
        return []
    (wildcard,) = wildcards
    return [
        str(f.apply_wildcards({wildcard: key}))
        for key in OVER[wildcard]()
        if when(key)
        for f in files
    ]


def all_outputs(wildcards):
    """The default target, derived from the rules: every output of every rule."""
    return [f for r in workflow.rules for f in rule_outputs(r)]


def findings_of_analyses(wildcards):
    """The one-line findings of the analyses, for the findings page: each rule's output named
    ``finding`` (a JSON file with a ``finding`` line), wherever the rule runs."""
    return [
        f
        for r in workflow.rules
        if "finding" in r.output.keys()
        for f in rule_outputs(r, [r.output.finding])
    ]


def theory_outputs():
    """The checks against known answers, when the config expects some."""
    return [f"{RESULTS}/checks.csv"] if WHEN["theory"]() else []


def compare_outputs():
    """The comparison's summary, when there is another experiment to compare."""
    return [f"{RESULTS}/landscape/compare.json"] if WHEN["compare"]() else []


if workflow.is_main_process:
    lifecycle.clear_stale_snakemake_lock()
