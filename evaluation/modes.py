"""The three scoring modes of `simscale evaluate`, as pure per-item functions: one split token -> one row.

A work item is (config, token, index). `run_item(env, policy, cfg, token, index)` reseeds everything it uses from
`item_seed(cfg.seed, index)` (env resets take explicit seeds, the policy is reset at every env reset), so a row does
not depend on what ran before in the same env or worker; the runner (`evaluation.runner`) only maps items over
worker processes or Ray and sorts the rows.

- ``closed_loop``: one episode from a perturbed start drawn with the item seed (reactive agents), scored by the env's
  closed-loop summary (`info["epdms_episode"]`: EPDMS with NAVSIM's human filter against the logged drive). The same
  numbers as `evaluation.closed_loop.evaluate` for the same seeds (seed + k for the k-th token).
- ``one_stage`` (navtest, NAVSIM v2 `run_pdm_score_one_stage.py`): the policy plans at the token's logged frame t and
  at the logged frame 0.5 s earlier (the env's reset option `start_offset_s=-0.5`). The plan at t is pseudo-simulated
  over 4 s (`EvalConfig.traffic`: log replay by default, NAVSIM's reactive IDM traffic with "reactive") and scored as
  the env scores a plan at a logged start (NAVSIM's stage 1, human filter on); EC pairs the two frames' simulated
  trajectories as NAVSIM's `SceneAggregator._compute_two_frame_comfort` does (current[:-5] vs previous[5:]), and the
  score puts EC back into the weighted average (/16), as `compute_final_scores`. Where the token has no logged frame
  0.5 s earlier with NAVSIM's 1.5 s past before it, EC is NaN and its weight 0 (/14), NAVSIM's rule for a frame
  without partner. NAVSIM pairs a token only with an earlier token of the same split; here the earlier frame is
  always planned, whether the split lists it or not.
- ``two_stage`` (navhard, NAVSIM v2 `run_pdm_score.py`): stage 1 as one_stage with reactive traffic, at t and at
  t - 0.5 s (EC of the pair written to both, as `SceneAggregator.aggregate_scores`). Stage 2: `cfg.stage2_starts`
  start pairs that we generate (NAVSIM ships pre-rendered synthetic scenes): start i is the logged state at t + 4 s
  perturbed by the env's sampler with the split's ranges (reset seed derived from the item seed and i), and its
  partner the logged state at t + 3.5 s with the same perturbation; the world there is the log's at that time (IDM
  agents spawned as at any env start), the cameras rendered as the env renders them. The policy plans from each; each
  plan is scored as the env scores a plan at a perturbed start (stage-2 semantics: reactive, no human filter), EC
  between the pair's two plans. Weights exp(-d^2 / (2 * 0.1)) on the distance from the stage-1 planned endpoint (the
  raw plan's last pose, global, as NAVSIM's `endpoint_x/y`) to each start's rear axle, normalised, uniform when they
  vanish (`metrics.two_stage_weights`); t + 4 s starts weigh against the endpoint planned at t, t + 3.5 s starts
  against the one planned at t - 0.5 s. The token's combined score is NAVSIM's `calculate_individual_mapping_scores`
  entry: (S1(t) * sum w S2(t + 4) + S1(t - 0.5) * sum w S2(t + 3.5)) / 2.

`aggregate(rows, cfg)` gives the mode's headline numbers as NAVSIM prints them: one_stage the `average_all_frames`
row; two_stage the stage-one, stage-two and combined rows; closed_loop the EPDMS mean with collision and off-road
rates (`evaluate`'s keys).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simscale_env.envs import split_env_spec
from simscale_env.metrics import SUB_METRICS

log = logging.getLogger(__name__)

# NAVSIM's sub-score columns, in the order of its CSVs (navsim-agents-and-planners.md §2.1): its multiplicative then
# weighted metrics
SUBSCORES = SUB_METRICS
SCORE_COLUMNS = SUBSCORES + ("score",)
MODE_NAMES = ("closed_loop", "one_stage", "two_stage")
TRAFFIC = ("non_reactive", "reactive")
# navsim/common/dataclasses.py NAVSIM_INTERVAL_LENGTH: the previous frame (EC partner) is 0.5 s before the current one
FRAME_GAP_S = 0.5
# navhard's synthetic scenes start where the stage-1 plan ends: "now" at t + 4 s, "prev" at t + 3.5 s (docs/metrics.md)
STAGE_TWO_OFFSET_S = 4.0


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation run scores (frozen; the runner writes it into the run directory)."""

    policy: str  # a load_policy spec: a built-in name, package.module:Class, or a checkpoint path
    policy_kwargs: dict = field(default_factory=dict)
    split: str = "mini-navhard"  # navhard, navtest, navtrain, their mini- versions, or a scene_filter YAML path
    mode: str = "closed_loop"  # "closed_loop" | "one_stage" | "two_stage"
    seed: int = 0
    traffic: str = "non_reactive"  # one_stage pseudo-simulation traffic; two_stage stage 1 and 2 are always reactive
    stage2_starts: int = 10  # two_stage: generated stage-2 start pairs per stage-1 frame pair
    env_kwargs: dict = field(default_factory=dict)  # more gym.make kwargs: data_root, data_source, cameras, ...
    # one_stage EC partner. "split" (NAVSIM's run_pdm_score_one_stage `_get_adjacent_mapping`): a token is paired with
    # the frame 0.5 s earlier only when the split holds that frame's token too (else EC is left out: /14).
    # "always" (ours, flagged): the policy also plans at the logged frame 0.5 s earlier of every token
    ec_partner: str = "split"

    def __post_init__(self):
        if self.ec_partner not in ("split", "always"):
            raise ValueError(f"ec_partner must be 'split' or 'always', got {self.ec_partner!r}")
        if not isinstance(self.policy, str) or not self.policy:
            raise ValueError(f"policy must be a non-empty load_policy spec, got {self.policy!r}")
        if self.mode not in MODE_NAMES:
            raise ValueError(f"mode must be one of {MODE_NAMES}, got {self.mode!r}")
        if self.traffic not in TRAFFIC:
            raise ValueError(f"traffic must be one of {TRAFFIC}, got {self.traffic!r}")
        for name in ("seed", "stage2_starts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'seed' else 1}, got {v!r}")
        for name in ("policy_kwargs", "env_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.split, (str, Path)) or not str(self.split):
            raise ValueError(f"split must be a split name or a scene_filter YAML path, got {self.split!r}")


def item_seed(seed: int, index: int) -> int:
    """The seed of the item at `index` (the token's position in the split): seed + index, the seed
    `evaluation.closed_loop.evaluate` gives its k-th episode."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    return int(seed) + int(index)


def _sub_seed(seed: int, *path: int) -> int:
    """A reset seed derived from an item seed (e.g. the i-th stage-2 start), independent of every other item's."""
    return int(np.random.SeedSequence([int(seed), *map(int, path)]).generate_state(1, np.uint32)[0])


# ---------------------------------------------------------------------------------------------- policy and env
def load_policy(cfg: EvalConfig):
    """The policy of `cfg`: `agents.load_policy(cfg.policy, cfg.policy_kwargs)`."""
    from agents import load_policy as _load

    return _load(cfg.policy, dict(cfg.policy_kwargs))


def env_kwargs(cfg: EvalConfig, policy) -> tuple[str, dict]:
    """(env id, gym.make kwargs) of `make_env`: the split's, the policy's (`agents.policy_env_kwargs`: its observation
    keys, default "ego_status", cameras, pseudo-experts and own env kwargs), `cfg.env_kwargs`, then what the mode
    needs (one_stage: `plan_scoring=cfg.traffic`; two_stage: reactive plan scoring, perturbed starts, and the
    pseudo-experts, whose PDM-Closed plan normalises EP at them). A `cfg.env_kwargs` entry that contradicts the mode
    is an error."""
    from agents import policy_env_kwargs

    env_id, kw = split_env_spec(cfg.split)
    kw.update(policy_env_kwargs(policy))
    kw.update(cfg.env_kwargs)
    need = {}
    if cfg.mode == "one_stage":
        need = {"plan_scoring": cfg.traffic}
    elif cfg.mode == "two_stage":
        need = {"plan_scoring": "reactive", "perturb": True, "pseudo_experts": True}
    for k, v in need.items():
        if k in cfg.env_kwargs and cfg.env_kwargs[k] != v:
            raise ValueError(f"mode {cfg.mode!r} needs {k}={v!r}; env_kwargs has {k}={cfg.env_kwargs[k]!r}")
    kw.update(need)
    if cfg.mode != "closed_loop" and kw.get("human_filter", "fixed") == "pre_fix":
        raise ValueError("human_filter='pre_fix' keeps the final score unfiltered, which the one_stage and two_stage "
                         "modes cannot recompute with EC: use 'fixed' (NAVSIM since 2025-09-29) or None")
    return env_id, kw


def make_env(cfg: EvalConfig, policy):
    """The env for `cfg` and `policy`, built once per worker and reused for every item."""
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)

    env_id, kw = env_kwargs(cfg, policy)
    return gym.make(env_id, **kw)


