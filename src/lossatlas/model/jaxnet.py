"""Networks evaluated by JAX (the optional ``jax`` extra): convolutional networks built from a
list of layers, and the report's MLP, as one flat parameter vector with a name per coordinate;
their energy, its gradient (``jax.grad``) and Hessian-vector products (``jax.jvp`` of the
gradient), compiled once and mapped over a batch of chains (``jax.vmap``).

Layers, in order, on inputs of shape ``input_shape`` (channels last, as in the data files:
``(length, channels)`` or ``(height, width, channels)``):

- :class:`Conv` ``(channels, kernel, stride)``: a 1-D or 2-D convolution ("valid" padding) with
  a bias, then the activation;
- :class:`Pool` ``(size, kind)``: non-overlapping ``avg`` or ``max`` pooling;
- :class:`Flatten`: channel-major, so the positions of one channel are contiguous;
- :class:`Dense` ``(units)``: a fully connected layer with a bias, then the activation, except
  the last layer, whose outputs are the logits (or the regression outputs).

The flat vector holds, layer by layer, the weights then the biases: a convolution's weights as
``(out channel, in channel, *kernel)`` row-major, named ``conv1.w[o,i,t]`` (``[o,i,r,c]`` in 2-D)
and ``conv1.b[o]``; a dense layer's as ``(out, in)``, named ``dense3.W[i,j]`` and ``dense3.b[i]``.
The numbering counts every layer, pooling and flattening included. The report's MLP
``(d, *hidden, k)`` is the network of dense layers alone, with :class:`~lossatlas.model.layout.
ParamLayout`'s layout and names (``W1[i,j]``, ``b1[i]``), so the two backends' vectors are the
same points.

The symmetries of a convolutional network (:func:`canonicalize`) are those of its hidden units,
with a channel in place of a unit: the channels of a hidden convolution can be permuted, and
flipped in sign where the activation is odd and no max pooling lies between it and the next
layer with weights (max pooling does not commute with a sign change).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lossatlas.model.activations import ACTIVATIONS, SIGN, act

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # the optional extra is not installed: say so where it is asked for
    jax = jnp = None

__all__ = [
    "Conv",
    "ConvNet",
    "Dense",
    "Flatten",
    "JaxEnergy",
    "JaxTarget",
    "Network",
    "Pool",
    "PytreeNet",
    "available",
    "canonicalize",
    "load_model",
    "mlp",
    "mlp_layers",
    "target_of",
    "transform",
]

LOSSES = ("cross_entropy", "squared", "mse")


def available() -> bool:
    """Whether JAX is installed (``pip install -e ".[jax]"``)."""
    return jax is not None


def _need_jax() -> None:
    if jax is None:
        raise ImportError('this network needs JAX: install the extra with pip install -e ".[jax]"')


def in_x64(fn):
    """``fn`` run with JAX's 64-bit types on (float64, as the other backends), for its call
    only: the process's own JAX code keeps its default of 32 bits."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        _need_jax()
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapped


@dataclass(frozen=True)
class Conv:
    channels: int
    kernel: tuple[int, ...]
    stride: int = 1


@dataclass(frozen=True)
class Pool:
    size: int
    kind: str = "avg"


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class Dense:
    units: int


Layer = Conv | Pool | Flatten | Dense


@dataclass(frozen=True)
class Block:
    """One layer with weights: where its weights and biases sit in the flat vector, their
    shapes, and its place in the layer list."""

    index: int  # position in the layer list
    name: str
    weights: slice
    biases: slice
    w_shape: tuple[int, ...]  # (out, in, *kernel) or (out, in)
    in_shape: tuple[int, ...]  # what the layer reads (channels first), one data point
    out_shape: tuple[int, ...]  # what it writes (channels first), one data point


def mlp_layers(sizes: Sequence[int]) -> tuple[Dense, ...]:
    """The dense layers of the MLP ``(d, *hidden, k)``."""
    return tuple(Dense(int(k)) for k in sizes[1:])


