"""training.rl (issue 18, deliverable 6): SB3 PPO on the env, episode EPDMS logged by `EpdmsCallback` to TensorBoard,
SB3's progress.csv and episodes.csv, checkpoints that load as policies, a behaviour-cloning warm start, the CLI.

Kept cheap: privileged vector observations, no cameras, 4-step episodes, non-reactive agents, no plan scoring and
(for the normalised action) no pseudo-experts."""

from __future__ import annotations

import argparse
import csv
import json
import math

import gymnasium as gym
import numpy as np
import pytest

import training.rl as rl
from agents.ppo_policy import is_ppo_checkpoint

FAST = dict(action="normalized", episode_steps=4, plan_scoring=None, n_steps=256,
            env_kwargs={"pseudo_experts": False, "valid_start": False, "agent_mode": "non_reactive"})
ROLLOUTS = [256 * i for i in range(1, 9)]


def _recorder():
    from stable_baselines3.common.callbacks import BaseCallback

    class FirstRollout(BaseCallback):
        """The actions PPO sampled in its first rollout."""

        def __init__(self):
            super().__init__()
            self.actions, self.rollouts = [], 0

        def _on_rollout_start(self):
            self.rollouts += 1

        def _on_step(self):
            if self.rollouts == 1:
                self.actions.append(np.array(self.locals["actions"], copy=True))
            return True

    return FirstRollout()


