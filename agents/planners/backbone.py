"""What the three learned planners share: the configuration fields of their perception, a ResNet image backbone whose
parameter names are torchvision's (so a torchvision or timm ResNet checkpoint loads from a local file into it), the
camera + status encoder that turns a batch into transformer memory tokens, and a small attention block.

Backbone: torchvision's `resnet18` / `resnet34` when torchvision imports and the widths are the standard ones
(`backbone_impl="auto"`), otherwise a compact ResNet of our own with the same module tree (`conv1`, `bn1`,
`layer1.0.conv1`, ..., `downsample.0/1`; no `fc`): the CPU torch wheel here cannot import torchvision, and reduced
widths (`backbone_widths`) make the CPU configs fast. Weights are random (torchvision's init) or read from a local
file (`backbone_weights`, `load_backbone_weights`), never downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simscale_env.errors import CorruptFileError, MissingFileError, SchemaError

log = logging.getLogger(__name__)

# torchvision.models.resnet: BasicBlock stages of resnet18 / resnet34, stage widths 64-128-256-512
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STANDARD_WIDTHS = (64, 128, 256, 512)
BACKBONE_IMPLS = ("auto", "own", "torchvision")
STATUS_SIZE = 8  # agents.planners.features.STATUS_SIZE (command 4 || velocity 2 || acceleration 2)
NUM_POSES = 8  # the env's plan: 8 poses 0.5 s apart (navsim-agents-and-planners.md §1.4)


@dataclass(frozen=True)
class PlannerConfig:
    """Perception and transformer fields every planner config has (each planner's config extends it).

    image_size: (W, H) of the stitched l0|f0|r0 image the model reads (NAVSIM LTF: 1024 x 256, SimScale: 2048 x 512,
    navsim-agents-and-planners.md §3). backbone: "resnet18" | "resnet34"; backbone_widths: the 4 stage widths
    (torchvision: 64, 128, 256, 512); backbone_weights: a local torchvision / timm ResNet state dict loaded at
    construction (None: random init); backbone_impl: "auto" (torchvision's ResNet when it imports and the widths are
    standard, else ours), "own" or "torchvision". d_model / num_heads / ffn_dim / dropout: the transformer's sizes.
    seed: the parameter init (construction is deterministic) and the inference noise where a model has any."""

    image_size: tuple[int, int] = (512, 128)
    backbone: str = "resnet18"
    backbone_widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    backbone_weights: str | None = None
    backbone_impl: str = "auto"
    d_model: int = 128
    num_heads: int = 4
    ffn_dim: int = 256
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if len(self.image_size) != 2 or min(int(v) for v in self.image_size) < 32:
            raise ValueError(f"image_size must be (W, H) with both >= 32, got {self.image_size}")
        if self.backbone not in RESNET_BLOCKS:
            raise ValueError(f"backbone must be one of {sorted(RESNET_BLOCKS)}, got {self.backbone!r}")
        if len(self.backbone_widths) != 4 or min(int(w) for w in self.backbone_widths) < 1:
            raise ValueError(f"backbone_widths must be 4 positive stage widths, got {self.backbone_widths}")
        if self.backbone_impl not in BACKBONE_IMPLS:
            raise ValueError(f"backbone_impl must be one of {BACKBONE_IMPLS}, got {self.backbone_impl!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block (a model's construction) with torch's CPU RNG seeded, restoring the caller's RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# ---------------------------------------------------------------------------------------------- the ResNet
class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock (same attribute names)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with BasicBlocks and any stage widths, without avgpool / fc (the planners read layer4)."""

    def __init__(self, blocks: tuple[int, int, int, int], widths: tuple[int, int, int, int]):
        super().__init__()
        self.inplanes = int(widths[0])
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, w) in enumerate(zip(blocks, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(int(w), int(n), 1 if i == 0 else 2))
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)


@functools.cache
def _torchvision_models():
    """torchvision.models, or None where it does not import (the CPU torch wheel here: an ABI mismatch raises more
    than ImportError)."""
    try:
        import torchvision.models as tvm  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        log.debug("torchvision does not import (%s: %s): using our own ResNet", type(exc).__name__, exc)
        return None
    return tvm


