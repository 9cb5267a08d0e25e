"""The default config's experiment as a user would write it by hand: BlackJAX and scikit-learn.

The peer that bench_e2e.py times against the workflow. Per experiment of the config (the same
datasets and target: exp(-beta U) on [-L, L]^p, U the summed cross-entropy):

- BlackJAX's random walk (``additive_step_random_walk``, Gaussian steps; the box as
  ``-inf`` outside), ``jax.vmap`` over the chains inside ``jax.lax.scan``, jitted, float64 as
  the config; as many chains, warm-up transitions and thinning as the config, and draws in
  blocks of ``checkpoint_every`` until U alone meets ``sampler.until`` at one block (the
  workflow asks more: U, the outputs and the canonical parameters, at ``confirm`` blocks
  running), at most ``draws``;
- the warm-up tunes each chain's step towards the config's acceptance rate in windows of 500
  transitions (BlackJAX's random walk has no adaptation of its own);
- R-hat and bulk/tail ESS of U (arviz-stats), the convergence target it stops on;
- scikit-learn's ``KernelPCA`` (RBF, the config's components and gamma rule), fitted on as many
  draws as the workflow's landmarks (an exact kernel of all 20,000 draws needs 3.2 GB) and
  applied to all draws, then ``PCA`` of the good draws.

Writes nothing; prints one JSON line per experiment. Needs the ``bench`` extra.

    python benchmarks/peer_blackjax.py [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import blackjax  # noqa: E402
from arviz_stats.base import array_stats  # noqa: E402
from bench_samplers import jax_logdensity  # noqa: E402
from sklearn.decomposition import PCA, KernelPCA  # noqa: E402

from lossatlas import api, data, steps  # noqa: E402
from lossatlas import config as lacfg  # noqa: E402

WINDOW = 500  # warm-up transitions between step-size updates


def converged(U, until) -> bool:
    """U's rank-normalised split R-hat below ``until["r_hat"]`` and its bulk and tail ESS above
    ``until["ess"]`` (arviz-stats), as a hand-written script would stop: at the first pass."""
    ax = {"chain_axis": 0, "draw_axis": 1}
    rhat = float(array_stats.rhat(U, method="rank", **ax))
    bulk = float(array_stats.ess(U, method="bulk", **ax))
    tail = float(array_stats.ess(U, method="tail", prob=(0.05, 0.95), **ax))
    return rhat < until["r_hat"] and min(bulk, tail) > until["ess"]


def sample(target, n_chains, warmup, draws, thin, step_size, target_accept, seed, block, until):
    """Draws ``(chain, draw, p)`` and U ``(chain, draw)`` of the random walk: blocks of
    ``block`` draws until U meets ``until`` (none: all ``draws``), at most ``draws``."""
    logdensity = jax_logdensity(target)

    def step(key, state, sigma):
        walk = blackjax.additive_step_random_walk(
            logdensity, blackjax.mcmc.random_walk.normal(sigma)
        )
        return walk.step(key, state)

    steps_ = jax.vmap(step)

    def transitions(states, sigma, key, n):
        def body(s, k):
            s, info = steps_(jax.random.split(k, n_chains), s, sigma)
            return s, info.is_accepted

        return jax.lax.scan(body, states, jax.random.split(key, n))

    @jax.jit
    def warm(states, log_sigma, key):
        states, accepted = transitions(states, jnp.exp(log_sigma), key, WINDOW)
        rate = accepted.mean(axis=0)
        return states, log_sigma + 2.0 * (rate - target_accept)

    @functools.partial(jax.jit, static_argnums=3)
    def run(states, sigma, key, n):
        def draw(s, k):
            s, _ = transitions(s, sigma, k, thin)
            return s, (s.position, s.logdensity)

        return jax.lax.scan(draw, states, jax.random.split(key, n))

    key = jax.random.PRNGKey(seed)
    k0, key = jax.random.split(key)
    x0 = jax.random.uniform(k0, (n_chains, target.p), minval=-target.box, maxval=target.box)
    states = jax.vmap(blackjax.additive_step_random_walk.init, in_axes=(0, None))(x0, logdensity)
    log_sigma = jnp.full(n_chains, np.log(step_size))
    for _ in range(max(1, warmup // WINDOW)):
        key, k = jax.random.split(key)
        states, log_sigma = warm(states, log_sigma, k)
    sigma, kept, n = jnp.exp(log_sigma), [], 0
    step_draws = block if until else draws
    while n < draws:
        key, k = jax.random.split(key)
        m = min(step_draws, draws - n)
        states, (positions, logdens) = run(states, sigma, k, m)
        kept.append((np.asarray(positions), np.asarray(logdens)))
        n += m
        U = -np.concatenate([lg for _, lg in kept]).T / target.beta
        if until and converged(U, until):
            break
    theta = np.concatenate([p for p, _ in kept]).transpose(1, 0, 2)
    return theta, U


def reduce(theta, mean_loss, threshold, n_components, n_fit, n_pca, seed):
    """Kernel PCA of all draws (fitted on ``n_fit``), PCA of the good ones: explained ratios."""
    x = theta.reshape(-1, theta.shape[-1])
    gamma = 1.0 / (x.shape[1] * x.var(axis=0).mean())
    fit = np.random.default_rng(seed).choice(len(x), size=min(n_fit, len(x)), replace=False)
    kpca = KernelPCA(n_components, kernel="rbf", gamma=gamma, random_state=seed).fit(x[fit])
    z = np.vstack([kpca.transform(b) for b in np.array_split(x, max(1, len(x) // 4096))])
    good = mean_loss.ravel() < threshold
    ratio = PCA(n_pca).fit(z[good]).explained_variance_ratio_ if good.sum() > n_pca else []
    return {"n_good": int(good.sum()), "pca_ratio": [float(v) for v in ratio]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    args = ap.parse_args()
    cfg = api.load_config(args.config)
    s, r = cfg["sampler"], cfg["reduce"]
    for i, (name, exp) in enumerate(lacfg.experiments(cfg).items()):
        t0 = time.perf_counter()
        target = steps.target(cfg, data.for_experiment(cfg["dataset"], exp.transforms))
        theta, U = sample(
            target, s["n_chains"], s["warmup"], s["draws"], s["thin"], s["step_size"],
            s["target_accept"], cfg["seed"] + i, s["checkpoint_every"], s["until"],
        )  # fmt: skip
        t_sample = time.perf_counter() - t0
        ax = {"chain_axis": 0, "draw_axis": 1}
        out = {
            "experiment": name,
            "draws": int(U.shape[1]),
            "r_hat_U": float(array_stats.rhat(U, method="rank", **ax)),
            "ess_bulk_U": float(array_stats.ess(U, method="bulk", **ax)),
            "ess_tail_U": float(array_stats.ess(U, method="tail", prob=(0.05, 0.95), **ax)),
            "sample_s": t_sample,
            **reduce(
                theta,
                target.mean_loss(U),
                cfg["target"]["good_threshold"],
                r["kpca"]["n_components"],
                r["kpca"]["n_landmarks"],
                r["pca"]["n_components"],
                cfg["seed"],
            ),  # fmt: skip
            "seconds": time.perf_counter() - t0,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
