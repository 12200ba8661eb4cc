"""Where data lives: the user's nuPlan/NAVSIM installation (environment variables) or the embedded mini dataset.

- ``NUPLAN_DATA_ROOT``: holds ``nuplan-v1.1/splits/<split>/*.db``
- ``NUPLAN_MAPS_ROOT``: holds ``nuplan-maps-v1.0.json`` and ``<location>/<version>/map.gpkg``
- ``OPENSCENE_DATA_ROOT``: holds ``navsim_logs/<split>/*.pkl`` and ``sensor_blobs/<split>/...``

Resolution order (:meth:`DataConfig.resolve`, what ``gym.make("SimScale-navhard-v0")`` uses), the first that applies:

1. explicit arguments: ``data_root=`` / ``maps_root=`` (both, or the environment variable for the other);
2. ``NUPLAN_DATA_ROOT`` / ``NUPLAN_MAPS_ROOT`` (both must be set);
3. otherwise the mini dataset (:func:`mini_root`):

   a. ``SIMSCALE_MINI``: that folder, built there if it is not complete;
   b. ``$SIMSCALE_CACHE/mini``, if it holds a complete build;
   c. the repository checkout's ``.cache/mini`` (what ``make demo`` and ``make test`` build; found beside the package
      when it is installed editable from a checkout), if complete;
   d. ``~/.cache/simscale/mini``, if complete;
   e. none complete: a build, resumed where an interrupted one left off among b-d, else started in
      ``$SIMSCALE_CACHE/mini`` if ``SIMSCALE_CACHE`` is set, else the checkout's ``.cache/mini`` (when running from
      a checkout), else ``~/.cache/simscale/mini``. A WARNING names the folder and the size and time to expect
      before it starts, and a progress bar counts the logs (on a terminal).

"Complete" means a ``manifest.json`` of the current builder version (``mini.build.is_complete``): an older or
half-finished build is never used silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)



def cache_dir() -> Path:
    return Path(os.environ.get("SIMSCALE_CACHE") or Path.home() / ".cache" / "simscale")


def checkout_root() -> Path | None:
    """The repository checkout this package runs from (an editable install or the source tree), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "simscale_env").is_dir() else None


def mini_candidates(preset: str = "mini") -> list[tuple[Path, str]]:
    """The folders searched for a complete mini dataset of `preset` (``mini.build.PRESETS``: "mini", "large", whose
    folder is ``mini-large``), in order, each with the reason it is searched (steps b-d of the module docstring;
    without the preset's variable ``SIMSCALE_MINI`` / ``SIMSCALE_MINI_LARGE``, which is used alone)."""
    from .mini.build import get_preset

    folder = get_preset(preset).folder
    cands: list[tuple[Path, str]] = []
    if os.environ.get("SIMSCALE_CACHE"):
        cands.append((Path(os.environ["SIMSCALE_CACHE"]) / folder, f"SIMSCALE_CACHE/{folder}"))
    checkout = checkout_root()
    if checkout is not None:
        cands.append((checkout / ".cache" / folder, f"the checkout's .cache/{folder}"
                      + (" (make demo)" if folder == "mini" else "")))
    cands.append((Path.home() / ".cache" / "simscale" / folder, f"~/.cache/simscale/{folder}"))
    out, seen = [], set()
    for p, why in cands:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append((p, why))
    return out


def _locate_mini(preset: str = "mini") -> tuple[Path, str, bool]:
    """(folder, why it was chosen, whether it holds a complete build): the resolution order's step 3, for the
    mini dataset of `preset`."""
    from .mini.build import BUILD_MARKER, get_preset, is_complete

    spec = get_preset(preset)
    env = os.environ.get(spec.env_var)
    if env:  # the user's choice: any finished build, also a small one (`build-mini --logs N`)
        return Path(env), spec.env_var, is_complete(env)
    cands = mini_candidates(spec.name)
    for p, why in cands:
        # found, not named: only a full build of the preset (a small one lacks the test splits)
        if is_complete(p, logs=spec.num_logs, preset=spec.name):
            return p, why, True
    for p, why in cands:  # resume an interrupted build rather than start another copy
        if (p / BUILD_MARKER).exists():
            return p, f"{why}, resuming an interrupted build", False
    # none: where it is built (the first candidate: SIMSCALE_CACHE, else the checkout, else ~/.cache/simscale)
    return cands[0][0], cands[0][1], False


def mini_root(preset: str = "mini") -> Path:
    """The folder of the mini dataset of `preset` by the resolution order (module docstring): where it is, else
    where it would be built. Nothing is built."""
    return _locate_mini(preset)[0]


def unknown_split(folder: Path, name, known) -> Exception:
    """The error for a split name that `folder` (a dataset's splits/) does not hold, naming the ones it does."""
    from ..errors import MissingFileError

    return MissingFileError(folder, f"no split named '{name}' (known: {', '.join(known) or 'none'}; or pass the path "
                                    f"of a NAVSIM scene_filter YAML)")


