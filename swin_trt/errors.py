"""User-facing errors.

Anything a user can fix (a wrong path, a mismatched checkpoint, a malformed map file) raises
:class:`SwinTrtError`. The CLI prints it as one line and exits non-zero; everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class SwinTrtError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class DataError(SwinTrtError):
    """Bad dataset layout, map file, label or image."""


class CheckpointError(SwinTrtError):
    """A checkpoint that cannot be read or does not fit the model."""


class ConfigError(SwinTrtError):
    """An unknown model name or a malformed configuration file."""


def one_line(error: BaseException) -> str:
    """The one line to show a user for ``error``.

    DataLoader workers re-raise our errors in the main process with the worker's traceback folded
    into the message; the user's message is then the last line, after the exception class name.
    """
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "Original Traceback" in str(error):
        last = lines[-1]
        _, sep, message = last.partition("Error: ")
        return message if sep else last
    return " ".join(line.strip() for line in lines)