def split_tokens(cfg: EvalConfig) -> list[str]:
    """The items of a run: the split's tokens, in the split's order (`simscale_env.envs.split_tokens`)."""
    from simscale_env.envs import split_tokens as tokens_of

    return tokens_of(cfg.split, cfg.env_kwargs)


# ---------------------------------------------------------------------------------------------- one frame
@dataclass(frozen=True)
class Frame:
    """The policy's plan at one start and what the scoring of it needs."""

    plan: np.ndarray  # [8, 3] as the env takes it (float32 values), rear-axle frame
    states: np.ndarray  # [41, 11] the plan tracked by the LQR + bicycle over 4 s (NAVSIM's simulated states)
    scores: object  # PlanScores (1 row; EC NaN) of info["epdms"], or None when not scored
    stage: int | None  # info["epdms_stage"]
    time_us: int
    start_xy: tuple[float, float]  # the start's rear axle (global): NAVSIM's start_point_x/y
    endpoint_xy: tuple[float, float]  # the plan's last pose (global): NAVSIM's endpoint_x/y
    perturbed: bool
    perturbation: dict
    info: dict  # the reset info


def _env_plan(env, action) -> np.ndarray:
    """The plan exactly as the env scores it: float32 values, clipped where the env clips (`invalid_action`); what the
    env refuses is refused here too (a frame that is planned but not stepped, e.g. one_stage's earlier frame)."""
    u = env.unwrapped
    sp = u.action_space
    a = np.asarray(action, dtype=np.float64)
    if a.shape != sp.shape or not np.all(np.isfinite(a)):
        raise ValueError(f"the policy's plan must be a finite array of shape {sp.shape}, got shape {a.shape}")
    if np.any(a < sp.low) or np.any(a > sp.high):
        if u.config.invalid_action != "clip":
            raise ValueError("the policy's plan is out of the action bounds (invalid_action='clip' clips it)")
        a = np.clip(a, sp.low, sp.high)
    return a.astype(np.float32).astype(np.float64)


