"""The CPU rasterizer against a brute-force per-pixel reference (no tiles, every visible Gaussian in depth order,
gsplat's rules written out again), and projection / SH against gsplat's own torch reference."""

import math

import numpy as np
import pytest
from numba import njit

from simscale_env.render.raster import covariances, project, rasterize_cpu
from simscale_env.render.sh import eval_sh_colors, spherical_harmonics

F = np.float32


@njit(cache=True)
def _brute_force(m2d, conic, opac, colors, depth, order, width, height, bg):
    """Every pixel walks every visible Gaussian in (depth, index) order with gsplat's compositing rules."""
    H, W = height, width
    rgb = np.zeros((H, W, 3), np.float32)
    alpha = np.zeros((H, W), np.float32)
    dep = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            px = np.float32(x) + np.float32(0.5)
            py = np.float32(y) + np.float32(0.5)
            T = np.float32(1.0)
            acc0 = np.float32(0.0)
            acc1 = np.float32(0.0)
            acc2 = np.float32(0.0)
            accd = np.float32(0.0)
            for g in order:
                dx = m2d[g, 0] - px
                dy = m2d[g, 1] - py
                sigma = np.float32(0.5) * (conic[g, 0] * dx * dx + conic[g, 2] * dy * dy) + conic[g, 1] * dx * dy
                a = min(np.float32(0.999), opac[g] * math.exp(-sigma))
                if sigma < np.float32(0.0) or a < np.float32(1.0 / 255.0):
                    continue
                nT = T * (np.float32(1.0) - a)
                if nT <= np.float32(1e-4):
                    break
                v = a * T
                acc0 += colors[g, 0] * v
                acc1 += colors[g, 1] * v
                acc2 += colors[g, 2] * v
                accd += depth[g] * v
                T = nT
            rgb[y, x, 0] = acc0 + T * bg[0]
            rgb[y, x, 1] = acc1 + T * bg[1]
            rgb[y, x, 2] = acc2 + T * bg[2]
            alpha[y, x] = np.float32(1.0) - T
            dep[y, x] = accd / max(np.float32(1.0) - T, np.float32(1e-10))
    return rgb, alpha, dep


def _random_scene(rng, n, kind):
    means = np.stack([rng.uniform(-6, 6, n), rng.uniform(-4, 4, n), rng.uniform(0.5, 25, n)], -1)
    scales = np.exp(rng.uniform(np.log(0.01), np.log(0.8), (n, 3)))
    if kind == "mixed":
        k = n // 10
        scales[:k] = rng.uniform(1e-4, 1e-3, (k, 3))  # tiny
        scales[k:2 * k] = rng.uniform(3.0, 8.0, (k, 3))  # huge
        means[2 * k:3 * k, 2] = rng.uniform(0.011, 0.3, k)  # near the near plane
        scales[3 * k:4 * k] *= np.array([20.0, 0.05, 1.0])  # strongly anisotropic
    quats = rng.normal(size=(n, 4))
    opac = rng.uniform(0.02, 1.0, n)
    sh = rng.normal(0, 0.6, (n, 16, 3))
    return [a.astype(F) for a in (means, quats, scales, opac, sh)]


def _cameras(width, height):
    K = np.array([[0.6 * width, 0, width / 2 + 3.1], [0, 0.6 * width, height / 2 - 2.7], [0, 0, 1]], F)
    v0 = np.eye(4, dtype=F)
    a = 0.3
    v1 = np.array([[np.cos(a), 0, np.sin(a), 0.4], [0, 1, 0, -0.2], [-np.sin(a), 0, np.cos(a), 1.0], [0, 0, 0, 1]], F)
    return np.stack([v0, v1]), np.stack([K, K])


