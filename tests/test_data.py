import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from lossatlas import config, data
from lossatlas.model import MLP, Target
from lossatlas.model.layout import ParamLayout
from lossatlas.schema import section


def _ds_cfg(**kw):
    model = {"loss": "mse"} if kw.get("generator") in data.REGRESSION_GENERATORS else {}
    cfg = config.validate(
        {"dataset": kw, "model": model, "experiments": {"sweep": {"scale": [1.0]}}}
    )
    return cfg["dataset"]


def test_defaults_unchanged():
    cfg = config.validate({})
    assert cfg["dataset"]["generator"] == "uniform"
    assert cfg["dataset"]["n_points"] == 10
    assert cfg["experiments"]["sweep"] == {"rotate": [0, 120, 240]}
    assert list(config.experiments(cfg)) == ["rotate-0", "rotate-120", "rotate-240"]
    ds = data.generate(cfg["dataset"])
    assert ds.X.shape == (10, 2) and ds.X.min() >= -1 and ds.X.max() <= 1


# digits and mnist1d have fixed shapes (64 or 40 features, 10 classes): tests/test_scale.py and
# the mnist1d test below cover them.
FIXED = ("digits", "mnist1d", "file", "regression", "permute3")
CLASSIFIERS = [g for g in data.GENERATORS if g not in FIXED]


@pytest.mark.parametrize("gen", CLASSIFIERS)
def test_generators_seeded(gen):
    cfg = _ds_cfg(generator=gen, n_points=60)
    a, b = data.generate(cfg), data.generate(cfg)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.X.shape == (60, 2) and a.X.dtype == np.float64 and a.y.dtype == np.int64
    assert set(np.unique(a.y)) == {0, 1}
    c = data.generate({**cfg, "seed": cfg["seed"] + 1})
    assert not np.array_equal(a.X, c.X)


def test_regression_targets_of_a_linear_map_and_a_teacher():
    M = [[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]
    ds = data.generate(
        _ds_cfg(generator="regression", n_points=40, n_targets=3, linear_map=M, noise=0.0)
    )
    assert ds.is_regression and ds.y is None and ds.n_outputs == 3
    np.testing.assert_allclose(ds.Y, ds.X @ np.array(M).T, rtol=1e-14)
    cfg = _ds_cfg(generator="regression", n_points=40, teacher_hidden=[5], noise=0.1)
    a, b = data.generate(cfg), data.generate(cfg)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert a.Y.shape == (40, 1) and np.std(a.Y) > 0.1
    with pytest.raises(config.ConfigError, match=r"linear_map: must be 3 rows"):
        _ds_cfg(generator="regression", n_targets=3, linear_map=[[1.0, 2.0]])
    with pytest.raises(config.ConfigError, match="set model.loss: mse"):
        config.validate({"dataset": {"generator": "permute3"}})
    with pytest.raises(config.ConfigError, match="mse needs float targets"):
        config.validate({"model": {"loss": "mse"}})


def test_permute3_is_interpolated_by_the_permutation_network():
    ds = data.permute3()
    np.testing.assert_allclose(np.linalg.norm(ds.X, axis=1), 1.0)
    np.testing.assert_allclose(ds.Y, ds.X[[1, 2, 0]])
    # W1 = X (rows: the points), W2 = Y^T-based map: hidden h = relu(X x) picks each point
    mlp = MLP((2, 3, 2), "relu", "mse", bias="none")
    assert mlp.p == 12
    W1 = ds.X
    H = np.maximum(ds.X @ W1.T, 0)
    W2 = np.linalg.solve(H, ds.Y).T
    theta = np.concatenate([W1.ravel(), W2.ravel()])[None]
    assert Target(mlp, ds.X, ds.Y).U(theta)[0] < 1e-25


def test_user_files_npz_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    np.savez(tmp_path / "reg.npz", X=X, Y=Y)
    ds = data.from_file(tmp_path / "reg.npz")
    np.testing.assert_array_equal(ds.Y, Y)
    labels = np.array([0, 1, 2, 1, 0, 2, 1])
    text = "x1,x2,x3,y\n" + "\n".join(
        ",".join(map(repr, [*row.tolist(), int(lab)])) for row, lab in zip(X, labels, strict=True)
    )
    (tmp_path / "cls.csv").write_text(text)
    ds = data.from_file(tmp_path / "cls.csv")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.n_classes == 3 and not ds.is_regression
    cfg = config.validate(
        {
            "dataset": {"generator": "file", "path": str(tmp_path / "reg.npz")},
            "model": {"loss": "mse"},
        }
    )
    assert data.shape_of(cfg["dataset"]) == (7, 3, 2)
    # bad files are refused before any compute, naming the field
    np.savez(tmp_path / "both.npz", X=X, y=labels, Y=Y)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "pickled.npz").write_bytes((tmp_path / "objects.npy").read_bytes())
    bad = {
        "missing.npz": "no such file",
        "both.npz": "exactly one of y",
        "pickled.npz": "cannot be read",
    }
    for name, message in bad.items():
        with pytest.raises(config.ConfigError, match=f"dataset.path .*{message}"):
            config.validate(
                {
                    "dataset": {"generator": "file", "path": str(tmp_path / name)},
                    "model": {"loss": "mse"},
                }
            )
    with pytest.raises(config.ConfigError, match="set model.loss: mse"):
        config.validate({"dataset": {"generator": "file", "path": str(tmp_path / "reg.npz")}})


