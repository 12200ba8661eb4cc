"""Hostile and malformed split YAMLs (issue 14): alias bombs, oversized and empty files, wrong field types, random
byte corruption, and split tokens that are not in the logs (reported at construction, not at the first reset)."""

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscale_env.data import LogDB
from simscale_env.data.openscene import SplitSpec, load_split, write_split
from simscale_env.errors import CorruptFileError, SchemaError, SimScaleError, UnknownTokenError

HEADER = ("_target_: navsim.common.dataclasses.SceneFilter\n_convert_: all\nnum_history_frames: 4\n"
          "num_future_frames: 10\nframe_interval: 1\nhas_route: true\nmax_scenes: null\n")


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_billion_laughs_is_refused_at_once(tmp_path):
    """Nine levels of nine aliases: 9**9 strings once expanded (the old loader spent minutes and gigabytes)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    p = _write(tmp_path, "\n".join(lines + ["tokens: *a9", "log_names: null"]) + "\n", "bomb.yaml")
    t0 = time.perf_counter()
    with pytest.raises(CorruptFileError, match=r"bomb\.yaml: line 1: YAML anchor 'a0' refused"):
        load_split(p)
    assert time.perf_counter() - t0 < 1.0


def test_an_alias_names_its_line(tmp_path):
    p = _write(tmp_path, HEADER + "log_names: null\ntokens:\n- '00000000000000aa'\nextra: *nowhere\n")
    with pytest.raises(CorruptFileError, match=r"s\.yaml: line 11: YAML alias 'nowhere' refused"):
        load_split(p)


def test_an_oversized_file_is_refused_unread(tmp_path):
    p = tmp_path / "huge.yaml"
    with open(p, "wb") as fh:  # sparse: 65 MB on paper, nothing on disk
        fh.truncate(65 * 2**20)
    t0 = time.perf_counter()
    with pytest.raises(CorruptFileError, match=r"huge\.yaml: 65\.0 MB is too large for a split YAML \(at most 64 MB\)"):
        load_split(p)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("text, match", [
    ("", "the split file is empty; expected a NAVSIM scene_filter YAML"),
    ("# only a comment\n", "the split file is empty"),
    ("{}\n", r"the split has neither `tokens:` nor `log_names:` \(keys: \[\]\)"),
    (HEADER, "the split has neither `tokens:` nor `log_names:`"),
    ("- a\n- b\n", "found a YAML list; expected a NAVSIM scene_filter YAML"),
    ("just a string\n", "found a YAML str"),
])
def test_an_empty_split_selects_nothing_silently(tmp_path, text, match):
    with pytest.raises(SchemaError, match=r"s\.yaml: " + match):
        load_split(_write(tmp_path, text))


def test_explicit_nulls_select_everything_as_in_navsim(tmp_path):
    """NAVSIM's scene_filter/all_scenes.yaml: log_names and tokens null = every scene of every log."""
    s = load_split(_write(tmp_path, HEADER.replace("frame_interval: 1", "frame_interval: null")
                          + "log_names: null # every log\ntokens: null # every token\n", "all_scenes.yaml"))
    assert s == SplitSpec("all_scenes", 4, 10, None, True, None, None, None)
    s = load_split(_write(tmp_path, "log_names: [a, b]\ntokens: null\n"))
    assert s.log_names == ("a", "b") and s.tokens is None


def test_navsim_extras_and_quoted_keys_load(tmp_path):
    """navhard_two_stage.yaml quotes keys and tokens and carries synthetic-scene fields we do not read."""
    text = (HEADER.replace("num_future_frames: 10", "num_future_frames: 8") + "include_synthetic_scenes: true\n"
            "log_names:\n- '2021.05.25.14.16.10_veh-35_01100_01664'\ntokens:\n- '00016f8b45c25a1d'\n"
            "'reactive_synthetic_initial_tokens':\n- '0005b7348b80106e2'\n")
    s = load_split(_write(tmp_path, text))
    assert s.num_future_frames == 8 and s.tokens == ("00016f8b45c25a1d",)


@pytest.mark.parametrize("field, value, match", [
    ("num_history_frames", "four", r"field 'num_history_frames' is 'four' \(str\); expected an integer >= 1"),
    ("num_history_frames", "0", r"field 'num_history_frames' is 0; expected an integer >= 1"),
    ("num_future_frames", "-1", r"field 'num_future_frames' is -1"),
    ("num_future_frames", "true", r"field 'num_future_frames' is True \(bool\)"),
    ("frame_interval", "1.5", r"field 'frame_interval' is 1.5 \(float\); expected an integer >= 1 or null"),
    ("max_scenes", "[3]", r"field 'max_scenes' is \[3\] \(list\)"),
    ("has_route", '"yes"', r"field 'has_route' is 'yes' \(str\); expected true or false"),
    ("has_route", "1", r"field 'has_route' is 1 \(int\); expected true or false"),
    ("tokens", '"8fdc86b11dbe9efc"', r"field 'tokens' is a str \('8fdc86b11dbe9efc'\); expected a list of scene"),
    ("tokens", "[8fdc86b11dbe9efc, 1234567890123456]",
     r"field 'tokens' entry 1 is 1234567890123456 \(int\); expected a non-empty string.*quote it"),
    ("tokens", "[{a: 1}]", r"field 'tokens' entry 0 is \{'a': 1\} \(dict\)"),
    ("tokens", "{a: 1}", r"field 'tokens' is a dict"),
    ("log_names", "5", r"field 'log_names' is a int \('5'\); expected a list of log names or null"),
    ("log_names", "[null]", r"field 'log_names' entry 0 is None \(NoneType\)"),
])
def test_a_field_of_the_wrong_type_is_named(tmp_path, field, value, match):
    fields = {"num_history_frames": "4", "num_future_frames": "10", "frame_interval": "1", "has_route": "true",
              "max_scenes": "null", "log_names": "null", "tokens": "['8fdc86b11dbe9efc']"}
    fields[field] = value
    p = _write(tmp_path, "".join(f"{k}: {v}\n" for k, v in fields.items()))
    with pytest.raises(SchemaError, match=r"s\.yaml: " + match):
        load_split(p)


