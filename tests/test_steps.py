"""The config boundary: steps declare what they read, rules pass exactly that, scripts are glue,
and no library default contradicts the schema."""

from __future__ import annotations

import ast
import inspect
import pickle
import re

import pytest
from conftest import REPO

from lossatlas import config, plots, sampling, steps
from lossatlas.analysis import compare, diagnostics, dimension, minima, reduce
from lossatlas.sampling import engine
from lossatlas.storage import streaming

SCRIPTS = sorted(p for p in (REPO / "workflow" / "scripts").glob("*.py") if p.name != "_common.py")
RULES = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))


def schema_default(path: str):
    node = config.load_schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node.get("default")


def test_settings_hold_only_what_the_step_declares():
    cfg = config.validate({})
    s = steps.settings("figures", cfg)
    assert set(s) == {"experiments", "target", "figures"}
    assert set(s["target"]) == {"good_threshold"} and set(s["figures"]) == {"dpi"}
    with pytest.raises(steps.UndeclaredSetting, match=r"read the setting target\.box"):
        s["target"]["box"]
    with pytest.raises(KeyError, match=r"READS\['figures'\]"):
        s["seed"]


def test_settings_repr_ignores_the_config_order_and_survives_pickling():
    cfg = config.validate({})
    reordered = dict(reversed(list(cfg.items())))
    reordered["target"] = dict(reversed(list(cfg["target"].items())))
    a, b = steps.settings("sample", cfg), steps.settings("sample", reordered)
    assert list(a) != list(b) and repr(a) == repr(b)  # Snakemake compares params by repr
    c = pickle.loads(pickle.dumps(b))
    assert isinstance(c["target"], steps.Settings) and c == b and list(c) == list(b)
    assert c.step == "sample" and not a.reads  # repr and pickling read nothing


def test_reads_are_recorded_through_unpacking():
    s = steps.settings("dimension", config.validate({}))
    kw = steps.dimension_arguments(s)
    assert kw["n_null"] == 49
    assert "landscape.dimension.n_null" in s.reads and "target.box" in s.reads
    assert "reduce.kpca.max_exact" not in s  # declared leaves only


@pytest.mark.parametrize("step", sorted(steps.READS))
def test_every_declared_path_is_a_schema_field(step):
    schema = config.load_schema()
    for path in steps.READS[step] + steps.RUNTIME.get(step, ()):
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"{step}: {path} is not in the schema"
            node = node["properties"][part]


def test_every_rule_runs_its_step_with_its_settings_as_params():
    """Every rule runs the one script, which calls the step named after the rule; every step
    has a rule, and every rule passes that step's settings as its params."""
    rules = re.findall(r"^rule (\w+):", RULES, flags=re.M)
    with_steps = [r for r in rules if r in steps.READS]
    assert sorted(with_steps) == sorted(steps.READS)
    for rule in with_steps:
        assert f'settings=step_settings("{rule}")' in RULES, rule
    assert RULES.count('"../scripts/step.py"') == len(with_steps)
    assert [p.name for p in SCRIPTS] == ["step.py"]


def test_a_step_takes_only_what_a_job_offers():
    """run_job fills a step's parameters by name: each step's are among those it offers."""
    offered = {"inputs", "outputs", "s", "name", "exp", "names", "threads", "run", "log"}
    for step in steps.READS:
        params = inspect.signature(getattr(steps.home(step), step)).parameters
        assert set(params) <= offered, (step, set(params) - offered)
        assert "s" in params and "log" in params, step
        assert ("run" in params) == (step in steps.RUNTIME), step


def test_the_script_is_glue():
    """The script calls run_job and nothing of the config but which steps run Dask."""
    tree = ast.parse(SCRIPTS[0].read_text())
    calls = [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "steps"
    ]
    assert calls == ["run_job"]


