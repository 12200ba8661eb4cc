"""Logged camera images (OpenScene sensor_blobs) as observations: framed exactly like the rendered cameras (issue 15,
deliverable 3), and the env's `camera_source=`.

The mini dataset's blobs of the test splits are rendered by its builder (`data/mini/blobs.py`, 480x270 JPEGs) from
the logged state, so the logged image of a test-split frame and the env's rendered image of the same frame differ by
the JPEG's loss only (measured: 39.8-46.5 dB PSNR over the 20 mini-navtest tokens and four cameras), while a crop one
row off costs far more.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simscale_env.data.openscene import load_log
from simscale_env.errors import CorruptFileError, MissingFileError
from simscale_env.render import camera_models, psnr
from simscale_env.render.camera import fit_intrinsics, fit_to_width
from simscale_env.render.logged import LoggedCameras, fit_image, load_logged_image

CAMS = ("CAM_L0", "CAM_F0", "CAM_R0")
PSNR_MIN_DB = 38.0  # the JPEG's loss (quality 90) on a blob rendered from the same state: >= 39.8 dB measured


def _jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality)
    return path


def _gradient(w: int, h: int) -> np.ndarray:
    """Rows from 0 to 200 (value = 200 * full-resolution row centre / height), the same in every column."""
    v = (np.arange(h) + 0.5) / h * 200.0
    return np.repeat(np.repeat(v[:, None, None], w, 1), 3, 2).round().astype(np.uint8)


# ------------------------------------------------------------------ framing, without the dataset
def test_the_render_and_the_logged_path_share_the_framing():
    """1920x1080 -> 480x224: scale 1/4 and 23 rows of the 480x270 image cut at the top; the intrinsics move with it."""
    assert fit_to_width(1920, 1080, 480, 224) == (0.25, 23.0)
    assert fit_to_width(1920, 1080, 480, 300) == (0.25, -15.0)  # padded
    K = np.array([[1545.0, 0, 960], [0, 1545, 540], [0, 0, 1]])
    np.testing.assert_array_equal(fit_intrinsics(K, 1920, 1080, 480, 224),
                                  [[386.25, 0, 240], [0, 386.25, 135 - 23], [0, 0, 1]])


def test_a_logged_jpeg_is_scaled_and_centre_cropped(tmp_path):
    """Known answer: a vertical gradient at 1920x1080 framed to 480x224 shows, in row v, the full image's row
    4 (v + 23) + 2 (the centre of the 4 rows it averages); the same sensor image downscaled to 960x540 gives the same
    observation; 480x300 pads 15 black rows at the top and the bottom."""
    full = _jpeg(tmp_path / "full.jpg", _gradient(1920, 1080))
    half = _jpeg(tmp_path / "half.jpg", _gradient(960, 540))
    out = load_logged_image(full, 1920, 1080, 480, 224)
    assert out.shape == (224, 480, 3) and out.dtype == np.uint8
    want = (4 * (np.arange(224) + 23) + 2) / 1080 * 200
    assert np.abs(out[:, :, 0].astype(float) - want[:, None]).max() < 1.5
    assert np.abs(out.astype(int) - load_logged_image(half, 1920, 1080, 480, 224)).max() <= 2
    padded = load_logged_image(full, 1920, 1080, 480, 300)
    assert not padded[:15].any() and not padded[-15:].any()
    assert np.abs(padded[15:285, :, 0].astype(float) - (4 * np.arange(270) + 2)[:, None] / 1080 * 200).max() < 1.5
    # a 480x270 blob framed to 480x224 is the plain crop of its rows 23-246
    blob = np.random.default_rng(0).integers(0, 256, (270, 480, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_image(blob, 1920, 1080, 480, 224), blob[23:247])


def test_unreadable_or_foreign_blobs_are_corrupt_files(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", _gradient(480, 270))
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    Image.fromarray(_gradient(480, 270)).save(tmp_path / "png.jpg", format="PNG")
    _jpeg(tmp_path / "square.jpg", _gradient(300, 300))
    for name, match in (("cut", "not a readable JPEG"), ("junk", "not a readable JPEG"), ("png", "is a PNG"),
                        ("square", "300x300 image is not a 1920x1080 camera's image")):
        with pytest.raises(CorruptFileError, match=rf"{name}\.jpg: .*{match}"):
            load_logged_image(tmp_path / f"{name}.jpg", 1920, 1080, 480, 224)


# ------------------------------------------------------------------ the mini dataset's blobs through the env
@pytest.fixture(scope="module")
def envs(mini):
    """A rendering env and an `auto` env on mini-navtest (CPU rasterizer; no experts or plan scoring: cameras only)."""
    from simscale_env.envs.simscale_env import SimScaleEnv

    kw = dict(data_root=str(mini), pseudo_experts=False, plan_scoring=None, valid_start=False,
              render_backend="cpu", cameras=CAMS)
    return {src: SimScaleEnv("navtest", camera_source=src, **kw) for src in ("render", "auto")}


def _frame(env, mini, token):
    frames = load_log(mini / "navsim_logs" / "mini" / f"{env.sim.scenario.log_name}.pkl")
    return next(f for f in frames if f["token"] == token)


def test_logged_and_rendered_frames_have_the_same_size_intrinsics_and_crop(envs, mini):
    """The acceptance point: at a test-split token's logged start, the logged image (the builder's blob) and the
    env's rendered image have the same shape and intrinsics, and nearly the same pixels (JPEG loss only); shifting
    the logged image by a row, i.e. a crop off by one, is far worse."""
    env = envs["render"]
    token = env.tokens[0]
    obs, _ = env.reset(options={"scenario_token": token, "perturbation": None})
    sc = env.sim.scenario
    blobs = LoggedCameras(mini / "sensor_blobs" / "mini")
    frame = _frame(env, mini, token)
    logged = blobs.images(frame, CAMS, 480, 224, calibrations=sc.cameras)
    assert logged is not None, f"no sensor blobs for {token} in {mini} (built by an older builder?)"
    assert logged.shape == obs["cameras"].shape == (3, 224, 480, 3) and logged.dtype == obs["cameras"].dtype
    K_render = np.stack([c.K for c in env._renderer().cameras])
    np.testing.assert_array_equal(blobs.intrinsics(frame, CAMS, 480, 224, calibrations=sc.cameras), K_render)
    np.testing.assert_array_equal(K_render, np.stack([c.K for c in camera_models(sc.cameras, CAMS, 480, 224)]))
    full = np.asarray(Image.open(blobs.paths(frame, CAMS)[1]))
    assert full.shape == (270, 480, 3)  # the blob: nuPlan's 1920x1080 at a quarter, the same aspect
    for k in range(len(CAMS)):
        same = psnr(logged[k], obs["cameras"][k])
        shifted = psnr(np.roll(logged[k], 1, axis=0)[1:], obs["cameras"][k][1:])
        assert same >= PSNR_MIN_DB and shifted < same - 5.0, (CAMS[k], same, shifted)


def test_auto_uses_the_blobs_at_a_logged_start_and_renders_elsewhere(envs, mini):
    token = envs["auto"].tokens[1]
    logged_start = {"scenario_token": token, "perturbation": None}
    obs, _ = envs["auto"].reset(options=logged_start)
    frame = _frame(envs["auto"], mini, token)
    want = LoggedCameras(mini / "sensor_blobs" / "mini").images(frame, CAMS, 480, 224,
                                                                 calibrations=envs["auto"].sim.scenario.cameras)
    np.testing.assert_array_equal(obs["cameras"], want)
    rendered, _ = envs["render"].reset(options=logged_start)
    assert not np.array_equal(rendered["cameras"], want)
    perturbed = {"scenario_token": token, "perturbation": {"lateral": 0.3, "heading": 0.03}}
    a, info = envs["auto"].reset(options=perturbed)
    b, _ = envs["render"].reset(options=perturbed)
    assert info["perturbed"]
    np.testing.assert_array_equal(a["cameras"], b["cameras"])  # a perturbed start has no logged image: rendered


def _openscene_copy(mini: Path, tmp: Path) -> Path:
    """An OpenScene root with the mini dataset's navsim_logs (linked) and an empty sensor_blobs/mini."""
    (tmp / "sensor_blobs" / "mini").mkdir(parents=True)
    (tmp / "navsim_logs").symlink_to(mini / "navsim_logs")
    return tmp


