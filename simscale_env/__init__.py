"""SimScale-Gym: a Gymnasium driving simulator over nuPlan/NAVSIM logs."""

__version__ = "0.1.0"
