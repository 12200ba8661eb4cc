"""The planner registry: `PLANNERS` (name -> PlannerSpec), named size presets (`PRESETS`) and `build_planner`.

    model = build_planner("ltf")                                   # the CPU default
    model = build_planner("ltf", {"image_size": [256, 64]})        # a dict of config fields (JSON: lists are tuples)
    model = build_planner("ltf_navsim")                            # a preset: NAVSIM's size
    model = build_planner("gtrs_dense", {"vocab_path": "vocab.npy"})
    model = build_planner("diffusiondrive", anchors=kmeans_anchors(plans, 20))
    model = build_planner("diffusiondrive", {"anchors": kmeans_anchors(plans, 20), "d_model": 64})  # arrays in the dict
    planner_image_size("ltf_navsim")                               # (1024, 256): what the datasets must produce

Presets only set config fields: every size is reachable by config fields alone.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from torch import nn

from .diffusiondrive import DiffusionDriveConfig, DiffusionDrivePlanner
from .gtrs_dense import GTRSDenseConfig, GTRSDensePlanner
from .ltf import LTFConfig, LTFPlanner


@dataclass(frozen=True)
class PlannerSpec:
    name: str
    config_cls: type
    model_cls: type
    description: str


PLANNERS: dict[str, PlannerSpec] = {
    "ltf": PlannerSpec("ltf", LTFConfig, LTFPlanner,
                       "LTF-style regression: ResNet over l0|f0|r0, status MLP, transformer decoder to 8 poses; L1"),
    "diffusiondrive": PlannerSpec("diffusiondrive", DiffusionDriveConfig, DiffusionDrivePlanner,
                                  "DiffusionDrive-style truncated diffusion from k-means anchors (2 DDIM steps); focal "
                                  "classification + L1"),
    "gtrs_dense": PlannerSpec("gtrs_dense", GTRSDenseConfig, GTRSDensePlanner,
                              "GTRS-Dense-style scorer over a trajectory vocabulary: BCE per EPDMS sub-score + "
                              "imitation CE, SimScale's inference rule"),
}

# NAVSIM / SimScale sizes (navsim-agents-and-planners.md §3-5): ResNet-34 with torchvision's widths, d 256, 8 heads,
# ffn 1024. LTF and DiffusionDrive read 1024 x 256 (NAVSIM; SimScale 2048 x 512), GTRS-Dense 2048 x 512.
_NAVSIM = {"backbone": "resnet34", "backbone_widths": (64, 128, 256, 512), "d_model": 256, "num_heads": 8,
           "ffn_dim": 1024}
PRESETS: dict[str, tuple[str, dict]] = {
    "ltf_navsim": ("ltf", {**_NAVSIM, "image_size": (1024, 256), "num_decoder_layers": 3}),
    "diffusiondrive_navsim": ("diffusiondrive", {**_NAVSIM, "image_size": (1024, 256), "num_decoder_layers": 2}),
    "gtrs_dense_navsim": ("gtrs_dense", {**_NAVSIM, "image_size": (2048, 512), "num_decoder_layers": 3,
                                         "vocab_encoder_layers": 1, "query_self_attention": True,
                                         "status_noise_std": (1.0, 0.2), "head_dim": 1024}),
}


def resolve(name: str) -> tuple[PlannerSpec, dict]:
    """(spec, preset fields) of a planner or preset name; a ValueError listing both otherwise."""
    if name in PLANNERS:
        return PLANNERS[name], {}
    if name in PRESETS:
        planner, fields = PRESETS[name]
        return PLANNERS[planner], dict(fields)
    raise ValueError(f"unknown planner {name!r}; planners: {', '.join(PLANNERS)}; presets: {', '.join(PRESETS)}")


def _as_field_value(tp, value):
    """JSON values back to the field's type: lists -> tuples for tuple fields."""
    origin = typing.get_origin(tp)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def make_config(name: str, config=None):
    """The config instance of planner / preset `name`: its defaults, the preset's fields, then `config` (a dict of
    fields, applied over the preset's), or `config` itself when it is an instance of the config class. Unknown fields
    raise a ValueError naming them."""
    spec, fields = resolve(name)
    if isinstance(config, spec.config_cls):
        return config  # an instance is complete: a preset's fields do not override it
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config of {name!r} must be a dict or a {spec.config_cls.__name__}, got "
                        f"{type(config).__name__}")
    fields.update(config or {})
    known = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"{spec.config_cls.__name__} ({name}) has no field(s) {unknown}; its fields: "
                         f"{', '.join(known)}")
    hints = typing.get_type_hints(spec.config_cls)
    return spec.config_cls(**{k: _as_field_value(hints.get(k), v) for k, v in fields.items()})


def split_arrays(name: str, config) -> tuple:
    """(config without the model's array inputs, {array name: array}) of a config dict: "anchors" (DiffusionDrive),
    "vocab" (GTRS-Dense) may ride in the dict of fields; any other value passes through."""
    spec, _ = resolve(name)
    if not isinstance(config, dict):
        return config, {}
    arrays = {k: config[k] for k in spec.model_cls.array_buffers if k in config}
    return {k: v for k, v in config.items() if k not in arrays}, arrays


def planner_image_size(name: str, config=None) -> tuple[int, int]:
    """(W, H) of the image planner / preset `name` reads with `config` (the fields that `build_planner` takes)."""
    fields, _ = split_arrays(name, config)
    w, h = make_config(name, fields).image_size
    return int(w), int(h)


def build_planner(name: str, config=None, **kwargs) -> nn.Module:
    """The model of planner (or preset) `name` built from `config` (None: defaults; a dict of fields, which may also
    hold the model's arrays "anchors" / "vocab"; a config instance). kwargs go to the model: `anchors=`
    (DiffusionDrive), `vocab=` (GTRS-Dense), `load_weights=False` (skip config.backbone_weights). Construction is
    deterministic for config.seed."""
    spec, _ = resolve(name)
    fields, arrays = split_arrays(name, config)
    clash = sorted(set(arrays) & set(kwargs))
    if clash:
        raise ValueError(f"{clash} given both in the config dict and as keyword arguments")
    return spec.model_cls(make_config(name, fields), **arrays, **kwargs)
