"""The flat parameter vector of an MLP: one layout for the model, its symmetries, the dataset
transforms' parameter maps, the views and the compiled kernels.

For ``sizes = (d, *hidden, k)`` the vector holds, layer by layer, ``W_l`` (out x in,
row-major) then ``b_l`` (out): p = 18 for 2 -> [2, 2] -> 2. Names read ``W1[i,j]`` (row i =
output unit, column j = input) and ``b1[i]``. ``bias`` says which layers have a bias:
``all`` (the default), ``hidden`` (none on the output layer) or ``none``; a layer without one
has an empty ``biases`` slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

BIASES = ("all", "hidden", "none")


@dataclass(frozen=True)
class Layer:
    """Where one layer's weights and biases sit in the flat vector."""

    weights: slice
    biases: slice
    n_out: int
    n_in: int

    @property
    def has_bias(self) -> bool:
        return self.biases.stop > self.biases.start


@dataclass(frozen=True)
class ParamLayout:
    """The flat layout of the network with layer widths ``sizes``."""

    sizes: tuple[int, ...]
    bias: str = "all"

    def __init__(self, sizes: Sequence[int], bias: str = "all"):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be (d, *hidden, k) with positive widths, got {sizes}")
        if bias not in BIASES:
            raise ValueError(f"unknown bias {bias!r}; use one of {BIASES}")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "bias", bias)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        out, off = [], 0
        last = len(self.sizes) - 2
        for index, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            w = slice(off, off + n_out * n_in)
            off += n_out * n_in
            n_bias = n_out if self.bias == "all" or (self.bias == "hidden" and index < last) else 0
            out.append(Layer(w, slice(off, off + n_bias), n_out, n_in))
            off += n_bias
        return tuple(out)

    @property
    def has_all_biases(self) -> bool:
        return all(s.has_bias for s in self.layers)

    @property
    def p(self) -> int:
        return self.layers[-1].biases.stop

    def names(self) -> list[str]:
        """Parameter names in flat order."""
        names = []
        for number, layer in enumerate(self.layers, start=1):
            names += [f"W{number}[{i},{j}]" for i in range(layer.n_out) for j in range(layer.n_in)]
            names += [f"b{number}[{i}]" for i in range(layer.biases.stop - layer.biases.start)]
        return names

    def _check(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta)
        if theta.ndim != 2 or theta.shape[1] != self.p:
            raise ValueError(
                f"theta must be (n, {self.p}) for sizes {self.sizes}, got {theta.shape}"
            )
        return theta

    def views(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``[(W (n, out, in), b (n, out or 0)), ...]`` of ``theta (n, p)``."""
        n = theta.shape[0]
        return [
            (theta[:, s.weights].reshape(n, s.n_out, s.n_in), theta[:, s.biases])
            for s in self.layers
        ]

    def unpack(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies ``[(W (n, out, in), b (n, out)), ...]`` of ``theta (n, p)``; a layer without
        a bias gets zeros, so that symmetry maps treat every layer alike."""
        theta = self._check(theta)
        return [
            (W.copy(), b.copy() if s.has_bias else np.zeros((theta.shape[0], s.n_out), W.dtype))
            for s, (W, b) in zip(self.layers, self.views(theta), strict=True)
        ]

    def pack(self, params: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Inverse of :meth:`unpack` (the zero biases of layers without one are dropped)."""
        n = params[0][0].shape[0]
        parts = []
        for s, (W, b) in zip(self.layers, params, strict=True):
            parts += [W.reshape(n, -1)] + ([b.reshape(n, -1)] if s.has_bias else [])
        return np.concatenate(parts, axis=1)

    def table(self) -> np.ndarray:
        """``(n_layers, 4)`` int64 rows ``[weights start, biases start, n_out, n_in]``, the
        form the compiled kernels take."""
        rows = [[s.weights.start, s.biases.start, s.n_out, s.n_in] for s in self.layers]
        return np.array(rows, dtype=np.int64)

    def flops_per_point(self) -> int:
        """Multiply-adds of one forward pass on one data point."""
        return sum(s.n_out * s.n_in for s in self.layers)

    def map_first_layer(self, theta: np.ndarray, A: np.ndarray, t: np.ndarray | None = None):
        """The same networks for inputs ``x' = A x + t``: ``W1' = W1 A^{-1}``,
        ``b1' = b1 - W1 A^{-1} t``; a new array."""
        theta, W1, b1, first = self._first_layer(theta)
        A = np.asarray(A, dtype=np.float64)
        W1n = np.linalg.solve(A.T, W1.transpose(0, 2, 1)).transpose(0, 2, 1)  # W1 A^{-1}
        theta[:, first.weights] = W1n.reshape(theta.shape[0], -1)
        if t is not None and first.has_bias:
            theta[:, first.biases] = b1 - W1n @ np.asarray(t, dtype=np.float64)
        return theta

    def unmap_first_layer(self, theta: np.ndarray, A: np.ndarray, t: np.ndarray | None = None):
        """Inverse of :meth:`map_first_layer`: ``W1 = W1' A``, ``b1 = b1' + W1' t``."""
        theta, W1, b1, first = self._first_layer(theta)
        theta[:, first.weights] = (W1 @ np.asarray(A, dtype=np.float64)).reshape(theta.shape[0], -1)
        if t is not None and first.has_bias:
            theta[:, first.biases] = b1 + W1 @ np.asarray(t, dtype=np.float64)
        return theta

    def _first_layer(self, theta: np.ndarray):
        if np.ndim(theta) != 2:
            raise ValueError(f"theta must be (n, p), got shape {np.shape(theta)}")
        theta = np.array(theta, dtype=np.float64)  # a copy: the maps return new arrays
        first, n = self.layers[0], theta.shape[0]
        W1 = theta[:, first.weights].reshape(n, first.n_out, first.n_in).copy()
        return theta, W1, theta[:, first.biases].copy(), first