def test_xor_labels_and_blobs_classes():
    ds = data.generate(_ds_cfg(generator="xor", n_points=200))
    np.testing.assert_array_equal(ds.y, (ds.X[:, 0] * ds.X[:, 1] > 0).astype(int))
    ds = data.generate(_ds_cfg(generator="blobs", n_points=90, n_classes=3, n_features=4))
    assert ds.X.shape == (90, 4) and ds.n_classes == 3 and set(ds.y) == {0, 1, 2}
    with pytest.raises(ValueError, match="dataset.n_classes: must be 2"):
        data.generate(_ds_cfg(generator="moons", n_classes=3))


def test_schema_accepts_new_sweeps():
    cfg = config.validate(
        {"experiments": {"sweep": {"shear": [0, 0.5], "label_noise": [0.0, 0.2]}}}
    )
    names = list(config.experiments(cfg))
    assert names == [
        "shear-0_label_noise-0",
        "shear-0_label_noise-0.2",
        "shear-0.5_label_noise-0",
        "shear-0.5_label_noise-0.2",
    ]
    with pytest.raises(config.ConfigError, match="label_noise"):
        config.validate({"experiments": {"sweep": {"label_noise": [1.5]}}})
    with pytest.raises(config.ConfigError, match="generator"):
        config.validate({"dataset": {"generator": "spirals"}})


@pytest.mark.parametrize(
    ("name", "value", "A", "t"),
    [
        ("rotate", 90, [[0, -1], [1, 0]], [0, 0]),
        ("scale", 2.0, [[2, 0], [0, 2]], [0, 0]),
        ("reflect", 0, [[1, 0], [0, -1]], [0, 0]),
        ("reflect", 45, [[0, 1], [1, 0]], [0, 0]),
        ("shear", 0.5, [[1, 0.5], [0, 1]], [0, 0]),
        ("translate", 0.25, [[1, 0], [0, 1]], [0.25, 0.25]),
    ],
)
def test_affine_transforms(name, value, A, t):
    ds = data.generate(_ds_cfg())
    got_A, got_t = data.affine(name, value, 2)
    np.testing.assert_allclose(got_A, A, atol=1e-15)
    np.testing.assert_allclose(got_t, t, atol=1e-15)
    out = data.apply(ds, [(name, value)])
    np.testing.assert_allclose(out.X, ds.X @ np.asarray(A, float).T + t, atol=1e-15)
    np.testing.assert_array_equal(out.y, ds.y)