def _scores_of(epdms: dict):
    from simscale_env.metrics import PlanScores

    return PlanScores(**{f: np.array([np.nan if epdms[f] is None else float(epdms[f])])
                         for f in PlanScores.__dataclass_fields__})


def plan_frame(env, policy, token: str, seed: int, *, offset_s: float = 0.0, perturbation="sample",
               score: bool = True) -> Frame:
    """Reset to `token` (`start_offset_s=offset_s`, `perturbation` as the env's reset option, `seed`), reset the
    policy, let it plan, and (`score`) submit the plan for one step to read its score (`info["epdms"]`)."""
    from simscale_env.geometry import local_to_global
    from simscale_env.metrics import plan_states
    from simscale_env.sim.state import HEADING, X, Y

    opts = {"scenario_token": token, "perturbation": perturbation}
    if offset_s:
        opts["start_offset_s"] = float(offset_s)
    obs, info = env.reset(seed=int(seed), options=opts)
    getattr(policy, "reset", lambda i: None)(info)
    action = policy.act(obs, info)
    u = env.unwrapped
    world = u.world
    plan = _env_plan(env, action)
    origin = world.ego[[X, Y, HEADING]]
    states = plan_states(world, plan[None], lqr=u.sim.config.lqr)[0]
    end = local_to_global(plan[-1], origin)
    scores, stage = None, None
    if score:
        _, _, _, _, step_info = env.step(action)
        if "epdms" not in step_info:
            raise RuntimeError("the env scores no plans (plan_scoring=None)")
        scores, stage = _scores_of(step_info["epdms"]), int(step_info["epdms_stage"])
    return Frame(plan, states, scores, stage, int(info["time_us"]), (float(origin[0]), float(origin[1])),
                 (float(end[0]), float(end[1])), bool(info["perturbed"]), dict(info["perturbation"]), info)


