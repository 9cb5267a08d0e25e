"""``backend: jax``: random-walk Metropolis whose runs of transitions are one compiled
``jax.lax.scan`` over every chain of a batch, the energy evaluated by JAX
(:class:`lossatlas.model.jaxnet.JaxTarget`).

The kernel is :class:`~lossatlas.sampling.rwm.RWM`'s, transition for transition: the same
reflection at the walls, the same acceptance, the same dual averaging in the warm-up (which
runs RWM's own ``step``, one transition at a time, since each adapts the next), and the same
random numbers drawn from the batch's generator in the same order (per transition the
proposal's normals, then the acceptance uniforms). A run of ``n`` transitions draws them for
all ``n`` first and hands them to the scan, so checkpoints, resume and the stream are the numpy
kernel's: on the same network the chains are the numpy backend's, to the rounding of U.

BlackJAX's random-walk kernel (``blackjax.rmh``) draws its proposals from JAX keys and has no
walls; lossatlas's chains draw from the checkpointed numpy stream and reflect at the box, so the
transition is written here as a scan over pre-drawn noise rather than taken from BlackJAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lossatlas.model.jaxnet import in_x64
from lossatlas.sampling._common import accept, reflect
from lossatlas.sampling.rwm import RWM

# Most MiB of pre-drawn noise one compiled call takes; longer runs go in several calls.
NOISE_MB = 64


@functools.cache
def _scan(energy_of, box: float):
    """The compiled run of transitions for U of one vector ``energy_of`` on ``[-box, box]``."""
    energies = jax.vmap(energy_of)

    def transition(carry, noise):
        x, u_x, eps, beta, prob_sum, acc_sum = carry
        z, uniform = noise
        y = reflect(x + eps[:, None] * z, box, jnp)
        u_y = energies(y)
        prob, accepted = accept(-beta * (u_y - u_x), uniform, jnp)
        x = jnp.where(accepted[:, None], y, x)
        u_x = jnp.where(accepted, u_y, u_x)
        carry = (x, u_x, eps, beta, prob_sum + prob, acc_sum + accepted)
        return carry, None

    @jax.jit
    def run(x, u_x, eps, beta, z, uniforms):
        zero = jnp.zeros_like(u_x)
        carry, _ = jax.lax.scan(transition, (x, u_x, eps, beta, zero, zero), (z, uniforms))
        return carry[0], carry[1], carry[4], carry[5]

    return run


class JaxRWM(RWM):
    """:class:`~lossatlas.sampling.rwm.RWM` on a :class:`~lossatlas.model.jaxnet.JaxTarget`,
    with :meth:`run` compiled (module docstring)."""

    @in_x64
    def run(self, state, rng: np.random.Generator, n_steps: int, beta=None):
        """``n_steps`` transitions without adaptation, as ``n_steps`` calls of ``step``:
        ``(state, sums)`` with the per-chain sums of ``accept_prob`` and ``accepted``."""
        x = state.position
        n_chains, p = x.shape
        beta = np.broadcast_to(
            np.asarray(self.target.beta if beta is None else beta, np.float64), (n_chains,)
        )
        eps = np.exp(state.log_step_size).astype(x.dtype)
        run = _scan(self.target.energy_of, self.target.box)
        per_call = max(1, int(NOISE_MB * 2**20 // (8 * n_chains * (p + 1))))
        u_x = np.asarray(state.U, dtype=np.float64)
        sums = {"accept_prob": np.zeros(n_chains), "accepted": np.zeros(n_chains)}
        done = 0
        while done < n_steps:
            k = min(per_call, n_steps - done)
            z = np.empty((k, n_chains, p), dtype=x.dtype)
            uniforms = np.empty((k, n_chains))
            for i in range(k):  # RWM.step's draws, in its order: not a loop of any arithmetic
                z[i] = rng.standard_normal((n_chains, p), dtype=x.dtype)
                uniforms[i] = rng.random(n_chains)
            x, u_x, prob, acc = run(x, u_x, eps, beta, z, uniforms)
            sums["accept_prob"] += np.asarray(prob)
            sums["accepted"] += np.asarray(acc)
            done += k
        position = np.asarray(x, dtype=state.position.dtype)
        return state._replace(position=position, U=np.asarray(u_x)), sums
