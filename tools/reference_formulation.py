"""The straightforward formulation of BIFIT's computations: the oracle of `tools/benchmark.py` and of the
tests of the fast paths (tests/test_fast_formulations.py). A library, not a command.

Inside `with reference_formulation(model):` the model computes the same function the way the
original implementation computed it:

- the dynamic mask head repeats the mask features for every query, concatenates the two relative
  coordinate channels and runs one grouped 1x1 convolution per layer over all copies;
- every `nn.MultiheadAttention` also returns its head-averaged attention weights (`need_weights=True`),
  so the attention matrix is materialised instead of going through fused scaled-dot-product attention;
- deformable attention samples every level with its own `grid_sample` and weights the stacked
  samples (`ms_deform_attn_pytorch`), reading the level shapes back from the shape tensor;
- the ResNet runs torchvision's modules (batch norm as a separate multiply and add after every
  convolution) in contiguous (NCHW) memory, and every feature map stays NCHW;
- the feed-forward blocks and the vision-language blocks of the pixel decoder run over all tokens
  at once (the latter add the position embedding before downsampling the self-attention input).

What to switch is found on the model itself: the modules of the types listed in `FAST_FORWARDS` (and
every `nn.MultiheadAttention`) get the straightforward forward, and every fast function of `FAST_FUNCTIONS`
is replaced wherever the model's code refers to it (in the Python modules that define the model's module
types). A fast function that none of them uses any more is an error, so that a renamed or moved fast path
cannot silently leave the oracle comparing the fast formulation with itself. Everything is restored on exit.
"""
import argparse
import contextlib
import functools
import sys
import types
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple
from unittest import mock

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.backbone import ResNetBody  # noqa: E402
from models.dynamic_mask_head import dynamic_mask_logits  # noqa: E402
from models.layers import post_norm_ffn  # noqa: E402
from models.ops import ms_deform_attn, ms_deform_attn_pytorch  # noqa: E402
from models.pixel_decoder import VisionLanguageBlock  # noqa: E402
from util.misc import NestedTensor, downsample_mask  # noqa: E402


def compute_locations(h: int, w: int, stride: int, device: torch.device) -> Tensor:
    """Pixel centres `[h*w, 2]` (x, y) of a stride-`stride` grid, row by row."""
    shifts_x = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing='ij')
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def parse_dynamic_params(params: Tensor, channels: int, weight_nums: List[int],
                         bias_nums: List[int]) -> Tuple[List[Tensor], List[Tensor]]:
    """params `[N, P]` -> grouped-convolution weights `[N*out, in, 1, 1]` and biases `[N*out]`."""
    num_insts = params.shape[0]
    num_layers = len(weight_nums)
    splits = list(torch.split_with_sizes(params, weight_nums + bias_nums, dim=1))
    weights, biases = splits[:num_layers], splits[num_layers:]
    for layer in range(num_layers):
        out_channels = channels if layer < num_layers - 1 else 1
        weights[layer] = weights[layer].reshape(num_insts * out_channels, -1, 1, 1)
        biases[layer] = biases[layer].reshape(num_insts * out_channels)
    return weights, biases


def grouped_conv_mask_logits(mask_features: Tensor, params: Tensor, reference_points: Tensor, channels: int,
                             weight_nums: List[int], bias_nums: List[int], rel_coord: bool,
                             stride: int = 4) -> Tensor:
    """The released dynamic mask head: mask_features `[B, T, C, h, w]`, params `[B, T, Q, P]`,
    reference_points `[B, T, Q, 2]` (pixels) -> mask logits `[B, T, Q, h, w]`."""
    b, t, _, h, w = mask_features.shape
    q = params.shape[2]
    features = repeat(mask_features, 'b t c h w -> b t q c h w', q=q)
    if rel_coord:
        locations = compute_locations(h, w, stride, mask_features.device)
        relative_coords = reference_points[:, :, :, None, :] - locations  # [B, T, Q, h*w, 2]
        relative_coords = rearrange(relative_coords, 'b t q (h w) xy -> b t q xy h w', h=h, w=w)
        features = torch.cat([features, relative_coords.to(features.dtype)], dim=3)
    x = features.reshape(1, -1, h, w)
    num_insts = b * t * q
    weights, biases = parse_dynamic_params(params.reshape(num_insts, -1), channels, weight_nums, bias_nums)
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, weight, bias=bias, groups=num_insts)
        if layer < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(b, t, q, h, w)


def attention_returning_weights(module: nn.MultiheadAttention):
    """`module.forward` that always computes the head-averaged attention weights."""
    forward = type(module).forward

    @functools.wraps(forward)
    def forward_with_weights(*args, **kwargs):
        kwargs['need_weights'] = True
        return forward(module, *args, **kwargs)
    return forward_with_weights


def per_level_grid_sample(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor, shapes=None) -> Tensor:
    """`ms_deform_attn` as the original PyTorch path: the level shapes are read from the tensor."""
    return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def torchvision_resnet_forward(self: ResNetBody, frames: NestedTensor) -> List[NestedTensor]:
    """`ResNetBody.forward` through torchvision's own modules, NCHW."""
    return [NestedTensor(x, downsample_mask(frames.mask, x.shape[-2:])) for x in self.body(frames.tensors).values()]


