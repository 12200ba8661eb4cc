"""Learned camera planners (LTF-, DiffusionDrive- and GTRS-Dense-style) and the inputs they share
(`agents.planners.features`).

    from agents.planners import build_planner, save_planner, load_planner, PlannerPolicy
    model = build_planner("ltf")                 # or "diffusiondrive" (anchors=), "gtrs_dense" (vocab=), a preset
    save_planner("run/checkpoint.pt", model)
    policy = agents.load_policy("run/checkpoint.pt")   # a PlannerPolicy (this package registers the loader)

Importing this package stays light (no torch): the models load on first use of a name below. Importing it registers
the checkpoint loader of "simscale-planner/1" files with `agents.load_policy`.
"""

from __future__ import annotations

import importlib

from .checkpoint import (FORMAT, PlannerPolicy, is_planner_checkpoint, load_planner, load_planner_policy,
                         read_checkpoint, register_planner_checkpoint_loader, save_planner)
from .features import FRONT_CHANNELS, STATUS_SIZE, image_tensor, stitch_front_cameras, status_from_observation, \
    status_vector

_LAZY = {
    "PLANNERS": "registry", "PRESETS": "registry", "PlannerSpec": "registry", "build_planner": "registry",
    "make_config": "registry", "planner_image_size": "registry", "split_arrays": "registry",
    "PlannerConfig": "backbone", "load_backbone_weights": "backbone", "make_resnet": "backbone",
    "LTFConfig": "ltf", "LTFPlanner": "ltf",
    "DiffusionDriveConfig": "diffusiondrive", "DiffusionDrivePlanner": "diffusiondrive",
    "kmeans_anchors": "diffusiondrive", "load_anchors": "diffusiondrive",
    "GTRSDenseConfig": "gtrs_dense", "GTRSDensePlanner": "gtrs_dense", "gtrs_inference_score": "gtrs_dense",
}


def __getattr__(name):  # the torch modules load on first use
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_planner_checkpoint_loader()

__all__ = ["FORMAT", "FRONT_CHANNELS", "STATUS_SIZE", "PlannerPolicy", "image_tensor", "is_planner_checkpoint",
           "load_planner", "load_planner_policy", "read_checkpoint", "register_planner_checkpoint_loader",
           "save_planner", "stitch_front_cameras", "status_from_observation", "status_vector", *_LAZY]
