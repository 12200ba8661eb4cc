"""Env API edges: stepping a finished episode, malformed actions and config values, the episode summary through SB3's
and gymnasium's wrappers (`info["epdms_episode"]`), and random actions inside and outside the action space."""

import numpy as np
import pytest

import gymnasium as gym

import simscale_env  # noqa: F401
from simscale_env.envs.simscale_env import EnvConfig

# short episodes, no cameras, no experts: the wrappers' tests run whole episodes
TINY = dict(observation_keys=("ego_status",), pseudo_experts=False, valid_start=False, episode_steps=2)
ZERO_PLAN = np.zeros((8, 3), np.float32)


@pytest.fixture(scope="module", autouse=True)
def _mini(mini):
    import os

    os.environ.setdefault("SIMSCALE_MINI", str(mini))


@pytest.fixture(scope="module")
def tiny_env():
    return gym.make("SimScale-navhard-v0", **TINY).unwrapped  # no PassiveEnvChecker: the env's own checks


def test_step_after_termination_raises_like_after_truncation():
    env = gym.make("SimScale-navhard-v0", observation_keys=("ego_status",), pseudo_experts=False, perturb=False,
                   plan_scoring=None)
    env.reset(seed=0)
    swerve = np.stack([3.0 * np.arange(1, 9), 3.0 * np.arange(1, 9), np.full(8, 0.8)], -1)  # off the road
    for _ in range(10):
        obs, r, term, trunc, info = env.step(swerve)
        if term or trunc:
            break
    assert term and not trunc and info["step_metrics"]["drivable_area_compliance"] == 0.0
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(ZERO_PLAN)
    env.reset(seed=0)  # reset clears it
    env.step(ZERO_PLAN)
    short = gym.make("SimScale-navhard-v0", **TINY)
    short.reset(seed=0)
    short.step(ZERO_PLAN)
    assert short.step(ZERO_PLAN)[3]  # truncated
    with pytest.raises(RuntimeError, match="episode is over"):
        short.step(ZERO_PLAN)


@pytest.mark.parametrize("action, error", [
    (np.zeros((8, 3), np.complex128), TypeError),
    (np.zeros((8, 3)) + 1j, TypeError),
    (np.full((8, 3), "0"), TypeError),
    (np.zeros((8, 3), object), TypeError),
    ([[0.0, 0.0, None]] * 8, TypeError),
    (None, TypeError),
    ("plan", TypeError),
    (np.zeros((8, 3), bool), TypeError),
    ([[0.0, 0.0, 0.0]] * 7 + [[0.0, 0.0]], ValueError),  # ragged
    (np.zeros((3, 8)), ValueError),
])
def test_malformed_actions_raise_errors_naming_the_action(tiny_env, action, error):
    env = tiny_env
    env.reset(seed=0)
    with pytest.raises(error, match=r"action must .*\(8, 3\)"):
        env.step(action)
    env.step(ZERO_PLAN)  # the failed step changed nothing


@pytest.mark.parametrize("field, value", [("width", -1), ("width", 0), ("height", -5), ("width", 64.0),
                                          ("bev_size", 0), ("max_start_draws", 0), ("replan_interval", float("nan")),
                                          ("replan_interval", -0.5), ("replan_interval", 0.0),
                                          ("terminal_penalty", float("inf")), ("cameras", ()),
                                          ("observation_keys", ())])
def test_invalid_config_values_raise_naming_the_argument(field, value):
    with pytest.raises(ValueError, match=field):
        EnvConfig(**{field: value})


def _finish(env, action=ZERO_PLAN):
    while True:
        obs, r, term, trunc, info = env.step(action)
        if term or trunc:
            return info


def _check_summary(ep, env):
    assert 0.0 <= ep["epdms"] <= 1.0 and ep["l"] == 2 and np.isfinite(ep["r"])
    assert ep["epdms"] == env.unwrapped.episode_summary()["epdms"]


def test_episode_epdms_survives_sb3_monitor_and_gymnasium_statistics():
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make("SimScale-navhard-v0", **TINY))
    env.reset(seed=0)
    info = _finish(env)
    assert set(info["episode"]) == {"r", "l", "t"}  # Monitor's, replacing the env's
    _check_summary(info["epdms_episode"], env)
    stats = gym.wrappers.RecordEpisodeStatistics(gym.make("SimScale-navhard-v0", **TINY), stats_key="stats")
    stats.reset(seed=0)
    info = _finish(stats)
    assert info["stats"]["l"] == 2
    _check_summary(info["epdms_episode"], stats)
    assert info["episode"] == info["epdms_episode"]  # a copy for SB3 vec envs without a Monitor


@pytest.mark.parametrize("vec", ["dummy", "subproc"])
def test_episode_epdms_through_sb3_vec_envs_with_monitor(vec):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    kw = dict(vec_env_cls=DummyVecEnv) if vec == "dummy" else dict(vec_env_cls=SubprocVecEnv,
                                                                    vec_env_kwargs={"start_method": "fork"})
    venv = make_vec_env("SimScale-navhard-v0", n_envs=1 if vec == "dummy" else 2, seed=0, env_kwargs=TINY, **kw)
    try:
        venv.reset()
        for _ in range(2):
            _, rewards, dones, infos = venv.step(np.zeros((venv.num_envs, 8, 3), np.float32))
        assert dones.all()
        for info in infos:
            assert set(info["episode"]) == {"r", "l", "t"}  # the Monitor that make_vec_env adds
            ep = info["epdms_episode"]
            assert 0.0 <= ep["epdms"] <= 1.0 and ep["l"] == 2 and ep["r"] == pytest.approx(info["episode"]["r"])
    finally:
        venv.close()


