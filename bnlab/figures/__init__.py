"""Figures, drawn from results folders only: an experiment's (bnlab.figures.experiment, each kind
drawn by bnlab.figures.kinds) and the claims' (bnlab.figures.claims)."""

from bnlab.figures.claims import plot_claims
from bnlab.figures.experiment import plot_experiment

__all__ = ["plot_claims", "plot_experiment"]
