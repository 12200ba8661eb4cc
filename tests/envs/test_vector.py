"""`SimScaleVectorEnv` (gym.make_vec's vector entry point) and its SB3 adapter: per sub-env bit-identical to single envs
with the same seeds through episode ends and gymnasium's autoreset modes; the sub-envs share one set of caches."""

from __future__ import annotations

import operator

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
            # the pseudo-experts (PDM-Closed planned with the other sub-envs'); SAME_STEP: the ending step's info is
            # final_info, beside the reset's
            step_info = info["final_info"] if final is not None else info
            for name, plan in inf["pseudo_expert"].items():
                np.testing.assert_array_equal(step_info["pseudo_expert"][name][i], plan, err_msg=f"{t} {i} {name}")
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
    assert set(fresh.__dict__) == set(SimScaleEnv._SHARED) | {"sim", "world", "_ahead", "_ahead_pdm"}  # a new attribute must be classified
    venv.reset(seed=0)
    assert a.world is not b.world and a.np_random is not b.np_random
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        SimScaleVectorEnv(num_envs=0, **KW)


def test_plans_are_tracked_together_and_each_step_reads_its_worlds(mini):
    """`prepare_plan_steps` (what the vector env's step does first) steps the sub-envs' plans together; a sub-env's
    step of the same action from the same state then reads those worlds, any other call steps anew; an env whose
    step would raise (bad action, no reset) is left to raise there."""
    from simscale_env.envs.simscale_env import prepare_plan_steps

    venv = SimScaleVectorEnv(num_envs=N, **KW)
    envs = venv.sub_envs
    assert prepare_plan_steps(envs, list(_plans(0))) == 0  # before reset(): each step says so itself
    venv.reset(seed=SEED)
    plans = list(_plans(1))
    assert prepare_plan_steps(envs, plans) == N
    ahead = [e._ahead for e in envs]
    for e, p, a in zip(envs, plans, ahead):
        e.step(p)
        assert e._ahead is None and e._worlds[-1] is a[2][-1] and len(a[2]) == e._k
    prepare_plan_steps(envs, plans)
    stale = envs[0]._ahead
    envs[0].step(plans[1])  # another plan than the one prepared: stepped here
    assert envs[0]._worlds[-1] is not stale[2][-1]
    bad = np.full((8, 3), np.nan, np.float32)
    assert prepare_plan_steps(envs, [bad, None, plans[2]]) == 1 and envs[0]._ahead is None
    with pytest.raises(ValueError, match="NaN"):
        envs[0].step(bad)


def test_expert_plans_are_made_together_and_each_info_serves_its_own(mini):
    """`prepare_expert_plans` (the vector env's step, after `prepare_plan_steps`) plans PDM-Closed and recovery for
    the worlds the prepared steps end in, together; a sub-env's info after that step serves those plans (the same
    objects), which are what planning alone gives; a step that ends elsewhere plans anew."""
    from simscale_env.envs.simscale_env import prepare_expert_plans, prepare_plan_steps
    from simscale_env.experts import PDMClosedPlanner, recovery_plan

    venv = SimScaleVectorEnv(num_envs=N, **KW)
    envs = venv.sub_envs
    venv.reset(seed=SEED)
    plans = list(_plans(1))
    assert prepare_expert_plans(envs) == 0  # nothing prepared: nothing to plan
    prepare_plan_steps(envs, plans)
    assert prepare_expert_plans(envs) == N
    ahead = [e._ahead_pdm for e in envs]
    for e, p, a in zip(envs, plans, ahead):
        e.step(p)
        assert a[0] is e.world and e._pdm is a[1] and e._ahead_pdm is None
        assert e._last_plans["recovery"] is a[2].trajectory
        fresh = PDMClosedPlanner().plan(e.sim, e.world)
        np.testing.assert_array_equal(fresh.trajectory, a[1].trajectory)
        np.testing.assert_array_equal(fresh.states, a[1].states)
        rec = recovery_plan(e.sim, e.world, fallback_plan=fresh)
        np.testing.assert_array_equal(rec.trajectory, a[2].trajectory)
        assert rec.source == a[2].source
    prepare_plan_steps(envs, plans)
    prepare_expert_plans(envs)
    stale = envs[0]._ahead_pdm
    envs[0].step(plans[2])  # another plan than the one prepared: its world differs, planned here
    assert envs[0]._pdm is not stale[1] and stale[0] is not envs[0].world


def test_the_rl_action_wrappers_hand_their_plans_to_the_batch(mini, monkeypatch):
    """train-rl's sub-envs (residual on PDM-Closed, SB3's observation wrapper) are all prepared together."""
    import simscale_env.envs.simscale_env as mod
    from simscale_env.envs import ResidualExpertAction, SB3ObservationWrapper

    real, counts = mod.prepare_plan_steps, []
    monkeypatch.setattr(mod, "prepare_plan_steps", lambda envs, plans: counts.append(real(envs, plans)) or counts[-1])
    venv = SimScaleVectorEnv(num_envs=2, wrappers=(ResidualExpertAction, SB3ObservationWrapper), **KW)
    venv.reset(seed=SEED)
    venv.step(np.zeros((2, 24), np.float32))
    assert counts == [2]


class _NoisyPlan(gym.ActionWrapper):
    """An action wrapper drawing from the env's generator: calling action() one extra time would change the run."""

    def action(self, action):
        return (np.asarray(action) + self.np_random.normal(0.0, 0.05, np.shape(action))).astype(np.float32)


