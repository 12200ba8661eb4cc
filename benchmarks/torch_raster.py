"""A vectorized pure-torch formulation of the same rasterization rules (bench baseline only): batched projection and
SH, tile binning by repeat_interleave + one sort, and tile-batched compositing with cumprod in chunks."""

from __future__ import annotations

import numpy as np


def _sh_bases(d, x, y, z):
    import torch

    out = [torch.full_like(x, 0.2820947917738781)]
    if d >= 1:
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if d >= 2:
        z2 = z * z
        fC1, fS1 = x * x - y * y, 2 * x * y
        out += [0.5462742152960395 * fS1, -1.092548430592079 * z * y, 0.9461746957575601 * z2 - 0.3153915652525201,
                -1.092548430592079 * z * x, 0.5462742152960395 * fC1]
    if d >= 3:
        fC2, fS2 = x * fC1 - y * fS1, x * fS1 + y * fC1
        fTmpC = -2.285228997322329 * z2 + 0.4570457994644658
        out += [-0.5900435899266435 * fS2, 1.445305721320277 * z * fS1, fTmpC * y,
                z * (1.865881662950577 * z2 - 1.119528997770346), fTmpC * x, 1.445305721320277 * z * fC1,
                -0.5900435899266435 * fC2]
    return torch.stack(out, -1)


def rasterize_torch(means, quats, scales, opacities, sh, viewmats, Ks, width, height, near=0.01, far=1e10,
                    eps2d=0.3, tile=16, chunk=64):
    import torch

    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    m, q, s, o, shc, V, K = (f(a) for a in (means, quats, scales, opacities, sh, viewmats, Ks))
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    M = R * s[:, None, :]
    cov = M @ M.transpose(1, 2)
    C = V.shape[0]
    tw, th = (width + tile - 1) // tile, (height + tile - 1) // tile
    images = np.zeros((C, height, width, 3), np.float32)
    deg = int(round(np.sqrt(shc.shape[1]))) - 1
    for c in range(C):
        Rc, tc = V[c, :3, :3], V[c, :3, 3]
        pc = m @ Rc.T + tc
        zc = pc[:, 2]
        fx, fy, cx, cy = K[c, 0, 0], K[c, 1, 1], K[c, 0, 2], K[c, 1, 2]
        tanx, tany = 0.5 * width / fx, 0.5 * height / fy
        tx = zc * torch.clamp(pc[:, 0] / zc, -(cx / fx + 0.3 * tanx), (width - cx) / fx + 0.3 * tanx)
        ty = zc * torch.clamp(pc[:, 1] / zc, -(cy / fy + 0.3 * tany), (height - cy) / fy + 0.3 * tany)
        O = torch.zeros_like(zc)
        J = torch.stack([fx / zc, O, -fx * tx / zc ** 2, O, fy / zc, -fy * ty / zc ** 2], -1).reshape(-1, 2, 3)
        cc = Rc @ cov @ Rc.T
        c2 = J @ cc @ J.transpose(1, 2)
        c2[:, 0, 0] += eps2d
        c2[:, 1, 1] += eps2d
        det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
        mx = fx * pc[:, 0] / zc + cx
        my = fy * pc[:, 1] / zc + cy
        ext = torch.clamp(torch.sqrt(2 * torch.log(torch.clamp(o, min=1e-12) * 255.0)), max=3.33)
        rx = torch.ceil(ext * torch.sqrt(c2[:, 0, 0].clamp(min=0)))
        ry = torch.ceil(ext * torch.sqrt(c2[:, 1, 1].clamp(min=0)))
        ok = ((zc >= near) & (zc <= far) & (det > 0) & (o >= 1 / 255) & (mx + rx > 0) & (mx - rx < width)
              & (my + ry > 0) & (my - ry < height))
        idx = torch.nonzero(ok).squeeze(1)
        if len(idx) == 0:
            continue
        campos = torch.linalg.inv(V[c])[:3, 3]
        d = m[idx] - campos
        d = d / d.norm(dim=-1, keepdim=True)
        col = (_sh_bases(deg, d[:, 0], d[:, 1], d[:, 2])[..., None] * shc[idx]).sum(1)
        col = torch.clamp(col + 0.5, min=0)
        conic = torch.stack([c2[idx, 1, 1], -c2[idx, 0, 1], c2[idx, 0, 0]], -1) / det[idx, None]
        gx, gy, gz, go = mx[idx], my[idx], zc[idx], o[idx]
        x0 = torch.clamp(torch.floor((gx - rx[idx]) / tile), 0, tw).long()
        x1 = torch.clamp(torch.ceil((gx + rx[idx]) / tile), 0, tw).long()
        y0 = torch.clamp(torch.floor((gy - ry[idx]) / tile), 0, th).long()
        y1 = torch.clamp(torch.ceil((gy + ry[idx]) / tile), 0, th).long()
        nx, ny = (x1 - x0).clamp(min=0), (y1 - y0).clamp(min=0)
        cnt = nx * ny
        gid = torch.repeat_interleave(torch.arange(len(idx)), cnt)
        start = torch.cumsum(cnt, 0) - cnt
        k = torch.arange(len(gid)) - start[gid]
        tid = (y0[gid] + k // nx[gid].clamp(min=1)) * tw + x0[gid] + k % nx[gid].clamp(min=1)
        rank = torch.empty(len(idx), dtype=torch.long)
        rank[torch.argsort(gz, stable=True)] = torch.arange(len(idx))
        order = torch.argsort(tid * len(idx) + rank[gid])
        tid, gid = tid[order], gid[order]
        bounds = torch.searchsorted(tid, torch.arange(tw * th + 1))
        py, px = torch.meshgrid(torch.arange(tile, dtype=torch.float32), torch.arange(tile, dtype=torch.float32),
                                indexing="ij")
        for t in range(tw * th):
            a, b = int(bounds[t]), int(bounds[t + 1])
            if a == b:
                continue
            ox, oy = (t % tw) * tile, (t // tw) * tile
            ppx = (px + ox + 0.5).reshape(-1, 1)
            ppy = (py + oy + 0.5).reshape(-1, 1)
            T = torch.ones(tile * tile, 1)
            acc = torch.zeros(tile * tile, 3)
            alive = torch.ones(tile * tile, 1, dtype=torch.bool)
            for u in range(a, b, chunk):
                g = gid[u:min(b, u + chunk)]
                dx = gx[g][None] - ppx
                dy = gy[g][None] - ppy
                cn = conic[g]
                sig = 0.5 * (cn[:, 0] * dx * dx + cn[:, 2] * dy * dy) + cn[:, 1] * dx * dy
                al = torch.clamp(go[g][None] * torch.exp(-sig), max=0.999)
                al = torch.where((sig < 0) | (al < 1 / 255), torch.zeros_like(al), al)
                nT = T * torch.cumprod(1 - al, 1)
                stop = torch.cumsum((nT <= 1e-4).int(), 1) > 0  # from the terminating Gaussian on
                al = torch.where(stop | ~alive, torch.zeros_like(al), al)
                Tb = T * torch.cumprod(torch.cat([torch.ones_like(al[:, :1]), 1 - al[:, :-1]], 1), 1)
                acc += (al * Tb) @ col[g]
                T = Tb[:, -1:] * (1 - al[:, -1:])
                alive = alive & ~stop[:, -1:]
                if not bool(alive.any()):
                    break
            img = acc.reshape(tile, tile, 3).numpy()
            h = min(tile, height - oy)
            w_ = min(tile, width - ox)
            images[c, oy:oy + h, ox:ox + w_] = img[:h, :w_]
    return images