# (function, parameter) -> the schema field whose default it must equal
DEFAULTS = {
    (dimension.dimension_table, "n_boot"): "landscape.dimension.n_boot",
    (dimension.dimension_table, "n_null"): "landscape.dimension.n_null",
    (dimension.dimension_table, "alpha"): "landscape.dimension.alpha",
    (dimension.dimension_table, "k_pca"): "landscape.dimension.k_pca",
    (dimension.dimension_table, "discard"): "landscape.dimension.twonn_discard",
    (dimension.dimension_table, "k1"): "landscape.dimension.mle_k1",
    (dimension.dimension_table, "k2"): "landscape.dimension.mle_k2",
    (dimension.dimension_table, "max_points"): "landscape.dimension.max_points",
    (compare.compare_clouds, "k"): "landscape.compare.k",
    (compare.compare_clouds, "method"): "landscape.compare.method",
    (compare.compare_clouds, "n_perm"): "landscape.compare.n_perm",
    (compare.compare_clouds, "max_points"): "landscape.compare.max_points",
    (minima.census, "merge_tol"): "landscape.census.merge_tol",
    (minima.census, "gtol"): "landscape.census.gtol",
    (minima.census, "maxiter"): "landscape.census.maxiter",
    (minima.census, "n_restarts"): "landscape.census.n_restarts",
    (minima.free_spectrum, "dense_max"): "landscape.census.dense_max",
    (minima.free_spectrum, "n_eig"): "landscape.census.n_eig",
    (minima.free_spectrum, "eig_tol"): "landscape.census.eig_tol",
    (minima.free_spectrum, "eig_maxiter"): "landscape.census.eig_maxiter",
    (minima.select_starts, "n_clusters"): "landscape.census.n_clusters",
    (minima.select_starts, "n_random"): "landscape.census.n_random",
    (minima.select_starts, "max_points"): "landscape.census.max_points",
    (reduce.kernel_pca, "n_components"): "reduce.kpca.n_components",
    (reduce.kernel_pca, "gamma"): "reduce.kpca.gamma",
    (reduce.kernel_pca, "max_exact"): "reduce.kpca.max_exact",
    (reduce.kernel_pca, "approximation"): "reduce.kpca.approximation",
    (reduce.kernel_pca, "n_landmarks"): "reduce.kpca.n_landmarks",
    (reduce.kernel_pca, "kernel_error"): "reduce.kpca.kernel_error",
    (reduce.kernel_pca, "n_heldout"): "reduce.kpca.n_heldout",
    (reduce.kernel_pca, "max_reference_mb"): "reduce.kpca.max_reference_mb",
    (reduce.kernel_pca, "draw_block"): "reduce.draw_block",
    (reduce.kernel_pca, "max_block_mb"): "reduce.max_block_mb",
    (reduce.reduce_draws, "n_pca"): "reduce.pca.n_components",
    (reduce.reduce_draws, "max_gather_mb"): "reduce.pca.max_gather_mb",
    (reduce.reduce_draws, "draw_block"): "reduce.draw_block",
    (reduce.reduce_draws, "max_block_mb"): "reduce.max_block_mb",
    (reduce.pca_of_rows, "n_components"): "reduce.pca.n_components",
    (reduce.pca_of_rows, "max_gather_mb"): "reduce.pca.max_gather_mb",
    (streaming.RowView, "draw_block"): "reduce.draw_block",
    (streaming.RowView, "max_block_mb"): "reduce.max_block_mb",
    (streaming.DrawView, "draw_block"): "reduce.draw_block",
    (streaming.DrawView, "max_block_mb"): "reduce.max_block_mb",
    (diagnostics.diagnose, "block"): "diagnose.param_block",
    (diagnostics.diagnose, "rhat_max"): "diagnose.rhat_max",
    (diagnostics.diagnose, "ess_min"): "diagnose.ess_min",
    (diagnostics.diagnose, "alpha"): "diagnose.normality_alpha",
    (diagnostics.diagnose, "n_batches"): "diagnose.n_batches",
    (diagnostics.verdict, "rhat_max"): "diagnose.rhat_max",
    (diagnostics.verdict, "ess_min"): "diagnose.ess_min",
    (diagnostics.summarize, "block"): "diagnose.param_block",
    (plots.rhat, "rhat_max"): "diagnose.rhat_max",
    (plots.plot_rhat, "threshold"): "diagnose.rhat_max",
    (engine.run_experiment, "lock_timeout"): "dask.lock_timeout",
    (sampling.RWM, "step_size"): "sampler.step_size",
    (sampling.RWM, "target_accept"): "sampler.target_accept",
    (sampling.RWM, "dtype"): "sampler.dtype",
    (sampling.MALA, "step_size"): "sampler.step_size",
    (sampling.MALA, "target_accept"): "sampler.mala.target_accept",
    (sampling.HMC, "step_size"): "sampler.step_size",
    (sampling.HMC, "target_accept"): "sampler.hmc.target_accept",
    (sampling.HMC, "n_leapfrog"): "sampler.hmc.n_leapfrog",
    (sampling.HMC, "mass_window"): "sampler.hmc.mass_window",
    (sampling.HMC, "adapt_mass"): "sampler.hmc.adapt_mass",
    (sampling.Tempered, "beta_min"): "sampler.tempering.beta_min",
    (sampling.Tempered, "ladder"): "sampler.tempering.ladder",
    (sampling.Tempered, "adapt_swap_rate"): "sampler.tempering.adapt_swap_rate",
    (sampling.Tempered, "target_swap_rate"): "sampler.tempering.target_swap_rate",
}


@pytest.mark.parametrize(
    ("fn", "param"), sorted(DEFAULTS, key=lambda k: (k[0].__qualname__, k[1])), ids=str
)
def test_library_defaults_equal_the_schema(fn, param):
    """A library call outside the workflow (a notebook) gets the workflow's numbers."""
    default = inspect.signature(fn).parameters[param].default
    assert default == schema_default(DEFAULTS[fn, param]), f"{fn.__qualname__}({param}=...)"


def test_figure_dpi_defaults_equal_the_schema():
    dpi = schema_default("figures.dpi")
    for name, fn in inspect.getmembers(plots, inspect.isfunction):
        p = inspect.signature(fn).parameters.get("dpi")
        if p is not None and p.default is not inspect.Parameter.empty:
            assert p.default == dpi, name


def test_get_of_an_undeclared_setting_raises():
    """``get`` is no way around the declaration: an undeclared key raises, default or not."""
    s = steps.settings("dataset", config.validate({}))
    with pytest.raises(steps.UndeclaredSetting, match="target"):
        s.get("target", {})
    assert s.get("dataset")["n_points"] == 10
