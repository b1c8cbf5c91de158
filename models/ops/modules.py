"""The multi-scale deformable attention module (Deformable DETR)."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .dispatch import ms_deform_attn
from .functions import Shapes


class MSDeformAttn(nn.Module):
    """Each query samples `n_points` locations per head and level around its reference point."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f'd_model ({d_model}) must be divisible by n_heads ({n_heads})')
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets whose bias points each head in its own direction, 1..n_points steps away."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        grid = directions[:, None, None, :] * steps[None, None, :, None]
        grid = grid.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def sampling_locations(self, query: Tensor, reference_points: Tensor, spatial_shapes: Tensor) -> Tensor:
        """query `[N, Lq, C]`, reference_points `[N, Lq, L, 2 or 4]` -> `[N, Lq, M, L, P, 2]` (x, y):
        the reference point plus the offsets, in pixels of each level (2-d references) or relative
        to the box size (4-d)."""
        offsets = rearrange(self.sampling_offsets(query), 'n q (m l p xy) -> n q m l p xy',
                            m=self.n_heads, l=self.n_levels, p=self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(reference_points.dtype)
            return torch.addcdiv(reference_points[:, :, None, :, None, :], offsets,
                                 normalizer[None, None, None, :, None, :])
        if reference_points.shape[-1] == 4:
            return (reference_points[:, :, None, :, None, :2]
                    + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        raise ValueError(f'reference points must have 2 or 4 coordinates, got {reference_points.shape[-1]}')

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, input_padding_mask: Optional[Tensor] = None,
                shapes: Optional[Shapes] = None) -> Tensor:
        """query `[N, Lq, C]`; reference_points `[N, Lq, L, 2]` (x, y) or `[N, Lq, L, 4]` (x, y, w, h),
        normalised; input_flatten `[N, S, C]`; spatial_shapes `[L, 2]` (h, w) and level_start_index
        `[L]` on the device, shapes: the same (h, w) as Python ints (read from spatial_shapes when
        not given); input_padding_mask `[N, S]` (True on padding) -> `[N, Lq, C]`."""
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill_(input_padding_mask[..., None], 0.0)
        value = rearrange(value, 'n s (m d) -> n s m d', m=self.n_heads)
        weights = rearrange(self.attention_weights(query), 'n q (m lp) -> n q m lp', m=self.n_heads)
        weights = rearrange(F.softmax(weights, -1), 'n q m (l p) -> n q m l p', l=self.n_levels)
        locations = self.sampling_locations(query, reference_points, spatial_shapes)
        output = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights, shapes)
        return self.output_proj(output)
