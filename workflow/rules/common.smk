"""Experiment names, output paths and the config pieces each rule depends on."""

import re

from lossatlas import lifecycle, steps
from lossatlas.storage import maintenance

EXPERIMENTS = lacfg.experiments(CFG)
RESULTS = CFG["results"].rstrip("/")
# Each run keeps its job logs and benchmarks beside its results, so two configs never mix them.
LOGS = f"{RESULTS}/logs"


def network_name(exp):
    """A file name for ``exp``'s hidden widths: the experiments with one network share what
    does not depend on their data."""
    return "hidden-" + ("-".join(map(str, lacfg.hidden_of(CFG, exp))) or "none")


# network name -> the first experiment with that network, whose dataset gives its sizes
NETWORKS = {network_name(name): name for name in reversed(list(EXPERIMENTS))}


wildcard_constraints:
    exp="|".join(re.escape(name) for name in EXPERIMENTS),
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


def user_data_file():
    """The user's dataset file (dataset.generator: file), so that changing it reruns."""
    ds = CFG["dataset"]
    return [ds["path"]] if ds["generator"] == "file" else []


def n_batches():
    s = CFG["sampler"]
    return -(-s["n_chains"] // s["chains_per_batch"])


def all_outputs():
    """Everything the report shows: per-experiment diagnostics and reductions, and the figures."""
    per_exp = [
        f"{RESULTS}/{{exp}}/samples.h5",
        f"{RESULTS}/{{exp}}/diagnostics/summary.csv",
        f"{RESULTS}/{{exp}}/diagnostics/normality.csv",
        f"{RESULTS}/{{exp}}/diagnostics/convergence.json",
        f"{RESULTS}/{{exp}}/diagnostics/trace_U.png",
        f"{RESULTS}/{{exp}}/diagnostics/rank_U.png",
        f"{RESULTS}/{{exp}}/diagnostics/rhat.png",
        f"{RESULTS}/{{exp}}/reduce/reduction.h5",
        f"{RESULTS}/{{exp}}/reduce/summary.json",
    ] + landscape_outputs()
    return (
        expand(per_exp, exp=list(EXPERIMENTS))
        + cells_outputs()
        + [f"{RESULTS}/findings.rst", f"{RESULTS}/findings.html"]
        + [
            f"{RESULTS}/figures/fig1_datasets.png",
            f"{RESULTS}/figures/fig2_good_minima.png",
        ]
        + compare_outputs()
        + theory_outputs()
        + band_outputs()
        + restore_outputs()
    )


def restore_outputs():
    """The stores whose batches `lossatlas verify --repair` moved aside, sampled again."""
    pending = maintenance.pending_restores(RESULTS, EXPERIMENTS)
    return [f"{RESULTS}/{name}/chains/restored.json" for name in pending]


def landscape_outputs():
    """Per-experiment outputs of the landscape analyses (with {exp} left as a wildcard)."""
    return [
        f"{RESULTS}/{{exp}}/diagnostics/energy_hist.png",
        f"{RESULTS}/{{exp}}/diagnostics/invariant.csv",
        f"{RESULTS}/{{exp}}/diagnostics/invariant.json",
        f"{RESULTS}/{{exp}}/reduce/kpca_3d.png",
        f"{RESULTS}/{{exp}}/landscape/dataset.png",
        f"{RESULTS}/{{exp}}/landscape/dimension.csv",
        f"{RESULTS}/{{exp}}/landscape/census.csv",
        f"{RESULTS}/{{exp}}/landscape/census_plane.png",
        f"{RESULTS}/{{exp}}/landscape/connect.csv",
    ]


def cells_outputs():
    """Liu's cells, for every experiment whose network qualifies (landscape.cells.when)."""
    return [
        f"{RESULTS}/{name}/landscape/cells.csv"
        for name in EXPERIMENTS
        if lacfg.cells_unmet(CFG, name) is None
    ]


def band_outputs():
    """Choromanska's band, when the config sweeps the width (landscape.band.when)."""
    return [f"{RESULTS}/landscape/band.csv"] if lacfg.band_unmet(CFG) is None else []


def theory_outputs():
    """The checks against known answers, when the config expects some."""
    return [f"{RESULTS}/checks.csv"] if CFG["expected"] else []


def compare_outputs():
    """The comparison with the reference, when there is another experiment to compare."""
    if len(EXPERIMENTS) < 2:
        return []
    return [f"{RESULTS}/landscape/compare.csv", f"{RESULTS}/landscape/compare.png"]


if workflow.is_main_process:
    lifecycle.clear_stale_snakemake_lock()
