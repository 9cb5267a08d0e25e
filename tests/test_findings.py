"""lossatlas.findings: the report's first page from the result summaries."""

import json

from lossatlas import findings


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _experiment(tmp_path, name, *, converged, p_null, verdict):
    group = {"pass": converged, "max_r_hat": 1.001, "min_ess_bulk": 900.0}
    conv = {
        "n_chains": 4,
        "n_draws": 100,
        "pass": converged,
        "pass_raw_parameters": False,
        "reading": "converged" if converged else "not converged: U: R-hat 1.2",
        "identifiable": {"U": group, "outputs on the data": {**group, "pass": True}},
    }
    reduce = {"good": {"n_good": 123, "fraction": 0.3075, "threshold": 0.1}}
    row = {"statistic": "twonn", "value": 2.04, "null_value": 5.0, "p_null": p_null}
    dim = {"rows": [{**row, "null": "uniform", "verdict": verdict}]}
    census = {
        "n_starts": 10,
        "key": "outputs",
        "counts": {"strict minimum": 2, "saddle": 1},
        "rows": [{"good": True}, {"good": True}, {"good": False}],
    }
    d = tmp_path / name
    return [
        _write(d / "convergence.json", conv),
        _write(d / "summary.json", reduce),
        _write(d / "dimension.json", dim),
        _write(d / "census.json", census),
    ]


def test_first_page_states_each_experiments_verdicts(tmp_path):
    a = _experiment(tmp_path, "rotate-0", converged=True, p_null=0.01, verdict="below the uniform")
    b = _experiment(
        tmp_path, "rotate-120", converged=False, p_null=0.4, verdict="explained by construction"
    )
    compare = _write(
        tmp_path / "compare.json",
        [
            {
                "experiment": "rotate-120",
                "reference": "rotate-0",
                "method": "energy",
                "status": "ok",
                "before": {"statistic": 3.0, "pvalue": 0.01, "verdict": "differ (p = 0.01, ...)"},
                "after": {"statistic": 0.1, "pvalue": 0.62},
                "common_box": {"other_dropped_fraction": 0.31},
            }
        ],
    )
    parts = ("convergence", "reduce", "dimension", "census")
    files = {p: [a[i], b[i]] for i, p in enumerate(parts)}
    found = findings.gather(["rotate-0", "rotate-120"], files, compare)
    page = findings.summary(found)
    assert page.startswith("Findings\n========\n")
    assert (
        "- **rotate-0**: converged (U, outputs, canonical parameters); raw parameters do not mix"
        in page
    )
    assert "- **rotate-120**: not converged: U; raw parameters do not mix" in page
    assert "123 of 400 draws good" in page
    assert "uniform: below (p = 0.01)" in page and "uniform: not distinguishable (p = 0.4)" in page
    assert "1 saddle, 2 strict minima (from 10 starts); 2 of them good" in page
    assert (
        "as sampled: differ (p = 0.01); mapped back inside both boxes (31 % left out): "
        "not distinguishable (p = 0.62)"
    ) in page
    full = findings.details(found, "The method.")
    assert "The method." in full and ".. list-table::" in full
    html = findings.html(full)
    assert "<table" in html and "rotate-120" in html


def test_a_failed_theory_check_heads_the_first_page(tmp_path):
    """The theory rule's table reaches the findings: a failed check is named first, with what
    was predicted and measured; every check is in the full page."""
    a = _experiment(tmp_path, "scale-1", converged=True, p_null=0.01, verdict="below the uniform")
    parts = ("convergence", "reduce", "dimension", "census")
    files = {p: [a[i]] for i, p in enumerate(parts)}
    checks = tmp_path / "checks.csv"
    checks.write_text(
        "experiment,check,quantity,predicted,measured,tolerance,passed,note\n"
        "scale-1,cooper,n_zero = free coordinates - rN: interpolating minima that disagree,"
        "0,1,none,False,disagree: id 3 (19 expected 18)\n"
        "scale-1,cooper,cooper_dim = p - rN: interpolating minima that disagree,0,0,none,True,\n"
    )
    found = findings.gather(["scale-1"], files, None, checks)
    page = findings.summary(found)
    assert "**theory checks: 1 of 2 FAILED** (checks.csv)" in page
    assert "scale-1 cooper: n_zero = free coordinates - rN" in page
    assert "cooper_dim" not in page  # a passed row waits for the full page
    full = findings.details(found, "The method.")
    assert "Theory checks" in full and "cooper_dim = p - rN" in full and "(passed)" in full
    passed = tmp_path / "passed.csv"
    passed.write_text(checks.read_text().replace("False", "True"))
    page = findings.summary(findings.gather(["scale-1"], files, None, passed))
    assert "theory checks: all 2 passed" in page
