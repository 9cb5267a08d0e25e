"""Sampler throughput and efficiency on the report's target, side by side with BlackJAX and emcee.

Target: 10 points, MLP 2 -> [2, 2] -> 2 tanh (p = 18), box 10, beta 1, summed cross-entropy.
Prints chain-steps/s (RWM), gradient evaluations/s (HMC) and bulk ESS of U per second, and the
ratios, for our numpy kernels (``backend: numpy``, the reference) and the fused numba kernels
(``backend: numba``). BlackJAX runs in JAX's default float32, so the like-for-like comparison is
our float32 fused kernel. BlackJAX, JAX and emcee come from the ``bench`` extra; missing ones
are skipped.

    python benchmarks/bench_samplers.py [--quick]

``--device gpu`` compares our CUDA kernels (``backend: cuda``, float32, ``run``: many
transitions per launch, the state on the GPU) with BlackJAX on JAX's GPU backend (the same
jitted ``lax.scan`` of a ``vmap``-ed step), up to 1,048,576 chains: RWM chain-steps/s and HMC
gradient evaluations/s, and their ratios. Needs an NVIDIA GPU and the ``cuda`` and ``bench``
extras with JAX's CUDA wheels (benchmarks/README.md):

    python benchmarks/bench_samplers.py --device gpu [--quick] [--chains 1024,1048576] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import time

# idle OpenMP threads sleep instead of spinning: on a shared machine a spinning barrier
# costs 3-5x whenever another process holds a core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from arviz_stats.base import array_stats  # noqa: E402

from lossatlas import config, data, model, sampling, steps  # noqa: E402


def report_target() -> model.Target:
    cfg = config.validate({})
    return steps.target(cfg, data.generate(cfg["dataset"]))


def timed(fn, repeat=3):
    """Best wall time of ``repeat`` calls (the machine is shared: the minimum is the cleanest)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ours_steps_per_s(target, kind, n_chains, n_steps, **cfg):
    """Chain-steps/s of ``sampler.step`` (the engine's call), compile and tuning excluded."""
    sampler = sampling.build({"kind": kind, **cfg}, target)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (n_chains, target.p))
    state = sampler.init(x0, rng)
    for _ in range(20):  # tune a little so acceptance is realistic
        state, _ = sampler.step(state, rng, adapt=True)

    def go():
        s = state
        for _ in range(n_steps):
            s, _ = sampler.step(s, rng)

    return n_chains * n_steps / timed(go)


def jax_logdensity(target):
    import jax.numpy as jnp

    X, y = jnp.asarray(target.X), jnp.asarray(target.y)
    mlp, L, beta = target.mlp, target.box, target.beta

    def logdensity(theta):
        h = X
        for i, (w, b, n_out, n_in) in enumerate(mlp._layers):
            z = h @ theta[w].reshape(n_out, n_in).T + theta[b]
            h = jnp.tanh(z) if i < mlp.n_layers - 1 else z
        lse = jnp.log(jnp.sum(jnp.exp(h - h.max(1, keepdims=True)), 1)) + h.max(1)
        u = jnp.sum(lse - h[jnp.arange(len(y)), y])
        return jnp.where(jnp.all(jnp.abs(theta) <= L), -beta * u, -jnp.inf)

    return logdensity


def blackjax_steps_per_s(target, algo, n_chains, n_steps):
    """``jax.vmap`` of the kernel's step inside ``jax.lax.scan``, jitted; compile excluded."""
    import blackjax
    import jax
    import jax.numpy as jnp

    logdensity = jax_logdensity(target)
    if algo == "rwm":
        kernel = blackjax.additive_step_random_walk(
            logdensity, blackjax.mcmc.random_walk.normal(0.1)
        )
    else:
        kernel = blackjax.hmc(logdensity, 0.05, jnp.ones(target.p), num_integration_steps=10)
    x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n_chains, target.p)))
    states = jax.vmap(kernel.init)(x0)

    @jax.jit
    def run(states, key):
        def body(s, k):
            s, info = jax.vmap(kernel.step)(jax.random.split(k, n_chains), s)
            return s, info.is_accepted.mean()

        return jax.lax.scan(body, states, jax.random.split(key, n_steps))

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(run(states, key))  # compile
    return n_chains * n_steps / timed(lambda: jax.block_until_ready(run(states, key)))


def ess_of_U_per_s(target, cfg, n_chains, warmup, draws):
    """Bulk ESS of U over (chain, draw) per second of sampling (warm-up included, compilation
    excluded: a short run first)."""
    sampler = sampling.build(cfg, target)
    rng = np.random.default_rng(1)
    s = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    s, _ = sampler.step(sampler.end_warmup(sampler.step(s, rng, adapt=True)[0]), rng)
    t0 = time.perf_counter()
    state = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    for _ in range(warmup):
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    us = np.empty((n_chains, draws))
    for t in range(draws):
        state, _ = sampler.step(state, rng)
        us[:, t] = state.U
    dt = time.perf_counter() - t0
    ess = float(array_stats.ess(us, chain_axis=0, draw_axis=1, method="bulk"))
    return ess / dt, ess, dt


