"""The reduce rule's result, :class:`Reduction`, and its file: read without the reduction's
libraries (scikit-learn), so the rules that only read it (figures, census) do not import them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

__all__ = ["Reduction", "load"]


@dataclass
class Reduction:
    """Result of :func:`reduce_draws`; arrays per draw are (chain, draw, ...)."""

    embedding: np.ndarray  # (chain, draw, k) kernel-PCA coordinates of every draw
    energy: np.ndarray  # (chain, draw) U, to colour the embedding
    mean_loss: np.ndarray  # (chain, draw)
    good: np.ndarray  # (chain, draw) bool, mean_loss < threshold
    good_index: np.ndarray  # (n_good, 2) int64 (chain, draw), chain-major order
    pca_kpca: np.ndarray  # (n_good, 2) linear PCA of the good draws' kernel-PCA coordinates
    pca_param: np.ndarray  # (n_good, 2) linear PCA of the good draws' parameters
    summary: dict = field(default_factory=dict)

    ARRAYS = ("embedding", "energy", "mean_loss", "good", "good_index", "pca_kpca", "pca_param")

    def save(self, path) -> None:
        """HDF5 (.h5/.hdf5: datasets + JSON attribute ``summary``) or .npz (no pickle)."""
        path = Path(path)
        text = json.dumps(self.summary)
        if path.suffix == ".npz":
            arrays = {a: getattr(self, a) for a in self.ARRAYS}
            np.savez(path, summary=np.array(text), **arrays)
            return
        with h5py.File(path, "w") as f:
            for a in self.ARRAYS:
                f.create_dataset(a, data=getattr(self, a))
            f.attrs["summary"] = text

    @classmethod
    def load(cls, path) -> Reduction:
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {a: f[a] for a in cls.ARRAYS}
                text = str(f["summary"])
        else:
            with h5py.File(path, "r") as f:
                arrays = {a: f[a][...] for a in cls.ARRAYS}
                text = f.attrs["summary"]
        return cls(**arrays, summary=json.loads(text))


def load(path) -> Reduction:
    """Read a :class:`Reduction` written by ``Reduction.save``."""
    return Reduction.load(path)
