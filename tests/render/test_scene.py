"""Map-synthesised scenes rendered through the nuPlan rig: deterministic, and street-like where it should be."""

import json

import numpy as np
import pytest

from simscale_env.cli import main
from simscale_env.map import load_map
from simscale_env.render import BEVRenderer, CameraRenderer, camera_models, mosaic
from simscale_env.render.synth import StaticScene
from simscale_env.sim import SimConfig, Simulation



@pytest.fixture(scope="module")
def scene_ref(mini_builder):
    """A lane change in traffic (the first `changing_lane` scene): road ahead, vehicles around."""
    return mini_builder.refs(scenario_types=["changing_lane"])[0]


@pytest.fixture(scope="module")
def frame(mini, mini_builder, scene_ref):
    sc = mini_builder.load(scene_ref)
    sim = Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    r = CameraRenderer(sim.map, sc.cameras, ("CAM_F0", "CAM_B0"), 240, 112, backend="cpu")
    return sim, w, r, r.render(w.ego, sim.objects(w))


def test_rig_from_the_camera_table(mini_builder, scene_ref):
    sc = mini_builder.load(scene_ref)
    cams = camera_models(sc.cameras, ("CAM_L0", "CAM_F0", "CAM_R0"), 480, 224)
    f0 = cams[1]
    assert f0.K[0, 0] == pytest.approx(1545.0 / 4) and f0.K[0, 2] == pytest.approx(240.0)
    assert f0.K[1, 2] == pytest.approx(135.0 - 23.0)  # 1080 -> 270 rows, centre-cropped to 224
    # the front camera looks along +x of the ego: its optical axis (third column of R) is ~ (1, 0, 0)
    assert f0.cam_to_ego[:3, 2] @ np.array([1.0, 0, 0]) > 0.99
    with pytest.raises(ValueError, match="CAM_X9"):
        camera_models(sc.cameras, ("CAM_X9",))


def test_rendering_is_deterministic_and_street_like(frame):
    sim, w, r, out = frame
    assert out.rgb.shape == (2, 112, 240, 3) and out.rgb.dtype == np.uint8
    again = CameraRenderer(sim.map, sim.scenario.cameras, ("CAM_F0", "CAM_B0"), 240, 112, backend="cpu").render(
        w.ego, sim.objects(w))
    assert np.array_equal(out.rgb, again.rgb)
    img = out.rgb[0].astype(float)
    sky, road = img[:15, 60:180], img[-20:, 90:150]
    assert sky[..., 2].mean() > sky[..., 0].mean() + 20  # blue sky at the top
    assert abs(road[..., 0].mean() - road[..., 2].mean()) < 15 and 50 < road.mean() < 120  # grey asphalt below
    # depth: the road just ahead is near, the horizon far or empty
    assert 0 < np.median(out.depth[0, -10:, 100:140]) < 15
    assert 50000 < out.num_gaussians < 300000


def test_actors_appear_where_their_boxes_project(frame):
    sim, w, r, out = frame
    empty = r.render(w.ego, None)
    diff = np.abs(out.rgb.astype(int) - empty.rgb.astype(int)).sum(-1) > 30
    assert diff[0].mean() > 0.002 or diff[1].mean() > 0.002  # some vehicle in the front or back camera


def test_static_scene_chunks_are_deterministic_per_seed(frame):
    sim = frame[0]
    a, b, c = StaticScene(sim.map, 0), StaticScene(sim.map, 0), StaticScene(sim.map, 1)
    x, y = sim.reset().ego[:2]
    i, j = a.chunk_ids(x, y, 1.0)[0]
    ga, gb, gc = a.chunk(i, j)[0], b.chunk(i, j)[0], c.chunk(i, j)[0]
    assert np.array_equal(ga.means, gb.means) and np.array_equal(ga.sh, gb.sh)
    assert len(ga) != len(gc) or not np.array_equal(ga.means, gc.means)  # another seed, another scene


def test_bev_raster_and_picture(frame):
    sim, w, r, out = frame
    m = sim.map
    route = m.route_lane_ids([x for x in sim.scenario.route_roadblock_ids if x in m.roadblocks])
    bev = BEVRenderer(m, route)
    ras = bev.raster(w.ego, sim.objects(w))
    assert ras.shape == (256, 256, 5) and ras.dtype == np.uint8
    c = ras[192, 128]  # the ego's rear axle: on the road and on the route
    assert c[0] == 255 and c[2] == 255
    assert ras[..., 3].any()  # agents drawn
    pic = bev.rgb(w.ego, sim.objects(w))
    assert pic.shape == (256, 256, 3)
    mos = mosaic(out.rgb, pic)
    assert mos.shape == (112, 2 * 240 + 112, 3)


