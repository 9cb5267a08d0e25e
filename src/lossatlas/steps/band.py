"""Steps of the band rules: critical points from random starts, Choromanska's band."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from lossatlas import config as lacfg
from lossatlas.steps.arguments import target
from lossatlas.steps.settings import NETWORK, experiment, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "critical_points": (
        "seed",
        "dataset",
        *NETWORK,
        "landscape.band.n_starts",
        "landscape.band.saddle_search",
        "landscape.band.n_heldout",
        "landscape.band.prior_sigma",
    ),
    "band": ("experiments", "figures.dpi"),
}


CRITICAL_COLUMNS = [
    "experiment", "p", "start", "method", "U", "mean_loss", "grad_inf", "critical", "index",
    "index_fraction", "heldout_loss",
]  # fmt: skip


def critical_points(inputs, outputs, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """One network's critical points from random starts: loss, index, held-out loss."""
    import pandas as pd

    from lossatlas import data
    from lossatlas.analysis import band

    e = experiment(exp)
    settings = s["landscape"]["band"]
    the_target = target(s, data.Dataset.load(inputs.dataset))
    # the starts depend on the master seed and the experiment, never on other experiments
    rng = np.random.default_rng([s["seed"], e.index])
    starts = band.init_starts(the_target.mlp.layout, settings["n_starts"], the_target.box, rng)
    found = band.critical_points(
        band.with_prior(the_target.U_and_grad, settings["prior_sigma"]),
        starts,
        the_target.box,
        saddle_search=settings["saddle_search"],
    )
    found["U"] = the_target.U(found["points"]) if len(found["U"]) else found["U"]
    heldout = data.heldout_for_experiment(plain(s["dataset"]), e.transforms, settings["n_heldout"])
    if heldout is not None:
        held = target(s, heldout)
        heldout_loss = held.mean_loss(held.U(found["points"])) if len(found["U"]) else []
    else:
        heldout_loss = np.full(len(found["U"]), np.nan)
    n = len(starts)
    table = pd.DataFrame(
        {
            "experiment": e.name,
            "p": the_target.p,
            "start": found["start"],
            "method": found["method"],
            "U": found["U"],
            "mean_loss": the_target.mean_loss(found["U"]),
            "grad_inf": found["grad_inf"],
            "critical": found["critical"],
            "index": found["index"],
            "index_fraction": found["index"] / the_target.p,
            "heldout_loss": heldout_loss,
        },
        columns=CRITICAL_COLUMNS,
    )
    table.to_csv(outputs.table, index=False)
    log.info(
        "%s: p = %d, %d critical points among %d ends from %d starts (index counts %s)",
        e.name, the_target.p, int(found["critical"].sum()), len(table), n,
        np.bincount(found["index"][found["critical"]]).tolist(),
    )  # fmt: skip


def band(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """Choromanska's band across the width sweep: per network, the 5-95 % range of its
    minima's losses, the held-out range, the rank correlation of index and loss."""
    import pandas as pd

    from lossatlas.analysis import band as choromanska

    ends = [pd.read_csv(path) for path in inputs.tables]
    tables = [t[t["critical"]] for t in ends]
    sweep = lacfg.experiments(s)  # the band runs on width sweeps only: each has its widths
    rows = []
    for name, every, t in zip(names, ends, tables, strict=True):
        hidden = sweep[name].hidden
        held = t["heldout_loss"].to_numpy() if t["heldout_loss"].notna().any() else None
        summary = choromanska.summary(
            t["mean_loss"], t["index"], int(every["p"].iloc[0]), heldout=held
        )
        rows.append(
            {"experiment": name, "hidden": "x".join(map(str, hidden)), "n_ends": len(every),
             **summary}
        )  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(outputs.table, index=False)
    write_json(
        outputs.json,
        {
            "networks": rows,
            "critical": "an end is a critical point when it lies inside the box and its largest "
            "gradient component is at most 1e-8 (1 + |U|); n_ends - n_critical ends stopped "
            "elsewhere (a ReLU network's kinks, where no gradient vanishes)",
            "quantiles": list(choromanska.BAND),
            "meaning": "per network: band_lo/band_hi are the 5 and 95 % quantiles of the mean "
            "loss over critical points of index 0 found from random starts (repeats kept: the "
            "distribution over starts), heldout_* the same for their held-out loss, rank_corr "
            "Spearman's correlation of index/p and loss over every critical point; "
            "Choromanska et al. predict the band narrows as the network grows and the index "
            "grows with the loss",
        },
    )
    choromanska.plot_band(tables, table, outputs.figure, dpi=s["figures"]["dpi"])
    log.info(
        "band: %s", table[["experiment", "p", "band_lo", "band_hi", "rank_corr"]].to_dict("records")
    )