class Network:
    """What every network JAX evaluates shares: its loss on outputs ``(n, k)`` and its energy
    on data. A subclass gives ``p``, ``names()``, ``forward(theta, X)`` and ``loss``."""

    loss: str

    def point_losses(self, out, y):
        """Per-point loss ``(n,)`` of outputs ``(n, k)`` against labels (or float targets)."""
        if self.loss == "cross_entropy":
            return jax.nn.logsumexp(out, axis=1) - jnp.take_along_axis(out, y[:, None], 1)[:, 0]
        target = y if self.loss == "mse" else jax.nn.one_hot(y, out.shape[1], dtype=out.dtype)
        return jnp.sum((out - target) ** 2, axis=1)

    @in_x64
    def energy_fn(self, X, y, energy: str = "sum"):
        """``U(theta)`` of one parameter vector on the data ``X``, ``y``: the summed
        (``energy="sum"``) or mean per-point loss, a pure JAX function of float64 arrays (call
        and trace it where 64-bit types are on: :func:`in_x64`)."""
        X = jnp.asarray(X, dtype=jnp.float64)
        y = jnp.asarray(y, dtype=jnp.float64 if self.loss == "mse" else jnp.int32)
        scale = 1.0 / X.shape[0] if energy == "mean" else 1.0

        def U(theta):
            return scale * jnp.sum(self.point_losses(self.forward(theta, X), y))

        return U


