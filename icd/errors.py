"""User-facing errors.

A :class:`UserError` is a mistake in what the user gave us (a path, a key, a value). The CLI prints its message
on one line and exits with code 2; it never shows a stack trace for it.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_FAILED = 1


class UserError(Exception):
    """A problem with user input: names the file, field or value, and how to fix it."""

    exit_code: int = EXIT_USER_ERROR


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class ArtefactError(UserError):
    """A run directory or artefact (permutation.json, model repository, ...) is missing or invalid."""


class ServiceFailed(UserError):
    """A service icd runs or talks to failed on its own (it died, it stopped answering): one line, exit code 1."""

    exit_code: int = EXIT_FAILED