def test_missing_and_corrupt_blobs(mini, tmp_path):
    """"log" names the missing blob at a logged start (and renders a perturbed start); "auto" renders there; a corrupt
    blob raises CorruptFileError naming it in both."""
    from simscale_env.envs.simscale_env import SimScaleEnv

    root = _openscene_copy(mini, tmp_path)
    kw = dict(data_root=str(mini), pseudo_experts=False, plan_scoring=None, valid_start=False, render_backend="cpu",
              cameras=CAMS, width=64, height=32)
    env = {src: SimScaleEnv("navtest", camera_source=src, **kw) for src in ("log", "auto", "render")}
    for e in env.values():
        e._data = replace(e._data, openscene_root=root)
    token = env["log"].tokens[0]
    start = {"scenario_token": token, "perturbation": None}
    env["log"].reset(options={"scenario_token": token, "perturbation": {"lateral": 0.3}})
    with pytest.raises(MissingFileError, match=r"CAM_L0/[0-9a-f]+\.jpg: logged camera image not found"):
        env["log"].reset(options=start)
    np.testing.assert_array_equal(env["auto"].reset(options=start)[0]["cameras"],
                                  env["render"].reset(options=start)[0]["cameras"])
    paths = LoggedCameras(root / "sensor_blobs" / "mini").paths(_frame(env["log"], mini, token), CAMS)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mini / "sensor_blobs" / "mini" / p.relative_to(root / "sensor_blobs" / "mini"), p)
    assert env["log"].reset(options=start)[0]["cameras"].shape == (3, 32, 64, 3)
    buf = io.BytesIO(paths[1].read_bytes())
    paths[1].write_bytes(buf.getvalue()[:200])
    for src in ("log", "auto"):
        with pytest.raises(CorruptFileError, match=rf"{paths[1].name}: not a readable JPEG"):
            env[src].reset(options=start)