def test_label_noise():
    ds = data.generate(_ds_cfg(n_points=50, n_classes=3))
    noisy = data.label_noise(ds, 0.2, seed=7)
    assert (noisy.y != ds.y).sum() == 10
    np.testing.assert_array_equal(noisy.X, ds.X)
    np.testing.assert_array_equal(data.label_noise(ds, 0.2, seed=7).y, noisy.y)
    assert not np.array_equal(data.label_noise(ds, 0.2, seed=8).y, noisy.y)
    assert np.array_equal(data.label_noise(ds, 0.0, seed=7).y, ds.y)
    # routed through apply with the dataset seed
    cfg = config.validate({"experiments": {"sweep": {"label_noise": [0.2]}}})
    exp = next(iter(config.experiments(cfg).values()))
    out = data.for_experiment(cfg["dataset"], exp.transforms)
    base = data.generate(cfg["dataset"])
    assert (out.y != base.y).sum() == 2


def test_experiment_affine_composes_in_order():
    ds = data.generate(_ds_cfg())
    steps = [("shear", 0.3), ("rotate", 30), ("translate", -0.5), ("scale", 1.5)]
    A, t, exact = data.experiment_affine(steps, 2)
    assert exact
    np.testing.assert_allclose(data.apply(ds, steps).X, ds.X @ A.T + t, atol=1e-14)
    _, _, exact = data.experiment_affine([("rotate", 30), ("label_noise", 0.1)], 2)
    assert not exact


def _first_preact(theta, sizes, X):
    d, h = sizes[0], sizes[1]
    W1 = theta[:, : h * d].reshape(-1, h, d)
    b1 = theta[:, h * d : h * d + h]
    return X @ W1.transpose(0, 2, 1) + b1[:, None, :]


@pytest.mark.parametrize(
    "steps",
    [[("rotate", 120)], [("shear", -0.7), ("translate", 0.4)], [("reflect", 10), ("scale", 3.0)]],
)
def test_parameter_map_algebra(steps):
    sizes = (2, 2, 2, 2)
    rng = np.random.default_rng(0)
    theta = rng.uniform(-10, 10, size=(32, 18))
    ds = data.generate(_ds_cfg())
    moved = data.apply(ds, steps)
    A, t, _ = data.experiment_affine(steps, 2)
    theta_t = ParamLayout(sizes).map_first_layer(theta, A, t)
    # only the first layer changes, and it maps back exactly
    np.testing.assert_array_equal(theta_t[:, 6:], theta[:, 6:])
    np.testing.assert_allclose(data.to_reference(theta_t, sizes, A, t), theta, atol=1e-12)
    # the first layer's pre-activations agree, so every later quantity does
    np.testing.assert_allclose(
        _first_preact(theta_t, sizes, moved.X), _first_preact(theta, sizes, ds.X), atol=1e-12
    )
    # and so does the energy of the full model
    ref = Target(MLP(sizes, "tanh", "cross_entropy"), ds.X, ds.y)
    new = Target(MLP(sizes, "tanh", "cross_entropy"), moved.X, moved.y)
    np.testing.assert_allclose(new.U(theta_t), ref.U(theta), rtol=1e-12)


def test_shuffle_permutes_the_inputs_and_the_first_layer_maps_it_back():
    """shuffle: every point's coordinates in one seeded order (0: as they are). A fully
    connected network on the shuffled inputs, with its first layer's columns permuted the
    same way (the transform's parameter map), has the same energy to rounding."""
    ds = data.generate(_ds_cfg(n_features=6, n_points=30))
    order = data.feature_permutation(3, 6)
    assert sorted(order) == list(range(6)) and not np.array_equal(order, np.arange(6))
    assert np.array_equal(data.feature_permutation(3, 6), order)  # seeded
    assert np.array_equal(data.feature_permutation(0, 6), np.arange(6))
    moved = data.apply(ds, [("shuffle", 3)])
    np.testing.assert_array_equal(moved.X, ds.X[:, order])
    np.testing.assert_array_equal(moved.y, ds.y)
    sizes = (6, 3, 2)
    theta = np.random.default_rng(2).uniform(-3, 3, size=(8, ParamLayout(sizes).p))
    A, t, exact = data.experiment_affine([("shuffle", 3)], 6)
    assert exact
    theta_t = ParamLayout(sizes).map_first_layer(theta, A, t)
    ref = Target(MLP(sizes, "tanh", "cross_entropy"), ds.X, ds.y)
    new = Target(MLP(sizes, "tanh", "cross_entropy"), moved.X, moved.y)
    np.testing.assert_allclose(new.U(theta_t), ref.U(theta), rtol=1e-12)
    for bad in (1.5, -1):
        with pytest.raises(ValueError, match="shuffle takes a non-negative integer seed"):
            data.feature_permutation(bad, 6)
    with pytest.raises(config.ConfigError, match="shuffle"):
        config.validate({"experiments": {"sweep": {"shuffle": [0, 0.5]}}})


