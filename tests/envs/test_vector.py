"""`SimScaleVectorEnv` (gym.make_vec's vector entry point) and its SB3 adapter: per sub-env bit-identical to single envs
with the same seeds through episode ends and gymnasium's autoreset modes; the sub-envs share one set of caches."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import simscale_env  # noqa: F401  (registration)
from simscale_env.envs import SB3VecEnv, SimScaleEnv, SimScaleVectorEnv

# privileged observations, both pseudo-experts and plan scoring: the caches every step reads are exercised
KW = dict(observation_keys=("ego_status", "agents", "route"), terminate_off_road=True)
N, STEPS, SEED = 3, 14, 7


def _plans(t: int) -> np.ndarray:
    """Per sub-env plans of step t: straight ahead at three speeds, one of them veering (an off-road end)."""
    p = np.zeros((N, 8, 3), np.float32)
    steps = np.arange(1, 9, dtype=np.float32)
    for i in range(N):
        p[i, :, 0] = steps * (1.0 + 1.5 * i)
        p[i, :, 1] = steps * (0.9 if i == 2 else 0.0) * (t % 3 != 0)
    return p


def _same(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


def _single_runs(mode: AutoresetMode):
    """What N single envs give with the vector env's seeds and autoreset rule, step by step."""
    envs = [gym.make("SimScale-navhard-v0", disable_env_checker=True, **KW) for _ in range(N)]
    first = [e.reset(seed=SEED + i) for i, e in enumerate(envs)]
    out, pending = [], [False] * N
    for t in range(STEPS):
        acts = _plans(t)
        row = []
        for i, e in enumerate(envs):
            if mode == AutoresetMode.NEXT_STEP and pending[i]:
                obs, info = e.reset()
                row.append((obs, 0.0, False, False, info, None))
                pending[i] = False
                continue
            obs, r, term, trunc, info = e.step(acts[i])
            final = None
            if term or trunc:
                if mode == AutoresetMode.SAME_STEP:
                    final = obs
                    obs, _ = e.reset()
                else:
                    pending[i] = True
            row.append((obs, r, term, trunc, info, final))
        out.append(row)
    return first, out


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_sub_envs_are_bit_identical_to_single_envs(mini, mode):
    venv = gym.make_vec("SimScale-navhard-v0", num_envs=N, vectorization_mode="vector_entry_point",
                        autoreset_mode=mode, **KW)
    assert isinstance(venv, SimScaleVectorEnv) and venv.num_envs == N
    assert venv.metadata["autoreset_mode"] == mode
    first, runs = _single_runs(mode)
    obs, info = venv.reset(seed=SEED)
    for i in range(N):
        _same({k: v[i] for k, v in obs.items()}, first[i][0], f"reset obs {i}")
        assert info["scenario_token"][i] == first[i][1]["scenario_token"]
    ends = 0
    for t in range(STEPS):
        obs, rew, term, trunc, info = venv.step(_plans(t))
        for i, (o, r, te, tr, inf, final) in enumerate(runs[t]):
            _same({k: v[i] for k, v in obs.items()}, o, f"step {t} env {i} obs")
            assert rew[i] == r and term[i] == te and trunc[i] == tr, (t, i)
            if "epdms" in inf:
                assert info["epdms"]["epdms"][i] == inf["epdms"]["epdms"]
            if final is not None:
                ends += 1
                _same(info["final_obs"][i], final, f"final obs {t} {i}")
    assert ends >= 1 or mode == AutoresetMode.NEXT_STEP
    assert any(te or tr for row in runs for (_, _, te, tr, _, _) in row)  # episodes ended and were reset
    venv.close()


def test_siblings_share_the_caches_and_only_them(mini):
    venv = SimScaleVectorEnv(num_envs=4, **KW)
    a, b = venv.sub_envs[0], venv.sub_envs[3]
    for name in ("_maps", "_scenarios", "_sims", "_renderers", "_human_cache", "_builder"):
        assert getattr(a, name) is getattr(b, name), name
    assert venv.sub_envs[0].config.cache_sizes.renderers >= 4  # N sub-envs in N logs keep their renderers
    fresh = SimScaleEnv(**KW)
    assert set(fresh.__dict__) == set(SimScaleEnv._SHARED) | {"sim", "world"}  # a new attribute must be classified
    venv.reset(seed=0)
    assert a.world is not b.world and a.np_random is not b.np_random
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        SimScaleVectorEnv(num_envs=0, **KW)


def test_sb3_vec_env_runs_ppo_with_sb3s_episode_semantics(mini):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnv

    from simscale_env.envs import NormalizedPlanAction, SB3ObservationWrapper

    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv.make(SimScaleVectorEnv(num_envs=1, **KW))
    venv = SB3VecEnv.make(SimScaleVectorEnv(num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP,
                                            wrappers=(NormalizedPlanAction, SB3ObservationWrapper), **KW), seed=3)
    assert isinstance(venv, VecEnv) and venv.num_envs == 2
    obs = venv.reset()
    ended = 0
    for _ in range(30):
        obs, rew, dones, infos = venv.step(np.stack([venv.action_space.sample() * 0 for _ in range(2)]))
        assert rew.dtype == np.float32 and len(infos) == 2
        for i in np.nonzero(dones)[0]:
            ended += 1
            assert "terminal_observation" in infos[i] and "epdms_episode" in infos[i]
            assert isinstance(infos[i]["TimeLimit.truncated"], bool)
    assert ended >= 1
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(16)
    assert model.num_timesteps == 16