class ConvNet(Network):
    """The network of ``layers`` on inputs of ``input_shape`` (channels last), with
    ``activation`` after every layer with weights but the last, and ``loss`` on its outputs.
    ``mlp_names``: name the parameters as :class:`~lossatlas.model.layout.ParamLayout` does
    (for the report's MLP, dense layers only)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        layers: Sequence[Layer],
        activation: str = "tanh",
        loss: str = "cross_entropy",
        mlp_names: bool = False,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.layers = tuple(layers)
        self.activation, self.loss, self._mlp_names = activation, loss, mlp_names
        self.blocks = self._plan()
        if not self.layers or not isinstance(self.layers[-1], Dense):
            raise ValueError("the last layer must be Dense (its outputs are the network's)")

    # -- layout -----------------------------------------------------------------------------

    def _plan(self) -> tuple[Block, ...]:
        """Walk the layers once: every shape, and the flat slices of the weights."""
        *spatial, channels = self.input_shape
        shape = (channels, *spatial)  # channels first from here on
        blocks, off, dense_number = [], 0, 0
        for index, layer in enumerate(self.layers, start=1):
            if isinstance(layer, Conv):
                kernel = tuple(int(k) for k in layer.kernel)
                if len(kernel) != len(shape) - 1:
                    raise ValueError(
                        f"layer {index}: a {len(kernel)}-D kernel on {len(shape) - 1}-D inputs"
                    )
                sides = zip(shape[1:], kernel, strict=True)
                out = tuple((s - k) // layer.stride + 1 for s, k in sides)
                if min(out) < 1:
                    raise ValueError(f"layer {index}: kernel {kernel} larger than input {shape}")
                w_shape, new = (layer.channels, shape[0], *kernel), (layer.channels, *out)
                name = f"conv{index}"
            elif isinstance(layer, Dense):
                if len(shape) != 1:
                    raise ValueError(f"layer {index}: Dense on {shape}: put Flatten before it")
                w_shape, new = (layer.units, shape[0]), (layer.units,)
                dense_number += 1
                name = f"dense{index}"
            elif isinstance(layer, Pool):
                if layer.kind not in ("avg", "max"):
                    raise ValueError(f"layer {index}: pool kind {layer.kind!r}: avg or max")
                if len(shape) < 2:
                    raise ValueError(f"layer {index}: pooling needs positions, not {shape}")
                shape = (shape[0], *(s // layer.size for s in shape[1:]))
                if min(shape[1:]) < 1:
                    raise ValueError(f"layer {index}: pool {layer.size} larger than its input")
                continue
            elif isinstance(layer, Flatten):
                shape = (math.prod(shape),)
                continue
            else:
                raise TypeError(f"layer {index}: unknown layer {layer!r}")
            n_w = math.prod(w_shape)
            if self._mlp_names:
                name = str(dense_number)
            weights, biases = slice(off, off + n_w), slice(off + n_w, off + n_w + w_shape[0])
            blocks.append(Block(index - 1, name, weights, biases, w_shape, shape, new))
            off, shape = biases.stop, new
        return tuple(blocks)

    @property
    def p(self) -> int:
        return self.blocks[-1].biases.stop

    @property
    def n_outputs(self) -> int:
        return self.blocks[-1].w_shape[0]

    def names(self) -> list[str]:
        """Parameter names in flat order."""
        out = []
        for b in self.blocks:
            w, bias = (
                (f"W{b.name}", f"b{b.name}")
                if self._mlp_names
                else (f"{b.name}.{'w' if len(b.w_shape) > 2 else 'W'}", f"{b.name}.b")
            )
            out += [f"{w}[{','.join(map(str, i))}]" for i in np.ndindex(*b.w_shape)]
            out += [f"{bias}[{i}]" for i in range(b.w_shape[0])]
        return out

    def flops_per_point(self) -> int:
        """Multiply-adds of one forward pass on one data point."""
        return sum(math.prod(b.w_shape) * math.prod(b.out_shape[1:]) for b in self.blocks)

    # -- evaluation (JAX) -------------------------------------------------------------------

    @in_x64
    def forward(self, theta, X):
        """Outputs ``(n, k)`` of one parameter vector ``theta (p,)`` on inputs ``X (n, ...)``
        (channels last, or flat rows of ``prod(input_shape)``)."""
        x = jnp.reshape(X, (X.shape[0], *self.input_shape))
        x = jnp.moveaxis(x, -1, 1)  # channels first
        by_index = {b.index: b for b in self.blocks}
        last = self.blocks[-1].index
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Pool):
                x = self._pool(x, layer)
            elif isinstance(layer, Flatten):
                x = jnp.reshape(x, (x.shape[0], -1))
            else:
                b = by_index[i]
                w = jnp.reshape(theta[b.weights], b.w_shape)
                if isinstance(layer, Conv):
                    x = _conv(x, w, layer.stride, b.out_shape[1:])
                    x = x + jnp.reshape(theta[b.biases], (1, -1) + (1,) * (x.ndim - 2))
                else:
                    x = x @ w.T + theta[b.biases]
                if i != last:
                    x = act(self.activation, x, jnp)
        return x

    def _pool(self, x, layer: Pool):
        window = (1, 1, *(layer.size,) * (x.ndim - 2))
        # non-overlapping windows; trailing positions that do not fill one are dropped
        keep = tuple(slice(0, (s // layer.size) * layer.size) for s in x.shape[2:])
        x = x[(slice(None), slice(None), *keep)]
        if layer.kind == "max":
            return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID")
        return total / layer.size ** (x.ndim - 2)


def _conv(x, w, stride: int, out: tuple[int, ...]):
    """Cross-correlation ("valid") of ``x (n, in, *positions)`` with ``w (out, in, *kernel)``
    as one contraction over the kernel's shifted views of ``x``. Mapped over chains it is a
    batched matrix product: 5.6 times faster on CPU than ``lax.conv_general_dilated``, which
    a ``vmap`` over the weights turns into a grouped convolution (1-D, 8 chains, 1,000
    points)."""
    kernel = w.shape[2:]
    views = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(
            slice(o, o + stride * (m - 1) + 1, stride) for o, m in zip(offset, out, strict=True)
        )
        views.append(x[(slice(None), slice(None), *index)])
    patches = jnp.stack(views, axis=-1)  # (n, in, *out, prod(kernel))
    spatial = "hwd"[: len(out)]
    w = jnp.reshape(w, (*w.shape[:2], -1))
    return jnp.einsum(f"nc{spatial}k,ock->no{spatial}", patches, w)


class PytreeNet(Network):
    """A user's network: ``apply(params, X) -> outputs (n, k)`` on a parameter pytree, with its
    initial ``params`` fixing the tree. The flat vector is ``jax.flatten_util.ravel_pytree``'s
    (leaves in the tree's order, each row-major); each coordinate is named from its leaf's
    path, ``layer.kernel[0,1]``. A user's network has no known symmetry group."""

    @in_x64
    def __init__(self, apply, params, loss: str = "cross_entropy"):
        from jax.flatten_util import ravel_pytree

        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}")
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        for path, leaf in leaves:
            if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
                raise ValueError(
                    f"parameter {_path_name(path)} is {jnp.asarray(leaf).dtype}, not float: "
                    "every leaf of the parameters must be a float array"
                )
        # float64 throughout, as every other backend samples (Flax initialises float32)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        flat, self._unravel = ravel_pytree(params)
        self.apply, self.loss, self.p = apply, loss, int(flat.size)
        self.initial = np.asarray(flat, dtype=np.float64)
        self._names = [
            f"{_path_name(path)}[{','.join(map(str, i))}]" if np.ndim(leaf) else _path_name(path)
            for path, leaf in leaves
            for i in np.ndindex(*np.shape(leaf))
        ]

    def names(self) -> list[str]:
        return list(self._names)

    def forward(self, theta, X):
        return self.apply(self._unravel(theta), X)


