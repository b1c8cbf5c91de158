"""Swin Transformer backbones: image Swin on every frame, Video Swin on whole clips.

`--backbone swin_{t,s,b,l}_p4w7` (patch 4, window 7 x 7) and `video_swin_{t,s,b}_p4w7` (patch 1 x 4 x 4,
window 8 x 7 x 7), initialised from the authors' ImageNet / Kinetics checkpoints (`--backbone_pretrained`).
Both bodies return the output of each of the four stages before its patch merging: strides 4, 8, 16, 32,
channels C, 2C, 4C, 8C, as `[(B T), C_l, h_l, w_l]` maps with their padding masks.

The blocks, the patch merging, the 3-D patch embedding and the window attentions are torchvision's
(`torchvision.models.swin_transformer`, `torchvision.models.video.swin_transformer`), arranged and named
as in the original BIFIT, so that its checkpoints load and ours load there (`backbone.0.body.`, then):

- image Swin: `patch_embed`, `layers.{i}.blocks.{j}`, `layers.{i}.downsample`, `norm{i}`;
- Video Swin: `patch_embed`, `layers.{i}.blocks.{j}`, `downsamples.{i}` (the original's video wrapper
  takes the patch mergings out of the stages);
- in every block, the MLP layers are `mlp.fc1` / `mlp.fc2` (torchvision's `mlp.0` / `mlp.3`) and the
  image Swin's `attn.relative_position_index` is the square `[49, 49]` (torchvision's is flat).

Where torchvision's image Swin computes something else than the authors' code, this module overrides the
minimum:

- the shift rule of the window attention (`AlwaysShiftedWindowAttention`);
- the patch embedding, which pads instead of dropping the remainder (`PatchEmbed2d`);
- the outputs: every stage's output through its own LayerNorm (the authors' `norm0..3`), instead of one
  final norm and a classifier.

torchvision's Video Swin computes what the authors' does (same padding, window shrinking, shift rule,
attention mask, relative position bias of the shrunk window, patch merging), so `VideoSwinTransformer`
only chooses the patch size and returns the stage outputs.
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock
from torchvision.models.video.swin_transformer import (PatchEmbed3d, ShiftedWindowAttention3d,
                                                       shifted_window_attention_3d)

from util.checkpoint import read_state_dict
from util.misc import NestedTensor, downsample_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwinSize:
    """Channels of the first stage, blocks per stage and attention heads per stage."""
    embed_dim: int
    depths: Tuple[int, int, int, int]
    num_heads: Tuple[int, int, int, int]


SIZES = {
    't': SwinSize(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    's': SwinSize(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    'b': SwinSize(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    'l': SwinSize(192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
IMAGE_SWINS = {f'swin_{size}_p4w7': SIZES[size] for size in 'tsbl'}
VIDEO_SWINS = {f'video_swin_{size}_p4w7': SIZES[size] for size in 'tsb'}
# Largest stochastic depth (drop path) rate, reached by the last block: the original's configuration of each
# backbone (its image Swin and Video Swin configs, which its video wrapper passes on).
DROP_PATH_RATES = {'swin_t_p4w7': 0.2, 'swin_s_p4w7': 0.2, 'swin_b_p4w7': 0.3, 'swin_l_p4w7': 0.3,
                   'video_swin_t_p4w7': 0.2, 'video_swin_s_p4w7': 0.2, 'video_swin_b_p4w7': 0.2}
DEFAULT_DROP_PATH = 0.2
PRETRAINED_REQUIRED = ("Swin backbones are initialised from the authors' checkpoint: "
                       "pass --backbone_pretrained PATH (or none)")


class AlwaysShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's 2-D window attention with the authors' shift rule and relative position index buffer.

    torchvision's `shifted_window_attention` cancels the shift along a side where the padded map is not
    larger than the window. The authors' Swin shifts every odd block by window // 2 whatever the map size,
    and masks (-100) the pairs of tokens from different regions of the padded map (slices (0, -w),
    (-w, -s), (-s, None) on each side). torchvision's 3-D window attention takes the shift as given and
    computes exactly that on one-frame clips (window 1 x w x w, shift 0 x s x s), so it is used here.
    """

    def define_relative_position_index(self) -> None:
        """torchvision's indices, kept square `[Wh*Ww, Wh*Ww]` as in the authors' checkpoints."""
        super().define_relative_position_index()
        tokens = self.window_size[0] * self.window_size[1]
        self.relative_position_index = self.relative_position_index.reshape(tokens, tokens)

    def forward(self, x: Tensor) -> Tensor:
        """x `[N, H, W, C]` -> `[N, H, W, C]`."""
        out = shifted_window_attention_3d(
            x[:, None], self.qkv.weight, self.proj.weight, self.get_relative_position_bias(),
            [1, *self.window_size], self.num_heads, [0, *self.shift_size],
            attention_dropout=self.attention_dropout, dropout=self.dropout,
            qkv_bias=self.qkv.bias, proj_bias=self.proj.bias, training=self.training)
        return out[:, 0]


