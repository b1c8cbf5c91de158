"""Hungarian matching of each clip's referred object to one query (the same query in every frame)."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from util.misc import nested_tensor_from_tensor_list

MASK_OUT_STRIDE = 4


def downsampled_target_masks(targets: List[Dict], stride: int = MASK_OUT_STRIDE) -> Tensor:
    """Target masks `[T', h_i, w_i]` padded to a multiple of 32 and sampled at stride 4 from offset 2:
    `[B, T', H/4, W/4]`."""
    padded = nested_tensor_from_tensor_list([t['masks'] for t in targets], size_divisibility=32).tensors
    return padded[..., stride // 2::stride, stride // 2::stride]


def focal_cost(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Mean sigmoid focal loss of every prediction `[N, D]` against every target `[M, D]`: `[N, M]`."""
    n, m = len(logits), len(targets)
    logits = logits.flatten(1)[:, None].expand(-1, m, -1)
    targets = targets.flatten(1)[None].expand(n, -1, -1)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean(2)


def dice_coefficient(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice coefficient (+1 smoothed) of every prediction `[N, D]` with every target `[M, D]`: `[N, M]`."""
    prob = logits.sigmoid().flatten(1)[:, None]
    targets = targets.flatten(1)[None]
    return (2 * (prob * targets).sum(2) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


class HungarianMatcher(nn.Module):
    """Cost = class focal cost (valid frames) + L1 + GIoU box costs + mask focal + dice costs (all
    averaged over frames); one target per clip, so each clip gets the query of least cost."""

    def __init__(self, cost_class: float = 1, cost_bbox: float = 1, cost_giou: float = 1,
                 cost_mask: float = 1, cost_dice: float = 1, num_classes: int = 1):
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_classes = num_classes

    def class_cost(self, prob: Tensor, labels: Tensor, valid: Tensor, alpha: float = 0.25,
                   gamma: float = 2.0) -> Tensor:
        """prob `[T, Q, K]`, labels and valid `[T]` -> `[Q, 1]`, averaged over the valid frames."""
        neg = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        classes = torch.zeros_like(labels) if self.num_classes == 1 else labels
        frames = torch.arange(len(labels), device=prob.device)
        cost = (pos - neg)[frames, :, classes]
        return cost[valid.bool()].mean(0)[:, None]

    @torch.no_grad()
    def forward(self, outputs: Dict, targets: List[Dict]) -> List[Tuple[Tensor, Tensor]]:
        """outputs `pred_logits [B, T, Q, K]`, `pred_boxes [B, T, Q, 4]`, `pred_masks [B, T, Q, h, w]`;
        targets with `labels`, `boxes`, `valid` `[T]` and `masks` `[T, H, W]` -> per clip
        (query index `[1]`, target index `[1]`)."""
        target_masks = downsampled_target_masks(targets).to(outputs['pred_masks'])
        indices = []
        for i, target in enumerate(targets):
            out_boxes = outputs['pred_boxes'][i]
            tgt_boxes = target['boxes'][:, None]
            cost_class = self.class_cost(outputs['pred_logits'][i].sigmoid(), target['labels'], target['valid'])
            cost_bbox = (out_boxes - tgt_boxes).abs().sum(-1).mean(0)[:, None]
            giou = torch.stack([generalized_box_iou(box_cxcywh_to_xyxy(out), box_cxcywh_to_xyxy(tgt))
                                for out, tgt in zip(out_boxes, tgt_boxes)])
            cost_giou = -giou.mean(0)
            out_masks = outputs['pred_masks'][i].transpose(0, 1)
            tgt_masks = target_masks[i][None]
            cost = (self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou
                    + self.cost_mask * focal_cost(out_masks, tgt_masks)
                    - self.cost_dice * dice_coefficient(out_masks, tgt_masks))
            query, target_index = linear_sum_assignment(cost.cpu())
            indices.append((torch.as_tensor(query, dtype=torch.int64), torch.as_tensor(target_index, dtype=torch.int64)))
        return indices


def build_matcher(args, num_classes: int) -> HungarianMatcher:
    return HungarianMatcher(cost_class=args.set_cost_class, cost_bbox=args.set_cost_bbox,
                            cost_giou=args.set_cost_giou, cost_mask=args.set_cost_mask,
                            cost_dice=args.set_cost_dice, num_classes=num_classes)
