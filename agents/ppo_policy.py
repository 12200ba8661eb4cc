"""The policy of a `simscale train-rl` run (training.rl): stable-baselines3 PPO's saved policy acting in the env.

    policy = agents.load_policy("runs/ppo/ppo.zip")   # the loader `register` adds (`import agents` calls it)

A run directory holds `ppo.zip` (SB3's save), `rl_config.json` (format "simscale-rl/1": the training config, the
action mapping) and `obs_norm.npz` (the observation normalisation); `PPOPolicy` reads the three and needs
stable-baselines3 only when it loads one.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from simscale_env.errors import MissingFileError, PolicyError

from .policy import BasePolicy, register_checkpoint_loader, unregister_checkpoint_loader

FORMAT = "simscale-rl/1"
CONFIG_NAME = "rl_config.json"
MODEL_NAME = "ppo.zip"
NORM_NAME = "obs_norm.npz"


def _read_config(path: Path) -> dict:
    conf = path.parent / CONFIG_NAME
    if not conf.is_file():
        raise MissingFileError(conf, f"the RL config beside the checkpoint {path.name} is missing")
    try:
        d = json.loads(conf.read_text())
    except (OSError, ValueError) as exc:
        raise PolicyError(str(path), f"{conf.name} is not JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PolicyError(str(path), f"{conf.name} is not a {FORMAT} config")
    return d


def is_ppo_checkpoint(path: Path) -> bool:
    """A `.zip` SB3 save (its `data` and `policy.pth` members) with a `rl_config.json` of this format beside it."""
    path = Path(path)
    if path.suffix.lower() != ".zip" or not path.is_file() or not (path.parent / CONFIG_NAME).is_file():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
        return {"data", "policy.pth"} <= names and json.loads((path.parent / CONFIG_NAME).read_text()).get(
            "format") == FORMAT
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


class PPOPolicy(BasePolicy):
    """A PPO checkpoint of `train_rl` as an `agents` policy: observations as training saw them (`sb3_observation`,
    the saved normalisation), the policy's deterministic action mapped to a plan as the training's action wrapper
    maps it (the residual on `info["pseudo_expert"][expert]`, or the normalised bounds), clipped to the env's plan
    bounds."""

    def __init__(self, path: str | Path, deterministic: bool = True):
        from stable_baselines3 import PPO

        path = Path(path)
        d = _read_config(path)
        self.config = cfg = d["config"]  # training.rl.RLConfig's fields as JSON
        self.mapping = d["action_mapping"]
        self.deterministic = bool(deterministic)
        self.model = PPO.load(str(path), device="cpu")
        self.name = f"ppo:{path}"
        cams = tuple(cfg.get("cameras") or ())
        self.observation_keys = (("cameras",) if cams else ()) + tuple(cfg["observation_keys"])
        self.cameras = cams or None
        self.needs_pseudo_experts = self.mapping["type"] == "residual"
        self.env_kwargs = {"width": cfg["width"], "height": cfg["height"]} if cams else {}
        if "bev_size" in (cfg.get("env_kwargs") or {}):
            self.env_kwargs["bev_size"] = cfg["env_kwargs"]["bev_size"]
        self._norm = {}
        norm = path.parent / NORM_NAME
        if norm.is_file():
            with np.load(norm, allow_pickle=False) as z:
                keys = [k[len("mean/"):] for k in z.files if k.startswith("mean/")]
                self._norm = {k: (z[f"mean/{k}"], z[f"var/{k}"]) for k in keys}
                self._clip = float(z["clip_obs"]) if keys else 0.0
                self._eps = float(z["epsilon"]) if keys else 0.0
        elif cfg.get("normalize_observations"):
            raise MissingFileError(norm, f"the observation normalisation beside {path.name} is missing")

    def observation(self, observation: dict) -> dict:
        from simscale_env.envs import sb3_observation

        o = sb3_observation({k: observation[k] for k in self.model.observation_space.spaces})
        for k, (mean, var) in self._norm.items():
            o[k] = np.clip((o[k] - mean) / np.sqrt(var + self._eps), -self._clip, self._clip).astype(np.float32)
        return o

    def act(self, observation: dict, info: dict) -> np.ndarray:
        from simscale_env.envs import PLAN_HIGH, PLAN_LOW, normalized_to_plan, residual_to_plan

        a, _ = self.model.predict(self.observation(observation), deterministic=self.deterministic)
        m = self.mapping
        if m["type"] == "residual":
            expert = (info.get("pseudo_expert") or {}).get(m["expert"])
            if expert is None:
                raise PolicyError(self.name, f"needs info['pseudo_expert'][{m['expert']!r}] (pseudo_experts=True)")
            plan = residual_to_plan(a, expert, np.asarray(m["scale"]))
        else:
            plan = normalized_to_plan(a, np.asarray(m["low"]), np.asarray(m["high"]))
        return np.clip(plan, PLAN_LOW, PLAN_HIGH).astype(np.float32)


def load_ppo_policy(path, **kwargs) -> PPOPolicy:
    """The checkpoint loader `agents.load_policy` uses for `train_rl` checkpoints (kwargs: deterministic)."""
    return PPOPolicy(path, **kwargs)


def register() -> None:
    """Let `agents.load_policy(path)` load `simscale train-rl` checkpoints (idempotent; `import agents` calls it)."""
    unregister_checkpoint_loader(load_ppo_policy)
    register_checkpoint_loader(is_ppo_checkpoint, load_ppo_policy, name=f"SB3 PPO zip + {CONFIG_NAME} (train-rl)")
