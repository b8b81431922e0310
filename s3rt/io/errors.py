"""Errors for bad input files (missing, unreadable, wrong format) and outputs that could not
be written completely.

They are ordinary `ValueError` / `FileNotFoundError` / `OSError` subclasses so library users
can catch them as usual; the `s3rt` command prints each as one clear line and exits with 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """A file or folder that exists but cannot be used (wrong format, empty, unreadable)."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder that does not exist."""


class OutputError(OSError):
    """An output that could not be written completely (disk full, no permission, a file in
    the way). Nothing is left under the output's final name when this is raised."""
