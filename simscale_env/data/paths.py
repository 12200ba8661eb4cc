"""Where data lives: the user's nuPlan/NAVSIM installation (environment variables) or the embedded mini dataset.

- ``NUPLAN_DATA_ROOT``: holds ``nuplan-v1.1/splits/<split>/*.db``
- ``NUPLAN_MAPS_ROOT``: holds ``nuplan-maps-v1.0.json`` and ``<location>/<version>/map.gpkg``
- ``OPENSCENE_DATA_ROOT``: holds ``navsim_logs/<split>/*.pkl`` and ``sensor_blobs/<split>/...``
- ``SIMSCALE_MINI`` (or ``SIMSCALE_CACHE``/mini, default ``~/.cache/simscale/mini``): the mini dataset, built on
  first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SIMSCALE_CACHE", Path.home() / ".cache" / "simscale"))


def mini_root() -> Path:
    env = os.environ.get("SIMSCALE_MINI")
    return Path(env) if env else cache_dir() / "mini"


def ensure_mini(root: str | Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """The mini dataset folder, built first if it is missing or incomplete."""
    from .mini.build import build_mini, is_complete

    root = Path(root) if root is not None else mini_root()
    if not is_complete(root):
        build_mini(root, seed, progress=progress)
    return root


@dataclass(frozen=True)
class DataConfig:
    """Resolved data locations. `split` names the nuPlan log folder (``mini``, ``trainval``, ``test``)."""

    nuplan_data_root: Path
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
        """A NAVSIM split YAML by path, or by name (``navtrain``, ``mini-navtrain``) in the dataset's ``splits/``."""
        from ..errors import MissingFileError

        p = Path(name)
        if p.suffix in (".yaml", ".yml") or p.exists():
            if not p.exists():
                raise MissingFileError(p, "split file not found")
            return p
        folder = self.nuplan_data_root / "splits"
        for cand in (folder / f"{name}.yaml", folder / f"mini-{name}.yaml"):
            if cand.exists():
                return cand
        known = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
        raise MissingFileError(folder, f"no split named '{name}' (known: {', '.join(known) or 'none'}; or pass the "
                                       f"path of a NAVSIM scene_filter YAML)")

    @staticmethod
    def resolve(nuplan_data_root=None, nuplan_maps_root=None, openscene_root=None, split: str = "mini",
                build_mini_if_missing: bool = True) -> "DataConfig":
        data = nuplan_data_root or os.environ.get("NUPLAN_DATA_ROOT")
        maps = nuplan_maps_root or os.environ.get("NUPLAN_MAPS_ROOT")
        osr = openscene_root or os.environ.get("OPENSCENE_DATA_ROOT")
        if data is None and maps is None:
            root = ensure_mini() if build_mini_if_missing else mini_root()
            return DataConfig(root, root / "maps", root, "mini", True)
        from ..errors import MissingFileError

        if data is None or maps is None:
            raise MissingFileError(None, "set both NUPLAN_DATA_ROOT and NUPLAN_MAPS_ROOT (or neither, for the "
                                         "embedded mini dataset)")
        return DataConfig(Path(data), Path(maps), Path(osr) if osr else None, split, False)
