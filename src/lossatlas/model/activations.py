"""The hidden-layer activations, defined once: value and derivative (numpy), and the facts the
symmetries need. The compiled kernels (:mod:`lossatlas.fastmath`) number them in the order of
:data:`ACTIVATIONS`.

============  ======================================  ==========================================
activation    sign (incoming v -> -v)                 positive rescaling (v -> v / s)
============  ======================================  ==========================================
tanh          outgoing column negated (odd)           --
linear        outgoing column negated (odd)           outgoing column times s
relu          --                                      outgoing column times s
quadratic     outgoing column unchanged (even)        outgoing column times s**2
sigmoid       outgoing column negated, next bias      --
              plus the old column (sigmoid(-z) = 1 - sigmoid(z))
============  ======================================  ==========================================
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear", "quadratic")
# act(-z) in terms of act(z): odd (-act), even (act), or sigmoid (1 - act)
SIGN = {"tanh": "odd", "linear": "odd", "quadratic": "even", "sigmoid": "sigmoid"}
# act(s z) = s**degree act(z) for s > 0
SCALE_DEGREE = {"relu": 1, "linear": 1, "quadratic": 2}
# activations whose derivative mul_act_grad computes from the activation alone
GRAD_FROM_OUTPUT = ("tanh", "sigmoid", "linear")


def act(name: str, z: np.ndarray, xp=np) -> np.ndarray:
    """The activation ``name`` of ``z``, with the array module ``xp`` (numpy, or
    ``jax.numpy`` for the networks JAX evaluates)."""
    if name == "tanh":
        return xp.tanh(z)
    if name == "relu":
        return xp.maximum(z, 0)
    if name == "sigmoid":
        # tanh form: no overflow warning for large |z|
        return 0.5 * (1 + xp.tanh(0.5 * z))
    if name == "linear":
        return z
    if name == "quadratic":
        return z * z
    raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


def act_inplace(name: str, z: np.ndarray) -> None:
    """``z = act(z)`` in place, with the same arithmetic as :func:`act`."""
    if name == "tanh":
        np.tanh(z, out=z)
    elif name == "relu":
        np.maximum(z, 0, out=z)
    elif name == "sigmoid":
        z *= 0.5
        np.tanh(z, out=z)
        z += 1
        z *= 0.5
    elif name == "quadratic":
        np.multiply(z, z, out=z)
    elif name != "linear":
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


def act_grad(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """d act / dz, from the pre-activation ``z`` and the activation ``a``."""
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "sigmoid":
        return a * (1 - a)
    if name == "linear":
        return np.ones_like(z)
    if name == "quadratic":
        return 2 * z
    raise ValueError(f"unknown activation {name!r}")


def mul_act_grad(name: str, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> None:
    """``dz *= act'(z)`` in place, with the same arithmetic as :func:`act_grad`: at p ~ 1e5
    each fresh (C, n, width) temporary costs as much as a pass over it (page faults)."""
    if name == "tanh":
        t = np.multiply(a, a)
        np.subtract(1, t, out=t)
        dz *= t
    elif name == "sigmoid":
        t = np.subtract(1, a)
        t *= a  # a * (1 - a), the same product
        dz *= t
    elif name != "linear":  # linear: act' = 1 leaves dz as it is
        dz *= act_grad(name, z, a)
