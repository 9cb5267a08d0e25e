"""Sampler throughput and efficiency on the report's target, side by side with BlackJAX and emcee.

Target: 10 points, MLP 2 -> [2, 2] -> 2 tanh (p = 18), box 10, beta 1, summed cross-entropy.
Prints chain-steps/s (RWM), gradient evaluations/s (HMC) and bulk ESS of U per second, and the
ratios, for our numpy kernels (``backend: numpy``, the reference) and the fused numba kernels
(``backend: numba``). BlackJAX runs in JAX's default float32, so the like-for-like comparison is
our float32 fused kernel. BlackJAX, JAX and emcee come from the ``bench`` extra; missing ones
are skipped. Every comparison runs its cases in interleaved rounds (benchmarks/rounds.py) and
reports medians, and the ratios within a round in wall and CPU time, with the load; ESS/s only
from rounds whose chains meet the workflow's convergence target. Ours is ``sampler.run``, the
engine's call for the transitions of a draw; the last table times the engine itself on a
default batch against that bare kernel. ``--write`` puts the tables into benchmarks/README.md.

    python benchmarks/bench_samplers.py [--quick] [--rounds 5] [--write]

``--batches`` times the engine on the default experiment split into batches of 8, 16 and 32
chains (``sampler.chains_per_batch``), what the choice of that default rests on:

    python benchmarks/bench_samplers.py --batches [--rounds 5] [--write]

``--device gpu`` compares our CUDA kernels (``backend: cuda``, float32, ``run``: many
transitions per launch, the state on the GPU) with BlackJAX on JAX's GPU backend (the same
jitted ``lax.scan`` of a ``vmap``-ed step), up to 1,048,576 chains: RWM chain-steps/s and HMC
gradient evaluations/s, and their ratios. Needs an NVIDIA GPU and the ``cuda`` and ``bench``
extras with JAX's CUDA wheels (benchmarks/README.md):

    python benchmarks/bench_samplers.py --device gpu [--quick] [--chains 1024,1048576] [--steps N]
        [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import itertools
import os

# idle OpenMP threads sleep instead of spinning: on a shared machine a spinning barrier
# costs 3-5x whenever another process holds a core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import rounds  # noqa: E402
from arviz_stats.base import array_stats  # noqa: E402

from lossatlas import config, data, model, sampling, steps  # noqa: E402


def report_target() -> model.Target:
    cfg = config.validate({})
    return steps.target(cfg, data.generate(cfg["dataset"]))


def ours_runner(target, kind, n_chains, n_steps, **cfg):
    """``sampler.run(state, rng, n_steps)``, the engine's call for a draw's transitions, after
    compilation and a short tuning: ``(call, chain-steps per call)``."""
    sampler = sampling.build({"kind": kind, **cfg}, target)
    rng = np.random.default_rng(0)
    state = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    for _ in range(20):  # tune a little so acceptance is realistic
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    sampler.run(state, rng, 1)  # compiles run's specialisation
    return (lambda: sampler.run(state, rng, n_steps)), n_chains * n_steps


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


def _blackjax_loop(kernel, n_chains: int, p: int, n_steps: int):
    """``n_steps`` of BlackJAX's ``kernel`` on ``n_chains`` chains: ``jax.vmap`` of its step
    inside ``jax.lax.scan``, jitted and compiled here; the call."""
    import jax
    import jax.numpy as jnp

    x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n_chains, p)))
    states = jax.vmap(kernel.init)(x0)

    @jax.jit
    def run(states, key):
        def body(s, k):
            s, info = jax.vmap(kernel.step)(jax.random.split(k, n_chains), s)
            return s, info.is_accepted.mean()

        return jax.lax.scan(body, states, jax.random.split(key, n_steps))

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(run(states, key))  # compile
    return lambda: jax.block_until_ready(run(states, key))


def blackjax_runner(target, algo, n_chains, n_steps):
    """BlackJAX's RWM or HMC on the report's target (:func:`_blackjax_loop`):
    ``(call, chain-steps per call)``."""
    import blackjax
    import jax.numpy as jnp

    logdensity = jax_logdensity(target)
    if algo == "rwm":
        kernel = blackjax.additive_step_random_walk(
            logdensity, blackjax.mcmc.random_walk.normal(0.1)
        )
    else:
        kernel = blackjax.hmc(logdensity, 0.05, jnp.ones(target.p), num_integration_steps=10)
    return _blackjax_loop(kernel, n_chains, target.p, n_steps), n_chains * n_steps


def ess_runner(target, cfg, n_chains, warmup, draws, thin):
    """A call that runs warm-up and ``draws`` draws ``thin`` transitions apart from fresh
    starts, as the engine does, and returns U ``(chain, draw)``; compiled here first."""
    sampler = sampling.build(cfg, target)
    rng = np.random.default_rng(1)
    s = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    sampler.run(sampler.end_warmup(sampler.step(s, rng, adapt=True)[0]), rng, 1)

    def call():
        state = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
        for _ in range(warmup):
            state, _ = sampler.step(state, rng, adapt=True)
        state = sampler.end_warmup(state)
        us = np.empty((n_chains, draws))
        for t in range(draws):
            state, _ = sampler.run(state, rng, thin)
            us[:, t] = state.U
        return us

    return call


def emcee_runner(target, n_walkers, warmup, draws, thin):
    import emcee

    def log_prob(x):
        return target.log_density(np.asarray(x))

    rng = np.random.default_rng(1)

    def call():
        s = emcee.EnsembleSampler(n_walkers, target.p, log_prob, vectorize=True)
        x0 = rng.uniform(-1, 1, (n_walkers, target.p))
        s.run_mcmc(x0, warmup + draws * thin, progress=False)
        kept = s.get_log_prob()[warmup + thin - 1 :: thin]
        return -kept.T / target.beta  # (walker, draw)

    return call


def converged_ess(us, rhat_max=1.01, ess_min=400):
    """``(bulk ESS, R-hat)`` of U, and whether the chains meet the workflow's target."""
    ax = {"chain_axis": 0, "draw_axis": 1}
    ess = float(array_stats.ess(us, method="bulk", **ax))
    rhat = float(array_stats.rhat(us, method="rank", **ax))
    return ess, rhat, rhat < rhat_max and ess > ess_min


