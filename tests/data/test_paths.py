"""Where the data is found: explicit arguments > NUPLAN_* > SIMSCALE_MINI > a complete mini dataset in
SIMSCALE_CACHE/mini > the checkout's .cache/mini (`make demo`) > ~/.cache/simscale/mini > a build (announced)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from simscale_env.data import paths
from simscale_env.data.mini import build
from simscale_env.errors import MissingFileError


def _complete(folder: Path, version: int | None = None, logs: int | None = None) -> Path:
    """A fake complete mini dataset (what `is_complete` checks: a manifest of the current builder version; of
    `logs` logs where given, as `build-mini --logs N` writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"builder_version": version or build.BUILDER_VERSION, "seed": 0}
    if logs is not None:
        manifest["num_logs"] = logs
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def places(tmp_path, monkeypatch):
    """No data variables, HOME and the checkout under tmp_path, and any build fails the test."""
    for var in ("NUPLAN_DATA_ROOT", "NUPLAN_MAPS_ROOT", "OPENSCENE_DATA_ROOT", "SIMSCALE_MINI", "SIMSCALE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    home, checkout = tmp_path / "home", tmp_path / "checkout"
    home.mkdir()
    checkout.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(paths, "checkout_root", lambda: checkout)

    def no_build(*a, **k):
        raise AssertionError(f"a build was started: {a}")

    monkeypatch.setattr(build, "build_mini", no_build)
    return {"home_mini": home / ".cache" / "simscale" / "mini", "checkout_mini": checkout / ".cache" / "mini",
            "cache": tmp_path / "cache", "tmp": tmp_path}


def test_simscale_mini_wins_over_every_other_copy(places, monkeypatch):
    own = _complete(places["tmp"] / "own")
    _complete(places["cache"] / "mini")
    _complete(places["checkout_mini"])
    monkeypatch.setenv("SIMSCALE_MINI", str(own))
    monkeypatch.setenv("SIMSCALE_CACHE", str(places["cache"]))
    assert paths.mini_root() == own
    assert paths.DataConfig.resolve().nuplan_data_root == own


def test_simscale_cache_before_the_checkout(places, monkeypatch):
    _complete(places["checkout_mini"])
    _complete(places["home_mini"])
    monkeypatch.setenv("SIMSCALE_CACHE", str(places["cache"]))
    assert paths.ensure_mini() == places["checkout_mini"]  # SIMSCALE_CACHE/mini is not built: skipped
    _complete(places["cache"] / "mini")
    assert paths.ensure_mini() == places["cache"] / "mini"


def test_plain_script_finds_what_make_demo_built(places):
    """No variable set (a user's script): the checkout's .cache/mini, not a new copy in ~/.cache."""
    _complete(places["checkout_mini"])
    cfg = paths.DataConfig.resolve()
    assert cfg.is_mini and cfg.nuplan_data_root == places["checkout_mini"]
    assert cfg.nuplan_maps_root == places["checkout_mini"] / "maps"
    assert not places["home_mini"].exists()


def test_home_cache_last_and_stale_builds_skipped(places):
    _complete(places["checkout_mini"], version=build.BUILDER_VERSION - 1)  # an older builder's: not used silently
    _complete(places["home_mini"])
    assert paths.ensure_mini() == places["home_mini"]


def test_a_small_build_is_used_when_named_never_when_found(places, monkeypatch):
    """A `--logs 2` build lacks the test splits: found by the search it is passed over for a full one, named by
    SIMSCALE_MINI it is the user's choice."""
    _complete(places["checkout_mini"], logs=2)
    _complete(places["home_mini"], logs=build.NUM_LOGS)
    assert paths.ensure_mini() == places["home_mini"]
    monkeypatch.setenv("SIMSCALE_MINI", str(places["checkout_mini"]))
    assert paths.ensure_mini() == places["checkout_mini"]


def test_explicit_arguments_then_nuplan_variables(places, monkeypatch, tmp_path):
    _complete(places["checkout_mini"])
    monkeypatch.setenv("NUPLAN_DATA_ROOT", str(tmp_path / "env_data"))
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(tmp_path / "env_maps"))
    cfg = paths.DataConfig.resolve()
    assert (cfg.nuplan_data_root, cfg.nuplan_maps_root, cfg.is_mini) == (tmp_path / "env_data",
                                                                         tmp_path / "env_maps", False)
    cfg = paths.DataConfig.resolve(tmp_path / "arg_data", tmp_path / "arg_maps")
    assert (cfg.nuplan_data_root, cfg.nuplan_maps_root) == (tmp_path / "arg_data", tmp_path / "arg_maps")
    monkeypatch.delenv("NUPLAN_MAPS_ROOT")
    with pytest.raises(MissingFileError, match="set both NUPLAN_DATA_ROOT and NUPLAN_MAPS_ROOT"):
        paths.DataConfig.resolve()
    # a data root that is a complete mini dataset needs no maps root
    own = _complete(tmp_path / "own")
    cfg = paths.DataConfig.resolve(own)
    assert cfg.is_mini and cfg.nuplan_maps_root == own / "maps"


