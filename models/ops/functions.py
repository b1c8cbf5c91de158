"""Multi-scale deformable attention (Deformable DETR) as plain PyTorch functions.

- `ms_deform_attn_pytorch`: the reference, one `grid_sample` per level; it materialises every
  sample of every channel `[N*M, D, Lq, L*P]` before weighting them.
- `ms_deform_attn_gather`: the same function as one weighted gather: the four bilinear neighbours
  of every sampling point are read from a table of the zero-padded levels with weights
  bilinear x attention (`F.embedding_bag`), so nothing of size `D * L * P` per query is stored;
  with autograd (`DeformableSampling`) its backward pass is that of the per-level `grid_sample`
  (`sampling_gradients`), over chunks of queries.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .. import layers

Shapes = Sequence[Tuple[int, int]]


def small_tensor(data, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor of a few constants on `device`, copied without waiting for the device."""
    return torch.tensor(data, dtype=dtype).to(device, non_blocking=True)


def level_shapes(spatial_shapes: Union[Tensor, Shapes]) -> List[Tuple[int, int]]:
    """(h, w) of every level as Python ints; reads a tensor back from its device."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def ms_deform_attn_pytorch(value: Tensor, spatial_shapes: Union[Tensor, Shapes], level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Bilinear sampling (zero padding, pixel centres at (i + 0.5) / size) of every level, weighted.

    value `[N, S, M, D]` (S = sum of h*w over levels), spatial_shapes `[L, 2]` (h, w; a tensor, read
    back from its device, or Python ints), sampling_locations `[N, Lq, M, L, P, 2]` (x, y in [0, 1]),
    attention_weights `[N, Lq, M, L, P]` -> `[N, Lq, M*D]`.
    """
    n, _, heads, channels = value.shape
    shapes = level_shapes(spatial_shapes)
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        level_value = rearrange(value_per_level[level], 'n (h w) m d -> (n m) d h w', h=h, w=w)
        level_grid = rearrange(grids[:, :, :, level], 'n q m p xy -> (n m) q p xy')
        sampled.append(F.grid_sample(level_value, level_grid, mode='bilinear',
                                     padding_mode='zeros', align_corners=False))
    weights = rearrange(attention_weights, 'n q m l p -> (n m) 1 q (l p)')
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return rearrange(output, '(n m) d q -> n q (m d)', n=n, m=heads, d=channels)


def zero_padded_levels(value: Tensor, shapes: Shapes) -> Tensor:
    """value `[N, S, M, D]` -> `[N, S', M, D]`: every level `[h, w]` padded with zeros to
    `[h + 3, w + 3]` (one row/column before, two after), levels concatenated in order."""
    levels = value.split([h * w for h, w in shapes], dim=1)
    padded = [F.pad(rearrange(level, 'n (h w) m d -> n h w m d', h=h, w=w), (0, 0, 0, 0, 1, 2, 1, 2))
              for level, (h, w) in zip(levels, shapes)]
    return torch.cat([rearrange(level, 'n h w m d -> n (h w) m d') for level in padded], dim=1)