GPU_CHAINS = (1024, 16384, 131072, 1048576)


def cuda_runners(target, kind, n_chains, n_steps, **cfg):
    """Our CUDA kernels, compiled and tuned a little here: ``run`` (``n_steps`` transitions in
    one launch, state copied in and out once, as BlackJAX's scan returns its state) and
    ``step`` (a copy in and out per transition, the warm-up's call), as
    ``{name: (call, chain-steps per call)}``."""
    sampler = sampling.build({"kind": kind, "backend": "cuda", "dtype": "float32", **cfg}, target)
    rng = np.random.default_rng(0)
    state = sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng)
    for _ in range(5):  # compiles, and tunes a little so acceptance is realistic
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    sampler.run(state, rng, 1)  # compiles run's specialisation
    n_single = 3

    def steps():
        s = state
        for _ in range(n_single):
            s, _ = sampler.step(s, rng)

    return {
        "cuda run": ((lambda: sampler.run(state, rng, n_steps)), n_chains * n_steps),
        "cuda step": (steps, n_chains * n_single),
    }


def rate_table(cases, n_rounds, per_step, pairs):
    """Interleave ``cases`` (``{name: (call, chain-steps)}``) over ``n_rounds``: the median
    rates (x ``per_step``), and for each ``(ours, peer)`` of ``pairs`` the median over rounds
    of ours' speed-up over peer in wall and in CPU time; and the median load."""
    runs = rounds.interleave({k: call for k, (call, _) in cases.items()}, n_rounds)
    per = {k: per_step * work for k, (_, work) in cases.items()}
    rates = {k: float(np.median([per[k] / t.wall for t in runs[k]])) for k in cases}
    speedups = {}
    for ours, peer in pairs:
        if ours in runs and peer in runs:
            r = rounds.ratios(runs[peer], runs[ours])  # time ratio peer / ours
            scale = per[ours] / per[peer]  # both per unit of work
            speedups[(ours, peer)] = (r["wall"] * scale, r["cpu"] * scale)
    load = float(np.median([t.load for ts in runs.values() for t in ts]))
    return rates, speedups, load


