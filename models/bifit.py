"""BIFIT: the whole network, from a video and a sentence to per-frame boxes and masks.

Data flow (B clips, T frames, Q queries per frame, C = hidden_dim, L words):
backbone -> input projections (4 levels) -> bidirectional vision-language interaction
(`vision_language.py`) -> deformable transformer with the inter-frame interaction after every
decoder layer (`deformable_transformer.py`, `inter_frame.py`) -> class/box heads per decoder layer;
cross-modal FPN mask features (`pixel_decoder.py`) -> dynamic mask head (`dynamic_mask_head.py`).
"""
import logging
import math
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from util.benchmarks import num_classes
from util.misc import NestedTensor, downsample_mask, nested_tensor_from_videos_list
from .backbone import build_backbone
from .deformable_transformer import DeformableTransformer, build_deformable_transformer, inverse_sigmoid
from .dynamic_mask_head import dynamic_mask_logits, dynamic_param_sizes
from .layers import MLP, ChannelsLastConv2d, clones
from .pixel_decoder import CrossModalFPNDecoder
from .position_encoding import PositionEmbeddingSine1D
from .text_encoder import FeatureResizer, load_text_encoder
from .vision_language import SentencePooler, VisionLanguageFusion, bidirectional_interaction

logger = logging.getLogger(__name__)


class VisualFeatures(NamedTuple):
    """What the network computes from the frames alone (B clips of T frames; T = 1 for A2D/JHMDB): the
    backbone levels `[(B T), C_l, h, w]` with their masks and position embeddings `pos`, and the projected
    levels of the transformer `srcs`, `masks`, `poses` (see `BIFIT.visual_levels`)."""
    features: List[NestedTensor]
    pos: List[Tensor]
    srcs: List[Tensor]
    masks: List[Tensor]
    poses: List[Tensor]
    num_frames: int


