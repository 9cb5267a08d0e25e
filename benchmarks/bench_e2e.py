"""End to end: the README's command on the default config against the same experiment written by
hand with BlackJAX and scikit-learn (peer_blackjax.py), in interleaved rounds on one machine.

Each round runs, in alternating order:

- ``workflow``: ``snakemake --config results=<fresh folder>`` from the repository root (the
  README's command; the workflow profile sets the cores), every rule;
- ``report path``: the same with only the report's targets (dataset, sample, diagnose, reduce,
  figures), in another fresh folder;
- ``peer``: ``python benchmarks/peer_blackjax.py`` (sampling until U converges, R-hat/ESS of
  U, kernel PCA and PCA of the good draws), in a fresh process, JAX's compilation included.

All with numba's compile cache warm (a first workflow run fills it). ``--cold`` adds one
workflow run with an empty cache (``NUMBA_CACHE_DIR`` pointed at an empty folder), timed
against the warm median. Prints the median ratios of wall and CPU time with the load, the
per-rule breakdown of the workflow runs (their ``*.benchmark.tsv``), and the convergence each
side reached; ``--write`` puts the tables into benchmarks/README.md.

    python benchmarks/bench_e2e.py [--rounds 3] [--cold] [--write]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import rounds

from lossatlas import api
from lossatlas import config as lacfg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPORT_RULES = ("dataset", "sample", "diagnose", "reduce", "figures")


def snakemake(results: Path, targets=(), env=None, configfiles=()) -> None:
    # targets before --configfile and --config, which take every word after them
    files = ["--configfile", *map(str, configfiles)] if configfiles else []
    cmd = [str(BIN / "snakemake"), *map(str, targets), *files, "--config", f"results={results}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def report_targets(results: Path, experiments) -> list[Path]:
    figures = [results / "figures" / f for f in ("fig1_datasets.png", "fig2_good_minima.png")]
    return figures + [results / e / "diagnostics" / "summary.csv" for e in experiments]


def job_cpu(log: Path) -> float | None:
    """The CPU time a job logged as it exited (``lifecycle.track_peak_rss``), if it did."""
    found = re.findall(r"CPU time: ([0-9.]+) s", log.read_text()) if log.exists() else []
    return float(found[-1]) if found else None


def per_rule(results: Path) -> dict[str, tuple[float, float]]:
    """Per rule: summed wall seconds (benchmark files) and CPU-seconds of its jobs (their logs;
    the benchmark files' figure, sampled at intervals, where a job logged none)."""
    out = defaultdict(lambda: [0.0, 0.0])
    for tsv in (results / "logs").rglob("*.benchmark.tsv"):
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rule = tsv.name.removesuffix(".benchmark.tsv")
        cpu = job_cpu(tsv.with_name(f"{rule}.log"))
        out[rule][0] += float(row["s"])
        out[rule][1] += float(row["cpu_time"]) if cpu is None else cpu
    return {k: tuple(v) for k, v in out.items()}


def convergence(results: Path, experiments) -> list[dict]:
    rows = []
    for e in experiments:
        doc = json.loads((results / e / "diagnostics" / "convergence.json").read_text())
        c = doc["energy"]
        rows.append(
            {
                "experiment": e,
                "draws": doc["n_draws"],
                "converged": doc["pass"],
                "r_hat_U": c["max_r_hat"],
                "ess_bulk_U": c["min_ess_bulk"],
                "ess_tail_U": c["min_ess_tail"],
            }
        )
    return rows


def peer() -> list[dict]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "peer_blackjax.py")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"peer_blackjax.py failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also one run with an empty numba cache")
    ap.add_argument("--write", action="store_true", help="tables into benchmarks/README.md")
    args = ap.parse_args()
    experiments = list(lacfg.experiments(api.load_config(ROOT / "config" / "config.yaml")))
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    made = itertools.count()

    def fresh() -> Path:
        return work / f"results-{next(made)}"

    kept: dict[str, list] = defaultdict(list)

    def workflow():
        results = fresh()
        snakemake(results)
        kept["rules"].append(per_rule(results))
        kept["converged"] = convergence(results, experiments)
        shutil.rmtree(results)

    def report_path():
        results = fresh()
        snakemake(results, report_targets(results, experiments))
        shutil.rmtree(results)

    def peer_run():
        kept["peer"] = peer()

    print(rounds.machine())
    warm = fresh()  # one experiment's chains first: numba's cache holds the kernels after it
    snakemake(warm, [warm / experiments[0] / "samples.h5"])
    shutil.rmtree(warm)
    runs = rounds.interleave(
        {"workflow": workflow, "report path": report_path, "peer": peer_run}, args.rounds
    )
    cfg = api.load_config(ROOT / "config" / "config.yaml")
    stop = (
        "until U, the outputs and the canonical parameters converged"
        if cfg["sampler"]["until"]
        else f"{cfg['sampler']['draws']} draws per chain"
    )
    lines = [
        f"Default config ({len(experiments)} experiments x {cfg['sampler']['n_chains']} chains, "
        f"{stop}; the peer until U converged), {rounds.machine()}; {args.rounds} interleaved "
        "rounds, medians.",
        "",
        "| run | wall (s) | CPU (s) | / peer, wall | / peer, CPU | load |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("workflow", "report path", "peer"):
        r = rounds.ratios(runs[name], runs["peer"])
        lines.append(
            f"| {name} | {rounds.median(runs[name]):.1f} | {rounds.median(runs[name], 'cpu'):.1f}"
            f" | {r['wall']:.2f} | {r['cpu']:.2f} | {r['load']:.1f} |"
        )
    if args.cold:
        cache = Path(tempfile.mkdtemp(prefix="numba-cold-"))
        env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
        results = fresh()
        cold = rounds.timed(lambda: snakemake(results, env=env))
        warm = rounds.median(runs["workflow"])
        lines.append(
            f"| workflow, cold numba cache | {cold.wall:.1f} | {cold.cpu:.1f} | "
            f"{cold.wall / rounds.median(runs['peer']):.2f} | "
            f"{cold.cpu / rounds.median(runs['peer'], 'cpu'):.2f} | {cold.load:.1f} |"
        )
        lines += ["", f"Cold / warm workflow wall time: {cold.wall / warm:.2f}."]
        shutil.rmtree(cache)
    lines += [
        "",
        "Per rule, workflow runs (sums over experiments; medians over rounds; wall from the "
        "benchmark files, CPU as each job logged it at exit, its Dask workers and process pools "
        "included; two jobs share the 2 cores, so a job's wall can exceed its CPU):",
        "",
    ]
    lines += ["| rule | wall (s) | CPU (s) | in the report path |", "|---|---|---|---|"]
    rules = sorted(
        {k for r in kept["rules"] for k in r},
        key=lambda k: -np.median([r.get(k, (0, 0))[0] for r in kept["rules"]]),
    )
    for rule in rules:
        wall = np.median([r.get(rule, (0, 0))[0] for r in kept["rules"]])
        cpu = np.median([r.get(rule, (0, 0))[1] for r in kept["rules"]])
        on_path = "yes" if rule in REPORT_RULES else ""
        lines.append(f"| {rule} | {wall:.1f} | {cpu:.1f} | {on_path} |")
    lines += ["", "Convergence reached (last round; target R-hat < 1.01, ESS > 400):", ""]
    lines += [
        "| experiment | workflow: draws per chain, verdict | R-hat of U | ESS bulk / tail | "
        "peer: draws per chain | R-hat of U | ESS bulk / tail |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for ours, theirs in zip(kept["converged"], kept["peer"], strict=True):
        verdict = "converged" if ours["converged"] else "not converged"
        lines.append(
            f"| {ours['experiment']} | {ours['draws']}, {verdict} | {ours['r_hat_U']:.4f} | "
            f"{ours['ess_bulk_U']:.0f} / {ours['ess_tail_U']:.0f} | {theirs['draws']} | "
            f"{theirs['r_hat_U']:.4f} | {theirs['ess_bulk_U']:.0f} / {theirs['ess_tail_U']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        rounds.write_section("bench_e2e", table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
