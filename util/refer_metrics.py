"""A2D-Sentences / JHMDB-Sentences metrics: COCO segm mAP with categories ignored (pycocotools),
precision@K, overall IoU and mean IoU of each sample's highest-scoring prediction, with the original's
arithmetic (float32 IoUs)."""
import contextlib
import io
import logging
from typing import Dict, List, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pycocotools.mask import decode

logger = logging.getLogger(__name__)

AP_NAMES = ('mAP 0.5:0.95', 'AP 0.5', 'AP 0.75', 'AP 0.5:0.95 S', 'AP 0.5:0.95 M', 'AP 0.5:0.95 L')
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MASK_IOU_EPS = 1e-6


def coco_segm_ap(coco_gt: COCO, coco_pred: COCO) -> Dict[str, float]:
    """COCO mask AP over all predictions, categories ignored."""
    coco_eval = COCOeval(coco_gt, coco_pred, iouType='segm')
    coco_eval.params.useCats = 0
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info('COCO segm evaluation (categories ignored):\n%s', summary.getvalue().rstrip())
    return {name: float(value) for name, value in zip(AP_NAMES, coco_eval.stats[:6])}


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> Tuple[float, float, float]:
    """IoU, intersection and union of two boolean masks `[H, W]`, with the original's float32 arithmetic:
    pixel counts as float32 and iou = (intersection + 1e-6) / (union + 1e-6) rounded to float32 (50 of
    100 pixels gives exactly 0.5, 70 of 100 gives 0.69999999), returned as Python floats."""
    intersection = np.float32(np.count_nonzero(pred & gt))
    union = np.float32(np.count_nonzero(pred | gt))
    iou = (intersection + np.float32(MASK_IOU_EPS)) / (union + np.float32(MASK_IOU_EPS))
    return float(iou), float(intersection), float(union)


def precision_and_iou(coco_gt: COCO, coco_pred: COCO) -> Dict[str, float]:
    """Per ground-truth sample, IoU of the highest-scoring prediction (`mask_iou`): precision@K (the share
    of samples with IoU > K, the float32 IoU compared with K as a double, as in the original), overall IoU
    (sum of intersections / sum of unions) and mean IoU."""
    hits = [0] * len(PRECISION_THRESHOLDS)
    ious, total_intersection, total_union = [], 0.0, 0.0
    for image_id in coco_gt.getImgIds():
        gt = decode(coco_gt.imgToAnns[image_id][0]['segmentation']).astype(bool)
        candidates = coco_pred.imgToAnns.get(image_id, [])
        if candidates:
            pred = decode(sorted(candidates, key=lambda a: a['score'])[-1]['segmentation']).astype(bool)
        else:
            pred = np.zeros_like(gt)
        iou, intersection, union = mask_iou(pred, gt)
        hits = [count + (iou > k) for count, k in zip(hits, PRECISION_THRESHOLDS)]
        total_intersection += intersection
        total_union += union
        ious.append(iou)
    metrics = {f'P@{k}': count / len(ious) for k, count in zip(PRECISION_THRESHOLDS, hits)}
    metrics['overall_iou'] = total_intersection / max(total_union, 1e-6)
    metrics['mean_iou'] = float(np.mean(ious))
    return metrics


def evaluate_referring_segmentation(gt_file: str, predictions: List[Dict]) -> Dict[str, float]:
    """predictions: dicts with `image_id`, `category_id`, `segmentation` (RLE) and `score`."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
        coco_pred = coco_gt.loadRes(predictions) if predictions else COCO()
    metrics = coco_segm_ap(coco_gt, coco_pred) if predictions else {name: 0.0 for name in AP_NAMES}
    metrics.update(precision_and_iou(coco_gt, coco_pred))
    return metrics