def vision_language_block_all_tokens(self: VisionLanguageBlock, tgt: Tensor, memory: Tensor, t: int, h: int, w: int,
                                     tgt_key_padding_mask: Tensor, memory_key_padding_mask: Tensor, pos: Tensor,
                                     query_pos: Tensor) -> Tensor:
    """`VisionLanguageBlock.forward` over all tokens at once, position added before downsampling."""
    qk, value, mask = tgt + query_pos, tgt, tgt_key_padding_mask
    if self.sr_ratio > 1:
        size = (int(h / self.sr_ratio), int(w / self.sr_ratio))

        def reduce(tokens: Tensor) -> Tensor:
            maps = rearrange(tokens, '(t h w) b c -> (b t) c h w', t=t, h=h, w=w)
            return rearrange(F.interpolate(maps, size=size, mode='nearest'), '(b t) c h w -> (t h w) b c', t=t)

        qk, value = reduce(qk), reduce(value)
        mask = rearrange(mask, 'b (t h w) -> (b t) h w', t=t, h=h, w=w)
        mask = rearrange(F.interpolate(mask[None].float(), size=size, mode='nearest').bool()[0],
                         '(b t) h w -> b (t h w)', t=t)
    attended = self.self_attn(qk, qk, value, key_padding_mask=mask)[0]
    if self.sr_ratio > 1:
        attended = rearrange(attended, '(t h w) b c -> (b t) c h w', t=t, h=size[0], w=size[1])
        attended = F.interpolate(attended, size=(h, w), mode='bilinear', align_corners=False)
        attended = rearrange(attended, '(b t) c h w -> (t h w) b c', t=t)
    tgt = self.norm1(tgt + self.dropout1(attended))
    attended = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                   key_padding_mask=memory_key_padding_mask)[0]
    tgt = self.norm2(tgt + self.dropout2(attended))
    return unchunked_post_norm_ffn(tgt, self.linear1, self.linear2, self.dropout, self.dropout3, self.norm3)


def unchunked_post_norm_ffn(x: Tensor, linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module,
                            residual_dropout: nn.Module, norm: nn.LayerNorm) -> Tensor:
    """`norm(x + residual_dropout(linear2(dropout(relu(linear1(x))))))` over all tokens at once."""
    return norm(x + residual_dropout(linear2(dropout(F.relu(linear1(x))))))


FAST_FUNCTIONS: Dict[Callable, Callable] = {
    dynamic_mask_logits: grouped_conv_mask_logits,
    ms_deform_attn: per_level_grid_sample,
    post_norm_ffn: unchunked_post_norm_ffn,
}
FAST_FORWARDS: Dict[type, Callable] = {
    ResNetBody: torchvision_resnet_forward,
    VisionLanguageBlock: vision_language_block_all_tokens,
}


def function_switches(model: nn.Module) -> List[Tuple[types.ModuleType, str, Callable]]:
    """(Python module, global name, straightforward function) for every reference to a fast function in the
    Python modules that define the model's module types; a RuntimeError names any fast function that none
    of them refers to."""
    python_modules = {sys.modules[type(module).__module__] for module in model.modules()}
    switches, found = [], set()
    for python_module in sorted(python_modules, key=lambda m: m.__name__):
        for name, value in vars(python_module).items():
            fast = next((function for function in FAST_FUNCTIONS if value is function), None)
            if fast is not None:
                switches.append((python_module, name, FAST_FUNCTIONS[fast]))
                found.add(fast)
    missing = [f'{fast.__module__}.{fast.__name__}' for fast in FAST_FUNCTIONS if fast not in found]
    if missing:
        raise RuntimeError(f'reference_formulation: no module of this model calls {", ".join(missing)} any more; '
                           'update FAST_FUNCTIONS in tools/reference_formulation.py to the fast path that replaced it')
    return switches


def switch_off_dropout(model: nn.Module) -> None:
    """Every dropout of `model` at p = 0: its `nn.Dropout` modules (those of `--dropout`, the pixel decoder's
    fixed 0.1, the text encoder's) and the attention-weight dropout of every `nn.MultiheadAttention`, so that
    two formulations' training losses and gradients can be compared."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0


@contextlib.contextmanager
def reference_formulation(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` (a BIFIT) in the straightforward formulation inside the `with` block."""
    switches = function_switches(model)
    with contextlib.ExitStack() as stack:
        for python_module, name, straightforward in switches:
            stack.enter_context(mock.patch.object(python_module, name, straightforward))
        for module in model.modules():
            forward = next((f for kind, f in FAST_FORWARDS.items() if isinstance(module, kind)), None)
            if forward is not None:
                stack.enter_context(mock.patch.object(module, 'forward', types.MethodType(forward, module)))
            if isinstance(module, nn.MultiheadAttention):
                stack.enter_context(mock.patch.object(module, 'forward', attention_returning_weights(module)))
        yield model


if __name__ == '__main__':
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit('tools/reference_formulation.py is a library (see --help): compare the formulations with '
             'python tools/benchmark.py')
