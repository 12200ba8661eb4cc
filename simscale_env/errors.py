"""Exceptions raised on bad input.

Every error names the file (or argument) and the missing or offending piece, so that the CLI can print it as one
line and a user can act on it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SimScaleError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(SimScaleError):
    """A data file is missing, unreadable or does not have the expected layout."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else str(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self):  # pickles as it was made (a worker process re-raises it in its parent)
        return type(self), (self.path, self.detail)


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that should exist does not."""


class CorruptFileError(DataError):
    """A file exists but is not what its extension promises (truncated, not SQLite, not a GeoPackage, ...)."""


class SchemaError(DataError):
    """A table, layer or column that the reader needs is missing."""


class UnsafePickleError(DataError):
    """A pickle tried to load something beyond plain data (lists, dicts, numbers, strings, numpy arrays)."""


class OutputFolderError(DataError, FileExistsError):
    """An output folder that holds something else (files this package did not write, or a file where a folder should
    be): the package never writes into it."""


class UnknownTokenError(DataError, KeyError):
    """A token (scenario, lidar_pc, scene, ...) that is not in the data."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class MapError(DataError):
    """A map location, version or map object that does not exist or is malformed."""


class UnknownMapObjectError(MapError, KeyError):
    def __str__(self) -> str:
        return Exception.__str__(self)


class PolicyError(SimScaleError, ValueError):
    """A policy spec that cannot be loaded (`agents.load_policy`: an unknown name, a module that does not import, a
    class that is missing or refuses its kwargs, an object without `act`, a checkpoint no loader claims) or a policy
    that returns something other than a plan. `spec` names what was asked for."""

    def __init__(self, spec, message: str):
        self.spec = None if spec is None else str(spec)
        self.detail = message
        super().__init__(f"{self.spec}: {message}" if self.spec else message)

    def __reduce__(self):
        return type(self), (self.spec, self.detail)
