"""One policy interface for every harness (`evaluation/`, `training/`, the CLI), a registry of named policies and a
loader of policy specs.

    from agents import load_policy, policy_env_kwargs
    policy = load_policy("pdm_closed")                        # a registered name (`POLICIES`)
    policy = load_policy("my_pkg.my_mod:MyPolicy", {"k": 1})  # "module:Class" (or a factory), built with kwargs
    policy = load_policy("/path/to/checkpoint.pt")            # a checkpoint: the first `register_checkpoint_loader`
                                                              # loader that claims the file
    env = gym.make("SimScale-navhard-v0", **policy_env_kwargs(policy))
    obs, info = env.reset(seed=0); policy.reset(info)
    action = policy.act(obs, info)                            # [8, 3] plan in the current rear-axle frame

A "module:Class" whose object has no `act` but follows NAVSIM's `AbstractAgent` contract (`compute_trajectory`,
`get_sensor_config`) runs through `agents.navsim_bridge.NavsimAgentPolicy`, one that follows nuplan-devkit's
`AbstractPlanner` contract (`compute_planner_trajectory`) through `agents.nuplan_bridge.NuplanPlannerPolicy`.

Every bad spec raises one `simscale_env.errors.PolicyError` (a ValueError) naming the spec and what is wrong.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from simscale_env.errors import MissingFileError, PolicyError

log = logging.getLogger(__name__)

DEFAULT_OBSERVATION_KEYS = ("ego_status",)
# a spec with one of these suffixes (and no ':') is a checkpoint path even where it does not exist (a clear "not
# found" rather than "unknown policy"); any existing path, or one with a separator, is one too
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".pkl", ".onnx", ".npz", ".json")


@runtime_checkable
class Policy(Protocol):
    """What a harness drives: `reset(info)` at every env reset, then `act(observation, info)` -> the env's action
    (an [8, 3] plan: 8 poses (x, y, heading) 0.5 s apart in the current rear-axle frame) at every step.

    The attributes say how to build the env for it (`policy_env_kwargs`):
    - `observation_keys`: the observation keys it reads (None: `DEFAULT_OBSERVATION_KEYS`);
    - `cameras`: the camera channels it reads when "cameras" is observed (None: the env's default);
    - `needs_pseudo_experts`: it reads `info["pseudo_expert"]` (the env must have `pseudo_experts=True`);
    - `env_kwargs`: any other `gym.make` kwargs it needs (e.g. the logged human's `{"perturb": False}`)."""

    name: str
    observation_keys: tuple[str, ...] | None
    cameras: tuple[str, ...] | None
    needs_pseudo_experts: bool
    env_kwargs: dict

    def reset(self, info: dict) -> None: ...

    def act(self, observation: dict, info: dict) -> np.ndarray: ...


class BasePolicy:
    """Defaults for the `Policy` attributes: subclass it and write `act`."""

    name: str = "policy"
    observation_keys: tuple[str, ...] | None = None
    cameras: tuple[str, ...] | None = None
    needs_pseudo_experts: bool = False
    env_kwargs: dict = {}  # never mutated: `policy_env_kwargs` copies it

    def reset(self, info: dict) -> None:
        """Called at every env reset (the reset's info); nothing to do by default."""

    def act(self, observation: dict, info: dict) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class PolicyAdapter(BasePolicy):
    """A `Policy` around an object that has `act(observation, info)` but not every other member: the missing ones
    take `BasePolicy`'s defaults, every other attribute is the wrapped object's (`.inner`)."""

    def __init__(self, inner, name: str | None = None):
        self.inner = inner
        self.name = getattr(inner, "name", None) if isinstance(getattr(inner, "name", None), str) else \
            (name or type(inner).__name__)
        for attr in ("observation_keys", "cameras", "needs_pseudo_experts", "env_kwargs"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def reset(self, info: dict) -> None:
        fn = getattr(self.inner, "reset", None)
        if callable(fn):
            fn(info)

    def act(self, observation: dict, info: dict) -> np.ndarray:
        return self.inner.act(observation, info)

    def __getattr__(self, item):  # only for attributes not found on the adapter
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)


POLICY_MEMBERS = ("name", "observation_keys", "cameras", "needs_pseudo_experts", "env_kwargs", "reset", "act")


def as_policy(obj, name: str | None = None, spec: str | None = None) -> Policy:
    """`obj` as a `Policy`: itself when it has every member, wrapped in `PolicyAdapter` when it has `act`, wrapped
    in the NAVSIM or nuPlan bridge when it follows their contracts; else a PolicyError naming `spec`."""
    if callable(getattr(obj, "act", None)):
        if all(hasattr(obj, m) for m in POLICY_MEMBERS) and callable(getattr(obj, "reset")):
            return obj
        return PolicyAdapter(obj, name)
    if callable(getattr(obj, "compute_trajectory", None)) and callable(getattr(obj, "get_sensor_config", None)):
        from .navsim_bridge import NavsimAgentPolicy

        return NavsimAgentPolicy(obj)
    if callable(getattr(obj, "compute_planner_trajectory", None)):
        from .nuplan_bridge import NuplanPlannerPolicy

        return NuplanPlannerPolicy(obj)
    raise PolicyError(spec or name or type(obj).__name__,
                      f"a {type(obj).__name__} is not a policy: it has no act(observation, info) method (nor NAVSIM's "
                      f"compute_trajectory + get_sensor_config, nor nuPlan's compute_planner_trajectory)")


# ---------------------------------------------------------------------------------------------- the registry
POLICIES: dict[str, Callable] = {}  # name -> factory(**kwargs) -> policy
DESCRIPTIONS: dict[str, str] = {}  # name -> one line (for `--help`)


def check_contract(obj, label: str, methods: tuple[str, ...], contract: str, privileged: str | None = None,
                   why_privileged: str = "") -> None:
    """PolicyError naming `label` unless `obj` has every method of `contract` (and, with `privileged`, that attribute
    is not true: the bridges refuse agents that need what a closed-loop simulation cannot give)."""
    for method in methods:
        if not callable(getattr(obj, method, None)):
            raise PolicyError(label, f"not a {contract}: it has no {method}() ({contract} needs "
                                     f"{', '.join(methods)})")
    if privileged and getattr(obj, privileged, False):
        raise PolicyError(label, why_privileged)


def register_policy(name: str, factory: Callable, description: str = "", *, replace: bool = False) -> None:
    """Register `factory` (a class or a callable taking the policy kwargs) under `name` for `load_policy(name)`.
    A name already registered needs `replace=True`."""
    if not isinstance(name, str) or not name or any(c in name for c in ":/\\") or name != name.strip():
        raise PolicyError(name, "a policy name is a non-empty string without ':', '/' or surrounding spaces (those "
                                "mark 'module:Class' specs and paths)")
    if not callable(factory):
        raise PolicyError(name, f"the factory must be callable, got {type(factory).__name__}")
    if name in POLICIES and not replace and POLICIES[name] is not factory:
        raise PolicyError(name, "a policy of that name is already registered (pass replace=True to replace it)")
    POLICIES[name] = factory
    DESCRIPTIONS[name] = str(description)


def unregister_policy(name: str) -> None:
    POLICIES.pop(name, None)
    DESCRIPTIONS.pop(name, None)


# ---------------------------------------------------------------------------------------------- checkpoints
_CHECKPOINT_LOADERS: list[tuple[str, Callable[[Path], bool], Callable]] = []


def register_checkpoint_loader(predicate_or_suffix, loader: Callable, name: str | None = None) -> None:
    """Let `load_policy(path)` load checkpoint files with `loader(path, **kwargs) -> policy` when
    `predicate_or_suffix` claims the path: a file-name suffix (".pt", ".simscale.ckpt"; case-insensitive) or a
    predicate `f(Path) -> bool` (e.g. one that peeks at the file's header). Loaders registered later are asked first;
    `name` describes the format in the error for a path nobody claims."""
    if not callable(loader):
        raise PolicyError(name, f"the checkpoint loader must be callable, got {type(loader).__name__}")
    if isinstance(predicate_or_suffix, str):
        suffix = predicate_or_suffix.lower()
        if not suffix:
            raise PolicyError(name, "an empty suffix would claim every file")

        def predicate(path: Path, _s=suffix) -> bool:
            return path.name.lower().endswith(_s)

        label = name or f"*{predicate_or_suffix}"
    elif callable(predicate_or_suffix):
        predicate = predicate_or_suffix
        label = name or getattr(predicate_or_suffix, "__name__", repr(predicate_or_suffix))
    else:
        raise PolicyError(name, f"predicate_or_suffix must be a suffix string or a callable, got "
                                f"{type(predicate_or_suffix).__name__}")
    _CHECKPOINT_LOADERS.insert(0, (label, predicate, loader))


def unregister_checkpoint_loader(loader: Callable) -> None:
    _CHECKPOINT_LOADERS[:] = [e for e in _CHECKPOINT_LOADERS if e[2] is not loader]


def checkpoint_formats() -> list[str]:
    """The registered checkpoint formats (newest first)."""
    return [label for label, _, _ in _CHECKPOINT_LOADERS]


def _load_checkpoint(spec: str, path: Path, kwargs: dict):
    if not path.is_file():
        raise MissingFileError(path, "policy checkpoint not found (or not a file)")
    for label, predicate, loader in _CHECKPOINT_LOADERS:
        if predicate(path):
            log.debug("loading %s with the checkpoint loader %s", path, label)
            return as_policy(loader(path, **kwargs), name=path.name, spec=spec)
    known = ", ".join(checkpoint_formats()) or "none registered"
    raise PolicyError(spec, f"no checkpoint loader claims this file (known formats: {known}; add one with "
                            f"agents.register_checkpoint_loader)")


# ---------------------------------------------------------------------------------------------- loading
def _construct(spec: str, factory: Callable, kwargs: dict):
    """factory(**kwargs), with a kwargs mismatch reported as such (not as an error inside the constructor)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: just call it
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as exc:
            params = [p for p in sig.parameters if p not in ("self", "args", "kwargs")]
            raise PolicyError(spec, f"the kwargs {sorted(kwargs)} are not accepted ({exc}); it takes "
                                    f"{', '.join(params) or 'no arguments'}") from None
    return factory(**kwargs)


def _import_attr(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PolicyError(spec, "a 'module:Class' spec needs both a module and an attribute, e.g. my_pkg.mod:MyPolicy")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PolicyError(spec, f"cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # noqa: BLE001  (an error while the module runs: name it, keep the cause)
        raise PolicyError(spec, f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PolicyError(spec, f"module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PolicyError(spec, f"'{attr}' in module '{module_name}' is a {type(obj).__name__}, not a class or "
                                f"factory")
    return obj


def load_policy(spec, kwargs: dict | None = None) -> Policy:
    """The policy a spec names, built with `kwargs`:

    - a registered name (`POLICIES`: pdm_closed, recovery, constant_velocity, stand_still, human, and any
      `register_policy`);
    - "package.module:Class" (or ":factory", or ":Outer.Inner"): imported and called with `kwargs`;
    - a path to a checkpoint file: the newest `register_checkpoint_loader` loader that claims it, called as
      `loader(path, **kwargs)`;
    - an object that already is a policy (returned as a `Policy`).
    Each bad spec raises one PolicyError naming it."""
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise PolicyError(spec if isinstance(spec, str) else None,
                          f"policy kwargs must be a dict (e.g. --policy-kwargs '{{\"k\": 1}}'), got "
                          f"{type(kwargs).__name__}")
    if not isinstance(spec, (str, Path)):
        if kwargs:
            raise PolicyError(type(spec).__name__, "kwargs apply to specs (names, module:Class, paths), not to a "
                                                   "policy object")
        return as_policy(spec)
    text = str(spec).strip()
    if not text:
        raise PolicyError(None, "empty policy spec: give a registered name, 'module:Class' or a checkpoint path")
    if text in POLICIES:
        return as_policy(_construct(text, POLICIES[text], kwargs), name=text, spec=text)
    path = Path(text).expanduser()
    if isinstance(spec, Path) or path.exists() or "/" in text or "\\" in text or \
            (":" not in text and path.suffix.lower() in CHECKPOINT_SUFFIXES):
        return _load_checkpoint(text, path, kwargs)
    if ":" in text:
        return as_policy(_construct(text, _import_attr(text), kwargs), name=text, spec=text)
    raise PolicyError(text, f"unknown policy; known: {', '.join(POLICIES)}; or 'package.module:Class', or the path "
                            f"of a checkpoint ({', '.join(checkpoint_formats()) or 'no checkpoint format registered'})")


def policy_env_kwargs(policy) -> dict:
    """The `gym.make` kwargs a policy needs: its `env_kwargs`, then its `observation_keys` (default
    `DEFAULT_OBSERVATION_KEYS`), its `cameras` (when it observes "cameras" and names them) and
    `pseudo_experts=True` when it needs the pseudo-experts (never False: EP's normalisation reads PDM-Closed)."""
    own = getattr(policy, "env_kwargs", None) or {}
    name = getattr(policy, "name", type(policy).__name__)
    if not isinstance(own, dict):
        raise PolicyError(name, f"env_kwargs must be a dict, got {type(own).__name__}")
    kw = dict(own)
    keys = getattr(policy, "observation_keys", None)
    keys = tuple(keys) if keys is not None else tuple(kw.pop("observation_keys", DEFAULT_OBSERVATION_KEYS))
    kw["observation_keys"] = keys
    cams = getattr(policy, "cameras", None)
    if cams is not None and "cameras" in keys:
        kw["cameras"] = tuple(cams)
    if getattr(policy, "needs_pseudo_experts", False):
        if own.get("pseudo_experts") is False:
            raise PolicyError(name, "needs the pseudo-experts but its env_kwargs turn them off")
        kw["pseudo_experts"] = True
    return kw


from . import baselines as _baselines  # noqa: E402,F401  (registers the built-ins; it imports this module)
