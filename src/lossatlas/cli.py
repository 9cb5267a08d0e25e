"""The ``lossatlas`` command: check a config before a run, summarise a sample store, verify and
prune a results directory, run the theory checks, install the SLURM profile."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lossatlas import config as lacfg
from lossatlas import lifecycle
from lossatlas._version import __version__


def _validate(args) -> int:
    from lossatlas import preflight
    from lossatlas.model import spec

    try:
        cfg = lacfg.load(args.config)
        est = preflight.check(cfg, local=not args.remote)
    except FileNotFoundError:
        print(f"{args.config}: no such file", file=sys.stderr)
        return 1
    except lacfg.ConfigError as err:
        text = str(err)
        print(
            text if text.startswith(str(args.config)) else f"{args.config}: {text}", file=sys.stderr
        )
        return 1
    s = cfg["sampler"]
    names = list(lacfg.experiments(cfg))
    sizes, p = preflight.largest_network(cfg)
    draws = s["n_chains"] * s["draws"]
    print(f"{args.config}: valid")
    print(f"  experiments: {len(names)} ({', '.join(names)}), reference {lacfg.reference(cfg)}")
    largest = "largest network" if "hidden" in cfg["experiments"]["sweep"] else "network"
    kind = spec.kind(cfg["model"])
    shape = {"mlp": "", "conv": "convolutional, outputs per layer ", "python": "model.python, "}
    print(
        f"  {largest}: {shape[kind]}{' -> '.join(map(str, sizes))} "
        f"{cfg['model']['activation'] if kind != 'python' else cfg['model']['python']}, p = {p}"
    )
    print(
        f"  sampler: {s['kind']} ({s['backend']}), {s['n_chains']} chains in batches of "
        f"{s['chains_per_batch']}, {s['warmup']} warm-up steps, {s['draws']} draws "
        f"thinned by {s['thin']}"
    )
    t = s["tempering"]
    if t["n_temps"] > 1:
        print(
            f"  tempering: {t['n_temps']} temperatures ({t['ladder']} ladder down to beta "
            f"{t['beta_min']:g}), draws kept from beta = 1 only"
        )
    if s["until"]:
        u = s["until"]
        print(
            f"  stops: at the first checkpoint (every {s['checkpoint_every']} draws) where "
            f"R-hat < {u['r_hat']:g} and ESS > {u['ess']:g} at {u['confirm']} checkpoints "
            f"running, at most {s['draws']} draws"
        )
    else:
        print(f"  stops: after {s['draws']} draws (sampler.until is off)")
    most = "at most " if s["until"] else ""
    print(
        f"  draws: {most}{draws} per experiment, {most or 'about '}{est.disk / 2**20:.1f} MiB "
        "on disk in all"
    )
    print(
        f"  memory: about {est.worker_memory / 2**20:.0f} MiB per sampling worker "
        f"({', '.join(f'{k} {v / 2**20:.1f}' for k, v in est.memory_parts.items())} MiB), "
        f"{est.workers} workers"
    )
    print(f"  results: {cfg['results']}/")
    return 0


def _summary(args) -> int:
    from arviz_stats.base import array_stats

    from lossatlas.storage.store import Damaged, SampleStore

    try:
        store = SampleStore(args.store)
    except (OSError, Damaged) as err:  # a missing or damaged store: say which, no traceback
        print(f"lossatlas: {err}", file=sys.stderr)
        return 1
    with store:
        theta = store.theta
        energy = np.asarray(store.potential(), dtype=np.float64)
        mean_loss = np.asarray(store.stat("mean_loss"), dtype=np.float64)
        print(f"{args.store}")
        print(
            f"  theta: {store.n_chains} chains x {store.n_draws} draws x {store.n_params} "
            f"parameters, {theta.dtype}"
        )
        print(f"  sample_stats: {', '.join(store.stat_names)}")
        rhat = float(array_stats.rhat(energy, method="rank", chain_axis=0, draw_axis=1))
        ess = float(array_stats.ess(energy, method="bulk", chain_axis=0, draw_axis=1))
        print(f"  U: mean {energy.mean():.4g}, R-hat {rhat:.4f}, bulk ESS {ess:.0f}")
        q = np.quantile(mean_loss, [0.0, 0.05, 0.5])
        print(f"  mean loss: min {q[0]:.4g}, 5% {q[1]:.4g}, median {q[2]:.4g}")
    return 0


def _verify(args) -> int:
    from lossatlas.storage import maintenance

    try:
        checks = maintenance.verify(args.results, repair=args.repair)
    except lifecycle.SamplingLocked as err:
        print(f"lossatlas: {err}", file=sys.stderr)
        return 1
    for c in checks:
        print(f"{c.status:>11}  {c.path}: {c.detail}")
    bad = [c for c in checks if c.status == "damaged"]
    moved = [c for c in checks if c.status == "moved aside"]
    print(f"{len(checks)} batch files, {len(bad) + len(moved)} damaged")
    if moved:
        print(
            "run the same snakemake command again (with its default target, or "
            "`lossatlas.sample` in Python): it samples only the batches moved aside, checks "
            "them against the finished store, and redoes nothing that read it"
        )
    elif bad:
        print(f"`lossatlas verify --repair {args.results}` moves them aside for a rerun")
    aside = maintenance.describe_aside(args.results)
    if aside:
        print(aside)
    return 1 if bad else 0


def _prune(args) -> int:
    from lossatlas.storage import maintenance

    try:
        n, size = maintenance.prune(args.results)
    except lifecycle.SamplingLocked as err:
        print(f"lossatlas: {err}", file=sys.stderr)
        return 1
    print(f"removed {n} moved-aside files, {size / 2**20:.1f} MiB")
    return 0


def _install_profile(args) -> int:
    from lossatlas import snakemake_profiles

    try:
        where, what = snakemake_profiles.install_slurm_profile(force=args.force)
    except snakemake_profiles.ProfileExists as err:
        print(f"lossatlas: {err}", file=sys.stderr)
        return 1
    print(f"SLURM profile {what}: {where}")
    print("run the workflow on SLURM from the repository root with: snakemake --profile slurm")
    return 0


def _theory(args) -> int:
    import glob
    import subprocess
    from pathlib import Path

    import pandas as pd

    configs = sorted(glob.glob(str(Path(args.configs) / "*.yaml")))
    if not configs:
        print(f"lossatlas: no *.yaml under {args.configs}", file=sys.stderr)
        return 1
    # the snakemake of the environment lossatlas runs in
    head = [sys.executable, "-m", "snakemake"]
    tables = []
    for path in configs:
        cfg = lacfg.load(path)
        print(f"{path}: running the theory target", flush=True)
        cmd = [*head, "--configfile", path]
        # the checks are cheap and read the installed library: always rerun them
        cmd += ["--cores", str(args.cores), "--forcerun", "theory", "theory"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
            print(f"lossatlas: {path}: the workflow failed (above)", file=sys.stderr)
            return 1
        table = pd.read_csv(Path(cfg["results"]) / "checks.csv")
        table.insert(0, "config", Path(path).stem)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    shown = table[["config", "quantity", "predicted", "measured", "passed"]]
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(shown.to_string(index=False))
    n_fail = int((~table["passed"]).sum())
    print(f"{len(table) - n_fail} of {len(table)} checks passed; table: {out}")
    return 1 if n_fail else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lossatlas", description="Map neural-network loss landscapes by MCMC."
    )
    parser.add_argument("--version", action="version", version=f"lossatlas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a config file and say what it will run")
    v.add_argument("config", help="a YAML config, e.g. config/config.yaml")
    v.add_argument(
        "--remote",
        action="store_true",
        help="the jobs run elsewhere (SLURM): skip the checks of this machine's GPU",
    )
    v.set_defaults(run=_validate)
    s = sub.add_parser("summary", help="summarise a sample store (samples.h5)")
    s.add_argument("store", help="e.g. results/rotate-0/samples.h5")
    s.set_defaults(run=_summary)
    c = sub.add_parser(
        "verify", help="check every batch file of a results directory against its checksums"
    )
    c.add_argument("results", nargs="?", default="results", help="default: results")
    c.add_argument(
        "--repair",
        action="store_true",
        help="move damaged batch files aside so the next run samples only them again",
    )
    c.set_defaults(run=_verify)
    r = sub.add_parser(
        "prune", help="remove batch files that earlier runs moved aside (stale or damaged)"
    )
    r.add_argument("results", nargs="?", default="results", help="default: results")
    r.set_defaults(run=_prune)
    t = sub.add_parser(
        "theory",
        help="run every config of config/theory/ (the level-set theorems' known answers) and "
        "collect their checks",
    )
    t.add_argument("--configs", default="config/theory", help="default: config/theory")
    t.add_argument(
        "--out", default="results/theory/checks.csv", help="default: results/theory/checks.csv"
    )
    t.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    t.set_defaults(run=_theory)
    i = sub.add_parser(
        "install-profile",
        help="install the SLURM profile where Snakemake finds `--profile slurm`",
    )
    i.add_argument(
        "--force", action="store_true", help="replace a different slurm profile (kept as .bak)"
    )
    i.set_defaults(run=_install_profile)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
