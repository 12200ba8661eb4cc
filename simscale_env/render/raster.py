"""CPU rasterizer with gsplat's forward rules (gsplat 1.5.3 CUDA kernels, in numba, float32 like the kernels).

- projection (ProjectionEWA3DGSFused.cu): world-to-camera, cull the centre depth outside [near, far]; 2D covariance
  with the Jacobian on the frustum-clamped mean (0.3 tan_fov beyond the image); eps2d added to the diagonal
  (optionally Mip-Splatting's compensation, "antialiased"); cull det <= 0 and opacity < 1/255; opacity-aware extent
  min(3.33, sqrt(2 ln(255 o))); radius = ceil(extent sqrt(cov_ii)); cull radius <= radius_clip and boxes off-image;
- colours (SphericalHarmonicsCUDA.cu, rendering.py): SH at the direction camera centre -> mean, + 0.5, clamped at 0;
- tiles (IntersectTile.cu): 16 x 16, box floor/ceil in tile units; each tile's Gaussians by depth, ties by index;
- compositing (RasterizeToPixels3DGSFwd.cu): pixel centres at +0.5, sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,
  alpha = min(0.999, o exp(-sigma)), skip sigma < 0 or alpha < 1/255, stop before the Gaussian that would bring
  T (1 - alpha) to <= 1e-4 (exclusive); colour + T * background; expected depth = sum(w z) / (1 - T).

The tile pass is Gaussian-major: each tile walks its depth-sorted Gaussians once, touching only the pixels inside
each Gaussian's own box (outside it alpha < 1/255 by construction of the extent), with an early exit when every pixel
of the tile is saturated. Tiles run in parallel (numba prange).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .sh import eval_sh_colors

TILE = 16
ALPHA_THRESHOLD = np.float32(1.0 / 255.0)
T_MIN = np.float32(1e-4)
F32 = np.float32


@njit(cache=True, parallel=True)
def covariances(quats, scales):
    """[N, 6] (xx, xy, xz, yy, yz, zz) of R S S^T R^T from quaternions (w, x, y, z; normalised here) and scales."""
    n = len(quats)
    out = np.empty((n, 6), dtype=np.float32)
    for i in prange(n):
        w, x, y, z = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        inv = F32(1.0) / math.sqrt(w * w + x * x + y * y + z * z)
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
        r00 = F32(1.0) - F32(2.0) * (y * y + z * z)
        r01 = F32(2.0) * (x * y - w * z)
        r02 = F32(2.0) * (x * z + w * y)
        r10 = F32(2.0) * (x * y + w * z)
        r11 = F32(1.0) - F32(2.0) * (x * x + z * z)
        r12 = F32(2.0) * (y * z - w * x)
        r20 = F32(2.0) * (x * z - w * y)
        r21 = F32(2.0) * (y * z + w * x)
        r22 = F32(1.0) - F32(2.0) * (x * x + y * y)
        sx, sy, sz = scales[i, 0], scales[i, 1], scales[i, 2]
        m00, m01, m02 = r00 * sx, r01 * sy, r02 * sz
        m10, m11, m12 = r10 * sx, r11 * sy, r12 * sz
        m20, m21, m22 = r20 * sx, r21 * sy, r22 * sz
        out[i, 0] = m00 * m00 + m01 * m01 + m02 * m02
        out[i, 1] = m00 * m10 + m01 * m11 + m02 * m12
        out[i, 2] = m00 * m20 + m01 * m21 + m02 * m22
        out[i, 3] = m10 * m10 + m11 * m11 + m12 * m12
        out[i, 4] = m10 * m20 + m11 * m21 + m12 * m22
        out[i, 5] = m20 * m20 + m21 * m21 + m22 * m22
    return out


@njit(cache=True, parallel=True)
def project(means, cov6, opacities, viewmat, K, width, height, near, far, eps2d, radius_clip, antialiased):
    """One camera: radii [N, 2] (0 = culled), means2d [N, 2], depths [N], conics [N, 3], opacities [N] (with the
    antialiasing compensation applied)."""
    n = len(means)
    radii = np.zeros((n, 2), dtype=np.int32)
    m2d = np.zeros((n, 2), dtype=np.float32)
    depth = np.zeros(n, dtype=np.float32)
    conic = np.zeros((n, 3), dtype=np.float32)
    opac = np.zeros(n, dtype=np.float32)
    R = viewmat[:3, :3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    wf = F32(width)
    hf = F32(height)
    tan_fovx = F32(0.5) * wf / fx
    tan_fovy = F32(0.5) * hf / fy
    lim_x_pos = (wf - cx) / fx + F32(0.3) * tan_fovx
    lim_x_neg = cx / fx + F32(0.3) * tan_fovx
    lim_y_pos = (hf - cy) / fy + F32(0.3) * tan_fovy
    lim_y_neg = cy / fy + F32(0.3) * tan_fovy
    for i in prange(n):
        px, py, pz = means[i, 0], means[i, 1], means[i, 2]
        x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + viewmat[0, 3]
        y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + viewmat[1, 3]
        z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + viewmat[2, 3]
        if z < near or z > far:
            continue
        c = cov6[i]
        # covar_c = R Sigma R^T
        s00, s01, s02, s11, s12, s22 = c[0], c[1], c[2], c[3], c[4], c[5]
        a0 = R[0, 0] * s00 + R[0, 1] * s01 + R[0, 2] * s02
        a1 = R[0, 0] * s01 + R[0, 1] * s11 + R[0, 2] * s12
        a2 = R[0, 0] * s02 + R[0, 1] * s12 + R[0, 2] * s22
        b0 = R[1, 0] * s00 + R[1, 1] * s01 + R[1, 2] * s02
        b1 = R[1, 0] * s01 + R[1, 1] * s11 + R[1, 2] * s12
        b2 = R[1, 0] * s02 + R[1, 1] * s12 + R[1, 2] * s22
        d0 = R[2, 0] * s00 + R[2, 1] * s01 + R[2, 2] * s02
        d1 = R[2, 0] * s01 + R[2, 1] * s11 + R[2, 2] * s12
        d2 = R[2, 0] * s02 + R[2, 1] * s12 + R[2, 2] * s22
        c00 = a0 * R[0, 0] + a1 * R[0, 1] + a2 * R[0, 2]
        c01 = a0 * R[1, 0] + a1 * R[1, 1] + a2 * R[1, 2]
        c02 = a0 * R[2, 0] + a1 * R[2, 1] + a2 * R[2, 2]
        c11 = b0 * R[1, 0] + b1 * R[1, 1] + b2 * R[1, 2]
        c12 = b0 * R[2, 0] + b1 * R[2, 1] + b2 * R[2, 2]
        c22 = d0 * R[2, 0] + d1 * R[2, 1] + d2 * R[2, 2]
        rz = F32(1.0) / z
        rz2 = rz * rz
        tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
        ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
        j00 = fx * rz
        j02 = -fx * tx * rz2
        j11 = fy * rz
        j12 = -fy * ty * rz2
        # cov2d = J C J^T with J = [[j00, 0, j02], [0, j11, j12]]
        v00 = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22)
        v01 = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22)
        v11 = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22)
        mx = fx * x * rz + cx
        my = fy * y * rz + cy
        det_orig = v00 * v11 - v01 * v01
        v00 += eps2d
        v11 += eps2d
        det = v00 * v11 - v01 * v01
        if det <= F32(0.0):
            continue
        comp = math.sqrt(max(F32(0.0), det_orig / det))
        o = opacities[i]
        if antialiased:
            o = o * comp
        if o < ALPHA_THRESHOLD:
            continue
        extend = min(F32(3.33), math.sqrt(F32(2.0) * math.log(o / ALPHA_THRESHOLD)))
        rx = math.ceil(extend * math.sqrt(v00))
        ry = math.ceil(extend * math.sqrt(v11))
        if rx <= radius_clip and ry <= radius_clip:
            continue
        if mx + rx <= 0 or mx - rx >= wf or my + ry <= 0 or my - ry >= hf:
            continue
        radii[i, 0] = np.int32(rx)
        radii[i, 1] = np.int32(ry)
        m2d[i, 0] = mx
        m2d[i, 1] = my
        depth[i] = z
        inv = F32(1.0) / det
        conic[i, 0] = v11 * inv
        conic[i, 1] = -v01 * inv
        conic[i, 2] = v00 * inv
        opac[i] = o
    return radii, m2d, depth, conic, opac


@njit(cache=True)
def bin_tiles(radii, m2d, depth, width, height):
    """Tile lists of one camera: (offsets [n_tiles + 1], ids) with each tile's Gaussians ordered by depth, then index."""
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    nt = tw * th
    n = len(radii)
    counts = np.zeros(nt + 1, dtype=np.int64)
    bounds = np.zeros((n, 4), dtype=np.int32)
    for i in range(n):
        if radii[i, 0] == 0 and radii[i, 1] == 0:
            continue
        tx = m2d[i, 0] / F32(TILE)
        ty = m2d[i, 1] / F32(TILE)
        rx = F32(radii[i, 0]) / F32(TILE)
        ry = F32(radii[i, 1]) / F32(TILE)
        x0 = min(max(0, int(math.floor(tx - rx))), tw)
        y0 = min(max(0, int(math.floor(ty - ry))), th)
        x1 = min(max(0, int(math.ceil(tx + rx))), tw)
        y1 = min(max(0, int(math.ceil(ty + ry))), th)
        bounds[i, 0], bounds[i, 1], bounds[i, 2], bounds[i, 3] = x0, y0, x1, y1
        for ty_ in range(y0, y1):
            for tx_ in range(x0, x1):
                counts[ty_ * tw + tx_ + 1] += 1
    for t in range(nt):
        counts[t + 1] += counts[t]
    ids = np.empty(counts[nt], dtype=np.int32)
    fill = counts[:nt].copy()
    for i in range(n):
        x0, y0, x1, y1 = bounds[i, 0], bounds[i, 1], bounds[i, 2], bounds[i, 3]
        for ty_ in range(y0, y1):
            for tx_ in range(x0, x1):
                t = ty_ * tw + tx_
                ids[fill[t]] = i
                fill[t] += 1
    return counts, ids