@pytest.fixture(scope="module")
def run(mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "run"
    rec = _recorder()
    cfg = rl.RLConfig(total_timesteps=2048, **FAST)
    summary = rl.train_rl(cfg, out, progress=False, callback=rec)
    return cfg, out, summary, np.concatenate(rec.actions)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ppo_runs_2048_steps_and_logs_episode_epdms(run):
    cfg, out, summary, _ = run
    assert summary["timesteps"] == 2048 and summary["episodes"] > 0
    eps = _rows(out / rl.EPISODES_NAME)
    assert len(eps) == summary["episodes"]
    for e in eps:
        assert 0.0 <= float(e["epdms"]) <= 1.0 and 1 <= int(e["l"]) <= 4
        for m in rl.EPISODE_METRICS:
            assert 0.0 <= float(e[m]) <= 1.0
    # SB3's logger: rollout/ep_epdms_mean per rollout (256 steps) = the mean of that rollout's finished episodes
    prog = _rows(out / "logs" / "progress.csv")
    assert [int(p["time/total_timesteps"]) for p in prog] == ROLLOUTS
    for p, hi in zip(prog, ROLLOUTS):
        mine = [float(e["epdms"]) for e in eps if hi - 256 < int(e["timesteps"]) <= hi]
        assert math.isclose(float(p["rollout/ep_epdms_mean"]), np.mean(mine), rel_tol=1e-9)
        dac = [float(e["drivable_area_compliance"]) for e in eps if hi - 256 < int(e["timesteps"]) <= hi]
        assert math.isclose(float(p["rollout/ep_drivable_area_compliance_mean"]), np.mean(dac), rel_tol=1e-9)
    # the TensorBoard events hold the same scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"rollout/ep_epdms_mean", "rollout/ep_ego_progress_mean", "rollout/ep_rew_mean"} <= set(tags)
    ev = acc.Scalars("rollout/ep_epdms_mean")
    assert [e.step for e in ev] == ROLLOUTS
    for e, p in zip(ev, prog):
        assert 0.0 <= e.value <= 1.0 and math.isclose(e.value, float(p["rollout/ep_epdms_mean"]), rel_tol=1e-6)
    conf = json.loads((out / rl.CONFIG_NAME).read_text())
    assert conf["format"] == rl.FORMAT and rl.RLConfig.from_json(conf["config"]) == cfg
    assert conf["env_id"] == "SimScale-navhard-v0" and conf["env_kwargs"]["episode_steps"] == 4
    assert json.loads((out / rl.SUMMARY_NAME).read_text()) == summary
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_checkpoint_loads_as_a_policy_and_acts(run):
    import agents
    from simscale_env.envs import PLAN_HIGH, PLAN_LOW, split_env_spec

    cfg, out, _, _ = run
    assert is_ppo_checkpoint(out / rl.MODEL_NAME)
    policy = agents.load_policy(str(out / rl.MODEL_NAME))
    assert isinstance(policy, rl.PPOPolicy) and isinstance(policy, agents.BasePolicy)
    assert policy.observation_keys == ("ego_status", "agents", "route") and not policy.needs_pseudo_experts
    env_id, kw = split_env_spec(cfg.split)
    kw.update(agents.policy_env_kwargs(policy), **FAST["env_kwargs"], episode_steps=4)
    env = gym.make(env_id, disable_env_checker=True, **kw)
    obs, info = env.reset(seed=5)
    plan = policy.act(obs, info)
    assert plan.shape == (8, 3) and plan.dtype == np.float32
    assert np.all(plan >= PLAN_LOW) and np.all(plan <= PLAN_HIGH)
    np.testing.assert_array_equal(policy.act(obs, info), plan)  # deterministic
    # what the training stack does: normalised observation -> the policy's mean -> the normalised plan bounds
    from simscale_env.envs import normalized_to_plan, plan_bounds, sb3_observation

    o = sb3_observation(obs)
    with np.load(out / rl.NORM_NAME) as z:
        for k in ("ego_status", "agents", "route"):
            o[k] = np.clip((o[k] - z[f"mean/{k}"]) / np.sqrt(z[f"var/{k}"] + 1e-8), -10, 10).astype(np.float32)
    a, _ = policy.model.predict(o, deterministic=True)
    np.testing.assert_array_equal(plan, normalized_to_plan(a, *plan_bounds()))
    obs, r, term, trunc, info = env.step(plan)
    assert np.isfinite(r)
    # not a .zip of ours: not claimed
    other = out / "other.zip"
    other.write_bytes(b"PK\x05\x06" + bytes(18))
    assert not is_ppo_checkpoint(other)


def test_same_seed_same_first_rollout(run, tmp_path):
    cfg, out, _, actions = run
    rec = _recorder()
    s = rl.train_rl(rl.RLConfig(total_timesteps=256, **FAST), tmp_path / "again", progress=False, callback=rec)
    again = np.concatenate(rec.actions)
    assert again.shape == actions.shape == (256, 24)
    assert again.tobytes() == actions.tobytes()
    first = [r for r in _rows(out / rl.EPISODES_NAME) if int(r["timesteps"]) <= 256]
    assert _rows(tmp_path / "again" / rl.EPISODES_NAME) == first
    assert s["episodes"] == len(first)
    # another seed samples other actions
    rec2 = _recorder()
    rl.train_rl(rl.RLConfig(total_timesteps=64, seed=1, **dict(FAST, n_steps=64)), tmp_path / "seed1",
                progress=False, callback=rec2)
    assert np.concatenate(rec2.actions).tobytes() != actions[:64].tobytes()


def test_simscale_vector_env_equals_dummy_vec_env(mini, tmp_path):
    """n_envs = 2: PPO on `SimScaleVectorEnv` (vec_env="simscale", the default) samples the same actions and finishes
    the same episodes as on SB3's DummyVecEnv of two separate envs (the same seeds, wrappers and autoreset), and as
    with the envs in two worker processes (env_workers=2)."""
    out = {}
    for vec, workers in (("simscale", 1), ("dummy", 1), ("simscale", 2)):
        rec = _recorder()
        cfg = rl.RLConfig(total_timesteps=128, n_envs=2, vec_env=vec, env_workers=workers, **dict(FAST, n_steps=64))
        rl.train_rl(cfg, tmp_path / f"{vec}{workers}", progress=False, callback=rec)
        out[vec, workers] = (np.concatenate(rec.actions), _rows(tmp_path / f"{vec}{workers}" / rl.EPISODES_NAME))
    (a, rows), (b, rows_b), (c, rows_c) = out["simscale", 1], out["dummy", 1], out["simscale", 2]
    assert a.shape == (128, 24) and a.tobytes() == b.tobytes() == c.tobytes()
    assert len(rows) >= 8 and rows == rows_b == rows_c  # env workers (processes) give the same episodes
    assert {r["env"] for r in rows} == {"0", "1"}
    with pytest.raises(rl.RLError, match="vec_env"):
        rl.RLConfig(vec_env="ray")


def test_behaviour_cloning_warm_start_and_residual_policy(mini, tmp_path):
    """bc_init_steps: the policy's mean regresses the expert's actions (MSE drops); a residual checkpoint acts as
    the expert's plan plus its scaled residual."""
    import agents
    from simscale_env.envs import residual_scale, split_env_spec

    quick = dict(total_timesteps=16, n_steps=16, batch_size=16, n_epochs=1, episode_steps=4, plan_scoring=None,
                 env_kwargs={"valid_start": False, "agent_mode": "non_reactive"})
    cfg = rl.RLConfig(**quick)
    rl.train_rl(cfg, tmp_path / "res", progress=False)
    policy = agents.load_policy(tmp_path / "res" / rl.MODEL_NAME)
    assert policy.needs_pseudo_experts and agents.policy_env_kwargs(policy)["pseudo_experts"] is True
    env_id, kw = split_env_spec(cfg.split)
    kw.update(agents.policy_env_kwargs(policy), **quick["env_kwargs"])
    env = gym.make(env_id, disable_env_checker=True, **kw)
    obs, info = env.reset(seed=2)
    plan = policy.act(obs, info)
    d = plan.astype(np.float64) - info["pseudo_expert"]["pdm_closed"]
    assert np.all(np.abs(d) <= residual_scale(cfg.residual_scale) + 1e-5)
    from simscale_env.errors import PolicyError

    with pytest.raises(PolicyError, match="pseudo_expert"):
        policy.act(obs, {})
    # the normalised action: the expert's plans are a real target
    cfg_n = rl.RLConfig(action="normalized", bc_init_steps=32, bc_epochs=40, **quick)
    bc = rl.train_rl(cfg_n, tmp_path / "bc", progress=False)["behaviour_cloning"]
    assert bc["samples"] == 32 and bc["mse_before"] > 0.01 and bc["mse_after"] < 0.5 * bc["mse_before"]


def test_run_directory_rules_and_cli(run, capsys):
    cfg, out, summary, _ = run
    # a finished run of the same config is reused; another config is refused
    assert rl.train_rl(cfg, out, progress=False) == summary
    from simscale_env.errors import OutputFolderError

    with pytest.raises(OutputFolderError, match="another config"):
        rl.train_rl(rl.RLConfig(total_timesteps=4096, **FAST), out, progress=False)
    # where the envs run is not part of the run (the same episodes): the finished run is reused
    assert rl.train_rl(rl.RLConfig(total_timesteps=2048, vec_env="subproc", env_workers=2, **FAST), out,
                       progress=False) == summary
    # the CLI: arguments -> config; run_from_args reuses the finished run, returns its summary and prints nothing
    parser = rl.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--split", "mini-navhard", "--timesteps", "2048", "--out", str(out), "--action",
                              "normalized", "--episode-steps", "4", "--no-plan-scoring", "--n-steps", "256",
                              "--env-kwargs", json.dumps(FAST["env_kwargs"])])
    assert rl.config_from_args(args) == cfg
    assert rl.run_from_args(args) == summary
    assert capsys.readouterr().out == ""
    a = parser.parse_args(["--out", "x", "--cameras", "--bev", "--bc-init-steps", "8", "--n-envs", "2"])
    c = rl.config_from_args(a)
    assert c.cameras == ("CAM_L0", "CAM_F0", "CAM_R0") and c.env_observation_keys[0] == "cameras"
    assert "bev" in c.observation_keys and c.bc_init_steps == 8 and c.n_envs == 2 and c.action == "residual"
    assert c.vec_env == "simscale"
    assert rl.config_from_args(parser.parse_args(["--out", "x", "--vec-env", "subproc"])).vec_env == "subproc"
    assert rl.config_from_args(parser.parse_args(["--out", "x", "--cameras", "CAM_F0"])).cameras == ("CAM_F0",)


def test_config_errors():
    with pytest.raises(rl.RLError, match="algo"):
        rl.RLConfig(algo="sac")
    with pytest.raises(rl.RLError, match="action"):
        rl.RLConfig(action="raw")
    with pytest.raises(rl.RLError, match="observation_keys"):
        rl.RLConfig(observation_keys=("cameras",))
    with pytest.raises(rl.RLError, match="total_timesteps"):
        rl.RLConfig(total_timesteps=0)
    with pytest.raises(rl.RLError, match="env_kwargs may not set"):
        rl.RLConfig(env_kwargs={"action_type": "control"})
    with pytest.raises(rl.RLError, match="unknown RLConfig fields"):
        rl.RLConfig.from_json({"nope": 1})
