"""Atomic file writes whose temporaries no reader picks up, and the names the dataset finders skip.

A file is written to a hidden temporary beside its target (``.<name>.<random><suffix>``: the same folder, so that
``os.replace`` is atomic) and then renamed into place. An interrupted writer leaves at most a hidden temporary (and,
for SQLite/GeoPackage, its ``-journal``), never a half-written file under the real name; the finders of logs and
OpenScene pickles skip such names (:func:`is_temporary`), and the mini-dataset builder removes them when it resumes.

Test hook: ``SIMSCALE_TEST_KILL_AT=<point>[:<k>]`` makes the process SIGKILL itself the k-th time (default: the
first) it reaches ``kill_point(<point>)``, so that tests can interrupt a build at a chosen place
(tests/data/test_build_resume.py). The points: ``db`` (a log database, mid-transaction), ``pkl``, ``gpkg``,
``yaml``, ``json`` (such a file fully written to its temporary, not yet renamed) and ``log`` (between two logs of
``build_mini``). Unset (always, outside tests) it costs one environment lookup.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

KILL_ENV = "SIMSCALE_TEST_KILL_AT"
# names of Python's tempfile (what the builders used before: `tmpk3j_x9a2.db`) and SQLite's sibling files
_TEMPFILE_NAME = re.compile(r"tmp[a-z0-9_]{8}(\..*)?")
_SIBLING_SUFFIXES = ("-journal", "-wal", "-shm", ".tmp")
_kill_counts: dict[str, int] = {}


def is_temporary(name: str | Path) -> bool:
    """Whether a file name is a temporary or a hidden file rather than data: a dotted (hidden) name, a Python
    `tempfile` name (``tmpXXXXXXXX.db``), a ``.tmp`` file or an SQLite ``-journal``/``-wal``/``-shm`` sibling."""
    name = Path(name).name
    return name.startswith(".") or name.endswith(_SIBLING_SUFFIXES) or _TEMPFILE_NAME.fullmatch(name) is not None


def hidden_temp(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new, empty, hidden temporary file beside `path` (``.<name>.<random><suffix>``; one dot for a hidden `path`)."""
    path = Path(path)
    prefix = path.name if path.name.startswith(".") else f".{path.name}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write `path` through a hidden temporary beside it, renamed into place when the block ends without an error
    (removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_temp(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
        kill_point(path.suffix.lstrip("."))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_path(path: str | Path, write, suffix: str = ".tmp") -> Path:
    """Write `path` atomically with a writer that needs a file name: `write(tmp)` writes the hidden temporary `tmp`
    (``suffix`` after ``.tmp``-style names, e.g. ".tmp.zip" for a writer that insists on an extension), which is then
    renamed into place (removed on an error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_temp(path, suffix)
    try:
        write(str(tmp))
        kill_point(path.suffix.lstrip("."))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def kill_point(point: str) -> None:
    """The test hook (module docstring): SIGKILL this process here if ``SIMSCALE_TEST_KILL_AT`` names `point`."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, k = spec.partition(":")
    if name != point:
        return
    _kill_counts[point] = _kill_counts.get(point, 0) + 1
    if _kill_counts[point] == (int(k) if k else 1):
        os.kill(os.getpid(), signal.SIGKILL)
