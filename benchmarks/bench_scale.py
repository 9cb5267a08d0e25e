"""Wall time and peak RSS of sampling and of diagnostics as p and as the draws grow.

Each measurement runs in a fresh child process that reports its own peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so no row inherits another's allocations;
the first row is that of a child that only imports the package (the floor).

- sample: ``engine.run_batch`` on one batch (8 chains, float32, numpy kernels, one BLAS
  thread, as in config/digits.yaml) of the digits with MLPs 64 -> hidden -> 10, then
  ``store.build`` of ``samples.h5``.
- diagnose: ``diagnostics.summarize`` streamed over parameter blocks (256) of that store.
  At large p it runs on the first ``--diag-params`` parameters only (a column view of the
  store, still read block by block): its time is linear in p, so the table also gives the
  time per 1,000 parameters; its memory is one block, whatever p.

The p series has few draws; the draws series (p = 1,060) shows that sampling memory does not
grow with the draws (the writer holds one block of ``checkpoint_every`` draws).

``--write`` puts the tables into benchmarks/README.md.

    python benchmarks/bench_scale.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_samplers.py

import rounds  # noqa: E402

HIDDEN = {85: [1], 1060: [14], 10530: [96, 40], 100810: [384, 192]}  # p -> hidden widths


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class _Columns:
    """The first ``k`` parameters of a ``(chain, draw, p)`` dataset, sliced lazily."""

    def __init__(self, ds, k):
        self.ds, self.shape = ds, (*ds.shape[:2], min(k, ds.shape[2]))

    def __getitem__(self, key):
        c, d, j = key
        return self.ds[c, d, slice(j.start, min(j.stop, self.shape[2]))]


def child_sample(args) -> dict:
    from lossatlas import config, data, steps
    from lossatlas.sampling import engine
    from lossatlas.storage import store

    hidden = HIDDEN[args.p]
    cfg = config.validate(
        {
            "dataset": {"generator": "digits", "subset": args.subset, "seed": 0},
            "experiments": {"sweep": {"scale": [1]}},
            "model": {"hidden": hidden},
            "target": {"box": 1.0},
            "sampler": {
                "kind": "rwm", "backend": "numpy", "dtype": "float32", "n_chains": 8,
                "chains_per_batch": 8, "warmup": args.warmup, "draws": args.draws, "thin": 1,
                "step_size": 0.001, "checkpoint_every": min(25, args.draws),
            },
        }
    )  # fmt: skip
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    out = Path(args.dir)
    spec = engine.batch_specs(exp, ds, out, **steps.sampling_arguments(cfg))[0]
    t0 = time.perf_counter()
    res = engine.run_batch(spec)
    from lossatlas import model

    names = model.MLP((ds.n_features, *hidden, ds.n_classes)).param_names()
    store.build([spec["path"]], out / "samples.h5", names)
    return {"seconds": time.perf_counter() - t0, "draws": res["draws_done"]}


def child_diagnose(args) -> dict:
    from lossatlas.analysis import diagnostics
    from lossatlas.storage import store

    with store.SampleStore(Path(args.dir) / "samples.h5") as s:
        theta = _Columns(s.theta, args.diag_params)
        k = theta.shape[2]
        t0 = time.perf_counter()
        table = diagnostics.summarize(theta, s.stat("energy"), s.param_names[:k], block=256)
        dt = time.perf_counter() - t0
    return {"seconds": dt, "params": k, "rows": len(table)}


def run_child(*argv) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, argv)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if sys.argv[1:2] == ["--child"]:  # one measurement, in its own process
        c = argparse.ArgumentParser()
        c.add_argument("what")
        c.add_argument("--p", type=int, default=85)
        c.add_argument("--draws", type=int, default=20)
        c.add_argument("--warmup", type=int, default=10)
        c.add_argument("--subset", type=int, default=None)
        c.add_argument("--diag-params", type=int, default=10**9)
        c.add_argument("--dir", default=".")
        a = c.parse_args(sys.argv[2:])
        if a.what == "floor":
            import lossatlas.analysis.diagnostics  # noqa: F401
            import lossatlas.sampling.engine  # noqa: F401

            r = {"seconds": 0.0}
        else:
            r = child_sample(a) if a.what == "sample" else child_diagnose(a)
        print(json.dumps({**r, "rss_mb": _rss_mb()}))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~1-2 minutes instead of ~3-10")
    ap.add_argument("--write", action="store_true", help="the tables into benchmarks/README.md")
    args = ap.parse_args()
    q = args.quick
    p_draws = {85: 100, 1060: 100, 10530: 50, 100810: 20} if q else {
        85: 400, 1060: 400, 10530: 200, 100810: 50}  # fmt: skip
    diag_params = 256 if q else 1024
    draw_series = (200, 800, 3200) if q else (200, 800, 3200, 6400)
    t_start = time.perf_counter()
    floor = run_child("floor")
    lines = []

    def say(line=""):
        lines.append(line)
        print(line, flush=True)

    print(f"cores: {os.cpu_count()}; import-only child: {floor['rss_mb']:.0f} MB peak RSS")
    head = (
        f"{'p':>7} {'draws':>6} {'store MB':>8} {'sample s':>8} {'sample MB':>9}"
        f" {'diag params':>11} {'diag s':>7} {'s/1k params':>11} {'diag MB':>8}"
    )

    def row(p, draws, subset=None):
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
            extra = ["--subset", subset] if subset else []
            s = run_child("sample", "--p", p, "--draws", draws, "--dir", d, *extra)
            size = sum(f.stat().st_size for f in Path(d).rglob("*.h5")) / 1e6
            g = run_child("diagnose", "--dir", d, "--diag-params", diag_params)
        say(
            f"{p:>7} {draws:>6} {size:>8.1f} {s['seconds']:>8.1f} {s['rss_mb']:>9.0f}"
            f" {g['params']:>11} {g['seconds']:>7.1f} {1000 * g['seconds'] / g['params']:>11.2f}"
            f" {g['rss_mb']:>8.0f}"
        )

    say(f"as p grows (all 1797 digits, 8 chains, diagnose on <= {diag_params} parameters)")
    say(head)
    for p, draws in p_draws.items():
        row(p, draws)
    say()
    say(f"as draws grow (p = 1,060, 300 digits, 8 chains, diagnose on <= {diag_params})")
    say(head)
    for draws in draw_series:
        row(1060, draws, subset=300)
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    if args.write:
        intro = (
            f"{rounds.machine()} (at the end), {total:.0f} s; an import-only child peaks at "
            f"{floor['rss_mb']:.0f} MB:"
        )
        rounds.write_preformatted("bench_scale_quick" if q else "bench_scale", intro, lines)


if __name__ == "__main__":
    main()
