"""PSNR, and gsplat against the CPU rasterizer where CUDA is present (issue 6: >= 40 dB on a mini-dataset frame)."""

import numpy as np
import pytest

from simscale_env.render import compare_backends, gsplat_available, psnr


def test_psnr_known_values():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 255^2 / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))
    assert psnr(np.zeros(3), np.full(3, 0.1), peak=1.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:2])


@pytest.mark.skipif(gsplat_available(), reason="checks the CPU-only error")
def test_compare_backends_says_what_is_missing_without_cuda():
    with pytest.raises(RuntimeError, match="CUDA"):
        compare_backends(None, (), np.zeros(11), None)


@pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat")
def test_gsplat_and_cpu_rasterizer_agree_on_a_mini_frame(mini_builder, mini):
    from simscale_env.map import load_map
    from simscale_env.sim import SimConfig, Simulation

    ref = mini_builder.refs()[0]
    sc = mini_builder.load(ref.token)
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    r = compare_backends(m, sc.cameras, w.ego, sim.objects(w), ("CAM_F0", "CAM_B0", "CAM_L0", "CAM_R0"), 480, 224)
    assert min(r["psnr_db"].values()) >= 40.0, r["psnr_db"]