def conv_target(n_points: int = 200, seed: int = 0):
    """A small 1-D CNN on MNIST-1D-shaped data (40 positions, 1 channel, 10 classes; random
    here: the speed does not depend on the labels) as a JaxTarget."""
    from lossatlas.model import jaxnet as jn

    layers = [
        jn.Conv(8, (5,)), jn.Pool(2), jn.Conv(8, (5,)), jn.Pool(2), jn.Flatten(),
        jn.Dense(32), jn.Dense(10),
    ]  # fmt: skip
    net = jn.ConvNet((40, 1), layers, "tanh", "cross_entropy")
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n_points, 40)), rng.integers(0, 10, n_points)
    return jn.JaxTarget(net, X, y, box=10.0)


def jax_rwm_runner(target, n_chains, n_steps):
    """backend: jax's RWM ``run`` of ``n_steps`` transitions, after compilation."""
    from lossatlas.sampling.jax_rwm import JaxRWM

    sampler = JaxRWM(target, step_size=0.1)
    rng = np.random.default_rng(0)
    state = sampler.end_warmup(sampler.init(rng.uniform(-1, 1, (n_chains, target.p)), rng))
    sampler.run(state, rng, n_steps)  # compiles
    return (lambda: sampler.run(state, rng, n_steps)), n_chains * n_steps


def blackjax_conv_runner(target, n_chains, n_steps):
    """BlackJAX's random walk on the same network's log-density (float64, vmap in scan)."""
    import blackjax
    import jax.numpy as jnp

    from lossatlas.model.jaxnet import in_x64

    @in_x64
    def build():
        U = target.net.energy_fn(target.X, target.y)

        def logdensity(theta):
            inside = jnp.all(jnp.abs(theta) <= target.box)
            return jnp.where(inside, -target.beta * U(theta), -jnp.inf)

        kernel = blackjax.additive_step_random_walk(
            logdensity, blackjax.mcmc.random_walk.normal(0.1)
        )
        return _blackjax_loop(kernel, n_chains, target.p, n_steps)

    return in_x64(build()), n_chains * n_steps


