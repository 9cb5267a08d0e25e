"""Every plot writes a readable, non-empty PNG and leaves no figure open."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lossatlas import config, plots, steps  # noqa: E402
from lossatlas.analysis import connect  # noqa: E402
from lossatlas.analysis import reduce as rd  # noqa: E402
from lossatlas.data import Dataset  # noqa: E402


def _check_png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert np.ptp(img[..., :3]) > 0  # not a blank canvas
    assert plt.get_fignums() == []


@pytest.fixture(scope="module")
def reduction():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3, 40, 5))
    loss = rng.uniform(0, 0.2, size=(3, 40))
    kw = steps.reduce_arguments(config.validate({"seed": 0}))
    return rd.reduce_draws(theta, loss * 10, loss, **kw)


def test_datasets_figure(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (10, 2))
    y = rng.integers(0, 2, 10)
    ds = {f"rotate-{a}": Dataset(X, y, 2) for a in (0, 120, 240)}
    titles = {n: plots.experiment_title(n, [("rotate", int(n.split("-")[1]))]) for n in ds}
    assert titles["rotate-120"] == "rotate-120: θ = 120°"
    plots.plot_datasets(ds, tmp_path / "fig1.png", titles=titles, dpi=50)
    _check_png(tmp_path / "fig1.png")
    # 1-D inputs (config/calibration.yaml): the class on the vertical axis
    plots.plot_datasets({"scale-1": Dataset(X[:, :1], y, 2)}, tmp_path / "one.png", dpi=50)
    _check_png(tmp_path / "one.png")


@pytest.mark.parametrize("which", ["pca_kpca", "pca_param"])
def test_good_minima_figure(tmp_path, reduction, which):
    empty = {"coords": np.empty((0, 2)), "status": "skipped", "message": "0 good draws"}
    results = {"a": reduction, "b": reduction, "none": empty}
    plots.plot_good_minima(results, tmp_path / "fig2.png", which=which, dpi=50)
    _check_png(tmp_path / "fig2.png")


def test_diagnostic_plots(tmp_path, reduction):
    rng = np.random.default_rng(2)
    energy = rng.normal(size=(6, 120))
    plots.plot_trace(energy, tmp_path / "trace.png", dpi=50)
    plots.plot_rank(energy, tmp_path / "rank.png", dpi=50)
    plots.plot_energy_hist(energy, tmp_path / "hist.png", dpi=50)
    rhat = np.array([1.0, 1.005, 1.2, np.nan])
    plots.plot_rhat(["U", "a", "b", "c"], rhat, tmp_path / "rhat.png", dpi=50)
    plots.plot_rhat([f"p{i}" for i in range(100)], np.ones(100), tmp_path / "rhat100.png", dpi=50)
    plots.plot_kpca_3d(reduction.embedding, reduction.energy, tmp_path / "kpca.png", dpi=50)
    plots.plot_kpca_3d(
        reduction.embedding[..., :2], reduction.energy, tmp_path / "k2.png", max_points=50, dpi=50
    )
    for name in ("trace", "rank", "hist", "rhat", "rhat100", "kpca", "k2"):
        _check_png(tmp_path / f"{name}.png")


def test_names_the_workflow_scripts_call(tmp_path, reduction):
    """The calls of workflow/scripts/diagnose.py and figures.py, as written there."""
    from lossatlas.analysis import diagnostics

    rng = np.random.default_rng(3)
    theta = rng.normal(size=(4, 60, 3))
    energy = rng.normal(size=(4, 60))
    table = diagnostics.summarize(theta, energy)
    plots.plot_trace(energy, tmp_path / "t.png", name="U", title="rotate-0", dpi=50)
    plots.plot_rank(energy, tmp_path / "r.png", name="U", title="rotate-0", dpi=50)
    plots.rhat(table, tmp_path / "h.png", rhat_max=1.01, title="rotate-0", dpi=50)
    X = rng.uniform(-1, 1, (10, 2))
    ds = {"rotate-0": Dataset(X, np.arange(10) % 2, 2), "rotate--30": Dataset(X, np.zeros(10), 2)}
    plots.plot_datasets(ds, tmp_path / "f1.png", dpi=50)
    reduction.save(tmp_path / "red.h5")
    reductions = {"rotate-0": rd.load(tmp_path / "red.h5")}
    plots.plot_good_minima(reductions, tmp_path / "f2.png", threshold=0.1, dpi=50)
    for name in ("t", "r", "h", "f1", "f2"):
        _check_png(tmp_path / f"{name}.png")
    assert plots.experiment_title("rotate--30") == "rotate--30: θ = -30°"
    assert plots.experiment_title("scale-2") == "scale-2"


def test_the_components_curve_is_zero_below_the_lowest_minimum():
    """Below the lowest minimum the level set is empty: 0 components, then the counts."""
    x, y = connect.component_steps([0.02, 0.05, 0.3], [1, 3, 1])
    assert y.tolist() == [0, 1, 3, 1] and x[0] < 0.02 and x[1:].tolist() == [0.02, 0.05, 0.3]
    x, y = connect.component_steps([0.0], [1])
    assert y.tolist() == [0, 1] and x[0] < 0.0
