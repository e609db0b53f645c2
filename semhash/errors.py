"""Exceptions raised by the library.  The CLI turns them into one-line click errors."""


class SemhashError(Exception):
    """Base class for every error the library reports to users."""


class ImageError(SemhashError):
    """An image file could not be read or decoded. The message names the file and the cause."""


class DatasetError(SemhashError):
    """A built-in dataset is unknown or its files are missing."""


class ModelError(SemhashError):
    """No model, an unknown model, or a model that cannot be used for the request."""


class IndexError_(SemhashError):
    """The index is missing, incompatible with the model, or of an unknown schema."""


class IndexDamagedError(IndexError_):
    """The index file is damaged (SQLite reports a malformed database image, and its own
    check of the file agrees)."""


class IndexBusyError(IndexError_):
    """A read of the index failed for a moment (a malformed read while another process wrote,
    which SQLite's check of the file does not confirm): nothing is damaged, try again."""


class SemhashWarning(UserWarning):
    """Something the user should know that did not stop the work (one line naming the file).

    The CLI prints these as ``warning: <message>``, one line each."""


class OutputError(SemhashError):
    """A file the command was asked to write cannot be written there (checked before the work)."""
