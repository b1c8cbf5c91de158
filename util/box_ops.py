"""Box conversions and generalised IoU (torchvision's implementations, re-exported)."""
from torchvision.ops import box_convert, box_iou, generalized_box_iou, masks_to_boxes
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'cxcywh', 'xyxy')


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'xyxy', 'cxcywh')


__all__ = ['box_cxcywh_to_xyxy', 'box_xyxy_to_cxcywh', 'box_iou', 'generalized_box_iou', 'masks_to_boxes']
