"""Experiment names, output paths and the config pieces each rule depends on."""

import json
import os
import re
import socket

import psutil

from lossatlas import steps

EXPERIMENTS = lacfg.experiments(CFG)
RESULTS = CFG["results"].rstrip("/")


wildcard_constraints:
    exp="|".join(re.escape(name) for name in EXPERIMENTS),


def step_settings(step):
    """The settings ``step`` reads, as its params: the rerun trigger and its interface."""
    return steps.settings(step, CFG)


def experiment_params(wildcards):
    """Name, sweep index (it seeds the chains) and transforms of one experiment."""
    e = EXPERIMENTS[wildcards.exp]
    return {
        "name": e.name,
        "index": e.index,
        "transforms": [list(t) for t in e.transforms],
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
    ] + landscape_outputs()
    return (
        expand(per_exp, exp=list(EXPERIMENTS))
        + [
            f"{RESULTS}/figures/fig1_datasets.png",
            f"{RESULTS}/figures/fig2_good_minima.png",
        ]
        + compare_outputs()
    )


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
    ]


def compare_outputs():
    """The comparison with the reference, when there is another experiment to compare."""
    if len(EXPERIMENTS) < 2:
        return []
    return [f"{RESULTS}/landscape/compare.csv", f"{RESULTS}/landscape/compare.png"]


OWNERS = Path(".snakemake/lossatlas-owners.json")


def _alive(entry):
    try:
        return psutil.Process(entry["pid"]).create_time() == entry["started"]
    except psutil.Error:
        return False


def clear_stale_lock():
    """Let the same command resume after snakemake was killed (kill -9, power loss).

    A killed snakemake leaves its lock in .snakemake/locks and the next run refuses to start
    until `snakemake --unlock`. Every snakemake that parses this workflow here records its pid;
    the lock is removed only when all recorded processes are gone and ran on this host, so a
    running snakemake (here or elsewhere) keeps its lock.
    """
    locks = Path(".snakemake/locks")
    try:
        owners = json.loads(OWNERS.read_text())
    except (OSError, ValueError):
        owners = []
    host = socket.gethostname()
    held = locks.is_dir() and any(locks.iterdir())
    if held:
        if not owners or any(o["host"] != host or _alive(o) for o in owners):
            return  # taken by a live (or unknown) snakemake: its lock stands
        for f in locks.iterdir():
            f.unlink(missing_ok=True)
        pids = ", ".join(str(o["pid"]) for o in owners)
        print(
            f"lossatlas: removed the stale lock of a killed snakemake (pid {pids})",
            file=sys.stderr,
        )
        owners = []
    me = psutil.Process()
    owners = [o for o in owners if o["host"] == host and _alive(o)]
    owners.append({"host": host, "pid": me.pid, "started": me.create_time()})
    OWNERS.parent.mkdir(exist_ok=True)
    tmp = OWNERS.with_suffix(f".{me.pid}.tmp")
    tmp.write_text(json.dumps(owners))
    os.replace(tmp, OWNERS)


if workflow.is_main_process:
    clear_stale_lock()
