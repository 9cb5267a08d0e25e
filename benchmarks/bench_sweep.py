"""Sweeps: what an experiment costs in a 24-experiment sweep against the 3-experiment default,
and how long ``snakemake -n`` takes to plan a 1,080-experiment sweep.

- ``default``: the README's command on the default config (rotate 0, 120, 240);
- ``sweep``: the same config with ``experiments.sweep.rotate`` every 15 degrees (24
  experiments), every rule;
- ``plan``: ``snakemake -n`` on rotate 0..359 x scale 1, 1.5, 2 (1,080 experiments): wall time
  and the peak memory of the planning process.

The sweep holds the default's experiments: their own jobs' CPU in both runs is the same work,
which shows what a sweep adds to an experiment (the other experiments' landscapes differ).

Each run starts from a fresh results folder with numba's compile cache warm. Prints wall and
CPU per experiment of each run, their ratio, the per-rule CPU per experiment (the rules that
run once per network or per sweep are where sharing shows), and the plan; ``--write`` puts the
tables into benchmarks/README.md.

    python benchmarks/bench_sweep.py [--rounds 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rounds
from bench_e2e import job_cpu, per_rule, snakemake

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SWEEP = {"experiments": {"sweep": {"rotate": list(range(0, 360, 15))}}}
PLAN = {"experiments": {"sweep": {"rotate": list(range(360)), "scale": [1, 1.5, 2]}}}


def _configfile(work: Path, name: str, cfg: dict) -> Path:
    path = work / f"{name}.json"  # JSON is YAML: snakemake reads it as a config file
    path.write_text(json.dumps(cfg))
    return path


# the default's experiments, which the sweep holds too
SHARED = ("rotate-0", "rotate-120", "rotate-240")


def _run(results: Path, configfile: Path | None) -> dict:
    snakemake(results, configfiles=[configfile] if configfile else [])
    return per_rule(results)


def _shared_cpu(results: Path) -> float:
    """CPU-seconds of the jobs of :data:`SHARED`'s experiments alone, as each logged it: the
    same work in both runs, so what a sweep adds to an experiment's own jobs shows."""
    logs = [log for e in SHARED for log in (results / "logs" / e).glob("*.log")]
    return sum(c for c in map(job_cpu, logs) if c is not None)


def _plan(configfile: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``snakemake -n`` on ``configfile``."""
    cmd = [str(BIN / "snakemake"), "-n", "-q", "--configfile", str(configfile)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="tables into benchmarks/README.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    sweep_cfg = _configfile(work, "sweep", SWEEP)
    n_exp = {"default": 3, "sweep": len(SWEEP["experiments"]["sweep"]["rotate"])}
    rules: dict[str, list[dict]] = {"default": [], "sweep": []}
    shared: dict[str, list[float]] = {"default": [], "sweep": []}
    print(rounds.machine())
    # first, while this process has waited for no other child: the peak RSS is the plan's
    # a results folder of its own: the dry run must not meet a default run's results/
    plan_cfg = {**PLAN, "results": str(work / "plan-results")}
    plan_wall, plan_rss = _plan(_configfile(work, "plan", plan_cfg))
    warm = work / "warm"  # numba's cache holds the kernels after one experiment's chains
    snakemake(warm, [warm / "rotate-0" / "samples.h5"])
    shutil.rmtree(warm)

    def case(name: str, configfile: Path | None):
        def run():
            results = work / f"{name}-{len(rules[name])}"
            rules[name].append(_run(results, configfile))
            shared[name].append(_shared_cpu(results))
            shutil.rmtree(results)

        return run

    runs = rounds.interleave(
        {"default": case("default", None), "sweep": case("sweep", sweep_cfg)}, args.rounds
    )
    per = {
        k: (rounds.median(v) / n_exp[k], rounds.median(v, "cpu") / n_exp[k])
        for k, v in runs.items()
    }
    r = rounds.ratios(runs["sweep"], runs["default"])
    scale = n_exp["default"] / n_exp["sweep"]
    lines = [
        f"{rounds.machine()}; {args.rounds} round(s), medians; every rule, fresh results folders, "
        "numba's cache warm.",
        "",
        "| run | experiments | wall (s) | CPU (s) | wall per experiment (s) "
        "| CPU per experiment (s) | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ts in runs.items():
        lines.append(
            f"| {name} | {n_exp[name]} | {rounds.median(ts):.1f} | {rounds.median(ts, 'cpu'):.1f} "
            f"| {per[name][0]:.1f} | {per[name][1]:.1f} | {rounds.median(ts, 'load'):.1f} |"
        )
    lines += [
        "",
        f"Per experiment, sweep / default: wall {r['wall'] * scale:.2f}, "
        f"CPU {r['cpu'] * scale:.2f}.",
        "",
        f"The default's experiments ({', '.join(SHARED)}) in both runs, their own jobs' CPU "
        f"(the same work): {np.median(shared['default']):.1f} s in the default, "
        f"{np.median(shared['sweep']):.1f} s within the sweep "
        f"({np.median(shared['sweep']) / np.median(shared['default']):.2f}). The sweep's other "
        "experiments are other landscapes: their jobs cost what their chains and minima need.",
        "",
        "CPU per experiment by rule (seconds; a rule that runs once per network or per sweep is "
        "divided by the experiments it serves):",
        "",
        "| rule | default | sweep |",
        "|---|---|---|",
    ]
    names = sorted({k for rs in rules.values() for x in rs for k in x})

    def cpu(name, rule):
        return np.median([x.get(rule, (0, 0))[1] for x in rules[name]]) / n_exp[name]

    for rule in sorted(names, key=lambda k: -cpu("default", k)):
        lines.append(f"| {rule} | {cpu('default', rule):.2f} | {cpu('sweep', rule):.2f} |")
    lines += [
        "",
        f"Planning: `snakemake -n` on 1,080 experiments (rotate 0..359 x scale 1, 1.5, 2): "
        f"{plan_wall:.1f} s, peak RSS {plan_rss:.0f} MiB.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        rounds.write_section("bench_sweep", text)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
