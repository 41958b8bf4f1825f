"""Claims: what the reference notes claim about normalization, tested over paired seeds. A claims
file and its claims (bnlab.claims.files), a claim evaluated (bnlab.claims.evaluate), the runs
scheduled and listed (bnlab.claims.schedule)."""

from bnlab.claims.evaluate import metric_values, scope
from bnlab.claims.files import ClaimSpec, cell_label, cells, experiments, load_claim_file, load_claims
from bnlab.claims.schedule import list_claims, run_claims

__all__ = [
    "ClaimSpec",
    "cell_label",
    "cells",
    "experiments",
    "list_claims",
    "load_claim_file",
    "load_claims",
    "metric_values",
    "run_claims",
    "scope",
]