def frame_ec(current: Frame, previous: Frame) -> float:
    """NAVSIM's two-frame extended comfort of a frame and the frame 0.5 s before it (`SceneAggregator.
    _compute_two_frame_comfort`: the gap from their start times, asserted in (0, 0.55) s; current[:-k] vs
    previous[k:])."""
    from simscale_env.metrics import two_frame_extended_comfort

    gap = (current.time_us - previous.time_us) * 1e-6
    return float(two_frame_extended_comfort(current.states[None], previous.states[None], frame_gap_s=gap)[0])


def _with_ec(scores, ec: float):
    return scores.replace(two_frame_extended_comfort=np.array([ec], dtype=np.float64))


def _score_values(scores) -> dict:
    """NAVSIM's columns of one scored frame: the sub-scores and `score` (EPDMS, EC included where known)."""
    out = {c: float(getattr(scores, c)[0]) for c in SUBSCORES}
    out["score"] = float(scores.epdms()[0])
    return out


def _base_row(env, token: str, info: dict, seed: int) -> dict:
    return {"token": str(token), "log_name": str(info["log_name"]),
            "scenario_type": str(env.unwrapped.sim.scenario.scenario_type), "valid": True, "seed": int(seed)}


def _has_previous_frame(env) -> bool:
    """Whether the token's scenario (the env's current one, reset to the token) has a logged frame 0.5 s before the
    token with NAVSIM's 1.5 s past before that (the env's `start_offset_s` bound)."""
    from simscale_env.envs.history import PAST_S

    sc = env.unwrapped.sim.scenario
    return (sc.start_index * sc.dt_s) - FRAME_GAP_S >= PAST_S - 1e-9


def _token_set(env) -> frozenset:
    """The env's split tokens as a set (cached on the env: the split does not change)."""
    u = env.unwrapped
    cached = getattr(u, "_eval_token_set", None)
    if cached is None:
        cached = frozenset(u.tokens)
        u._eval_token_set = cached
    return cached


def _check_stage(frame: Frame, stage: int, what: str):
    if frame.scores is not None and frame.stage != stage:
        raise RuntimeError(f"{what}: the env scored the plan as stage {frame.stage}, expected stage {stage}")


# ---------------------------------------------------------------------------------------------- the modes
def closed_loop_item(env, policy, cfg: EvalConfig, token: str, index: int) -> dict:
    """One full episode from the start drawn with the item seed (perturbed unless the env says otherwise)."""
    seed = item_seed(cfg.seed, index)
    obs, info = env.reset(seed=seed, options={"scenario_token": token})
    getattr(policy, "reset", lambda i: None)(info)
    perturbed = bool(info["perturbed"])
    row = _base_row(env, token, info, seed)
    while True:
        obs, _, term, trunc, info = env.step(policy.act(obs, info))
        if term or trunc:
            break
    ep = info["epdms_episode"]
    row.update({c: float(ep[c]) for c in SUBSCORES if c in ep})
    row["two_frame_extended_comfort"] = float("nan")  # EC compares two plans; a realised episode has none
    row["score"] = float(ep["epdms"])
    row.update(at_fault_collision=bool(ep["at_fault_collision"]), off_road=bool(ep["off_road"]),
               **{"return": float(ep["r"])}, length=int(ep["l"]), perturbed=perturbed, terminated=bool(term))
    return row


def one_stage_item(env, policy, cfg: EvalConfig, token: str, index: int) -> dict:
    """NAVSIM's one-stage score of the token (run_pdm_score_one_stage.py), EC from the frame 0.5 s earlier."""
    seed = item_seed(cfg.seed, index)
    now = plan_frame(env, policy, token, seed, perturbation=None)
    _check_stage(now, 1, token)
    row = _base_row(env, token, now.info, seed)
    ec = float("nan")
    has_prev = _has_previous_frame(env)
    if has_prev and cfg.ec_partner == "split":  # NAVSIM pairs adjacent tokens of the split only
        sc = env.unwrapped.sim.scenario
        prev_token = sc.lidar_pc_tokens[sc.start_index - int(round(FRAME_GAP_S / sc.dt_s))]
        has_prev = prev_token in _token_set(env)
    if has_prev:
        prev = plan_frame(env, policy, token, seed, offset_s=-FRAME_GAP_S, perturbation=None, score=False)
        ec = frame_ec(now, prev)
    else:
        log.info("%s: no EC partner 0.5 s earlier (not in the split, or no %.1f s past before it; ec_partner=%r): EC "
                 "left out (/14)", token, 1.5, cfg.ec_partner)
    row.update(_score_values(_with_ec(now.scores, ec)))
    # NAVSIM's score_row extras: the raw planned endpoint and the start (global), the start time
    row.update(endpoint_x=now.endpoint_xy[0], endpoint_y=now.endpoint_xy[1], start_point_x=now.start_xy[0],
               start_point_y=now.start_xy[1], start_time=now.time_us * 1e-6, ec_partner=bool(has_prev),
               traffic=cfg.traffic)
    return row


