"""Box conversions and generalised IoU (torchvision's implementations, re-exported)."""
from torchvision.ops import box_convert, generalized_box_iou
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'cxcywh', 'xyxy')


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'xyxy', 'cxcywh')


__all__ = ['box_cxcywh_to_xyxy', 'box_xyxy_to_cxcywh', 'generalized_box_iou']
