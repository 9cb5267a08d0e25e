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

import math
from collections.abc import Sequence
from functools import partial

import numpy as np

from lossatlas.model.activations import ACTIVATIONS, SCALE_DEGREE, SIGN
from lossatlas.model.layout import ParamLayout


def n_params(sizes: Sequence[int]) -> int:
    return ParamLayout(sizes).p


def unpack(theta: np.ndarray, sizes: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Copies ``[(W (n, out, in), b (n, out)), ...]`` of ``theta (n, p)``."""
    return ParamLayout(sizes).unpack(theta)


pack = ParamLayout.pack


def _check(activation: str, loss: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
    if loss not in ("cross_entropy", "squared"):
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
    theta: np.ndarray, sizes: Sequence[int], activation: str = "tanh", loss: str = "cross_entropy"
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
    theta = np.asarray(theta, dtype=np.float64)
    params = unpack(theta, sizes)
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
    return pack(params)


def flat_directions(sizes: Sequence[int], loss: str = "cross_entropy") -> np.ndarray:
    """Orthonormal basis ``(m, p)`` of the exactly flat directions (softmax shift invariance):
    one per column of the last weight matrix plus one for the output bias; none for squared
    loss."""
    layout = ParamLayout(sizes)
    p = layout.p
    if loss != "cross_entropy":
        return np.zeros((0, p))
    last = layout.layers[-1]
    w, b, k, h = last.weights, last.biases, last.n_out, last.n_in
    basis = np.zeros((h + 1, p))
    rows = np.arange(k)
    for j in range(h):
        basis[j, w.start + rows * h + j] = 1 / math.sqrt(k)
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
) -> np.ndarray:
    """A random element of the symmetry group applied to each draw of ``theta (n, p)``:
    permutations, sign flips, positive rescalings (log-uniform in ``scale_range``) and, for
    softmax, a flat shift with entries uniform in ``[-shift, shift]``. Same function, new point.
    """
    _check(activation, loss)
    rng = np.random.default_rng(rng)
    params = unpack(np.asarray(theta, dtype=np.float64), sizes)
    n = params[0][0].shape[0]
    for layer in range(len(params) - 1):
        h = sizes[layer + 1]
        if activation in SCALE_DEGREE:
            lo, hi = np.log(scale_range)
            _rescale(params, layer, np.exp(rng.uniform(lo, hi, size=(n, h))), activation)
        if activation in SIGN:
            _flip(params, layer, rng.random((n, h)) < 0.5, activation)
        _permute(params, layer, np.argsort(rng.random((n, h)), axis=1))
    out = pack(params)
    if loss == "cross_entropy":
        basis = flat_directions(sizes, loss)
        out += rng.uniform(-shift, shift, size=(n, basis.shape[0])) @ basis
    return out


def canonical_transform(sizes: Sequence[int], activation: str, loss: str):
    """Rows ``(m, p)`` -> their canonical forms (:func:`canonicalize`) for the network of layer
    widths ``sizes``."""
    return partial(canonicalize, sizes=tuple(sizes), activation=activation, loss=loss)


def coordinate_transform(coordinates: str, sizes: Sequence[int], activation: str, loss: str):
    """The analysis coordinates ``coordinates``: None (raw) or :func:`canonical_transform`."""
    if coordinates == "raw":
        return None
    return canonical_transform(sizes, activation, loss)
