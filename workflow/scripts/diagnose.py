"""Rule diagnose: convergence table and checks, trace/rank plots of U, R-hat per parameter."""

from pathlib import Path

from _common import setup_logging

from lossatlas import diagnostics, plots
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "diagnose")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    energy = store.stat("energy")
    # Streams theta by parameter blocks; the whole array is never read.
    table, norm, verdict = diagnostics.from_config(store.theta, energy, store.param_names, cfg)

paths = diagnostics.write(Path(sm.output.summary).parent, table, norm, verdict)
for key in ("summary", "normality", "convergence"):
    if Path(paths[key]) != Path(sm.output[key]):
        raise RuntimeError(
            f"diagnostics.write wrote {paths[key]}, the rule expects {sm.output[key]}"
        )

dpi = sm.params.dpi
plots.trace(energy, sm.output.trace, name="U", title=sm.wildcards.exp, dpi=dpi)
plots.rank(energy, sm.output.rank, name="U", title=sm.wildcards.exp, dpi=dpi)
plots.rhat(
    table, sm.output.rhat, rhat_max=cfg["diagnose"]["rhat_max"], title=sm.wildcards.exp, dpi=dpi
)
log.info("%s: pass=%s, U: %s", sm.wildcards.exp, verdict["pass"], verdict["energy"])
