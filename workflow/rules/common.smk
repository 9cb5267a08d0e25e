"""Experiment names, output paths and the config pieces each rule depends on."""

import re

EXPERIMENTS = lacfg.experiments(CFG)
RESULTS = CFG["results"].rstrip("/")


wildcard_constraints:
    exp="|".join(re.escape(name) for name in EXPERIMENTS),


def experiment_params(wildcards):
    """Name, sweep index (it seeds the chains) and transforms of one experiment."""
    e = EXPERIMENTS[wildcards.exp]
    return {
        "name": e.name,
        "index": e.index,
        "transforms": [list(t) for t in e.transforms],
    }


def sampling_settings():
    """Every setting the draws depend on; the 'good' threshold only matters downstream."""
    target = {k: v for k, v in CFG["target"].items() if k != "good_threshold"}
    return {
        "seed": CFG["seed"],
        "model": CFG["model"],
        "target": target,
        "sampler": CFG["sampler"],
    }


def n_batches():
    s = CFG["sampler"]
    return -(-s["n_chains"] // s["chains_per_batch"])


def all_outputs():
    """Everything the report shows: per-experiment diagnostics and reductions, and the figures."""
    per_exp = [
        f"{RESULTS}/{{exp}}/diagnostics/summary.csv",
        f"{RESULTS}/{{exp}}/diagnostics/normality.csv",
        f"{RESULTS}/{{exp}}/diagnostics/convergence.json",
        f"{RESULTS}/{{exp}}/diagnostics/trace_U.png",
        f"{RESULTS}/{{exp}}/diagnostics/rank_U.png",
        f"{RESULTS}/{{exp}}/diagnostics/rhat.png",
        f"{RESULTS}/{{exp}}/reduce/reduction.h5",
        f"{RESULTS}/{{exp}}/reduce/summary.json",
    ]
    return expand(per_exp, exp=list(EXPERIMENTS)) + [
        f"{RESULTS}/figures/fig1_datasets.png",
        f"{RESULTS}/figures/fig2_good_minima.png",
    ]
