"""User errors: problems with what a user supplied (config, dataset files, a
checkpoint or cell directory, an export request), as opposed to bugs.

The CLI prints exactly these as one ``qdesign: error: ...`` line and exit code
1; anything else is a bug and shows its traceback. Torch-free on purpose: the
thin client and Snakemake import this module.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; its message is one line that names the
    file or key and says what to do."""


class ConfigError(UserError, ValueError):
    """A configuration problem, with a one-line message that names the key."""


class DatasetError(UserError):
    """A dataset that cannot be found, downloaded or read."""


class CheckpointError(UserError):
    """A checkpoint or cell directory that is missing, corrupt or does not match the cell."""


class DivergedError(UserError):
    """Training produced a non-finite loss or non-finite weights."""


class ExportError(UserError):
    """A cell that cannot be exported in the requested format."""


class TableError(UserError, ValueError):
    """A results table or cell metrics file that is missing, unreadable or lacks columns."""


class DiskFullError(UserError, OSError):
    """An output that could not be written because its disk is full."""