def _stage_two_pair(env, policy, token: str, seed: int) -> tuple[Frame, Frame, bool]:
    """One generated stage-2 start pair: (t + 4 s, t + 3.5 s, whether both carry the same perturbation). The t + 4 s
    start is drawn by the env's sampler (`seed`); where it finds no valid perturbed start (the logged state, with
    `perturbation_error`), the logged state is taken as a zero perturbation so that it is scored as stage 2. The
    t + 3.5 s partner gets the same offsets; where they give no valid start there, it is drawn by the sampler."""
    from simscale_env.sim.perturb import PerturbationError

    zero = {"lateral": 0.0, "longitudinal": 0.0, "heading": 0.0, "speed_scale": 1.0}
    now = plan_frame(env, policy, token, seed, offset_s=STAGE_TWO_OFFSET_S)
    if not now.perturbed:
        now = plan_frame(env, policy, token, seed, offset_s=STAGE_TWO_OFFSET_S, perturbation=zero)
    same = True
    try:
        prev = plan_frame(env, policy, token, seed, offset_s=STAGE_TWO_OFFSET_S - FRAME_GAP_S,
                          perturbation=dict(now.perturbation))
    except PerturbationError as exc:
        log.info("%s: the stage-2 offsets %s give no valid start at t + %.1f s (%s); drawing one there", token,
                 now.perturbation, STAGE_TWO_OFFSET_S - FRAME_GAP_S, exc)
        same = False
        prev = plan_frame(env, policy, token, seed, offset_s=STAGE_TWO_OFFSET_S - FRAME_GAP_S)
        if not prev.perturbed:
            prev = plan_frame(env, policy, token, seed, offset_s=STAGE_TWO_OFFSET_S - FRAME_GAP_S, perturbation=zero)
    for f, off in ((now, STAGE_TWO_OFFSET_S), (prev, STAGE_TWO_OFFSET_S - FRAME_GAP_S)):
        _check_stage(f, 2, f"{token} stage-2 start at t + {off:.1f} s")
    return now, prev, same


def weighted_columns(scores: list[dict], weights: np.ndarray) -> dict:
    """sum_i w_i * row_i[col] for every score column (NAVSIM's `calculate_weighted_average_score` over one group;
    `weights` normalised, e.g. `two_stage_weights`)."""
    w = np.asarray(weights, dtype=np.float64)
    return {c: float(np.dot(w, [s[c] for s in scores]) / w.sum()) for c in SCORE_COLUMNS}


