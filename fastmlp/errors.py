"""Exceptions raised by fastmlp.

Every message is one line naming the problem, what was given and what was expected, so the
command line can print it as it is, without a traceback.
"""


class FastMLPError(Exception):
    """Base class of fastmlp's own errors (the CLI prints these as one line, exit code 1)."""


class DataError(FastMLPError, ValueError):
    """A data set or data file is missing, malformed or does not fit the model."""


class DownloadError(DataError):
    """A download failed: no network, an HTTP error, or a file that is not what was expected."""


class ChecksumError(DownloadError):
    """A downloaded or local file does not have the canonical size or checksum."""


class CheckpointError(FastMLPError, ValueError):
    """A saved model or checkpoint cannot be loaded: bad format, wrong shapes, newer version."""


class ConfigError(FastMLPError, ValueError):
    """Settings of a run that contradict each other, the data or a checkpoint (the CLI reports it as
    a usage error, exit code 2)."""


class DivergenceError(FastMLPError, FloatingPointError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


def one_line(text):
    """`text` (or an exception) as one line: every run of whitespace becomes one space."""
    return " ".join(str(text).split())