def make_resnet(arch: str, widths=STANDARD_WIDTHS, impl: str = "auto") -> nn.Module:
    """A ResNet-18/34 trunk (conv1 .. layer4, torchvision's parameter names, no fc parameters)."""
    widths = tuple(int(w) for w in widths)
    if arch not in RESNET_BLOCKS:
        raise ValueError(f"backbone must be one of {sorted(RESNET_BLOCKS)}, got {arch!r}")
    if impl in ("auto", "torchvision") and widths == STANDARD_WIDTHS:
        tvm = _torchvision_models()
        if tvm is not None:
            net = getattr(tvm, arch)(weights=None)
            net.fc = nn.Identity()  # no parameters: the state dict's keys are ours
            return net
    if impl == "torchvision":
        why = "torchvision does not import" if widths == STANDARD_WIDTHS else \
            f"torchvision's ResNet has the widths {STANDARD_WIDTHS}, not {widths}"
        raise ValueError(f"backbone_impl='torchvision': {why}; use backbone_impl='auto' or 'own'")
    return ResNet(RESNET_BLOCKS[arch], widths)


def feature_grid(image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of layer4's feature map for an image of `image_size` (W, H): five stride-2 stages, each ceil(x / 2)."""
    w, h = int(image_size[0]), int(image_size[1])
    for _ in range(5):
        w, h = (w + 1) // 2, (h + 1) // 2
    return h, w


def resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer4's feature map of a (torchvision or our) ResNet trunk."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


# ---------------------------------------------------------------------------------------------- weight loading
_STEM = "conv1.weight"
_IGNORED_PREFIXES = ("fc.",)  # the classifier of torchvision / timm checkpoints


def _find_resnet(module: nn.Module) -> nn.Module:
    """The ResNet trunk inside `module`: itself, its `.resnet`, or its `.encoder.backbone.resnet`/`.backbone.resnet`."""
    for path in ("", "resnet", "backbone.resnet", "encoder.backbone.resnet"):
        m = module
        for part in filter(None, path.split(".")):
            m = getattr(m, part, None)
            if m is None:
                break
        if m is not None and hasattr(m, "conv1") and hasattr(m, "layer4"):
            return m
    raise ValueError(f"{type(module).__name__} holds no ResNet trunk (looked for conv1/layer4 at itself, .resnet, "
                     f".backbone.resnet and .encoder.backbone.resnet)")


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(path, "backbone weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many kinds for a bad file)
        raise CorruptFileError(path, f"not a torch state dict that loads with weights_only=True "
                                     f"({type(exc).__name__}: {exc})") from exc
    for _ in range(3):  # {"state_dict": ...} / {"model": ...} (Lightning, timm train scripts), possibly nested
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptFileError(path, "expected a ResNet state dict (keys conv1.weight, bn1.*, layer1.0.conv1.weight, "
                                     "...), or one under 'state_dict' / 'model'")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(sd: dict) -> dict:
    """Drop a wrapper prefix ("module.", "backbone.", "encoder.backbone.resnet.", ...): the one before the stem
    conv1.weight that also has bn1.weight and layer1.* behind it."""
    if _STEM in sd:
        return sd
    prefixes = sorted({k[:-len(_STEM)] for k in sd if k.endswith(_STEM)
                       and k[:-len(_STEM)] + "bn1.weight" in sd
                       and any(j.startswith(k[:-len(_STEM)] + "layer1.") for j in sd)}, key=len)
    if not prefixes:
        return sd
    p = prefixes[0]
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def load_backbone_weights(module: nn.Module, path: str | Path) -> list[str]:
    """Load a local ResNet state dict into the ResNet trunk of `module` (a planner, its backbone, or a trunk).

    Accepts a torchvision-style state dict (conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.* ignored), a timm one
    (same names), one under "state_dict" / "model", with or without a wrapper prefix ("module.", "backbone."). BatchNorm
    `num_batches_tracked` buffers may be absent. Every other missing or unexpected key, or a shape mismatch, raises a
    SchemaError naming them. Returns the keys loaded."""
    path = Path(path).expanduser()
    net = _find_resnet(module)
    sd = _strip_prefix(_read_state_dict(path))
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}
    own = net.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})" for k in sd
                    if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"missing keys: {few(missing)}" if missing else "",
                 f"unexpected keys: {few(unexpected)}" if unexpected else "",
                 f"shape mismatches: {few(shapes)}" if shapes else ""]
        raise SchemaError(path, f"not a state dict of this {type(net).__name__} trunk "
                                f"({sum(p.numel() for p in net.parameters())} parameters): "
                                + "; ".join(p for p in parts if p))
    net.load_state_dict(sd, strict=False)
    log.info("loaded %d backbone tensors from %s", len(sd), path)
    return sorted(sd)


