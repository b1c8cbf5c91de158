"""Swin Transformer backbones: image Swin on every frame, Video Swin on whole clips.

`--backbone swin_{t,s,b,l}_p4w7` (patch 4, window 7 x 7) and `video_swin_{t,s,b}_p4w7` (patch 1 x 4 x 4,
window 8 x 7 x 7), initialised from the authors' ImageNet / Kinetics checkpoints (`--backbone_pretrained`).
Both bodies return the output of each of the four stages before its patch merging: strides 4, 8, 16, 32,
channels C, 2C, 4C, 8C, as `[(B T), C_l, h_l, w_l]` maps with their padding masks.

The blocks, the patch merging, the 3-D patch embedding and the window attentions are torchvision's
(`torchvision.models.swin_transformer`, `torchvision.models.video.swin_transformer`). The modules are laid
out as in the authors' files (`patch_embed`, `layers.{i}.blocks.{j}`, `layers.{i}.downsample`), so that a
checkpoint of theirs loads after renaming the MLP layers (their `mlp.fc1` / `mlp.fc2` are torchvision's
`mlp.0` / `mlp.3`, see `authors_to_torchvision_keys`). Where torchvision's image Swin computes something
else than the authors' code, this module overrides the minimum:

- the shift rule of the window attention (`AlwaysShiftedWindowAttention`);
- the patch embedding, which pads instead of dropping the remainder (`PatchEmbed2d`);
- the outputs: every stage's output through its own LayerNorm (`SwinBody.norms`, the authors' `norm0..3`),
  instead of one final norm and a classifier.

torchvision's Video Swin computes what the authors' does (same padding, window shrinking, shift rule,
attention mask, relative position bias of the shrunk window, patch merging), so `VideoSwinBody` only
chooses the patch size and returns the stage outputs.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock
from torchvision.models.video.swin_transformer import (PatchEmbed3d, ShiftedWindowAttention3d,
                                                       shifted_window_attention_3d)

from util.misc import NestedTensor
from .backbone import _read_state_dict, downsample_mask

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
# Largest stochastic depth (drop path) rate, reached by the last block: the authors' image Swin default, and
# the rate the original video wrapper (MTTR's `VideoSwinTransformerBackbone`, reused by ReferFormer) passes.
IMAGE_DROP_PATH = 0.2
VIDEO_DROP_PATH = 0.1
PRETRAINED_REQUIRED = ("Swin backbones are initialised from the authors' checkpoint: "
                       "pass --backbone_pretrained PATH (or none)")


class AlwaysShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's 2-D window attention with the authors' shift rule.

    torchvision's `shifted_window_attention` cancels the shift along a side where the padded map is not
    larger than the window. The authors' Swin shifts every odd block by window // 2 whatever the map size,
    and masks (-100) the pairs of tokens from different regions of the padded map (slices (0, -w),
    (-w, -s), (-s, None) on each side). torchvision's 3-D window attention takes the shift as given and
    computes exactly that on one-frame clips (window 1 x w x w, shift 0 x s x s), so it is used here.
    """

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
    """The blocks of one resolution, then the patch merging (none in the last stage): `layers.{i}`.

    With `use_checkpoint`, each block is recomputed in the backward pass instead of keeping its
    activations (only when training with gradients).
    """

    def __init__(self, blocks: List[nn.Module], downsample: Optional[nn.Module], use_checkpoint: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.use_checkpoint = use_checkpoint

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x `[..., H, W, C]` -> (the blocks' output `[..., H, W, C]`, the next stage's input: merged
        `[..., ceil(H/2), ceil(W/2), 2C]`, or the output itself in the last stage)."""
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x, (x if self.downsample is None else self.downsample(x))


def swin_stages(size: SwinSize, window_size: List[int], drop_path_rate: float,
                attn_layer: Callable[..., nn.Module], use_checkpoint: bool) -> List[SwinStage]:
    """The four stages of torchvision blocks (MLP ratio 4, qkv bias, no dropout): even blocks use plain
    windows, odd ones windows shifted by window // 2; the drop path rate grows linearly from 0 to
    `drop_path_rate` over all blocks; stage i has embed_dim * 2^i channels."""
    num_blocks = sum(size.depths)
    rates = iter([drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)])
    stages = []
    for i, (depth, heads) in enumerate(zip(size.depths, size.num_heads)):
        dim = size.embed_dim * 2 ** i
        blocks = [SwinTransformerBlock(dim, heads, list(window_size), [w // 2 * (j % 2) for w in window_size],
                                       stochastic_depth_prob=next(rates), norm_layer=nn.LayerNorm,
                                       attn_layer=attn_layer)
                  for j in range(depth)]
        downsample = PatchMerging(dim, norm_layer=nn.LayerNorm) if i < len(size.depths) - 1 else None
        stages.append(SwinStage(blocks, downsample, use_checkpoint))
    return stages


def with_masks(maps: Iterable[Tensor], mask: Tensor) -> List[NestedTensor]:
    """Feature maps `[N, C_l, h_l, w_l]` (in channels-last memory, like the ResNet's: a view of the
    stages' `[..., h, w, C]` output) with the padding mask `[N, H, W]` resized (nearest) to each."""
    return [NestedTensor(x.contiguous(memory_format=torch.channels_last), downsample_mask(mask, x.shape[-2:]))
            for x in maps]


def authors_to_torchvision_keys(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """A state dict of the authors' Swin / Video Swin in this module's layout.

    The classifier (`head.*`) and the final `norm.*` are dropped (the backbones do not use them), so are
    the buffers (`relative_position_index`, which this module recomputes, and `attn_mask`); the MLP
    layers are renamed.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith(('head.', 'norm.')) or key.endswith(('relative_position_index', 'attn_mask')):
            continue
        converted[key.replace('.mlp.fc1.', '.mlp.0.').replace('.mlp.fc2.', '.mlp.3.')] = value
    return converted


class SwinBodyBase(nn.Module):
    """Patch embedding and the four stages, shared by the image and the video Swin bodies.

    `takes_clips`: whether `forward` takes whole videos `[B, T, 3, H, W]` (see `Joiner`) or frames.
    `fresh_keys`: prefixes of the parameters that the authors' files do not hold (default init).
    """
    strides = [4, 8, 16, 32]
    takes_clips = False
    fresh_keys: Tuple[str, ...] = ()

    def __init__(self, patch_embed: nn.Module, stages: List[SwinStage], embed_dim: int):
        super().__init__()
        self.patch_embed = patch_embed
        self.layers = nn.ModuleList(stages)
        self.num_channels = [embed_dim * 2 ** i for i in range(len(stages))]

    def stage_outputs(self, x: Tensor) -> List[Tensor]:
        """Patch embeddings `[..., h, w, C]` -> each stage's output before its merging `[..., h_l, w_l, C_l]`."""
        outputs = []
        for stage in self.layers:
            output, x = stage(x)
            outputs.append(output)
        return outputs

    @staticmethod
    def from_authors(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The authors' checkpoint (its `model` / `state_dict` entry) in this module's layout."""
        return authors_to_torchvision_keys(state_dict)

    def load_authors_checkpoint(self, path: str, name: str) -> None:
        """Initialise from the authors' file; keys that are missing, unknown or of another shape are an
        error naming them."""
        state_dict = self.from_authors(_read_state_dict(path))
        own = self.state_dict()
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
        self.load_state_dict(state_dict, strict=False)
        logger.info('backbone %s: weights from %s', name, path)


def _listing(keys: List[str], shown: int = 10) -> str:
    more = f' and {len(keys) - shown} more' if len(keys) > shown else ''
    return ', '.join(keys[:shown]) + more


class SwinBody(SwinBodyBase):
    """The authors' image Swin (patch 4, window 7 x 7) on every frame: frames `[N, 3, H, W]` with masks
    `[N, H, W]` -> 4 levels `[N, C_l, ceil(H/s_l), ceil(W/s_l)]`: each stage's output through its own
    LayerNorm (`norms.{l}`, the authors' `norm{l}`; not in their ImageNet files, so default init)."""
    fresh_keys = ('norms.',)

    def __init__(self, size: SwinSize, drop_path_rate: float = IMAGE_DROP_PATH, use_checkpoint: bool = False):
        stages = swin_stages(size, [7, 7], drop_path_rate, AlwaysShiftedWindowAttention, use_checkpoint)
        super().__init__(PatchEmbed2d(4, size.embed_dim), stages, size.embed_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.num_channels)

    def forward(self, frames: NestedTensor) -> List[NestedTensor]:
        outputs = self.stage_outputs(self.patch_embed(frames.tensors))
        maps = [rearrange(norm(x), 'n h w c -> n c h w') for norm, x in zip(self.norms, outputs)]
        return with_masks(maps, frames.mask)


class VideoSwinBody(SwinBodyBase):
    """The authors' Video Swin on whole clips: videos `[B, T, 3, H, W]` with masks `[B, T, H, W]` -> 4 levels
    `[(B T), C_l, h_l, w_l]`.

    Patch 1 x 4 x 4, so that every frame keeps its own features (the Kinetics models use 2 x 4 x 4: their
    kernel is summed over time when loaded). Window 8 x 7 x 7, shrunk to the input and not shifted along any
    dimension where the input is not larger than the window. As the original wrapper, the outputs are the
    stage outputs before merging, with no LayerNorm (the final `norm` of the Kinetics model is unused).
    """
    takes_clips = True

    def __init__(self, size: SwinSize, drop_path_rate: float = VIDEO_DROP_PATH, use_checkpoint: bool = False):
        stages = swin_stages(size, [8, 7, 7], drop_path_rate, ShiftedWindowAttention3d, use_checkpoint)
        super().__init__(PatchEmbed3d([1, 4, 4], embed_dim=size.embed_dim, norm_layer=nn.LayerNorm),
                         stages, size.embed_dim)

    @staticmethod
    def from_authors(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The Kinetics checkpoint's `backbone.*` entries (the classifier `cls_head.*` is dropped), with the
        patch embedding kernel `[C, 3, 2, 4, 4]` summed over time to `[C, 3, 1, 4, 4]`."""
        backbone = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
        converted = authors_to_torchvision_keys(backbone)
        if 'patch_embed.proj.weight' in converted:
            converted['patch_embed.proj.weight'] = converted['patch_embed.proj.weight'].sum(dim=2, keepdim=True)
        return converted

    def forward(self, videos: NestedTensor) -> List[NestedTensor]:
        x = self.patch_embed(rearrange(videos.tensors, 'b t c h w -> b c t h w'))
        maps = [rearrange(y, 'b t h w c -> (b t) c h w') for y in self.stage_outputs(x)]
        return with_masks(maps, rearrange(videos.mask, 'b t h w -> (b t) h w'))


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
        body = SwinBody(IMAGE_SWINS[name], use_checkpoint=use_checkpoint)
    else:
        body = VideoSwinBody(VIDEO_SWINS[name], use_checkpoint=use_checkpoint)
    if pretrained is not False:
        body.load_authors_checkpoint(pretrained, name)
    body.requires_grad_(train_backbone)
    return body