def two_stage_row(s1_now: dict, s1_prev: dict, s2_now: list[dict], s2_prev: list[dict], endpoint_now, endpoint_prev,
                  starts_now, starts_prev) -> dict:
    """The two-stage columns of one token from its scored frames: stage-1 at t and t - 0.5 s (`s1_*`: SCORE_COLUMNS
    dicts), the stage-2 frames at t + 4 s and t + 3.5 s (`s2_*`, one dict per start), the stage-1 planned endpoints
    and the stage-2 starts (global xy). Weights per group (`two_stage_weights`), the weighted stage-2 columns, and
    the combined score of `calculate_individual_mapping_scores` for this entry (`metrics.two_stage_score`)."""
    from simscale_env.metrics import TwoStageGroup, two_stage_score, two_stage_weights
    from simscale_env.metrics.constants import TWO_STAGE_SIGMA_SQ

    starts_now = np.asarray(starts_now, dtype=np.float64).reshape(-1, 2)
    starts_prev = np.asarray(starts_prev, dtype=np.float64).reshape(-1, 2)
    w_now = two_stage_weights(endpoint_now, starts_now)
    w_prev = two_stage_weights(endpoint_prev, starts_prev)
    s2w_now, s2w_prev = weighted_columns(s2_now, w_now), weighted_columns(s2_prev, w_prev)
    group = TwoStageGroup(s1_now["score"], s1_prev["score"], tuple(endpoint_now), tuple(endpoint_prev),
                          np.array([s["score"] for s in s2_now]), np.array([s["score"] for s in s2_prev]),
                          starts_now, starts_prev)
    combined = float(two_stage_score([group])[1][0])
    row = {c: s1_now[c] for c in SUBSCORES}
    row["score"] = combined
    row.update(stage1_score=s1_now["score"], stage1_prev_score=s1_prev["score"], stage2_score=s2w_now["score"],
               stage2_prev_score=s2w_prev["score"])
    # NAVSIM's two-stage CSV columns (<sub-score>_stage_one / _stage_two). NAVSIM writes one row per frame; a row here
    # is one token, so it holds its stage-1 frame at t (_stage_one), the frame 0.5 s earlier (_stage_one_prev) and
    # the weighted means of its stage-2 frames (_stage_two at t + 4 s, _stage_two_prev at t + 3.5 s): NAVSIM's
    # stage summaries are the means of exactly these group values (`aggregate`). The individual synthetic frames'
    # rows have no place in a per-token row (their count and weights are summarised below).
    for c in SUBSCORES:
        row[f"{c}_stage_one"] = s1_now[c]
        row[f"{c}_stage_one_prev"] = s1_prev[c]
        row[f"{c}_stage_two"] = s2w_now[c]
        row[f"{c}_stage_two_prev"] = s2w_prev[c]
    uniform = [bool(np.isclose(np.exp(-((p - np.asarray(e)) ** 2).sum(1) / (2.0 * TWO_STAGE_SIGMA_SQ)).sum(), 0.0))
               for e, p in ((endpoint_now, starts_now), (endpoint_prev, starts_prev))]
    row.update(stage2_weight_max=float(w_now.max()), stage2_prev_weight_max=float(w_prev.max()),
               stage2_uniform=uniform[0], stage2_prev_uniform=uniform[1],
               stage2_min_distance=float(np.hypot(*(starts_now - np.asarray(endpoint_now)).T).min()),
               stage2_prev_min_distance=float(np.hypot(*(starts_prev - np.asarray(endpoint_prev)).T).min()))
    return row


def two_stage_item(env, policy, cfg: EvalConfig, token: str, index: int) -> dict:
    """NAVSIM's two-stage (navhard) score of the token with `cfg.stage2_starts` generated stage-2 start pairs."""
    seed = item_seed(cfg.seed, index)
    now = plan_frame(env, policy, token, seed, perturbation=None)
    row = _base_row(env, token, now.info, seed)
    if not _has_previous_frame(env):
        raise ValueError(f"{token}: no logged frame {FRAME_GAP_S} s before the token with NAVSIM's 1.5 s past: a "
                         f"two-stage entry needs its (t, t - 0.5 s) frame pair")
    prev = plan_frame(env, policy, token, seed, offset_s=-FRAME_GAP_S, perturbation=None)
    for f in (now, prev):
        _check_stage(f, 1, f"{token} stage 1")
    ec1 = frame_ec(now, prev)
    s1_now, s1_prev = _score_values(_with_ec(now.scores, ec1)), _score_values(_with_ec(prev.scores, ec1))
    s2_now, s2_prev, starts_now, starts_prev = [], [], [], []
    n_perturbed = n_same = 0
    for i in range(cfg.stage2_starts):
        a, b, same = _stage_two_pair(env, policy, token, _sub_seed(seed, 2, i))
        ec2 = frame_ec(a, b)
        s2_now.append(_score_values(_with_ec(a.scores, ec2)))
        s2_prev.append(_score_values(_with_ec(b.scores, ec2)))
        starts_now.append(a.start_xy)
        starts_prev.append(b.start_xy)
        n_perturbed += any(abs(v - (1.0 if k == "speed_scale" else 0.0)) > 0 for k, v in a.perturbation.items())
        n_same += same
    row.update(two_stage_row(s1_now, s1_prev, s2_now, s2_prev, now.endpoint_xy, prev.endpoint_xy, starts_now,
                             starts_prev))
    row.update(endpoint_x=now.endpoint_xy[0], endpoint_y=now.endpoint_xy[1], start_point_x=now.start_xy[0],
               start_point_y=now.start_xy[1], start_time=now.time_us * 1e-6, stage2_starts=int(cfg.stage2_starts),
               stage2_perturbed=int(n_perturbed), stage2_pairs_same_offsets=int(n_same))
    return row