class BIFIT(nn.Module):
    """Referring video object segmentation: `model(samples, captions, targets)`.

    samples: a list of B videos `[T, 3, H_i, W_i]` or a `NestedTensor` `[B, T, 3, H, W]` with mask
    `[B, T, H, W]` (True on padding); captions: B strings; targets: B dicts with `size` (h, w of the
    clip before padding) and, for A2D/JHMDB, `valid_indices` (the annotated frame: T becomes 1).
    Returns `pred_logits [B, T, Q, K]`, `pred_boxes [B, T, Q, 4]` (cx, cy, w, h of the padded frame),
    `pred_masks [B, T, Q, H/4, W/4]`, `aux_outputs` (earlier decoder layers) and, in eval mode,
    `reference_points [B, T, Q, 2]` (the last decoder layer's input reference points).

    The submodules are registered in the original's order (transformer, heads, query embedding, input
    projections, backbone, text encoder, ...): `state_dict()` and `named_parameters()` list the weights
    in the order of the original's checkpoints, and so do the optimizer's groups.
    """

    def __init__(self, backbone: nn.Module, transformer: DeformableTransformer, text_encoder: nn.Module,
                 tokenizer, num_classes: int, num_queries: int, mask_dim: int = 256, dim_feedforward: int = 2048,
                 controller_layers: int = 3, dynamic_mask_channels: int = 8, aux_loss: bool = True,
                 with_box_refine: bool = True, rel_coord: bool = True, freeze_text_encoder: bool = False,
                 activation_checkpointing: bool = False):
        super().__init__()
        hidden_dim = transformer.d_model
        num_levels = transformer.num_feature_levels
        num_decoder_layers = transformer.decoder.num_layers
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.with_box_refine = with_box_refine
        self.transformer = transformer

        class_embed = nn.Linear(hidden_dim, num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0)
        if with_box_refine:
            self.class_embed = clones(class_embed, num_decoder_layers)
            self.bbox_embed = clones(bbox_embed, num_decoder_layers)
            self.transformer.decoder.bbox_embed = self.bbox_embed
        else:
            self.class_embed = nn.ModuleList([class_embed] * num_decoder_layers)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_decoder_layers)
        nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)

        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        in_channels = backbone.num_channels[-3:]
        projections = [nn.Sequential(ChannelsLastConv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
                       for c in in_channels]
        downsampling = [ChannelsLastConv2d(in_channels[-1], hidden_dim, kernel_size=3, stride=2, padding=1)
                        for _ in range(num_levels - len(in_channels))]
        projections += [nn.Sequential(conv, nn.GroupNorm(32, hidden_dim)) for conv in downsampling]
        self.input_proj = nn.ModuleList(projections)
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.constant_(projection[0].bias, 0)
        self.backbone = backbone

        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        self.resizer = FeatureResizer(text_encoder.config.hidden_size, hidden_dim, dropout=0.1)
        self.text_pos = PositionEmbeddingSine1D(hidden_dim)
        self.fusion_module = VisionLanguageFusion(hidden_dim, nhead=8)
        self.text_fusion_module = VisionLanguageFusion(hidden_dim, nhead=8)
        self.poolout_module = SentencePooler(hidden_dim)

        self.pixel_decoder = CrossModalFPNDecoder([backbone.num_channels[0]] + [hidden_dim] * 3, conv_dim=hidden_dim,
                                                  mask_dim=mask_dim, dim_feedforward=dim_feedforward,
                                                  activation_checkpointing=activation_checkpointing)
        self.rel_coord = rel_coord
        self.dynamic_mask_channels = dynamic_mask_channels
        self.weight_nums, self.bias_nums = dynamic_param_sizes(mask_dim, dynamic_mask_channels,
                                                               controller_layers, rel_coord)
        self.controller = MLP(hidden_dim, hidden_dim, sum(self.weight_nums) + sum(self.bias_nums), 3)
        for layer in self.controller.layers:
            nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(layer.weight)

    def max_words(self) -> int:
        """The most tokens the text encoder takes: its positions, less RoBERTa's offset (padding index + 1)."""
        config = self.text_encoder.config
        return config.max_position_embeddings - config.pad_token_id - 1

    def tokenize(self, captions: List[str]):
        """The tokens of `captions`, padded to the longest (as the original); (new) a sentence longer than the
        text encoder takes is cut to `max_words` tokens with a warning naming it, where the original fails."""
        tokenized = self.tokenizer(captions, padding='longest', return_tensors='pt')
        limit = self.max_words()
        if tokenized['input_ids'].shape[1] <= limit:
            return tokenized
        for caption, length in zip(captions, tokenized['attention_mask'].sum(1).tolist()):
            if length > limit:
                shown = caption if len(caption) <= 80 else caption[:77] + '...'
                logger.warning('the expression "%s" has %d tokens, more than the %d the text encoder takes: '
                               'cut to its first %d', shown, length, limit, limit)
        return self.tokenizer(captions, padding='longest', truncation=True, max_length=limit, return_tensors='pt')

    def encode_text(self, captions: Sequence[str], device: torch.device) -> Tuple[Tensor, Tensor]:
        """captions -> resized word features `[L, B, C]` and their padding mask `[B, L]` (True on padding)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError('captions must be a list of strings, one per video')
        tokenized = self.tokenize(list(captions)).to(device, non_blocking=True)
        attention_mask = tokenized['attention_mask']
        if self.text_encoder.config._attn_implementation == 'sdpa':
            # A ready 4-D mask: from the 2-D one transformers would test on the host whether any
            # word is padding, which waits for the device.
            attention_mask = attention_mask[:, None, None, :].bool()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
            encoded = self.text_encoder(input_ids=tokenized['input_ids'], attention_mask=attention_mask)
        words = self.resizer(encoded.last_hidden_state)
        return rearrange(words, 'b l c -> l b c'), tokenized['attention_mask'].ne(1)

    def visual_levels(self, features: List[NestedTensor], pos: List[Tensor],
                      frame_mask: Tensor) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Project the last three backbone levels and add the stride-64 one: sources `[(B T), C, h, w]`,
        padding masks `[(B T), h, w]`, position embeddings `[(B T), C, h, w]`."""
        srcs = [projection(feature.tensors) for projection, feature in zip(self.input_proj, features[-3:])]
        masks = [feature.mask for feature in features[-3:]]
        poses = list(pos[-3:])
        for projection in self.input_proj[len(srcs):]:
            src = projection(features[-1].tensors if len(srcs) == 3 else srcs[-1])
            mask = downsample_mask(frame_mask, src.shape[-2:])
            srcs.append(src)
            masks.append(mask)
            poses.append(self.backbone[1](NestedTensor(src, mask)).to(src.dtype))
        return srcs, masks, poses

    def encode_visual(self, samples: NestedTensor, targets: List[Dict]) -> VisualFeatures:
        """The sentence-independent part of the forward pass: backbone and input projections of `samples`
        `[B, T, 3, H, W]` (for A2D/JHMDB, only the annotated frames of `targets` are kept)."""
        b = len(targets)
        features, pos = self.backbone(samples)
        frame_mask = rearrange(samples.mask, 'b t h w -> (b t) h w')
        t = frame_mask.shape[0] // b
        if 'valid_indices' in targets[0]:
            keep = torch.cat([i * t + target['valid_indices'].reshape(-1) for i, target in enumerate(targets)])
            keep = keep.to(samples.tensors.device, non_blocking=True)
            features = [NestedTensor(f.tensors.index_select(0, keep), f.mask.index_select(0, keep)) for f in features]
            pos = [p.index_select(0, keep) for p in pos]
            frame_mask = frame_mask.index_select(0, keep)
            t = 1
        srcs, masks, poses = self.visual_levels(features, pos, frame_mask)
        return VisualFeatures(features, pos, srcs, masks, poses, t)

    def forward(self, samples, captions: Sequence[str], targets: List[Dict]) -> Dict:
        if not isinstance(samples, NestedTensor):
            samples = nested_tensor_from_videos_list(samples)
        words, word_mask = self.encode_text(captions, samples.tensors.device)
        return self.decode(self.encode_visual(samples, targets), words, word_mask, targets)

    def forward_sentences(self, samples, captions: Sequence[str], targets: List[Dict]) -> List[Dict]:
        """One clip (`samples` and `targets` of length 1) and several sentences: the outputs of
        `model(samples, [caption], targets)` for each caption (identical in eval mode), the visual part computed
        once. The sentences run one after another: batched over the sentences (the visual features repeated),
        4 sentences of a 3-frame 360x640 clip took 21 s and +1.7 GB on 2 CPU threads against 16 s and +0.65 GB,
        and padding the sentences to one length changes the outputs by float rounding."""
        if not isinstance(samples, NestedTensor):
            samples = nested_tensor_from_videos_list(samples)
        if len(targets) != 1:
            raise ValueError(f'forward_sentences takes one clip, got {len(targets)}')
        visual = self.encode_visual(samples, targets)
        return [self.decode(visual, *self.encode_text([caption], samples.tensors.device), targets)
                for caption in captions]

    def decode(self, visual: VisualFeatures, words: Tensor, word_mask: Tensor, targets: List[Dict]) -> Dict:
        """The sentence-dependent part of the forward pass: words `[L, B, C]` and their padding mask
        `[B, L]` (of `encode_text`) with the visual features of `encode_visual` -> the outputs of `forward`."""
        b = len(targets)
        t = visual.num_frames
        device = words.device
        text_pos = self.text_pos(word_mask)
        srcs, fused_words = bidirectional_interaction(self.text_fusion_module, self.fusion_module, visual.srcs,
                                                      visual.masks, visual.poses, words, word_mask, text_pos, t)
        sentence = self.poolout_module(fused_words)

        queries = repeat(sentence, 'b c -> (b t) q c', t=t, q=self.num_queries)
        hs, memory, init_reference, inter_references = self.transformer(
            srcs, visual.masks, visual.poses, queries, self.query_embed.weight, num_frames=t)

        logits, boxes = [], []
        for layer, output in enumerate(hs):
            reference = inverse_sigmoid(init_reference if layer == 0 else inter_references[layer - 1])
            delta = self.bbox_embed[layer](output).float()
            if reference.shape[-1] == 4:
                box = delta + reference
            else:
                box = torch.cat([delta[..., :2] + reference, delta[..., 2:]], -1)
            logits.append(self.class_embed[layer](output))
            boxes.append(box.sigmoid())

        mask_features = self.pixel_decoder(visual.features, visual.pos, memory, words, word_mask, text_pos,
                                           num_frames=t)
        mask_features = rearrange(mask_features, '(b t) c h w -> b t c h w', b=b)
        frame_sizes = torch.stack([torch.as_tensor(target['size']) for target in targets])
        frame_sizes = frame_sizes.to(device, torch.float32, non_blocking=True)
        scale = frame_sizes.flip(-1)[:, None, None, :]
        masks_per_layer = []
        for layer, output in enumerate(hs):
            params = rearrange(self.controller(output), '(b t) q p -> b t q p', b=b)
            references = rearrange(inter_references[layer, ..., :2], '(b t) q xy -> b t q xy', b=b) * scale
            masks_per_layer.append(dynamic_mask_logits(mask_features, params, references, self.dynamic_mask_channels,
                                                       self.weight_nums, self.bias_nums, self.rel_coord))

        def per_clip(x: Tensor) -> Tensor:
            return rearrange(x, '(b t) q k -> b t q k', b=b)

        out = {'pred_logits': per_clip(logits[-1]), 'pred_boxes': per_clip(boxes[-1]),
               'pred_masks': masks_per_layer[-1]}
        if self.aux_loss:
            out['aux_outputs'] = [{'pred_logits': per_clip(a), 'pred_boxes': per_clip(c), 'pred_masks': m}
                                  for a, c, m in zip(logits[:-1], boxes[:-1], masks_per_layer[:-1])]
        if not self.training:
            last_input = inter_references[-2] if len(hs) > 1 else init_reference
            out['reference_points'] = per_clip(last_input[..., :2])
        return out


def check_supported(args) -> None:
    if args.two_stage:
        raise ValueError('--two_stage is not supported by BIFIT (the decoder queries come from the sentence)')
    if args.pre_norm:
        raise ValueError('--pre_norm is not supported: the released BIFIT models are post-norm')


def leaves_parameters_unused(model: BIFIT) -> bool:
    """Whether a training step of `model` leaves trainable parameters without a gradient (what
    DistributedDataParallel's `find_unused_parameters` is for): without the auxiliary losses (`--no_aux_loss`)
    the heads of the intermediate decoder layers feed nothing but the detached box refinement, and a text
    encoder that trains (no `--freeze_text_encoder`) has RoBERTa's pooler, whose output BIFIT does not use.
    Otherwise each trainable parameter gets a gradient (tests/test_model_variants.py)."""
    pooler = getattr(model.text_encoder, 'pooler', None)
    trained_pooler = pooler is not None and any(parameter.requires_grad for parameter in pooler.parameters())
    return not model.aux_loss or trained_pooler


def build_bifit(args) -> BIFIT:
    check_supported(args)
    weights_from_checkpoint = bool(args.resume or args.pretrained_weights)
    text_encoder, tokenizer = load_text_encoder(args.text_encoder, weights_from_checkpoint)
    return BIFIT(build_backbone(args), build_deformable_transformer(args), text_encoder, tokenizer,
                 num_classes=num_classes(args.dataset_file, args.binary), num_queries=args.num_queries,
                 mask_dim=args.mask_dim, dim_feedforward=args.dim_feedforward, controller_layers=args.controller_layers,
                 dynamic_mask_channels=args.dynamic_mask_channels, aux_loss=args.aux_loss,
                 with_box_refine=args.with_box_refine, rel_coord=args.rel_coord,
                 freeze_text_encoder=args.freeze_text_encoder,
                 activation_checkpointing=args.activation_checkpointing)
