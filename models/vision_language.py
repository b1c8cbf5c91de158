"""Bidirectional vision-language interaction (before the transformer).

At every visual level, the words attend to the visual tokens (`text_fusion_module`), and the
visual tokens attend to the words (`fusion_module`); each attention output multiplies its queries.
The words carry their update from level to level and are finally pooled into the sentence feature
that becomes the decoder queries (`poolout_module`).
"""
from typing import List, Optional, Tuple

from einops import rearrange
from torch import Tensor, nn


class VisionLanguageFusion(nn.Module):
    """`tgt * Attention(query=tgt, key=memory + pos, value=memory)`: no residual, no norm."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor] = None,
                pos: Optional[Tensor] = None) -> Tensor:
        """tgt `[Lt, B, C]`, memory and pos `[Lm, B, C]`, mask `[B, Lm]` (True on padding) -> `[Lt, B, C]`."""
        key = memory if pos is None else memory + pos
        attended = self.multihead_attn(query=tgt, key=key, value=memory,
                                       key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        return tgt * attended


class SentencePooler(nn.Module):
    """tanh(dense(first word)): the sentence feature `[B, C]` of words `[L, B, C]`."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = nn.Tanh()

    def forward(self, words: Tensor) -> Tensor:
        return self.activation(self.dense(words[0]))


def bidirectional_interaction(text_fusion: VisionLanguageFusion, vision_fusion: VisionLanguageFusion,
                              srcs: List[Tensor], masks: List[Tensor], poses: List[Tensor],
                              words: Tensor, word_mask: Tensor, text_pos: Tensor,
                              num_frames: int) -> Tuple[List[Tensor], Tensor]:
    """Fuse every visual level with the text, level by level.

    srcs and poses `[(B T), C, h, w]`, masks `[(B T), h, w]` per level; words and text_pos `[L, B, C]`,
    word_mask `[B, L]`. Returns the text-enhanced levels (same shapes) and the vision-enhanced
    words `[L, B, C]`. The visual tokens always attend to the initial words.
    """
    fused_srcs = []
    fused_words = words
    for src, mask, pos in zip(srcs, masks, poses):
        h, w = src.shape[-2:]
        vision = rearrange(src, '(b t) c h w -> (t h w) b c', t=num_frames)
        vision_pos = rearrange(pos, '(b t) c h w -> (t h w) b c', t=num_frames)
        vision_mask = rearrange(mask, '(b t) h w -> b (t h w)', t=num_frames)
        fused_words = text_fusion(fused_words, vision, memory_key_padding_mask=vision_mask, pos=vision_pos)
        vision = vision_fusion(vision, words, memory_key_padding_mask=word_mask, pos=text_pos)
        fused_srcs.append(rearrange(vision, '(t h w) b c -> (b t) c h w', t=num_frames, h=h, w=w))
    return fused_srcs, fused_words