MODES = {"closed_loop": closed_loop_item, "one_stage": one_stage_item, "two_stage": two_stage_item}


def run_item(env, policy, cfg: EvalConfig, token: str, index: int) -> dict:
    """One row of the run: `MODES[cfg.mode]` on one token (a pure function of (cfg, token, index); raises on
    failure, and the runner records the error)."""
    return MODES[cfg.mode](env, policy, cfg, token, index)


# ---------------------------------------------------------------------------------------------- aggregation
def _valid(rows) -> list[dict]:
    return [r for r in rows if r.get("valid", False)]


def _nanmean(values) -> float:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.mean(a[~np.isnan(a)])) if np.any(~np.isnan(a)) else float("nan")


def aggregate(rows: list[dict], cfg: EvalConfig) -> dict:
    """The mode's headline numbers over the valid rows, as NAVSIM prints them (`epdms` is the headline in every mode).

    - one_stage: NAVSIM's `average_all_frames` row: the NaN-skipping mean of each sub-score column and `score`,
      `valid` = all rows valid.
    - two_stage: NAVSIM's summary rows. `extended_pdm_score_stage_one`: the mean over the tokens' stage-1 frames t and
      t - 0.5 s of each column (NAVSIM averages both groups of every mapping entry); `extended_pdm_score_stage_two`:
      the mean of the weighted stage-2 group values at t + 4 s and t + 3.5 s; `extended_pdm_score_combined`: the
      mean of the tokens' combined scores (the official EPDMS) with both column sets.
    - closed_loop: EPDMS and sub-score means, at-fault collision and off-road rates, mean return (`evaluate`'s keys).
    """
    ok = _valid(rows)
    out = {"mode": cfg.mode, "rows": len(rows), "valid_rows": len(ok), "failed_rows": len(rows) - len(ok)}
    if cfg.mode == "one_stage":
        avg = {c: _nanmean(r.get(c) for r in ok) for c in SCORE_COLUMNS}
        out["average_all_frames"] = {"token": "average_all_frames", "valid": len(ok) == len(rows), **avg}
        out.update(avg)
        out["epdms"] = avg["score"]
    elif cfg.mode == "two_stage":
        one = {f"{c}_stage_one": _nanmean([r[f"{c}_stage_one"] for r in ok] + [r[f"{c}_stage_one_prev"] for r in ok])
               for c in SUBSCORES}
        two = {f"{c}_stage_two": _nanmean([r[f"{c}_stage_two"] for r in ok] + [r[f"{c}_stage_two_prev"] for r in ok])
               for c in SUBSCORES}
        s1 = _nanmean([r["stage1_score"] for r in ok] + [r["stage1_prev_score"] for r in ok])
        s2 = _nanmean([r["stage2_score"] for r in ok] + [r["stage2_prev_score"] for r in ok])
        combined = _nanmean(r["score"] for r in ok)
        valid = len(ok) == len(rows)
        out["extended_pdm_score_stage_one"] = {"token": "extended_pdm_score_stage_one", "valid": valid, **one,
                                               "score": s1}
        out["extended_pdm_score_stage_two"] = {"token": "extended_pdm_score_stage_two", "valid": valid, **two,
                                               "score": s2}
        out["extended_pdm_score_combined"] = {"token": "extended_pdm_score_combined", "valid": valid, **one, **two,
                                              "score": combined}
        out.update(stage_one=s1, stage_two=s2, combined=combined, epdms=combined)
    else:
        out.update({c: _nanmean(r.get(c) for r in ok) for c in SCORE_COLUMNS})
        out.update(epdms=out["score"], collision_rate=_nanmean(float(r["at_fault_collision"]) for r in ok),
                   offroad_rate=_nanmean(float(r["off_road"]) for r in ok),
                   **{"return": _nanmean(r["return"] for r in ok)})
    return out
