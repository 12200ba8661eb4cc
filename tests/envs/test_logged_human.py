"""The logged human in the env: `info["logged_plan"]` is the log's own next 4 s, `LogReplayAgent` ("human") submits
it from the logged start and reproduces the log; the episode summary's HC prepends the past before the start (the
logged one at a logged start, the perturbed one at a perturbed start), as `info["epdms"]` does."""

import dataclasses

import numpy as np
import pytest

import gymnasium as gym

import simscale_env  # noqa: F401
from agents.baselines import AGENTS, LogReplayAgent, make_agent
from simscale_env.data.openscene import NavsimSceneLoader, load_split
from simscale_env.data.scenario import EgoTrack
from simscale_env.geometry import global_to_local
from simscale_env.metrics.pseudo_sim import episode_summary
from simscale_env.sim.state import HEADING, X, Y

SMALL = dict(cameras=("CAM_F0",), width=64, height=32, observation_keys=("ego_status",), pseudo_experts=False)
MOVING = "5f579fdb03767689"  # mini-navhard, 12.5 m/s on a curved road
# mini-navhard, 13 m/s on a curved road, whose logged human fails no sub-score (MOVING's fails TTC)
CLEAN = "548475be2f57654e"


@pytest.fixture(scope="module", autouse=True)
def _mini(mini):
    import os

    os.environ.setdefault("SIMSCALE_MINI", str(mini))


def test_logged_plan_is_navsims_future_trajectory_at_the_logged_start(mini):
    """At the logged start the plan is the OpenScene scene's future trajectory (8 poses 0.5 s apart, rear-axle frame
    of the current frame), as NAVSIM's metric cache holds the human's."""
    loader = NavsimSceneLoader(mini / "navsim_logs" / "mini", load_split(mini / "splits" / "mini-navhard.yaml"))
    env = gym.make("SimScale-navhard-v0", perturb=False, **SMALL)
    for tok in (MOVING, "223f6c4e48feb977"):  # moving; stopping behind a lead
        obs, info = env.reset(seed=0, options={"scenario_token": tok})
        assert info["logged_plan"].shape == (8, 3) and info["logged_plan"].dtype == np.float32
        np.testing.assert_allclose(info["logged_plan"], loader.scene(tok).future_trajectory(8), atol=1e-3)
    env.close()


def test_logged_plan_past_the_scenario_end_reads_the_log():
    """Near the episode's end the plan reaches past the scenario: its poses come from the log, so the plan keeps the
    logged speed (about 13 m/s here, the log's speed at the scenario's end) instead of stopping at the scenario's
    last pose."""
    env = gym.make("SimScale-navhard-v0", perturb=False, **SMALL)
    obs, info = env.reset(seed=0, options={"scenario_token": MOVING})
    u = env.unwrapped
    while info["step"] < u._n_steps - 1:
        obs, r, term, trunc, info = env.step(info["logged_plan"])
        assert not (term or trunc)
    plan = info["logged_plan"].astype(np.float64)
    assert u.world.iteration + 40 > u.sim.num_iterations - 1  # the plan's last poses are past the scenario
    steps = np.hypot(*np.diff(np.vstack([[0.0, 0.0], plan[:, :2]]), axis=0).T)
    e = u.sim.scenario.ego
    v_end = float(np.hypot(e.vx[-1], e.vy[-1]))
    assert v_end > 10.0
    np.testing.assert_allclose(steps / 0.5, v_end, atol=0.3)
    env.close()


def test_human_agent_reproduces_the_log_from_the_logged_start():
    """The logged human (LQR tracking of the log's poses, replanned every 0.5 s) stays within 0.3 m RMS (0.5 m at
    worst) of the logged ego over the whole 12 s episode, and scores 1 in closed loop."""
    agent = make_agent("human")
    assert isinstance(agent, LogReplayAgent) and agent.name == "human" and agent.env_kwargs == {"perturb": False}
    env = gym.make("SimScale-navhard-v0", **{**SMALL, **agent.env_kwargs})
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": CLEAN})
    assert not info["perturbed"]
    err = []
    while True:
        obs, r, term, trunc, info = env.step(agent.act(obs, info))
        err.append(np.hypot(*(u.world.ego[[X, Y]] - u.sim.logged_ego_state(u.world.iteration)[[X, Y]])))
        if term or trunc:
            break
    assert trunc and not term and len(err) == 24
    assert np.sqrt(np.mean(np.square(err))) < 0.3 and max(err) < 0.5
    ep = info["episode"]
    assert ep["epdms"] >= 0.99 and ep["history_comfort"] == 1.0 and ep["ego_progress"] > 0.99
    env.close()