# ---------------------------------------------------------------------------------------------- shared modules
def mlp(sizes: list[int], act=nn.ReLU) -> nn.Sequential:
    """Linear layers of `sizes` with `act` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head attention of queries [B, N, d] over keys/values [B, M, d] (F.scaled_dot_product_attention: memory
    efficient for the GTRS vocabulary's thousands of queries)."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m, h = mem.shape[-2], self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(mem).view(mem.shape[0], m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(b, n, d))


class DecoderBlock(nn.Module):
    """A post-norm transformer decoder layer (as torch's nn.TransformerDecoderLayer): optional self-attention among
    the queries, cross-attention to the memory, feed-forward."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float = 0.0, self_attention: bool = True):
        super().__init__()
        self.self_attn = Attention(d, heads, dropout) if self_attention else None
        self.norm1 = nn.LayerNorm(d) if self_attention else None
        self.cross_attn = Attention(d, heads, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm3 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            x = self.norm1(x + self.drop(self.self_attn(x, x)))
        x = self.norm2(x + self.drop(self.cross_attn(x, mem)))
        return self.norm3(x + self.drop(self.ffn(x)))


class ImageBackbone(nn.Module):
    """The ResNet trunk (`.resnet`) and a 1x1 projection of layer4 to d_model."""

    def __init__(self, config: PlannerConfig):
        super().__init__()
        self.resnet = make_resnet(config.backbone, config.backbone_widths, config.backbone_impl)
        out = config.backbone_widths[-1] if isinstance(self.resnet, ResNet) else STANDARD_WIDTHS[-1]
        self.proj = nn.Conv2d(out, config.d_model, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(resnet_features(self.resnet, image))


class CameraStatusEncoder(nn.Module):
    """batch image [B, 3, H, W] + status [B, 8] -> memory tokens [B, h*w + 1, d] (layer4 cells and the status token,
    with a learned positional embedding, as LTF's keyval) and the status encoding [B, d]."""

    def __init__(self, config: PlannerConfig, load_weights: bool = True):
        super().__init__()
        self.image_size = (int(config.image_size[0]), int(config.image_size[1]))
        self.backbone = ImageBackbone(config)
        if load_weights and config.backbone_weights:
            load_backbone_weights(self.backbone, config.backbone_weights)
        d = config.d_model
        gh, gw = feature_grid(self.image_size)
        self.status_encoder = mlp([STATUS_SIZE, d, d])
        self.pos_embedding = nn.Parameter(torch.randn(gh * gw + 1, d) * 0.02)

    def check_inputs(self, image: torch.Tensor, status: torch.Tensor) -> None:
        w, h = self.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, h, w):
            raise ValueError(f"image must be [B, 3, {h}, {w}] (the config's image_size {self.image_size} is (W, H)), "
                             f"got {tuple(image.shape)}")
        if status.ndim != 2 or status.shape[1] != STATUS_SIZE or status.shape[0] != image.shape[0]:
            raise ValueError(f"status must be [B, {STATUS_SIZE}] with the image's B={image.shape[0]}, got "
                             f"{tuple(status.shape)}")

    def forward(self, image: torch.Tensor, status: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(image, status)
        feats = self.backbone(image).flatten(2).transpose(1, 2)  # [B, h*w, d]
        s = self.status_encoder(status)
        mem = torch.cat([feats, s[:, None]], 1) + self.pos_embedding
        return mem, s


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The transformer's sinusoidal embedding of (diffusion) timesteps t [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


class PlannerModule(nn.Module):
    """What the three planners share: `predict(image, status)`, the [B, 8, 3] plans of `forward`'s "trajectory" in
    eval mode without gradients (the module's mode is restored)."""

    @torch.no_grad()
    def predict(self, image: torch.Tensor, status: torch.Tensor) -> torch.Tensor:
        """[B, 8, 3] plans in eval mode (the module's mode is restored)."""
        was = self.training
        self.eval()
        try:
            return self.forward({"image": image, "status": status})["trajectory"]
        finally:
            self.train(was)

