"""The training losses: focal classification, L1 + GIoU boxes, focal + dice masks, per decoder layer."""
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from util.misc import get_world_size, is_dist_avail_and_initialized
from .matcher import HungarianMatcher, downsampled_target_masks

LOSS_NAMES = ('loss_ce', 'loss_bbox', 'loss_giou', 'loss_mask', 'loss_dice')


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, num_boxes: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Focal loss of `[N, D, ...]` logits, averaged over dim 1, summed, divided by `num_boxes`."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def dice_loss(logits: Tensor, targets: Tensor, num_boxes: Tensor) -> Tensor:
    """1 - (+1 smoothed) dice of `[N, D]` logits against `[N, D]` targets, summed, divided by `num_boxes`."""
    prob = logits.sigmoid().flatten(1)
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


class SetCriterion(nn.Module):
    """Matches every output layer to the targets and computes the weighted loss terms.

    Returns the unweighted terms (`loss_ce`, `loss_bbox`, `loss_giou`, `loss_mask`, `loss_dice`, and
    `<name>_<i>` for the auxiliary layer i); `weight_dict` holds their weights.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Dict[str, float],
                 focal_alpha: float = 0.25):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.focal_alpha = focal_alpha

    def loss_labels(self, outputs: Dict, targets: List[Dict], indices, num_boxes: Tensor) -> Dict[str, Tensor]:
        """Focal loss on every query of every frame; the matched query is positive on valid frames."""
        logits = outputs['pred_logits']
        b, t, q, k = logits.shape
        onehot = torch.zeros((b, t, q, k + 1), dtype=logits.dtype, device=logits.device)
        for i, (target, (query, _)) in enumerate(zip(targets, indices)):
            valid = target['valid'].bool().to(logits.device)
            labels = torch.zeros_like(target['labels']) if self.num_classes == 1 else target['labels']
            frames = torch.nonzero(valid).flatten()
            onehot[i, frames, query.to(logits.device), labels.to(logits.device)[frames]] = 1
        onehot = rearrange(onehot[..., :k], 'b t q k -> b (t q) k')
        logits = rearrange(logits, 'b t q k -> b (t q) k')
        loss = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=self.focal_alpha) * logits.shape[1]
        return {'loss_ce': loss}

    @staticmethod
    def matched(tensor: Tensor, indices) -> Tensor:
        """The matched query's predictions in every frame: `[B, T, Q, ...]` -> `[B, T, ...]`."""
        return torch.stack([tensor[i, :, query[0]] for i, (query, _) in enumerate(indices)])

    def loss_boxes(self, outputs: Dict, targets: List[Dict], indices, num_boxes: Tensor) -> Dict[str, Tensor]:
        """L1 and GIoU of the matched query's boxes in every frame (valid or not)."""
        src = self.matched(outputs['pred_boxes'], indices).flatten(0, 1)
        tgt = torch.cat([t['boxes'] for t in targets]).to(src)
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
        return {'loss_bbox': F.l1_loss(src, tgt, reduction='none').sum() / num_boxes,
                'loss_giou': (1 - giou).sum() / num_boxes}

    def loss_masks(self, outputs: Dict, targets: List[Dict], indices, num_boxes: Tensor) -> Dict[str, Tensor]:
        """Focal and dice losses of the matched query's masks over all frames, at stride 4."""
        src = self.matched(outputs['pred_masks'], indices)
        tgt = downsampled_target_masks(targets).to(src)
        if src.shape[-2:] != tgt.shape[-2:]:
            raise ValueError(f'predicted masks {tuple(src.shape[-2:])} and targets {tuple(tgt.shape[-2:])} differ: '
                             'pad the input videos to a multiple of 32 (collate with size_divisibility=32)')
        src, tgt = src.flatten(1), tgt.flatten(1)
        return {'loss_mask': sigmoid_focal_loss(src, tgt, num_boxes), 'loss_dice': dice_loss(src, tgt, num_boxes)}

    def layer_losses(self, outputs: Dict, targets: List[Dict], num_boxes: Tensor) -> Dict[str, Tensor]:
        indices = self.matcher(outputs, targets)
        losses = {}
        for loss in (self.loss_labels, self.loss_boxes, self.loss_masks):
            losses.update(loss(outputs, targets, indices, num_boxes))
        return losses

    @staticmethod
    def num_boxes(targets: List[Dict], device: torch.device, micro_batches: int = 1) -> Tensor:
        """The loss normaliser: the valid target boxes of `targets`, summed over the processes, per process
        (and per micro-batch when `targets` are those of `micro_batches` accumulated micro-batches), at least 1.

        With accumulation (`--grad_accum_steps`), every micro-batch of an optimisation step shares this
        normaliser, so that their summed gradients, divided by `micro_batches`, equal those of one step on
        all of them with `micro_batches` times as many processes."""
        num_boxes = torch.stack([t['valid'].sum() for t in targets]).sum().to(device, torch.float)
        if is_dist_avail_and_initialized():
            dist.all_reduce(num_boxes)
        return torch.clamp(num_boxes / (get_world_size() * micro_batches), min=1)

    def forward(self, outputs: Dict, targets: List[Dict], num_boxes: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The loss terms, divided by `num_boxes` (default: `self.num_boxes(targets)`)."""
        if num_boxes is None:
            num_boxes = self.num_boxes(targets, outputs['pred_logits'].device)
        losses = self.layer_losses(outputs, targets, num_boxes)
        for i, aux_outputs in enumerate(outputs.get('aux_outputs', [])):
            losses.update({f'{k}_{i}': v for k, v in self.layer_losses(aux_outputs, targets, num_boxes).items()})
        return losses


def build_weight_dict(args) -> Dict[str, float]:
    weights = dict(zip(LOSS_NAMES, (args.cls_loss_coef, args.bbox_loss_coef, args.giou_loss_coef,
                                    args.mask_loss_coef, args.dice_loss_coef)))
    if args.aux_loss:
        for i in range(args.dec_layers - 1):
            weights.update({f'{name}_{i}': weights[name] for name in LOSS_NAMES})
    return weights


def build_criterion(args, num_classes: int, matcher: HungarianMatcher) -> SetCriterion:
    return SetCriterion(num_classes, matcher, build_weight_dict(args), focal_alpha=args.focal_alpha)
