"""Peak memory and wall time of every job of a finished run, one row per job.

Reads, under a run's results folder, each ``logs/**/<rule>.benchmark.tsv`` (Snakemake's
``benchmark:``: wall seconds, ``max_rss`` and ``max_pss`` of the job's process tree, sampled
once a second for 30 s and every 30 s after) and the last ``peak RSS:`` line of the matching
``<rule>.log`` (the tree's RSS sampled every 0.25 s by the job itself, and the job process's
kernel-recorded peak). A local run's jobs fork from a warm interpreter (lossatlas.warm_jobs),
and their ``benchmark.tsv`` sees only the waiting process: the log's figure is the job's. The
job's peak is the larger of the two tree RSS figures: a sum of RSS
counts pages that forked workers share with their parent once per process, so it is an upper
bound; PSS splits shared pages between their processes and is the tree's actual footprint.

    python benchmarks/rule_memory.py [RESULTS] [--limit-mb 2048] [--csv out.csv]

Exits with 1 when a job's peak is above ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

PEAK = re.compile(r"peak RSS: (\d+) MB process tree .*?, (\d+) MB job process")


def rows(results: Path) -> list[dict]:
    out = []
    logs = results / "logs"
    for bench in sorted(logs.rglob("*.benchmark.tsv")):
        rule = bench.name.removesuffix(".benchmark.tsv")
        rel = bench.parent.relative_to(logs)
        with bench.open() as f:
            record = list(csv.DictReader(f, delimiter="\t"))[-1]
        tree = own = float("nan")
        log = bench.with_name(f"{rule}.log")
        if log.exists():
            hits = PEAK.findall(log.read_text(errors="replace"))
            if hits:
                tree, own = map(float, hits[-1])
        snake, pss = (
            float(record[k]) if record.get(k) not in (None, "", "NA") else float("nan")
            for k in ("max_rss", "max_pss")
        )
        out.append(
            {
                "rule": rule,
                "experiment": str(rel) if str(rel) != "." else "",
                "wall_s": float(record["s"]),
                "snakemake_max_rss_mb": snake,
                "snakemake_max_pss_mb": pss,
                "tree_peak_mb": tree,
                "process_peak_mb": own,
                "peak_mb": max((v for v in (snake, tree) if v == v), default=float("nan")),
            }
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", type=Path)
    ap.add_argument("--limit-mb", type=float, default=2048)
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    table = rows(args.results)
    if not table:
        print(f"no logs/**/*.benchmark.tsv under {args.results}", file=sys.stderr)
        return 2
    print(
        "| rule | experiment | wall (s) | peak RSS, tree sum (MB) | Snakemake max_rss "
        "| Snakemake max_pss | job process |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['rule']} | {r['experiment']} | {r['wall_s']:.0f} | {r['peak_mb']:.0f} "
            f"| {r['snakemake_max_rss_mb']:.0f} | {r['snakemake_max_pss_mb']:.0f} "
            f"| {r['process_peak_mb']:.0f} |"
        )
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    over = [r for r in table if r["peak_mb"] > args.limit_mb]
    for r in over:
        print(f"over {args.limit_mb:.0f} MB: {r['rule']} {r['experiment']}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