def test_rotation_map_is_w1_r():
    sizes = (2, 3, 2)
    R = data.rotation_matrix(240)
    theta = np.random.default_rng(1).normal(size=(5, 17))
    back = data.to_reference(theta, sizes, R)
    np.testing.assert_allclose(
        back[:, :6].reshape(5, 3, 2), theta[:, :6].reshape(5, 3, 2) @ R, atol=1e-15
    )


def test_regression_and_bias_configs_are_checked_before_any_job():
    perm = {"dataset": {"generator": "permute3"}, "model": {"loss": "mse", "bias": "none"}}
    assert config.validate(perm)["model"]["bias"] == "none"
    with pytest.raises(config.ConfigError, match="translate: without a first-layer bias"):
        config.validate({**perm, "experiments": {"sweep": {"translate": [0, 1]}}})
    with pytest.raises(config.ConfigError, match="label_noise: a regression dataset"):
        config.validate({**perm, "experiments": {"sweep": {"label_noise": [0.1]}}})
    with pytest.raises(config.ConfigError, match="sigmoid's sign symmetry"):
        config.validate({"model": {"activation": "sigmoid", "bias": "hidden"}})
    # the layout: 2-3-2 without biases has p = 12, with hidden biases 15
    assert ParamLayout((2, 3, 2), "none").p == 12 and ParamLayout((2, 3, 2), "hidden").p == 15


def test_mnist1d_is_the_authors_training_split_and_their_logistic_regression_score():
    """Known answer: MNIST-1D generated here (seed 42, the authors' set) is their training
    split of 4,000 40-point sequences of 10 classes, and scikit-learn's logistic regression
    trained on them scores their 32 % on their test split of 1,000 (predict.n_test; tolerance 4
    points: the binomial standard error is 1.5), which shares no sequence with the training
    split. The generator leaves numpy's global generator as it was."""
    pytest.importorskip("mnist1d")  # the optional extra: pip install -e ".[mnist1d]"
    from sklearn.linear_model import LogisticRegression

    np.random.seed(7)  # noqa: NPY002 (the global generator the package seeds)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    ds = data.generate({"generator": "mnist1d", "seed": 42})
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert (ds.n_points, ds.n_features, ds.n_classes) == (4000, 40, 10)
    assert data.shape_of(config.validate({"dataset": {"generator": "mnist1d"}})["dataset"]) == (
        4000, 40, 10,
    )  # fmt: skip
    assert np.bincount(ds.y).min() > 300  # every class present
    test = data.heldout({"generator": "mnist1d", "seed": 42}, 1000)
    assert np.abs(test.X[:, None, :] - ds.X[None, :, :]).sum(axis=2).min() > 1e-9
    fit = LogisticRegression(max_iter=2000).fit(ds.X, ds.y)
    assert abs(fit.score(test.X, test.y) - 0.32) < 0.04
    small = data.generate({"generator": "mnist1d", "seed": 42, "subset": 100})
    assert np.array_equal(small.X, ds.X[:100]) and np.array_equal(small.y, ds.y[:100])


