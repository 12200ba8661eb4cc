"""LTF-style regression planner (Latent TransFuser, navsim-agents-and-planners.md §3): a ResNet over the stitched
l0|f0|r0 cameras, the ego status through an MLP, one learned trajectory query decoded by a transformer over the image
tokens and the status token, an MLP to 8 poses (heading = tanh * pi). Trained with an L1 imitation loss
(`training.losses`). LTF's LiDAR-latent fusion stack and its agent / BEV auxiliary heads are left out.

Configs: the default is sized for CPU experiments; `ltf_navsim` (agents.planners.registry.PRESETS) is NAVSIM's
size: resnet34 at 1024 x 256, d_model 256, 8 heads, ffn 1024, 3 decoder layers (transfuser_config.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .backbone import NUM_POSES, CameraStatusEncoder, DecoderBlock, PlannerConfig, PlannerModule, mlp, seeded


@dataclass(frozen=True)
class LTFConfig(PlannerConfig):
    """PlannerConfig + num_decoder_layers (NAVSIM: 3, `tf_decoder_num_layers`)."""

    num_decoder_layers: int = 2


class LTFPlanner(PlannerModule):
    """forward(batch) -> {"trajectory": [B, 8, 3]} in train and eval mode."""

    planner_name = "ltf"
    array_buffers: tuple[str, ...] = ()

    def __init__(self, config: LTFConfig | None = None, *, load_weights: bool = True):
        super().__init__()
        self.config = config = config or LTFConfig()
        d = config.d_model
        with seeded(config.seed):
            self.encoder = CameraStatusEncoder(config, load_weights=load_weights)
            self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.decoder = nn.ModuleList(DecoderBlock(d, config.num_heads, config.ffn_dim, config.dropout)
                                         for _ in range(config.num_decoder_layers))
            self.head = mlp([d, config.ffn_dim, NUM_POSES * 3])

    def forward(self, batch: dict) -> dict:
        mem, _ = self.encoder(batch["image"], batch["status"])
        q = self.query.expand(mem.shape[0], -1, -1)
        for layer in self.decoder:
            q = layer(q, mem)
        out = self.head(q[:, 0]).view(-1, NUM_POSES, 3)
        traj = torch.cat([out[..., :2], torch.tanh(out[..., 2:]) * math.pi], -1)  # transfuser_model.py heading
        return {"trajectory": traj}
