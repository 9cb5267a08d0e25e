"""Small MLPs with a flat parameter vector, and the energy U(theta) sampled by MCMC.

Everything is batched over chains: ``theta`` has shape ``(n_chains, p)``. Small networks are
computed with array operations over the chain axis, large ones chain by chain (BLAS matrix
products and compiled elementwise passes); both give bitwise the same numbers. The dtype of
``theta`` (float64 or float32) is the dtype of the computation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from lossatlas.model.activations import ACTIVATIONS, GRAD_FROM_OUTPUT
from lossatlas.model.activations import act as _act
from lossatlas.model.activations import act_inplace as _act_inplace
from lossatlas.model.activations import mul_act_grad as _mul_act_grad
from lossatlas.model.layout import ParamLayout

LOSSES = ("cross_entropy", "squared", "mse")
# losses on integer class labels; mse takes float targets Y (n, r)
LABEL_LOSSES = ("cross_entropy", "squared")
ENERGIES = ("sum", "mean")
# From this many points x widest layer on, a batch is computed chain by chain, with bitwise the
# same numbers (crossovers measured by benchmarks/bench_grad.py --chainwise): one chain's
# activations stay in cache between its matrix products and its elementwise passes, a whole
# batch's do not. Below, the per-chain Python overhead costs more than that saves.
CHAINWISE_MIN_GRAD = 1 << 13
CHAINWISE_MIN_ENERGY = 1 << 15


# activation -> kind code of the compiled backward kernel (activations it covers)
_KERNEL_KIND = {"tanh": 0, "sigmoid": 1, "linear": 2}


@functools.cache
def _kernels():
    """The chainwise path's elementwise kernels, compiled on first use (so that small networks
    never import numba). No fastmath: each is numpy's own sequence of IEEE operations, so the
    numbers are bitwise those of the batched path."""
    from numba import njit

    from lossatlas.fastmath import like

    jit = njit(cache=True, error_model="numpy", nogil=True)

    @jit
    def add_bias(z, b):
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                z[i, j] += b[j]

    @jit
    def backward(dz, a, db, kind):
        # dz *= act'(z) as _mul_act_grad computes it and db = dz.sum(axis=0) in numpy's order
        # (row 0, then the rows added one by one), in one pass over dz instead of four
        for i in range(dz.shape[0]):
            for j in range(dz.shape[1]):
                if kind == 0:
                    v = dz[i, j] * (like(a[i, j], 1.0) - a[i, j] * a[i, j])
                elif kind == 1:
                    v = dz[i, j] * ((like(a[i, j], 1.0) - a[i, j]) * a[i, j])
                else:
                    v = dz[i, j]
                dz[i, j] = v
                db[j] = v if i == 0 else db[j] + v

    return add_bias, backward


def loss_and_dout(loss: str, out: np.ndarray, y: np.ndarray, need_grad: bool):
    """Per-point loss ``(C, n)`` of outputs ``(C, n, k)`` under ``loss`` (``model.loss``) and,
    with ``need_grad``, its gradient in the outputs (else None)."""
    n, k = out.shape[1], out.shape[2]
    idx = np.arange(n)
    if loss == "cross_entropy":
        m = out.max(axis=2, keepdims=True)
        e = np.exp(out - m)
        s = e.sum(axis=2, keepdims=True)
        lse = m[..., 0] + np.log(s[..., 0])
        point = lse - out[:, idx, y]
        if not need_grad:
            return point, None
        dout = e / s
        dout[:, idx, y] -= 1
        return point, dout
    if loss == "mse":
        r = out - y.astype(out.dtype, copy=False)
    else:
        onehot = np.zeros((n, k), dtype=out.dtype)
        onehot[idx, y] = 1
        r = out - onehot
    point = (r * r).sum(axis=2)
    return point, (2 * r if need_grad else None)


def predictions(loss: str, out: np.ndarray) -> np.ndarray:
    """What a network computes from its outputs ``(..., n, k)`` under ``loss``: the softmax
    probabilities for cross-entropy, the outputs themselves for squared losses."""
    if loss != "cross_entropy":
        return out
    e = np.exp(out - out.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class MLP:
    """Fully connected network ``sizes = (d, *hidden, k)``; hidden layers use ``activation``,
    the output layer is linear (logits).

    Flat parameter layout, layer by layer: ``W_l`` (out x in, row-major) then ``b_l`` (out).
    ``loss``: ``cross_entropy`` (softmax, computed with log-sum-exp), ``squared``
    (``sum_k (f_k - onehot_k)^2`` on the raw outputs) or ``mse`` (``sum_k (f_k - Y_k)^2``
    against float targets, the regression loss). ``bias``: which layers have one
    (:class:`~lossatlas.model.layout.ParamLayout`).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        loss: str = "cross_entropy",
        bias: str = "all",
    ):
        sizes = tuple(int(s) for s in sizes)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}")
        self.sizes = sizes
        self.activation = activation
        self.loss = loss
        self.bias = bias
        self.layout = ParamLayout(sizes, bias)
        # (W slice, b slice, out, in) per layer, unpacked once for the per-chain loops below
        self._layers = [(s.weights, s.biases, s.n_out, s.n_in) for s in self.layout.layers]
        self.p = self.layout.p

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    # -- what the analyses ask of any network (also :class:`.jaxnet.NetworkOnChains`) --------

    symmetry = "hidden-unit permutations and sign flips"

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    def canonical_transform(self):
        """``points (m, p) -> (m, p)``: one representative per orbit of the symmetry group."""
        from lossatlas.model import symmetry

        return symmetry.canonical_transform(self.sizes, self.activation, self.loss, self.bias)

    def nearest_copy(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
        """The copy of ``b`` under the symmetry group nearest to ``a``, and how it was found."""
        from lossatlas.model import symmetry

        return symmetry.nearest_copy(
            a, b, self.sizes, activation=self.activation, loss=self.loss, bias=self.bias
        )

    def param_names(self) -> list[str]:
        """Names in flat order: ``W1[i,j]`` (row i = output unit, column j = input), ``b1[i]``."""
        return self.layout.names()

    names = param_names  # as every network names its parameters

    def unflatten(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``[(W (C, out, in), b (C, out)), ...]`` of ``theta (C, p)``."""
        return self.layout.views(theta)

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs ``(C, n, k)`` for inputs ``X (n, d)``."""
        if not self._chainwise(X, CHAINWISE_MIN_ENERGY):
            return self._forward(theta, X, keep=False)[0]
        X = X.astype(theta.dtype, copy=False)
        out = np.empty((theta.shape[0], X.shape[0], self.sizes[-1]), dtype=theta.dtype)
        for c in range(theta.shape[0]):
            self._chain_forward(theta[c], X, keep=False, out=out[c])
        return out

    def _chainwise(self, X, threshold) -> bool:
        return X.shape[0] * max(self.sizes[1:]) >= threshold

    def _chain_forward(self, th, X, keep, out=None):
        """One chain's :meth:`_forward`, ``th (p,)``: ``(outputs (n, k), cache)``; the bias
        is added by a compiled loop (numpy's broadcast add took ~2.5x as long at p ~ 1e5)."""
        add_bias = _kernels()[0]
        h, cache, last = X, [], self.n_layers - 1
        for layer, (wsl, bsl, n_out, n_in) in enumerate(self._layers):
            z = np.matmul(h, th[wsl].reshape(n_out, n_in).T, out=out if layer == last else None)
            if bsl.stop > bsl.start:
                add_bias(z, th[bsl])
            if layer == last:
                a = z
            elif not keep or self.activation in GRAD_FROM_OUTPUT:
                _act_inplace(self.activation, z)
                a = z
            else:
                a = _act(self.activation, z)
            if keep:
                cache.append((h, z, a))
            h = a
        return h, cache

    def _forward(self, theta, X, keep=True):
        """Layer by layer, one batched matrix product (BLAS gemm per chain) each.

        Without ``keep`` (energy only) the bias and the activation are applied in place: the
        same numbers, but no second (C, n, width) temporary per layer, which at p ~ 1e5 is a
        third of the time of an energy evaluation (memory traffic, not arithmetic).
        """
        params = self.unflatten(theta)
        h = np.broadcast_to(X.astype(theta.dtype, copy=False), (theta.shape[0], *X.shape))
        cache = []
        last = len(params) - 1
        for layer, (W, b) in enumerate(params):
            if keep:
                z = np.matmul(h, W.transpose(0, 2, 1))
                if b.shape[1]:
                    z += b[:, None, :]  # in place: the same sum, one temporary fewer
                if layer == last:
                    a = z
                elif self.activation in GRAD_FROM_OUTPUT:
                    # the backward pass reads only the activation: overwrite z with it
                    _act_inplace(self.activation, z)
                    a = z
                else:
                    a = _act(self.activation, z)
                cache.append((h, z, a))
            else:
                a = np.matmul(h, W.transpose(0, 2, 1))
                if b.shape[1]:
                    a += b[:, None, :]
                if layer < last:
                    _act_inplace(self.activation, a)
            h = a
        return h, cache, params

    def point_losses(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-point loss ``(C, n)`` of outputs ``(C, n, k)`` against labels ``y (n,)`` (or
        float targets ``y (n, k)`` for ``mse``)."""
        return loss_and_dout(self.loss, out, y, need_grad=False)[0]

    def loss_and_grad(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray, weights=None):
        """Summed loss ``(C,)`` over the points (each weighted by ``weights (n,)`` if given)
        and its gradient ``(C, p)`` by backpropagation."""
        if self._chainwise(X, CHAINWISE_MIN_GRAD):
            return self._chain_loss_and_grad(theta, X, y, weights)
        out, cache, params = self._forward(theta, X)
        loss, dout = loss_and_dout(self.loss, out, y, need_grad=True)
        if weights is not None:
            w = np.asarray(weights, dtype=theta.dtype)
            loss = loss * w
            dout = dout * w[None, :, None]
        grad = np.empty_like(theta)
        dz = dout
        for layer in range(len(params) - 1, -1, -1):
            wsl, bsl, n_out, n_in = self._layers[layer]
            h, z, a = cache[layer]
            if layer < len(params) - 1:
                _mul_act_grad(self.activation, dz, z, a)  # dz is this pass's own array
            grad[:, wsl] = (dz.transpose(0, 2, 1) @ h).reshape(theta.shape[0], -1)
            if bsl.stop > bsl.start:
                grad[:, bsl] = dz.sum(axis=1)
            if layer > 0:
                dz = dz @ params[layer][0]
        return loss.sum(axis=1), grad

    def _chain_loss_and_grad(self, theta, X, y, weights):
        """:meth:`loss_and_grad` chain by chain, bitwise the same numbers: each chain's forward,
        loss and backward pass run while its activations are in cache, and the weight
        gradients' matrix products write straight into ``grad``."""
        backward = _kernels()[1]
        kind = _KERNEL_KIND.get(self.activation)
        X = X.astype(theta.dtype, copy=False)
        w = None if weights is None else np.asarray(weights, dtype=theta.dtype)
        C, last = theta.shape[0], self.n_layers - 1
        grad = np.empty(theta.shape, dtype=theta.dtype)  # C order: the rows' slices are views
        loss = np.empty(C, dtype=theta.dtype)
        for c in range(C):
            th, g = theta[c], grad[c]
            out, cache = self._chain_forward(th, X, keep=True)
            point_loss, dz = loss_and_dout(self.loss, out[None], y, need_grad=True)
            if w is not None:
                point_loss = point_loss * w
                dz = dz * w[None, :, None]
            loss[c] = point_loss.sum(axis=1)[0]
            dz = dz[0]
            for layer in range(last, -1, -1):
                wsl, bsl, n_out, n_in = self._layers[layer]
                h, z, a = cache[layer]
                has_bias = bsl.stop > bsl.start
                if layer < last and kind is not None and has_bias:
                    backward(dz, a, g[bsl], kind)  # dz is this pass's own array
                else:
                    if layer < last:
                        _mul_act_grad(self.activation, dz, z, a)
                    if has_bias:
                        np.sum(dz, axis=0, out=g[bsl])
                np.matmul(dz.T, h, out=g[wsl].reshape(n_out, n_in))
                if layer > 0:
                    dz = dz @ th[wsl].reshape(n_out, n_in)
        return loss, grad


class Target:
    """The density ``exp(-beta * U(theta))`` on the box ``[-box, box]^p``.

    ``U`` is the per-point loss summed over the data (``energy="sum"``) or averaged
    (``energy="mean"``). ``y``: integer labels ``(n,)``, or float targets ``(n, k)`` when the
    network's loss is ``mse``.
    """

    def __init__(
        self,
        mlp: MLP,
        X: np.ndarray,
        y: np.ndarray,
        box: float = 10.0,
        beta: float = 1.0,
        energy: str = "sum",
    ):
        if energy not in ENERGIES:
            raise ValueError(f"unknown energy {energy!r}; use one of {ENERGIES}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != mlp.sizes[0]:
            raise ValueError(f"X must be (n, {mlp.sizes[0]}), got {X.shape}")
        if mlp.loss == "mse":
            y = np.asarray(y, dtype=np.float64)
            if y.shape != (X.shape[0], mlp.sizes[-1]) or not np.all(np.isfinite(y)):
                raise ValueError(f"mse targets must be finite, shape (n, {mlp.sizes[-1]})")
        else:
            y = np.asarray(y, dtype=np.int64)
            if y.shape != (X.shape[0],) or y.min() < 0 or y.max() >= mlp.sizes[-1]:
                raise ValueError(f"y must be (n,) labels in [0, {mlp.sizes[-1]})")
        self.mlp = mlp
        self.X = X
        self.y = y
        self.box = float(box)
        self.beta = float(beta)
        self.energy = energy
        self._X = {np.dtype(np.float64): X, np.dtype(np.float32): X.astype(np.float32)}

    @property
    def p(self) -> int:
        return self.mlp.p

    @property
    def network(self) -> MLP:
        """The network, as every analysis sees one: ``forward``, ``loss``, ``n_outputs``,
        ``names``, ``symmetry``, ``canonical_transform`` and ``nearest_copy``."""
        return self.mlp

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    def _inputs(self, theta):
        theta = np.asarray(theta)
        if theta.ndim != 2 or theta.shape[1] != self.p:
            raise ValueError(f"theta must be (n_chains, {self.p}), got {theta.shape}")
        if theta.dtype not in self._X:
            theta = theta.astype(np.float64)
        return theta, self._X[theta.dtype]

    def U(self, theta: np.ndarray) -> np.ndarray:
        """Energy ``(n_chains,)`` of ``theta (n_chains, p)``."""
        theta, X = self._inputs(theta)
        u = self.mlp.point_losses(self.mlp.forward(theta, X), self.y).sum(axis=1)
        return u / self.n_points if self.energy == "mean" else u

    def U_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy ``(n_chains,)`` and its gradient ``(n_chains, p)``."""
        theta, X = self._inputs(theta)
        u, g = self.mlp.loss_and_grad(theta, X, self.y)
        if self.energy == "mean":
            u, g = u / self.n_points, g / self.n_points
        return u, g

    def mean_loss(self, U: np.ndarray) -> np.ndarray:
        """Mean per-point loss of energies ``U`` (the "good" threshold applies to it)."""
        return np.asarray(U) / self.n_points if self.energy == "sum" else np.asarray(U)

    def in_box(self, theta: np.ndarray) -> np.ndarray:
        return np.all(np.abs(theta) <= self.box, axis=-1)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """``-beta * U`` inside the box, ``-inf`` outside (unnormalised)."""
        u = self.U(theta)
        return np.where(self.in_box(theta), -self.beta * u, -np.inf)


def layer_sizes(dataset, hidden: Sequence[int]) -> tuple[int, ...]:
    """Layer widths ``(d, *hidden, k)`` of the network on ``dataset`` (a ``data.Dataset``)."""
    return (int(dataset.n_features), *map(int, hidden), int(dataset.n_outputs))


def model_layout(dataset, model_settings: dict):
    """The parameter layout of the ``model`` settings' network on ``dataset``: ``p`` and
    ``names()`` (:func:`lossatlas.model.spec.layout`)."""
    from lossatlas.model import spec

    return spec.layout(dataset, model_settings)


def target_for(
    dataset,
    *,
    hidden: Sequence[int],
    activation: str,
    loss: str,
    box: float,
    beta: float,
    energy: str,
    bias: str = "all",
    layers: Sequence | None = None,
    input_shape: Sequence[int] | None = None,
    python: str | None = None,
):
    """The target of the network ``(d, *hidden, k)`` on ``dataset`` (a ``data.Dataset``):
    its labels, or its float targets ``Y`` for ``loss="mse"``. With ``layers`` (a
    convolutional network) or ``python`` (a user's model) it is JAX's
    (:func:`lossatlas.model.spec.jax_target`)."""
    if (loss == "mse") != (dataset.Y is not None):
        raise ValueError(
            "model.loss mse needs a regression dataset (float targets), and a regression "
            "dataset needs model.loss mse"
        )
    if layers or python:
        from lossatlas.model import spec

        model = {"layers": layers, "input_shape": input_shape, "python": python}
        model.update(activation=activation, loss=loss)
        return spec.jax_target(dataset, model, box=box, beta=beta, energy=energy)
    mlp = MLP(layer_sizes(dataset, hidden), activation=activation, loss=loss, bias=bias)
    labels = dataset.Y if loss == "mse" else dataset.y
    return Target(mlp, dataset.X, labels, box=box, beta=beta, energy=energy)
