"""Gaussian-splatting cameras: Gaussian sets and PLY IO, map-synthesised scenes and actors, the nuPlan rig, gsplat
on CUDA and a CPU rasterizer with gsplat's rules, bird's-eye views."""

from .bev import BEV_CHANNELS, BEVRenderer, mosaic
from .camera import DEFAULT_CHANNELS, DEFAULT_SIZE, CameraModel, camera_models, view_matrices
from .gaussians import Gaussians, read_ply, write_ply
from .renderer import CameraRenderer, RenderOutput, compare_backends, gsplat_available, load_reconstruction, psnr

__all__ = ["BEV_CHANNELS", "BEVRenderer", "CameraModel", "CameraRenderer", "DEFAULT_CHANNELS", "DEFAULT_SIZE",
           "Gaussians", "RenderOutput", "camera_models", "compare_backends", "gsplat_available", "load_reconstruction",
           "mosaic", "psnr", "read_ply", "view_matrices", "write_ply"]