def _path_name(path) -> str:
    """``layer.kernel`` for the pytree path of a leaf (dict keys, attributes, indices)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    if len(parts) > 1 and parts[-1] == "value":  # a Flax NNX variable's array
        parts.pop()
    return ".".join(parts)


def load_model(spec: str, X, n_outputs: int, loss: str = "cross_entropy") -> PytreeNet:
    """The user's network ``"package.module:factory"``: ``factory()`` returns ``(apply,
    params)``, an Equinox module or a Flax module (NNX, or Linen, initialised on ``X[:1]``).
    Checked before any sampling, each failure a one-line :class:`ValueError` that names the
    model and what is wrong: not importable, failing, not a model, parameters not float, or
    outputs of another shape than the data's ``(n, n_outputs)``."""
    import importlib

    _need_jax()
    where, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(where), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f"model.python: {spec}: cannot import it ({e}); give package.module:factory"
        ) from None
    X = np.asarray(X, dtype=np.float64)
    try:
        returned = factory()
        made = _apply_and_params(returned, X[:1])
        net = PytreeNet(*made, loss=loss) if made else None
    except ValueError as e:
        raise ValueError(f"model.python: {spec}: {e}") from None
    except Exception as e:  # a user's code: whatever it raises is reported, in one line
        raise ValueError(f"model.python: {spec}: {type(e).__name__}: {e}") from None
    if net is None:
        raise ValueError(
            f"model.python: {spec}: the factory must return (apply, params), an Equinox module "
            f"or a Flax module, got {type(returned).__name__}"
        )
    try:
        with jax.enable_x64(True):
            out = np.shape(net.forward(jnp.asarray(net.initial), jnp.asarray(X[:2])))
    except Exception as e:
        raise ValueError(
            f"model.python: {spec}: fails on the data's inputs, shape {X[:2].shape} "
            f"({type(e).__name__}: {e})"
        ) from None
    want = (min(2, len(X)), int(n_outputs))
    if out != want:
        raise ValueError(
            f"model.python: {spec}: outputs of shape {out} on {want[0]} points; the data "
            f"needs {want}"
        )
    return net


