"""Gradient evaluations per second at p >= 100,000 against JAX, and the fused/numpy crossover.

Main table: ``model.Target.U_and_grad`` (batched BLAS matmuls) on 64 -> [384, 192] -> 10 tanh
(p = 100,810) with the 1797 standardized digits, a batch of chains, float32 and float64, against
``jax.jit(jax.vmap(jax.value_and_grad(U)))`` of the same network, data and batch in the same
process. The gradients are compared first (max relative difference). Both run on ``--threads``
threads (default 1, as a sampling worker does: ``engine.run_batch`` limits BLAS to one).

``--crossover``: energy evaluations/s of the fused numba kernel against the numpy kernel over
network widths, data sizes and chain counts (one thread each), the measurement behind
``samplers.fused.supports`` (FUSED_FLOPS_AT_8).

    python benchmarks/bench_grad.py [--quick] [--crossover] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_samplers.py


def _threads_from_argv() -> int:
    # XLA reads its thread settings at import, so they are set before anything imports jax
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


if _threads_from_argv() == 1:
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )

import numba  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from lossatlas import data, model  # noqa: E402
from lossatlas.samplers import fused  # noqa: E402

SIZES = (64, 384, 192, 10)


def best_time(fn, repeat=5, budget=1.0):
    """Minimum wall time over at least ``repeat`` calls (shared machine: the cleanest)."""
    fn()
    best, t_end, k = np.inf, time.perf_counter() + budget, 0
    while k < repeat or (time.perf_counter() < t_end and k < 50):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        k += 1
    return best


def digits_target(sizes=SIZES) -> model.Target:
    ds = data.digits()
    return model.Target(model.MLP(sizes), ds.X, ds.y, box=1.0)


def jax_value_and_grad(target, dtype):
    """``jit(vmap(value_and_grad(U)))`` of the target's network: tanh, summed cross-entropy."""
    import jax
    import jax.numpy as jnp

    X = jnp.asarray(target.X, dtype=dtype)
    y = jnp.asarray(target.y)
    mlp = target.mlp

    def energy(theta):
        h = X
        for i, (w, b, n_out, n_in) in enumerate(mlp._layers):
            z = h @ theta[w].reshape(n_out, n_in).T + theta[b]
            h = jnp.tanh(z) if i < mlp.n_layers - 1 else z
        lse = jax.nn.logsumexp(h, axis=1)
        return jnp.sum(lse - h[jnp.arange(h.shape[0]), y])

    return jax.jit(jax.vmap(jax.value_and_grad(energy)))


def grad_table(n_chains, threads, quick):
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 runs in float64; float32 stays float32
    target = digits_target()
    print(
        f"network {target.mlp.sizes}, p = {target.p:,}, {target.n_points} digits, "
        f"{n_chains} chains, {threads} thread(s), jax {jax.__version__}"
    )
    print(
        f"{'dtype':>8} {'max rel dU':>10} {'max rel dgrad':>13} {'ours grad/s':>11}"
        f" {'jax grad/s':>10} {'ours/jax':>8} {'best/best':>9}"
    )
    rows = []
    for dtype in ("float32", "float64"):
        theta = np.random.default_rng(0).uniform(-0.1, 0.1, (n_chains, target.p)).astype(dtype)
        f = jax_value_and_grad(target, dtype)
        tj = jax.device_put(theta)
        uj, gj = (np.asarray(a, dtype=np.float64) for a in f(tj))
        with threadpool_limits(threads):
            u, g = target.U_and_grad(theta)
            du = np.max(np.abs(u - uj) / np.abs(uj))
            dg = np.max(np.abs(g - gj)) / np.max(np.abs(gj))
            # alternating rounds, best of 2 calls each: the load on a shared machine changes
            # within seconds, so the ratio of neighbouring rounds is what is reported (median)
            t_o, t_j = [], []
            for _ in range(3 if quick else 7):
                t_o.append(best_time(lambda: target.U_and_grad(theta), 2, 0))  # noqa: B023
                t_j.append(best_time(lambda: jax.block_until_ready(f(tj)), 2, 0))  # noqa: B023
        ratio = float(np.median(np.array(t_j) / np.array(t_o)))
        best = min(t_j) / min(t_o)  # each side's least disturbed call
        ours, ref = n_chains / np.median(t_o), n_chains / np.median(t_j)
        print(
            f"{dtype:>8} {du:>10.2e} {dg:>13.2e} {ours:>11.1f} {ref:>10.1f} {ratio:>8.2f}"
            f" {best:>9.2f}"
        )
        rows.append((dtype, du, dg, ours, ref))
    return rows


CROSSOVER = [  # (sizes, n_points)
    ((2, 2, 2, 2), 10),  # the report's target
    ((2, 16, 16, 2), 20),
    ((2, 16, 16, 2), 100),
    ((64, 8, 4, 10), 100),
    ((64, 16, 8, 10), 300),
    ((64, 32, 16, 10), 1797),
    ((64, 96, 40, 10), 300),  # tests/configs/scale.yaml
    ((64, 128, 64, 10), 1797),
]


def crossover_table(chain_counts, quick):
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("energy evaluations/s, float32, one thread each; 'rule' = what supports() picks")
    print(
        f"{'network':>18} {'n':>5} {'p':>7} {'flop/chain':>10} {'chains':>6} {'fused/s':>9}"
        f" {'numpy/s':>9} {'fused/numpy':>11} {'rule':>6}"
    )
    budget = 0.2 if quick else 0.6
    with threadpool_limits(1):
        for sizes, n in CROSSOVER:
            mlp = model.MLP(sizes)
            t = model.Target(mlp, rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n))
            arch = fused.Arch(t, "float32")
            for c in chain_counts:
                th = rng.uniform(-1, 1, (c, mlp.p)).astype(np.float32)
                tf = best_time(lambda: arch.U_and_grad(th, want_grad=False), 3, budget)  # noqa: B023
                tn = best_time(lambda: t.U(th), 3, budget)  # noqa: B023
                rule = "fused" if fused.supports(t, c) else "numpy"
                print(
                    f"{str(sizes):>18} {n:>5} {mlp.p:>7} {fused.energy_flops(t):>10.3g} {c:>6}"
                    f" {c / tf:>9.3g} {c / tn:>9.3g} {tn / tf:>11.2f} {rule:>6}"
                )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (noisier numbers)")
    ap.add_argument("--crossover", action="store_true", help="the fused/numpy crossover table")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and XLA threads (default 1)")
    ap.add_argument("--chains", type=int, default=8, help="chains per batch (digits.yaml: 8)")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if args.crossover:
        crossover_table((8, 32, 128), args.quick)
        return
    try:
        import jax  # noqa: F401
    except ImportError:
        sys.exit("jax not installed: pip install -e '.[bench]'")
    grad_table(args.chains, args.threads, args.quick)


if __name__ == "__main__":
    main()
