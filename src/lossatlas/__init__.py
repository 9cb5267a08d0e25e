"""lossatlas: map the loss landscapes of neural networks by MCMC."""

__version__ = "0.1.0"