@njit(cache=True)
def _sort_tile(ids, depth, a, b):
    seg = ids[a:b]
    d = np.empty(b - a, dtype=np.float32)
    for k in range(b - a):
        d[k] = depth[seg[k]]
    order = np.argsort(d, kind="mergesort")  # stable: equal depths keep index order
    out = np.empty(b - a, dtype=np.int32)
    for k in range(b - a):
        out[k] = seg[order[k]]
    ids[a:b] = out


@njit(cache=True, parallel=True)
def composite(offsets_all, ids_all, m2d, conic, opac, colors, depth, radii, width, height, bg,
              out_rgb, out_alpha, out_depth):
    """All tiles of all cameras in parallel. Per camera c: offsets_all[c] [n_tiles + 1] into ids_all[c]; colours
    [C, N, 3]; bg [C, 3]."""
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    nt = tw * th
    C = len(offsets_all)
    for job in prange(C * nt):
        c = job // nt
        t = job % nt
        offs = offsets_all[c]
        ids = ids_all[c]
        a = offs[t]
        b = offs[t + 1]
        _sort_tile(ids, depth[c], a, b)
        ox = (t % tw) * TILE
        oy = (t // tw) * TILE
        T = np.ones((TILE, TILE), dtype=np.float32)
        acc = np.zeros((TILE, TILE, 3), dtype=np.float32)
        dacc = np.zeros((TILE, TILE), dtype=np.float32)
        done = np.zeros((TILE, TILE), dtype=np.bool_)
        n_done = 0
        # pixels outside the image count as done
        for yy in range(TILE):
            for xx in range(TILE):
                if oy + yy >= height or ox + xx >= width:
                    done[yy, xx] = True
                    n_done += 1
        for k in range(a, b):
            if n_done >= TILE * TILE:
                break
            g = ids[k]
            gx = m2d[c, g, 0]
            gy = m2d[c, g, 1]
            rx = radii[c, g, 0]
            ry = radii[c, g, 1]
            ca = conic[c, g, 0]
            cb = conic[c, g, 1]
            cc = conic[c, g, 2]
            o = opac[c, g]
            x_lo = max(0, int(math.floor(gx - rx - F32(1.0))) - ox)
            x_hi = min(TILE, int(math.ceil(gx + rx + F32(1.0))) - ox)
            y_lo = max(0, int(math.floor(gy - ry - F32(1.0))) - oy)
            y_hi = min(TILE, int(math.ceil(gy + ry + F32(1.0))) - oy)
            col0 = colors[c, g, 0]
            col1 = colors[c, g, 1]
            col2 = colors[c, g, 2]
            z = depth[c, g]
            for yy in range(y_lo, y_hi):
                py = F32(oy + yy) + F32(0.5)
                dy = gy - py
                for xx in range(x_lo, x_hi):
                    if done[yy, xx]:
                        continue
                    px = F32(ox + xx) + F32(0.5)
                    dx = gx - px
                    sigma = F32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    alpha = min(F32(0.999), o * math.exp(-sigma))
                    if sigma < F32(0.0) or alpha < ALPHA_THRESHOLD:
                        continue
                    Tp = T[yy, xx]
                    next_T = Tp * (F32(1.0) - alpha)
                    if next_T <= T_MIN:
                        done[yy, xx] = True
                        n_done += 1
                        continue
                    vis = alpha * Tp
                    acc[yy, xx, 0] += col0 * vis
                    acc[yy, xx, 1] += col1 * vis
                    acc[yy, xx, 2] += col2 * vis
                    dacc[yy, xx] += z * vis
                    T[yy, xx] = next_T
        for yy in range(TILE):
            y = oy + yy
            if y >= height:
                break
            for xx in range(TILE):
                x = ox + xx
                if x >= width:
                    break
                Tp = T[yy, xx]
                out_rgb[c, y, x, 0] = acc[yy, xx, 0] + Tp * bg[c, 0]
                out_rgb[c, y, x, 1] = acc[yy, xx, 1] + Tp * bg[c, 1]
                out_rgb[c, y, x, 2] = acc[yy, xx, 2] + Tp * bg[c, 2]
                out_alpha[c, y, x] = F32(1.0) - Tp
                out_depth[c, y, x] = dacc[yy, xx] / max(F32(1.0) - Tp, F32(1e-10))


def rasterize_cpu(means, cov6, opacities, sh, viewmats, Ks, width, height, *, near=0.01, far=1e10, eps2d=0.3,
                  radius_clip=0.0, antialiased=False, backgrounds=None, sh_degree=None, colors=None):
    """Render C cameras. means [N, 3], cov6 [N, 6] (see `covariances`), opacities [N], sh [N, K, 3] (or `colors`
    [N, 3] / [C, N, 3] already evaluated), viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3].
    Returns rgb [C, H, W, 3], alpha [C, H, W], expected depth [C, H, W] (float32) and the projection `meta`."""
    means = np.ascontiguousarray(means, dtype=np.float32)
    cov6 = np.ascontiguousarray(cov6, dtype=np.float32)
    opacities = np.ascontiguousarray(opacities, dtype=np.float32)
    viewmats = np.ascontiguousarray(viewmats, dtype=np.float32)
    Ks = np.ascontiguousarray(Ks, dtype=np.float32)
    C = len(viewmats)
    N = len(means)
    H, W = int(height), int(width)
    if backgrounds is None:
        bg = np.zeros((C, 3), np.float32)
    else:
        bg = np.ascontiguousarray(np.broadcast_to(np.asarray(backgrounds, np.float32), (C, 3)))
    radii = np.zeros((C, N, 2), np.int32)
    m2d = np.zeros((C, N, 2), np.float32)
    depth = np.zeros((C, N), np.float32)
    conic = np.zeros((C, N, 3), np.float32)
    opac = np.zeros((C, N), np.float32)
    cols = np.zeros((C, N, 3), np.float32)
    offsets, idss = [], []
    for c in range(C):
        r, m, d, cn, o = project(means, cov6, opacities, viewmats[c], Ks[c], W, H, F32(near), F32(far), F32(eps2d),
                                 F32(radius_clip), bool(antialiased))
        radii[c], m2d[c], depth[c], conic[c], opac[c] = r, m, d, cn, o
        vis = np.nonzero(r[:, 0] | r[:, 1])[0]
        if colors is not None:
            col = np.asarray(colors, np.float32)
            cols[c, vis] = (col[c] if col.ndim == 3 else col)[vis]
        elif len(vis):
            campos = np.linalg.inv(viewmats[c].astype(np.float64))[:3, 3].astype(np.float32)
            cols[c, vis] = eval_sh_colors(sh[vis], means[vis] - campos, sh_degree)
        off, ids = bin_tiles(r, m, d, W, H)
        offsets.append(off)
        idss.append(ids)
    rgb = np.zeros((C, H, W, 3), np.float32)
    alpha = np.zeros((C, H, W), np.float32)
    dep = np.zeros((C, H, W), np.float32)
    from numba.typed import List

    composite(List(offsets), List(idss), m2d, conic, opac, cols, depth, radii, W, H, bg, rgb, alpha, dep)
    meta = {"radii": radii, "means2d": m2d, "depths": depth, "conics": conic, "opacities": opac, "colors": cols,
            "tile_offsets": offsets, "tile_ids": idss}
    return rgb, alpha, dep, meta