@pytest.mark.parametrize("raw, match", [
    (b"tokens: [\xff\xfe\xfa]\n", "not valid YAML"),  # not UTF-8
    (b"tokens: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    (b"tokens: [a\nlog_names: b]: c\n", "not valid YAML"),
    (b"tokens: 2021-13-45\n", r"not valid YAML \(ValueError"),  # a timestamp the safe constructor cannot build
    (b"tokens: [" + b"9" * 5000 + b"]\n", r"not valid YAML \(ValueError"),  # beyond int's digit limit
    (b"---\ntokens: []\n---\ntokens: []\n", "not valid YAML"),
])
def test_unreadable_yaml_is_a_corrupt_file(tmp_path, raw, match):
    with pytest.raises(CorruptFileError, match=r"s\.yaml: " + match):
        load_split(_write(tmp_path, raw))


@pytest.mark.parametrize("defaults, match", [
    ("5", "defaults names no scene_filter"),
    ("[{scene_filter: 5}]", r"defaults: scene_filter is 5; expected the name of a YAML"),
])
def test_bad_train_test_split_defaults(tmp_path, defaults, match):
    with pytest.raises(SchemaError, match=match):
        load_split(_write(tmp_path, f"defaults: {defaults}\ndata_split: test\n"))


def test_train_test_split_defaults_still_resolve(tmp_path):
    write_split(tmp_path / "scene_filter" / "mine.yaml", log_names=["a"], tokens=["00000000000000aa"])
    p = _write(tmp_path, "defaults:\n  - scene_filter: mine\ndata_split: test\n", "split.yaml")
    assert load_split(p).tokens == ("00000000000000aa",)


# ------------------------------------------------------------------------------------------ random corruption
@pytest.fixture(scope="module")
def split_bytes(mini) -> bytes:
    return (mini / "splits" / "mini-navtrain.yaml").read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_split")


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_raises_only_simscale_errors(split_bytes, scratch, data):
    raw = bytearray(split_bytes)
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1,
                                        max_size=6)):
        raw[pos] = byte
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    p = scratch / "corrupt.yaml"
    p.write_bytes(bytes(raw[:cut]))
    try:
        s = load_split(p)
    except SimScaleError:
        return
    # what loads is well typed
    assert isinstance(s.num_history_frames, int) and s.num_history_frames >= 1
    assert isinstance(s.has_route, bool)
    assert all(isinstance(t, str) for t in s.tokens or ()) and all(isinstance(n, str) for n in s.log_names or ())


# ------------------------------------------------------------------------------------------ tokens at construction
def _env(split_file, **kw):
    from simscale_env.envs.simscale_env import SimScaleEnv

    return SimScaleEnv(split_file=str(split_file), pseudo_experts=False, plan_scoring=None,
                       observation_keys=("ego_status",), **kw)


def test_tokens_missing_from_the_logs_fail_at_construction(tmp_path, mini):
    real = load_split(mini / "splits" / "mini-navtest.yaml")
    bad = ["deadbeefdeadbeef", "not-a-hex-token", real.tokens[0].upper()]
    p = write_split(tmp_path / "mine.yaml", log_names=real.log_names, tokens=list(real.tokens) + bad)
    n = len(real.tokens) + 3
    with pytest.raises(UnknownTokenError, match=rf"mine\.yaml: 3 of the split's {n} tokens are not lidar_pc tokens "
                                                rf"of its {len(real.log_names)} nuplan logs under .*: deadbeefdeadbeef, "
                                                rf"not-a-hex-token, {real.tokens[0].upper()}$"):
        _env(p)


def test_absent_logs_are_named(tmp_path, mini):
    p = write_split(tmp_path / "gone.yaml", log_names=["2099.01.01.00.00.00_veh-00_00000_00001"],
                    tokens=["deadbeefdeadbeef"])
    with pytest.raises(UnknownTokenError, match=r"gone\.yaml: 1 of the split's 1 tokens .* \(1 of its log_names are "
                                                r"not in the data, e.g. 2099\.01\.01"):
        _env(p)


def test_any_frame_of_the_logs_is_a_navsim_token_but_not_a_nuplan_scenario(tmp_path, mini, mini_builder):
    """A NAVSIM token may be any 2 Hz frame (`_scenario`); the nuPlan window needs a tagged scenario."""
    real = load_split(mini / "splits" / "mini-navtest.yaml")
    tagged = {r.token for r in mini_builder.all_refs()}
    log = real.log_names[0]
    with LogDB(mini / "nuplan-v1.1" / "splits" / "mini" / f"{log}.db") as db:
        untagged = next(t for t in db.lidar_pc_tokens[400::10] if t not in tagged)
    p = write_split(tmp_path / "frames.yaml", log_names=real.log_names, tokens=[real.tokens[0], untagged])
    env = _env(p)
    assert env.tokens == [real.tokens[0], untagged]
    with pytest.raises(UnknownTokenError, match=rf"1 of the split's 2 tokens are not tagged scenarios .*: {untagged}$"):
        _env(p, scene_window="nuplan")


def test_the_mini_splits_construct(mini):
    for name in ("mini-navtrain", "mini-navtest", "mini-navhard"):
        env = _env(mini / "splits" / f"{name}.yaml")
        assert env.tokens == list(load_split(mini / "splits" / f"{name}.yaml").tokens)
