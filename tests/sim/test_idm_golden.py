"""IDM agents as nuplan-devkit runs them: the five shared devkit traces (../shared/reference/golden/oracle_mini/idm_traces/,
settings in its README) reproduced record by record (every step, the ego and every agent within 1e-6, the same agents
at every step), through `simscale_env.golden.traces.check_traces` as `simscale check-golden` runs it."""

import pytest

from simscale_env.data import LogDB
from simscale_env.golden.oracle import GoldenFolder
from simscale_env.golden.traces import TOLERANCE, check_traces, compare_trace
from tests.conftest import ORACLE_MINI

pytestmark = pytest.mark.usefixtures("oracle_mini_dir")
TOKENS = sorted(p.stem for p in (ORACLE_MINI / "idm_traces").glob("*.json"))


@pytest.fixture(scope="module")
def folder():
    return GoldenFolder.open(ORACLE_MINI)


def test_the_five_traces_are_there():
    assert TOKENS == ["0321f158b9f55632", "7ffc94b8da34b707", "aeb3d4be0e58ede7", "e43314dd932dc329",
                      "ed7a703df855ba4f"]


@pytest.mark.parametrize("token", TOKENS)
def test_trace_reproduced(folder, token):
    import json

    data = json.loads((ORACLE_MINI / "idm_traces" / f"{token}.json").read_text())
    mismatches, row = compare_trace(f"idm_traces/{token}.json", data["trace"], LogDB(folder.log_path(data["log"])),
                                    token, folder.maps_root)
    assert not mismatches, "\n".join(str(m) for m in mismatches[:20])
    assert row["steps"] == len(data["trace"]) == 150
    assert row["matched"] == row["records"] and row["max_abs_error"] <= TOLERANCE, row


def test_check_traces_reports_no_mismatch(folder):
    res = check_traces(folder)
    assert res.kind == "traces" and res.skipped is None
    assert res.compared == len(TOKENS)
    assert res.mismatches == [], "\n".join(str(m) for m in res.mismatches[:20])
    assert set(res.tables) == {f"idm_traces/{t}.json" for t in TOKENS}
    for header, rows in res.tables.values():
        assert header[:4] == ("steps", "agents", "records", "matched")
        steps, agents, records, matched, _ = rows[0]
        assert steps == 150 and matched == records and agents > 0


def test_check_traces_skips_a_folder_without_traces(tmp_path):
    res = check_traces(GoldenFolder.open(tmp_path))
    assert res.skipped and res.compared == 0 and not res.mismatches


def test_a_changed_record_is_one_mismatch_named_by_step_and_agent(folder):
    import json

    token = "e43314dd932dc329"
    data = json.loads((ORACLE_MINI / "idm_traces" / f"{token}.json").read_text())
    rec = data["trace"][37]
    moved, dropped = sorted(rec["agents"])[:2]
    rec["agents"][moved][3] += 1e-5
    del rec["agents"][dropped]
    name = f"idm_traces/{token}.json"
    mismatches, row = compare_trace(name, data["trace"], LogDB(folder.log_path(data["log"])), token,
                                    folder.maps_root)
    assert sorted((m.where, m.what.split()[0]) for m in mismatches) == sorted([
        (f"{name} step 37 agent {moved}", "max"), (f"{name} step 37 agent {dropped}", "extra")])
    assert row["matched"] == row["records"] - 2
