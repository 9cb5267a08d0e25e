"""Datasets: base generators, the per-experiment transforms, and their parameter-space maps.

Every input transform is affine, ``x' = A x + t``. A network with first layer ``(W1, b1)`` on
``x`` computes exactly what the network with ``W1' = W1 A^{-1}``, ``b1' = b1 - W1 A^{-1} t``
(all other layers unchanged) computes on ``x'`` (:meth:`ParamLayout.map_first_layer`);
:func:`to_reference` is the inverse, ``W1 = W1' A``, ``b1 = b1' + W1' t``. ``label_noise``
changes labels, not inputs: it has no parameter map.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import datasets as skd

from lossatlas.model.layout import ParamLayout


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


GENERATORS = ("uniform", "xor", "moons", "circles", "blobs", "digits", "teacher")
TWO_D_TWO_CLASS = ("xor", "moons", "circles")
DIGITS_FEATURES, DIGITS_CLASSES = 64, 10


def standardize(X: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1; constant columns become 0.

    The digits' border pixels are constant (0), and dividing them by their zero spread would
    give NaN inputs.
    """
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def digits(subset: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 64 pixel features, 10 classes), standardized.

    ``subset``: that many images drawn without replacement (seeded by ``seed``, kept in their
    original order), standardized over the subset; None takes all 1797.
    """
    X, y = skd.load_digits(return_X_y=True)
    if subset is not None:
        if not 1 <= subset <= len(y):
            raise ValueError(f"digits subset must be in [1, {len(y)}], got {subset}")
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=subset, replace=False))
        X, y = X[idx], y[idx]
    return Dataset(X=standardize(X), y=np.asarray(y, dtype=np.int64), n_classes=DIGITS_CLASSES)


def teacher(n: int, d: int, k: int, seed: int = 0, noise: float = 0.0) -> Dataset:
    """Synthetic inputs of any dimension: ``X ~ N(0, I_d)``, labels from a random linear teacher,
    ``y = argmax(X T / sqrt(d) + noise * e)`` with ``T, e`` standard normal.

    Unlike uniform random labels, these are learnable by the network, at any ``d``, so wide
    inputs (and a large p) come with a landscape that has good minima.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    T = rng.standard_normal((d, k))
    logits = X @ T / np.sqrt(d) + noise * rng.standard_normal((n, k))
    return Dataset(X=X, y=np.argmax(logits, axis=1).astype(np.int64), n_classes=k)


def feature_and_class_counts(settings: dict) -> tuple[int, int]:
    """``(n_features, n_classes)`` of the dataset :func:`generate` would make, without making
    it (digits has its own, whatever the settings say)."""
    if settings["generator"] == "digits":
        return DIGITS_FEATURES, DIGITS_CLASSES
    return int(settings["n_features"]), int(settings["n_classes"])


