import json

from simscale_env.cli import main


def test_data_info(mini, capsys):
    assert main(["data", "info", str(mini), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["num_logs"] >= 12 and sum(s["scenarios_by_type"].values()) >= 30
    assert {"vehicle", "pedestrian", "bicycle"} <= set(s["tracks_by_category"])
    assert "lanes_polygons" in s["maps"]["us-nv-las-vegas-strip"]["layers"]
    assert main(["data", "info", str(mini)]) == 0
    assert "scenarios by type" in capsys.readouterr().out


def test_unknown_benchmark(capsys):
    assert main(["bench", "nope"]) == 2
