"""Box conversions (torchvision's) and the original's generalised IoU."""
from torch import Tensor
from torchvision.ops import box_area, box_convert

IOU_EPS = 1e-6


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'cxcywh', 'xyxy')


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return box_convert(boxes, 'xyxy', 'cxcywh')


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU of xyxy boxes `[N, 4]` and `[M, 4]` -> `[N, M]`, as the original computes it
    (for the matcher's cost and the GIoU loss):

        iou  = (intersection + 1e-6) / (union + 1e-6)
        giou = iou - ((enclosing - union) + 1e-6) / (enclosing + 1e-6)

    torchvision's `generalized_box_iou` has no epsilons (it differs by up to about 1e-6). The original
    also asserts x1 >= x0 and y1 >= y0, which would wait for the device; degenerate boxes are not checked.
    """
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = boxes1[:, None, :2].maximum(boxes2[:, :2])
    bottom_right = boxes1[:, None, 2:].minimum(boxes2[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0)
    intersection = overlap[..., 0] * overlap[..., 1]
    union = area1[:, None] + area2 - intersection
    iou = (intersection + IOU_EPS) / (union + IOU_EPS)
    outer_top_left = boxes1[:, None, :2].minimum(boxes2[:, :2])
    outer_bottom_right = boxes1[:, None, 2:].maximum(boxes2[:, 2:])
    enclosing_size = (outer_bottom_right - outer_top_left).clamp(min=0)
    enclosing = enclosing_size[..., 0] * enclosing_size[..., 1]
    return iou - ((enclosing - union) + IOU_EPS) / (enclosing + IOU_EPS)
