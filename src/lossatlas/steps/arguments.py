"""Settings -> the library's arguments, shared by the steps of several rule families."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def with_hidden(s: Mapping, hidden) -> Mapping:
    """Settings ``s`` with ``model.hidden`` replaced (one experiment of an architecture sweep)."""
    return {**s, "model": {**s["model"], "hidden": list(hidden)}}


def target(s: Mapping, dataset):
    """The :class:`lossatlas.model.Target` of the settings' model and target on ``dataset``."""
    from lossatlas import model

    m, t = s["model"], s["target"]
    return model.target_for(
        dataset,
        hidden=m["hidden"],
        activation=m["activation"],
        loss=m["loss"],
        bias=m["bias"],
        box=t["box"],
        beta=t["beta"],
        energy=t["energy"],
    )


def point_target(s: Mapping, dataset):
    """:func:`target` for the analyses that evaluate it point by point (optimisers, Hessians):
    computed by the fused code where that is faster at one point."""
    from lossatlas.sampling import fused

    return fused.for_optimisers(target(s, dataset))


def sizes(s: Mapping, dataset) -> tuple[int, ...]:
    from lossatlas import model

    return model.layer_sizes(dataset, s["model"]["hidden"])


def coordinates(s: Mapping, dataset):
    """The analysis coordinates' transform of ``coordinates`` (None: raw)."""
    from lossatlas.model import symmetry

    m = s["model"]
    return symmetry.coordinate_transform(
        s["coordinates"], sizes(s, dataset), m["activation"], m["loss"], m["bias"]
    )


def blocks(s: Mapping) -> dict[str, Any]:
    """How many draws one read of the store holds (``reduce.draw_block``, ``max_block_mb``)."""
    return {"draw_block": s["reduce"]["draw_block"], "max_block_mb": s["reduce"]["max_block_mb"]}


def census_points(inputs) -> tuple[pd.DataFrame, np.ndarray]:
    """The census table and its points' raw coordinates (row ``id``), from the census rule."""
    with np.load(inputs.census_points) as f:
        return pd.read_csv(inputs.census), f["points"]
