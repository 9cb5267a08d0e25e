"""Symmetries of an MLP's flat parameter vector, and one canonical point per orbit.

Layout (:mod:`lossatlas.model.layout`): layer by layer ``W_l`` (out x in, row-major) then ``b_l``
(out), for ``sizes = (d, *hidden, k)``. Hidden units of one layer can be permuted; depending on the
activation a unit can also be sign-flipped or rescaled without changing the network's function.
The sign and rescaling facts of each activation are in :mod:`lossatlas.model.activations`.

With a softmax (``loss="cross_entropy"``) adding one vector to every row of the last weight
matrix and one constant to every output bias leaves all outputs' differences, hence the loss,
unchanged: ``sizes[-2] + 1`` exactly flat directions (3 for 2 -> [2, 2] -> 2).

A linear network has the larger symmetry group GL(h) per hidden layer; only its sign and scale
part is fixed here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import partial

import numpy as np
from scipy.optimize import linear_sum_assignment

from lossatlas.model.activations import ACTIVATIONS, SCALE_DEGREE, SIGN
from lossatlas.model.layout import ParamLayout


def n_params(sizes: Sequence[int], bias: str = "all") -> int:
    return ParamLayout(sizes, bias).p


def unpack(
    theta: np.ndarray, sizes: Sequence[int], bias: str = "all"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Copies ``[(W (n, out, in), b (n, out)), ...]`` of ``theta (n, p)`` (zero biases where a
    layer has none)."""
    return ParamLayout(sizes, bias).unpack(theta)


