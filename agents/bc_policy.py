"""The learned policy of `simscale train-bc` (`training.bc`): a small network imitating a pseudo-expert, its policy
wrapper and its checkpoint format ("simscale-bc/1").

    import agents.bc_policy as bc; bc.register()       # lets agents.load_policy read "simscale-bc/1" .pt files
    policy = agents.load_policy("runs/bc/bc.pt")        # a BCPolicy
    env = gym.make("SimScale-navhard-v0", **agents.policy_env_kwargs(policy))

Why this structure (a hand-written MLP regressing the 24 raw numbers of the plan reached 0.256 closed-loop EPDMS on
mini-navhard, below standing still): raw metres mix scales (x up to 60 m, heading a few hundredths of a radian), an
error of a few decimetres sideways is an off-road episode, and nothing tells the network where the road is.

- Privileged observations (`OBSERVATIONS["privileged"]`: ego_status, agents, route; "privileged_bev" adds the
  bird's-eye raster) predict the plan **along the route** given in `obs["route"]` (the next 62 m of the route
  centreline in the ego frame): per pose its progress s along the centreline (monotone: a cumulative sum of
  softplus increments), its lateral offset l from the centreline and its heading relative to the centreline's
  tangent (`route_frame`, `project_to_route`, `decode_from_route`). Staying on the route is then the default and the
  network mostly learns the speed profile. The labels are the expert's plans projected the same way.
- The agents are a set: each row (in the ego frame and projected on the route) goes through a shared MLP, then a
  masked max-pool (padding rows, length 0, are ignored); the nearest agents in the ego's corridor along the route
  (gap and speed along the route, a narrow and a wide corridor) are given explicitly.
- Every input and output is normalised by fixed scales (`*_SCALE`), so a checkpoint holds no data statistics.
- "cameras" (the front three cameras stitched as TransFuser stitches them, `agents.planners.features`, plus the ego
  status) has no route: a small CNN predicts the plan in the ego frame (forward progress as softplus increments,
  lateral offset and heading, normalised).

The policy is deterministic (torch inference on a fixed network) and reads no pseudo-expert at run time.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from simscale_env.errors import CorruptFileError, MissingFileError, PolicyError, SchemaError

from .policy import BasePolicy, register_checkpoint_loader

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "simscale-bc/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth")

# the env's observation layout (simscale_env/envs/simscale_env.py: EGO_STATUS_SIZE, MAX_AGENTS, ROUTE_POINTS)
EGO_STATUS_SIZE = 20  # vx, vy, ax, ay, driving command one-hot (4), 4 past poses (x, y, heading)
MAX_AGENTS = 64  # rows of obs["agents"]: x, y, heading, vx, vy, length, width, category; nearest first, padding 0
ROUTE_POINTS = 32  # obs["route"]: the route centreline 0 ... 62 m ahead, in the ego frame
# simscale_env/data/schema.py CATEGORIES: vehicle, bicycle, pedestrian, cone, barrier, sign, generic object
AGENT_CATEGORIES = 7
BEV_CHANNELS = 5  # simscale_env/render/bev.py BEV_CHANNELS
BEV_POOL = 4  # the 256 x 256 raster (0.25 m/px) max-pooled to 64 x 64 (1 m/px) for the bev branch
# the env's plan action space (simscale_env/envs/simscale_env.py PLAN_LOW / PLAN_HIGH): x, y [m], heading [rad]
PLAN_LOW = np.array([-20.0, -80.0, -np.pi])
PLAN_HIGH = np.array([160.0, 80.0, np.pi])
PLAN_POSES = 8  # NAVSIM's plan: 8 poses 0.5 s apart (navsim-agents-and-planners.md §1.4)
# the ego vehicle, nuPlan's Pacifica (simscale_env/sim/vehicle.py, nuplan get_pacifica_parameters): rear axle to the
# front bumper and half the width
EGO_FRONT_M = 4.049
EGO_HALF_WIDTH_M = 1.1485
# lead agents: the corridor along the route (half the ego's width plus half the agent's plus this margin)
CORRIDOR_MARGINS_M = (0.5, 2.0)
LEAD_GAP_CAP_M = 60.0  # a gap beyond this (or no agent in the corridor) reads as this
# the set encoder reads the nearest this many rows (the lead features read all 64): half the cost, and the farther
# rows (the 90th percentile of a collection round has all 64 filled) rarely change a 4 s plan
SET_AGENTS = 32

# fixed normalisation scales of the inputs (typical magnitudes on the mini dataset, not statistics of any data)
POS_SCALE = 30.0  # m: agent positions, route progress
SPEED_SCALE = 10.0  # m/s
ACC_SCALE = 3.0  # m/s^2
PAST_SCALE = np.array([10.0, 2.0, 0.3])  # the past poses (x [m], y [m], heading [rad])
ROUTE_SCALE = np.array([30.0, 10.0])  # route points (x, y) [m]
# outputs: (progress [m], lateral [m], heading [rad]) per pose; one unit of the loss is this much error
TARGET_SCALE = np.array([1.0, 0.25, 0.1])


# ============================================================================================ route geometry
@dataclass(frozen=True)
class RouteFrame:
    """A batch of route polylines as segments: starts P [B, M, 2], unit tangents T [B, M, 2] (a degenerate segment
    takes its neighbour's), lengths L [B, M], start arcs s0 [B, M], and unit tangents at the vertices VT [B, M+1, 2]
    (the mean of the adjacent segments': headings vary continuously along the route)."""

    P: np.ndarray
    T: np.ndarray
    L: np.ndarray
    s0: np.ndarray
    VT: np.ndarray


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    ok = n > 1e-9
    return np.where(ok, v / np.where(ok, n, 1.0), fallback)


def route_frame(route) -> RouteFrame:
    """The `RouteFrame` of routes [B, N, 2] (N >= 2; `obs["route"]` batched). Zero-length segments (the env repeats
    the last point where the route ends) take the tangent of the last non-degenerate segment before them (the first
    one after them at the start); a route without any length points along +x (the ego's heading)."""
    r = np.asarray(route, np.float64)
    if r.ndim != 3 or r.shape[1] < 2 or r.shape[2] != 2:
        raise ValueError(f"routes must be [B, N >= 2, 2], got shape {r.shape}")
    d = r[:, 1:] - r[:, :-1]
    length = np.linalg.norm(d, axis=-1)
    valid = length > 1e-6
    m = d.shape[1]
    t = d / np.where(valid, length, 1.0)[..., None]
    ar = np.broadcast_to(np.arange(m), valid.shape)
    idx = np.maximum.accumulate(np.where(valid, ar, -1), axis=1)  # the last valid segment at or before
    first = np.argmax(valid, axis=1)
    idx = np.where(idx < 0, first[:, None], idx)
    t = np.take_along_axis(t, idx[..., None], axis=1)
    t = np.where(valid.any(axis=1)[:, None, None], t, np.array([1.0, 0.0]))
    length = np.where(valid, length, 0.0)
    s0 = np.concatenate([np.zeros((len(r), 1)), np.cumsum(length, axis=1)[:, :-1]], axis=1)
    inner = _unit(t[:, :-1] + t[:, 1:], t[:, 1:])
    vt = np.concatenate([t[:, :1], inner, t[:, -1:]], axis=1)
    return RouteFrame(r[:, :-1], t, length, s0, vt)


def _tangent_at(frame: RouteFrame, k: np.ndarray, tk: np.ndarray) -> np.ndarray:
    """Unit tangents [B, K, 2] at distance tk along segment k (indices [B, K]), blended between its vertices."""
    lk = np.take_along_axis(frame.L, k, axis=1)
    f = np.clip(np.where(lk > 0, tk / np.where(lk > 0, lk, 1.0), 0.0), 0.0, 1.0)[..., None]
    a = np.take_along_axis(frame.VT, k[..., None], axis=1)
    b = np.take_along_axis(frame.VT, (k + 1)[..., None], axis=1)
    seg = np.take_along_axis(frame.T, k[..., None], axis=1)
    return _unit((1 - f) * a + f * b, seg)


def project_to_route(frame: RouteFrame, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, l, tangent heading) [B, K] of points [B, K, 2] on the routes: arc length of the nearest point of the
    polyline (extended backwards before its start and forwards beyond its end), signed lateral offset (left +) and
    the route's heading there."""
    p = np.asarray(points, np.float64)
    rel = p[:, :, None, :] - frame.P[:, None, :, :]  # [B, K, M, 2]
    t = np.einsum("bkmi,bmi->bkm", rel, frame.T)
    m = frame.L.shape[1]
    lo = np.where(np.arange(m) == 0, -np.inf, 0.0)
    hi = np.where(np.arange(m) == m - 1, np.inf, frame.L[:, None, :])
    tc = np.clip(t, lo, hi)
    foot = frame.P[:, None] + tc[..., None] * frame.T[:, None]
    k = np.argmin(np.sum((p[:, :, None, :] - foot) ** 2, axis=-1), axis=2)  # [B, K]
    tk = np.take_along_axis(tc, k[..., None], axis=2)[..., 0]
    seg_t = np.take_along_axis(frame.T, k[..., None], axis=1)
    seg_p = np.take_along_axis(frame.P, k[..., None], axis=1)
    d = p - seg_p
    lat = seg_t[..., 0] * d[..., 1] - seg_t[..., 1] * d[..., 0]
    s = np.take_along_axis(frame.s0, k, axis=1) + tk
    tan = _tangent_at(frame, k, tk)
    return s, lat, np.arctan2(tan[..., 1], tan[..., 0])


def decode_from_route(frame: RouteFrame, s, lat, dheading) -> np.ndarray:
    """Poses [B, K, 3] (x, y, heading in the ego frame) at arc s, lateral offset `lat` (left +) and heading
    `dheading` relative to the route's tangent: the inverse of `project_to_route` (beyond the route's ends along
    its first or last tangent)."""
    s = np.asarray(s, np.float64)
    k = np.sum(s[..., None] >= frame.s0[:, None, :], axis=-1) - 1
    k = np.clip(k, 0, frame.L.shape[1] - 1)
    tk = s - np.take_along_axis(frame.s0, k, axis=1)
    seg_t = np.take_along_axis(frame.T, k[..., None], axis=1)
    seg_p = np.take_along_axis(frame.P, k[..., None], axis=1)
    normal = np.stack([-seg_t[..., 1], seg_t[..., 0]], -1)
    xy = seg_p + tk[..., None] * seg_t + np.asarray(lat, np.float64)[..., None] * normal
    tan = _tangent_at(frame, k, np.clip(tk, 0.0, None))
    h = np.arctan2(tan[..., 1], tan[..., 0]) + np.asarray(dheading, np.float64)
    return np.concatenate([xy, wrap_angle(h)[..., None]], -1)


def wrap_angle(a):
    """Angles wrapped to (-pi, pi]."""
    a = np.asarray(a, np.float64)
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def clip_plan(plan) -> np.ndarray:
    """float32 plan [.., 8, 3] inside the env's action space (x, y clipped, heading wrapped)."""
    p = np.asarray(plan, np.float64).copy()
    p[..., :2] = np.clip(p[..., :2], PLAN_LOW[:2], PLAN_HIGH[:2])
    p[..., 2] = np.clip(wrap_angle(p[..., 2]), PLAN_LOW[2], PLAN_HIGH[2])
    return p.astype(np.float32)


# ============================================================================================ features
def ego_features(ego_status) -> np.ndarray:
    """float32 [B, 20]: obs["ego_status"] normalised (velocity, acceleration, command, past poses)."""
    e = np.asarray(ego_status, np.float64)
    past = e[:, 8:20].reshape(-1, 4, 3) / PAST_SCALE
    return np.concatenate([e[:, 0:2] / SPEED_SCALE, e[:, 2:4] / ACC_SCALE, e[:, 4:8],
                           past.reshape(-1, 12)], axis=1).astype(np.float32)


def privileged_features(arrays: dict) -> dict:
    """The network inputs of a batch of privileged observations ({"ego_status" [B, 20], "agents" [B, 64, 8],
    "route" [B, 32, 2]}): "ego" [B, 20 + 64 + 4 + 6] (ego status, route points, the ego against the route, the lead
    agents among all 64 rows) and "agents" [B, 32, 20] (the nearest `SET_AGENTS` rows) with "mask" [B, 32] (real
    rows)."""
    ego = np.asarray(arrays["ego_status"], np.float64)
    agents = np.asarray(arrays["agents"], np.float64)
    route = np.asarray(arrays["route"], np.float64)
    b = len(ego)
    frame = route_frame(route)
    # the ego against the route: its lateral offset and heading error at its projection, the route length ahead
    s_e, l_e, h_e = project_to_route(frame, np.zeros((b, 1, 2)))
    route_len = frame.s0[:, -1] + frame.L[:, -1]
    ego_route = np.stack([l_e[:, 0] / 2.0, np.cos(h_e[:, 0]), np.sin(-h_e[:, 0]), route_len / 62.0], axis=1)
    # the agents in the ego frame and on the route
    mask = agents[..., 5] > 0  # padding rows are all zero (length 0)
    s_a, l_a, h_r = project_to_route(frame, agents[..., :2])
    rel_h = agents[..., 2] - h_r
    v_along = agents[..., 3] * np.cos(h_r) + agents[..., 4] * np.sin(h_r)
    cat = np.clip(agents[..., 7].round().astype(int), 0, AGENT_CATEGORIES - 1)
    onehot = np.eye(AGENT_CATEGORIES)[cat]
    feats = np.concatenate([
        agents[..., 0:2] / POS_SCALE, np.cos(agents[..., 2:3]), np.sin(agents[..., 2:3]),
        agents[..., 3:5] / SPEED_SCALE, agents[..., 5:6] / 5.0, agents[..., 6:7] / 2.0,
        (s_a / POS_SCALE)[..., None], (np.clip(l_a, -20, 20) / 5.0)[..., None],
        np.cos(rel_h)[..., None], np.sin(rel_h)[..., None], (v_along / SPEED_SCALE)[..., None], onehot], axis=-1)
    feats = np.where(mask[..., None], feats, 0.0)
    # lead agents: the nearest in the ego's corridor along the route, ahead of the ego's front
    gap = s_a - 0.5 * agents[..., 5] - EGO_FRONT_M
    lead = []
    for margin in CORRIDOR_MARGINS_M:
        inside = mask & (s_a > 0) & (np.abs(l_a) < EGO_HALF_WIDTH_M + 0.5 * agents[..., 6] + margin)
        g = np.where(inside, gap, np.inf)
        j = np.argmin(g, axis=1)
        gmin = np.take_along_axis(g, j[:, None], axis=1)[:, 0]
        has = np.isfinite(gmin)
        v = np.where(has, np.take_along_axis(v_along, j[:, None], axis=1)[:, 0], 0.0)
        lead += [np.clip(np.where(has, gmin, LEAD_GAP_CAP_M), -5.0, LEAD_GAP_CAP_M) / POS_SCALE, v / SPEED_SCALE,
                 has.astype(np.float64)]
    ego_vec = np.concatenate([ego_features(ego), (route / ROUTE_SCALE).reshape(b, -1), ego_route,
                              np.stack(lead, axis=1)], axis=1)
    return {"ego": ego_vec.astype(np.float32), "agents": feats[:, :SET_AGENTS].astype(np.float32),
            "mask": mask[:, :SET_AGENTS]}


def privileged_bev_features(arrays: dict) -> dict:
    out = privileged_features(arrays)
    out["image"] = np.asarray(arrays["bev"], np.uint8)
    return out


def camera_features(arrays: dict) -> dict:
    """{"ego" [B, 20], "image" [B, H, W, 3] uint8}: the ego status and the stitched front cameras."""
    return {"ego": ego_features(arrays["ego_status"]), "image": np.asarray(arrays["image"], np.uint8)}


def pool_bev(bev) -> np.ndarray:
    """uint8 [.., 64, 64, 5]: the env's [.., 256, 256, 5] BEV raster max-pooled by `BEV_POOL` (any size divisible
    by it)."""
    a = np.asarray(bev, np.uint8)
    h, w, c = a.shape[-3:]
    if h % BEV_POOL or w % BEV_POOL:
        raise ValueError(f"the BEV raster's size must be divisible by {BEV_POOL}, got {h} x {w}")
    a = a.reshape(a.shape[:-3] + (h // BEV_POOL, BEV_POOL, w // BEV_POOL, BEV_POOL, c))
    return a.max(axis=(-4, -2))


# ============================================================================================ targets / decoding
def route_targets(arrays: dict, plans) -> np.ndarray:
    """float32 [B, 8, 3]: expert plans [B, 8, 3] (ego frame) as (s, l, heading - the route's) on each sample's
    route, in units of `TARGET_SCALE`."""
    frame = route_frame(arrays["route"])
    p = np.asarray(plans, np.float64)
    s, lat, h = project_to_route(frame, p[..., :2])
    out = np.stack([s, lat, wrap_angle(p[..., 2] - h)], -1) / TARGET_SCALE
    return out.astype(np.float32)


def route_decode(arrays: dict, out) -> np.ndarray:
    """Plans [B, 8, 3] (ego frame) from the network's route-frame outputs (units of `TARGET_SCALE`)."""
    o = np.asarray(out, np.float64) * TARGET_SCALE
    return decode_from_route(route_frame(arrays["route"]), o[..., 0], o[..., 1], o[..., 2])


def ego_targets(arrays: dict, plans) -> np.ndarray:
    """float32 [B, 8, 3]: expert plans in the ego frame in units of `TARGET_SCALE`."""
    p = np.asarray(plans, np.float64).copy()
    p[..., 2] = wrap_angle(p[..., 2])
    return (p / TARGET_SCALE).astype(np.float32)


def ego_decode(arrays: dict, out) -> np.ndarray:
    o = np.asarray(out, np.float64) * TARGET_SCALE
    o[..., 2] = wrap_angle(o[..., 2])
    return o


# ============================================================================================ networks
def _torch():
    import torch

    return torch


def _mlp(sizes, act_last: bool = False):
    nn = _torch().nn
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or act_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _cnn(in_channels: int, pool: tuple[int, int]):
    nn = _torch().nn
    return nn.Sequential(nn.Conv2d(in_channels, 16, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(pool), nn.Flatten())


def _plan_head(out):
    """[B, 24] -> [B, 8, 3]: channel 0 cumulative softplus increments (progress never goes back), the rest as is."""
    torch = _torch()
    o = out.view(-1, PLAN_POSES, 3)
    prog = torch.cumsum(torch.nn.functional.softplus(o[..., 0]), dim=1)
    return torch.cat([prog[..., None], o[..., 1:]], dim=-1)


@lru_cache(maxsize=None)
def _network_classes() -> dict:
    """The torch modules by `ObservationKind.network` (defined on first use: importing this module needs no torch)."""
    torch = _torch()
    nn = torch.nn

    class PrivilegedNet(nn.Module):
        """Ego/route/lead vector + per-agent shared MLP and masked max-pool (+ a BEV CNN) -> MLP -> [B, 8, 3]."""

        def __init__(self, hidden: int = 256, agent_hidden: int = 64, bev: bool = False):
            super().__init__()
            self.agent_net = _mlp([20, agent_hidden, agent_hidden], act_last=True)
            self.bev_net = _cnn(BEV_CHANNELS, (4, 4)) if bev else None
            n_in = 20 + 2 * ROUTE_POINTS + 4 + 3 * len(CORRIDOR_MARGINS_M) + agent_hidden + (1024 if bev else 0)
            self.trunk = _mlp([n_in, hidden, hidden, 3 * PLAN_POSES])

        def forward(self, x: dict):
            a = self.agent_net(x["agents"])
            a = torch.where(x["mask"][..., None], a, torch.zeros((), dtype=a.dtype))  # ReLU outputs are >= 0
            parts = [x["ego"], a.amax(dim=1)]
            if self.bev_net is not None:
                parts.append(self.bev_net(x["image"].permute(0, 3, 1, 2).float() / 255.0))
            return _plan_head(self.trunk(torch.cat(parts, dim=1)))

    class CameraNet(nn.Module):
        """Stitched front cameras (CNN) + ego status -> MLP -> [B, 8, 3] in the ego frame."""

        def __init__(self, hidden: int = 256):
            super().__init__()
            self.cnn = _cnn(3, (2, 4))
            self.trunk = _mlp([20 + 512, hidden, hidden, 3 * PLAN_POSES])

        def forward(self, x: dict):
            img = self.cnn(x["image"].permute(0, 3, 1, 2).float() / 255.0)
            return _plan_head(self.trunk(torch.cat([x["ego"], img], dim=1)))

    return {"privileged": PrivilegedNet, "cameras": CameraNet}


def make_network(kind: str, **kwargs):
    """The torch module of observation kind `kind` (`OBSERVATIONS`), built with its kwargs (hidden sizes) over the
    kind's own (`network_kwargs`)."""
    spec = observation_kind(kind)
    return _network_classes()[spec.network](**{**spec.network_kwargs, **kwargs})


def to_tensors(features: dict, index=None) -> dict:
    """torch tensors of a feature dict (rows `index` if given)."""
    torch = _torch()
    out = {}
    for k, v in features.items():
        a = v if index is None else v[index]
        out[k] = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return out


# ============================================================================================ observation kinds
@dataclass(frozen=True)
class ObservationKind:
    """What a BC policy observes and how: the env's observation keys and kwargs, the arrays stored per sample
    (`record`: one env observation -> {name: array}), the network inputs (`features`: batched arrays -> inputs),
    the label space (`targets`, `decode`) and the network (`network` in `make_network`)."""

    name: str
    description: str
    observation_keys: tuple[str, ...]
    record: Callable[[dict, "ObservationKind"], dict]
    features: Callable[[dict], dict]
    targets: Callable[[dict, np.ndarray], np.ndarray]
    decode: Callable[[dict, np.ndarray], np.ndarray]
    network: str
    network_kwargs: dict = field(default_factory=dict)
    cameras: tuple[str, ...] | None = None
    env_kwargs: dict = field(default_factory=dict)
    image_size: tuple[int, int] | None = None  # (W, H) of the stitched camera image


def _record_privileged(obs: dict, kind: ObservationKind) -> dict:
    return {"ego_status": np.asarray(obs["ego_status"], np.float32), "agents": np.asarray(obs["agents"], np.float32),
            "route": np.asarray(obs["route"], np.float32)}


def _record_privileged_bev(obs: dict, kind: ObservationKind) -> dict:
    return {**_record_privileged(obs, kind), "bev": pool_bev(obs["bev"])}


def _record_cameras(obs: dict, kind: ObservationKind) -> dict:
    from .planners.features import stitch_front_cameras

    return {"ego_status": np.asarray(obs["ego_status"], np.float32),
            "image": stitch_front_cameras(obs["cameras"], kind.cameras, kind.image_size)}


def _front_channels() -> tuple[str, ...]:
    from .planners.features import FRONT_CHANNELS

    return tuple(FRONT_CHANNELS)


OBSERVATIONS: dict[str, ObservationKind] = {
    "privileged": ObservationKind(
        "privileged", "ego status, the agents (a set: shared MLP + max-pool) and the route; plans along the route",
        ("ego_status", "agents", "route"), _record_privileged, privileged_features, route_targets, route_decode,
        "privileged"),
    "privileged_bev": ObservationKind(
        "privileged_bev", "privileged + the BEV raster (max-pooled to 64 x 64, a small CNN)",
        ("ego_status", "agents", "route", "bev"), _record_privileged_bev, privileged_bev_features, route_targets,
        route_decode, "privileged", {"bev": True}),
    "cameras": ObservationKind(
        "cameras", "the front three cameras stitched (TransFuser's crops) + the ego status; plans in the ego frame",
        ("ego_status", "cameras"), _record_cameras, camera_features, ego_targets, ego_decode, "cameras",
        cameras=_front_channels(), env_kwargs={"width": 128, "height": 64}, image_size=(128, 32)),
}


def observation_kind(name: str) -> ObservationKind:
    if name not in OBSERVATIONS:
        raise ValueError(f"unknown observation {name!r}; known: {', '.join(OBSERVATIONS)}")
    return OBSERVATIONS[name]


# ============================================================================================ the policy
class BCPolicy(BasePolicy):
    """A trained BC network as an `agents.Policy`: `act(obs, info)` -> the decoded [8, 3] plan (float32, inside the
    env's action space). Reads only the observation keys of its kind (never the pseudo-experts)."""

    def __init__(self, network, observation: str = "privileged", name: str = "bc"):
        self.kind = observation_kind(observation)
        self.network = network.eval()
        self.name = name
        self.observation_keys = self.kind.observation_keys
        self.cameras = self.kind.cameras
        self.env_kwargs = dict(self.kind.env_kwargs)

    def predict(self, arrays: dict) -> np.ndarray:
        """Plans [B, 8, 3] (float32, clipped to the action space) of a batch of recorded arrays (`record`)."""
        torch = _torch()
        feats = self.kind.features(arrays)
        with torch.no_grad():
            out = self.network(to_tensors(feats)).numpy()
        return clip_plan(self.kind.decode(arrays, out))

    def act(self, observation: dict, info: dict) -> np.ndarray:
        missing = [k for k in self.observation_keys if k not in observation]
        if missing:
            raise PolicyError(self.name, f"the observation has no {missing} (make the env with "
                                         f"agents.policy_env_kwargs(policy): observation_keys="
                                         f"{self.observation_keys})")
        rec = self.kind.record(observation, self.kind)
        return self.predict({k: v[None] for k, v in rec.items()})[0]


# ============================================================================================ checkpoints
def checkpoint_dict(network, observation: str, network_kwargs: dict | None = None, **extra) -> dict:
    """The "simscale-bc/1" checkpoint of a network: format, observation kind, network kwargs, state_dict, then any
    `extra` entries (config, round, optimizer, metrics: plain values and tensors)."""
    return {"format": CHECKPOINT_FORMAT, "observation": observation, "network_kwargs": dict(network_kwargs or {}),
            "state_dict": network.state_dict(), **extra}


def save_checkpoint(path, ckpt: dict) -> Path:
    """Write `ckpt` (`checkpoint_dict`) atomically (a hidden temporary renamed into place)."""
    from simscale_env.data.atomic import atomic_write

    torch = _torch()
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


def read_checkpoint(path) -> dict:
    """The checkpoint dict of a "simscale-bc/1" file (torch.load with weights_only: plain values and tensors only).
    A missing file is a MissingFileError, an unreadable one a CorruptFileError, another format a SchemaError."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "BC checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many types for a bad file)
        raise CorruptFileError(path, f"not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SchemaError(path, f"format must be {CHECKPOINT_FORMAT!r}, got {got!r}")
    for key in ("observation", "state_dict"):
        if key not in ckpt:
            raise SchemaError(path, f"a {CHECKPOINT_FORMAT} checkpoint needs the field {key!r}")
    if ckpt["observation"] not in OBSERVATIONS:
        raise SchemaError(path, f"observation must be one of {list(OBSERVATIONS)}, got {ckpt['observation']!r}")
    return ckpt


def network_from_checkpoint(ckpt: dict, path=None):
    net = make_network(ckpt["observation"], **dict(ckpt.get("network_kwargs") or {}))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise SchemaError(path, f"state_dict does not fit the {ckpt['observation']!r} network: "
                                f"{' '.join(str(exc).split())[:300]}") from None
    return net.eval()


def load_bc_policy(path, name: str | None = None) -> BCPolicy:
    """The `BCPolicy` of a "simscale-bc/1" checkpoint (the checkpoint loader `register` registers)."""
    ckpt = read_checkpoint(path)
    return BCPolicy(network_from_checkpoint(ckpt, path), ckpt["observation"], name=name or "bc")


def is_bc_checkpoint(path) -> bool:
    """Whether `path` is a .pt/.pth file holding a "simscale-bc/1" checkpoint (peeks at it; never raises)."""
    path = Path(path)
    if not path.name.lower().endswith(CHECKPOINT_SUFFIXES) or not path.is_file():
        return False
    try:
        ckpt = _torch().load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (not ours)
        return False
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def register() -> None:
    """Let `agents.load_policy(path)` load "simscale-bc/1" checkpoints (idempotent)."""
    from .policy import unregister_checkpoint_loader

    unregister_checkpoint_loader(load_bc_policy)
    register_checkpoint_loader(is_bc_checkpoint, load_bc_policy, name=f"{CHECKPOINT_FORMAT} (.pt, agents.bc_policy)")
