"""Reading the draws in bounded memory: the one layer between the store and the analyses.

The store holds ``theta (chain, draw, param)`` on disk (an h5py dataset; an ndarray works the
same). Nothing reads all of it:

- memory budgets: :func:`rows_in_budget` turns MiB into float64 rows, :func:`draws_per_block`
  into draws per read;
- block iterators: :func:`iter_draw_blocks` (all chains over a range of draws, as rows) and
  :func:`iter_param_blocks` (all draws of a range of parameters); :func:`gather` picks rows
  by flat index in one pass;
- views: :class:`RowView` (one row per draw, as the dimension and census code expects) and
  :class:`DrawView` (the ``(chain, draw, q)`` shape in derived coordinates: canonical
  parameters, the network's outputs on the data), both computed one block of draws at a time;
  :func:`materialized` writes a derived view once when many column blocks will read it.

A ``transform`` maps rows ``(m, p) -> (m, q)`` and must act row by row. Rows are flattened
chain-major: row ``c * n_draws + d`` is draw ``d`` of chain ``c``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]
MiB = 2**20


# --- memory budgets ----------------------------------------------------------------------------


def rows_in_budget(width: int, max_mb: float, minimum: int = 1) -> int:
    """Rows of ``width`` float64 numbers that fit in ``max_mb`` MiB (at least ``minimum``)."""
    return max(int(minimum), int(max_mb * MiB // (8 * max(int(width), 1))))


def draws_per_block(shape, draw_block: int = 4096, max_block_mb: float = 256) -> int:
    """Draws per read of ``theta`` of ``shape (chain, draw, p)``: one block holds at most
    ``draw_block`` rows and ``max_block_mb`` MiB (at least one draw of every chain)."""
    n_chains, _, p = shape
    rows = min(int(draw_block), rows_in_budget(p, max_block_mb, minimum=0))
    return max(1, rows // n_chains)


# --- block iterators ---------------------------------------------------------------------------


def draw_rows(theta, d0: int, d1: int, dtype=np.float64) -> np.ndarray:
    """Draws ``d0:d1`` of every chain as rows ``(chain * (d1 - d0), p)``, chain-major, as
    ``dtype`` (None: the stored type)."""
    x = np.asarray(theta[:, d0:d1, :], dtype=dtype)
    return x.reshape(-1, theta.shape[2])


def iter_draw_blocks(theta, dpb: int, dtype=np.float64) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(d0, d1, rows)``: :func:`draw_rows` of consecutive blocks of ``dpb`` draws."""
    n_draws = theta.shape[1]
    for d0 in range(0, n_draws, dpb):
        d1 = min(d0 + dpb, n_draws)
        yield d0, d1, draw_rows(theta, d0, d1, dtype)


def iter_param_blocks(theta, width: int, dtype=np.float64) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(j0, j1, theta[:, :, j0:j1])`` for consecutive blocks of ``width`` parameters,
    as ``dtype`` (None: the stored type)."""
    width = int(width)
    if width < 1:
        raise ValueError("block must be >= 1")
    p = theta.shape[2]
    for j0 in range(0, p, width):
        j1 = min(j0 + width, p)
        yield j0, j1, np.asarray(theta[:, :, j0:j1], dtype=dtype)


def block_flat(n_draws: int, d0: int, d1: int, n_chains: int) -> np.ndarray:
    """Global flat indices (c * n_draws + d) of a draw block's rows, in block order."""
    c = np.repeat(np.arange(n_chains), d1 - d0)
    d = np.tile(np.arange(d0, d1), n_chains)
    return c * n_draws + d


def gather(theta, flat_sets, dpb: int, on_block=None) -> list[np.ndarray]:
    """Rows of theta at each sorted flat-index array in ``flat_sets``, in one pass.

    ``on_block(rows)`` is called on every block too, so a statistic can share the pass.
    """
    n_chains, n_draws, p = theta.shape
    out = [np.empty((len(s), p)) for s in flat_sets]
    for d0, d1, x in iter_draw_blocks(theta, dpb):
        if on_block is not None:
            on_block(x)
        for k, s in enumerate(flat_sets):
            c, d = np.divmod(s, n_draws)
            sel = (d >= d0) & (d < d1)
            if sel.any():
                rows = c[sel] * (d1 - d0) + (d[sel] - d0)
                # Sorted flat indices are chain-major; place them where they belong.
                where = np.flatnonzero(sel)
                out[k][where] = x[rows]
    return out


# --- views -------------------------------------------------------------------------------------


def _apply(transform: Transform | None, x: np.ndarray) -> np.ndarray:
    return x if transform is None or len(x) == 0 else np.asarray(transform(x), dtype=np.float64)


class RowView:
    """``theta (chain, draw, p)`` as rows ``(chain * draw, q)``; ``view[idx]`` reads only the
    blocks of draws holding rows ``idx`` (an integer array or a slice; returned in sorted
    order) and applies ``transform`` to them.

    Where all of ``theta`` takes no more than ``max_block_mb`` (one block's budget), it is read
    once, at the first request, and later requests index it: the null replicates ask for
    random rows dozens of times, and each request would otherwise read every block holding one.
    """

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
        self.dpb = draws_per_block(theta.shape, draw_block, max_block_mb)
        self._whole = 8 * theta.size <= max_block_mb * MiB
        self._held: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            idx = np.arange(*key.indices(self.shape[0]))
        else:
            idx = np.sort(np.asarray(key, dtype=np.int64).ravel())
        if self._whole:
            if self._held is None:
                self._held = np.asarray(self.source[()], dtype=np.float64)
            return _apply(self.transform, self._held.reshape(-1, self._held.shape[2])[idx])
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
        self.dpb = draws_per_block(theta.shape, draw_block, max_block_mb)

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
