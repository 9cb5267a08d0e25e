"""Lazy views of the stored draws: a 2-D row view, and draws in derived coordinates.

The store holds ``theta (chain, draw, param)`` on disk. Downstream analyses want either rows
(one parameter vector per draw, as the dimension and census code expects) or the same
``(chain, draw, q)`` shape in other coordinates (canonical parameters, the network's outputs on
the data). Both views read ``theta`` one block of draws at a time, so nothing ever holds all of
it; a ``transform`` maps rows ``(m, p) -> (m, q)`` and must act row by row.

Rows are flattened chain-major, as in :mod:`lossatlas.reduce`: row ``c * n_draws + d`` is draw
``d`` of chain ``c``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from lossatlas import reduce, symmetry

Transform = Callable[[np.ndarray], np.ndarray]


def canonical_transform(sizes: Sequence[int], activation: str, loss: str) -> Transform:
    """Rows ``(m, p)`` -> their canonical forms (:func:`symmetry.canonicalize`) for the network
    of layer widths ``sizes``."""
    return partial(symmetry.canonicalize, sizes=tuple(sizes), activation=activation, loss=loss)


def coordinate_transform(
    coordinates: str, sizes: Sequence[int], activation: str, loss: str
) -> Transform | None:
    """The analysis coordinates ``coordinates``: None (raw) or canonicalisation."""
    if coordinates == "raw":
        return None
    return canonical_transform(sizes, activation, loss)


def _apply(transform: Transform | None, x: np.ndarray) -> np.ndarray:
    return x if transform is None or len(x) == 0 else np.asarray(transform(x), dtype=np.float64)


class RowView:
    """``theta (chain, draw, p)`` as rows ``(chain * draw, q)``; ``view[idx]`` reads only the
    blocks of draws holding rows ``idx`` (an integer array or a slice; returned in sorted
    order) and applies ``transform`` to them."""

    def __init__(
        self,
        theta,
        transform: Transform | None = None,
        *,
        draw_block: int = 4096,
        max_block_mb: float = 256,
    ):
        self.source = theta
        self.transform = transform
        self.n_chains, self.n_draws, p = theta.shape
        q = p if transform is None else _apply(transform, np.zeros((1, p))).shape[1]
        self.shape = (self.n_chains * self.n_draws, q)
        self.ndim = 2
        self.dpb = reduce.draws_per_block(theta.shape, draw_block, max_block_mb)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            idx = np.arange(*key.indices(self.shape[0]))
        else:
            idx = np.sort(np.asarray(key, dtype=np.int64).ravel())
        p = self.source.shape[2]
        out = np.empty((len(idx), p))
        c, d = np.divmod(idx, self.n_draws)
        for d0 in range(0, self.n_draws, self.dpb):
            d1 = min(d0 + self.dpb, self.n_draws)
            sel = np.flatnonzero((d >= d0) & (d < d1))
            if len(sel) == 0:
                continue
            chains = np.unique(c[sel])
            # only the chains holding wanted rows; h5py reads an increasing index list
            block = np.asarray(self.source[chains.tolist(), d0:d1, :], dtype=np.float64)
            out[sel] = block[np.searchsorted(chains, c[sel]), d[sel] - d0]
        return _apply(self.transform, out)


class DrawView:
    """``theta (chain, draw, p)`` in other coordinates, shape ``(chain, draw, q)``: indexing
    ``view[chains, draws, cols]`` (slices) transforms one block of draws at a time and keeps
    only ``cols``, so a column block of a large ``q`` never needs all rows at once."""

    def __init__(
        self,
        theta,
        transform: Transform,
        names: Sequence[str] | None = None,
        *,
        draw_block: int = 4096,
        max_block_mb: float = 256,
    ):
        self.source = theta
        self.transform = transform
        c, d, p = theta.shape
        q = _apply(transform, np.zeros((1, p))).shape[1]
        self.shape = (c, d, q)
        self.ndim = 3
        self.names = list(names) if names is not None else [f"q[{j}]" for j in range(q)]
        self.dpb = reduce.draws_per_block(theta.shape, draw_block, max_block_mb)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        if not all(isinstance(k, slice) for k in key):
            raise TypeError("DrawView takes slices only")
        cs, ds, js = key
        chains = range(*cs.indices(self.shape[0]))
        draws = range(*ds.indices(self.shape[1]))
        cols = range(*js.indices(self.shape[2]))
        out = np.empty((len(chains), len(draws), len(cols)))
        if ds.step not in (None, 1) or cs.step not in (None, 1):
            raise TypeError("DrawView takes unit-step slices")
        p = self.source.shape[2]
        for a in range(0, len(draws), self.dpb):
            b = min(a + self.dpb, len(draws))
            x = np.asarray(self.source[cs, draws.start + a : draws.start + b, :], dtype=np.float64)
            y = _apply(self.transform, x.reshape(-1, p)).reshape(len(chains), b - a, -1)
            out[:, a:b] = y[:, :, js]
        return out

    def __array__(self, dtype=None, copy=None):
        return self[:, :, :].astype(dtype or np.float64)


@contextlib.contextmanager
def materialized(view: DrawView, directory, col_block: int, dtype=None) -> Iterator[h5py.Dataset]:
    """``view`` written once to a temporary HDF5 file in ``directory`` (deleted on exit),
    chunked for reads of ``col_block`` columns at a time; yields that dataset.

    Column blocks of a :class:`DrawView` each transform every draw again, so a diagnostic
    over ``q / col_block`` blocks would read the whole store that many times (hundreds of
    passes at p = 1e5). One pass here, then each column block reads only its chunks. ``dtype``
    defaults to the source's (float32 draws give float32 derived coordinates).
    """
    c, d, q = view.shape
    dtype = np.dtype(dtype or view.source.dtype)
    width = max(1, min(int(col_block), q))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".view-") as tmp:
        with h5py.File(Path(tmp) / "view.h5", "w") as f:
            dset = f.create_dataset(
                "x", (c, d, q), dtype=dtype, chunks=(c, min(view.dpb, d), width)
            )
            for a in range(0, d, view.dpb):
                b = min(a + view.dpb, d)
                dset[:, a:b, :] = view[:, a:b, :]
            yield dset