def ensure_mini(root: str | Path | None = None, seed: int = 0, progress: bool = True, preset: str = "mini",
                splits=()) -> Path:
    """The folder of the mini dataset of `preset` (`root`, else :func:`mini_root`), built first if it is missing or
    incomplete: a WARNING names the folder, size and time before the build starts, and with `progress` a bar counts
    the logs. `splits`: the split names (or YAML paths) the caller will read; a name no mini dataset holds is one
    MissingFileError before a build starts (the error `DataConfig.split_file` gives on a built dataset)."""
    from .mini.build import SPLIT_NAMES, build_mini, get_preset, is_complete

    spec = get_preset(preset)
    if root is not None:
        root, why, complete = Path(root), "the given folder", is_complete(root)
    else:
        root, why, complete = _locate_mini(spec.name)
    if complete:
        log.debug("mini dataset: %s (%s)", root, why)
        return root
    for name in splits:
        p = Path(name)
        if not (p.suffix in (".yaml", ".yml") or p.exists()) and not {str(name), f"mini-{name}"} & set(SPLIT_NAMES):
            raise unknown_split(root / "splits", name, sorted(SPLIT_NAMES))
    log.warning("the SimScale mini dataset%s is not built yet: building it into %s (%s): about %d MB, %s minutes on "
                "two cores, once. Set %s to a folder holding a built copy (e.g. a checkout's .cache/%s after "
                "`make demo`) to use that instead, or NUPLAN_DATA_ROOT and NUPLAN_MAPS_ROOT for your own data",
                "" if spec.name == "mini" else f" (preset {spec.name}, {spec.num_logs} logs)", root, why,
                spec.size_mb, spec.build_minutes, spec.env_var, spec.folder)
    bar = _progress_bar(progress)
    try:
        build_mini(root, seed, progress=progress, on_log=bar.update_to if bar is not None else None,
                   preset=spec.name)
    finally:
        if bar is not None:
            bar.close()
    return root