@pytest.mark.parametrize("kind,n", [("mixed", 3000), ("dense", 4000)])
@pytest.mark.parametrize("antialiased", [False, True])
def test_cpu_rasterizer_equals_brute_force_reference(kind, n, antialiased):
    rng = np.random.default_rng(7 if kind == "mixed" else 8)
    means, quats, scales, opac, sh = _random_scene(rng, n, kind)
    if kind == "dense":
        opac[:] = rng.uniform(0.6, 1.0, n).astype(F)  # saturating pixels: early termination matters
    W, H = 96, 64
    viewmats, Ks = _cameras(W, H)
    bg = np.array([0.2, 0.5, 0.8], F)
    cov6 = covariances(quats, scales)
    rgb, alpha, dep, meta = rasterize_cpu(means, cov6, opac, sh, viewmats, Ks, W, H, backgrounds=bg,
                                          antialiased=antialiased)
    for c in range(2):
        vis = np.nonzero(meta["radii"][c, :, 0] | meta["radii"][c, :, 1])[0]
        assert 0.2 * n < len(vis) < n
        order = vis[np.lexsort((vis, meta["depths"][c, vis]))].astype(np.int64)
        ref_rgb, ref_a, ref_d = _brute_force(meta["means2d"][c], meta["conics"][c], meta["opacities"][c],
                                             meta["colors"][c], meta["depths"][c], order, W, H, bg)
        assert np.abs(rgb[c] - ref_rgb).max() <= 1e-4
        assert np.abs(alpha[c] - ref_a).max() <= 1e-4
        assert np.abs(dep[c] - ref_d).max() <= 1e-3 * max(1.0, float(ref_d.max()))
        assert (ref_a > 0.5).mean() > 0.3  # the scene covers the image