def test_impure_action_wrappers_are_not_called_ahead(mini):
    venv = SimScaleVectorEnv(num_envs=2, wrappers=(_NoisyPlan,), **KW)
    ref = gym.vector.SyncVectorEnv([lambda: _NoisyPlan(SimScaleEnv(**KW)) for _ in range(2)])
    a, _ = venv.reset(seed=SEED)
    b, _ = ref.reset(seed=SEED)
    for t in range(4):
        a, ra, *_ = venv.step(_plans(t)[:2])
        b, rb, *_ = ref.step(_plans(t)[:2])
        _same(a, b, f"step {t}")
        np.testing.assert_array_equal(ra, rb)


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


def _same_info(a, b, where=""):
    """Two gymnasium vector infos: the same keys, masks and values (dtypes included)."""
    assert set(a) == set(b), (where, set(a) ^ set(b))
    for k in a:
        if isinstance(a[k], dict):
            _same_info(a[k], b[k], f"{where}.{k}")
        elif k == "final_obs":
            for x, y in zip(a[k], b[k]):
                assert (x is None) == (y is None), where
                if x is not None:
                    _same(x, y, f"{where}.final_obs")
        else:
            assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, f"{where}.{k}"
            if a[k].dtype == object:
                assert [str(x) for x in a[k]] == [str(x) for x in b[k]], f"{where}.{k}"
            else:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{where}.{k}")


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_workers_give_what_one_process_gives(mini, mode):
    """SimScaleVectorEnv(workers=2): N = 3 sub-envs in two worker processes (shards of 2 and 1) step exactly as in
    one process: observations, rewards, flags and every info key with its mask and dtype, through episode ends, a
    partial reset (gymnasium's reset_mask) and attribute access."""
    one = SimScaleVectorEnv(num_envs=N, autoreset_mode=mode, **KW)
    two = gym.make_vec("SimScale-navhard-v0", num_envs=N, vectorization_mode="vector_entry_point",
                       autoreset_mode=mode, workers=2, **KW)
    try:
        assert isinstance(two, SimScaleVectorEnv) and two.shards == [(0, 2), (2, 1)]
        assert two.single_observation_space == one.single_observation_space
        assert two.observation_space == one.observation_space and two.action_space == one.action_space
        for env in (one, two):
            env.action_space.seed(0)
        r1, r2 = one.reset(seed=SEED), two.reset(seed=SEED)
        _same(r1[0], r2[0], "reset obs")
        _same_info(r1[1], r2[1], "reset info")
        ends = 0
        for t in range(STEPS):
            a, b = one.step(_plans(t)), two.step(_plans(t))
            _same(a[0], b[0], f"step {t} obs")
            for x, y in zip(a[1:4], b[1:4]):
                np.testing.assert_array_equal(x, y, err_msg=f"step {t}")
            _same_info(a[4], b[4], f"step {t} info")
            ends += int(np.sum(a[2] | a[3]))
        assert ends >= 1
        mask = np.array([False, False, True])
        r1 = one.reset(seed=[None, None, 11], options={"reset_mask": mask})
        r2 = two.reset(seed=[None, None, 11], options={"reset_mask": mask})
        _same(r1[0], r2[0], "partial reset obs")
        _same_info(r1[1], r2[1], "partial reset info")
        assert two.get_attr("spec") == one.get_attr("spec")
        it = operator.attrgetter("unwrapped.world.iteration")  # apply's function must pickle with workers
        assert two.apply(it, [2, 0]) == one.apply(it, [2, 0]) and len(set(two.apply(it))) > 1
        with pytest.raises(AttributeError, match="apply"):
            two.sub_envs
        # a sub-env's error is raised as it is with one process, and the env goes on stepping
        bad = _plans(0)
        bad[2, 0, 0] = np.nan
        for env in (one, two):
            with pytest.raises(ValueError, match="NaN"):
                env.step(bad)
        a, b = one.step(_plans(1)), two.step(_plans(1))
        _same(a[0], b[0], "step after an error")
    finally:
        one.close()
        two.close()
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        SimScaleVectorEnv(num_envs=2, workers=0, **KW)
    with pytest.raises(ValueError, match="must pickle"):
        SimScaleVectorEnv(num_envs=2, workers=2, wrappers=(lambda e: e,), **KW)
    from simscale_env.errors import MissingFileError

    with pytest.raises(MissingFileError, match="no split named 'nosuchsplit'"):  # the worker's error, as raised there
        SimScaleVectorEnv(num_envs=2, workers=2, split="nosuchsplit", **KW)


class _ArgsMismatch(Exception):
    def __init__(self, a, b):  # stores only `a` in args: pickles, but unpickling calls _ArgsMismatch(a) and fails
        super().__init__(a)
        self.b = b


def test_a_workers_exception_travels_only_if_the_parent_can_rebuild_it():
    """What a worker reports of a failure: the exception itself when it round-trips through pickle, else None (the
    parent then raises a RuntimeError with the traceback text) - decided without unpickling any bytes."""
    import threading

    from simscale_env.envs.vector import _failure

    for exc, travels in ((ValueError("bad action"), True), (_ArgsMismatch(1, 2), False),
                         (RuntimeError(threading.Lock()), False)):
        try:
            raise exc
        except Exception as e:  # noqa: BLE001
            got, trace = _failure(e)
        assert (got is exc) == travels and (got is None) == (not travels)
        assert type(exc).__name__ in trace
