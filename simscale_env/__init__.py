"""SimScale-Gym: a Gymnasium driving simulator over nuPlan/NAVSIM logs.

Importing it registers `SimScale-navhard-v0`, `SimScale-navtest-v0` and `SimScale-navtrain-v0`.
"""

import os as _os

__version__ = "0.1.0"

# numba's parallel kernels: the fork-safe "workqueue" threading layer unless the user chose one, so that
# gymnasium's AsyncVectorEnv and SB3's SubprocVecEnv can fork workers (GNU OpenMP is not fork-safe).
if "NUMBA_THREADING_LAYER" not in _os.environ:
    import numba as _numba

    _numba.config.THREADING_LAYER = "workqueue"



def _source_digest(root: str) -> str:
    """A hash of every .py file under `root` (relative paths and contents)."""
    import hashlib

    h = hashlib.sha1()
    for folder, dirs, files in sorted(_os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = _os.path.join(folder, name)
                h.update(_os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


# numba's on-disk cache notices a change of a kernel's own file, not of the kernels it calls from other modules
# (compiled into it): a cache that outlived such a change would run the old callee, silently. With NUMBA_CACHE_DIR
# set (the Makefile sets it), kernels are cached in a subfolder named by a hash of this package's sources, so a
# changed source compiles afresh and switching back finds the earlier compilation.
def _numba_cache_folder(base: str, keep: int = 8, stale_s: float = 86400.0) -> str:
    """base/simscale-<digest of the sources>, marked used now; of the other simscale-* folders, those beyond the
    `keep` most recently used and unused for `stale_s` seconds are removed (each holds ~20 MB of kernels)."""
    import shutil
    import time

    folder = _os.path.join(base, "simscale-" + _source_digest(_os.path.dirname(__file__)))
    try:
        _os.makedirs(folder, exist_ok=True)
        _os.utime(folder)
        others = [e for e in _os.scandir(base) if e.name.startswith("simscale-") and e.path != folder and e.is_dir()]
        others.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        for e in others[keep - 1:]:
            if time.time() - e.stat().st_mtime > stale_s:
                shutil.rmtree(e.path, ignore_errors=True)
    except OSError:  # a read-only or shared cache: numba reports its own problems when it writes
        pass
    return folder


# Both choices live in numba's config only: numba re-reads its whole NUMBA_* environment at a compilation after any
# NUMBA_* variable changed, which resets them (set NUMBA_* variables before importing this package). Writing the
# folder into the environment instead would itself trigger that reset (and the default OpenMP layer aborts forks).
if _os.environ.get("NUMBA_CACHE_DIR"):
    import numba as _numba

    _numba.config.CACHE_DIR = _numba_cache_folder(_os.environ["NUMBA_CACHE_DIR"])

from . import envs  # noqa: E402,F401  (registration)
