"""Dynamic mask head: every query predicts the weights of a tiny per-query network of 1x1
convolutions that turns the shared mask features (plus the pixel's coordinates relative to the
query's reference point) into that query's mask logits.

The first layer is computed as one shared projection of the mask features per frame plus a
per-query coordinate term, which equals the released per-query grouped convolution over
`T*Q` copies of the features without making those copies.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def dynamic_param_sizes(in_channels: int, channels: int, num_layers: int, rel_coord: bool) -> Tuple[List[int], List[int]]:
    """Sizes of the generated weights and biases of each layer, in the order they are generated."""
    if num_layers < 2:
        raise ValueError(f'--controller_layers must be at least 2, got {num_layers}')
    first_in = in_channels + 2 if rel_coord else in_channels
    weight_nums = [first_in * channels] + [channels * channels] * (num_layers - 2) + [channels]
    bias_nums = [channels] * (num_layers - 1) + [1]
    return weight_nums, bias_nums


def split_dynamic_params(params: Tensor, channels: int, weight_nums: List[int],
                         bias_nums: List[int]) -> Tuple[List[Tensor], List[Tensor]]:
    """params `[..., P]` -> weights `[..., out, in]` and biases `[..., out]` per layer."""
    splits = params.split(weight_nums + bias_nums, dim=-1)
    num_layers = len(weight_nums)
    weights, biases = [], []
    for layer in range(num_layers):
        out_channels = channels if layer < num_layers - 1 else 1
        weights.append(rearrange(splits[layer], '... (o i) -> ... o i', o=out_channels))
        biases.append(splits[num_layers + layer])
    return weights, biases


def mask_feature_locations(h: int, w: int, stride: int, device) -> Tuple[Tensor, Tensor]:
    """Pixel centres (x `[w]`, y `[h]`) of a stride-`stride` grid: stride * index + stride // 2."""
    xs = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device) + stride // 2
    ys = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device) + stride // 2
    return xs, ys


def dynamic_mask_logits(mask_features: Tensor, params: Tensor, reference_points: Tensor, channels: int,
                        weight_nums: List[int], bias_nums: List[int], rel_coord: bool, stride: int = 4) -> Tensor:
    """mask_features `[B, T, C, h, w]`, params `[B, T, Q, P]`, reference_points `[B, T, Q, 2]` (x, y in
    pixels of the input frame) -> mask logits `[B, T, Q, h, w]`."""
    b, t, c, h, w = mask_features.shape
    weights, biases = split_dynamic_params(params, channels, weight_nums, bias_nums)
    first_weight = weights[0]
    x = torch.einsum('btqoc,btchw->btqohw', first_weight[..., :c], mask_features)
    x = x + biases[0][..., None, None]
    if rel_coord:
        xs, ys = mask_feature_locations(h, w, stride, mask_features.device)
        weight_x, weight_y = first_weight[..., c], first_weight[..., c + 1]
        ref_x, ref_y = reference_points[..., 0, None], reference_points[..., 1, None]
        x = (x + (weight_x[..., None] * (ref_x[..., None] - xs))[..., None, :]
             + (weight_y[..., None] * (ref_y[..., None] - ys))[..., :, None])
    for weight, bias in zip(weights[1:], biases[1:]):
        x = torch.einsum('btqoi,btqihw->btqohw', weight, F.relu(x)) + bias[..., None, None]
    return x.squeeze(3)
