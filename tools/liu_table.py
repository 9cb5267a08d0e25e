"""Liu's Table I with lossatlas's cell analysis: d = 3, K = 10, N = 2000 Gaussian points with
class means +-e1, random Gaussian hidden weights with every bias set to 20, 3, 0, -3 or -20::

    python tools/liu_table.py --draws 100 --free-draws 20

Per bias: the share of draws whose cell minimum is genuine under Liu's z > 0 restriction
and with free output signs (one MILP per draw), the share with a non-unique minimum (Liu's
"continuous"), the share of activated states and the mean cell loss, as a Markdown table.
Liu reports genuine 0, 0, 0, 0, 100 %, continuous 100, 60, 3, 86, 100 % and activated
100, 91.27, 50.66, 8.04, 0 %. About 6 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse

import numpy as np

from lossatlas.analysis import cells

BIASES = (20, 3, 0, -3, -20)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100, help="weight draws per bias")
    parser.add_argument(
        "--free-draws", type=int, default=20, help="of them, tested with free signs"
    )
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    X, y = cells.liu_gaussian(2000, 3, rng)
    columns = ["bias", "genuine, z > 0", "genuine, free signs", "non-unique minimum"]
    columns += ["activated", "cell loss"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for bias in BIASES:
        restricted, free, active = [], [], []
        for draw in range(args.draws):
            W = np.column_stack([rng.normal(size=(10, 3)), np.full(10, float(bias))])
            pattern = cells.patterns(W, X)
            restricted.append(cells.genuine(X, y, pattern, box=100.0, restricted=True))
            active.append(pattern.mean())
            if draw < args.free_draws:
                free.append(cells.genuine(X, y, pattern, box=100.0, method="milp")["genuine"])
        share = [100 * np.mean([r["genuine"] for r in restricted]), 100 * np.mean(free)]
        print(
            f"| {bias} | {share[0]:.0f} % | {share[1]:.0f} % | "
            f"{100 * np.mean([not r['unique'] for r in restricted]):.0f} % | "
            f"{100 * np.mean(active):.2f} % | {np.mean([r['loss'] for r in restricted]):.4f} |"
        )


if __name__ == "__main__":
    main()
