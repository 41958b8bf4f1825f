"""Errors a user can cause and fix: the CLI prints their message, never a traceback."""


class BnlabError(Exception):
    """Base of every error bnlab reports to a person. `exit_code` follows the CLI convention."""

    exit_code = 1


class SpecError(BnlabError):
    """An experiment spec or a command-line override is invalid (usage error)."""

    exit_code = 2


class DataError(BnlabError):
    """The data set is missing, corrupt or cannot be downloaded."""


class ResultsError(BnlabError):
    """A results folder is missing, locked, unreadable or inconsistent."""
