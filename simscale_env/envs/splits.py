"""From a split name or a NAVSIM scene_filter YAML to the env that runs it and the tokens it holds (the harnesses'
items: `evaluation`, `training`).

>>> split_env_spec("mini-navhard")[0]
'SimScale-navhard-v0'
"""

from __future__ import annotations

from pathlib import Path

BASE_SPLITS = ("navhard", "navtest", "navtrain")


def split_env_spec(split) -> tuple[str, dict]:
    """(env id, gym.make kwargs) of a split name or YAML path. A `mini-*` split keeps its base split's perturbation
    ranges (navhard's for mini-navhard, as `SimScale-navhard-v0` on the mini dataset); a YAML runs in the env of the
    base split its file name mentions (navtest otherwise); another name is a split of the dataset's `splits/`."""
    from ..sim.perturb import PERTURBATION_DEFAULTS

    s = str(split)
    p = Path(s)
    if p.suffix in (".yaml", ".yml"):
        base = next((b for b in BASE_SPLITS if b in p.stem), "navtest")
        return f"SimScale-{base}-v0", {"split_file": s}
    base = s[len("mini-"):] if s.startswith("mini-") else s
    if base not in BASE_SPLITS:
        return "SimScale-navtest-v0", {"split": s}
    kw = {} if base == s else {"split": s, "perturbation": PERTURBATION_DEFAULTS[base]}
    return f"SimScale-{base}-v0", kw


def split_tokens(split, env_kwargs: dict | None = None) -> list[str]:
    """The split's tokens in its order: those its YAML lists, else (a split of log names only) the tokens the env
    derives from its logs. `env_kwargs` may name the data (data_root, maps_root, openscene_root, data_source,
    split_file, scene_window)."""
    from ..data.openscene import load_split
    from ..data.paths import DataConfig

    e = dict(env_kwargs or {})
    _, kw = split_env_spec(split)
    if "split_file" in e:
        kw["split_file"] = e["split_file"]
    if "split_file" in kw:
        path = Path(kw["split_file"])
    else:
        data = DataConfig.resolve(e.get("data_root"), e.get("maps_root"), e.get("openscene_root"))
        path = data.split_file(kw.get("split", str(split)))
    tokens = load_split(path).tokens
    if tokens is not None:
        return [str(t) for t in tokens]
    import gymnasium as gym

    from . import ENV_IDS  # noqa: F401  (registration)

    env_id, kw = split_env_spec(split)
    keep = ("data_root", "maps_root", "openscene_root", "data_source", "split_file", "scene_window")
    kw.update({k: v for k, v in e.items() if k in keep})
    env = gym.make(env_id, **{**kw, "observation_keys": ("ego_status",), "pseudo_experts": False})
    try:
        return [str(t) for t in env.unwrapped.tokens]
    finally:
        env.close()
