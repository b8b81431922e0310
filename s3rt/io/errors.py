"""Errors for bad input files (missing, unreadable, wrong format).

They are ordinary `ValueError` / `FileNotFoundError` subclasses so library users can catch
them as usual; the `s3rt` command turns them into one clear line (`s3rt.cli.UserError`).
"""

from __future__ import annotations


class InputError(ValueError):
    """A file or folder that exists but cannot be used (wrong format, empty, unreadable)."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder that does not exist."""

