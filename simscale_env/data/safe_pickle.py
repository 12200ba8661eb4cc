"""A restricted unpickler for the pickles nuPlan and OpenScene store.

nuPlan keeps camera/lidar calibration as pickles inside the log database, and OpenScene ships its frame lists as
pickles; the devkit reads both with a bare ``pickle.loads``, which runs whatever code the file names. Here only
plain data may load: builtins containers and scalars, numpy arrays/scalars/dtypes, and the devkit's list
subclasses (mapped to ``list``). Anything else raises :class:`UnsafePickleError` naming the file and the class.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from ..errors import CorruptFileError, UnsafePickleError

_BUILTINS = {
    "list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray",
    "bool", "slice", "range",
}
_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_COLLECTIONS = {("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode")}
# The devkit's data types that subclass list (nuplan/database/common/data_types.py); unverified on real files,
# so any class of that module is read as a plain list.
_DEVKIT_LIST_MODULES = ("nuplan.database.common.data_types",)


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str | Path | None = None):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        if (module, name) in _NUMPY:
            import importlib

            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                # pickles written by numpy 1.x name numpy.core, numpy 2.x numpy._core
                alt = module.replace("numpy.core", "numpy._core") if "numpy.core" in module else module.replace(
                    "numpy._core", "numpy.core")
                return getattr(importlib.import_module(alt), name)
        if module == "numpy" and name in {"float64", "float32", "int64", "int32", "uint8", "bool_", "int8",
                                          "int16", "uint16", "uint32", "uint64", "float16"}:
            import numpy

            return getattr(numpy, name)
        if (module, name) in _COLLECTIONS:
            import importlib

            return getattr(importlib.import_module(module), name)
        if module in _DEVKIT_LIST_MODULES:
            return list
        raise UnsafePickleError(
            self._source,
            f"pickle references {module}.{name}; only plain data (builtins, lists, dicts, numpy arrays) may load",
        )


def safe_loads(data: bytes, source: str | Path | None = None):
    """Unpickle `data` allowing plain data only; `source` names the file/column in errors."""
    if data is None:
        return None
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise CorruptFileError(source, f"not a readable pickle ({type(exc).__name__}: {exc})") from exc


def safe_load_file(path: str | Path):
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        from ..errors import MissingFileError

        raise MissingFileError(path, "file not found") from exc
    return safe_loads(data, path)