def test_projection_matches_gsplat_torch_reference():
    torch = pytest.importorskip("torch")
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    rng = np.random.default_rng(3)
    means, quats, scales, opac, _ = _random_scene(rng, 2000, "mixed")
    W, H = 96, 64
    viewmats, Ks = _cameras(W, H)
    cov6 = covariances(quats, scales)
    radii, m2d, depth, conic, o = project(means, cov6, opac, viewmats[1], Ks[1], W, H, F(0.01), F(1e10), F(0.3),
                                          F(0.0), False)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    covars, _ = ti._quat_scale_to_covar_preci(t(quats), t(scales), compute_preci=False)
    r_t, m_t, d_t, c_t, _ = ti._fully_fused_projection(t(means), covars, t(viewmats[1:2]), t(Ks[1:2]), W, H,
                                                        eps2d=0.3, near_plane=0.01, far_plane=1e10)
    vis = (radii[:, 0] > 0) & (r_t[0, :, 0].numpy() > 0)
    assert vis.sum() > 500
    np.testing.assert_allclose(m2d[vis], m_t[0].numpy()[vis], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(depth[vis], d_t[0].numpy()[vis], rtol=1e-5)
    np.testing.assert_allclose(conic[vis], c_t[0].numpy()[vis], rtol=2e-3, atol=1e-6)
    # gsplat's torch reference uses a fixed 3.33-sigma box; the CUDA kernel (ours) an opacity-aware one, never larger
    assert np.all(radii[vis] <= r_t[0].numpy()[vis])


def test_spherical_harmonics_equal_gsplat_reference():
    torch = pytest.importorskip("torch")
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    rng = np.random.default_rng(4)
    coeffs = rng.normal(0, 1, (5000, 25, 3)).astype(F)
    dirs = rng.normal(0, 3, (5000, 3)).astype(F)
    for d in range(5):
        ours = spherical_harmonics(d, dirs, coeffs[:, :(d + 1) ** 2])
        ref = ti._spherical_harmonics(d, torch.from_numpy(dirs), torch.from_numpy(coeffs[:, :(d + 1) ** 2])).numpy()
        assert np.abs(ours - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    col = eval_sh_colors(coeffs[:, :16], dirs, 3)
    ref = np.maximum(ti._spherical_harmonics(3, torch.from_numpy(dirs), torch.from_numpy(coeffs[:, :16])).numpy()
                     + 0.5, 0)
    assert np.abs(col - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    with pytest.raises(ValueError, match="coefficients"):
        spherical_harmonics(3, dirs, coeffs[:, :9])


def test_render_path_colours_equal_gsplat_reference_per_camera():
    """`sh_colors_all` (what `rasterize_cpu` uses: view directions from each camera's centre, per-camera visible lists)
    against gsplat's torch reference, colour = max(0, SH + 0.5)."""
    torch = pytest.importorskip("torch")
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    from simscale_env.render.sh import sh_colors_all

    rng = np.random.default_rng(7)
    N = 3000
    means = rng.normal(0, 10, (N, 3)).astype(F)
    campos = np.array([[0, 0, 1.5], [5, -3, 2.0], [-20, 4, 0.5]], F)
    for d in (0, 1, 3):
        coeffs = rng.normal(0, 1, (N, (d + 1) ** 2, 3)).astype(F)
        vis = [np.sort(rng.choice(N, 1000, replace=False)) for _ in campos]
        ids = np.concatenate(vis).astype(np.int64)
        starts = np.array([0, 1000, 2000, 3000], np.int64)
        out = np.full((3, N, 3), -1.0, F)
        sh_colors_all(coeffs, means, campos, ids, starts, None, out)
        for c in range(3):
            dirs = torch.from_numpy(means[vis[c]] - campos[c])
            ref = np.maximum(ti._spherical_harmonics(d, dirs, torch.from_numpy(coeffs[vis[c]])).numpy() + 0.5, 0)
            assert np.abs(out[c, vis[c]] - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
            rest = np.setdiff1d(np.arange(N), vis[c])
            assert np.all(out[c, rest] == -1.0)  # only the camera's visible Gaussians are written


def _border_scene(rng, n, W, H, K):
    """Gaussians whose centres project outside the image, 0-60 px beyond a border, large and anisotropic: their
    boxes reach into the image or just miss it (the projection's early off-image bound must keep every one that
    reaches in)."""
    z = rng.uniform(0.5, 25, n)
    side = rng.integers(0, 4, n)
    off = rng.uniform(0, 60, n)
    u = np.where(side == 0, -off, np.where(side == 1, W + off, rng.uniform(0, W, n)))
    v = np.where(side == 2, -off, np.where(side == 3, H + off, rng.uniform(0, H, n)))
    means = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(3.0), (n, 3))) * rng.choice([1.0, 0.05], (n, 3))
    quats = rng.normal(size=(n, 4))
    opac = rng.uniform(0.02, 1.0, n)
    # half are opaque needles across the viewing ray along a Jacobian row (x: (1, 0, -x/z), y: (0, 1, -y/z)):
    # there the bound on the screen radius is tight
    k = n // 2
    needle_x = side[:k] < 2
    scales[:k] = np.where(needle_x[:, None], [1.0, 1e-3, 1e-3], [1e-3, 1.0, 1e-3]) * rng.uniform(0.1, 2.0, (k, 1))
    th = np.arctan(means[:k, 0] / z[:k])  # about y: the x axis turns to (cos th, 0, -sin th)
    ph = -np.arctan(means[:k, 1] / z[:k])  # about x: the y axis turns to (0, cos ph, sin ph)
    quats[:k] = np.where(needle_x[:, None], np.stack([np.cos(th / 2), 0 * th, np.sin(th / 2), 0 * th], -1),
                         np.stack([np.cos(ph / 2), np.sin(ph / 2), 0 * ph, 0 * ph], -1))
    opac[:k] = 0.999
    return [a.astype(F) for a in (means, quats, scales, opac)]


@pytest.mark.parametrize("kind", ["mixed", "border"])
def test_projection_culls_and_sizes_as_gsplats_cuda_kernel(kind):
    """Visibility and radii: the torch reference's projection with the CUDA kernel's opacity-aware extent
    (ProjectionEWA3DGSFused.cu: extend = min(3.33, sqrt(2 ln(o / (1/255)))), radius = ceil(extend sqrt(cov_ii)),
    culled below alpha 1/255, at radius 0 or off the image)."""
    torch = pytest.importorskip("torch")
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    rng = np.random.default_rng(5)
    W, H = 96, 64
    viewmats, Ks = _cameras(W, H)
    if kind == "mixed":
        means, quats, scales, opac, _ = _random_scene(rng, 3000, "mixed")
    else:
        viewmats[1] = np.eye(4, dtype=F)
        means, quats, scales, opac = _border_scene(rng, 3000, W, H, Ks[1])
    radii, m2d, depth, conic, o = project(means, covariances(quats, scales), opac, viewmats[1], Ks[1], W, H, F(0.01),
                                          F(1e10), F(0.3), F(0.0), False)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    covars, _ = ti._quat_scale_to_covar_preci(t(quats), t(scales), compute_preci=False)
    r_t, m_t, _, c_t, _ = ti._fully_fused_projection(t(means), covars, t(viewmats[1:2]), t(Ks[1:2]), W, H,
                                                      eps2d=0.3, near_plane=0.01, far_plane=1e10)
    ref_vis = r_t[0, :, 0].numpy() > 0
    a, b, c = (c_t[0].numpy()[:, k].astype(np.float64) for k in range(3))
    det = a * c - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_xx, cov_yy = c / det, a / det
        ext = np.minimum(3.33, np.sqrt(2.0 * np.log(opac.astype(np.float64) * 255.0)))
        rx, ry = np.ceil(ext * np.sqrt(cov_xx)), np.ceil(ext * np.sqrt(cov_yy))
    mx, my = m_t[0].numpy()[:, 0], m_t[0].numpy()[:, 1]
    want = (ref_vis & (opac >= 1 / 255) & ((rx > 0) | (ry > 0)) & (mx + rx > 0) & (mx - rx < W)
            & (my + ry > 0) & (my - ry < H))
    got = radii[:, 0] > 0
    assert want.sum() > 500 and want.sum() < ref_vis.sum()  # the opacity-aware extent does cull some
    # float32 rounding can move a radius across an integer (or a box across the border) in a handful of cases
    assert (got != want).sum() <= 3, ((got != want).sum(), want.sum(), ref_vis.sum())
    both = got & want
    assert np.mean((radii[both, 0] == rx[both]) & (radii[both, 1] == ry[both])) > 0.995


def test_depth_order_is_a_stable_sort():
    from simscale_env.render.raster import _depth_order

    rng = np.random.default_rng(9)
    d = rng.uniform(0.01, 500.0, 20000).astype(F)
    d[::3] = d[5]  # many ties: index order must be kept
    d[7] = np.float32(1e-30)
    d[8] = np.float32(3e38)
    np.testing.assert_array_equal(_depth_order(d), np.argsort(d, kind="stable"))
    assert len(_depth_order(np.zeros(0, F))) == 0
    # depths in [1, 2): the top 11-bit digit is the same for all (that pass is skipped); in [1, 1 + 2^-12): two are
    narrow = rng.uniform(1.0, 2.0, 5000).astype(F)
    narrow[::4] = narrow[3]
    tight = (1.0 + rng.integers(0, 2048, 5000) * 2.0 ** -23).astype(F)
    for x in (narrow, tight, d[::-1].copy()):
        np.testing.assert_array_equal(_depth_order(x), np.argsort(x, kind="stable"))


def test_vector_exp_is_within_one_ulp_of_exp():
    """The compositing kernel's exp(-sigma) (a polynomial, so that a tile row compiles to vector lanes) against
    float64 exp rounded to float32, over every sigma an alpha >= 1/255 can have and beyond."""
    from simscale_env.render.raster import exp_neg

    @njit
    def run(s):
        out = np.empty_like(s)
        for i in range(len(s)):
            out[i] = exp_neg(s[i])
        return out

    s = np.concatenate([np.linspace(0, 20, 400_001), np.float32(np.log(2.0)) * np.arange(29)]).astype(F)
    ref = np.exp(-s.astype(np.float64))
    ulp = np.abs(run(s) - ref) / np.spacing(ref.astype(F))
    assert ulp.max() <= 1.0
    # beyond the range only "alpha < 1/255" matters; negative sigma (skipped by the kernel) gives 1
    far = run(np.array([20.0, 25.0, 1e3, np.inf, -1.0], F))
    assert (far[:4] < 1 / 255 / 1e6).all() and far[4] == 1.0