def emcee_ess_of_U_per_s(target, n_walkers, warmup, draws):
    import emcee

    def log_prob(x):
        return target.log_density(np.asarray(x))

    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (n_walkers, target.p))
    s = emcee.EnsembleSampler(n_walkers, target.p, log_prob, vectorize=True)
    t0 = time.perf_counter()
    s.run_mcmc(x0, warmup + draws, progress=False)
    dt = time.perf_counter() - t0
    u = -s.get_log_prob()[warmup:].T / target.beta  # (walker, draw)
    ess = float(array_stats.ess(u, chain_axis=0, draw_axis=1, method="bulk"))
    return ess / dt, ess, dt


GPU_CHAINS = (1024, 16384, 131072, 1048576)


def cuda_steps_per_s(target, kind, n_chains, n_steps, **cfg):
    """Chain-steps/s of our CUDA kernels: ``run`` (``n_steps`` transitions in one launch, state
    copied in and out once, as BlackJAX's scan returns its state) and ``step`` (a copy in and
    out per transition, the engine's call); compile and a short tuning excluded."""
    sampler = sampling.build({"kind": kind, "backend": "cuda", "dtype": "float32", **cfg}, target)
    rng = np.random.default_rng(0)
    state = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    for _ in range(5):  # compiles, and tunes a little so acceptance is realistic
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    sampler.run(state, rng, 1)  # compiles run's specialisation
    run = n_chains * n_steps / timed(lambda: sampler.run(state, rng, n_steps))
    n_single = 3

    def steps():
        s = state
        for _ in range(n_single):
            s, _ = sampler.step(s, rng)

    return run, n_chains * n_single / timed(steps, repeat=2)