class PatchEmbed2d(nn.Module):
    """The authors' patch embedding: frames `[N, 3, H, W]` -> `[N, ceil(H/p), ceil(W/p), C]`.

    The frames are zero-padded on the right/bottom to multiples of p before the p x p convolution of
    stride p (torchvision's stem drops the remainder instead), then LayerNorm.
    """

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.patch_size, 0, -h % self.patch_size))
        return self.norm(rearrange(self.proj(x), 'n c h w -> n h w c'))


class SwinStage(nn.Module):
    """The blocks of one resolution, `layers.{i}`; in the image Swin's layout also the patch merging that
    follows them (`downsample`, none in the last stage), which the body applies.

    With `use_checkpoint`, each block is recomputed in the backward pass instead of keeping its
    activations (only when training with gradients).
    """

    def __init__(self, blocks: List[nn.Module], downsample: Optional[nn.Module], use_checkpoint: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.use_checkpoint = use_checkpoint

    def forward(self, x: Tensor) -> Tensor:
        """x `[..., H, W, C]` -> the blocks' output `[..., H, W, C]`."""
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def with_authors_mlp_names(block: SwinTransformerBlock) -> SwinTransformerBlock:
    """torchvision's block with its MLP (Linear, GELU, Dropout, Linear, Dropout) named as the authors' one
    (`fc1`, `act`, `drop1`, `fc2`, `drop2`): the same modules computing the same."""
    block.mlp = nn.Sequential(OrderedDict(zip(('fc1', 'act', 'drop1', 'fc2', 'drop2'), block.mlp, strict=True)))
    return block


def swin_stages(size: SwinSize, window_size: List[int], drop_path_rate: float,
                attn_layer: Callable[..., nn.Module]) -> List[Tuple[List[nn.Module], Optional[nn.Module]]]:
    """The blocks of each of the four stages and the patch merging after them (none after the last):
    torchvision blocks (MLP ratio 4, qkv bias, no dropout); even blocks use plain windows, odd ones windows
    shifted by window // 2; the drop path rate grows linearly from 0 to `drop_path_rate` over all blocks;
    stage i has embed_dim * 2^i channels."""
    num_blocks = sum(size.depths)
    rates = iter([drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)])
    stages = []
    for i, (depth, heads) in enumerate(zip(size.depths, size.num_heads)):
        dim = size.embed_dim * 2 ** i
        blocks = [with_authors_mlp_names(SwinTransformerBlock(
            dim, heads, list(window_size), [w // 2 * (j % 2) for w in window_size],
            stochastic_depth_prob=next(rates), norm_layer=nn.LayerNorm, attn_layer=attn_layer))
            for j in range(depth)]
        merging = PatchMerging(dim, norm_layer=nn.LayerNorm) if i < len(size.depths) - 1 else None
        stages.append((blocks, merging))
    return stages


def stage_channels(size: SwinSize) -> List[int]:
    return [size.embed_dim * 2 ** i for i in range(len(size.depths))]


def stage_outputs(x: Tensor, stages: Sequence[SwinStage], mergings: Sequence[Optional[nn.Module]]) -> List[Tensor]:
    """Patch embeddings `[..., h, w, C]` -> each stage's output before its merging `[..., h_l, w_l, C_l]`;
    each merging halves the size, rounding up."""
    outputs = []
    for stage, merging in zip(stages, mergings):
        x = stage(x)
        outputs.append(x)
        if merging is not None:
            x = merging(x)
    return outputs


class SwinTransformer(nn.Module):
    """The image Swin's weights (`backbone.0.body`): `patch_embed`, `layers.{i}` with their `downsample`,
    and `norm{i}`, the LayerNorm of each stage's output (not in the ImageNet files: default init)."""

    def __init__(self, size: SwinSize, drop_path_rate: float, use_checkpoint: bool):
        super().__init__()
        stages = swin_stages(size, [7, 7], drop_path_rate, AlwaysShiftedWindowAttention)
        self.patch_embed = PatchEmbed2d(4, size.embed_dim)
        self.layers = nn.ModuleList(SwinStage(blocks, merging, use_checkpoint) for blocks, merging in stages)
        for i, channels in enumerate(stage_channels(size)):
            self.add_module(f'norm{i}', nn.LayerNorm(channels))

    def forward(self, frames: Tensor) -> List[Tensor]:
        """frames `[N, 3, H, W]` -> 4 levels `[N, C_l, ceil(H/s_l), ceil(W/s_l)]`."""
        outputs = stage_outputs(self.patch_embed(frames), self.layers, [stage.downsample for stage in self.layers])
        return [rearrange(getattr(self, f'norm{i}')(x), 'n h w c -> n c h w') for i, x in enumerate(outputs)]


class VideoSwinTransformer(nn.Module):
    """The Video Swin's weights (`backbone.0.body`): `patch_embed`, `layers.{i}.blocks` and the patch
    mergings apart, `downsamples.{i}`, as the original's video wrapper holds them.

    Patch 1 x 4 x 4, so that every frame keeps its own features. Window 8 x 7 x 7, shrunk to the input and
    not shifted along any dimension where the input is not larger than the window. As the original wrapper,
    the outputs are the stage outputs before merging, with no LayerNorm.
    """

    def __init__(self, size: SwinSize, drop_path_rate: float, use_checkpoint: bool):
        super().__init__()
        stages = swin_stages(size, [8, 7, 7], drop_path_rate, ShiftedWindowAttention3d)
        self.patch_embed = PatchEmbed3d([1, 4, 4], embed_dim=size.embed_dim, norm_layer=nn.LayerNorm)
        self.layers = nn.ModuleList(SwinStage(blocks, None, use_checkpoint) for blocks, _ in stages)
        self.downsamples = nn.ModuleList(merging for _, merging in stages[:-1])

    def forward(self, videos: Tensor) -> List[Tensor]:
        """videos `[B, T, 3, H, W]` -> 4 levels `[(B T), C_l, h_l, w_l]`."""
        x = self.patch_embed(rearrange(videos, 'b t c h w -> b c t h w'))
        outputs = stage_outputs(x, self.layers, [*self.downsamples, None])
        return [rearrange(y, 'b t h w c -> (b t) c h w') for y in outputs]


def with_masks(maps: Iterable[Tensor], mask: Tensor) -> List[NestedTensor]:
    """Feature maps `[N, C_l, h_l, w_l]` (in channels-last memory, like the ResNet's: a view of the
    stages' `[..., h, w, C]` output) with the padding mask `[N, H, W]` resized (nearest) to each."""
    return [NestedTensor(x.contiguous(memory_format=torch.channels_last), downsample_mask(mask, x.shape[-2:]))
            for x in maps]


def without_unused_weights(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An authors' Swin / Video Swin state dict without what the backbones do not hold or recompute: the
    classifier (`head.*`), the final `norm.*`, the buffers `relative_position_index` and `attn_mask`."""
    return {key: value for key, value in state_dict.items()
            if not key.startswith(('head.', 'norm.')) and not key.endswith(('relative_position_index', 'attn_mask'))}


class SwinBodyBase(nn.Module):
    """`backbone.0` of the Swin backbones: the weights as `body` (the original's layout) and the loading of
    the authors' ImageNet / Kinetics checkpoints into it.

    `takes_clips`: whether `forward` takes whole videos `[B, T, 3, H, W]` (see `Joiner`) or frames.
    `fresh_keys`: prefixes of the body's parameters that the authors' files do not hold (default init).
    """
    strides = [4, 8, 16, 32]
    takes_clips = False
    fresh_keys: Tuple[str, ...] = ()

    def __init__(self, body: nn.Module, size: SwinSize):
        super().__init__()
        self.body = body
        self.num_channels = stage_channels(size)

    @staticmethod
    def from_authors(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The authors' checkpoint (its `model` / `state_dict` entry) in the body's layout."""
        return without_unused_weights(state_dict)

    def load_authors_checkpoint(self, path: str, name: str) -> None:
        """Initialise the body from the authors' file; keys that are missing, unknown or of another shape
        are an error naming them."""
        state_dict = self.from_authors(read_state_dict(path))
        own = self.body.state_dict()
        missing = [k for k in own if k not in state_dict
                   and not k.endswith('relative_position_index') and not k.startswith(self.fresh_keys)]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [f'{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})'
                      for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        problems = [f'{what}: {_listing(keys)}' for what, keys in
                    (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', mismatched))
                    if keys]
        if problems:
            raise RuntimeError(f"{path} is not the authors' {name} checkpoint ({'; '.join(problems)})")
        self.body.load_state_dict(state_dict, strict=False)
        logger.info('backbone %s: weights from %s', name, path)


def _listing(keys: List[str], shown: int = 10) -> str:
    more = f' and {len(keys) - shown} more' if len(keys) > shown else ''
    return ', '.join(keys[:shown]) + more


class SwinBody(SwinBodyBase):
    """The authors' image Swin (patch 4, window 7 x 7) on every frame: frames `[N, 3, H, W]` with masks
    `[N, H, W]` -> 4 levels `[N, C_l, ceil(H/s_l), ceil(W/s_l)]`, each stage's output through its own
    LayerNorm."""
    fresh_keys = tuple(f'norm{i}.' for i in range(4))

    def __init__(self, size: SwinSize, drop_path_rate: float = DEFAULT_DROP_PATH, use_checkpoint: bool = False):
        super().__init__(SwinTransformer(size, drop_path_rate, use_checkpoint), size)

    def forward(self, frames: NestedTensor) -> List[NestedTensor]:
        return with_masks(self.body(frames.tensors), frames.mask)


class VideoSwinBody(SwinBodyBase):
    """The authors' Video Swin on whole clips: videos `[B, T, 3, H, W]` with masks `[B, T, H, W]` -> 4 levels
    `[(B T), C_l, h_l, w_l]` (see `VideoSwinTransformer`)."""
    takes_clips = True

    def __init__(self, size: SwinSize, drop_path_rate: float = DEFAULT_DROP_PATH, use_checkpoint: bool = False):
        super().__init__(VideoSwinTransformer(size, drop_path_rate, use_checkpoint), size)

    @staticmethod
    def from_authors(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The Kinetics checkpoint's `backbone.*` entries (the classifier `cls_head.*` is dropped) with the
        patch mergings `layers.{i}.downsample` moved to `downsamples.{i}`, and the patch embedding kernel
        `[C, 3, 2, 4, 4]` summed over time to `[C, 3, 1, 4, 4]` (the Kinetics models use patch 2 x 4 x 4)."""
        backbone = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
        converted = {re.sub(r'^layers\.(\d+)\.downsample\.', r'downsamples.\1.', k): v
                     for k, v in without_unused_weights(backbone).items()}
        if 'patch_embed.proj.weight' in converted:
            converted['patch_embed.proj.weight'] = converted['patch_embed.proj.weight'].sum(dim=2, keepdim=True)
        return converted

    def forward(self, videos: NestedTensor) -> List[NestedTensor]:
        return with_masks(self.body(videos.tensors), rearrange(videos.mask, 'b t h w -> (b t) h w'))


def build_swin_body(name: str, pretrained: Union[str, None, bool], train_backbone: bool,
                    use_checkpoint: bool) -> SwinBodyBase:
    """The body of `--backbone name`; `pretrained` as `backbone_weights_source` returns it: a path to the
    authors' checkpoint, False (nothing to load) or None (an error: there is no library default).
    All parameters train when `train_backbone`, none otherwise."""
    if name not in IMAGE_SWINS and name not in VIDEO_SWINS:
        raise ValueError(f'unknown Swin backbone {name!r}; choose one of {[*IMAGE_SWINS, *VIDEO_SWINS]}')
    if pretrained is None:
        raise ValueError(PRETRAINED_REQUIRED)
    if name in IMAGE_SWINS:
        body = SwinBody(IMAGE_SWINS[name], DROP_PATH_RATES[name], use_checkpoint)
    else:
        body = VideoSwinBody(VIDEO_SWINS[name], DROP_PATH_RATES[name], use_checkpoint)
    if pretrained is not False:
        body.load_authors_checkpoint(pretrained, name)
    body.requires_grad_(train_backbone)
    return body
