"""What the harnesses' worker pools share (`evaluation` runs items, `training` generates samples): the threads a
worker's numba and torch may use, and Ray as an optional dependency."""

from __future__ import annotations

import os
import sys

from .errors import SimScaleError

RAY_INSTALL = "pip install 'simscale[ray]' (or: pip install ray)"


def threads_per_worker(workers: int) -> int:
    """The machine's cores divided among `workers` (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, int(workers)))


def set_worker_threads(threads: int | None) -> None:
    """Numba's and torch's threads in this worker; None or 0 keeps their defaults. NUMBA_NUM_THREADS is set only while
    numba is not imported yet (its pool size is read at import): numba re-reads the variable at every compilation and
    refuses a value other than the one it started with once its threads run, so a worker that imported numba before
    (a spawned process importing this package) masks its threads with `numba.set_num_threads` instead; before, the
    first function compiled after that (a cold numba cache, e.g. a fresh machine) failed every task of the worker."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "numba" in sys.modules:
        try:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except Exception:  # noqa: BLE001 (a numba without threading layer: keep its default)
            pass
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def import_ray(error: type[SimScaleError] = SimScaleError):
    """The `ray` module, or `error` with one line telling how to install it."""
    try:
        import ray
    except ImportError:
        raise error(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray
