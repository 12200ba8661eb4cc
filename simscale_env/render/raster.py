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

The tile pass is Gaussian-major: each tile walks its depth-sorted Gaussians once, touching only the rows inside each
Gaussian's own box where its alpha >= 1/255 ellipse meets the row (outside it alpha < 1/255 by construction of the
extent), with an early exit when every pixel of the tile is saturated. A row's 16 pixels are one branch-free
stretch of vector lanes (`_row`), with exp(-sigma) as a float32 polynomial within 1 ulp (`exp_neg`; libm's expf
cannot be vectorised here, gsplat itself uses CUDA's ~2 ulp __expf). Tiles run in parallel (numba prange).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .sh import sh_colors_all

TILE = 16  # gsplat rendering.py rasterization(tile_size=16)
FULL_ROW = (1 << TILE) - 1
ALPHA_THRESHOLD = np.float32(1.0 / 255.0)  # gsplat cuda/include/Common.h ALPHA_THRESHOLD
T_MIN = np.float32(1e-4)  # gsplat RasterizeToPixels3DGSFwd.cu: stop before next_T <= 1e-4
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
def project_into(means, cov6, opacities, viewmats, Ks, width, height, near, far, eps2d, radius_clip, antialiased,
                 radii, m2d, depth, conic, opac):
    """Every camera into preallocated arrays: radii [C, N, 2] (0 = culled), means2d [C, N, 2], depths [C, N],
    conics [C, N, 3], opacities [C, N] (with the antialiasing compensation applied); only culled entries' radii
    are written for culled Gaussians."""
    n = len(means)
    C = len(viewmats)
    wf = F32(width)
    hf = F32(height)
    lims = np.empty((C, 4), dtype=np.float32)
    for c in range(C):
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        tan_fovx = F32(0.5) * wf / fx
        tan_fovy = F32(0.5) * hf / fy
        # gsplat Utils.cuh persp_proj: the camera-frame point is clamped to the image plus 0.3 tan(fov) on each side
        lims[c, 0] = (wf - cx) / fx + F32(0.3) * tan_fovx
        lims[c, 1] = cx / fx + F32(0.3) * tan_fovx
        lims[c, 2] = (hf - cy) / fy + F32(0.3) * tan_fovy
        lims[c, 3] = cy / fy + F32(0.3) * tan_fovy
    for i in prange(n):  # Gaussian-major: each Gaussian is read once for all cameras
        px = means[i, 0]
        py = means[i, 1]
        pz = means[i, 2]
        s00, s01, s02, s11, s12, s22 = cov6[i, 0], cov6[i, 1], cov6[i, 2], cov6[i, 3], cov6[i, 4], cov6[i, 5]
        fro = math.sqrt(s00 * s00 + s11 * s11 + s22 * s22 + F32(2.0) * (s01 * s01 + s02 * s02 + s12 * s12))
        for c in range(C):
            R = viewmats[c]
            fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
            lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg = lims[c, 0], lims[c, 1], lims[c, 2], lims[c, 3]
            radii[c, i, 0] = 0
            radii[c, i, 1] = 0
            x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + R[0, 3]
            y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + R[1, 3]
            z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + R[2, 3]
            if z < near or z > far:
                continue
            rz = F32(1.0) / z
            rz2 = rz * rz
            tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
            ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
            j00 = fx * rz
            j02 = -fx * tx * rz2
            j11 = fy * rz
            j12 = -fy * ty * rz2
            mx = fx * x * rz + cx
            my = fy * y * rz + cy
            # a cheap bound first: v00 = J0 C J0^T <= |J0|^2 |Sigma|_F (any symmetric Sigma; rotations keep the
            # norm), so rx <= 3.33 sqrt(|J0|^2 |Sigma|_F + eps2d) + 1 (ceil); a box that misses the image even at that
            # size is culled below anyway: skip its covariance, log and square roots (about 2/3 of the pairs in front).
            # 3.34 rather than gsplat's 3.33 (ProjectionEWA3DGSFused.cu) as a margin for float32 rounding of v00
            bx = F32(3.34) * math.sqrt((j00 * j00 + j02 * j02) * fro + eps2d) + F32(1.0)
            by = F32(3.34) * math.sqrt((j11 * j11 + j12 * j12) * fro + eps2d) + F32(1.0)
            if mx + bx <= 0 or mx - bx >= wf or my + by <= 0 or my - by >= hf:
                continue
            # covar_c = R Sigma R^T
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
            # cov2d = J C J^T with J = [[j00, 0, j02], [0, j11, j12]]
            v00 = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22)
            v01 = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22)
            v11 = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22)
            det_orig = v00 * v11 - v01 * v01
            v00 += eps2d
            v11 += eps2d
            det = v00 * v11 - v01 * v01
            if det <= F32(0.0):
                continue
            comp = math.sqrt(max(F32(0.0), det_orig / det))
            oi = opacities[i] * comp if antialiased else opacities[i]
            if oi < ALPHA_THRESHOLD:
                continue
            # gsplat ProjectionEWA3DGSFused.cu: opacity-aware extent, at most 3.33 sigma
            extend = min(F32(3.33), math.sqrt(F32(2.0) * math.log(oi / ALPHA_THRESHOLD)))
            rx = math.ceil(extend * math.sqrt(v00))
            ry = math.ceil(extend * math.sqrt(v11))
            if rx <= radius_clip and ry <= radius_clip:
                continue
            if mx + rx <= 0 or mx - rx >= wf or my + ry <= 0 or my - ry >= hf:
                continue
            radii[c, i, 0] = np.int32(rx)
            radii[c, i, 1] = np.int32(ry)
            m2d[c, i, 0] = mx
            m2d[c, i, 1] = my
            depth[c, i] = z
            inv = F32(1.0) / det
            conic[c, i, 0] = v11 * inv
            conic[c, i, 1] = -v01 * inv
            conic[c, i, 2] = v00 * inv
            opac[c, i] = oi


def project_all(means, cov6, opacities, viewmats, Ks, width, height, near, far, eps2d, radius_clip, antialiased,
                workspace=None):
    """Every camera: (radii [C, N, 2] (0 = culled), means2d [C, N, 2], depths [C, N], conics [C, N, 3],
    opacities [C, N]); values of culled entries other than radii are undefined."""
    ws = workspace if workspace is not None else Workspace()
    radii, m2d, depth, conic, opac = ws.arrays(len(viewmats), len(means))
    project_into(means, cov6, opacities, viewmats, Ks, width, height, near, far, eps2d, radius_clip, antialiased,
                 radii, m2d, depth, conic, opac)
    return radii, m2d, depth, conic, opac


class Workspace:
    """Projection buffers reused across frames (no allocation or page faults per frame). Views are always
    C-contiguous (flat buffers reshaped), so the kernels see one array layout whatever the frame size."""

    def __init__(self):
        self._cap = 0
        self._bufs = None
        self._cols = None

    def _grow(self, n: int):
        if self._bufs is None or self._cap < n:
            self._cap = max(n, int(self._cap * 1.25))
            c = self._cap
            self._bufs = (np.empty(2 * c, np.int32), np.empty(2 * c, np.float32), np.empty(c, np.float32),
                          np.empty(3 * c, np.float32), np.empty(c, np.float32), np.empty(3 * c, np.float32))

    def arrays(self, C: int, N: int):
        self._grow(C * N)
        r, m, d, c, o, _ = self._bufs
        k = C * N
        return (r[:2 * k].reshape(C, N, 2), m[:2 * k].reshape(C, N, 2), d[:k].reshape(C, N),
                c[:3 * k].reshape(C, N, 3), o[:k].reshape(C, N))

    def colors(self, C: int, N: int):
        self._grow(C * N)
        return self._bufs[5][:3 * C * N].reshape(C, N, 3)


def project(means, cov6, opacities, viewmat, K, width, height, near, far, eps2d, radius_clip, antialiased):
    """One camera (see `project_all`): radii [N, 2], means2d [N, 2], depths [N], conics [N, 3], opacities [N]."""
    r, m, d, c, o = project_all(means, cov6, opacities, np.ascontiguousarray(np.asarray(viewmat)[None], dtype=np.float32),
                                np.ascontiguousarray(np.asarray(K)[None], dtype=np.float32), width, height, near, far,
                                eps2d, radius_clip, antialiased)
    return r[0].copy(), m[0].copy(), d[0].copy(), c[0].copy(), o[0].copy()


@njit(cache=True, parallel=True)
def visible_lists(radii):
    """The visible Gaussians of every camera (radii not both 0), ascending, one list after the other: (vis, starts)
    with camera c's list vis[starts[c]:starts[c + 1]]."""
    C, n = radii.shape[0], radii.shape[1]
    counts = np.zeros(C + 1, dtype=np.int64)
    for c in prange(C):
        k = 0
        for i in range(n):
            if radii[c, i, 0] != 0 or radii[c, i, 1] != 0:
                k += 1
        counts[c + 1] = k
    for c in range(C):
        counts[c + 1] += counts[c]
    vis = np.empty(counts[C], dtype=np.int64)
    for c in prange(C):
        k = counts[c]
        for i in range(n):
            if radii[c, i, 0] != 0 or radii[c, i, 1] != 0:
                vis[k] = i
                k += 1
    return vis, counts


@njit(cache=True)
def _depth_order(d):
    """Stable argsort of positive float32 depths: an LSD radix sort on their bit patterns (which order like the
    values for positive floats), 3 passes of 11 bits over (key, index) pairs moved together (sequential reads; a
    pass whose digit is the same for every key is skipped); the order gsplat's radix sort gives."""
    n = d.shape[0]
    keys = d.view(np.uint32).copy()
    idx = np.arange(n)
    tkeys = np.empty(n, dtype=np.uint32)
    tidx = np.empty(n, dtype=np.int64)
    count = np.empty(2049, dtype=np.int64)
    for p in range(3):
        shift = np.uint32(11 * p)
        count[:] = 0
        for k in range(n):
            count[((keys[k] >> shift) & np.uint32(2047)) + 1] += 1
        skip = False
        for b in range(2048):
            if count[b + 1] == n:
                skip = True  # one digit for all: the pass would keep the order
            count[b + 1] += count[b]
        if skip:
            continue
        for k in range(n):
            b = (keys[k] >> shift) & np.uint32(2047)
            j = count[b]
            tkeys[j] = keys[k]
            tidx[j] = idx[k]
            count[b] = j + 1
        keys, tkeys = tkeys, keys
        idx, tidx = tidx, idx
    return idx


@njit(cache=True, parallel=True)
def bin_tiles(vis, vis_start, radii, m2d, depth, width, height):
    """Tile lists of every camera from its visible Gaussians (vis[vis_start[c]:vis_start[c + 1]], ascending):
    offsets [C, n_tiles + 1] (relative to base[c]), base [C + 1], entries (flat): each the position r in `vis` of a
    (camera, Gaussian) pair (vis[r] is the Gaussian; its row of `visible_rows` holds what compositing reads).
    Gaussians are appended in (depth, index) order, so each tile's list comes out sorted (gsplat's radix sort on
    (tile, depth), stable in the index)."""
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    nt = tw * th
    C = radii.shape[0]
    counts = np.zeros((C, nt + 1), dtype=np.int64)
    bounds = np.empty((len(vis), 4), dtype=np.int32)
    for c in prange(C):
        for r in range(vis_start[c], vis_start[c + 1]):
            i = vis[r]
            tx = m2d[c, i, 0] / F32(TILE)
            ty = m2d[c, i, 1] / F32(TILE)
            rx = F32(radii[c, i, 0]) / F32(TILE)
            ry = F32(radii[c, i, 1]) / F32(TILE)
            x0 = min(max(0, int(np.floor(tx - rx))), tw)
            y0 = min(max(0, int(np.floor(ty - ry))), th)
            x1 = min(max(0, int(np.ceil(tx + rx))), tw)
            y1 = min(max(0, int(np.ceil(ty + ry))), th)
            bounds[r, 0], bounds[r, 1], bounds[r, 2], bounds[r, 3] = x0, y0, x1, y1
            for ty_ in range(y0, y1):
                for tx_ in range(x0, x1):
                    counts[c, ty_ * tw + tx_ + 1] += 1
        for t in range(nt):
            counts[c, t + 1] += counts[c, t]
    base = np.zeros(C + 1, dtype=np.int64)
    for c in range(C):
        base[c + 1] = base[c] + counts[c, nt]
    ids = np.empty(base[C], dtype=np.int32)
    for c in prange(C):
        a = vis_start[c]
        nv = vis_start[c + 1] - a
        d = np.empty(nv, dtype=np.float32)
        for k in range(nv):
            d[k] = depth[c, vis[a + k]]
        order = _depth_order(d)  # stable: equal depths keep index order
        fill = counts[c, :nt].copy()
        b0 = base[c]
        for q in range(nv):
            r = a + order[q]
            x0, y0, x1, y1 = bounds[r, 0], bounds[r, 1], bounds[r, 2], bounds[r, 3]
            for ty_ in range(y0, y1):
                for tx_ in range(x0, x1):
                    t = ty_ * tw + tx_
                    ids[b0 + fill[t]] = r
                    fill[t] += 1
    return counts, base, ids


@njit(cache=True, parallel=True)
def visible_rows(vis, vis_start, m2d, conic, opac, colors, depth, radii):
    """[n_visible, 13] float32 per visible (camera, Gaussian) pair, in `vis` order: mean2d (2), conic (3), opacity,
    colour (3), depth, radius_y, ln(255 opacity) (alpha >= 1/255 needs sigma <= it) and 1 / conic_a (0 if conic_a
    <= 0), read in ascending Gaussian order per camera (streaming); see `pack_entries`. The log and the reciprocal
    once per pair here, not once per tile entry in `composite`."""
    out = np.empty((len(vis), 13), dtype=np.float32)
    for c in range(len(vis_start) - 1):
        for r in prange(vis_start[c], vis_start[c + 1]):
            g = vis[r]
            out[r, 0] = m2d[c, g, 0]
            out[r, 1] = m2d[c, g, 1]
            out[r, 2] = conic[c, g, 0]
            out[r, 3] = conic[c, g, 1]
            out[r, 4] = conic[c, g, 2]
            out[r, 5] = opac[c, g]
            out[r, 6] = colors[c, g, 0]
            out[r, 7] = colors[c, g, 1]
            out[r, 8] = colors[c, g, 2]
            out[r, 9] = depth[c, g]
            out[r, 10] = F32(radii[c, g, 1])
            out[r, 11] = math.log(opac[c, g] * F32(255.0))
            ca = conic[c, g, 0]
            out[r, 12] = F32(1.0) / ca if ca > F32(0.0) else F32(0.0)
    return out


@njit(cache=True, parallel=True)
def pack_entries(entries, rows):
    """[n_isect, 13]: each tile entry's row of `visible_rows`, so that `composite` reads every tile's list
    sequentially (one gather of one row per entry here, instead of six [C, N] arrays per entry)."""
    out = np.empty((len(entries), rows.shape[1]), dtype=np.float32)
    for k in prange(len(entries)):
        r = entries[k]
        for m in range(rows.shape[1]):
            out[k, m] = rows[r, m]
    return out


LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)  # Cody-Waite split of ln 2 (Cephes expf)
LN2_LO = np.float32(-2.12194440e-4)
EXP_FLOOR = np.float32(-20.0)  # exp(-20) o < 1/255 for every opacity <= 1: below it only "alpha < 1/255" matters


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (a register bitcast; no memory round trip)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, inline="always")
def exp_neg(s):
    """exp(-s) in float32 for s >= 0 (Cephes expf: Cody-Waite reduction, degree-7 polynomial, the power of two from
    its bit pattern; <= 1 ulp on [0, 20], tested), written without calls or table lookups so that a row of 16
    pixels compiles to vector instructions. s > 20 gives exp(-20) and s < 0 gives 1 (both only ever compared
    against 1/255 or skipped). gsplat's CUDA kernel uses the __expf intrinsic (~2 ulp)."""
    x = min(max(-s, EXP_FLOOR), F32(0.0))
    n = np.floor(x * LOG2E + F32(0.5))
    r = x - n * LN2_HI - n * LN2_LO
    p = F32(1.9875691500e-4)
    p = p * r + F32(1.3981999507e-3)
    p = p * r + F32(8.3334519073e-3)
    p = p * r + F32(4.1665795894e-2)
    p = p * r + F32(1.6666665459e-1)
    p = p * r + F32(5.0000001201e-1)
    p = p * r * r + r + F32(1.0)
    return p * _f32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))  # 2^n, n in [-29, 0]


@njit(cache=True, inline="always")
def _row(S, yy, pxs, x_lo, x_hi, gx, dy, ca, cb, cc, o, col0, col1, col2, z):
    """One Gaussian over the 16 pixels of row yy of a tile's state S [6, TILE, TILE] (T, colour (3), depth
    accumulators, live: 0 once the pixel is saturated or outside the image): gsplat's compositing rules, free of
    branches so that the lanes compile to vector instructions; pixels outside [x_lo, x_hi) or not live are left as
    they are. Returns how many pixels saturated."""
    cdy = cc * dy * dy
    n_sat = 0
    for q in range(TILE):  # indices >= 0 known to the compiler (no wraparound select): vector lanes
        dx = gx - pxs[q]
        sigma = F32(0.5) * (ca * dx * dx + cdy) + cb * dx * dy
        alpha = min(F32(0.999), o * exp_neg(sigma))  # gsplat RasterizeToPixels3DGSFwd.cu
        ok = (S[5, yy, q] != F32(0.0)) & (q >= x_lo) & (q < x_hi) & (sigma >= F32(0.0)) & (alpha >= ALPHA_THRESHOLD)
        Tp = S[0, yy, q]
        next_T = Tp * (F32(1.0) - alpha)
        sat = ok & (next_T <= T_MIN)  # gsplat stops before the Gaussian that would bring T to <= 1e-4
        use = ok & (next_T > T_MIN)
        vis = alpha * Tp if use else F32(0.0)
        S[1, yy, q] += col0 * vis
        S[2, yy, q] += col1 * vis
        S[3, yy, q] += col2 * vis
        S[4, yy, q] += z * vis
        S[0, yy, q] = next_T if use else Tp
        S[5, yy, q] = F32(0.0) if sat else S[5, yy, q]
        n_sat += np.int32(sat)
    return n_sat


@njit(cache=True, parallel=True)
def composite(offsets, base, packed, width, height, bg, out_rgb, out_alpha, out_depth):
    """All tiles of all cameras in parallel (see `bin_tiles` for the lists, `pack_entries` for packed); bg [C, 3].
    A Gaussian visits only the rows of its radius box (one pixel wider each side against rounding) where the ellipse
    sigma <= ln(255 o) (alpha >= 1/255) meets the row; on such a row all 16 pixels are evaluated at once (vector
    lanes), masked to the ellipse's x-interval (again one and a half pixels wider) and to the pixels not yet
    saturated: the others would be skipped by the alpha rule anyway."""
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    nt = tw * th
    C = offsets.shape[0]
    # tiles in a fixed scrambled order so heavy regions (the ground ahead) spread over the threads
    njobs = C * nt
    order = np.empty(njobs, dtype=np.int64)
    step = 7919 if njobs % 7919 != 0 else 1
    for jj in range(njobs):
        order[jj] = (jj * step) % njobs
    lane = np.arange(TILE).astype(np.float32) + F32(0.5)
    for jj in prange(njobs):
        job = order[jj]
        c = job // nt
        t = job % nt
        a = base[c] + offsets[c, t]
        b = base[c] + offsets[c, t + 1]
        ox = (t % tw) * TILE
        oy = (t // tw) * TILE
        S = np.zeros((6, TILE, TILE), dtype=np.float32)  # T, colour (3), depth accumulators, live (see `_row`)
        S[0] = F32(1.0)
        S[5] = F32(1.0)
        pxs = np.empty(TILE, dtype=np.float32)
        for xx in range(TILE):
            pxs[xx] = F32(ox) + lane[xx]
        row_mask = np.zeros(TILE, dtype=np.int64)  # bit x set: pixel (x, row) is done
        n_done = 0
        for yy in range(TILE):
            for xx in range(TILE):
                if oy + yy >= height or ox + xx >= width:
                    S[5, yy, xx] = F32(0.0)
                    row_mask[yy] |= np.int64(1) << xx
                    n_done += 1
        for k in range(a, b):
            if n_done >= TILE * TILE:
                break
            gx = packed[k, 0]
            gy = packed[k, 1]
            ca = packed[k, 2]
            cb = packed[k, 3]
            cc = packed[k, 4]
            o = packed[k, 5]
            smax = packed[k, 11]
            ry = packed[k, 10]
            y_lo = max(0, int(np.floor(gy - ry - F32(1.0))) - oy)
            y_hi = min(TILE, int(np.ceil(gy + ry + F32(1.0))) - oy)
            col0 = packed[k, 6]
            col1 = packed[k, 7]
            col2 = packed[k, 8]
            z = packed[k, 9]
            inv_a = packed[k, 12]
            for yy in range(y_lo, y_hi):
                if row_mask[yy] == FULL_ROW:
                    continue
                py = F32(oy + yy) + F32(0.5)
                dy = gy - py
                # x-range of the ellipse 0.5 (a dx^2 + c dy^2) + b dx dy <= smax on this row (dx = gx - px)
                disc = (cb * dy) * (cb * dy) - ca * (cc * dy * dy - F32(2.0) * smax)
                if disc < F32(0.0) or inv_a == F32(0.0):
                    if inv_a == F32(0.0):
                        x_lo = 0
                        x_hi = TILE
                    else:
                        continue
                else:
                    sq = math.sqrt(disc)
                    dxa = (-cb * dy - sq) * inv_a
                    dxb = (-cb * dy + sq) * inv_a
                    # px = gx - dx
                    x_lo = max(0, int(np.floor(gx - dxb - F32(1.5))) - ox)
                    x_hi = min(TILE, int(np.ceil(gx - dxa + F32(1.5))) - ox)
                if x_hi <= x_lo:
                    continue
                span = ((np.int64(1) << (x_hi - x_lo)) - 1) << x_lo
                if (row_mask[yy] & span) == span:
                    continue  # every pixel of this row's interval is already saturated
                n_sat = _row(S, yy, pxs, x_lo, x_hi, gx, dy, ca, cb, cc, o, col0, col1, col2, z)
                if n_sat:
                    n_done += n_sat
                    m = np.int64(0)
                    for xx in range(TILE):
                        if S[5, yy, xx] == F32(0.0):
                            m |= np.int64(1) << xx
                    row_mask[yy] = m
        for yy in range(TILE):
            y = oy + yy
            if y >= height:
                break
            for xx in range(TILE):
                x = ox + xx
                if x >= width:
                    break
                Tp = S[0, yy, xx]
                out_rgb[c, y, x, 0] = S[1, yy, xx] + Tp * bg[c, 0]
                out_rgb[c, y, x, 1] = S[2, yy, xx] + Tp * bg[c, 1]
                out_rgb[c, y, x, 2] = S[3, yy, xx] + Tp * bg[c, 2]
                out_alpha[c, y, x] = F32(1.0) - Tp
                out_depth[c, y, x] = S[4, yy, xx] / max(F32(1.0) - Tp, F32(1e-10))


def rasterize_cpu(means, cov6, opacities, sh, viewmats, Ks, width, height, *, near=0.01, far=1e10, eps2d=0.3,
                  radius_clip=0.0, antialiased=False, backgrounds=None, sh_degree=None, colors=None,
                  workspace: "Workspace | None" = None):
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
    radii, m2d, depth, conic, opac = project_all(means, cov6, opacities, viewmats, Ks, W, H, F32(near), F32(far),
                                                 F32(eps2d), F32(radius_clip), bool(antialiased), workspace)
    cols = np.empty((C, N, 3), np.float32) if workspace is None else workspace.colors(C, N)
    sh = None if sh is None else np.ascontiguousarray(sh, dtype=np.float32)
    vis_all, vis_start = visible_lists(radii)
    if colors is not None:
        col = np.asarray(colors, np.float32)
        for c in range(C):
            v = vis_all[vis_start[c]:vis_start[c + 1]]
            cols[c, v] = (col[c] if col.ndim == 3 else col)[v]
    elif len(vis_all):
        campos = np.stack([np.linalg.inv(viewmats[c].astype(np.float64))[:3, 3] for c in range(C)]).astype(np.float32)
        sh_colors_all(sh, means, campos, vis_all, vis_start, sh_degree, cols)
    rows = visible_rows(vis_all, vis_start, m2d, conic, opac, cols, depth, radii)
    offsets, base, entries = bin_tiles(vis_all, vis_start, radii, m2d, depth, W, H)
    packed = pack_entries(entries, rows)
    rgb = np.zeros((C, H, W, 3), np.float32)
    alpha = np.zeros((C, H, W), np.float32)
    dep = np.zeros((C, H, W), np.float32)
    composite(offsets, base, packed, W, H, bg, rgb, alpha, dep)
    meta = {"radii": radii, "means2d": m2d, "depths": depth, "conics": conic, "opacities": opac, "colors": cols,
            "visible": vis_all, "visible_start": vis_start, "tile_offsets": offsets, "tile_base": base,
            "tile_entries": entries}
    return rgb, alpha, dep, meta