def generate(settings: dict) -> Dataset:
    """The base dataset of the ``dataset`` settings (see config/README.md; keys left out take
    the schema's defaults), fixed by its seed.

    - ``uniform``: points uniform in ``[low, high]^n_features``, labels uniform at random;
    - ``xor``: points uniform in ``[low, high]^2``, label 1 where the two coordinates (relative
      to the square's centre) have the same sign;
    - ``moons`` / ``circles``: scikit-learn's, with Gaussian ``noise`` (circles: inner radius
      ``factor``);
    - ``blobs``: ``n_classes`` isotropic Gaussian blobs (std ``noise``) in ``n_features``
      dimensions, centres uniform in ``[low, high]``;
    - ``digits``: scikit-learn's 8x8 digits, standardized (:func:`digits`); 64 features and
      10 classes whatever ``n_features`` / ``n_classes`` say, ``subset`` points (None: all);
    - ``teacher``: Gaussian inputs in ``n_features`` dimensions labelled by a random linear
      teacher with logit ``noise`` (:func:`teacher`).
    xor, moons and circles are 2-D, 2-class.
    """
    from lossatlas import config

    cfg = config.section("dataset", settings)
    gen, n, d, k = cfg["generator"], cfg["n_points"], cfg["n_features"], cfg["n_classes"]
    seed = cfg["seed"]
    noise = cfg["noise"]
    if gen in TWO_D_TWO_CLASS and (d != 2 or k != 2):
        raise ValueError(f"dataset.generator {gen} needs n_features = 2 and n_classes = 2")
    if gen == "digits":
        return digits(cfg["subset"], seed)
    if gen == "teacher":
        return teacher(n, d, k, seed, noise)
    if gen == "uniform":
        rng = np.random.default_rng(seed)
        X = rng.uniform(cfg["low"], cfg["high"], size=(n, d))
        y = rng.integers(0, k, size=n)
    elif gen == "xor":
        rng = np.random.default_rng(seed)
        X = rng.uniform(cfg["low"], cfg["high"], size=(n, 2))
        c = X - (cfg["low"] + cfg["high"]) / 2
        y = (c[:, 0] * c[:, 1] > 0).astype(np.int64)
    elif gen == "moons":
        X, y = skd.make_moons(n_samples=n, noise=noise, random_state=seed)
    elif gen == "circles":
        factor = cfg["factor"]
        X, y = skd.make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    elif gen == "blobs":
        X, y = skd.make_blobs(
            n_samples=n,
            n_features=d,
            centers=k,
            cluster_std=noise,
            center_box=(cfg["low"], cfg["high"]),
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown dataset generator {gen!r}; use one of {', '.join(GENERATORS)}")
    return Dataset(X=np.asarray(X, dtype=np.float64), y=np.asarray(y, dtype=np.int64), n_classes=k)


# --- input transforms: each is x' = A x + t ------------------------------------------------


def rotation_matrix(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _embed2(M: np.ndarray, d: int) -> np.ndarray:
    """A 2 x 2 map acting on the first two coordinates of R^d."""
    if d < 2:
        raise ValueError("this transform needs at least 2 input features")
    A = np.eye(d)
    A[:2, :2] = M
    return A


def affine(name: str, value: float, d: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A (d, d), t (d,))`` of the input transform ``name`` with parameter ``value``; None for
    ``label_noise`` (not an input transform).

    - ``rotate``: counter-clockwise by ``value`` degrees (2-D inputs);
    - ``scale``: ``x' = value * x``;
    - ``reflect``: mirror across the line through the origin at ``value`` degrees from the
      first axis (first two coordinates);
    - ``shear``: ``x'_0 = x_0 + value * x_1`` (first two coordinates);
    - ``translate``: ``x' = x + value`` in every coordinate.
    """
    if name == "rotate":
        if d != 2:
            raise ValueError("rotate needs 2-D inputs")
        return rotation_matrix(value), np.zeros(d)
    if name == "scale":
        if value == 0:
            raise ValueError("scale 0 is not invertible")
        return value * np.eye(d), np.zeros(d)
    if name == "reflect":
        a = np.deg2rad(2 * value)
        return _embed2(np.array([[np.cos(a), np.sin(a)], [np.sin(a), -np.cos(a)]]), d), np.zeros(d)
    if name == "shear":
        return _embed2(np.array([[1.0, value], [0.0, 1.0]]), d), np.zeros(d)
    if name == "translate":
        return np.eye(d), np.full(d, float(value))
    if name == "label_noise":
        return None
    raise ValueError(f"unknown transform {name!r}; use one of {', '.join(TRANSFORMS)}")


def _affine_transform(name):
    def transform(ds: Dataset, value: float) -> Dataset:
        A, t = affine(name, value, ds.n_features)
        return Dataset(X=ds.X @ A.T + t, y=ds.y, n_classes=ds.n_classes)

    transform.__name__ = name
    transform.__doc__ = f"Apply the input transform {name!r} (see :func:`affine`)."
    return transform


rotate = _affine_transform("rotate")
scale = _affine_transform("scale")
reflect = _affine_transform("reflect")
shear = _affine_transform("shear")
translate = _affine_transform("translate")


def label_noise(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Give ``round(fraction * n)`` points, chosen at random, a different label (uniform over
    the other classes). Seeded: the same call flips the same points."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"label_noise fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng([seed, int(round(fraction * 1e9))])
    n_flip = int(round(fraction * ds.n_points))
    idx = rng.choice(ds.n_points, size=n_flip, replace=False)
    y = ds.y.copy()
    y[idx] = (y[idx] + rng.integers(1, ds.n_classes, size=n_flip)) % ds.n_classes
    return Dataset(X=ds.X, y=y, n_classes=ds.n_classes)


TRANSFORMS = {
    "rotate": rotate,
    "scale": scale,
    "reflect": reflect,
    "shear": shear,
    "translate": translate,
    "label_noise": label_noise,
}


def apply(ds: Dataset, transforms, seed: int = 0) -> Dataset:
    """Apply ``(name, value)`` transforms in order; ``seed`` goes to the random ones."""
    for name, value in transforms:
        fn = TRANSFORMS[name]
        if "seed" in inspect.signature(fn).parameters:
            ds = fn(ds, value, seed=seed)
        else:
            ds = fn(ds, value)
    return ds


def for_experiment(settings: dict, transforms) -> Dataset:
    """The base dataset of the ``dataset`` settings with an experiment's ``transforms``."""
    from lossatlas import config

    cfg = config.section("dataset", settings)
    return apply(generate(cfg), transforms, seed=cfg["seed"])


def experiment_affine(transforms, d: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """The composed input map ``(A, t, exact)`` of ``(name, value)`` transforms applied in order:
    ``x' = A x + t``. ``exact`` is False when a label transform is present: then no parameter
    map makes the two experiments the same problem, and only the input part is returned."""
    A, t, exact = np.eye(d), np.zeros(d), True
    for name, value in transforms:
        step = affine(name, value, d)
        if step is None:
            exact = False
            continue
        Ai, ti = step
        A, t = Ai @ A, Ai @ t + ti
    return A, t, exact


# --- parameter-space maps --------------------------------------------------------------------


def to_reference(
    theta: np.ndarray, sizes: Sequence[int], A: np.ndarray, t: np.ndarray | None = None
) -> np.ndarray:
    """Draws ``theta (n, p)`` for data ``x' = A x + t`` -> the same networks on ``x``:
    ``W1 = W1' A``, ``b1 = b1' + W1' t`` (:meth:`ParamLayout.unmap_first_layer`)."""
    return ParamLayout(sizes).unmap_first_layer(theta, A, t)