def _gather_rows_and_weights(sampling_locations: Tensor, attention_weights: Tensor, shapes: Shapes,
                             level_rows: Tensor, index_dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Table rows `[N, Lq, M, L, P, 4]` of the four bilinear neighbours of every sampling point
    (top-left, top-right, bottom-left, bottom-right) and their weights, bilinear x attention, for
    the table of `zero_padded_levels` flattened to rows.

    level_rows `[N, 1, M, L, 1]`: the row of each (batch, head, level)'s padded pixel (0, 0).
    In padded pixels a location x sits at u = x * w + 0.5; clamping u to [0, w + 1] moves points
    that are entirely outside the map onto the zero padding, where they read zeros as before and,
    like before, get no gradient.
    """
    heads = sampling_locations.shape[2]
    device = sampling_locations.device
    sizes = small_tensor([(w, h) for h, w in shapes], sampling_locations.dtype, device)[:, None]  # [L, 1, 2]
    half = torch.full((), 0.5, dtype=sizes.dtype, device=device)
    padded = torch.addcmul(half, sampling_locations, sizes).clamp_(min=torch.zeros_like(sizes), max=sizes + 1)
    corner = padded.floor()
    fraction_x, fraction_y = (padded - corner).unbind(-1)
    column, row = corner.to(index_dtype).unbind(-1)
    row_step = small_tensor([(w + 3) * heads for _, w in shapes], index_dtype, device)[:, None]  # [L, 1]
    top_left = level_rows + column * heads + row * row_step
    bottom_left = top_left + row_step
    rows = torch.stack([top_left, top_left + heads, bottom_left, bottom_left + heads], -1)
    top = (1 - fraction_y) * attention_weights
    bottom = fraction_y * attention_weights
    left = 1 - fraction_x
    weights = torch.stack([top * left, top * fraction_x, bottom * left, bottom * fraction_x], -1)
    return rows, weights


def gathered_samples(value: Tensor, shapes: Shapes, sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The forward pass of `ms_deform_attn_gather` (not differentiable): weighted gathers (`F.embedding_bag`)
    of the four bilinear neighbours of every sampling point from the table of `zero_padded_levels`.
    Queries are processed in chunks of about `layers.CHUNK_ELEMENTS` sampling entries (query x head x
    level x point x corner; about 16 bytes an entry with the temporaries of its index and weight)."""
    n, _, heads, channels = value.shape
    queries, _, levels, points = sampling_locations.shape[1:5]
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    table = zero_padded_levels(value.to(dtype), shapes)
    index_dtype = torch.int32 if table.shape[:3].numel() < 2 ** 31 else torch.int64
    padded_areas = [(h + 3) * (w + 3) for h, w in shapes]
    level_starts = small_tensor([0] + padded_areas[:-1], torch.int64, value.device).cumsum(0)
    level_rows = ((torch.arange(n, device=value.device)[:, None, None] * table.shape[1] + level_starts)
                  * heads + torch.arange(heads, device=value.device)[:, None])  # [N, M, L]
    level_rows = level_rows[:, None, :, :, None].to(index_dtype)
    table = table.reshape(-1, channels)
    chunk = max(1, layers.CHUNK_ELEMENTS // (n * heads * levels * points * 4))
    outputs = []
    for start in range(0, queries, chunk):
        rows, weights = _gather_rows_and_weights(sampling_locations[:, start:start + chunk].to(dtype),
                                                 attention_weights[:, start:start + chunk].to(dtype),
                                                 shapes, level_rows, index_dtype)
        bags = rows.shape[:3].numel()
        sampled = F.embedding_bag(rows.reshape(bags, -1), table, per_sample_weights=weights.reshape(bags, -1),
                                  mode='sum')
        outputs.append(sampled.reshape(n, -1, heads * channels))
    return torch.cat(outputs, 1).to(value.dtype)


def sampling_gradients(grad_output: Tensor, value: Tensor, shapes: Shapes, sampling_locations: Tensor,
                       attention_weights: Tensor, needs: Tuple[bool, bool, bool]) -> List[Optional[Tensor]]:
    """The gradients of `ms_deform_attn_pytorch` with respect to (value, sampling_locations,
    attention_weights), those that `needs` asks for (None for the others), from grad_output `[N, Lq, M*D]`.

    Per level, the backward of `grid_sample` (`aten.grid_sampler_2d_backward`: the value's gradient
    scattered to the four bilinear neighbours, the locations' from the neighbours' differences) with the
    sample gradients `attention x grad_output`; the attention weights' gradient as the dot product of the
    re-sampled values with grad_output. Over chunks of queries whose samples `[(N M), D, q, P]` hold about
    `layers.CHUNK_ELEMENTS` elements."""
    need_value, need_locations, need_attention = needs
    n, _, heads, channels = value.shape
    queries, _, _, points = attention_weights.shape[1:]
    chunk = max(1, layers.CHUNK_ELEMENTS // (n * heads * channels * points))
    grad_per_head = rearrange(grad_output, 'n q (m d) -> (n m) d q 1', m=heads)
    grad_value = []
    grad_grid = [[] for _ in shapes]  # per level, the pieces of the query chunks in order
    grad_attention = [[] for _ in shapes]
    for level, ((h, w), level_value) in enumerate(zip(shapes, value.split([h * w for h, w in shapes], dim=1))):
        level_value = rearrange(level_value, 'n (h w) m d -> (n m) d h w', h=h, w=w)
        grid = rearrange(2 * sampling_locations[:, :, :, level] - 1, 'n q m p xy -> (n m) q p xy')
        attention = rearrange(attention_weights[:, :, :, level], 'n q m p -> (n m) 1 q p')
        level_grad_value = None
        for start in range(0, queries, chunk):
            part = slice(start, start + chunk)
            grad = grad_per_head[:, :, part]
            if need_value or need_locations:
                grad_input, grad_locations = torch.ops.aten.grid_sampler_2d_backward(
                    grad * attention[:, :, part], level_value, grid[:, part], 0, 0, False,
                    [need_value, need_locations])
                if need_value:
                    level_grad_value = grad_input if level_grad_value is None else level_grad_value.add_(grad_input)
                if need_locations:
                    grad_grid[level].append(grad_locations)
            if need_attention:
                sampled = F.grid_sample(level_value, grid[:, part], mode='bilinear', padding_mode='zeros',
                                        align_corners=False)
                grad_attention[level].append(torch.einsum('kdqp,kdqo->kqp', sampled, grad))
        if need_value:
            grad_value.append(rearrange(level_grad_value, '(n m) d h w -> n (h w) m d', n=n))

    def assemble(pieces_per_level: List[List[Tensor]], pattern: str) -> Tensor:
        levels = [torch.cat(pieces, dim=1) for pieces in pieces_per_level]
        return rearrange(torch.stack(levels, dim=1), pattern, n=n)

    return [torch.cat(grad_value, dim=1) if need_value else None,
            2 * assemble(grad_grid, '(n m) l q p xy -> n q m l p xy') if need_locations else None,
            assemble(grad_attention, '(n m) l q p -> n q m l p') if need_attention else None]


class DeformableSampling(torch.autograd.Function):
    """`ms_deform_attn_pytorch` with the forward pass of `ms_deform_attn_gather` (nothing of size `D * L * P`
    per query stored, only the inputs kept for the backward pass) and the backward pass of
    `sampling_gradients` (that of `grid_sample`)."""

    @staticmethod
    def forward(ctx, value: Tensor, shapes: Shapes, sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        ctx.shapes = shapes
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        return gathered_samples(value, shapes, sampling_locations, attention_weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        value, sampling_locations, attention_weights = ctx.saved_tensors
        need_value, _, need_locations, need_attention = ctx.needs_input_grad
        dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
        grads = sampling_gradients(grad_output.to(dtype), value.to(dtype), ctx.shapes, sampling_locations.to(dtype),
                                   attention_weights.to(dtype), (need_value, need_locations, need_attention))
        inputs = (value, sampling_locations, attention_weights)
        grad_value, grad_locations, grad_attention = [
            None if grad is None else grad.to(tensor.dtype) for grad, tensor in zip(grads, inputs)]
        return grad_value, None, grad_locations, grad_attention


def ms_deform_attn_gather(value: Tensor, shapes: Shapes, sampling_locations: Tensor,
                          attention_weights: Tensor) -> Tensor:
    """`ms_deform_attn_pytorch` as weighted gathers of the four bilinear neighbours of every point.

    value `[N, S, M, D]`, shapes: (h, w) of the L levels as Python ints, sampling_locations
    `[N, Lq, M, L, P, 2]`, attention_weights `[N, Lq, M, L, P]` -> `[N, Lq, M*D]` in value's dtype.
    Computes in the wider of the dtypes of value and locations (float32 for a half-precision value).
    With autograd, `DeformableSampling`: this forward pass, the backward pass of the per-level `grid_sample`.
    """
    inputs = (value, sampling_locations, attention_weights)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return DeformableSampling.apply(value, shapes, sampling_locations, attention_weights)
    return gathered_samples(value, shapes, sampling_locations, attention_weights)
