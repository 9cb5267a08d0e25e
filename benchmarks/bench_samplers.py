"""Sampler throughput and efficiency on the report's target, side by side with BlackJAX and emcee.

Target: 10 points, MLP 2 -> [2, 2] -> 2 tanh (p = 18), box 10, beta 1, summed cross-entropy.
Prints chain-steps/s (RWM), gradient evaluations/s (HMC) and bulk ESS of U per second, and the
ratios. BlackJAX, JAX and emcee come from the ``bench`` extra; missing ones are skipped.

    python benchmarks/bench_samplers.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from arviz_stats.base import array_stats

from lossatlas import config, data, model, samplers


def report_target() -> model.Target:
    cfg = config.validate({})
    return model.from_config(cfg, data.generate(cfg["dataset"]))


def timed(fn, repeat=3):
    """Best wall time of ``repeat`` calls (the machine is shared: the minimum is the cleanest)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ours_steps_per_s(target, kind, n_chains, n_steps, **cfg):
    sampler = samplers.build({"kind": kind, **cfg}, target)
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
    """Bulk ESS of U over (chain, draw) per second of sampling (warm-up included)."""
    sampler = samplers.build(cfg, target)
    rng = np.random.default_rng(1)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (noisier numbers)")
    args = ap.parse_args()
    target = report_target()
    steps = 20 if args.quick else 50
    try:
        import blackjax  # noqa: F401

        have_bj = True
    except ImportError:
        have_bj = False
        print("blackjax/jax not installed: pip install -e '.[bench]' for the comparison")

    print(f"target: MLP {target.mlp.sizes}, p={target.p}, n={target.n_points}, box={target.box}")
    print("\nRWM chain-steps/s")
    print(f"{'chains':>8} {'ours (numpy)':>14} {'blackjax':>12} {'ratio':>7}")
    for c in (64, 1024, 4096):
        ours = ours_steps_per_s(target, "rwm", c, steps)
        bj = blackjax_steps_per_s(target, "rwm", c, steps * 4) if have_bj else np.nan
        print(f"{c:>8} {ours:>14.3g} {bj:>12.3g} {ours / bj:>7.2f}")

    print("\nHMC gradient evaluations/s (10 leapfrog steps)")
    print(f"{'chains':>8} {'ours (numpy)':>14} {'blackjax':>12} {'ratio':>7}")
    for c in (64, 1024, 4096):
        ours = 10 * ours_steps_per_s(target, "hmc", c, max(2, steps // 10), hmc={"n_leapfrog": 10})
        bj = 10 * blackjax_steps_per_s(target, "hmc", c, steps) if have_bj else np.nan
        print(f"{c:>8} {ours:>14.3g} {bj:>12.3g} {ours / bj:>7.2f}")

    warmup, draws, chains = (300, 600, 64) if args.quick else (1000, 2000, 64)
    print(f"\nbulk ESS of U per second ({chains} chains, {warmup} warm-up + {draws} draws)")
    runs = {
        "rwm": {"kind": "rwm"},
        "mala": {"kind": "mala"},
        "hmc (10 leapfrog)": {"kind": "hmc", "hmc": {"n_leapfrog": 10}},
        "tempered rwm (4 temps)": {"kind": "rwm", "tempering": {"n_temps": 4, "beta_min": 0.1}},
        "tempered hmc (4 temps)": {
            "kind": "hmc",
            "hmc": {"n_leapfrog": 10},
            "tempering": {"n_temps": 4, "beta_min": 0.1},
        },
    }
    rows = {}
    for name, cfg in runs.items():
        rows[name] = ess_of_U_per_s(target, cfg, chains, warmup, draws)
    try:
        rows["emcee (64 walkers)"] = emcee_ess_of_U_per_s(target, 64, warmup, draws)
    except ImportError:
        print("emcee not installed: skipped")
    base = rows["rwm"][0]
    print(f"{'sampler':>24} {'ESS/s':>9} {'ESS':>9} {'seconds':>8} {'vs rwm':>7}")
    for name, (rate, ess, dt) in rows.items():
        print(f"{name:>24} {rate:>9.1f} {ess:>9.0f} {dt:>8.1f} {rate / base:>7.2f}")


if __name__ == "__main__":
    main()
