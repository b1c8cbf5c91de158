"""Sine position embeddings: 2-D for feature maps, 1-D for words."""
import math

import torch
from einops import rearrange
from torch import Tensor, nn

from util.misc import NestedTensor


def _sine_features(positions: Tensor, num_feats: int, temperature: float) -> Tensor:
    """positions `[...]` -> `[..., num_feats]`: sin/cos pairs interleaved, frequency falling with the pair index."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor') / num_feats)
    angles = positions[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-D sine embedding of the valid (unpadded) area: `num_pos_feats` per axis, y features then x.

    Coordinates are normalised as (cumsum - 0.5) / (last + 1e-6) * 2π.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, tensor_list: NestedTensor) -> Tensor:
        """mask `[N, h, w]` (True on padding) -> `[N, 2*num_pos_feats, h, w]`."""
        not_mask = ~tensor_list.mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        pos_y = _sine_features(y_embed, self.num_pos_feats, self.temperature)
        pos_x = _sine_features(x_embed, self.num_pos_feats, self.temperature)
        return rearrange(torch.cat((pos_y, pos_x), dim=3), 'n h w c -> n c h w')


class PositionEmbeddingSine1D(nn.Module):
    """1-D sine embedding of word positions, normalised as cumsum / (last + 1e-6) * 2π."""

    def __init__(self, num_pos_feats: int = 256, temperature: float = 10000.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, mask: Tensor) -> Tensor:
        """mask `[B, L]` (True on padding) -> `[L, B, num_pos_feats]`."""
        x_embed = (~mask).cumsum(1, dtype=torch.float32)
        x_embed = x_embed / (x_embed[:, -1:] + 1e-6) * self.scale
        return rearrange(_sine_features(x_embed, self.num_pos_feats, self.temperature), 'b l c -> l b c')


def build_position_encoding(args) -> PositionEmbeddingSine:
    if args.position_embedding != 'sine':
        raise ValueError(f'unsupported position embedding {args.position_embedding!r} (only "sine")')
    return PositionEmbeddingSine(args.hidden_dim // 2)
