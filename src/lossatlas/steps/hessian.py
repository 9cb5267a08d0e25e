"""Step of the hessian rule: the Hessian spectrum at each census minimum."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lossatlas.steps.arguments import census_points, point_target
from lossatlas.steps.settings import NETWORK, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "hessian": ("seed", *NETWORK, "landscape.hessian", "figures.dpi"),
}


def hessian(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Top eigenvalues, trace and eigenvalue density of the Hessian at each census minimum;
    whether the lower minima are the flatter ones."""
    from lossatlas.analysis import hessian as spectrum
    from lossatlas.data import Dataset

    settings = spectrum.Settings(**plain(s["landscape"]["hessian"]), seed=s["seed"])
    the_target = point_target(s, Dataset.load(inputs.dataset))
    table, spectra, meta = spectrum.run(the_target, *census_points(inputs), settings)
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    write_json(
        outputs.finding,
        {"experiment": name, "analysis": "Hessian at the census minima", **meta,
         "settings": plain(s["landscape"]["hessian"])},
    )  # fmt: skip
    spectrum.plot(table, spectra, outputs.figure, title=name, dpi=s["figures"]["dpi"])
    log.info("%s: %s", name, meta["finding"])