def test_render_cli_writes_images(mini, tmp_path, capsys):
    log = next(p for p in (mini / "nuplan-v1.1" / "splits" / "mini").glob("*.db"))
    from simscale_env.data.nuplan_db import LogDB
    from simscale_env.data.scenario import scenario_refs_in_log

    with LogDB(log) as db:
        tok = scenario_refs_in_log(db)[0].token
    assert main(["render", "--log", str(log), "--token", tok, "--out", str(tmp_path), "--channels", "CAM_F0",
                 "--width", "160", "--height", "96"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["cameras"] == ["CAM_F0"]
    for name in ("CAM_F0.png", "bev.png", "mosaic.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_sky_is_cached_across_headings(frame):
    """The sky depends on the rig's pitch and roll, not on the heading: one cache entry serves every yaw."""
    from simscale_env.render import view_matrices
    from simscale_env.render.synth import sky_background

    sim, w, r, _ = frame
    turned = w.ego.copy()
    turned[2] += 1.0
    v0, k0 = view_matrices(r.cameras, w.ego, 0.0, r.origin)
    v1, k1 = view_matrices(r.cameras, turned, 0.0, r.origin)
    r._sky_cache.clear()
    a = r._sky(v0, k0)
    assert r._sky(v1, k1) is a and len(r._sky_cache) == 1
    np.testing.assert_allclose(sky_background(k1, v1, r.width, r.height), a, atol=1e-6)


def _actor_gaussians_one_by_one(category, x, y, heading, length, width, height, tokens, origin, z0=0.0):
    """The per-object formulation `actor_gaussians` replaced (its kernel must give the same bits)."""
    import zlib

    from simscale_env.data.schema import GENERIC_OBJECT, VEHICLE
    from simscale_env.render.gaussians import Gaussians, rgb_to_sh_dc
    from simscale_env.render.synth import _TEMPLATES, PERSON_PALETTE, VEHICLE_PALETTE

    parts = []
    for k in range(len(category)):
        tpl = _TEMPLATES.get(int(category[k]), _TEMPLATES[GENERIC_OBJECT])
        dims = np.array([length[k], width[k], height[k]], np.float64)
        pts = tpl.pts * dims
        c, s = np.cos(heading[k]), np.sin(heading[k])
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        means = pts @ R.T + np.array([x[k] - origin[0], y[k] - origin[1], z0])
        scales = np.maximum(tpl.scale * np.clip(dims, 0.3, 20.0) * 0.5, 0.02)
        h = zlib.crc32(str(tokens[k]).encode())
        body = (VEHICLE_PALETTE if int(category[k]) in (VEHICLE, GENERIC_OBJECT) else PERSON_PALETTE)
        rgb = np.where((tpl.role == 0)[:, None], body[h % len(body)], tpl.fixed)
        rgb = np.where((tpl.role == 1)[:, None], np.array([0.12, 0.15, 0.2]), rgb)
        rgb = np.where((tpl.role == 2)[:, None], np.array([0.05, 0.05, 0.05]), rgb)
        q = np.tile(np.array([np.cos(heading[k] / 2), 0, 0, np.sin(heading[k] / 2)], np.float32), (len(pts), 1))
        parts.append(Gaussians.create(means, q, scales, np.full(len(pts), 0.97), rgb_to_sh_dc(rgb)[:, None, :]))
    return Gaussians.concat(parts)


def test_actor_gaussians_equal_posing_each_object_alone():
    from simscale_env.render.synth import actor_gaussians

    rng = np.random.default_rng(4)
    m = 60
    args = (rng.integers(0, 9, m).astype(np.int8),  # categories 7 and 8 have no template: the generic one
            rng.uniform(-300, 300, m) + 664_000.0, rng.uniform(-300, 300, m) + 3_996_000.0, rng.uniform(-4, 4, m),
            rng.uniform(0.2, 12, m), rng.uniform(0.1, 3, m), rng.uniform(0.3, 4, m),
            [f"{t:016x}" for t in rng.integers(0, 2 ** 60, m)])
    got = actor_gaussians(*args, origin=(664_000.0, 3_996_000.0), z0=0.4)
    want = _actor_gaussians_one_by_one(*args, origin=(664_000.0, 3_996_000.0), z0=0.4)
    for f in ("means", "quats", "scales", "opacities", "sh"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    assert len(actor_gaussians(*(a[:0] for a in args))) == 0
