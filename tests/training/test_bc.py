"""`simscale train-bc` (training.bc, agents.bc_policy): the DAgger mixture executes what beta says and always stores
the expert's label, the beta schedules, the route-frame geometry the network predicts in, a tiny run's checkpoint
loading as a policy that drives the env, determinism for a seed, resume after a finished round (bit-identical
weights), the run folder's errors and the CLI. Every run is tiny (episodes of a few steps, 1-2 epochs)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
import agents.bc_policy as bcp
from simscale_env.errors import OutputFolderError, PolicyError, SchemaError
from tests.helpers import same
from training.bc import (BCConfig, BCError, add_arguments, beta, collect_episode, make_env, run_from_args,
                         train_bc)

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(rounds=2, episodes=2, epochs=2, episode_steps=3, seed=3, batch_size=16)


@pytest.fixture(scope="module", autouse=True)
def _registered(mini):
    bcp.register()
    yield
    agents.unregister_checkpoint_loader(bcp.load_bc_policy)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "run"
    result = train_bc(BCConfig(**TINY), out, progress=False, tensorboard=False)
    return out, result


def _weights(path) -> dict:
    return bcp.read_checkpoint(path)["state_dict"]


def tiny_metrics(out) -> list:
    return bcp.read_checkpoint(out / "bc.pt")["metrics"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ beta schedules
def test_beta_schedules_follow_the_dagger_references():
    lin = BCConfig(rounds=4)  # imitation's LinearBetaSchedule with R = rounds - 1
    assert [beta(lin, r) for r in range(4)] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert [beta(BCConfig(rounds=4, beta_rounds=2), r) for r in range(4)] == [1.0, 0.5, 0.0, 0.0]
    assert [beta(BCConfig(beta_schedule="exponential", beta_decay=0.5), r) for r in range(3)] == [1.0, 0.5, 0.25]
    assert [beta(BCConfig(beta_schedule="first_round"), r) for r in range(3)] == [1.0, 0.0, 0.0]
    assert beta(BCConfig(rounds=1), 0) == 1.0


# ------------------------------------------------------------------------------------------------ the mixture
class _Recorder(gym.Wrapper):
    """Records the actions executed and the pseudo-expert plans of the states they were chosen in."""

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.actions, self.experts = [], [info["pseudo_expert"]["pdm_closed"].copy()]
        return obs, info

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        out = self.env.step(action)
        self.experts.append(out[4]["pseudo_expert"]["pdm_closed"].copy())
        return out


class _Learner:
    """A stand-in learner: a slow straight plan (distinct from any expert plan), counting its calls."""

    def __init__(self):
        self.calls = 0

    def predict(self, arrays):
        self.calls += 1
        t = 0.5 * np.arange(1, 9, dtype=np.float32)
        return np.stack([0.7 * t, 0.01 * t, 0 * t], -1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def mixture_env():
    cfg = BCConfig(**{**TINY, "episode_steps": 4})
    env = _Recorder(make_env(cfg))
    yield cfg, env
    env.close()


@pytest.mark.parametrize("b", [1.0, 0.0, 0.5])
def test_the_mixture_executes_expert_or_learner_and_always_stores_the_expert_label(mixture_env, b):
    cfg, env = mixture_env
    learner = _Learner()
    ep = collect_episode(env, cfg, learner, round_=1, episode=0, beta_=b)
    a = ep["arrays"]
    n = len(a["label"])
    assert n == ep["stats"]["steps"] == len(env.actions) == 4
    # the label of every sample is the expert's plan of the state the mixture was in
    np.testing.assert_array_equal(a["label"], np.stack(env.experts[:n]))
    flags = a["expert_action"]
    if b == 1.0:
        assert flags.all() and learner.calls == 0
    if b == 0.0:
        assert not flags.any() and learner.calls == n
    for k in range(n):
        want = a["label"][k] if flags[k] else learner.predict(None)[0]
        np.testing.assert_array_equal(env.actions[k], want)
    assert ep["stats"]["expert_actions"] == int(flags.sum())
    assert set(a) >= {"ego_status", "agents", "route", "label", "expert_action", "step"}


def test_the_mixture_draws_per_step_and_is_a_function_of_the_seed(mixture_env):
    cfg, env = mixture_env
    flags = [collect_episode(env, cfg, _Learner(), 2, e, 0.5)["arrays"]["expert_action"] for e in range(4)]
    assert 0 < np.concatenate(flags).mean() < 1  # both kinds of step (4 x 4 draws at beta 0.5)
    again = collect_episode(env, cfg, _Learner(), 2, 3, 0.5)
    np.testing.assert_array_equal(again["arrays"]["expert_action"], flags[3])


# ------------------------------------------------------------------------------------------------ geometry
def test_route_projection_known_answers_and_round_trip():
    straight = np.stack([np.linspace(0, 62, 32), np.full(32, 0.5)], -1)[None]
    fr = bcp.route_frame(straight)
    s, lat, h = bcp.project_to_route(fr, np.array([[[10.0, 1.5], [-2.0, 0.0], [70.0, -0.5]]]))
    np.testing.assert_allclose(s[0], [10.0, -2.0, 70.0], atol=1e-9)  # extended before the start and past the end
    np.testing.assert_allclose(lat[0], [1.0, -0.5, -1.0], atol=1e-9)
    np.testing.assert_allclose(h[0], 0.0, atol=1e-12)
    # a curve (radius 25 m) with repeated points at its end (the env repeats the last point where the route ends)
    th = np.linspace(0, 40 / 25, 20)
    arc = np.stack([25 * np.sin(th), 25 * (1 - np.cos(th))], -1)
    curve = np.concatenate([arc, np.repeat(arc[-1:], 12, axis=0)])[None]
    fr = bcp.route_frame(curve)
    s = np.array([[1.0, 5.0, 12.0, 20.0, 33.0, 39.0, 45.0, 55.0]])
    lat = np.array([[0.4, -0.3, 0.0, 0.8, -0.6, 0.2, 0.0, 0.5]])
    poses = bcp.decode_from_route(fr, s, lat, np.full_like(s, 0.03))
    s2, lat2, h2 = bcp.project_to_route(fr, poses[..., :2])
    np.testing.assert_allclose(s2, s, atol=0.05)
    np.testing.assert_allclose(lat2, lat, atol=0.01)
    np.testing.assert_allclose(bcp.wrap_angle(poses[..., 2] - h2), 0.03, atol=0.01)
    # past the end: along the last real tangent (the degenerate segments take it)
    end_heading = np.arctan2(*(arc[-1] - arc[-2])[::-1])
    np.testing.assert_allclose(poses[0, -1, 2], end_heading + 0.03, atol=0.02)
    # a route without length: straight ahead in the ego frame
    flat = bcp.decode_from_route(bcp.route_frame(np.zeros((1, 32, 2))), np.array([[3.0]]), np.array([[1.0]]),
                                 np.array([[0.0]]))
    np.testing.assert_allclose(flat[0, 0], [3.0, 1.0, 0.0], atol=1e-12)


def test_route_targets_decode_back_to_the_plan(tiny_run):
    out, _ = tiny_run
    with np.load(out / "data" / "round-00.npz") as z:
        arrays = {k: z[k] for k in ("ego_status", "agents", "route", "label")}
    kind = bcp.observation_kind("privileged")
    targets = kind.targets(arrays, arrays["label"])
    plans = kind.decode(arrays, targets)
    np.testing.assert_allclose(plans[..., :2], arrays["label"][..., :2], atol=0.15)
    np.testing.assert_allclose(bcp.wrap_angle(plans[..., 2] - arrays["label"][..., 2]), 0.0, atol=0.02)
    feats = kind.features(arrays)
    n = len(arrays["label"])
    assert feats["ego"].shape[0] == n and feats["agents"].shape == (n, bcp.SET_AGENTS, 20)
    assert np.isfinite(feats["ego"]).all() and np.isfinite(feats["agents"]).all()


# ------------------------------------------------------------------------------------------------ a tiny run
def test_a_tiny_run_writes_its_folder_and_its_checkpoint_drives_the_env(tiny_run):
    out, result = tiny_run
    assert result["checkpoint"] == out / "bc.pt" and result["rounds"] == 2 and result["resumed_rounds"] == 0
    assert result["samples"] == 2 * 2 * 3  # rounds x episodes x steps
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("round,beta,") and len(rows) == 3
    assert [m["beta"] for m in result["metrics"]] == [1.0, 0.0]
    assert result["metrics"][0]["expert_action_fraction"] == 1.0 and result["metrics"][1]["expert_action_fraction"] == 0
    for r in (0, 1):
        assert (out / "data" / f"round-{r:02d}.npz").is_file() and (out / "checkpoints" / f"round-{r:02d}.pt").is_file()
    ckpt = bcp.read_checkpoint(out / "bc.pt")
    assert ckpt["format"] == "simscale-bc/1" and ckpt["rounds_done"] == 2 and ckpt["config"]["seed"] == 3
    assert _same_weights(ckpt["state_dict"], _weights(out / "checkpoints" / "round-01.pt"))

    policy = agents.load_policy(str(out / "bc.pt"))
    assert isinstance(policy, bcp.BCPolicy) and not policy.needs_pseudo_experts
    kw = agents.policy_env_kwargs(policy)
    assert kw["observation_keys"] == ("ego_status", "agents", "route")
    env = gym.make("SimScale-navhard-v0", split="mini-navhard", episode_steps=2, **kw)
    obs, info = env.reset(seed=0)
    policy.reset(info)
    for _ in range(2):
        action = policy.act(obs, info)
        assert action.shape == (8, 3) and action.dtype == np.float32 and np.isfinite(action).all()
        assert env.action_space.contains(action)
        obs, _, term, trunc, info = env.step(action)
    assert trunc or term
    env.close()
    with pytest.raises(PolicyError, match="observation has no"):
        policy.act({"ego_status": obs["ego_status"]}, info)


def test_same_seed_same_run(tiny_run, tmp_path):
    out, _ = tiny_run
    train_bc(BCConfig(**TINY), tmp_path / "again", progress=False, tensorboard=False)
    assert _same_weights(_weights(out / "bc.pt"), _weights(tmp_path / "again" / "bc.pt"))
    for r in (0, 1):
        with np.load(out / "data" / f"round-{r:02d}.npz") as a, \
                np.load(tmp_path / "again" / "data" / f"round-{r:02d}.npz") as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    other = train_bc(BCConfig(**{**TINY, "seed": 4, "rounds": 1}), tmp_path / "other", progress=False,
                     tensorboard=False)
    assert not _same_weights(_weights(out / "checkpoints" / "round-00.pt"), _weights(other["checkpoint"]))


@pytest.mark.parametrize("lose", ["checkpoint", "checkpoint_and_data"])
def test_resume_after_a_finished_round_gives_the_same_weights(tiny_run, tmp_path, lose):
    out, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    # killed in round 1: after its collection (its data kept) or before it; bc.pt still round 0's
    (run / "checkpoints" / "round-01.pt").unlink()
    shutil.copyfile(run / "checkpoints" / "round-00.pt", run / "bc.pt")
    if lose == "checkpoint_and_data":
        (run / "data" / "round-01.npz").unlink()
    with pytest.raises(BCError, match="pass --resume"):
        train_bc(BCConfig(**TINY), run, progress=False, tensorboard=False)
    r = train_bc(BCConfig(**TINY), run, progress=False, tensorboard=False, resume=True)
    assert r["resumed_rounds"] == 1 and len(r["metrics"]) == 2
    assert _same_weights(_weights(out / "bc.pt"), _weights(run / "bc.pt"))
    timing = ("collect_s", "train_s")
    assert same([{k: v for k, v in m.items() if k not in timing} for m in r["metrics"]],
                [{k: v for k, v in m.items() if k not in timing} for m in tiny_metrics(out)])
    with pytest.raises(BCError, match=r"another config \(epochs: 2 there, 3 now"):
        train_bc(BCConfig(**{**TINY, "epochs": 3}), run, progress=False, resume=True)


def test_other_observations_train_and_act(tmp_path):
    for obs_kind in ("cameras", "privileged_bev"):
        cfg = BCConfig(observation=obs_kind, rounds=1, episodes=1, epochs=1, episode_steps=2, batch_size=4)
        r = train_bc(cfg, tmp_path / obs_kind, progress=False, tensorboard=False)
        policy = agents.load_policy(str(r["checkpoint"]))
        assert policy.observation_keys == bcp.OBSERVATIONS[obs_kind].observation_keys
        with np.load(tmp_path / obs_kind / "data" / "round-00.npz") as z:
            arrays = {k: z[k] for k in z.files if k != "stats_json"}
        if obs_kind == "cameras":
            assert arrays["image"].shape == (2, 32, 128, 3) and arrays["image"].dtype == np.uint8
        else:
            assert arrays["bev"].shape == (2, 64, 64, 5)
        plans = policy.predict(arrays)
        assert plans.shape == (2, 8, 3) and np.isfinite(plans).all()


# ------------------------------------------------------------------------------------------------ errors, CLI
def test_bad_configs_folders_and_checkpoints_are_one_clear_error(tmp_path):
    with pytest.raises(BCError, match="observation must be one of"):
        BCConfig(observation="lidar")
    with pytest.raises(BCError, match="expert must be one of"):
        BCConfig(expert="human")
    with pytest.raises(BCError, match="rounds must be an integer >= 1"):
        BCConfig(rounds=0)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(OutputFolderError, match="not a train-bc run folder"):
        train_bc(BCConfig(**TINY), tmp_path / "busy", progress=False)
    other = tmp_path / "planner.pt"
    torch.save({"format": "simscale-planner/1", "state_dict": {}}, other)
    assert not bcp.is_bc_checkpoint(other)
    with pytest.raises(SchemaError, match="format must be 'simscale-bc/1'"):
        bcp.read_checkpoint(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert not bcp.is_bc_checkpoint(junk)
    with pytest.raises(PolicyError, match="no checkpoint loader claims"):
        agents.load_policy(str(junk))


def test_cli_runs_a_tiny_training(tmp_path, capsys):
    from simscale_env.cli import main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cli"
    argv = ["--rounds", "1", "--episodes", "1", "--epochs", "1", "--episode-steps", "2", "--seed", "5", "--out",
            str(out), "--quiet", "--no-tensorboard"]
    assert main(["train-bc", *argv]) == 0  # the CLI prints run_from_args' summary as one JSON line
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run_from_args(parser.parse_args(argv + ["--resume"]))["rounds"] == 1  # the library prints nothing
    assert capsys.readouterr().out == ""
    assert line["rounds"] == 1 and line["samples"] == 2 and line["checkpoint"] == str(out / "bc.pt")
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(out), "--observation", "lidar"])


def test_worker_processes_collect_the_same_data(tiny_run, tmp_path):
    out, _ = tiny_run
    r = train_bc(BCConfig(**{**TINY, "workers": 2}), tmp_path / "w2", progress=False, tensorboard=False)
    assert _same_weights(_weights(out / "bc.pt"), _weights(r["checkpoint"]))
    with np.load(out / "data" / "round-01.npz") as a, np.load(tmp_path / "w2" / "data" / "round-01.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # round 1: the learner drove in the workers


def test_a_killed_run_resumes_to_the_same_weights(tiny_run, tmp_path):
    """SIGKILL while round 1's checkpoint is written (simscale_env.data.atomic's test hook), then --resume."""
    out, _ = tiny_run
    run = tmp_path / "killed"
    # the same torch threads as this process (the weights are bit-identical for the same number: module docstring)
    code = (f"import torch; torch.set_num_threads({torch.get_num_threads()}); "
            f"from training.bc import BCConfig, train_bc; "
            f"train_bc(BCConfig(**{TINY!r}), {str(run)!r}, progress=False, tensorboard=False)")
    env = {**os.environ, "SIMSCALE_TEST_KILL_AT": "pt:2"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (run / "checkpoints" / "round-00.pt").is_file() and not (run / "checkpoints" / "round-01.pt").exists()
    assert (run / "data" / "round-01.npz").is_file()
    r = train_bc(BCConfig(**TINY), run, progress=False, tensorboard=False, resume=True)
    assert r["resumed_rounds"] == 1
    assert _same_weights(_weights(out / "bc.pt"), _weights(run / "bc.pt"))
    assert not [p.name for p in run.rglob(".*") if p.is_file()]  # no temporaries left
