"""Datasets: base generators, the per-experiment transforms, and their parameter-space maps.

Every input transform is affine, ``x' = A x + t``. A network with first layer ``(W1, b1)`` on
``x`` computes exactly what the network with ``W1' = W1 A^{-1}``, ``b1' = b1 - W1 A^{-1} t``
(all other layers unchanged) computes on ``x'`` (:meth:`ParamLayout.map_first_layer`);
:func:`to_reference` is the inverse, ``W1 = W1' A``, ``b1 = b1' + W1' t``. ``label_noise``
changes labels, not inputs: it has no parameter map.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lossatlas.model.layout import ParamLayout
from lossatlas.schema import section


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (n, d) float64 and either integer labels ``y`` (n,) in [0, n_classes)
    (classification) or float targets ``Y`` (n, r) (regression: ``y`` None, n_classes 0)."""

    X: np.ndarray
    y: np.ndarray | None
    n_classes: int
    Y: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_outputs(self) -> int:
        """The network's output width: classes, or target columns."""
        return self.n_classes if self.Y is None else self.Y.shape[1]

    @property
    def is_regression(self) -> bool:
        return self.Y is not None

    def arrays(self) -> dict:
        """Plain arrays that :meth:`from_arrays` reads back (a batch's task argument, the saved
        file); classification writes exactly the keys it always had."""
        if self.Y is not None:
            return {"X": np.asarray(self.X), "Y": np.asarray(self.Y)}
        return {"X": np.asarray(self.X), "y": np.asarray(self.y), "n_classes": int(self.n_classes)}

    @classmethod
    def from_arrays(cls, arrays) -> Dataset:
        if "Y" in arrays:
            return cls(X=np.asarray(arrays["X"]), y=None, n_classes=0, Y=np.asarray(arrays["Y"]))
        return cls(
            X=np.asarray(arrays["X"]), y=np.asarray(arrays["y"]), n_classes=int(arrays["n_classes"])
        )

    def save(self, path) -> None:
        np.savez(path, **self.arrays())

    @classmethod
    def load(cls, path) -> Dataset:
        with np.load(path, allow_pickle=False) as f:
            return cls.from_arrays({k: f[k] for k in f.files})


GENERATORS = (
    "uniform",
    "xor",
    "moons",
    "circles",
    "blobs",
    "digits",
    "teacher",
    "regression",
    "permute3",
    "file",
    "mnist1d",
)
TWO_D_TWO_CLASS = ("xor", "moons", "circles")
DIGITS_IMAGES, DIGITS_FEATURES, DIGITS_CLASSES = 1797, 64, 10
# MNIST-1D's standard set: 5,000 sequences of 40 points, 4,000 for training, 1,000 for test
MNIST1D_FEATURES, MNIST1D_CLASSES, MNIST1D_TRAIN, MNIST1D_TEST = 40, 10, 4000, 1000


def standardize(X: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1 over ``reference`` (None: ``X``), so
    that held-out points are scaled as their training points are; constant columns become 0.

    The digits' border pixels are constant (0), and dividing them by their zero spread would
    give NaN inputs.
    """
    X = np.asarray(X, dtype=np.float64)
    ref = X if reference is None else np.asarray(reference, dtype=np.float64)
    sd = ref.std(axis=0)
    return (X - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def digits(subset: int | None = None, seed: int = 0, n_heldout: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 64 pixel features, 10 classes), standardized.

    ``subset``: that many images drawn without replacement (seeded by ``seed``, kept in their
    original order), standardized over the subset; None takes all 1797. ``n_heldout > 0``
    returns instead that many of the other images (a seeded draw), standardized as the subset
    is (a held-out set).
    """
    from sklearn import datasets as skd  # imported where used: see generate

    X, y = skd.load_digits(return_X_y=True)
    if subset is not None:
        if not 1 <= subset <= len(y):
            raise ValueError(f"digits subset must be in [1, {len(y)}], got {subset}")
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=subset, replace=False))
    else:
        idx = np.arange(len(y))
    train = X[idx]
    if n_heldout:
        rest = np.setdiff1d(np.arange(len(y)), idx)
        if n_heldout > len(rest):
            raise ValueError(f"digits has {len(rest)} images outside the subset, not {n_heldout}")
        idx = np.sort(np.random.default_rng([seed, 1]).choice(rest, n_heldout, replace=False))
    Xs = standardize(X[idx], train)
    return Dataset(X=Xs, y=np.asarray(y[idx], dtype=np.int64), n_classes=DIGITS_CLASSES)