def _apply_and_params(made, x1: np.ndarray):
    """``(apply, params)`` of what a factory returned (None: not a model). An Equinox module
    maps one example, so its apply maps it over the points; a Flax Linen module is initialised
    on one input, with key 0 (only the tree's shapes matter: chains start in the box)."""
    if isinstance(made, tuple) and len(made) == 2 and callable(made[0]):
        return made
    if _is_instance(made, "equinox", "Module"):
        import equinox as eqx

        params, static = eqx.partition(made, eqx.is_inexact_array)
        return (lambda p, X: jax.vmap(eqx.combine(p, static))(X)), params
    if _is_instance(made, "flax.nnx", "Module"):
        from flax import nnx

        # the parameters are sampled; other state (batch statistics, RNG counts) stays fixed
        graph, params, rest = nnx.split(made, nnx.Param, ...)
        return (lambda p, X: nnx.merge(graph, p, rest)(X)), params
    if _is_instance(made, "flax.linen", "Module"):
        variables = made.init(jax.random.key(0), jnp.asarray(x1, jnp.float32))
        if set(variables) == {"params"}:  # name the weights, not their collection
            return (lambda p, X: made.apply({"params": p}, X)), variables["params"]
        return made.apply, variables
    return None


def _is_instance(obj, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module`` if it is not loaded (a user
    whose model is an Equinox module need not have Flax)."""
    import sys

    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(obj, cls)


# What one compiled call over chains may hold in activations (a Laplace null asks U of 32,768
# points at once: 38 GB on MNIST-1D in one call).
CHUNK_BYTES = 256 << 20


def chunk_of(net: Network, n_points: int, grad: bool = False) -> int:
    """Chains per compiled call within :data:`CHUNK_BYTES`: a chain's activations on the data
    in float64, kept again for the backward pass when ``grad`` (for a user's network, whose
    activations are not known, twice its parameter count per point: a guess)."""
    if isinstance(net, ConvNet):
        per_point = math.prod(net.input_shape) + sum(math.prod(b.out_shape) for b in net.blocks)
    else:
        per_point = 2 * net.p
    per_chain = 8 * n_points * per_point * (3 if grad else 1)
    return max(1, CHUNK_BYTES // per_chain)


def on_chunks(fn, theta: np.ndarray, chunk: int, *args):
    """``fn`` (compiled over a leading chain axis) of ``theta (m, ...)`` in chunks of ``chunk``
    chains, the last padded to a full chunk so that one compiled shape serves every call; numpy
    results, as one call's would be."""
    theta = np.asarray(theta, dtype=np.float64)
    m = len(theta)
    if m <= chunk:
        return jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(theta), *args))
    parts = []
    for start in range(0, m, chunk):
        part = theta[start : start + chunk]
        short = chunk - len(part)
        if short:
            part = np.concatenate([part, np.repeat(part[-1:], short, axis=0)])
        out = jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(part), *args))
        parts.append(jax.tree_util.tree_map(lambda a, n=chunk - short: a[:n], out))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)


class JaxEnergy:
    """The energy of a :class:`Network` (a :class:`ConvNet`, or a user's :class:`PytreeNet`) on
    data, over a batch of chains: ``U``, ``U_and_grad`` and ``hvp``, each compiled once
    (``jax.jit`` of ``jax.vmap``) and taking and returning numpy arrays, as
    :class:`lossatlas.model.Target`'s do; ``energy_of``: U of one vector, a pure JAX function
    (for the compiled kernels)."""

    @in_x64
    def __init__(self, net: Network, X, y, energy: str = "sum"):
        self.net, self.n_points = net, int(np.shape(X)[0])
        self.energy_of = U = net.energy_fn(X, y, energy)
        self._U = jax.jit(jax.vmap(U))
        self._U_and_grad = jax.jit(jax.vmap(jax.value_and_grad(U)))
        grad = jax.grad(U)
        self._hvp = jax.jit(lambda t, v: jax.jvp(grad, (t,), (v,))[1])
        # chains per compiled call, the data being fixed
        self._chunk = chunk_of(net, self.n_points)
        self._chunk_grad = chunk_of(net, self.n_points, grad=True)

    @property
    def p(self) -> int:
        return self.net.p

    @in_x64
    def U(self, theta: np.ndarray) -> np.ndarray:
        """Energy ``(n_chains,)`` of ``theta (n_chains, p)``."""
        return on_chunks(self._U, theta, self._chunk)

    @in_x64
    def U_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy ``(n_chains,)`` and its gradient ``(n_chains, p)``."""
        return on_chunks(self._U_and_grad, theta, self._chunk_grad)

    @in_x64
    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of U at one point ``theta (p,)`` times ``v (p,)``, exactly (forward over
        reverse differentiation), for ``eigsh`` where the Hessian is too large to form."""
        return np.asarray(self._hvp(jnp.asarray(theta, jnp.float64), jnp.asarray(v, jnp.float64)))


