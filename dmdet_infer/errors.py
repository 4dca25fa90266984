"""User-facing errors: one line, naming the file and the problem."""

from __future__ import annotations


class DmdetError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(DmdetError, ValueError):
    """Bad input from the user (file, array, option or model): exit code 2. A ``ValueError``, so that code
    embedding dmdet can catch it as one."""

    exit_code = 2


def where(path: object | None, message: str) -> str:
    """Prefix ``message`` with the file it concerns, if any."""
    return f"{path}: {message}" if path is not None else message