def mnist1d(subset: int | None = None, seed: int = 42, n_heldout: int = 0) -> Dataset:
    """MNIST-1D (Greydanus and Steinbach): 40-point sequences of 10 classes, generated here by
    the ``mnist1d`` package from its templates (no download, no pickle), with its standard
    settings and ``seed`` (42 gives the authors' published set); its training split (4,000
    sequences, already shuffled), the first ``subset`` of them (None: all). ``n_heldout > 0``
    returns instead the first that many of its test split (1,000 sequences). The package seeds
    numpy's and Python's global generators: their states are put back after."""
    import random

    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # config validation says this before any job; a notebook here
        raise ImportError('dataset.generator mnist1d needs pip install -e ".[mnist1d]"') from e
    if subset is not None and not 1 <= subset <= MNIST1D_TRAIN:
        raise ValueError(f"mnist1d subset must be in [1, {MNIST1D_TRAIN}], got {subset}")
    if not 0 <= n_heldout <= MNIST1D_TEST:
        raise ValueError(f"mnist1d has {MNIST1D_TEST} test sequences, not {n_heldout}")
    args = get_dataset_args()
    args.seed = int(seed)
    # the package draws from numpy's legacy global generator, which it seeds
    states = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        made = make_dataset(args)
    finally:
        np.random.set_state(states[0])  # noqa: NPY002
        random.setstate(states[1])
    X, y = (made["x_test"], made["y_test"]) if n_heldout else (made["x"], made["y"])
    n = n_heldout or (MNIST1D_TRAIN if subset is None else subset)
    X, y = np.asarray(X[:n], np.float64), np.asarray(y[:n], np.int64)
    return Dataset(X=X, y=y, n_classes=MNIST1D_CLASSES)


def teacher(
    n: int, d: int, k: int, seed: int = 0, noise: float = 0.0, n_heldout: int = 0
) -> Dataset:
    """Synthetic inputs of any dimension: ``X ~ N(0, I_d)``, labels from a random linear teacher,
    ``y = argmax(X T / sqrt(d) + noise * e)`` with ``T, e`` standard normal.

    Unlike uniform random labels, these are learnable by the network, at any ``d``, so wide
    inputs (and a large p) come with a landscape that has good minima. ``n_heldout > 0``
    returns instead that many new points of the same teacher (a held-out set).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    T = rng.standard_normal((d, k))
    if n_heldout:
        rng = np.random.default_rng([seed, 1])
        X = rng.standard_normal((n_heldout, d))
    logits = X @ T / np.sqrt(d) + noise * rng.standard_normal((len(X), k))
    return Dataset(X=X, y=np.argmax(logits, axis=1).astype(np.int64), n_classes=k)


def _regression_map(rng, d: int, r: int, linear_map, teacher_hidden, teacher_activation):
    """``f`` of :func:`regression`: the given linear map, or a random teacher drawn from
    ``rng``."""
    from lossatlas.model.activations import act

    if linear_map is not None:
        M = np.asarray(linear_map, dtype=np.float64)
        if M.shape != (r, d):
            raise ValueError(f"dataset.linear_map must be {r} x {d} (targets x features)")
        return lambda X: X @ M.T
    widths = (d, *teacher_hidden, r)
    weights = [rng.standard_normal((n_in, n_out))
               for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)]  # fmt: skip

    def f(X):
        h = X
        for i, w in enumerate(weights):
            h = h @ w / np.sqrt(w.shape[0])  # in this order: the stored datasets' rounding
            if i < len(weights) - 1:
                h = act(teacher_activation, h)
        return h

    return f


def regression(
    n: int,
    d: int,
    r: int,
    *,
    low: float = -1.0,
    high: float = 1.0,
    seed: int = 0,
    noise: float = 0.0,
    linear_map=None,
    teacher_hidden: Sequence[int] = (),
    teacher_activation: str = "tanh",
    n_heldout: int = 0,
) -> Dataset:
    """Regression targets of inputs uniform in ``[low, high]^d``: ``Y = f(X) + noise * e``,
    ``e`` standard normal. ``f`` is the given ``linear_map`` (r x d, ``Y = X M^T``) or, if None,
    a random teacher network ``d -> teacher_hidden -> r`` (weights N(0, 1 / fan-in), no
    biases; ``teacher_hidden = ()`` is a random linear map). ``n_heldout > 0`` returns instead
    ``n_heldout`` new points of the same ``f`` and noise level (a held-out set)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(low, high, size=(n, d))
    f = _regression_map(rng, d, r, linear_map, teacher_hidden, teacher_activation)
    if n_heldout:
        rng = np.random.default_rng([seed, 1])
        X = rng.uniform(low, high, size=(n_heldout, d))
    Y = f(X)
    Y = Y + noise * rng.standard_normal(Y.shape)
    return Dataset(X=X, y=None, n_classes=0, Y=Y)


