"""Rule diagnose: convergence table and checks, trace/rank plots of U, R-hat per parameter,
the same on canonical parameters and invariant quantities, and the energy histogram."""

import json
from pathlib import Path

from _common import setup_logging

from lossatlas import diagnostics, landscape, plots
from lossatlas.data import Dataset
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "diagnose")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    energy = store.stat("energy")
    # Streams theta by parameter blocks; the whole array is never read.
    table, norm, verdict = diagnostics.from_config(
        store.theta, energy, store.param_names, cfg, workers=sm.threads
    )
    # Symmetric copies of one network look like unmixed modes in raw coordinates; canonical
    # parameters and the outputs on the data do not change under the symmetries.
    inv, inv_summary = landscape.invariant_diagnostics(
        store,
        Dataset.load(sm.input.dataset),
        cfg,
        table,
        workers=sm.threads,
        tmp_dir=Path(sm.output.summary).parent,
    )
inv.to_csv(sm.output.invariant, index=False)
Path(sm.output.invariant_summary).write_text(json.dumps(inv_summary, indent=2) + "\n")

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
plots.plot_energy_hist(energy, sm.output.energy_hist, dpi=dpi)
for space in ("U", "raw parameters", "canonical parameters", "outputs on the data"):
    log.info("%s: %s %s", sm.wildcards.exp, space, inv_summary[space])
log.info("%s: pass=%s, U: %s", sm.wildcards.exp, verdict["pass"], verdict["energy"])
