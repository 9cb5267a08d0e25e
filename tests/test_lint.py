"""The code standards, enforced: ruff, snakefmt, snakemake's own linter and the layers
(import-linter's contracts in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["snakefmt", "--check", "."],
        ["snakemake", "--lint", "--workflow-profile", "none"],
        ["lint-imports"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "snakemake-lint", "lint-imports"],
)
def test_clean(args):
    proc = subprocess.run(
        [_tool(args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    if args[0] == "snakemake":
        # --lint exits 0 even when it has findings; its all-clear line is the signal.
        assert "Congratulations" in out, out[-3000:]
