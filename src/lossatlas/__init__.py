"""lossatlas: map the loss landscapes of neural networks by MCMC.

From a notebook: ``lossatlas.sample(config, experiment)`` samples one experiment on a local
Dask cluster and returns its store (:mod:`lossatlas.api`); the workflow runs the rest.
"""

from lossatlas._version import __version__

__all__ = ["__version__", "load_config", "open_samples", "sample"]


def __getattr__(name):
    # lazily, so `import lossatlas.<module>` in a job does not import Dask and the samplers
    if name in ("sample", "load_config", "open_samples"):
        from lossatlas import api

        return getattr(api, name)
    raise AttributeError(f"module 'lossatlas' has no attribute {name!r}")
