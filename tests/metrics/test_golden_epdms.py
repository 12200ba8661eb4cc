"""NAVSIM's own PDMScorer.score_proposals outputs on 9 constructed scenes / 44 proposals, reproduced exactly."""

import json
import subprocess
import sys

from tests.conftest import GOLDEN


def test_check_epdms_cli_on_the_golden_file():
    r = subprocess.run([sys.executable, "-m", "simscale_env.cli", "check-epdms",
                        str(GOLDEN / "epdms_navsim_cases.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last == {"cases": 9, "proposals": 44, "mismatches": 0}
    assert "no_at_fault_collisions" in r.stdout and "pdm_score" in r.stdout


def test_check_epdms_reports_mismatches(tmp_path):
    data = json.loads((GOLDEN / "epdms_navsim_cases.json").read_text())
    data["scenes"] = data["scenes"][:1]
    data["scenes"][0]["navsim_outputs"][0]["drivable_area_compliance"] = 0.0  # a wrong expectation
    p = tmp_path / "cases.json"
    p.write_text(json.dumps(data))
    r = subprocess.run([sys.executable, "-m", "simscale_env.cli", "check-epdms", str(p)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert json.loads(r.stdout.strip().splitlines()[-1])["mismatches"] == 1
    assert "MISMATCH lead_vehicle_stopped[0]" in r.stdout
