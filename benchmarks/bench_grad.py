"""Gradient evaluations per second at p >= 100,000 against JAX, and the kernels' crossovers.

Main table: ``model.Target.U_and_grad`` (BLAS matrix products, chain by chain at this size) on
64 -> [384, 192] -> 10 tanh (p = 100,810) with the 1797 standardized digits, batches of 8
chains (config/digits.yaml) and 1, float32 and float64, against
``jax.jit(jax.vmap(jax.value_and_grad(U)))`` of the same network, data and batch in the same
process. The gradients are compared first (max relative difference). Both run on ``--threads``
threads (default 1, as a sampling worker does: ``engine.run_batch`` limits BLAS to one).

Timing, for a shared machine: rounds alternate ours and JAX (who goes first alternates too),
each side's round is its faster of two calls, and a ratio is the median over rounds of the
neighbouring calls' ratios: on wall time (the gradients/s a run sees) and on CPU time (the
process's, which other jobs' load barely moves; XLA computes on a thread of its own). With
``--threads`` above 1 the CPU ratio compares work done, not speed.

``--crossover``: energy evaluations/s of the fused numba kernel against the numpy kernel over
network widths, data sizes and chain counts (one thread each), the measurement behind
``sampling.fused.supports`` (FUSED_FLOPS_AT_8).

``--chainwise``: the numpy kernel's chainwise path against its batched one (the same numbers),
gradients and energies, over the same grid: the measurement behind ``model.CHAINWISE_MIN_*``.

    python benchmarks/bench_grad.py [--quick] [--crossover | --chainwise] [--threads N]
        [--chains 8 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

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
import rounds  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from lossatlas import data  # noqa: E402
from lossatlas.model import network as model  # noqa: E402
from lossatlas.sampling import fused  # noqa: E402

SIZES = (64, 384, 192, 10)


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


def paired_times(fa, fb, n_rounds):
    """Wall and CPU seconds ``(2, n_rounds)`` of ``fa`` and of ``fb``, in alternating rounds."""
    ta, tb = np.empty((2, n_rounds)), np.empty((2, n_rounds))
    for r in range(n_rounds):
        for fn, t in ((fa, ta), (fb, tb))[:: 1 if r % 2 == 0 else -1]:
            calls = []
            for _ in range(2):
                w, c = time.perf_counter(), time.process_time()
                fn()
                calls.append((time.perf_counter() - w, time.process_time() - c))
            t[:, r] = np.min(calls, axis=0)
    return ta, tb


def grad_table(chain_counts, threads, quick) -> list[str]:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 runs in float64; float32 stays float32
    target = digits_target()
    n_rounds = 3 if quick else 9
    lines = [
        f"network {target.mlp.sizes}, p = {target.p:,}, {target.n_points} digits, "
        f"{threads} thread(s), {n_rounds} rounds, jax {jax.__version__}",
        f"{'dtype':>8} {'chains':>6} {'max rel dU':>10} {'max rel dgrad':>13} {'ours grad/s':>11}"
        f" {'jax grad/s':>10} {'ours/jax':>8} {'cpu ours/jax':>12}",
    ]
    print(*lines, sep="\n")
    for n_chains in chain_counts:
        for dtype in ("float32", "float64"):
            rng = np.random.default_rng(0)
            theta = rng.uniform(-0.1, 0.1, (n_chains, target.p)).astype(dtype)
            f = jax_value_and_grad(target, dtype)
            tj = jax.device_put(theta)
            uj, gj = (np.asarray(a, dtype=np.float64) for a in f(tj))
            with threadpool_limits(threads):
                u, g = target.U_and_grad(theta)
                du = np.max(np.abs(u - uj) / np.abs(uj))
                dg = np.max(np.abs(g - gj)) / np.max(np.abs(gj))
                t_o, t_j = paired_times(
                    lambda: target.U_and_grad(theta),  # noqa: B023
                    lambda: jax.block_until_ready(f(tj)),  # noqa: B023
                    n_rounds,
                )
            wall, cpu = np.median(t_j / t_o, axis=1)
            ours, ref = n_chains / np.median(t_o[0]), n_chains / np.median(t_j[0])
            lines.append(
                f"{dtype:>8} {n_chains:>6} {du:>10.2e} {dg:>13.2e} {ours:>11.1f} {ref:>10.1f}"
                f" {wall:>8.2f} {cpu:>12.2f}"
            )
            print(lines[-1])
    return lines


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


def repeated(fn, seconds: float = 0.01):
    """``fn`` repeated enough times per call to take about ``seconds`` (a call of a tiny
    kernel is too short to time), and that count."""
    fn()  # compiles, allocates
    t0 = time.perf_counter()
    fn()
    k = max(1, int(seconds / max(time.perf_counter() - t0, 1e-7)))

    def call():
        for _ in range(k):
            fn()

    return call, k


def crossover_table(chain_counts, quick) -> list[str]:
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_rounds = 3 if quick else 7
    lines = [
        f"energy evaluations/s, float32, one thread each, {n_rounds} alternating rounds (each"
        " side's faster of two calls per round), medians; 'rule' = what supports() picks",
        f"{'network':>18} {'n':>5} {'p':>7} {'flop/chain':>10} {'chains':>6} {'fused/s':>9}"
        f" {'numpy/s':>9} {'fused/numpy':>11} {'cpu f/n':>7} {'rule':>6}",
    ]
    print(*lines, sep="\n")
    with threadpool_limits(1):
        for sizes, n in CROSSOVER:
            mlp = model.MLP(sizes)
            t = model.Target(mlp, rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n))
            arch = fused.Arch(t, "float32")
            for c in chain_counts:
                th = rng.uniform(-1, 1, (c, mlp.p)).astype(np.float32)
                f_call, kf = repeated(lambda: arch.U_and_grad(th, want_grad=False))  # noqa: B023
                n_call, kn = repeated(lambda: t.U(th))  # noqa: B023
                tf, tn = paired_times(f_call, n_call, n_rounds)
                wall = np.median((tn[0] / kn) / (tf[0] / kf))
                cpu = np.median((tn[1] / kn) / (tf[1] / kf))
                rule = "fused" if fused.supports(t, c) else "numpy"
                lines.append(
                    f"{str(sizes):>18} {n:>5} {mlp.p:>7} {fused.energy_flops(t):>10.3g} {c:>6}"
                    f" {c * kf / np.median(tf[0]):>9.3g} {c * kn / np.median(tn[0]):>9.3g}"
                    f" {wall:>11.2f} {cpu:>7.2f} {rule:>6}"
                )
                print(lines[-1])
    return lines


def chainwise_table(chain_counts, quick) -> list[str]:
    rng = np.random.default_rng(0)
    n_rounds = 5 if quick else 15
    lines = [
        "numpy kernel, float32, one thread: chainwise / batched CPU time (the same numbers),"
        f" median of {n_rounds} alternating rounds; 'path' = what the thresholds pick",
        f"{'network':>18} {'n':>5} {'n x width':>9} {'chains':>6} {'grad':>6} {'energy':>6}"
        f" {'path (grad, energy)':>20}",
    ]
    print(*lines, sep="\n")
    limits = model.CHAINWISE_MIN_GRAD, model.CHAINWISE_MIN_ENERGY

    def on(path, fn):
        def call():
            limit = 0 if path == "chainwise" else 1 << 62
            model.CHAINWISE_MIN_GRAD = model.CHAINWISE_MIN_ENERGY = limit
            fn()

        return call

    with threadpool_limits(1):
        for sizes, n in [*CROSSOVER, ((64, 384, 192, 10), 300)]:
            mlp = model.MLP(sizes)
            X = rng.standard_normal((n, sizes[0])).astype(np.float32)
            y = rng.integers(0, sizes[-1], n)
            paths = ", ".join(
                "chainwise" if mlp._chainwise(X, m) else "batched"
                for m in (model.CHAINWISE_MIN_GRAD, model.CHAINWISE_MIN_ENERGY)
            )
            for c in chain_counts:
                th = rng.uniform(-1, 1, (c, mlp.p)).astype(np.float32)
                ratios = []
                for fn in (partial(mlp.loss_and_grad, th, X, y), partial(mlp.forward, th, X)):
                    on("chainwise", fn)()  # compiles the kernels before timing
                    t_c, t_b = paired_times(on("chainwise", fn), on("batched", fn), n_rounds)
                    ratios.append(np.median(t_c[1] / t_b[1]))
                model.CHAINWISE_MIN_GRAD, model.CHAINWISE_MIN_ENERGY = limits
                lines.append(
                    f"{str(sizes):>18} {n:>5} {n * max(sizes[1:]):>9} {c:>6} {ratios[0]:>6.2f}"
                    f" {ratios[1]:>6.2f} {paths:>20}"
                )
                print(lines[-1])
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (noisier numbers)")
    ap.add_argument("--crossover", action="store_true", help="the fused/numpy crossover table")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and XLA threads (default 1)")
    ap.add_argument("--chainwise", action="store_true", help="the chainwise/batched crossover")
    ap.add_argument(
        "--chains", type=int, nargs="+", default=[8, 1], help="chains per batch (digits.yaml: 8)"
    )
    ap.add_argument("--write", action="store_true", help="the table into benchmarks/README.md")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if args.crossover:
        name, lines = "bench_grad_crossover", crossover_table((8, 32, 128), args.quick)
    elif args.chainwise:
        name, lines = "bench_grad_chainwise", chainwise_table((8, 32), args.quick)
    else:
        try:
            import jax  # noqa: F401
        except ImportError:
            sys.exit("jax not installed: pip install -e '.[bench]'")
        name, lines = "bench_grad", grad_table(args.chains, args.threads, args.quick)
    if args.write:
        rounds.write_preformatted(name, f"{rounds.machine()} (at the end of the run):", lines)


if __name__ == "__main__":
    main()