def gpu_main(args):
    """Our CUDA kernels against BlackJAX on the GPU (see the module docstring)."""
    # JAX would take 75% of the GPU's memory at start, leaving our kernels too little
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from lossatlas.sampling import cuda

    why = cuda.unavailable()
    if why is not None:
        raise SystemExit(f"--device gpu: {why}; pip install -e '.[cuda]' on a GPU machine")
    import jax

    target = report_target()
    chains = [int(c) for c in args.chains.split(",")] if args.chains else GPU_CHAINS
    base = 2**24 if args.quick else 2**27  # chain-steps per timed run
    gpus = [str(d) for d in jax.devices()]
    print(f"target: MLP {target.mlp.sizes}, p={target.p}, n={target.n_points}, box={target.box}")
    from numba import cuda as numba_cuda

    name = "simulator" if cuda.simulated() else numba_cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    print(f"numba's CUDA target: {getattr(numba_cuda, 'implementation', '?')}, device: {name}")
    print(f"JAX {jax.__version__} devices: {', '.join(gpus)}")
    if jax.default_backend() != "gpu":
        print("WARNING: JAX has no GPU backend (pip install 'jax[cuda12]'): not GPU vs GPU")
    head = f"{'chains':>8} {'steps':>6} {'cuda run':>10} {'cuda step':>10} {'blackjax':>10}"
    head += f" {'run/bj':>7} {'step/bj':>7}"
    for kind, label, per_step, cfg in (
        ("rwm", "RWM chain-steps/s", 1, {}),
        ("hmc", "HMC gradient evaluations/s (10 leapfrog steps)", 10, {"hmc": {"n_leapfrog": 10}}),
    ):
        print(f"\n{label}, float32 (ours: backend cuda; BlackJAX: vmap of the step in lax.scan)")
        print(head)
        for c in chains:
            n = args.steps or min(2000, max(4, base // (c * per_step)))
            run, step = (per_step * r for r in cuda_steps_per_s(target, kind, c, n, **cfg))
            bj = per_step * blackjax_steps_per_s(target, kind, c, n)
            print(
                f"{c:>8} {n:>6} {run:>10.3g} {step:>10.3g} {bj:>10.3g} {run / bj:>7.2f}"
                f" {step / bj:>7.2f}"
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (noisier numbers)")
    ap.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="gpu: CUDA against BlackJAX"
    )
    ap.add_argument("--chains", help="gpu: comma-separated chain counts (default up to 2^20)")
    ap.add_argument("--steps", type=int, help="gpu: transitions per timed run (default: by size)")
    args = ap.parse_args()
    if args.device == "gpu":
        gpu_main(args)
        return
    target = report_target()
    steps = 20 if args.quick else 50  # numpy and BlackJAX; the fused kernels run longer
    try:
        import blackjax  # noqa: F401

        have_bj = True
    except ImportError:
        have_bj = False
        print("blackjax/jax not installed: pip install -e '.[bench]' for the comparison")

    print(f"target: MLP {target.mlp.sizes}, p={target.p}, n={target.n_points}, box={target.box}")
    print(
        f"numba threads: {numba.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, cores: {os.cpu_count()}"
    )
    np_ = {"backend": "numpy"}
    f32 = {"backend": "numba", "dtype": "float32"}
    f64 = {"backend": "numba", "dtype": "float64"}
    head = f"{'chains':>8} {'numpy f64':>10} {'numba f64':>10} {'numba f32':>10} {'blackjax':>10}"
    head += f" {'f32/bj':>7} {'f32/numpy':>9}"

    print("\nRWM chain-steps/s (BlackJAX float32: vmap of the step in lax.scan, jitted)")
    print(head)
    for c in (64, 1024, 4096):
        n_fast = max(steps, 200_000 // c)
        ours = ours_steps_per_s(target, "rwm", c, steps, **np_)
        o64 = ours_steps_per_s(target, "rwm", c, n_fast, **f64)
        o32 = ours_steps_per_s(target, "rwm", c, n_fast, **f32)
        bj = blackjax_steps_per_s(target, "rwm", c, steps * 4) if have_bj else np.nan
        print(
            f"{c:>8} {ours:>10.3g} {o64:>10.3g} {o32:>10.3g} {bj:>10.3g} {o32 / bj:>7.2f}"
            f" {o32 / ours:>9.1f}"
        )

    print("\nHMC gradient evaluations/s (10 leapfrog steps)")
    print(head)
    h = {"hmc": {"n_leapfrog": 10}}
    for c in (64, 1024, 4096):
        n_fast = max(3, 20_000 // c)
        ours = 10 * ours_steps_per_s(target, "hmc", c, max(2, steps // 10), **h, **np_)
        o64 = 10 * ours_steps_per_s(target, "hmc", c, n_fast, **h, **f64)
        o32 = 10 * ours_steps_per_s(target, "hmc", c, n_fast, **h, **f32)
        bj = 10 * blackjax_steps_per_s(target, "hmc", c, steps) if have_bj else np.nan
        print(
            f"{c:>8} {ours:>10.3g} {o64:>10.3g} {o32:>10.3g} {bj:>10.3g} {o32 / bj:>7.2f}"
            f" {o32 / ours:>9.1f}"
        )

    warmup, draws = (300, 600) if args.quick else (1000, 2000)
    print(f"\nbulk ESS of U per second ({warmup} warm-up + {draws} draws, every draw kept)")
    hmc10 = {"kind": "hmc", "hmc": {"n_leapfrog": 10}}
    pt4 = {"tempering": {"n_temps": 4, "beta_min": 0.1}}
    base_cfg = {"kind": "rwm", **np_}  # the report's method: a plain random walk, numpy float64
    runs = [
        ("rwm numpy f64 [baseline]", base_cfg, 64),
        ("mala numpy f64", {"kind": "mala", **np_}, 64),
        ("hmc numpy f64", {**hmc10, **np_}, 64),
        ("rwm numba f32", {"kind": "rwm", **f32}, 64),
        ("hmc numba f32", {**hmc10, **f32}, 64),
        ("hmc numba f64", {**hmc10, **f64}, 64),
        ("tempered rwm numba f32", {"kind": "rwm", **pt4, **f32}, 64),
        ("tempered hmc numba f32", {**hmc10, **pt4, **f32}, 64),
        ("emcee", None, 64),
        ("rwm numpy f64 [baseline]", base_cfg, 4096),
        ("rwm numba f32", {"kind": "rwm", **f32}, 4096),
        ("rwm numba f64", {"kind": "rwm", **f64}, 4096),
        ("hmc numba f32", {**hmc10, **f32}, 4096),
    ]
    print(f"{'sampler':>26} {'chains':>6} {'ESS/s':>9} {'ESS':>9} {'seconds':>8} {'vs base':>8}")
    base, best = {}, (0.0, "")
    for name, cfg, chains in runs:
        if cfg is None:
            try:
                rate, ess, dt = emcee_ess_of_U_per_s(target, chains, warmup, draws)
            except ImportError:
                print("emcee not installed: skipped")
                continue
        else:
            rate, ess, dt = ess_of_U_per_s(target, cfg, chains, warmup, draws)
        base.setdefault(chains, rate)  # the first row of each chain count is the baseline
        ratio = rate / base[chains]
        print(f"{name:>26} {chains:>6} {rate:>9.1f} {ess:>9.0f} {dt:>8.1f} {ratio:>8.1f}")
        if cfg is not None and ratio > best[0]:
            best = (ratio, f"{name}, {chains} chains")
    print(f"best of ours against the numpy RWM with as many chains: {best[1]}, {best[0]:.1f}x")


if __name__ == "__main__":
    main()
