"""The policy registry and `load_policy`: built-ins, "module:Class" specs (classes of this module), checkpoint loaders,
and one clear PolicyError per bad spec."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from agents import (AGENTS, POLICIES, BasePolicy, ConstantVelocityAgent, ExpertAgent, LogReplayAgent, PolicyAdapter,
                    StandStillAgent, load_policy, make_agent, policy_env_kwargs, register_checkpoint_loader,
                    register_policy, unregister_checkpoint_loader, unregister_policy)
from simscale_env.errors import MissingFileError, PolicyError, SimScaleError

SPEC = f"{__name__}:KwargPolicy"


class KwargPolicy(BasePolicy):
    """Straight ahead at `speed` m/s; counts its resets."""

    name = "kwarg_policy"
    observation_keys = ("ego_status", "route")

    def __init__(self, speed: float = 1.0):
        self.speed = speed
        self.resets = 0

    def reset(self, info):
        self.resets += 1

    def act(self, observation, info):
        t = 0.5 * np.arange(1, 9)
        return np.stack([self.speed * t, 0 * t, 0 * t], -1).astype(np.float32)


class ActOnly:
    """Has act (and reset) but none of the other Policy members: load_policy adapts it."""

    def __init__(self):
        self.seen = []

    def reset(self, info):
        self.seen.append(info)

    def act(self, observation, info):
        return np.zeros((8, 3), np.float32)


class NotAPolicy:
    pass


def test_builtins_are_the_registry_and_baselines_views():
    assert list(POLICIES)[:5] == ["pdm_closed", "recovery", "constant_velocity", "stand_still", "human"]
    assert AGENTS is POLICIES and agents.DESCRIPTIONS["constant_velocity"] == "straight ahead at the current speed"
    assert AGENTS["human"] is LogReplayAgent
    kinds = {"pdm_closed": ExpertAgent, "recovery": ExpertAgent, "constant_velocity": ConstantVelocityAgent,
             "stand_still": StandStillAgent, "human": LogReplayAgent}
    for name, cls in kinds.items():
        p = load_policy(name)
        assert type(p) is cls and p.name == name and isinstance(p, agents.Policy)
        assert type(make_agent(name)) is cls
    assert load_policy("recovery").kind == "recovery"
    assert policy_env_kwargs(load_policy("pdm_closed")) == {"observation_keys": ("ego_status",),
                                                            "pseudo_experts": True}
    assert policy_env_kwargs(load_policy("human")) == {"perturb": False, "observation_keys": ("ego_status",)}
    assert policy_env_kwargs(load_policy("stand_still")) == {"observation_keys": ("ego_status",)}
    with pytest.raises(ValueError, match="unknown agent 'nobody'"):
        make_agent("nobody")


def test_module_class_spec_with_kwargs_and_adapter():
    p = load_policy(SPEC, {"speed": 2.0})
    assert type(p) is KwargPolicy and p.speed == 2.0
    assert policy_env_kwargs(p) == {"observation_keys": ("ego_status", "route")}
    a = load_policy(f"{__name__}:ActOnly")
    assert isinstance(a, PolicyAdapter) and isinstance(a.inner, ActOnly)
    assert (a.name, a.observation_keys, a.cameras, a.needs_pseudo_experts) == (f"{__name__}:ActOnly", None, None,
                                                                               False)
    a.reset({"k": 1})
    assert a.seen == [{"k": 1}]  # reset reaches the object, other attributes too
    assert policy_env_kwargs(a) == {"observation_keys": ("ego_status",)}
    assert load_policy(p) is p  # a policy object is itself


@pytest.mark.parametrize("spec, kwargs, match", [
    ("no_such_policy", None, "unknown policy; known: pdm_closed"),
    ("no_such_module_xyz.sub:Thing", None, "cannot import module 'no_such_module_xyz.sub'"),
    (f"{__name__}:Missing", None, f"module '{__name__}' has no attribute 'Missing'"),
    (SPEC, {"sped": 3.0}, r"the kwargs \['sped'\] are not accepted"),
    (f"{__name__}:NotAPolicy", None, "is not a policy: it has no act"),
    (f"{__name__}:SPEC", None, "is a str, not a class or factory"),
    (":KwargPolicy", None, "needs both a module and an attribute"),
    ("pdm_closed", {"speed": 1}, "are not accepted"),
    (SPEC, [1], "policy kwargs must be a dict"),
])
def test_each_bad_spec_is_one_clear_error(spec, kwargs, match):
    with pytest.raises(PolicyError, match=match) as exc:
        load_policy(spec, kwargs)
    assert isinstance(exc.value, SimScaleError) and isinstance(exc.value, ValueError)
    assert spec.strip() in str(exc.value)  # names the spec


def test_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_policy_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PolicyError, match="importing module 'broken_policy_mod' failed: RuntimeError: boom"):
        load_policy("broken_policy_mod:Anything")


def test_register_policy_by_name():
    with pytest.raises(PolicyError, match="already registered"):
        register_policy("pdm_closed", KwargPolicy, "clash")
    for bad in ("", "a:b", "dir/x", " x"):
        with pytest.raises(PolicyError, match="non-empty string"):
            register_policy(bad, KwargPolicy)
    register_policy("test_kwarg_policy", KwargPolicy, "a test policy")
    try:
        p = load_policy("test_kwarg_policy", {"speed": 4.0})
        assert type(p) is KwargPolicy and p.speed == 4.0 and "test_kwarg_policy" in AGENTS
    finally:
        unregister_policy("test_kwarg_policy")
    assert "test_kwarg_policy" not in AGENTS


def test_checkpoint_paths_dispatch_to_registered_loaders(tmp_path):
    calls = []

    def fake_loader(path, **kw):
        calls.append(("suffix", path.name, kw))
        return KwargPolicy(**kw)

    def header_loader(path, **kw):
        calls.append(("header", path.name, kw))
        return ActOnly()

    def has_header(path):
        return path.read_bytes()[:8] == b"SIMSCALE"

    ckpt = tmp_path / "model.fake"
    ckpt.write_bytes(b"weights")
    other = tmp_path / "planner.bin"
    other.write_bytes(b"SIMSCALE v1")
    register_checkpoint_loader(".fake", fake_loader)
    register_checkpoint_loader(has_header, header_loader, name="SimScale header")
    try:
        p = load_policy(str(ckpt), {"speed": 3.0})
        assert type(p) is KwargPolicy and p.speed == 3.0
        q = load_policy(other)
        assert isinstance(q, PolicyAdapter) and isinstance(q.inner, ActOnly)
        assert calls == [("suffix", "model.fake", {"speed": 3.0}), ("header", "planner.bin", {})]
        unclaimed = tmp_path / "weights.pt"
        unclaimed.write_bytes(b"torch")
        with pytest.raises(PolicyError, match="no checkpoint loader claims this file") as exc:
            load_policy(str(unclaimed))
        assert str(unclaimed) in str(exc.value) and "SimScale header" in str(exc.value) and "*.fake" in str(exc.value)
        with pytest.raises(MissingFileError, match="policy checkpoint not found"):
            load_policy(str(tmp_path / "absent.fake"))
        with pytest.raises(MissingFileError):
            load_policy("not_here.pt")  # a checkpoint suffix: a missing file, not an unknown name
    finally:
        unregister_checkpoint_loader(fake_loader)
        unregister_checkpoint_loader(header_loader)
    assert "*.fake" not in agents.checkpoint_formats()


def test_module_class_policy_runs_an_episode(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401

    policy = load_policy(SPEC, {"speed": 3.0})
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, episode_steps=2, **policy_env_kwargs(policy))
    obs, info = env.reset(seed=0)
    assert set(obs) == {"ego_status", "route"}
    policy.reset(info)
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        steps += 1
        if terminated or truncated:
            break
    assert policy.resets == 1 and steps == 2 and "epdms_episode" in info
    env.close()
