"""Datasets: base generators and the per-experiment transforms applied to them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (n, d) float64 and integer labels ``y`` (n,) in [0, n_classes)."""

    X: np.ndarray
    y: np.ndarray
    n_classes: int

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    def save(self, path) -> None:
        np.savez(path, X=self.X, y=self.y, n_classes=np.int64(self.n_classes))

    @classmethod
    def load(cls, path) -> Dataset:
        with np.load(path, allow_pickle=False) as f:
            return cls(X=f["X"], y=f["y"], n_classes=int(f["n_classes"]))


def generate(cfg: dict) -> Dataset:
    """The base dataset of ``cfg['dataset']``, fixed by its seed."""
    rng = np.random.default_rng(cfg["seed"])
    if cfg["generator"] == "uniform":
        X = rng.uniform(cfg["low"], cfg["high"], size=(cfg["n_points"], cfg["n_features"]))
        y = rng.integers(0, cfg["n_classes"], size=cfg["n_points"])
        return Dataset(X=X, y=y.astype(np.int64), n_classes=cfg["n_classes"])
    raise ValueError(f"unknown dataset generator {cfg['generator']!r}")


def rotation_matrix(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def rotate(ds: Dataset, degrees: float) -> Dataset:
    """Rotate 2-D inputs counter-clockwise about the origin."""
    return Dataset(X=ds.X @ rotation_matrix(degrees).T, y=ds.y, n_classes=ds.n_classes)


TRANSFORMS = {"rotate": rotate}


def apply(ds: Dataset, transforms) -> Dataset:
    """Apply ``(name, value)`` transforms in order."""
    for name, value in transforms:
        ds = TRANSFORMS[name](ds, value)
    return ds


def for_experiment(cfg: dict, experiment) -> Dataset:
    return apply(generate(cfg["dataset"]), experiment.transforms)
