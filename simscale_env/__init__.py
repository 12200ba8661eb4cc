"""SimScale-Gym: a Gymnasium driving simulator over nuPlan/NAVSIM logs.

Importing it registers `SimScale-navhard-v0`, `SimScale-navtest-v0` and `SimScale-navtrain-v0`.
"""

__version__ = "0.1.0"

from . import envs  # noqa: E402,F401  (registration)
