import json

import numpy as np

from simscale_env.cli import main


def test_data_info(mini, capsys):
    assert main(["data", "info", str(mini), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["num_logs"] >= 12 and sum(s["scenarios_by_type"].values()) >= 30
    assert {"vehicle", "pedestrian", "bicycle"} <= set(s["tracks_by_category"])
    assert "lanes_polygons" in s["maps"]["us-nv-las-vegas-strip"]["layers"]
    assert main(["data", "info", str(mini)]) == 0
    assert "scenarios by type" in capsys.readouterr().out


def test_unknown_benchmark_is_one_line_listing_the_known_ones(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["bench", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and "'experts'" in err and "Traceback" not in err


def test_demo_drives_a_navhard_episode_and_writes_images_and_a_video(mini, tmp_path, capsys):
    from PIL import Image

    assert main(["demo", "--data", str(mini), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "EPDMS" in out and 0.0 <= summary["epdms"] <= 1.0
    pngs = sorted(p.name for p in (tmp_path / "start").glob("CAM_*.png"))
    assert pngs == sorted(f"CAM_{c}.png" for c in ("F0", "B0", "L0", "L1", "L2", "R0", "R1", "R2"))
    img = np.asarray(Image.open(tmp_path / "start" / "CAM_F0.png"))
    assert img.shape == (224, 480, 3) and img.std() > 10  # an image, not a blank
    video = tmp_path / "episode.mp4"
    assert video.exists() and video.stat().st_size > 10_000


def test_check_golden_help_documents_every_flag(capsys):
    import argparse

    import pytest

    from simscale_env.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    cg = sub.choices["check-golden"]
    for action in cg._actions:
        assert action.help, action.dest
    with pytest.raises(SystemExit) as exc:
        main(["check-golden", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("DIR", "--cache", "--max-mismatches", "--quiet"):
        assert flag in text


def test_check_golden_on_a_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    assert main(["check-golden", str(tmp_path / "missing"), "--quiet"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and "missing" in cap.err


def _run(argv, capsys):
    """main(argv) -> (exit status, stderr), whether the status comes back or argparse raises SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _walk(parser, prog="simscale"):
    import argparse

    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prog} {name}")


def test_every_flag_and_subcommand_has_help():
    import argparse

    from simscale_env.cli import build_parser

    seen = 0
    for prog, parser in _walk(build_parser()):
        for action in parser._actions:
            assert action.help, f"{prog}: {action.option_strings or action.dest} has no help text"
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{prog} {choice.dest} has no help text"
            seen += 1
    assert seen > 60


def test_bench_and_evaluate_help_list_benchmarks_and_agents(capsys):
    import pytest

    from agents.baselines import AGENTS
    from benchmarks import BENCHMARKS, describe

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in BENCHMARKS:
        assert f"  {name} " in out
    assert "map load time for one location" in out and describe("data") in out  # from the module docstrings
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    for name in AGENTS:
        assert f"  {name} " in out
    assert "straight ahead at the current speed" in out


# a bad invocation of every subcommand -> (argv with {tmp}/{log}/{tok} placeholders, a fragment the error names)
BAD_INVOCATIONS = [
    # generate first: later rows' --data set SIMSCALE_MINI in this process
    (["generate", "--split", "navnowhere", "--out", "{tmp}/gen", "--quiet"], "navnowhere"),
    (["train-rl", "--split", "navnowhere", "--out", "{tmp}/rl"], "navnowhere"),
    (["train-bc", "--split", "navnowhere", "--out", "{tmp}/bc", "--quiet"], "navnowhere"),
    (["train", "--planner", "ltf", "--real", "navnowhere", "--out", "{tmp}/tr", "--quiet"], "navnowhere"),
    (["experiment", "simscale", "--eval-split", "navnowhere", "--out", "{tmp}/xp", "--quiet"], "navnowhere"),
    (["generate", "--out", "{tmp}/unrelated", "--quiet"], "not a generation run folder"),
    (["generate", "--rounds", "0", "--out", "{tmp}/gen"], "--rounds"),
    (["generate", "--vocab", "{tmp}/corrupt.json", "--out", "{tmp}/gen", "--quiet"], "corrupt.json"),
    (["generate", "--ray-address", "127.0.0.1:9", "--out", "{tmp}/gen", "--quiet"], "no Ray cluster answers"),
    (["export", "--split", "a/b", "{tmp}/missing", "--out", "{tmp}/exp"], "--split"),
    ([], "COMMAND"),
    (["frobnicate"], "frobnicate"),
    (["data"], "COMMAND"),
    (["data", "info", "{tmp}/missing"], "missing"),
    (["data", "info", "{tmp}/corrupt.db"], "not an SQLite database"),
    (["data", "build-mini", "--out", "{tmp}/unrelated"], "not a SimScale mini dataset"),
    (["data", "build-mini", "--out", "{tmp}/corrupt.db"], "not a folder"),
    (["data", "build-mini", "--out", "{tmp}/corrupt.db/sub"], "corrupt.db"),  # an OS error: one line, no traceback
    (["data", "build-mini", "--out", "{tmp}/new", "--seed", "abc"], "--seed"),
    (["data", "build-mini", "--out", "{tmp}/new", "--workers", "0"], "--workers"),
    (["bench"], "NAME"),
    (["bench", "nope"], "nope"),
    (["check-epdms", "{tmp}/missing.json"], "missing.json"),
    (["check-epdms", "{tmp}/corrupt.json"], "not valid JSON"),
    (["check-golden", "{tmp}/missing"], "missing"),
    (["check-golden", "{tmp}/unrelated", "--quiet"], "no golden files"),
    (["check-golden", "{tmp}/unrelated", "--max-mismatches", "-1"], "--max-mismatches"),
    (["vocab", "build", "--split", "nope", "--out", "{tmp}/v.npy"], "no split named 'nope'"),
    (["vocab", "build", "--split", "{tmp}/missing.yaml", "--out", "{tmp}/v.npy"], "missing.yaml"),
    (["vocab", "build", "--split", "navtest", "--k", "0", "--out", "{tmp}/v.npy"], "--k"),
    (["vocab", "build", "--split", "navtest", "--interval", "nan", "--out", "{tmp}/v.npy"], "--interval"),
    (["vocab", "build", "--split", "navtest", "--data", "{tmp}/unrelated", "--out", "{tmp}/v.npy"],
     "NUPLAN_MAPS_ROOT"),
    (["vocab", "label", "--split", "navtest", "--vocab", "{tmp}/missing.npy", "--out", "{tmp}/labels"],
     "missing.npy"),
    (["vocab", "label", "--split", "navtest", "--vocab", "{tmp}/corrupt.json", "--out", "{tmp}/labels"],
     "corrupt.json"),
    (["render", "--log", "{tmp}/missing.db", "--token", "{tok}", "--out", "{tmp}/r"], "missing.db"),
    (["render", "--log", "{tmp}/corrupt.db", "--token", "{tok}", "--out", "{tmp}/r"], "not an SQLite database"),
    (["render", "--log", "{log}", "--token", "xyz", "--out", "{tmp}/r"], "--token"),
    (["render", "--log", "{log}", "--token", "ffffffffffffffff", "--out", "{tmp}/r"], "ffffffffffffffff"),
    (["render", "--log", "{log}", "--token", "{tok}", "--out", "{tmp}/r", "--channels", "CAM_X"], "CAM_X"),
    (["render", "--log", "{log}", "--token", "{tok}", "--out", "{tmp}/r", "--width", "-32"], "--width"),
    (["render", "--log", "{log}", "--token", "{tok}", "--out", "{tmp}/r", "--iteration", "99999"], "--iteration"),
    (["render", "--log", "{log}", "--token", "{tok}", "--out", "{tmp}/r", "--maps", "{tmp}/missing"], "missing"),
    (["evaluate", "--agents", "nobody"], "'nobody'"),
    (["evaluate", "--split", "navnowhere"], "navnowhere"),
    (["evaluate", "--seed", "-1"], "--seed"),
    (["evaluate", "--policy", "stand_still"], "--out"),
    (["evaluate", "--policy", "stand_still", "--agents", "human", "--out", "{tmp}/ev"], "not both"),
    (["evaluate", "--policy", "stand_still", "--policy-kwargs", "[1]", "--out", "{tmp}/ev"], "--policy-kwargs"),
    (["evaluate", "--mode", "three_stage"], "--mode"),
    (["evaluate", "--workers", "0"], "--workers"),
    (["evaluate", "--policy", "nobody", "--split", "mini-navhard", "--out", "{tmp}/ev", "--quiet"],
     "nobody: unknown policy"),
    (["evaluate", "--policy", "stand_still", "--split", "mini-navhard", "--out", "{tmp}/unrelated", "--quiet"],
     "not an evaluation run directory"),
    (["evaluate", "--data", "{tmp}/missing", "--agents", "stand_still"], "missing"),
    (["evaluate", "--data", "{tmp}/unrelated", "--agents", "stand_still"], "not a SimScale mini dataset"),
    (["compare", "{tmp}/missing"], "missing"),
    (["compare", "{tmp}/unrelated"], "aggregate.json"),
    (["train", "--planner", "nosuch", "--out", "{tmp}/tr"], "nosuch"),
    (["train", "--planner", "ltf", "--rewards-only", "--out", "{tmp}/tr"], "rewards_only"),
    (["train", "--planner", "gtrs_dense", "--out", "{tmp}/tr"], "needs a vocabulary"),
    (["train", "--planner", "gtrs_dense", "--vocab", "{tmp}/missing.npy", "--out", "{tmp}/tr"], "missing.npy"),
    (["train", "--planner", "ltf", "--out", "{tmp}/unrelated", "--quiet"], "not a training run folder"),
    (["train", "--planner", "ltf", "--epochs", "0", "--out", "{tmp}/tr"], "--epochs"),
    (["train", "--planner", "ltf", "--set", "nokey", "--out", "{tmp}/tr"], "KEY=VALUE"),
    (["train-bc", "--rounds", "0", "--out", "{tmp}/bc"], "--rounds"),
    (["train-bc", "--out", "{tmp}/unrelated", "--quiet"], "unrelated"),
    (["train-rl", "--algo", "dqn", "--out", "{tmp}/rl"], "--algo"),
    (["train-rl", "--timesteps", "0", "--out", "{tmp}/rl"], "total_timesteps"),
    (["train-rl", "--out", "{tmp}/unrelated"], "unrelated"),
    (["experiment", "simscale", "--planners", "nosuch", "--out", "{tmp}/xp"], "nosuch"),
    (["experiment", "simscale", "--rounds", "0,x", "--out", "{tmp}/xp"], "--rounds"),
    (["experiment", "simscale", "--out", "{tmp}/unrelated", "--quiet"], "unrelated"),
    (["demo", "--data", "{tmp}/unrelated", "--out", "{tmp}/demo"], "not a SimScale mini dataset"),
    (["demo", "--seed", "x"], "--seed"),
]


def test_bad_invocations_of_every_subcommand_are_one_line_with_status_2(mini, tmp_path, monkeypatch, capsys):
    from simscale_env.data import ScenarioBuilder

    monkeypatch.setenv("SIMSCALE_MINI", str(mini))  # restored afterwards (evaluate and demo set it from --data)
    for var in ("NUPLAN_DATA_ROOT", "NUPLAN_MAPS_ROOT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "corrupt.db").write_bytes(b"not a database")
    (tmp_path / "corrupt.json").write_text("{")
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "precious.txt").write_text("a user's file")
    log = sorted((mini / "nuplan-v1.1" / "splits" / "mini").glob("*.db"))[0]
    tok = ScenarioBuilder(log).refs()[0].token
    commands = set()
    for argv, fragment in BAD_INVOCATIONS:
        argv = [a.format(tmp=tmp_path, log=log, tok=tok) for a in argv]
        code, err = _run(argv, capsys)
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("simscale"), (argv, code, err)
        assert "error:" in lines[0] and fragment in lines[0], (argv, err)
        commands.add(" ".join(argv[:2]) if argv[:1] in (["data"], ["vocab"], ["experiment"]) else " ".join(argv[:1]))
    assert (tmp_path / "unrelated").exists() and [p.name for p in (tmp_path / "unrelated").iterdir()] == \
        ["precious.txt"]  # nothing written into the user's folder
    assert not (tmp_path / "missing").exists()  # evaluate --data never builds a dataset into a mistyped path
    assert not (tmp_path / "gen").exists()  # a generate that fails its checks writes nothing
    for name in ("tr", "rl", "bc", "xp"):  # nor do the training commands and the experiment
        assert not (tmp_path / name).exists(), name
    from simscale_env.cli import build_parser

    every = {prog.removeprefix("simscale ") for prog, parser in _walk(build_parser()) if parser.get_default("func")}
    assert every <= commands, every - commands


def test_a_benchmark_s_own_argument_errors_show_no_traceback(capsys):
    code, err = _run(["bench", "data", "--repeats", "x"], capsys)
    assert code == 2 and "Traceback" not in err and "--repeats" in err


def test_bench_vector_times_a_split_larger_than_its_caches(mini, capsys):
    """`simscale bench vector --scenario-cache K --open-logs K`: the env's caches shrunk as a large split would have
    them, and the JSON line names the options it ran with."""
    import numba

    threads = ["--threads", str(numba.get_num_threads())]  # the bench sets numba's threads: leave them as they are
    args = ["bench", "vector", "--sizes", "2", "--modes", "no_cameras", "--warmup", "1", "--min-seconds", "0.1",
            "--scenario-cache", "1", "--open-logs", "1", *threads]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps_per_s_no_cameras_n2"] > 0
    assert (out["scenario_cache"], out["open_logs"], out["prefetch"]) == (1, 1, False)
    assert main(["bench", "vector", "--sizes", "1", "--modes", "no_cameras", "--min-seconds", "0.1", *threads]) == 0
    assert "scenario_cache" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # defaults: not named
