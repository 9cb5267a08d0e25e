"""The tools behind the docs' claims: tools/compare_runs.py (byte identity of two runs) and
tools/findings_table.py (the default run's table, written from its findings)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import yaml
from conftest import REPO

from lossatlas import config as lacfg


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_folder(root, *, table=b"a,b\n1,2\n", figure=b"png-1"):
    files = {
        "rotate-0/chains/batch-0000.h5": b"draws",
        "rotate-0/diagnostics/summary.csv": table,
        "rotate-0/reduce/summary.json": b"{}",
        "landscape/nulls/pipeline-hidden-2-2.npz": b"npz",
        "rotate-0/samples.h5": bytes(root.name, "ascii"),  # a view: differs, never compared
        "figures/fig1_datasets.png": figure,
        "logs/rotate-0/sample.log": bytes(root.name, "ascii"),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_compare_runs_compares_the_numbers_and_only_them(tmp_path, capsys):
    compare = _tool("compare_runs")
    a = _run_folder(tmp_path / "a")
    b = _run_folder(tmp_path / "b", figure=b"png-2")
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 files identical" in out and "identical rotate-0/chains/batch-0000.h5" in out
    assert "samples.h5" not in out and ".png" not in out and ".log" not in out
    (b / "rotate-0/diagnostics/summary.csv").write_bytes(b"a,b\n1,3\n")
    (b / "landscape/nulls/pipeline-hidden-2-2.npz").unlink()
    assert compare.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT rotate-0/diagnostics/summary.csv" in out
    assert f"MISSING   landscape/nulls/pipeline-hidden-2-2.npz (only in {a})" in out
    assert "2 of 4 files identical" in out


def test_findings_table_is_written_from_the_default_runs_findings(tmp_path):
    """docs/default-run.md's table is what tools/findings_table.py renders from the findings it
    was made from (kept beside it), and those findings are of today's default config: a change
    of defaults fails here until the table is regenerated from a fresh run."""
    tool = _tool("findings_table")
    doc = (REPO / "docs" / "default-run.md").read_text()
    found = json.loads(tool.SNAPSHOT.read_text())
    assert tool.block_of(doc) == tool.table(found)
    default = lacfg.validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert found["config"] == json.loads(json.dumps({k: default[k] for k in found["config"]}))
    # --write replaces the block and nothing else
    copy = tmp_path / "doc.md"
    shutil.copyfile(REPO / "docs" / "default-run.md", copy)
    copy.write_text(tool.replace_block(copy.read_text(), "| x |\n"))
    assert tool.main([str(tool.SNAPSHOT), "--write", "--doc", str(copy)]) == 0
    assert copy.read_text() == doc


def test_readme_test_times_are_the_tools_lines():
    """The README's test times are lines tools/test_times.py writes: both tiers, each with its
    wall time, its count, the cores and the load it ran under."""
    tool = _tool("test_times")
    readme = (REPO / "README.md").read_text()
    block = readme.split(tool.BEGIN, 1)[1].split(tool.END, 1)[0].strip().splitlines()
    pattern = (
        r"- (fast tier|full suite): \d+ min \d\d s, [\d,]+ passed(, \d+ skipped)? "
        r"\(\d+ cores, load [\d.]+ at the start, \d{4}-\d\d-\d\d\)"
    )
    assert [re.fullmatch(pattern, line)[1] for line in block] == ["fast tier", "full suite"]
    fake = {"fast tier": {"seconds": 61.4, "load": 1.0, "counts": {"passed": 1000}, "rc": 0}}
    assert tool.lines(fake).startswith("- fast tier: 1 min 01 s, 1,000 passed (")