def _check(activation: str, loss: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
    if loss not in ("cross_entropy", "squared", "mse"):
        raise ValueError(f"unknown loss {loss!r}")


def _flip(params, layer, flip, activation):
    """Sign-flip hidden units of ``layer`` where ``flip (n, h)`` is true."""
    W, b = params[layer]
    Wn, bn = params[layer + 1]
    s = np.where(flip, -1.0, 1.0)
    W *= s[:, :, None]
    b *= s
    kind = SIGN[activation]
    if kind == "sigmoid":
        bn += np.einsum("nkh,nh->nk", Wn, flip.astype(Wn.dtype))
    if kind in ("odd", "sigmoid"):
        Wn *= s[:, None, :]


def _rescale(params, layer, scale, activation):
    """Divide incoming weights of ``layer``'s units by ``scale (n, h) > 0``; compensate outside."""
    W, b = params[layer]
    Wn, _ = params[layer + 1]
    W /= scale[:, :, None]
    b /= scale
    Wn *= scale[:, None, :] ** SCALE_DEGREE[activation]


def _permute(params, layer, order):
    """Reorder hidden units of ``layer`` by ``order (n, h)``."""
    W, b = params[layer]
    Wn, bn = params[layer + 1]
    params[layer] = (
        np.take_along_axis(W, order[:, :, None], axis=1),
        np.take_along_axis(b, order, axis=1),
    )
    params[layer + 1] = (np.take_along_axis(Wn, order[:, None, :], axis=2), bn)


def canonicalize(
    theta: np.ndarray,
    sizes: Sequence[int],
    activation: str = "tanh",
    loss: str = "cross_entropy",
    bias: str = "all",
) -> np.ndarray:
    """One representative per symmetry orbit, for draws ``theta (n, p)``; returns ``(n, p)``.

    Per hidden layer, first to last, on each unit's incoming vector ``v = (W_l[j, :], b_l[j])``:
    1. rescaling activations: ``v -> v / |v|`` (dead units with ``v = 0`` stay);
    2. sign-symmetric activations: the first nonzero entry of ``v`` made positive;
    3. units sorted lexicographically by ``v`` (first input weight is the primary key).
    Then, for softmax outputs, the last layer's rows and biases are centred (they sum to zero
    over the classes): the orthogonal projection off :func:`flat_directions`.
    """
    _check(activation, loss)
    layout = ParamLayout(sizes, bias)
    params = layout.unpack(np.asarray(theta, dtype=np.float64))
    for layer in range(len(params) - 1):
        W, b = params[layer]
        if activation in SCALE_DEGREE:
            norm = np.sqrt((W * W).sum(axis=2) + b * b)
            _rescale(params, layer, np.where(norm > 0, norm, 1.0), activation)
        if activation in SIGN:
            v = np.concatenate([W, b[:, :, None]], axis=2)
            first = np.take_along_axis(v, np.argmax(v != 0, axis=2)[:, :, None], axis=2)[..., 0]
            _flip(params, layer, first < 0, activation)
        W, b = params[layer]
        # lexsort: last key is primary, so pass columns reversed (b, W[:, :, -1], ..., W[:, :, 0])
        keys = np.concatenate([b[None], np.moveaxis(W, 2, 0)[::-1]], axis=0)
        _permute(params, layer, np.lexsort(keys, axis=-1))
    if loss == "cross_entropy":
        W, b = params[-1]
        W -= W.mean(axis=1, keepdims=True)
        b -= b.mean(axis=1, keepdims=True)
    return layout.pack(params)


def flat_directions(
    sizes: Sequence[int], loss: str = "cross_entropy", bias: str = "all"
) -> np.ndarray:
    """Orthonormal basis ``(m, p)`` of the exactly flat directions (softmax shift invariance):
    one per column of the last weight matrix plus one for the output bias (if it has one);
    none for squared losses."""
    layout = ParamLayout(sizes, bias)
    p = layout.p
    if loss != "cross_entropy":
        return np.zeros((0, p))
    last = layout.layers[-1]
    w, b, k, h = last.weights, last.biases, last.n_out, last.n_in
    basis = np.zeros((h + last.has_bias, p))
    rows = np.arange(k)
    for j in range(h):
        basis[j, w.start + rows * h + j] = 1 / math.sqrt(k)
    if last.has_bias:
        basis[h, b.start + rows] = 1 / math.sqrt(k)
    return basis


def orbit_size(sizes: Sequence[int], activation: str = "tanh") -> int:
    """Order of the discrete symmetry group (permutations, and sign flips where the activation
    has them): the number of distinct parameter vectors of one generic network's orbit, before
    the continuous symmetries (rescaling, flat directions)."""
    _check(activation, "squared")
    total = 1
    for h in sizes[1:-1]:
        total *= math.factorial(h) * (2**h if activation in SIGN else 1)
    return total


def random_transform(
    theta: np.ndarray,
    sizes: Sequence[int],
    activation: str = "tanh",
    loss: str = "cross_entropy",
    rng: np.random.Generator | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    shift: float = 1.0,
    bias: str = "all",
) -> np.ndarray:
    """A random element of the symmetry group applied to each draw of ``theta (n, p)``:
    permutations, sign flips, positive rescalings (log-uniform in ``scale_range``) and, for
    softmax, a flat shift with entries uniform in ``[-shift, shift]``. Same function, new point.
    """
    _check(activation, loss)
    rng = np.random.default_rng(rng)
    layout = ParamLayout(sizes, bias)
    params = layout.unpack(np.asarray(theta, dtype=np.float64))
    n = params[0][0].shape[0]
    for layer in range(len(params) - 1):
        h = sizes[layer + 1]
        if activation in SCALE_DEGREE:
            lo, hi = np.log(scale_range)
            _rescale(params, layer, np.exp(rng.uniform(lo, hi, size=(n, h))), activation)
        if activation in SIGN:
            _flip(params, layer, rng.random((n, h)) < 0.5, activation)
        _permute(params, layer, np.argsort(rng.random((n, h)), axis=1))
    out = layout.pack(params)
    if loss == "cross_entropy":
        basis = flat_directions(sizes, loss, bias)
        out += rng.uniform(-shift, shift, size=(n, basis.shape[0])) @ basis
    return out


def canonical_transform(sizes: Sequence[int], activation: str, loss: str, bias: str = "all"):
    """Rows ``(m, p)`` -> their canonical forms (:func:`canonicalize`) for the network of layer
    widths ``sizes``."""
    return partial(canonicalize, sizes=tuple(sizes), activation=activation, loss=loss, bias=bias)


def _discrete_options(h: int, activation: str):
    """Per hidden layer of width ``h``: every (order, flip) pair of the discrete group."""
    flips = itertools.product([False, True], repeat=h) if activation in SIGN else [(False,) * h]
    flips = list(flips)
    return [(order, flip) for order in itertools.permutations(range(h)) for flip in flips]


def nearest_copy(
    a: np.ndarray,
    b: np.ndarray,
    sizes: Sequence[int],
    activation: str = "tanh",
    loss: str = "cross_entropy",
    bias: str = "all",
    max_enumerate: int = 4096,
) -> tuple[np.ndarray, str]:
    """The copy of ``b (p,)`` under the network's symmetry group nearest to ``a (p,)`` (the
    same function as ``b``), and how it was found. Hidden-unit permutations and sign flips:
    the whole discrete group when it has at most ``max_enumerate`` elements
    (:func:`orbit_size`), else layer by layer, first to last, an optimal assignment
    (``scipy.optimize.linear_sum_assignment``) of ``b``'s units to ``a``'s on their incoming
    and outgoing weights. Then, for softmax outputs, the exactly flat shift toward ``a``.
    Positive rescaling (relu, linear, quadratic) is not searched."""
    a = np.asarray(a, dtype=np.float64)
    layout = ParamLayout(sizes, bias)
    hidden = list(sizes[1:-1])
    if orbit_size(sizes, activation) <= max_enumerate:
        method = "whole group"
        options = [_discrete_options(h, activation) for h in hidden]
        combos = list(itertools.product(*options))
        params = layout.unpack(np.repeat(np.asarray(b, dtype=np.float64)[None], len(combos), 0))
        for layer in range(len(hidden)):
            if activation in SIGN:
                _flip(params, layer, np.array([c[layer][1] for c in combos], bool), activation)
            _permute(params, layer, np.array([c[layer][0] for c in combos], dtype=np.int64))
        copies = layout.pack(params)
        best = copies[int(np.argmin(((copies - a) ** 2).sum(axis=1)))]
    else:
        method = "assignment per layer"
        best = _assigned_copy(a, np.asarray(b, dtype=np.float64), layout, activation)
    if loss == "cross_entropy":
        basis = flat_directions(sizes, loss, bias)
        best = best + ((a - best) @ basis.T) @ basis
    return best, method


def _assigned_copy(a, b, layout: ParamLayout, activation: str) -> np.ndarray:
    pa, pb = layout.unpack(a[None]), layout.unpack(b[None])
    n_hidden = len(layout.sizes) - 2
    for layer in range(n_hidden):
        (Wa, ba), (Wna, _) = pa[layer], pa[layer + 1]
        (Wb, bb), (Wnb, _) = pb[layer], pb[layer + 1]
        # incoming weights are aligned once the layers before are; outgoing ones only into
        # the output layer, whose units never move
        inc_a = np.concatenate([Wa[0], ba[0][:, None]], axis=1)
        inc_b = np.concatenate([Wb[0], bb[0][:, None]], axis=1)
        last = layer == n_hidden - 1
        out_a = Wna[0].T if last else np.zeros((len(inc_a), 0))
        out_b = Wnb[0].T if last else np.zeros((len(inc_b), 0))
        cost = unit_cost(inc_a, out_a, inc_b, out_b)
        flipped = None
        if activation in SIGN:
            sign_out = -1.0 if SIGN[activation] in ("odd", "sigmoid") else 1.0
            flipped = unit_cost(inc_a, out_a, -inc_b, sign_out * out_b)
            cost = np.minimum(cost, flipped)
        rows, cols = linear_sum_assignment(cost)
        if flipped is not None:
            flip = np.zeros((1, len(cols)), dtype=bool)
            flip[0, cols] = flipped[rows, cols] < unit_cost(inc_a, out_a, inc_b, out_b)[rows, cols]
            _flip(pb, layer, flip, activation)
        order = np.empty(len(cols), dtype=np.int64)
        order[rows] = cols
        _permute(pb, layer, order[None])
    return layout.pack(pb)[0]


def unit_cost(inc_a, out_a, inc_b, out_b) -> np.ndarray:
    """Squared distance between unit u of a and unit v of b, incoming and outgoing weights."""
    incoming = ((inc_a[:, None] - inc_b[None]) ** 2).sum(-1)
    return incoming + ((out_a[:, None] - out_b[None]) ** 2).sum(-1)