@pytest.mark.parametrize("where", ["cache", "checkout", "home"])
def test_build_announced_where_and_how_big(places, monkeypatch, caplog, where):
    """Nothing built: a WARNING names the folder and the size before the build starts, and the build reports its
    progress per log."""
    if where == "cache":
        monkeypatch.setenv("SIMSCALE_CACHE", str(places["cache"]))
        expected = places["cache"] / "mini"
    elif where == "checkout":
        expected = places["checkout_mini"]
    else:
        monkeypatch.setattr(paths, "checkout_root", lambda: None)  # an installed wheel: no checkout
        expected = places["home_mini"]
    calls = []

    def fake_build(out, seed=0, *, progress=True, on_log=None, **kw):
        assert any(r.levelno == logging.WARNING for r in caplog.records), "the build started before the warning"
        if on_log is not None:
            on_log(0, 12)
            on_log(12, 12)
        calls.append(Path(out))
        return _complete(Path(out))

    monkeypatch.setattr(build, "build_mini", fake_build)
    with caplog.at_level(logging.WARNING, logger="simscale_env.data.paths"):
        assert paths.ensure_mini() == expected
    assert calls == [expected]
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(expected) in msg and f"{build.PRESETS['mini'].size_mb} MB" in msg and "minutes" in msg
    caplog.clear()
    assert paths.ensure_mini() == expected and calls == [expected]  # found now: no second build, no warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_mistyped_split_is_an_error_before_a_build(places, monkeypatch):
    """`ensure_mini(splits=...)`: a split name no mini dataset holds fails at once, naming it and the known ones,
    instead of after an 8-minute build of the large preset (`experiment simscale --eval-split navnowhere`); known
    names, their base names and YAML paths go on to the (here faked) build."""
    with pytest.raises(MissingFileError, match="no split named 'navnowhere' .*mini-navhard, mini-navtest"):
        paths.ensure_mini(preset="large", splits=("mini-navtrain", "navnowhere"))
    assert not places["checkout_mini"].parent.exists()  # nothing created
    calls = []
    monkeypatch.setattr(build, "build_mini", lambda out, seed=0, **kw: calls.append(Path(out)) or _complete(out))
    paths.ensure_mini(splits=("navhard", "mini-navtrain-frames", str(places["tmp"] / "mine.yaml")))
    assert calls == [places["checkout_mini"]]


def test_split_names_are_what_a_build_writes(mini):
    assert sorted(f.stem for f in (mini / "splits").glob("*.yaml")) == sorted(build.SPLIT_NAMES)


def test_interrupted_build_is_resumed_where_it_is(places, monkeypatch):
    """A half-built copy (the builder's marker, no manifest) in ~/.cache is resumed rather than a new one started in
    the checkout."""
    places["home_mini"].mkdir(parents=True)
    (places["home_mini"] / build.BUILD_MARKER).write_text("builder_version=x seed=0\n")
    calls = []
    monkeypatch.setattr(build, "build_mini", lambda out, seed=0, **kw: calls.append(Path(out)) or Path(out))
    paths.ensure_mini()
    assert calls == [places["home_mini"]]


def test_gym_make_finds_the_checkout_copy_without_building(mini, places):
    """`gym.make("SimScale-navhard-v0")` with no variable set opens the checkout's built copy (a link to the
    session's mini dataset here)."""
    import gymnasium as gym

    import simscale_env  # noqa: F401

    places["checkout_mini"].parent.mkdir(parents=True)
    places["checkout_mini"].symlink_to(mini, target_is_directory=True)
    env = gym.make("SimScale-navhard-v0", observation_keys=("ego_status",), pseudo_experts=False)
    try:
        assert env.unwrapped._data.nuplan_data_root == places["checkout_mini"]
    finally:
        env.close()
    assert not places["home_mini"].exists()


def test_the_large_preset_has_its_own_folder_and_variable(places, monkeypatch):
    """`ensure_mini(preset="large")` finds only a complete build of the large preset, in its own folder
    (``mini-large``) beside the mini one, or where SIMSCALE_MINI_LARGE points; the mini dataset is never taken for
    it (nor it for the mini dataset)."""
    monkeypatch.delenv("SIMSCALE_MINI_LARGE", raising=False)
    large = build.PRESETS["large"]
    assert (large.num_logs, large.test_logs, large.folder) == (36, 12, "mini-large")
    _complete(places["checkout_mini"])
    monkeypatch.setenv("SIMSCALE_CACHE", str(places["cache"]))
    # the large preset is not built anywhere: where it would be built is the cache's mini-large
    assert paths.mini_root("large") == places["cache"] / "mini-large"
    wrong = _complete(places["cache"] / "mini-large")  # a manifest without "preset": a mini build
    assert paths.mini_root("large") == wrong  # where it would be built ...
    assert not paths._locate_mini("large")[2]  # ... but not a complete large build
    manifest = json.loads((wrong / "manifest.json").read_text())
    (wrong / "manifest.json").write_text(json.dumps({**manifest, "preset": "large", "num_logs": 36}))
    assert paths.ensure_mini(preset="large") == wrong
    assert paths.ensure_mini() == places["checkout_mini"]  # the mini preset is not the large one
    own = _complete(places["tmp"] / "own")
    monkeypatch.setenv("SIMSCALE_MINI_LARGE", str(own))
    assert paths.mini_root("large") == own and paths.mini_root() == places["checkout_mini"]
    with pytest.raises(ValueError, match="unknown mini dataset preset 'huge'"):
        paths.mini_root("huge")
