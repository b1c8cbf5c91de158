"""Deformable DETR encoder and decoder; the decoder interleaves the inter-frame interaction.

Levels are laid out per frame: `[(B T), S, C]` with S = sum of h_l * w_l over the 4 levels.
"""
import functools
from typing import List, Optional, Tuple

import torch
from einops import rearrange
from torch import Tensor, nn

from .inter_frame import InterFrameInteraction
from .layers import checkpointed, clones, post_norm_ffn
from .ops import MSDeformAttn
from .ops.functions import Shapes


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class DeformableTransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Optional[Tensor], shapes: Shapes) -> Tensor:
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask,
                                  shapes)
        src = self.norm1(src + self.dropout1(attended))
        return post_norm_ffn(src, self.linear1, self.linear2, self.dropout3, self.dropout4, self.norm2)


class DeformableTransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int, activation_checkpointing: bool = False):
        super().__init__()
        self.layers = clones(encoder_layer, num_layers)
        self.activation_checkpointing = activation_checkpointing

    @staticmethod
    def get_reference_points(spatial_shapes: List[Tuple[int, int]], valid_ratios: Tensor) -> Tensor:
        """Pixel centres of every level, normalised by the valid area: `[N, S, L, 2]`."""
        reference_points = []
        for level, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=valid_ratios.device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=valid_ratios.device), indexing='ij')
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * w)
            reference_points.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(reference_points, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src: Tensor, spatial_shapes: Tensor, shapes: Shapes,
                level_start_index: Tensor, valid_ratios: Tensor, pos: Tensor, padding_mask: Tensor) -> Tensor:
        reference_points = self.get_reference_points(shapes, valid_ratios)
        for layer in self.layers:
            src = checkpointed(functools.partial(layer, shapes=shapes), src, pos, reference_points, spatial_shapes,
                               level_start_index, padding_mask, enabled=self.activation_checkpointing)
        return src


class DeformableTransformerDecoderLayer(nn.Module):
    """Query self-attention -> deformable cross-attention to the visual levels -> feed-forward."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, src: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Optional[Tensor], shapes: Shapes) -> Tensor:
        """tgt, query_pos `[N, Q, C]`; reference_points `[N, Q, L, 2 or 4]`; src `[N, S, C]` -> `[N, Q, C]`."""
        q = k = rearrange(tgt + query_pos, 'n q c -> q n c')
        attended = self.self_attn(q, k, rearrange(tgt, 'n q c -> q n c'), need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(rearrange(attended, 'q n c -> n q c')))
        attended = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, level_start_index,
                                   padding_mask, shapes)
        tgt = self.norm1(tgt + self.dropout1(attended))
        return post_norm_ffn(tgt, self.linear1, self.linear2, self.dropout3, self.dropout4, self.norm3)


class DeformableTransformerDecoder(nn.Module):
    """Decoder layers, each followed by the inter-frame interaction and (optionally) box refinement."""

    def __init__(self, decoder_layer: nn.Module, num_layers: int, query_encoder_layers: InterFrameInteraction):
        super().__init__()
        self.decoder_layers = clones(decoder_layer, num_layers)
        self.query_encoder_layers = query_encoder_layers
        self.num_layers = num_layers
        # Set by the model for iterative box refinement (the model's own `bbox_embed` modules).
        self.bbox_embed: Optional[nn.ModuleList] = None

    def forward(self, tgt: Tensor, reference_points: Tensor, src: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, valid_ratios: Tensor, query_pos: Tensor,
                padding_mask: Tensor, num_frames: int, shapes: Shapes) -> Tuple[Tensor, Tensor]:
        """tgt, query_pos `[(B T), Q, C]`, reference_points `[(B T), Q, 2]` ->
        every layer's output `[layers, (B T), Q, C]` and reference points `[layers, (B T), Q, 2 or 4]`."""
        output = tgt
        outputs, references = [], []
        for layer_index, layer in enumerate(self.decoder_layers):
            if reference_points.shape[-1] == 4:
                reference_input = reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                reference_input = reference_points[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, reference_input, src, spatial_shapes, level_start_index, padding_mask,
                           shapes)
            output = self.query_encoder_layers(output, num_frames)
            if self.bbox_embed is not None:
                delta = self.bbox_embed[layer_index](output).float()
                if reference_points.shape[-1] == 4:
                    reference_points = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    xy = delta[..., :2] + inverse_sigmoid(reference_points)
                    reference_points = torch.cat([xy, delta[..., 2:]], -1).sigmoid()
                reference_points = reference_points.detach()
            outputs.append(output)
            references.append(reference_points)
        return torch.stack(outputs), torch.stack(references)


