"""The target of one referred object in a clip, built from its masks."""
from typing import Dict, Sequence

import torch
from torch import Tensor
from torchvision.ops import masks_to_boxes


def clean_caption(text: str) -> str:
    """Lower-cased, whitespace collapsed."""
    return ' '.join(text.lower().split())


def mask_boxes(masks: Tensor) -> Tensor:
    """`[N, H, W]` bool -> `[N, 4]` float xyxy pixel boxes (inclusive max indices); zeros for empty masks."""
    boxes = torch.zeros(len(masks), 4)
    present = masks.flatten(1).any(1)
    if present.any():
        boxes[present] = masks_to_boxes(masks[present]).float()
    return boxes


def clip_target(masks: Tensor, label: int, frames_idx: Sequence[int], caption: str) -> Dict:
    """Target of the referred object before the transforms.

    masks `[T', H, W]` bool (T' labelled frames) -> `labels [T']`, `boxes [T', 4]` xyxy pixels, `masks`,
    `valid [T']` (object present), `frames_idx [T]`, `caption`, `orig_size` = `size` = (H, W).
    """
    masks = masks.bool()
    size = torch.tensor(masks.shape[-2:])
    return {
        'frames_idx': torch.tensor(frames_idx, dtype=torch.long),
        'labels': torch.full((len(masks),), label, dtype=torch.long),
        'boxes': mask_boxes(masks),
        'masks': masks,
        'valid': masks.flatten(1).any(1).long(),
        'caption': clean_caption(caption),
        'orig_size': size,
        'size': size.clone(),
    }