def test_human_is_in_the_registry_and_the_cli(capsys):
    from simscale_env.cli import build_parser

    assert AGENTS["human"] is LogReplayAgent
    p = build_parser()
    with pytest.raises(SystemExit):
        p.parse_args(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "human" in text and "logged start" in text
    assert p.parse_args(["evaluate", "--agents", "human", "pdm_closed"]).agents == ["human", "pdm_closed"]
    with pytest.raises(SystemExit):
        p.parse_args(["evaluate", "--agents", "nobody"])


# ------------------------------------------------------------------ history comfort in the episode summary
def _edit_ego(env, token, **cols):
    """Replace the scenario of `token` in the env by one whose logged ego arrays are edited (frame -> value)."""
    u = env.unwrapped
    sc = u._scenario(token)
    kw = {f: np.array(getattr(sc.ego, f)) for f in sc.ego.__dataclass_fields__}
    for name, fn in cols.items():
        fn(kw[name], sc.start_index)
    u._scenarios[token] = dataclasses.replace(sc, ego=EgoTrack(**kw))


def _episode(env, perturbation):
    """A 1 s episode (2 steps) on MOVING driving straight on at the start speed (comfortable in itself)."""
    obs, info = env.reset(seed=0, options={"scenario_token": MOVING, "perturbation": perturbation})
    assert info["perturbed"] == (perturbation is not None)
    plan = np.zeros((8, 3), np.float32)
    plan[:, 0] = float(obs["ego_status"][0]) * 0.5 * np.arange(1, 9)
    first = None
    while True:
        obs, r, term, trunc, info = env.step(plan)
        first = first or info
        if term or trunc:
            info["first_epdms"] = first["epdms"]
            return info


def test_episode_history_comfort_reads_the_logged_past_at_a_logged_start():
    """A -6 m/s^2 braking 0.5 to 1.0 s before the token (an edited log): the episode summary's HC is 0, as the first
    plan's `info["epdms"]` HC is; the unedited log gives 1. Without the past the same rollout scores HC 1."""
    env = gym.make("SimScale-navhard-v0", episode_steps=2, **SMALL)
    clean = _episode(env, None)
    assert clean["episode"]["history_comfort"] == 1.0
    u = env.unwrapped
    clean_past = u._start_hc_past
    assert clean_past.shape == (14, 11)  # 1.5 s at 0.1 s, NAVSIM's sampling leaves out the last sample and the end

    def brake(a, f0):
        a[f0 - 10:f0 - 5] = -6.0

    _edit_ego(env, MOVING, ax=brake)
    braked = _episode(env, None)
    assert braked["episode"]["history_comfort"] == 0.0
    assert braked["episode"]["epdms"] < clean["episode"]["epdms"]
    assert braked["first_epdms"]["history_comfort"] == 0.0  # the first plan's score reads the same past
    # the same rollout after the clean past is comfortable: the braking in the past is what HC 0 comes from
    assert episode_summary(u.sim, u._worlds, past_states=clean_past)["history_comfort"] == 1.0
    assert episode_summary(u.sim, u._worlds, past_states=u._start_hc_past)["history_comfort"] == 0.0
    # a perturbed start reads the perturbed past, derived from the poses (which carry no braking)
    assert _episode(env, {"lateral": 0.3})["episode"]["history_comfort"] == 1.0
    env.close()


def test_episode_history_comfort_reads_the_perturbed_past_at_a_perturbed_start():
    """A logged path that swerves (heading +-0.15 rad every 0.1 s over the last 1.5 s): the perturbed past follows it,
    so the summary's HC is 0 at a perturbed start; with the clean log it is 1."""
    env = gym.make("SimScale-navhard-v0", episode_steps=2, **SMALL)
    assert _episode(env, {"lateral": 0.3})["episode"]["history_comfort"] == 1.0
    u = env.unwrapped
    clean_past = u._start_hc_past

    def swerve(h, f0):
        h[f0 - 14:f0] += 0.15 * (-1.0) ** np.arange(14)

    _edit_ego(env, MOVING, heading=swerve)
    info = _episode(env, {"lateral": 0.3})
    assert info["episode"]["history_comfort"] == 0.0
    assert episode_summary(u.sim, u._worlds, past_states=clean_past)["history_comfort"] == 1.0
    env.close()


def test_episode_summary_checks_the_past_shape():
    env = gym.make("SimScale-navhard-v0", perturb=False, episode_steps=1, **SMALL)
    obs, info = env.reset(seed=0, options={"scenario_token": MOVING})
    env.step(info["logged_plan"])
    u = env.unwrapped
    with pytest.raises(ValueError, match="past_states"):
        episode_summary(u.sim, u._worlds, past_states=np.zeros((3, 4)))
    env.close()
