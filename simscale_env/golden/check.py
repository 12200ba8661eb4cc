"""`simscale check-golden DIR`: every comparison against a golden folder in the format of ``oracle_mini/``.

Each kind of comparison lives in its own module of this package and exposes ``check_X(folder) -> CheckResult``
(``check_X(folder, source=...)`` where the kind builds scenarios: :data:`SOURCE_AWARE`); the module skips itself
(``CheckResult.skipped``) when the golden files it reads are absent. A module that is not there (yet) is reported as
skipped, so the kinds do not depend on each other.

`source` says where scenarios come from: "nuplan" (the default) the folder's nuPlan ``.db`` logs, "openscene" its
OpenScene pickles alone (no ``.db`` is opened): the NAVSIM scores and PDM-Closed plans are compared as usual, the
devkit's IDM traces (made on the 20 Hz databases) are reported apart with their deviation (``trace_deviation``, not
mismatches) and the devkit scenario-builder check (about the ``.db`` extraction) is skipped.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from pathlib import Path

from ..errors import CorruptFileError, MissingFileError, SimScaleError
from .oracle import GoldenFolder, _read_json, check_source
from .report import CheckResult, Mismatch

log = logging.getLogger(__name__)

# (module of this package, function, kind, summary key of the compared count, summary key of the mismatch count)
CHECKS = (
    ("traces", "check_traces", "traces", "traces", "trace_mismatches"),
    ("scores", "check_scores", "scores", "score_cells", "score_mismatches"),
    ("plans", "check_plans", "plans", "plans", "plan_mismatches"),
    ("maps", "check_maps", "maps", "map_queries", "map_mismatches"),
    ("maps", "check_scenarios", "scenarios", "scenarios", "scenario_mismatches"),
)
# every count key of the summary line, in order (the line starts with "source"; "trace_deviation" follows the counts
# with source openscene, "skipped" ends it)
SUMMARY_KEYS = tuple(k for c in CHECKS for k in c[3:])
# the kinds whose check builds scenarios and takes `source=` (the map API check does not)
SOURCE_AWARE = frozenset({"traces", "scores", "plans", "scenarios"})


def _load(module: str, fn: str):
    """The check function, or None with the reason when its module (or the function) does not exist."""
    name = f"{__package__}.{module}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None, f"not implemented ({name} does not exist)"
        raise
    f = getattr(mod, fn, None)
    return (f, None) if f is not None else (None, f"not implemented ({name}.{fn} does not exist)")


def _validate(folder: GoldenFolder) -> None:
    """Read every golden JSON file once, so that a corrupt one is one clear error naming it, whichever check reads
    it (and even where that check is not implemented)."""
    files = list(folder.trace_files) + list(folder.score_files)
    files += [p for p in (folder.root / "devkit_scenarios.json", folder.root / "devkit_maps.json") if p.exists()]
    for p in files:
        data = _read_json(p)
        if not isinstance(data, dict):
            raise CorruptFileError(p, f"expected a JSON object at the top level, found {type(data).__name__}")
    if not files and not folder.archives:
        raise MissingFileError(folder.root, "no golden files here (maps.tar.xz, logs/, navsim_logs/, idm_traces/, "
                                            "navsim_scores_*.json, devkit_scenarios.json, devkit_maps.json)")


def check_golden(root: str | Path, cache: str | Path | None = None,
                 source: str = "nuplan") -> tuple[dict, list[CheckResult]]:
    """Run every comparison with scenarios from `source` ("nuplan" or "openscene", module docstring); (summary dict,
    results in the order of :data:`CHECKS`). A kind of golden file that is absent is skipped
    (``summary["skipped"][kind]`` says why).

    Raises :class:`~simscale_env.errors.SimScaleError` on a missing folder or a corrupt golden file. A check that
    fails with an unexpected exception is reported as one mismatch of its kind (with the traceback in the log), so
    the other kinds still run and the exit status says something is wrong.
    """
    check_source(source)
    folder = GoldenFolder.open(root, cache)
    _validate(folder)
    if folder.archives:
        t = time.perf_counter()
        _ = folder.extracted
        log.info("golden archives ready in %s (%.1f s)", folder.extracted, time.perf_counter() - t)
    summary: dict = {"source": source}
    extra: dict = {}
    results: list[CheckResult] = []
    for module, fn_name, kind, count_key, mis_key in CHECKS:
        fn, why = _load(module, fn_name)
        t = time.perf_counter()
        if fn is None:
            r = CheckResult(kind, skipped=why)
        else:
            log.info("checking %s ...", kind)
            try:
                r = fn(folder, source=source) if kind in SOURCE_AWARE else fn(folder)
            except SimScaleError:
                raise
            except Exception as exc:  # a bug in a check: report it as a failure of that kind, keep going
                log.error("check %s failed:\n%s", kind, traceback.format_exc())
                r = CheckResult(kind, mismatches=[Mismatch(f"{module}.{fn_name}", "the check raised",
                                                           f"{type(exc).__name__}: {exc}", None)])
        if r.skipped:
            log.info("%s: skipped (%s)", kind, r.skipped)
        else:
            log.info("%s: %d compared, %d mismatches (%.1f s)", kind, r.compared, len(r.mismatches),
                     time.perf_counter() - t)
        results.append(r)
        summary[count_key] = int(r.compared)
        summary[mis_key] = len(r.mismatches)
        extra.update(r.summary)
    summary.update(extra)
    summary["skipped"] = {c[2]: r.skipped for c, r in zip(CHECKS, results) if r.skipped}
    return summary, results


def total_mismatches(summary: dict) -> int:
    return sum(int(summary[k]) for k in SUMMARY_KEYS if k.endswith("_mismatches"))