def _regression_of(cfg: dict, n_heldout: int = 0) -> Dataset:
    """:func:`regression` of validated ``dataset`` settings."""
    keys = ("low", "high", "seed", "noise", "linear_map", "teacher_hidden", "teacher_activation")
    return regression(
        cfg["n_points"], cfg["n_features"], cfg["n_targets"], n_heldout=n_heldout,
        **{k: cfg[k] for k in keys},
    )  # fmt: skip


def permute3() -> Dataset:
    """Freeman & Bruna's 2-3-2 task: three inputs on the unit circle at 0, 120 and 240 degrees,
    the target of each the next one (``Y_i = X_{i+1}``)."""
    angles = np.deg2rad([0.0, 120.0, 240.0])
    X = np.column_stack([np.cos(angles), np.sin(angles)])
    return Dataset(X=X, y=None, n_classes=0, Y=np.roll(X, -1, axis=0))


def from_file(path, heldout: bool = False) -> Dataset:
    """A user's dataset: ``.npz`` with ``X`` (n, d) and either ``y`` (n,) integer labels or
    ``Y`` (n, r) float targets; or ``.csv`` with a header naming input columns ``x...`` and
    either one label column ``y`` or target columns ``Y...``. ``heldout``: instead the test
    split of an ``.npz``, its arrays ``X_test`` and ``y_test`` (or ``Y_test``). Never
    unpickles; every problem is a ``ValueError`` that names ``dataset.path``."""
    from pathlib import Path

    path = Path(path)
    where = f"dataset.path {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file; give an existing .npz or .csv file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        elif path.suffix == ".csv":
            arrays = _csv_arrays(path)
        else:
            raise ValueError("the file must end in .npz or .csv")
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{where}: cannot be read ({err})") from None
    if heldout:
        if "X_test" not in arrays:
            raise ValueError(
                f"{where}: has no test split; save X_test and y_test (or Y_test) in the .npz"
            )
        where += " (its test split)"
        arrays = {k.removesuffix("_test"): v for k, v in arrays.items() if k.endswith("_test")}
    if "X" not in arrays or ("y" in arrays) == ("Y" in arrays):
        raise ValueError(f"{where}: needs X and exactly one of y (labels) or Y (targets)")
    X = np.asarray(arrays["X"], dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1 or not np.all(np.isfinite(X)):
        raise ValueError(f"{where}: X must be a finite (n, d) array, got shape {X.shape}")
    if "Y" in arrays:
        Y = np.asarray(arrays["Y"], dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.ndim != 2 or Y.shape[0] != X.shape[0] or not np.all(np.isfinite(Y)):
            raise ValueError(f"{where}: Y must be finite, ({X.shape[0]}, r), got {Y.shape}")
        return Dataset(X=X, y=None, n_classes=0, Y=Y)
    y = np.asarray(arrays["y"])
    if y.shape != (X.shape[0],) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise ValueError(f"{where}: y must be ({X.shape[0]},) integer labels")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{where}: labels must be 0, 1, ..., n_classes - 1")
    return Dataset(X=X, y=y, n_classes=max(int(y.max()) + 1, 2))


def _csv_arrays(path) -> dict:
    header = path.open().readline().strip().split(",")
    values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if values.shape[1] != len(header):
        raise ValueError(f"{len(header)} header names but {values.shape[1]} columns")
    names = [h.strip() for h in header]
    cols = {
        "X": [i for i, h in enumerate(names) if h[:1] in ("x", "X")],
        "Y": [i for i, h in enumerate(names) if h.startswith("Y")],
        "y": [i for i, h in enumerate(names) if h == "y"],
    }
    if len(cols["X"]) + len(cols["Y"]) + len(cols["y"]) != len(names):
        raise ValueError("columns must be named x..., and y or Y...")
    arrays = {"X": values[:, cols["X"]]}
    if cols["Y"]:
        arrays["Y"] = values[:, cols["Y"]]
    if cols["y"]:
        arrays["y"] = values[:, cols["y"][0]]
    return arrays


def shape_of(settings: dict) -> tuple[int, int, int]:
    """``(n_points, n_features, n_outputs)`` of the dataset :func:`generate` would make; only a
    user's file is read to know it."""
    gen = settings["generator"]
    if gen == "digits":
        return settings["subset"] or DIGITS_IMAGES, DIGITS_FEATURES, DIGITS_CLASSES
    if gen == "mnist1d":
        return settings["subset"] or MNIST1D_TRAIN, MNIST1D_FEATURES, MNIST1D_CLASSES
    if gen == "permute3":
        return 3, 2, 2
    if gen == "file":
        ds = from_file(settings["path"])
        return ds.n_points, ds.n_features, ds.n_outputs
    k = settings["n_targets"] if gen == "regression" else settings["n_classes"]
    return int(settings["n_points"]), int(settings["n_features"]), int(k)


def feature_and_class_counts(settings: dict) -> tuple[int, int]:
    """``(n_features, n_outputs)`` of the dataset :func:`generate` would make."""
    return shape_of(settings)[1:]


def is_regression(settings: dict) -> bool:
    """Whether the ``dataset`` settings make float targets (for ``model.loss: mse``)."""
    if settings["generator"] == "file":
        return from_file(settings["path"]).is_regression
    return settings["generator"] in REGRESSION_GENERATORS


REGRESSION_GENERATORS = ("regression", "permute3")


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
    - ``mnist1d``: MNIST-1D's training split (:func:`mnist1d`, the ``mnist1d`` extra); 40
      features and 10 classes, ``subset`` sequences (None: all 4,000), ``seed`` the generator's;
    - ``teacher``: Gaussian inputs in ``n_features`` dimensions labelled by a random linear
      teacher with logit ``noise`` (:func:`teacher`);
    - ``regression``: float targets of a linear map or teacher network (:func:`regression`);
    - ``permute3``: the 2-3-2 permutation task (:func:`permute3`);
    - ``file``: the user's arrays at ``path`` (:func:`from_file`).
    xor, moons and circles are 2-D, 2-class.
    """
    return _generate(section("dataset", settings))


def heldout(settings: dict, n: int) -> Dataset:
    """``n`` test points of the ``dataset`` settings, drawn as the training points of
    :func:`generate` are and never among them (``predict.n_test``): MNIST-1D's test split;
    digits' images outside the subset, scaled as the subset is; a user's ``X_test`` and
    ``y_test``; new points of the other generators from a second seeded stream, with the same
    teacher, map or blob centres. permute3 has none: its three points are the task."""
    if n < 1:
        raise ValueError(f"a test split needs at least 1 point, got {n}")
    made = _generate(section("dataset", settings), n_heldout=n)
    if made.n_points < n:
        raise ValueError(f"dataset.path holds {made.n_points} test points, not {n}")
    return dataclasses.replace(
        made, X=made.X[:n], **({"Y": made.Y[:n]} if made.is_regression else {"y": made.y[:n]})
    )


def heldout_available(settings: dict) -> int | None:
    """How many test points :func:`heldout` can give for the ``dataset`` settings (None: any
    number); 0 where there are none."""
    gen = settings["generator"]
    if gen == "permute3":
        return 0
    if gen == "mnist1d":
        return MNIST1D_TEST
    if gen == "digits":
        return DIGITS_IMAGES - (settings["subset"] or DIGITS_IMAGES)
    if gen == "file":
        try:
            return from_file(settings["path"], heldout=True).n_points
        except ValueError:
            return 0
    return None


def _generate(cfg: dict, n_heldout: int = 0) -> Dataset:
    gen, n, d, k = cfg["generator"], cfg["n_points"], cfg["n_features"], cfg["n_classes"]
    seed = cfg["seed"]
    noise = cfg["noise"]
    if gen in TWO_D_TWO_CLASS and (d != 2 or k != 2):
        raise ValueError(f"dataset.generator {gen} needs n_features = 2 and n_classes = 2")
    if gen == "digits":
        return digits(cfg["subset"], seed, n_heldout)
    if gen == "mnist1d":
        return mnist1d(cfg["subset"], seed, n_heldout)
    if gen == "teacher":
        return teacher(n, d, k, seed, noise, n_heldout)
    if gen == "regression":
        return _regression_of(cfg, n_heldout)
    if gen == "permute3":
        if n_heldout:
            raise ValueError("dataset.generator permute3 has no test points: its 3 are the task")
        return permute3()
    if gen == "file":
        return from_file(cfg["path"], heldout=bool(n_heldout))
    if gen in ("moons", "circles", "blobs"):
        # scikit-learn takes over a CPU-second to import: only its generators pay for it
        from sklearn import datasets as skd
    # held-out points come from a second stream of the same seed
    stream = [seed, 1] if n_heldout else seed
    state = int(np.random.SeedSequence(stream).generate_state(1)[0]) if n_heldout else seed
    n = n_heldout or n
    if gen == "uniform":
        rng = np.random.default_rng(stream)
        X = rng.uniform(cfg["low"], cfg["high"], size=(n, d))
        y = rng.integers(0, k, size=n)
    elif gen == "xor":
        rng = np.random.default_rng(stream)
        X = rng.uniform(cfg["low"], cfg["high"], size=(n, 2))
        c = X - (cfg["low"] + cfg["high"]) / 2
        y = (c[:, 0] * c[:, 1] > 0).astype(np.int64)
    elif gen == "moons":
        X, y = skd.make_moons(n_samples=n, noise=noise, random_state=state)
    elif gen == "circles":
        factor = cfg["factor"]
        X, y = skd.make_circles(n_samples=n, noise=noise, factor=factor, random_state=state)
    elif gen == "blobs":
        blobs = {"n_features": d, "cluster_std": noise, "center_box": (cfg["low"], cfg["high"])}
        X, y, centers = skd.make_blobs(
            n_samples=cfg["n_points"], centers=k, random_state=seed, return_centers=True, **blobs
        )
        if n_heldout:  # new points about the training points' centres
            X, y = skd.make_blobs(n_samples=n, centers=centers, random_state=state, **blobs)
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
    - ``translate``: ``x' = x + value`` in every coordinate;
    - ``shuffle``: the inputs' coordinates in an order drawn at random, seeded by ``value``
      (0: as they are), the same for every point: a sequence or an image loses its
      neighbourhoods, which a fully connected network never used (its first layer maps it
      back: :func:`feature_permutation`) and a convolution needs.
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
    if name == "shuffle":
        return np.eye(d)[feature_permutation(value, d)], np.zeros(d)
    if name == "label_noise":
        return None
    raise ValueError(f"unknown transform {name!r}; use one of {', '.join(TRANSFORMS)}")


def feature_permutation(value, d: int) -> np.ndarray:
    """The order ``shuffle`` puts ``d`` input coordinates in: coordinate ``i`` of a shuffled
    point is coordinate ``order[i]`` of the point. ``value`` 0 keeps the order; any other
    non-negative integer seeds it."""
    if value != int(value) or value < 0:
        raise ValueError(f"shuffle takes a non-negative integer seed, got {value}")
    if value == 0:
        return np.arange(d)
    return np.random.default_rng([int(value), d]).permutation(d)


def _affine_transform(name):
    def transform(ds: Dataset, value: float) -> Dataset:
        A, t = affine(name, value, ds.n_features)
        return dataclasses.replace(ds, X=ds.X @ A.T + t)

    transform.__name__ = name
    transform.__doc__ = f"Apply the input transform {name!r} (see :func:`affine`)."
    return transform


rotate = _affine_transform("rotate")
scale = _affine_transform("scale")
reflect = _affine_transform("reflect")
shear = _affine_transform("shear")
translate = _affine_transform("translate")
shuffle = _affine_transform("shuffle")


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
    "shuffle": shuffle,
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
    cfg = section("dataset", settings)
    return apply(generate(cfg), transforms, seed=cfg["seed"])


def heldout_for_experiment(settings: dict, transforms, n: int) -> Dataset | None:
    """``n`` held-out points of a regression dataset (new inputs, the same map and noise)
    with an experiment's ``transforms``; None when ``n`` is 0 or the dataset has no
    generating map."""
    if n < 1 or section("dataset", settings)["generator"] != "regression":
        return None
    return test_for_experiment(settings, transforms, n)


def test_for_experiment(settings: dict, transforms, n: int) -> Dataset:
    """:func:`heldout`'s ``n`` test points with an experiment's input transforms; its label
    transforms are left out, so that a network is tested on the true labels."""
    cfg = section("dataset", settings)
    inputs = [(name, value) for name, value in transforms if name != "label_noise"]
    return apply(heldout(cfg, n), inputs, seed=cfg["seed"])


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