def test_readme_ppo_snippet_logs_episode_epdms(mini, monkeypatch, capsys):
    """The README's PPO snippet, alone in a fresh namespace (as if copied into a file), with tiny sizes: the episode
    EPDMS reaches SB3's logger."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "PPO(" in b)
    env_args = 'pseudo_experts=False, width=128, height=64'
    assert env_args in code and "n_steps=64" in code and ".learn(256" in code
    code = (code.replace(env_args, env_args + ', observation_keys=("ego_status",), valid_start=False, '
                                               'episode_steps=2, plan_scoring=None')
            .replace("n_steps=64", "n_steps=8, batch_size=8, n_epochs=1").replace(".learn(256", ".learn(8"))
    monkeypatch.setenv("SIMSCALE_MINI", str(mini))
    exec(compile(code, "README.md PPO snippet", "exec"), {"__name__": "readme_ppo"})
    row = re.search(r"ep_epdms_mean\s*\|\s*([0-9.]+)", capsys.readouterr().out)
    assert row is not None and 0.0 <= float(row.group(1)) <= 1.0


# ---------------------------------------------------------------------------------------------- action fuzzing
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FUZZ_KINDS = {("plan", "raise"), ("plan", "clip"), ("control", "clip")}


@pytest.fixture(scope="module")
def fuzz_envs():
    """One env per (action_type, invalid_action), reused across examples; terminations off, so that wild actions keep
    driving wherever they lead (off the road, into others) and episodes end only by truncation."""
    envs = {}
    for kind, invalid in sorted(FUZZ_KINDS):
        env = gym.make("SimScale-navhard-v0", action_type=kind, invalid_action=invalid, pseudo_experts=False,
                       valid_start=False, perturb=False, terminate_on_collision=False, terminate_off_road=False,
                       observation_keys=("ego_status", "agents", "route", "bev"), bev_size=32).unwrapped
        env.reset(seed=0)
        envs[kind, invalid] = env
    return envs


@st.composite
def _actions(draw, low, high):
    shape = low.shape
    real = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8])
    inside = hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0)).map(lambda u: low + u * (high - low))
    # half of the draws are steps that must run (in the box; any finite value when clipping)
    choice = draw(st.sampled_from(["inside", "finite_real"] * 4 + ["any_real", "list", "wrong_shape", "complex", "text",
                                                                  "bool", "none", "object", "ragged"]))
    if choice == "inside":
        return draw(inside).astype(draw(st.sampled_from([np.float32, np.float64])))
    if choice == "finite_real":  # out-of-bounds and extreme finite values of every real dtype
        dtype = np.dtype(draw(real))
        return draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)))
    if choice == "any_real":  # NaN, infinities, out-of-bounds and extreme values of every real dtype
        dtype = draw(real)
        return draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(np.dtype(dtype))))
    if choice == "list":
        return draw(inside).tolist()
    if choice == "wrong_shape":
        return draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
                               .filter(lambda s: s != shape), elements=st.floats(-10, 10)))
    if choice == "complex":
        return draw(hnp.arrays(np.complex128, shape, elements=st.complex_numbers(max_magnitude=10)))
    if choice == "text":
        return draw(hnp.arrays(np.dtype("U3"), shape))
    if choice == "bool":
        return draw(hnp.arrays(np.bool_, shape))
    if choice == "none":
        return None
    if choice == "object":
        return draw(inside).astype(object)
    rows = draw(inside).reshape(shape[0], -1).tolist() if len(shape) > 1 else [[0.0], [0.0, 0.0]]
    rows[-1] = rows[-1][:-1] or [0.0, 0.0]
    return rows


def _expected_error(action, space, invalid):
    """The documented outcome (README "action" row): TypeError for non-real or missing actions, ValueError for a
    wrong shape, a ragged list, NaN/inf, or out of bounds with invalid_action='raise'; None: the step runs."""
    if action is None:
        return TypeError
    try:
        a = np.asarray(action)
    except ValueError:
        return ValueError
    if a.dtype.kind not in "iuf":
        return TypeError
    a = a.astype(np.float64)
    if a.shape != space.shape or not np.isfinite(a).all():
        return ValueError
    if invalid == "raise" and (np.any(a < space.low) or np.any(a > space.high)):
        return ValueError
    return None


@pytest.mark.parametrize("kind", sorted(FUZZ_KINDS), ids="-".join)
def test_random_actions_give_finite_outputs_or_documented_errors(fuzz_envs, kind):
    env = fuzz_envs[kind]
    sp = env.action_space
    low, high = sp.low.astype(np.float64), sp.high.astype(np.float64)

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_actions(low, high))
    def check(action):
        want = _expected_error(action, sp, kind[1])
        if want is not None:
            with pytest.raises(want, match="action") as exc:
                env.step(action)
            assert exc.type is want
            return
        obs, reward, term, trunc, info = env.step(action)
        assert np.isfinite(reward) and all(np.isfinite(v) for v in info["reward_terms"].values())
        for key, value in obs.items():
            assert np.isfinite(value).all(), key
        assert not term
        if trunc:
            env.reset(seed=0)

    check()
