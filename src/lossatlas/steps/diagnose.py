"""Step of the diagnose rule: convergence, on raw and canonical parameters and invariants."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossatlas.steps.arguments import blocks, target
from lossatlas.steps.settings import NETWORK

READS: dict[str, tuple[str, ...]] = {
    "diagnose": ("diagnose", *NETWORK, "reduce.draw_block", "reduce.max_block_mb", "figures.dpi"),
}


def invariant_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.diagnostics.invariant_diagnostics`."""
    c = s["diagnose"]
    return {"rhat_max": c["rhat_max"], "ess_min": c["ess_min"], **table_arguments(s)}


def table_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.diagnostics.invariant_table`."""
    c = s["diagnose"]
    return {"param_block": c["param_block"], "output_points": c["output_points"], **blocks(s)}


def diagnose(inputs, outputs, s: Mapping, name: str, threads: int, log: logging.Logger) -> None:
    """Convergence table and checks, the same on canonical parameters and invariant
    quantities, and their figures."""
    from lossatlas import plots
    from lossatlas.analysis import diagnostics
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    c = s["diagnose"]
    ds = Dataset.load(inputs.dataset)
    with SampleStore(inputs.samples) as store:
        energy = store.potential()
        # Streams theta by parameter blocks; the whole array is never read.
        table, norm, verdict = diagnostics.diagnose(
            store.theta,
            energy,
            store.param_names,
            block=c["param_block"],
            rhat_max=c["rhat_max"],
            ess_min=c["ess_min"],
            alpha=c["normality_alpha"],
            n_batches=c["n_batches"],
            workers=threads,
        )
        # Symmetric copies of one network look like unmixed modes in raw coordinates; canonical
        # parameters and the outputs on the data do not change under the symmetries.
        the_target, args = target(s, ds), table_arguments(s)
        inv = diagnostics.kept_invariant_table(store, ds, the_target, args["output_points"])
        if inv is None:
            inv = diagnostics.invariant_table(
                store, ds, the_target, workers=threads, tmp_dir=Path(outputs.summary).parent, **args
            )
        else:
            log.info(
                "%s: U, the canonical parameters and the outputs on the data as sampler.until's "
                "stopping check measured them on these draws (kept in %s)",
                name,
                inputs.samples,
            )
    inv_summary = diagnostics.invariant_summary(inv, table, c["rhat_max"], c["ess_min"])
    inv.to_csv(outputs.invariant, index=False)
    Path(outputs.invariant_summary).write_text(json.dumps(inv_summary, indent=2) + "\n")
    verdict = diagnostics.identifiable_verdict(verdict, inv_summary)
    written = diagnostics.write(Path(outputs.summary).parent, table, norm, verdict)
    for key in ("summary", "normality", "convergence"):
        if Path(written[key]) != Path(getattr(outputs, key)):
            raise RuntimeError(
                f"diagnostics.write wrote {written[key]}, the rule expects {getattr(outputs, key)}"
            )

    dpi = s["figures"]["dpi"]
    plots.plot_trace(energy, outputs.trace, name="U", title=name, dpi=dpi)
    plots.plot_rank(energy, outputs.rank, name="U", title=name, dpi=dpi)
    plots.rhat(table, outputs.rhat, rhat_max=c["rhat_max"], title=name, dpi=dpi)
    for space in ("U", "raw parameters", "canonical parameters", "outputs on the data"):
        log.info("%s: %s %s", name, space, inv_summary[space])
    log.info("%s: %s", name, verdict["reading"])
