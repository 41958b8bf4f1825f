"""Reading a results folder in notebooks: `from bnlab.results import load_experiment`.

The format has one owner, bnlab.lab.results; this module keeps its public names where they were.
"""

from bnlab.lab.results import (
    EPOCH_COLUMNS,
    HISTORY_COLUMNS,
    METRICS,
    PROBE_COLUMNS,
    RERUN,
    STATUSES,
    TEXT_COLUMNS,
    ExperimentResults,
    experiment_folders,
    group_summary,
    list_experiments,
    load_experiment,
)

__all__ = [
    "EPOCH_COLUMNS",
    "HISTORY_COLUMNS",
    "METRICS",
    "PROBE_COLUMNS",
    "RERUN",
    "STATUSES",
    "TEXT_COLUMNS",
    "ExperimentResults",
    "experiment_folders",
    "group_summary",
    "list_experiments",
    "load_experiment",
]
