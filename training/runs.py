"""What every run folder of `training` shares (generation runs, real-sample builds, `simscale train`, `train-bc`,
`train-rl`): the check that a folder is new, empty or one of ours before anything is written, the diff of two
configs for the error that refuses another run's folder, and the package versions a run records."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from simscale_env.errors import CorruptFileError, OutputFolderError


def check_run_folder(out, record: str, what: str) -> dict | None:
    """The JSON object of `out/record` when `out` holds a run (None when `out` does not exist or holds nothing but
    hidden temporaries). One error, and nothing written, for anything else: `out` is a file (OutputFolderError), a
    folder holding other things without `record` (OutputFolderError naming a few of them: a user's folder is never
    written into), or a `record` that is not a JSON object (CorruptFileError). `what` names the run kind in the
    messages ("a training run")."""
    from simscale_env.data.atomic import is_temporary

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(out, "the output folder is a file")
    if not out.exists():
        return None
    path = out / record
    if not path.is_file():
        others = sorted(f.name for f in out.iterdir() if not is_temporary(f.name))
        if others:
            raise OutputFolderError(out, f"not {what} folder (holds {', '.join(others[:5])}"
                                         f"{', ...' if len(others) > 5 else ''} and no {record}): use an empty or new "
                                         f"folder")
        return None
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"not the record of {what} ({exc}); use another output folder") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(path, f"not the record of {what}; use another output folder")
    return doc


def config_diff(old: dict, new: dict, limit: int = 6) -> str:
    """'key: <old> there, <new> now; ...' for the keys whose values differ (at most `limit`), '' when none."""
    diff = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return "; ".join(diff[:limit]) + ("; ..." if len(diff) > limit else "")


def versions(*modules: str) -> dict:
    """Plain-string versions of simscale, Python, numpy, the mini builder and `modules` (imported ones only, e.g.
    "torch", "pyarrow", "stable_baselines3", "ray"): what a run records beside its config."""
    import numpy as np

    import simscale_env

    v = {"simscale": str(getattr(simscale_env, "__version__", None)), "python": platform.python_version(),
         "numpy": str(np.__version__)}
    for name in modules:
        mod = sys.modules.get(name)
        if mod is not None:
            v[name] = str(getattr(mod, "__version__", None))
    try:
        from simscale_env.data.mini.build import BUILDER_VERSION

        v["mini_builder"] = BUILDER_VERSION
    except Exception:  # noqa: BLE001 (optional)
        pass
    return v


def int_at_least(lo: int):
    """An argparse `type`: an integer >= `lo` (argparse reports "invalid integer >= lo value: 'x'")."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise ValueError(f"expected an integer >= {lo}, got {v}")
        return v

    parse.__name__ = f"integer >= {lo}"
    return parse
