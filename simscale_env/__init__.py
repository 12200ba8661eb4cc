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

from . import envs  # noqa: E402,F401  (registration)