def n_outputs_of(net: Network, X: np.ndarray) -> int:
    """Outputs per point of ``net`` on inputs like ``X``."""
    if isinstance(net, ConvNet):
        return net.n_outputs
    return int(np.shape(net.forward(jnp.asarray(net.initial), jnp.asarray(X[:1])))[-1])


class NetworkOnChains:
    """A JAX :class:`Network` as every analysis sees a network (as
    :class:`lossatlas.model.MLP` is seen): ``forward(theta (m, p), X) -> (m, n, k)`` in numpy,
    compiled once over the chains, with its ``loss``, ``n_outputs``, ``names``, ``symmetry``
    (None: no known group), ``canonical_transform`` and ``nearest_copy``."""

    def __init__(self, net: Network, n_outputs: int):
        self.net, self.loss, self.p, self.n_outputs = net, net.loss, net.p, int(n_outputs)
        self.symmetry = (
            "channel and hidden-unit permutations and sign flips"
            if isinstance(net, ConvNet)
            else None
        )
        self._forward = jax.jit(jax.vmap(net.forward, in_axes=(0, None)))

    def names(self) -> list[str]:
        return self.net.names()

    @in_x64
    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return on_chunks(
            self._forward, theta, chunk_of(self.net, len(X)), jnp.asarray(X, jnp.float64)
        )

    def canonical_transform(self):
        """``points (m, p) -> (m, p)`` (:func:`canonicalize`); None without a known group."""
        return functools.partial(canonicalize, self.net) if self.symmetry else None

    def nearest_copy(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
        """:func:`nearest_copy`; ``b`` itself without a known group."""
        if not self.symmetry:
            return np.asarray(b, dtype=np.float64), "none (no known symmetry group)"
        return nearest_copy(self.net, a, b)


class JaxTarget(JaxEnergy):
    """The density ``exp(-beta * U(theta))`` on the box ``[-box, box]^p`` of a :class:`ConvNet`
    on data: :class:`lossatlas.model.Target`'s interface (``U``, ``U_and_grad``, ``mean_loss``,
    ``in_box``, ``log_density``, ``box``, ``beta``, ``p``, ``n_points``), so that every kernel
    of :mod:`lossatlas.sampling` runs on it."""

    @in_x64
    def __init__(self, net: Network, X, y, box: float = 10.0, beta: float = 1.0, energy="sum"):
        super().__init__(net, X, y, energy)
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.box, self.beta, self.energy = float(box), float(beta), energy
        self.network = NetworkOnChains(net, n_outputs_of(net, self.X))

    def mean_loss(self, U: np.ndarray) -> np.ndarray:
        """Mean per-point loss of energies ``U``."""
        return np.asarray(U) / self.n_points if self.energy == "sum" else np.asarray(U)

    def in_box(self, theta: np.ndarray) -> np.ndarray:
        return np.all(np.abs(theta) <= self.box, axis=-1)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """``-beta * U`` inside the box, ``-inf`` outside (unnormalised)."""
        return np.where(self.in_box(theta), -self.beta * self.U(theta), -np.inf)


def target_of(target) -> JaxTarget:
    """The JAX twin of an MLP :class:`lossatlas.model.Target`: the same network, data, box,
    beta and energy, on the same flat vector (every layer with a bias)."""
    m = target.mlp
    if m.bias != "all":
        raise ValueError("the JAX MLP has a bias on every layer; use model.bias: all")
    net = mlp(m.sizes, m.activation, m.loss)
    return JaxTarget(net, target.X, target.y, target.box, target.beta, target.energy)


# -- symmetries ------------------------------------------------------------------------------


def _between(net: ConvNet, k: int) -> list[Layer]:
    """The layers without weights between block ``k`` and block ``k + 1``."""
    return list(net.layers[net.blocks[k].index + 1 : net.blocks[k + 1].index])


def flippable(net: ConvNet, k: int) -> bool:
    """Whether block ``k``'s channels (or units) may change sign: an odd activation, and no
    max pooling before the next layer with weights."""
    return SIGN.get(net.activation) == "odd" and not any(
        isinstance(x, Pool) and x.kind == "max" for x in _between(net, k)
    )


def _unit_views(net: ConvNet, theta: np.ndarray, k: int):
    """Copies of block ``k``'s incoming vectors ``(n, units, fan_in + 1)`` (weights, bias) and of
    block ``k + 1``'s weights grouped by block ``k``'s units ``(n, out, units, block)``."""
    n, b, nxt = theta.shape[0], net.blocks[k], net.blocks[k + 1]
    units = b.w_shape[0]
    own = np.concatenate(
        [theta[:, b.weights].reshape(n, units, -1), theta[:, b.biases][:, :, None]], axis=2
    )
    # the next layer reads each unit's outputs as one contiguous group: an input channel of a
    # convolution, or (after a channel-major Flatten) a run of positions of a dense layer's row
    following = theta[:, nxt.weights].reshape(n, nxt.w_shape[0], units, -1)
    return own, following


def transform(net: ConvNet, theta: np.ndarray, k: int, order=None, signs=None) -> np.ndarray:
    """``theta (n, p)`` with block ``k``'s units reordered by ``order (n, units)`` (new unit u
    is old unit ``order[:, u]``) and multiplied by ``signs (n, units)`` of +-1 (only where
    :func:`flippable`), the next layer compensating: the same function, a new array."""
    theta = np.array(theta, dtype=np.float64)
    own, following = _unit_views(net, theta, k)
    if signs is not None:
        if not flippable(net, k) and np.any(np.asarray(signs) < 0):
            raise ValueError(f"block {k}: its units cannot change sign ({net.activation})")
        own *= signs[:, :, None]
        following *= signs[:, None, :, None]
    if order is not None:
        own = np.take_along_axis(own, order[:, :, None], axis=1)
        following = np.take_along_axis(following, order[:, None, :, None], axis=2)
    n, b, nxt = theta.shape[0], net.blocks[k], net.blocks[k + 1]
    theta[:, b.weights] = own[:, :, :-1].reshape(n, -1)
    theta[:, b.biases] = own[:, :, -1]
    theta[:, nxt.weights] = following.reshape(n, -1)
    return theta


def _class_shift(net: ConvNet, d: np.ndarray) -> np.ndarray:
    """The part of ``d (n, p)`` along the softmax's flat directions: each output layer row
    and bias replaced by their mean over the classes, zero elsewhere (the loss does not see a
    shift common to every class)."""
    shift, out, n = np.zeros_like(d), net.blocks[-1], d.shape[0]
    for part in (out.weights, out.biases):
        rows = d[:, part].reshape(n, net.n_outputs, -1)
        shift[:, part] = np.broadcast_to(rows.mean(axis=1, keepdims=True), rows.shape).reshape(
            n, -1
        )
    return shift


def canonicalize(net: ConvNet, theta: np.ndarray) -> np.ndarray:
    """One representative per orbit of the channel and unit symmetries, for ``theta (n, p)``:
    per hidden block, first to last, each unit's incoming vector (weights, bias) gets its first
    nonzero entry positive (where :func:`flippable`), then the units are sorted
    lexicographically by it. For softmax outputs the last layer's rows and biases are centred
    over the classes (the loss does not see a shift common to every class)."""
    theta = np.array(theta, dtype=np.float64)
    for k in range(len(net.blocks) - 1):
        own, _ = _unit_views(net, theta, k)
        signs = None
        if flippable(net, k):
            first = np.take_along_axis(own, np.argmax(own != 0, axis=2)[:, :, None], axis=2)
            signs = np.where(first[..., 0] < 0, -1.0, 1.0)
            own = own * signs[:, :, None]
        order = np.lexsort(np.moveaxis(own, 2, 0)[::-1], axis=-1)
        theta = transform(net, theta, k, order=order, signs=signs)
    if net.loss == "cross_entropy":
        theta -= _class_shift(net, theta)
    return theta


def nearest_copy(net: ConvNet, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
    """The copy of ``b (p,)`` under the channel and unit symmetries nearest to ``a (p,)`` (the
    same function as ``b``), and how it was found: block by block, first to last, an optimal
    assignment (``scipy.optimize.linear_sum_assignment``) of ``b``'s channels to ``a``'s on
    their incoming weights and bias (and, into the output layer, their outgoing weights), each
    channel also compared sign-flipped where :func:`flippable`; then, for softmax outputs, the
    exactly flat shift of every class toward ``a``. As the MLP's
    :func:`lossatlas.model.symmetry.nearest_copy` does for hidden units."""
    from scipy.optimize import linear_sum_assignment

    from lossatlas.model.symmetry import unit_cost

    a = np.asarray(a, dtype=np.float64)[None]
    best = np.asarray(b, dtype=np.float64)[None]
    last = len(net.blocks) - 2
    for k in range(last + 1):
        own_a, next_a = _unit_views(net, a, k)
        own_b, next_b = _unit_views(net, best, k)
        # outgoing weights align only into the output layer, whose units never move
        out_a = next_a[0].transpose(1, 0, 2).reshape(len(own_a[0]), -1) if k == last else None
        out_b = next_b[0].transpose(1, 0, 2).reshape(len(own_b[0]), -1) if k == last else None
        if out_a is None:
            out_a = out_b = np.zeros((len(own_a[0]), 0))
        cost = unit_cost(own_a[0], out_a, own_b[0], out_b)
        flipped = unit_cost(own_a[0], out_a, -own_b[0], -out_b) if flippable(net, k) else None
        rows, cols = linear_sum_assignment(cost if flipped is None else np.minimum(cost, flipped))
        order = np.empty(len(cols), dtype=np.int64)
        order[rows] = cols
        signs = None
        if flipped is not None:
            signs = np.where(flipped[rows, cols] < cost[rows, cols], -1.0, 1.0)[None]
            signs = signs[:, np.argsort(order)]  # by b's channel, as transform applies them
        best = transform(net, best, k, order=order[None], signs=signs)
    if net.loss == "cross_entropy":
        best += _class_shift(net, a - best)
    return best[0], "assignment per block"


@functools.cache
def _cached_mlp(sizes: tuple[int, ...], activation: str, loss: str) -> ConvNet:
    return ConvNet((sizes[0],), mlp_layers(sizes), activation, loss, mlp_names=True)


def mlp(sizes: Sequence[int], activation: str = "tanh", loss: str = "cross_entropy") -> ConvNet:
    """The report's MLP ``(d, *hidden, k)`` (biases on every layer) as a :class:`ConvNet` of
    dense layers, its vector and names those of :class:`~lossatlas.model.layout.ParamLayout`."""
    return _cached_mlp(tuple(int(s) for s in sizes), activation, loss)