def jax_main(args):
    """backend: jax against numba on the report's MLP, and against BlackJAX on a 1-D CNN."""
    out = [f"{rounds.machine()}; {args.rounds} interleaved rounds, medians; float64 throughout"]
    mlp = report_target()
    out += ["", f"RWM chain-steps/s on the report's MLP (p = {mlp.p}): backend jax against numba"]
    out += [
        f"{'chains':>8} {'numba':>10} {'jax':>10} {'time jax/numba':>15} {'cpu':>5} {'load':>5}"
    ]
    for c in (8, 64, 1024):
        n = max(2, int((2e4 if args.quick else 1e5) / c))
        cases = {
            "numba": ours_runner(mlp, "rwm", c, n, backend="numba", dtype="float64"),
            "jax": ours_runner(mlp, "rwm", c, n, backend="jax"),
        }
        rates, up, load = rate_table(cases, args.rounds, 1, [("numba", "jax")])
        w, cpu = up[("numba", "jax")]
        out.append(
            f"{c:>8} {rates['numba']:>10.3g} {rates['jax']:>10.3g} {w:>15.1f} {cpu:>5.1f} "
            f"{load:>5.1f}"
        )
        print(out[-1], flush=True)
    conv = conv_target()
    out += [
        "",
        f"RWM chain-steps/s on a 1-D CNN (p = {conv.p}, {conv.n_points} points of 40 x 1, "
        "conv 8x5, avg pool 2, conv 8x5, avg pool 2, dense 32, dense 10): backend jax against "
        "BlackJAX's random walk on the same log-density",
        f"{'chains':>8} {'jax':>10} {'blackjax':>10} {'time jax/bj':>12} {'cpu':>5} {'load':>5}",
    ]
    for c in (8, 64):
        n = max(2, int((2e3 if args.quick else 1e4) / c))
        cases = {"jax": jax_rwm_runner(conv, c, n), "blackjax": blackjax_conv_runner(conv, c, n)}
        rates, up, load = rate_table(cases, args.rounds, 1, [("blackjax", "jax")])
        w, cpu = up[("blackjax", "jax")]  # time ratio jax / blackjax
        out.append(
            f"{c:>8} {rates['jax']:>10.3g} {rates['blackjax']:>10.3g} {w:>12.2f} {cpu:>5.2f} "
            f"{load:>5.1f}"
        )
        print(out[-1], flush=True)
    table = "\n".join(out)
    if args.write:
        rounds.write_section("bench_samplers_jax", f"```\n{table}\n```")


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
    from numba import cuda as numba_cuda

    name = "simulator" if cuda.simulated() else numba_cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    out = [
        f"target: MLP {target.mlp.sizes}, p={target.p}, n={target.n_points}, box={target.box}",
        f"numba's CUDA target: {getattr(numba_cuda, 'implementation', '?')}, device: {name}",
        f"JAX {jax.__version__} devices: {', '.join(gpus)}; {rounds.machine()}",
        f"{args.rounds} interleaved rounds; rates and ratios are medians over them",
    ]
    if jax.default_backend() != "gpu":
        out.append("WARNING: JAX has no GPU backend (pip install 'jax[cuda12]'): not GPU vs GPU")
    head = f"{'chains':>8} {'steps':>6} {'cuda run':>10} {'cuda step':>10} {'blackjax':>10}"
    head += f" {'run/bj':>7} {'cpu':>5} {'step/bj':>7} {'load':>5}"
    for kind, label, per_step, cfg in (
        ("rwm", "RWM chain-steps/s", 1, {}),
        ("hmc", "HMC gradient evaluations/s (10 leapfrog steps)", 10, {"hmc": {"n_leapfrog": 10}}),
    ):
        out += ["", f"{label}, float32 (ours: backend cuda; BlackJAX: vmap of the step in scan)"]
        out.append(head)
        for c in chains:
            n = args.steps or min(2000, max(4, base // (c * per_step)))
            cases = cuda_runners(target, kind, c, n, **cfg)
            cases["blackjax"] = blackjax_runner(target, kind, c, n)
            run_bj, step_bj = ("cuda run", "blackjax"), ("cuda step", "blackjax")
            rates, up, load = rate_table(cases, args.rounds, per_step, (run_bj, step_bj))
            out.append(
                f"{c:>8} {n:>6} {rates['cuda run']:>10.3g} {rates['cuda step']:>10.3g} "
                f"{rates['blackjax']:>10.3g} {up[run_bj][0]:>7.2f} {up[run_bj][1]:>5.2f}"
                f" {up[step_bj][0]:>7.2f} {load:>5.1f}"
            )
            print(out[-1], flush=True)
    table = "\n".join(out)
    print(table)
    if args.write:
        rounds.write_section("bench_samplers_gpu", f"```\n{table}\n```")


def throughput_table(target, n_rounds, work, have_bj):
    """RWM chain-steps/s and HMC gradient evaluations/s of every backend and BlackJAX."""
    np_ = {"backend": "numpy"}
    f32 = {"backend": "numba", "dtype": "float32"}
    f64 = {"backend": "numba", "dtype": "float64"}
    head = f"{'chains':>8} {'numpy f64':>10} {'numba f64':>10} {'numba f32':>10} {'blackjax':>10}"
    head += f" {'f32/bj':>7} {'cpu':>5} {'f32/numpy':>9} {'cpu':>5} {'load':>5}"
    out = []
    for kind, label, per_step, cfg in (
        ("rwm", "RWM chain-steps/s (BlackJAX float32: vmap of the step in lax.scan, jitted)", 1,
         {}),
        ("hmc", "HMC gradient evaluations/s (10 leapfrog steps)", 10, {"hmc": {"n_leapfrog": 10}}),
    ):  # fmt: skip
        out += ["", label, head]
        print("\n".join(out[-3:]), flush=True)
        for c in (64, 1024, 4096):
            n = max(2, int(work / (per_step * c)))
            cases = {
                "numpy f64": ours_runner(target, kind, c, n, **cfg, **np_),
                "numba f64": ours_runner(target, kind, c, n, **cfg, **f64),
                "numba f32": ours_runner(target, kind, c, n, **cfg, **f32),
            }
            if have_bj:
                cases["blackjax"] = blackjax_runner(target, kind, c, n)
            vs_bj, vs_np = ("numba f32", "blackjax"), ("numba f32", "numpy f64")
            rates, up, load = rate_table(cases, n_rounds, per_step, (vs_bj, vs_np))
            bj, (bw, bc) = rates.get("blackjax", np.nan), up.get(vs_bj, (np.nan, np.nan))
            out.append(
                f"{c:>8} {rates['numpy f64']:>10.3g} {rates['numba f64']:>10.3g} "
                f"{rates['numba f32']:>10.3g} {bj:>10.3g} {bw:>7.2f} {bc:>5.2f} "
                f"{up[vs_np][0]:>9.1f} {up[vs_np][1]:>5.1f} {load:>5.1f}"
            )
            print(out[-1], flush=True)
    return out


def ess_table(target, n_rounds, quick):
    """Bulk ESS of U per second of every sampler, from chains that meet the workflow's
    convergence target (R-hat < 1.01, ESS > 400) in that round; interleaved rounds."""
    # (warm-up, draws, thin): the default config's budget, which R-hat(U) < 1.01 needs for the
    # random walk here (R-hat ~ 1 + 500 / transitions after warm-up); HMC mixes per gradient
    # about as fast, so 20 trajectories of 10 leapfrog steps per draw
    walk, hmc = ((10000, 625, 200), (1000, 625, 20))
    if quick:
        walk, hmc = ((5000, 300, 200), (500, 300, 20))
    np_ = {"backend": "numpy"}
    f32 = {"backend": "numba", "dtype": "float32"}
    f64 = {"backend": "numba", "dtype": "float64"}
    hmc10 = {"kind": "hmc", "hmc": {"n_leapfrog": 10}}
    pt4 = {"tempering": {"n_temps": 4, "beta_min": 0.1}}
    base_cfg = {"kind": "rwm", **np_}  # the report's method: a plain random walk, numpy float64
    rows = [
        ("rwm numpy f64 [baseline]", base_cfg, 64, walk),
        ("mala numpy f64", {"kind": "mala", **np_}, 64, walk),
        ("rwm numba f32", {"kind": "rwm", **f32}, 64, walk),
        ("rwm numba f64", {"kind": "rwm", **f64}, 64, walk),
        ("hmc numba f32", {**hmc10, **f32}, 64, hmc),
        ("hmc numba f64", {**hmc10, **f64}, 64, hmc),
        ("tempered rwm numba f32", {"kind": "rwm", **pt4, **f32}, 64, walk),
        ("tempered hmc numba f32", {**hmc10, **pt4, **f32}, 64, hmc),
        # emcee's stretch move at the random walk's cost per draw would take minutes a round
        ("emcee", None, 64, (walk[0] // 5, walk[1], walk[2] // 20)),
    ]
    cases = {}
    for name, cfg, chains, (warmup, draws, thin) in rows:
        key = f"{name}|{chains}|{warmup} + {draws} x {thin}"
        if cfg is None:
            try:
                cases[key] = emcee_runner(target, chains, warmup, draws, thin)
            except ImportError:
                print("emcee not installed: skipped")
        else:
            cases[key] = ess_runner(target, cfg, chains, warmup, draws, thin)
    runs = rounds.interleave(cases, n_rounds)
    out = [
        "",
        "bulk ESS of U per second, warm-up included (transitions: warm-up + draws x thin); only "
        "rounds whose chains meet R-hat < 1.01 and ESS > 400 count; 'vs base': against the "
        "numpy RWM (the report's method) at 64 chains, within each round",
        f"{'sampler':>26} {'chains':>6} {'transitions':>18} {'ESS/s':>9} {'ESS':>7} "
        f"{'R-hat':>6} {'seconds':>7} {'vs base':>7} {'cpu':>5} {'converged':>9}",
    ]
    base = ({}, {})
    for key, ts in runs.items():
        name, chains, budget = key.split("|")
        stats = [converged_ess(t.result) for t in ts]
        ok = [i for i, (_, _, good) in enumerate(stats) if good]
        wall = {i: stats[i][0] / ts[i].wall for i in ok}
        cpu = {i: stats[i][0] / ts[i].cpu for i in ok}
        if "[baseline]" in name:
            base = (wall, cpu)
        bw, bc = base
        both = [i for i in ok if i in bw]  # rounds where both met the target
        vw = np.median([wall[i] / bw[i] for i in both]) if both else np.nan
        vc = np.median([cpu[i] / bc[i] for i in both]) if both else np.nan
        rate = f"{np.median(list(wall.values())):>9.1f}" if ok else f"{'-':>9}"
        out.append(
            f"{name:>26} {chains:>6} {budget:>18} {rate} "
            f"{np.median([e for e, _, _ in stats]):>7.0f} "
            f"{np.median([r for _, r, _ in stats]):>6.3f} {rounds.median(ts):>7.1f} {vw:>7.1f} "
            f"{vc:>5.1f} {len(ok):>5}/{len(ts)}"
        )
        print(out[-1], flush=True)
    return out


def engine_table(n_rounds):
    """The engine's sampling of one default batch (warm-up and draws, written to a batch
    file) against the bare kernel's ``run`` over as many transitions of as many chains."""
    import tempfile
    from pathlib import Path

    from lossatlas.sampling import engine

    cfg = config.validate({})
    ds = data.generate(cfg["dataset"])
    exp = next(iter(config.experiments(cfg).values()))
    args = steps.sampling_arguments(steps.settings("sample", cfg))
    s = args["sampler"]
    n, total = s["chains_per_batch"], s["warmup"] + s["draws"] * s["thin"]
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    engine.compile_kernels(ds, **args)
    made = itertools.count()

    def batch():
        spec = engine.batch_specs(exp, ds, work / str(next(made)), **args)[0]
        Path(spec["path"]).parent.mkdir(parents=True)
        engine.run_batch(spec)

    kernel, _ = ours_runner(steps.target(cfg, ds), "rwm", n, total, backend="numba")
    runs = rounds.interleave({"engine": batch, "kernel": kernel}, n_rounds)
    r = rounds.ratios(runs["engine"], runs["kernel"])
    return [
        "",
        f"engine.run_batch of one default batch ({n} chains, {total} transitions each, batch "
        "file written) against the fused kernel's run() over as many transitions",
        f"engine {n * total / rounds.median(runs['engine']):.3g} chain-steps/s; engine / kernel "
        f"time: wall {r['wall']:.2f}, CPU {r['cpu']:.2f} (load {r['load']:.1f})",
    ]


def batches_table(n_rounds: int, sizes=(8, 16, 32), draws: int = 1500) -> list[str]:
    """The default experiment's chains sampled by the engine (warm-up, draws, batch files) as
    batches of each size, for a fixed ``draws``: a batch's chains share every kernel call, so
    its fixed cost per transition is paid once per batch."""
    import shutil
    import tempfile
    from pathlib import Path

    from lossatlas.sampling import engine

    work = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    made = itertools.count()

    def case(per: int):
        cfg = config.validate({"sampler": {"chains_per_batch": per, "until": None, "draws": draws}})
        ds = data.generate(cfg["dataset"])
        exp = next(iter(config.experiments(cfg).values()))
        args = steps.sampling_arguments(steps.settings("sample", cfg))
        engine.compile_kernels(ds, **args)

        def run():
            for spec in engine.batch_specs(exp, ds, work / str(next(made)), **args):
                Path(spec["path"]).parent.mkdir(parents=True, exist_ok=True)
                engine.run_batch(spec)

        return run, cfg["sampler"]["n_chains"]

    cases = {per: case(per) for per in sizes}
    runs = rounds.interleave({str(per): run for per, (run, _) in cases.items()}, n_rounds)
    shutil.rmtree(work, ignore_errors=True)
    base = runs[str(sizes[0])]
    lines = [f"chains per batch  batches  wall (s)  CPU (s)  CPU / {sizes[0]}-chain batches  load"]
    for per, (_, n_chains) in cases.items():
        ts = runs[str(per)]
        r = rounds.ratios(ts, base)
        lines.append(
            f"{per:>16} {-(-n_chains // per):>8} {rounds.median(ts):>9.2f} "
            f"{rounds.median(ts, 'cpu'):>8.2f} {r['cpu']:>24.2f} {r['load']:>5.1f}"
        )
        print(lines[-1], flush=True)
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (noisier numbers)")
    ap.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="gpu: CUDA against BlackJAX"
    )
    ap.add_argument(
        "--jax", action="store_true", help="backend jax against numba and BlackJAX (CPU)"
    )
    ap.add_argument("--chains", help="gpu: comma-separated chain counts (default up to 2^20)")
    ap.add_argument("--steps", type=int, help="gpu: transitions per timed run (default: by size)")
    ap.add_argument(
        "--batches", action="store_true", help="the default experiment in batches of 8, 16, 32"
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--write", action="store_true", help="tables into benchmarks/README.md")
    args = ap.parse_args()
    if args.device == "gpu":
        gpu_main(args)
        return
    if args.jax:
        jax_main(args)
        return
    if args.batches:
        intro = (
            "The default experiment's 32 chains, warm-up and 1,500 draws each, sampled by "
            f"engine.run_batch as batches of 8, 16 and 32 chains; {rounds.machine()}; "
            f"{args.rounds} interleaved rounds, medians:"
        )
        lines = batches_table(args.rounds)
        if args.write:
            rounds.write_preformatted("bench_samplers_batches", intro, lines)
        return
    target = report_target()
    try:
        import blackjax  # noqa: F401

        have_bj = True
    except ImportError:
        have_bj = False
        print("blackjax/jax not installed: pip install -e '.[bench]' for the comparison")
    out = [
        f"target: MLP {target.mlp.sizes}, p={target.p}, n={target.n_points}, box={target.box}",
        f"numba threads: {numba.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; {rounds.machine()}",
        f"{args.rounds} interleaved rounds; rates and ratios are medians over them "
        "(ratios within a round; 'cpu': the same on CPU time)",
    ]
    print("\n".join(out), flush=True)
    out += throughput_table(target, args.rounds, 1e5 if args.quick else 4e5, have_bj)
    out += ess_table(target, args.rounds, args.quick)
    out += engine_table(args.rounds)
    table = "\n".join(out)
    print(table)
    if args.write:
        rounds.write_section("bench_samplers_cpu", f"```\n{table}\n```")


if __name__ == "__main__":
    main()
