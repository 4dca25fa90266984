"""User-facing errors: one line, naming the file and the problem."""

from __future__ import annotations


class DmdetError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(DmdetError, ValueError):
    """Bad input from the user (file, array, option or model).

    The message is one line, naming the file and the problem. The CLI exits with code 2 (``exit_code``) on it.
    A ``ValueError``, so that code embedding dmdet can catch it as one.

    Parameters
    ----------
    message : str
        What is wrong, in one line, prefixed with the file it concerns (``"stack.tif: empty image ..."``).

    Examples
    --------
    >>> import numpy as np
    >>> from dmdet_infer import Detector, InputError
    >>> issubclass(InputError, ValueError), InputError.exit_code
    (True, 2)
    >>> try:
    ...     Detector().detect(np.zeros((64, 64)))
    ... except ValueError as exc:
    ...     print(type(exc).__name__, exc)
    InputError 2D image (shape (64, 64)); dmdet is a 3D detector and needs a ZYX stack
    """

    exit_code = 2


def where(path: object | None, message: str) -> str:
    """Prefix ``message`` with the file it concerns, if any."""
    return f"{path}: {message}" if path is not None else message
