"""Cross-modal FPN pixel decoder: the mask features, with the words attended at every scale."""
import functools
from typing import List, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from util.misc import NestedTensor, downsample_mask
from . import layers
from .layers import ChannelsLastConv2d, apply_in_chunks, checkpointed, post_norm_ffn


class ConvNorm(ChannelsLastConv2d):
    """Convolution, optional GroupNorm (`.norm`) and optional relu, as one module."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool,
                 norm_groups: int = 0, relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.norm = nn.GroupNorm(norm_groups, out_channels) if norm_groups else None
        self.relu = relu
        nn.init.kaiming_uniform_(self.weight, a=1)
        if bias:
            nn.init.constant_(self.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x, inplace=True) if self.relu else x


class VisionLanguageBlock(nn.Module):
    """Post-norm block: spatially reduced self-attention of the visual tokens, cross-attention to
    the words, feed-forward. With `sr_ratio` r > 1, queries, keys and values are nearest-downsampled
    by r for the self-attention and its output is bilinearly upsampled back."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 sr_ratio: int = 1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.sr_ratio = sr_ratio

    def self_attention(self, x: Tensor, query_pos: Tensor, padding_mask: Tensor, t: int, h: int, w: int) -> Tensor:
        """x, query_pos `[(T h w), B, C]`, padding_mask `[B, (T h w)]` -> `[(T h w), B, C]`."""
        if self.sr_ratio == 1:
            qk = x + query_pos
            return self.self_attn(qk, qk, x, key_padding_mask=padding_mask, need_weights=False)[0]
        size = (int(h / self.sr_ratio), int(w / self.sr_ratio))

        def reduce(tokens: Tensor) -> Tensor:
            maps = rearrange(tokens, '(t h w) b c -> (b t) c h w', t=t, h=h, w=w)
            return rearrange(F.interpolate(maps, size=size, mode='nearest'), '(b t) c h w -> (t h w) b c', t=t)

        mask = rearrange(padding_mask, 'b (t h w) -> (b t) h w', t=t, h=h, w=w)
        mask = downsample_mask(mask, size)
        mask = rearrange(mask, '(b t) h w -> b (t h w)', t=t)
        # Nearest downsampling selects tokens, so it commutes with adding the position embedding.
        reduced = reduce(x)
        qk = reduced + reduce(query_pos)
        attended = self.self_attn(qk, qk, reduced, key_padding_mask=mask, need_weights=False)[0]
        attended = rearrange(attended, '(t h w) b c -> (b t) c h w', t=t, h=size[0], w=size[1])
        attended = F.interpolate(attended, size=(h, w), mode='bilinear', align_corners=False)
        return rearrange(attended, '(b t) c h w -> (t h w) b c', t=t)

    def token_layers(self, tgt: Tensor, attended: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor,
                     memory_key_padding_mask: Tensor) -> Tensor:
        """What follows the self-attention, token by token: add & norm, cross-attention to the words,
        add & norm, feed-forward. tgt, attended, query_pos `[n, B, C]` -> `[n, B, C]`."""
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                       key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return post_norm_ffn(tgt, self.linear1, self.linear2, self.dropout, self.dropout3, self.norm3)

    def forward(self, tgt: Tensor, memory: Tensor, t: int, h: int, w: int, tgt_key_padding_mask: Tensor,
                memory_key_padding_mask: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        """tgt, query_pos `[(T h w), B, C]`; memory (words), pos `[L, B, C]` -> `[(T h w), B, C]`.

        Without autograd, the token-wise layers run over chunks of `layers.CHUNK_ELEMENTS`."""
        attended = self.self_attention(tgt, query_pos, tgt_key_padding_mask, t, h, w)
        if torch.is_grad_enabled():
            return self.token_layers(tgt, attended, query_pos, memory, pos, memory_key_padding_mask)
        rows = max(1, layers.CHUNK_ELEMENTS // tgt[0].numel())
        return apply_in_chunks(lambda *chunks: self.token_layers(*chunks, memory, pos, memory_key_padding_mask),
                               [tgt, attended, query_pos], rows)


class CrossModalFPNDecoder(nn.Module):
    """Top-down FPN over the stride-32, 16 and 8 encoder memory and the stride-4 backbone features.

    Stage s = 1..4 (strides 4..32) has `adapter_s` (1x1 conv + GN), `cross_attn_s` (a
    `VisionLanguageBlock`, spatial reduction 8, 4, 2, 1) and `layer_s` (3x3 conv + GN + relu).
    """

    sr_ratios = (8, 4, 2, 1)

    def __init__(self, feature_channels: List[int], conv_dim: int, mask_dim: int, dim_feedforward: int = 2048,
                 norm_groups: int = 8, nhead: int = 8, activation_checkpointing: bool = False):
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        for stage, in_channels in enumerate(feature_channels, start=1):
            self.add_module(f'adapter_{stage}', ConvNorm(in_channels, conv_dim, 1, False, norm_groups))
            self.add_module(f'layer_{stage}', ConvNorm(conv_dim, conv_dim, 3, False, norm_groups, relu=True))
        self.mask_features = ConvNorm(conv_dim, mask_dim, 3, bias=True)
        for stage, sr_ratio in enumerate(self.sr_ratios, start=1):
            block = VisionLanguageBlock(conv_dim, nhead, dim_feedforward=dim_feedforward, sr_ratio=sr_ratio)
            for p in block.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            self.add_module(f'cross_attn_{stage}', block)
        self.num_stages = len(feature_channels)

    def forward(self, features: List[NestedTensor], pos: List[Tensor], memory: List[Tensor], words: Tensor,
                word_mask: Tensor, text_pos: Tensor, num_frames: int) -> Tensor:
        """features: backbone levels (strides 4..32) `[(B T), C_l, h, w]` with masks; pos: their position
        embeddings; memory: encoder maps (strides 8, 16, 32) `[(B T), C, h, w]`; words, text_pos `[L, B, C]`,
        word_mask `[B, L]` -> mask features `[(B T), mask_dim, H/4, W/4]`."""
        inputs = [features[0].tensors] + list(memory)
        y = None
        for stage in range(self.num_stages, 0, -1):
            run_stage = functools.partial(self.stage, stage, mask=features[stage - 1].mask, num_frames=num_frames)
            y = checkpointed(run_stage, inputs[stage - 1], pos[stage - 1], words, word_mask, text_pos, y,
                             enabled=self.activation_checkpointing)
        return self.mask_features(y)

    def stage(self, stage: int, features: Tensor, pos: Tensor, words: Tensor, word_mask: Tensor, text_pos: Tensor,
              coarser: Optional[Tensor], mask: Tensor, num_frames: int) -> Tensor:
        """Stage `stage` of the top-down pass: its input level `[(B T), C_s, h, w]` (mask `[(B T), h, w]`),
        fused with the sentence and with the upsampled output of the coarser stage (None for the
        coarsest) -> `[(B T), conv_dim, h, w]`."""
        x = getattr(self, f'adapter_{stage}')(features)
        h, w = x.shape[-2:]
        x = getattr(self, f'cross_attn_{stage}')(
            tgt=rearrange(x, '(b t) c h w -> (t h w) b c', t=num_frames), memory=words, t=num_frames, h=h, w=w,
            tgt_key_padding_mask=rearrange(mask, '(b t) h w -> b (t h w)', t=num_frames),
            memory_key_padding_mask=word_mask, pos=text_pos,
            query_pos=rearrange(pos, '(b t) c h w -> (t h w) b c', t=num_frames))
        x = rearrange(x, '(t h w) b c -> (b t) c h w', t=num_frames, h=h, w=w)
        if coarser is not None:
            x = x.add_(F.interpolate(coarser, size=(h, w), mode='nearest'))
        return getattr(self, f'layer_{stage}')(x)
