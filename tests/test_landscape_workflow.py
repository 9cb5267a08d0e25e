"""The landscape rules run for real: dry run, a tiny whole run (canonical coordinates), and
config errors of the new fields. Run directories come from conftest.make_workdir."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TEST_CONFIGS, make_workdir, output_of, run_snakemake

from lossatlas import config as lacfg
from lossatlas.analysis import connect

CONFIG = TEST_CONFIGS / "landscape.yaml"
EXPS = ("rotate-0", "rotate-90")
LANDSCAPE_RULES = ("dataset_figure", "pipeline_null", "dimension", "census", "connect", "compare")

DIMENSION_COLUMNS = [
    "experiment",
    "statistic",
    "value",
    "lo",
    "hi",
    "lo_mcse",
    "hi_mcse",
    "null",
    "null_value",
    "null_lo",
    "null_hi",
    "null_lo_mcse",
    "null_hi_mcse",
    "p_null",
    "p_null_mcse",
    "verdict",
    "n_good",
]
CENSUS_COLUMNS = [
    "experiment",
    "id",
    "U",
    "mean_loss",
    "classification",
    "index",
    "n_zero",
    "n_pinned",
    "n_starts",
    "n_roots",
    "basin_share",
    "accuracy",
    "grad_norm",
    "min_eig",
    "max_eig",
    "n_free",
    "n_eig",
    "spectrum",
    "index_exact",
    "n_zero_exact",
    "n_from_all",
    "n_from_good",
    "good",
    "rank_J",
    "cooper_dim",
]
KINDS = {
    "strict minimum",
    "degenerate minimum",
    "saddle",
    "box KKT point",
    "not converged",
    "unclassified",
}


def test_dry_run_plans_the_landscape_rules(tmp_path):
    wd = make_workdir(tmp_path, CONFIG)
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    counts = {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\w+)\s+(\d+)$", text.split("Job stats:", 1)[1], re.M)
    }
    assert {r: counts.get(r) for r in LANDSCAPE_RULES} == {
        "dataset_figure": 2,
        "pipeline_null": 1,  # both experiments have one network
        "dimension": 2,
        "census": 2,
        "connect": 2,
        "compare": 1,
    }


def test_one_experiment_plans_no_comparison(tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["experiments"]["sweep"]["rotate"] = [30]
    wd = make_workdir(tmp_path, cfg)
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    assert "compare" not in proc.stdout.split("Job stats:", 1)[1].split("Reasons", 1)[0]


def test_architecture_sweep_plans_each_network(tmp_path):
    """experiments.sweep.hidden: one experiment per network, each step with its own widths,
    the data transforms without them, one uniform pipeline null per network (a real run of
    this sweep: 42 jobs, compare skips the pairs whose p differs)."""
    from lossatlas import steps

    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["experiments"]["sweep"] = {"hidden": [[2], [2, 2]], "rotate": [0, 90]}
    wd = make_workdir(tmp_path, cfg)
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    v = lacfg.validate(cfg)
    names = list(lacfg.experiments(v))
    assert names == ["hidden-2_rotate-0", "hidden-2_rotate-90", "hidden-2x2_rotate-0"] + [
        "hidden-2x2_rotate-90"
    ]
    for name in names:
        assert f"{name}/samples.h5" in proc.stdout
    nulls = set(re.findall(r"landscape/nulls/(pipeline-[\w-]+)\.npz", proc.stdout))
    assert nulls == {"pipeline-hidden-2", "pipeline-hidden-2-2"}
    assert [lacfg.hidden_of(v, n) for n in names] == [[2], [2], [2, 2], [2, 2]]
    wide = steps.settings_of_experiment("sample", v, "hidden-2x2_rotate-90")
    assert wide["model"]["hidden"] == [2, 2]
    assert steps.settings_of_experiment("census", v, "hidden-2_rotate-0")["model"]["hidden"] == [2]
    assert lacfg.experiments(v)["hidden-2_rotate-90"].transforms == (("rotate", 90),)


@pytest.fixture(scope="module")
def landscape_run(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("landscape"), CONFIG)
    proc = run_snakemake(wd, "--profile", "profiles/default")
    assert proc.returncode == 0, output_of(proc)
    return wd


def test_dimension_tables(landscape_run):
    for exp in EXPS:
        t = pd.read_csv(landscape_run / "results" / exp / "landscape" / "dimension.csv")
        assert list(t.columns) == DIMENSION_COLUMNS
        assert set(t["statistic"]) == {
            *("twonn", "mle", "twonn_naive", "mle_naive", "pca_ev2", "pipeline_ev2"),
        }
        assert set(t["null"]) == {"uniform", "shuffled", "gaussian", "laplace"}
        laplace = t[t["null"] == "laplace"]
        assert "pipeline_ev2" not in set(laplace["statistic"])
        # computed, or a reason: never a bare NaN
        assert (laplace["p_null"].notna() | laplace["verdict"].str.startswith("not computed")).all()
        n_good = int(t["n_good"].iloc[0])
        assert n_good > 30, "the test config must give good draws to analyse"
        p = t["p_null"].dropna()
        assert len(p) and p.between(0, 1).all()
        ev = t[t["statistic"] == "pca_ev2"]
        computed = ~ev["verdict"].str.startswith("not computed")
        assert ev["value"].between(0, 1).all()
        assert ev["null_value"][computed].between(0, 1).all()
        # canonical coordinates project out the 3 flat directions: fewer than p = 18 dimensions
        d = t[t["statistic"].isin(["twonn_naive", "mle_naive"])]["value"]
        assert (d > 0).all() and (d < 18).all()
        # 4 short chains: the lag window leaves too few independent draws, and the rows say so
        lagged = t[t["statistic"].isin(["twonn", "mle"])]
        assert lagged["value"].isna().all()
        assert lagged["verdict"].str.startswith("not computed: about").all()
        assert t["verdict"].str.len().gt(0).all()
        meta = json.loads(
            (landscape_run / "results" / exp / "landscape" / "dimension.json").read_text()
        )
        assert meta["coordinates"] == "canonical" and meta["n_good"] == n_good


def test_census_tables(landscape_run):
    for exp in EXPS:
        d = landscape_run / "results" / exp / "landscape"
        t = pd.read_csv(d / "census.csv")
        assert list(t.columns) == CENSUS_COLUMNS
        assert len(t) >= 1 and set(t["classification"]) <= KINDS
        assert (t["n_starts"] == t["n_from_all"] + t["n_from_good"]).all()
        assert t["basin_share"].sum() == pytest.approx(1.0)
        assert t["accuracy"].between(0, 1).all()
        assert (t["U"].diff().dropna() >= 0).all(), "rows are ordered by U"
        meta = json.loads((d / "census.json").read_text())
        assert meta["key"] == "logits" and sum(meta["counts"].values()) == len(t)
        assert meta["n_starts"] == t["n_starts"].sum()
        # p = 18 <= dense_max: every eigenvalue is computed and the counts are exact
        assert (t["spectrum"] == "dense").all() and (t["n_eig"] == t["n_free"]).all()
        assert t["index_exact"].all() and t["n_zero_exact"].all()
        assert meta["memory"]["max_points"]["limited_by"] == "max_points"
        # the plane is the reduce rule's PCA refitted: it must reproduce reduce's coordinates
        assert meta["plane"]["matches_reduce"] is True
        for png in ("census_loss_index.png", "census_plane.png", "dataset.png"):
            assert (d / png).read_bytes()[:4] == b"\x89PNG"


def test_connect_tables(landscape_run):
    """Every refined pair has a path maximum no lower than its ends and a barrier no lower
    than 0; a pair DSS connects has its path at or below the level; the level sets' component
    counts never exceed the nodes below the level and reach 1 at the top."""
    for exp in EXPS:
        t = pd.read_csv(landscape_run / "results" / exp / "landscape" / "connect.csv")
        meta = json.loads(
            (landscape_run / "results" / exp / "landscape" / "connect.json").read_text()
        )
        assert list(t.columns) == ["experiment", *connect.CONNECT_COLUMNS]
        assert len(t) >= 1 and len(meta["nodes"]) >= 2
        ends = t[["loss_a", "loss_b"]].max(axis=1)
        best = t[["straight_max", "string_path_max"]].min(axis=1)
        assert (best >= ends - 1e-12).all() and (t["barrier"] >= -1e-12).all()
        joined = t[t["connected"]]
        assert (joined["dss_path_max"] <= joined["level"] + 1e-12).all()
        # a pair apart says why: DSS ran out of budget, or an end lies above the level (then
        # no path below the level exists, and DSS does not try)
        apart = t[~t["connected"]]
        above = apart["status"].str.startswith("an end lies above the level")
        assert apart.loc[~above, "status"].str.startswith("not connected within").all()
        assert (ends[apart.index][above] > apart.loc[above, "level"]).all()
        counts = np.asarray(meta["n_components"])
        assert counts[-1] == 1 and counts.max() <= len(meta["nodes"])
        # modulo symmetry: the nearest copy is never farther than the second node itself
        assert (t["sym_distance_ratio"] <= 1 + 1e-12).all()
        sym = t[t["sym_connected"]]
        assert (sym["sym_dss_path_max"] <= sym["level"] + 1e-12).all()
        assert meta["symmetry"] == "whole group"  # 64 elements for 2 -> [2, 2] -> 2, tanh
        sampled = meta["from_samples"]
        assert 1 <= sampled["upper_bound"] <= sampled["n_components_knn"] <= sampled["n_points"]
        assert sum(sampled["sizes"]) == sampled["n_points"]
        for scan in meta["length_by_level"]:
            # a path that connects at a level is never shorter than the straight segment
            assert all(
                length >= 1 - 1e-12
                for length, ok in zip(scan["normalised_length"], scan["connected"], strict=True)
                if ok
            )
        for name in ("connect_tree.png", "connect_profiles.png", "connect_length.png"):
            png = landscape_run / "results" / exp / "landscape" / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_table(landscape_run):
    t = pd.read_csv(landscape_run / "results" / "landscape" / "compare.csv")
    assert list(t["stage"]) == ["before", "after"] and set(t["experiment"]) == {"rotate-90"}
    assert (t["reference"] == "rotate-0").all() and (t["status"] == "ok").all()
    assert t["pvalue"].between(0, 1).all()
    # whole-chain permutations: p-values are multiples of the smallest one the chains allow
    steps = t["pvalue"] / t["smallest_pvalue"]
    assert (t["pvalue"] >= t["smallest_pvalue"]).all() and np.allclose(steps, np.round(steps))
    angles = t[["angle_1", "angle_2"]].to_numpy()
    assert ((angles >= 0) & (angles <= 90)).all()
    assert np.allclose(t["max_angle"], angles.max(axis=1))
    full = json.loads((landscape_run / "results" / "landscape" / "compare.json").read_text())
    assert full[0]["exact"] is True and 0 <= full[0]["frac_outside_box"] <= 1


def test_invariant_diagnostics_and_report(landscape_run):
    d = landscape_run / "results" / "rotate-0" / "diagnostics"
    t = pd.read_csv(d / "invariant.csv")
    assert set(t["space"]) == {"energy", "canonical", "outputs"}
    assert (t["space"] == "outputs").sum() == 10 * 2  # N points x k classes
    raw_u = pd.read_csv(d / "summary.csv").iloc[0]
    inv_u = t[t["space"] == "energy"].iloc[0]
    # U is invariant, so its diagnostics are the same whichever coordinates
    assert inv_u["name"] == "U" and inv_u["r_hat"] == pytest.approx(raw_u["r_hat"])
    probs = t[t["space"] == "outputs"]["mean"]
    assert probs.between(0, 1).all()
    s = json.loads((d / "invariant.json").read_text())
    for space in ("U", "raw parameters", "canonical parameters", "outputs on the data"):
        assert s[space]["n"] > 0 and "max_r_hat" in s[space]
    proc = run_snakemake(landscape_run, "--report", "report.html")
    assert proc.returncode == 0, output_of(proc)
    html = (landscape_run / "report.html").read_text(errors="replace")
    for name in ("dimension.csv", "census.csv", "compare.csv", "energy_hist.png", "kpca_3d.png"):
        assert name in html, name


def test_dimension_reads_the_shared_pipeline_null(landscape_run):
    """Each dimension job takes the uniform nulls (pipeline embeddings, and the clouds'
    statistics where it has the budget's count of good draws) from the pipeline_null rule's
    file, made for its settings, instead of computing them again."""
    logs = landscape_run / "results" / "logs"
    for name in EXPS:
        text = (logs / name / "dimension.log").read_text()
        assert "uniform nulls read from" in text, name
    with np.load(next((landscape_run / "results" / "landscape" / "nulls").glob("*.npz"))) as f:
        assert "uniform/twonn" in f.files and int(f["uniform_m"]) > 0


class Files(list):
    """A rule's named input or output files, as a script sees them (``x.name`` and ``x[i]``)."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)


def test_each_step_reads_exactly_what_it_declares(landscape_run, cells_run, tmp_path):
    """Every step, run here on the workflow's files with its declared settings, reads nothing
    else (an undeclared read raises) and reads something under each declared path, so the
    params are neither too narrow (a setting that silently fails to rerun the job) nor too
    wide; its tables equal the rule's byte for byte."""
    import logging

    from lossatlas import steps

    cfg = lacfg.load(landscape_run / "config" / "config.yaml")
    res = landscape_run / "results"
    log = logging.getLogger("test.steps")
    name, names = "rotate-0", list(EXPS)
    exp = next(iter(lacfg.experiments(cfg).values()))
    exp_param = steps.experiment_param(exp)
    into = Files(samples=res / name / "samples.h5", dataset=res / name / "dataset.npz")
    census_of_exp = {
        "census": res / name / "landscape" / "census.csv",
        "census_points": res / name / "landscape" / "census_points.npz",
    }
    out = tmp_path

    # the cells step needs a relu network, the band steps a regression: they run on
    # tests/configs/cells.yaml's run
    cells_cfg = lacfg.load(cells_run / "config" / "config.yaml")
    cells_res = cells_run / "results" / "hidden-3"

    # sample reads the diagnose rule's blocks for sampler.until's check: run it with until on
    until_cfg = lacfg.validate({**cfg, "sampler": {**cfg["sampler"], "until": {}}})
    # predict runs where test points are held out
    predict_cfg = lacfg.validate({**cfg, "predict": {"n_test": 50, "max_draws": 10}})

    def declared(step):
        if step in ("cells", "critical_points", "band"):
            s = steps.settings_of_experiment(step, cells_cfg, "hidden-3")
        elif step in ("sample", "restore"):
            s = steps.settings(step, until_cfg)
        elif step == "predict":
            s = steps.settings(step, predict_cfg)
        else:
            s = steps.settings(step, cfg)
        yield s
        for path in steps.READS[step]:
            assert any(r == path or r.startswith(f"{path}.") for r in s.reads), (step, path)

    runs = {
        "dataset": lambda s: steps.dataset([out / "dataset.npz"], s, exp_param, log),
        "sample": lambda s: steps.sample(
            into,
            Files(samples=out / "sample" / "samples.h5"),
            s,
            steps.runtime("sample", cfg),
            exp_param,
            1,
            log,
        ),
        # over the store the sample step just wrote: nothing to sample again, energies equal
        "restore": lambda s: steps.restore(
            Files(dataset=into.dataset, samples=out / "sample" / "samples.h5"),
            Files(restored=out / "restored.json"),
            s,
            steps.runtime("restore", cfg),
            exp_param,
            1,
            log,
        ),
        "diagnose": lambda s: steps.diagnose(
            into,
            Files(
                **{
                    k: out / f"{k}.{ext}"
                    for k, ext in (
                        ("summary", "csv"),
                        ("normality", "csv"),
                        ("convergence", "json"),
                        ("trace", "png"),
                        ("rank", "png"),
                        ("rhat", "png"),
                        ("invariant", "csv"),
                        ("invariant_summary", "json"),
                    )
                }
            ),
            s,
            name,
            1,
            log,
        ),
        "reduce": lambda s: steps.reduce(
            into,
            Files(
                reduction=out / "reduction.h5",
                summary=out / "reduce.json",
                kpca_3d=out / "kpca.png",
                energy_hist=out / "energy_hist.png",
            ),
            s,
            name,
            log,
        ),
        "figures": lambda s: steps.figures(
            Files(
                datasets=[res / n / "dataset.npz" for n in names],
                reductions=[res / n / "reduce" / "reduction.h5" for n in names],
            ),
            Files(fig1=out / "fig1.png", fig2=out / "fig2.png"),
            s,
            names,
            log,
        ),
        "dataset_figure": lambda s: steps.dataset_figure(
            into, Files(figure=out / "dataset.png"), s, exp_param, log
        ),
        "pipeline_null": lambda s: steps.pipeline_null(
            Files(dataset=into.dataset), Files(null=out / "pipeline_null.npz"), s, name, log
        ),
        "dimension": lambda s: steps.dimension(
            Files(**into.__dict__, **census_of_exp),
            Files(table=out / "dimension.csv", json=out / "dimension.json"),
            s,
            name,
            log,
        ),
        "hessian": lambda s: steps.hessian(
            Files(dataset=into.dataset, **census_of_exp),
            Files(table=out / "hessian.csv", finding=out / "hessian.json", figure=out / "h.png"),
            s,
            name,
            log,
        ),
        "predict": lambda s: steps.predict(
            into,
            Files(table=out / "predict.csv", finding=out / "predict.json", figure=out / "p.png"),
            s,
            exp_param,
            log,
        ),
        "census": lambda s: steps.census(
            Files(**into.__dict__, reduction=res / name / "reduce" / "reduction.h5"),
            Files(
                table=out / "census.csv",
                json=out / "census.json",
                points=out / "census_points.npz",
                loss_index=out / "loss_index.png",
                plane=out / "plane.png",
            ),
            s,
            name,
            log,
        ),
        "findings": lambda s: steps.findings(
            Files(
                **{
                    part: [res / n / sub for n in names]
                    for part, sub in (
                        ("convergence", "diagnostics/convergence.json"),
                        ("reduce", "reduce/summary.json"),
                        ("dimension", "landscape/dimension.json"),
                        ("census", "landscape/census.json"),
                    )
                },
                compare=[res / "landscape" / "compare.json"],
                checks=[],
                analyses=[res / n / "landscape" / "hessian.json" for n in names],
                method=REPO / "workflow" / "report" / "workflow.rst",
            ),
            Files(page=out / "findings.rst", html=out / "findings.html", json=out / "f.json"),
            s,
            names,
            log,
        ),
        "connect": lambda s: steps.connect(
            Files(samples=into.samples, dataset=into.dataset, **census_of_exp),
            Files(
                table=out / "connect.csv",
                json=out / "connect.json",
                tree=out / "tree.png",
                profiles=out / "profiles.png",
                length=out / "length.png",
            ),
            s,
            name,
            log,
        ),
        "cells": lambda s: steps.cells(
            Files(
                samples=cells_res / "samples.h5",
                dataset=cells_res / "dataset.npz",
                census=cells_res / "landscape" / "census.csv",
                census_points=cells_res / "landscape" / "census_points.npz",
            ),
            Files(table=out / "cells.csv", json=out / "cells.json", figure=out / "cells.png"),
            s,
            "hidden-3",
            log,
        ),
        "critical_points": lambda s: steps.critical_points(
            Files(dataset=cells_res / "dataset.npz"),
            Files(table=out / "critical_points.csv"),
            s,
            steps.experiment_param(lacfg.experiments(cells_cfg)["hidden-3"]),
            log,
        ),
        "band": lambda s: steps.band(
            Files(tables=[out / "critical_points.csv"]),
            Files(table=out / "band.csv", json=out / "band.json", figure=out / "band.png"),
            s,
            ["hidden-3"],
            log,
        ),
        "theory": lambda s: steps.theory(
            Files(
                datasets=[into.dataset],
                census=[census_of_exp["census"]],
                connect=[res / name / "landscape" / "connect.csv"],
            ),
            Files(table=out / "checks.csv"),
            s,
            [name],
            log,
        ),
        "compare": lambda s: steps.compare(
            Files(
                samples=[res / n / "samples.h5" for n in names],
                datasets=[res / n / "dataset.npz" for n in names],
            ),
            Files(table=out / "compare.csv", json=out / "compare.json", figure=out / "c.png"),
            s,
            names,
            log,
        ),
    }
    assert sorted(runs) == sorted(steps.READS)
    for step, run in runs.items():
        for s in declared(step):
            run(s)
    for mine, rules in (
        ("dataset.npz", f"{name}/dataset.npz"),
        ("dimension.csv", f"{name}/landscape/dimension.csv"),
        ("census.csv", f"{name}/landscape/census.csv"),
        ("connect.csv", f"{name}/landscape/connect.csv"),
        ("hessian.json", f"{name}/landscape/hessian.json"),
        ("summary.csv", f"{name}/diagnostics/summary.csv"),
        ("reduce.json", f"{name}/reduce/summary.json"),
        ("compare.csv", "landscape/compare.csv"),
        ("findings.rst", "findings.rst"),
    ):
        assert (out / mine).read_bytes() == (res / rules).read_bytes(), mine
    assert (out / "cells.csv").read_bytes() == (cells_res / "landscape" / "cells.csv").read_bytes()


def test_findings_of_one_experiment(landscape_run, tmp_path):
    """With one experiment each named input is a list of one file and there is no
    comparison; the first page names that experiment only."""
    import logging

    from lossatlas import steps

    cfg = lacfg.load(landscape_run / "config" / "config.yaml")
    res = landscape_run / "results"
    parts = {
        "convergence": "diagnostics/convergence.json",
        "reduce": "reduce/summary.json",
        "dimension": "landscape/dimension.json",
        "census": "landscape/census.json",
    }
    out = Files(page=tmp_path / "f.rst", html=tmp_path / "f.html", json=tmp_path / "f.json")
    steps.findings(
        Files(
            **{part: [res / "rotate-0" / sub] for part, sub in parts.items()},
            compare=[],
            checks=[],
            analyses=[],
            method=REPO / "workflow" / "report" / "workflow.rst",
        ),
        out,
        steps.settings("findings", cfg),
        ["rotate-0"],
        logging.getLogger("test.findings"),
    )
    page = out.page.read_text()
    assert "rotate-0" in page and "rotate-120" not in page


def test_the_rule_agrees_with_the_census_and_reaches_the_findings(landscape_run):
    """On a real run: the hessian rule's dense spectra are the census's (the same points, the
    same central differences: the top and bottom eigenvalues agree to rounding), and its line
    is on the findings page of every experiment."""
    res = landscape_run / "results"
    page = (res / "findings.rst").read_text()
    for exp in sorted(p.parent.parent.name for p in res.glob("*/landscape/hessian.csv")):
        table = pd.read_csv(res / exp / "landscape" / "hessian.csv")
        census = pd.read_csv(res / exp / "landscape" / "census.csv").set_index("id")
        assert len(table) and (table["method"] == "dense").all()
        at = census.loc[table["id"]]
        np.testing.assert_allclose(table["lambda_max"], at["max_eig"], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(table["lambda_min"], at["min_eig"], rtol=1e-9, atol=1e-15)
        assert (table["n_free"].to_numpy() == at["n_free"].to_numpy()).all()
        assert "Hessian at the census minima" in page
    assert len(list(res.glob("*/landscape/hessian.png"))) == len(EXPS)
