"""Shared fixtures: the small golden devkit data (tests/fixtures/golden, a copy of parts of ../shared/reference/golden),
the shared oracle_mini golden folder (read in place from ../shared) and the mini dataset, found as the library finds it
(`simscale_env.data.paths.ensure_mini`: SIMSCALE_MINI, which `make test` sets, else the resolution order of the
README's "Where the data is found"), built there once if missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
DEVKIT_TINY = GOLDEN / "devkit_tiny"
TINY_LOG = DEVKIT_TINY / "nuplan-v1.1" / "splits" / "mini" / "2021.05.12.22.00.38_veh-35_01008_01518.db"
TINY_MAPS = DEVKIT_TINY / "maps"
TINY_TAG = "950c604d0f20a842"
# the shared golden folder of the real nuplan-devkit and NAVSIM on frozen mini logs (15 MB, not copied into git):
# SIMSCALE_ORACLE_MINI, else ../shared/reference/golden/oracle_mini beside the repository (as CI lays it out)
ORACLE_MINI = Path(os.environ.get("SIMSCALE_ORACLE_MINI")
                   or Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden" / "oracle_mini")


@pytest.fixture(scope="session")
def oracle_mini_dir() -> Path:
    """The shared oracle_mini folder. Missing: a failure under CI (which always has shared/ beside the clone), else
    a skip that says where it was looked for."""
    if not (ORACLE_MINI / "README.md").exists():
        msg = (f"golden folder oracle_mini not found at {ORACLE_MINI} (set SIMSCALE_ORACLE_MINI to "
               f"shared/reference/golden/oracle_mini)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return ORACLE_MINI


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_log() -> Path:
    return TINY_LOG


@pytest.fixture(scope="session")
def tiny_maps() -> Path:
    return TINY_MAPS


@pytest.fixture(scope="session")
def mini() -> Path:
    """The mini dataset root (built on first use; `make test` builds it beforehand)."""
    from simscale_env.data.paths import ensure_mini

    return ensure_mini(os.environ.get("SIMSCALE_MINI") or None, progress=False)


@pytest.fixture(scope="session")
def mini_openscene(mini, tmp_path_factory) -> Path:
    """A copy of the mini dataset as NAVSIM users have their data: OpenScene logs, sensor blobs, maps and split YAMLs,
    no nuPlan databases (issue 15)."""
    import shutil

    out = tmp_path_factory.mktemp("openscene_only") / "mini"
    out.mkdir()
    for name in ("navsim_logs", "sensor_blobs", "maps", "splits"):
        if (mini / name).exists():
            shutil.copytree(mini / name, out / name)
    shutil.copy(mini / "manifest.json", out / "manifest.json")
    assert not list(out.rglob("*.db"))
    return out


@pytest.fixture(scope="session")
def mini_logs(mini) -> list[Path]:
    return sorted((mini / "nuplan-v1.1" / "splits" / "mini").glob("*.db"))


@pytest.fixture(scope="session")
def mini_builder(mini):
    from simscale_env.data import ScenarioBuilder

    return ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini")


def find_ref(builder, predicate, *, what: str, scenario_types=None, tokens=None):
    """The first scenario ref of `builder` (in its order; optionally only of `scenario_types` / among `tokens`) whose
    loaded Scenario satisfies `predicate(ref, scenario)`. Tests pick their scenes by the property they need rather than
    by a hard-coded token, so that a regenerated mini dataset keeps them meaningful; `what` names the property, and a
    dataset without such a scene fails the test loudly (never skips it)."""
    for ref in builder.refs(scenario_types=scenario_types, tokens=tokens):
        if predicate(ref, builder.load(ref)):
            return ref
    pytest.fail(f"no mini scenario with {what} (scenario_types={scenario_types}, tokens={tokens})")