def test_mnist1d_without_its_package_says_how_to_install_it(monkeypatch):
    """Mocked: the package may be installed here, so its absence is simulated."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mnist1d" else real(name, *a)
    )
    with pytest.raises(config.ConfigError, match=r'pip install -e "\.\[mnist1d\]"'):
        config.validate({"dataset": {"generator": "mnist1d"}, "model": {"hidden": [8]}})


def test_digits_subset_above_its_images_is_a_config_error():
    with pytest.raises(config.ConfigError, match="digits has 1797 images"):
        config.validate({"dataset": {"generator": "digits", "subset": 2000}})


# --- test splits (predict.n_test) ---------------------------------------------------------

LEARNABLE = [
    ("xor", {}),
    ("moons", {}),
    ("circles", {}),
    ("blobs", {"n_features": 3, "n_classes": 4}),
    ("digits", {"subset": 500}),
    ("teacher", {"n_features": 5, "n_classes": 3}),
]  # MNIST-1D's test split: its authors' known answer, above


def _settings(generator: str, seed: int = 0, **extra) -> dict:
    return section("dataset", {"generator": generator, "n_points": 300, "seed": seed, **extra})


@pytest.mark.parametrize(("generator", "extra"), LEARNABLE)
def test_a_test_split_is_new_points_of_the_same_problem(generator, extra):
    """5 nearest training neighbours classify the test points far above chance, and no test
    point is a training point."""
    for seed in (0, 1):
        cfg = _settings(generator, seed, **extra)
        train, test = data.generate(cfg), data.heldout(cfg, 400)
        assert test.n_points == 400 and test.n_features == train.n_features
        gaps = np.abs(test.X[:, None, :] - train.X[None, :, :]).sum(axis=2)
        assert gaps.min() > 1e-9, "a training point among the test points"
        chance = np.bincount(test.y).max() / test.n_points
        knn = KNeighborsClassifier(5).fit(train.X, train.y).score(test.X, test.y)
        assert knn > chance + 0.25, (seed, knn, chance)


def test_random_labels_cannot_be_predicted():
    """uniform's labels are drawn independently of its points: the test labels too, so a
    predictor fit on the training points scores chance, within 3 binomial standard errors
    (2 classes, 2,000 test points), at every seed."""
    n = 2000
    for seed in range(5):
        cfg = _settings("uniform", seed)
        train, test = data.generate(cfg), data.heldout(cfg, n)
        knn = KNeighborsClassifier(1).fit(train.X, train.y).score(test.X, test.y)
        assert abs(knn - 0.5) < 3 * np.sqrt(0.25 / n), (seed, knn)


def test_the_training_points_do_not_move_and_the_split_is_seeded():
    cfg = _settings("teacher", n_features=4, n_classes=3)
    a, b = data.heldout(cfg, 50), data.heldout(cfg, 80)
    np.testing.assert_array_equal(a.X, b.X[:50])
    assert not np.array_equal(a.X, data.heldout(_settings("teacher", 1, n_features=4), 50).X)
    # what a test split is drawn from never changes the training points
    np.testing.assert_array_equal(data.generate(cfg).X, data.teacher(300, 4, 3, 0).X)


def test_digits_test_images_are_scaled_as_the_subset_is():
    cfg = _settings("digits", subset=400)
    test = data.heldout(cfg, 1397)  # every other image: the whole set, in two parts
    train = data.generate(cfg)
    X = np.vstack([train.X, test.X])
    assert np.abs(train.X.mean(axis=0)).max() < 1e-12
    assert np.abs(X.mean(axis=0)).max() > 1e-3  # the test part is not standardized alone
    with pytest.raises(ValueError, match="outside the subset"):
        data.heldout(cfg, 1398)


def test_test_transforms_move_inputs_and_never_labels():
    cfg = _settings("teacher", n_features=4, n_classes=3)
    base = data.heldout(cfg, 100)
    moved = data.test_for_experiment(cfg, [("scale", 2.0), ("label_noise", 0.5)], 100)
    np.testing.assert_allclose(moved.X, 2 * base.X)
    np.testing.assert_array_equal(moved.y, base.y)


def test_a_users_file_gives_its_own_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.normal(size=(20, 3)), y=np.arange(20) % 2,
             X_test=rng.normal(size=(7, 3)), y_test=np.arange(7) % 2)  # fmt: skip
    cfg = section("dataset", {"generator": "file", "path": str(path)})
    test = data.heldout(cfg, 5)
    assert test.X.shape == (5, 3) and data.heldout_available(cfg) == 7
    np.savez(path, X=rng.normal(size=(20, 3)), y=np.arange(20) % 2)
    with pytest.raises(ValueError, match="X_test"):
        data.heldout(cfg, 5)
    assert data.heldout_available(cfg) == 0