class _LogBar:
    """A tqdm bar over the logs of a build (shown on a terminal only: tqdm's ``disable=None``)."""

    def __init__(self):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, desc="building the mini dataset", unit="log", disable=None)

    def update_to(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _progress_bar(progress: bool) -> _LogBar | None:
    if not progress:
        return None
    try:
        return _LogBar()
    except ImportError:  # tqdm is a dependency; a broken install still builds, without the bar
        return None


DATA_SOURCES = ("auto", "nuplan", "openscene")


@dataclass(frozen=True)
class DataConfig:
    """Resolved data locations. `split` names the log folder (nuPlan ``nuplan-v1.1/splits/<split>``, OpenScene
    ``navsim_logs/<split>``: ``mini``, ``trainval``, ``test``). `nuplan_data_root` is None for OpenScene-only data."""

    nuplan_data_root: Path | None
    nuplan_maps_root: Path
    openscene_root: Path | None
    split: str = "mini"
    is_mini: bool = False

    @property
    def log_dir(self) -> Path:
        return self.nuplan_data_root / "nuplan-v1.1" / "splits" / self.split

    @property
    def splits_dir(self) -> Path | None:
        return self.nuplan_data_root / "splits" if self.is_mini else None

    def split_file(self, name: str | Path) -> Path:
        """A NAVSIM split YAML by path, or by name (``navtrain``, ``mini-navtrain``) in the dataset's ``splits/`` (the
        nuPlan data root's, else the OpenScene root's)."""
        from ..errors import MissingFileError

        p = Path(name)
        if p.suffix in (".yaml", ".yml") or p.exists():
            if not p.exists():
                raise MissingFileError(p, "split file not found")
            return p
        root = self.nuplan_data_root if self.nuplan_data_root is not None else self.openscene_root
        folder = root / "splits"
        for cand in (folder / f"{name}.yaml", folder / f"mini-{name}.yaml"):
            if cand.exists():
                return cand
        raise unknown_split(folder, name, sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else [])

    def split_logs(self, split: str | Path, purpose: str = "this") -> tuple:
        """(the split's spec, its nuPlan .db logs in path order): the logs its scene_filter YAML names, every log of
        the data split where it names none. One MissingFileError where the data has no .db logs (`purpose` names
        what reads them, e.g. "`simscale vocab`") or none of the split's logs."""
        from ..errors import MissingFileError
        from .openscene import load_split
        from .scenario import find_log_files

        spec = load_split(self.split_file(split))
        if self.nuplan_data_root is None:
            raise MissingFileError(self.openscene_root, f"{purpose} reads human plans at 0.1 s from the nuPlan .db "
                                                        f"logs; set NUPLAN_DATA_ROOT (OpenScene logs alone are 2 Hz)")
        logs = find_log_files(self.nuplan_data_root, self.split)
        if spec.log_names is not None:
            wanted = set(spec.log_names)
            logs = [p for p in logs if p.stem in wanted]
        if not logs:
            raise MissingFileError(self.log_dir, f"none of the logs of split '{spec.name}' is there")
        return spec, logs

    def source(self, requested: str = "auto") -> str:
        """Which logs scenarios come from: "nuplan" (the ``.db`` files) or "openscene" (the ``navsim_logs`` pickles).
        "auto": nuPlan where the data root holds ``.db`` logs, else OpenScene where the OpenScene root holds
        pickles; an explicit choice must find its logs."""
        from ..errors import MissingFileError

        if requested not in DATA_SOURCES:
            raise ValueError(f"data_source must be one of {DATA_SOURCES}, got {requested!r}")
        from .openscene_scenario import find_openscene_logs
        from .scenario import find_log_files

        for name, root, find in (("nuplan", self.nuplan_data_root, find_log_files),
                                 ("openscene", self.openscene_root, find_openscene_logs)):
            if requested in ("auto", name) and root is not None:
                try:
                    find(root, self.split)
                    return name
                except MissingFileError:
                    if requested == name:
                        raise
        if requested == "nuplan":
            raise MissingFileError(None, "data_source='nuplan' needs a nuPlan data root (data_root= or "
                                         "NUPLAN_DATA_ROOT)")
        if requested == "openscene":
            raise MissingFileError(None, "data_source='openscene' needs an OpenScene root (openscene_root= or "
                                         "OPENSCENE_DATA_ROOT)")
        looked = [str(p) for p in (self.nuplan_data_root, self.openscene_root) if p is not None]
        raise MissingFileError(None, f"no logs found: neither nuPlan .db files nor OpenScene navsim_logs/"
                                     f"{self.split}/*.pkl under {', '.join(looked) or 'any data root'}")

    def scenario_builder(self, source: str = "auto", *, max_open_logs: int | None = 16, log_names=None):
        """The scenario builder of the chosen source (`source`), over the logs of `log_names` if given."""
        src = self.source(source)
        if src == "nuplan":
            from .scenario import ScenarioBuilder, find_log_files

            files = find_log_files(self.nuplan_data_root, self.split)
            cls = ScenarioBuilder
        else:
            from .openscene_scenario import OpenSceneScenarioBuilder, find_openscene_logs

            files = find_openscene_logs(self.openscene_root, self.split)
            cls = OpenSceneScenarioBuilder
        if log_names is not None:
            wanted = set(log_names)
            files = [p for p in files if p.stem in wanted]
        return cls(files, max_open_logs=max_open_logs)

    @staticmethod
    def resolve(nuplan_data_root=None, nuplan_maps_root=None, openscene_root=None, split: str = "mini",
                build_mini_if_missing: bool = True) -> "DataConfig":
        """The data locations by the resolution order of the module docstring: the arguments, else the NUPLAN_*
        and OPENSCENE_DATA_ROOT variables, else the mini dataset (found, or built with a warning unless
        `build_mini_if_missing` is False). A data root (nuPlan or OpenScene) that holds a complete mini dataset needs
        no maps root (its ``maps/``); OpenScene data alone (no nuPlan root) needs NUPLAN_MAPS_ROOT, as NAVSIM does."""
        from .mini.build import is_complete

        data = nuplan_data_root or os.environ.get("NUPLAN_DATA_ROOT") or None
        maps = nuplan_maps_root or os.environ.get("NUPLAN_MAPS_ROOT") or None
        osr = openscene_root or os.environ.get("OPENSCENE_DATA_ROOT") or None
        if data is None and maps is None and osr is None:
            root = ensure_mini() if build_mini_if_missing else mini_root()
            return DataConfig(root, root / "maps", root, "mini", True)
        if maps is None and data is not None and is_complete(data):  # data_root=".cache/mini": self-contained
            root = Path(data)
            return DataConfig(root, root / "maps", Path(osr) if osr else root, "mini", True)
        if data is None and osr is not None and maps is None and is_complete(osr):  # a mini dataset as OpenScene data
            root = Path(osr)
            return DataConfig(None, root / "maps", root, "mini", True)
        from ..errors import MissingFileError

        if data is None and osr is not None:
            if maps is None:
                raise MissingFileError(None, "OpenScene data needs the nuPlan maps: set NUPLAN_MAPS_ROOT (or "
                                             "maps_root=) beside OPENSCENE_DATA_ROOT")
            return DataConfig(None, Path(maps), Path(osr), split, False)
        if data is None or maps is None:
            raise MissingFileError(None, "set both NUPLAN_DATA_ROOT and NUPLAN_MAPS_ROOT (or OPENSCENE_DATA_ROOT and "
                                         "NUPLAN_MAPS_ROOT, or none of them, for the embedded mini dataset)")
        return DataConfig(Path(data), Path(maps), Path(osr) if osr else None, split, False)