class DeformableTransformer(nn.Module):
    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 4,
                 num_decoder_layers: int = 4, num_query_encoder_layers: int = 1, dim_feedforward: int = 2048,
                 dropout: float = 0.1, num_feature_levels: int = 4, dec_n_points: int = 4, enc_n_points: int = 4,
                 activation_checkpointing: bool = False):
        super().__init__()
        self.d_model = d_model
        self.num_feature_levels = num_feature_levels
        encoder_layer = DeformableTransformerEncoderLayer(d_model, dim_feedforward, dropout,
                                                          num_feature_levels, nhead, enc_n_points)
        self.encoder = DeformableTransformerEncoder(encoder_layer, num_encoder_layers, activation_checkpointing)
        decoder_layer = DeformableTransformerDecoderLayer(d_model, dim_feedforward, dropout,
                                                          num_feature_levels, nhead, dec_n_points)
        inter_frame = InterFrameInteraction(d_model, nhead, dim_feedforward, dropout, num_query_encoder_layers)
        self.decoder = DeformableTransformerDecoder(decoder_layer, num_decoder_layers, inter_frame)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: Tensor) -> Tensor:
        """Fraction of valid columns and rows `[N, 2]` (w, h) of a padding mask `[N, h, w]`."""
        _, h, w = mask.shape
        valid_h = torch.sum(~mask[:, :, 0], 1)
        valid_w = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def forward(self, srcs: List[Tensor], masks: List[Tensor], pos_embeds: List[Tensor], tgt: Tensor,
                query_embed: Tensor, num_frames: int) -> Tuple[Tensor, List[Tensor], Tensor, Tensor]:
        """srcs and pos_embeds `[(B T), C, h, w]`, masks `[(B T), h, w]` per level; tgt `[(B T), Q, C]`;
        query_embed `[Q, C]`. Returns the decoder outputs `[layers, (B T), Q, C]`, the encoder memory
        of the first `levels - 1` levels as maps `[(B T), C, h, w]`, the initial reference points
        `[(B T), Q, 2]` and every layer's refined reference points `[layers, (B T), Q, 2 or 4]`."""
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        src_flatten = torch.cat([rearrange(src, 'n c h w -> n (h w) c') for src in srcs], 1)
        mask_flatten = torch.cat([rearrange(mask, 'n h w -> n (h w)') for mask in masks], 1)
        pos_flatten = torch.cat([rearrange(pos, 'n c h w -> n (h w) c') + self.level_embed[level]
                                 for level, pos in enumerate(pos_embeds)], 1)
        # Copied to the device without waiting for it; the Python `shapes` serve every host-side use.
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long).to(src_flatten.device, non_blocking=True)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)

        memory = self.encoder(src_flatten, spatial_shapes, shapes, level_start_index, valid_ratios,
                              pos_flatten, mask_flatten)

        query_pos = query_embed.unsqueeze(0).expand(tgt.shape[0], -1, -1)
        # Reference points and box refinements stay float32 under autocast: they place the samples.
        init_reference = self.reference_points(query_pos).float().sigmoid()
        hs, inter_references = self.decoder(tgt, init_reference, memory, spatial_shapes, level_start_index,
                                            valid_ratios, query_pos, mask_flatten, num_frames, shapes)

        level_memory = memory.split([h * w for h, w in shapes], dim=1)
        memory_maps = [rearrange(level_memory[level], 'n (h w) c -> n c h w', h=h, w=w)
                       for level, (h, w) in enumerate(shapes[:-1])]
        return hs, memory_maps, init_reference, inter_references


def build_deformable_transformer(args) -> DeformableTransformer:
    return DeformableTransformer(
        d_model=args.hidden_dim, nhead=args.nheads, num_encoder_layers=args.enc_layers,
        num_decoder_layers=args.dec_layers, num_query_encoder_layers=args.query_enc_layers,
        dim_feedforward=args.dim_feedforward, dropout=args.dropout, num_feature_levels=args.num_feature_levels,
        dec_n_points=args.dec_n_points, enc_n_points=args.enc_n_points,
        activation_checkpointing=args.activation_checkpointing)
