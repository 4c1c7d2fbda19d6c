"""Exceptions raised at the package's public boundaries.

Every message names what was wrong and where (file, row, field, id), so the CLI and the app can
show it as it is, without a traceback.
"""


class DVBPRError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(DVBPRError):
    """A dataset folder, CSV file or row is malformed or inconsistent."""


class ImageError(DVBPRError):
    """An image cannot be read or is of an unsupported kind."""


class UnknownIdError(DVBPRError, KeyError):
    """A user or item id is not known to the model or dataset."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(DVBPRError):
    """A checkpoint is missing, corrupt, or does not match the dataset it is used with."""


class DatasetChangedError(CheckpointError):
    """The dataset's users, items or interactions are no longer those the model was trained on."""


class DiskFullError(DVBPRError, OSError):
    """A write found no space left (ENOSPC, or EDQUOT: a quota) on its file system. Also an
    OSError, which callers that report failed writes catch."""


class RunsNotComparableError(DVBPRError):
    """Runs cannot be compared user by user (different datasets, too few runs, a run given twice)."""


class TrainingError(DVBPRError):
    """Training cannot start or had to stop (bad configuration, NaN loss, busy run folder)."""


class DeviceUnavailableError(TrainingError):
    """The requested device (CUDA) is not available on this machine."""


class JobError(DVBPRError):
    """A background job cannot be started, stopped or found."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception's message as one line (some span several lines, some are empty), cut to
    `limit` characters: for the messages above, which the CLI and the app show as they are."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