def test_camera_source_is_validated():
    from simscale_env.envs.simscale_env import EnvConfig

    with pytest.raises(ValueError, match="camera_source must be 'render', 'log' or 'auto'"):
        EnvConfig(camera_source="logged")


def test_the_builder_rewrites_the_same_blobs_and_keeps_existing_ones(mini, tmp_path):
    """The mini builder's blob pass is deterministic (a token's current frame rendered again gives the dataset's
    bytes) and resumable (blobs already there are kept: a second pass writes nothing)."""
    from simscale_env.data.mini.blobs import write_sensor_blobs
    from simscale_env.data.openscene import load_split

    out = tmp_path / "mini"
    out.mkdir()
    for sub in ("maps", "nuplan-v1.1", "navsim_logs"):
        (out / sub).symlink_to(mini / sub)
    split = load_split(mini / "splits" / "mini-navhard.yaml")
    token = split.tokens[0]
    frames = next(fr for fr in (load_log(p) for p in sorted((mini / "navsim_logs" / "mini").glob("*.pkl")))
                  if any(f["token"] == token for f in fr))
    k = next(i for i, f in enumerate(frames) if f["token"] == token)
    rel = lambda f: [c["data_path"] for c in f["cams"].values()]  # noqa: E731
    history = frames[max(0, k - 3):k]
    for f in history:  # the history frames' blobs are there already: only the current frame is rendered
        for r in rel(f):
            (out / "sensor_blobs" / "mini" / r).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mini / "sensor_blobs" / "mini" / r, out / "sensor_blobs" / "mini" / r)
    done = write_sensor_blobs(out, [token])
    assert (done["frames"], done["images"], done["written"]) == (len(history) + 1, 8 * (len(history) + 1), 8)
    for r in rel(frames[k]):
        assert (out / "sensor_blobs" / "mini" / r).read_bytes() == (mini / "sensor_blobs" / "mini" / r).read_bytes()
    assert write_sensor_blobs(out, [token])["written"] == 0
    assert not [p for p in (out / "sensor_blobs").rglob(".*")]  # no temporaries left
