"""A2D-Sentences / JHMDB-Sentences precision@K and IoUs (util/refer_metrics.py) with the original's float32
arithmetic, on IoUs that are exactly the thresholds; and what `--threshold` does to the A2D masks."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from datasets.coco_gt import write_coco_ground_truth
from models.postprocessors import A2DSentencesPostProcess, build_postprocessors
from tests.conftest import parse_args
from util.refer_metrics import evaluate_referring_segmentation, mask_iou

# Per sample, the predicted pixels of a 10 x 10 ground truth that covers the whole frame: IoU = n / 100.
COVERED = (50, 60, 70, 80, 90, 100)


def original_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """The original's `compute_iou`: int masks, float32 sums, (intersection + 1e-6) / (union + 1e-6)."""
    outputs, labels = torch.tensor(pred).int()[None], torch.tensor(gt).int()[None]
    intersection = (outputs & labels).float().sum((1, 2))
    union = (outputs | labels).float().sum((1, 2))
    return ((intersection + 1e-6) / (union + 1e-6)).item()


def covering(n: int) -> np.ndarray:
    mask = np.zeros(100, dtype=bool)
    mask[:n] = True
    return mask.reshape(10, 10)


def rle(mask: np.ndarray) -> dict:
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': encoded['size'], 'counts': encoded['counts'].decode('ascii')}


def test_mask_iou_is_the_originals_float32():
    generator = np.random.default_rng(0)
    pairs = [(covering(n), np.ones((10, 10), dtype=bool)) for n in COVERED]
    pairs += [(generator.random((37, 53)) < p, generator.random((37, 53)) < q) for p, q in [(0.3, 0.6), (0.9, 0.8)]]
    pairs.append((np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool)))
    for pred, gt in pairs:
        iou, intersection, union = mask_iou(pred, gt)
        assert iou == original_iou(pred, gt)
        assert (intersection, union) == ((pred & gt).sum(), (pred | gt).sum())
    assert [mask_iou(covering(n), np.ones((10, 10), dtype=bool))[0] for n in (50, 70)] == [0.5, np.float32(0.7)]


def test_precision_at_thresholds_as_the_original_counts(tmp_path):
    """IoUs 0.5, 0.6, ..., 1.0 in float32: 0.5 is not above 0.5, float32(0.6) = 0.60000002 is above 0.6,
    float32(0.7) = 0.69999999 is not above 0.7, float32(0.8) = 0.80000001 is above 0.8, float32(0.9) =
    0.89999998 is not above 0.9. The highest-scoring prediction of each sample counts; a sample without
    predictions has IoU 1e-6 / (union + 1e-6)."""
    gt_file = tmp_path / 'gt.json'
    image_ids = [f'sample_{n}' for n in COVERED] + ['unpredicted']
    write_coco_ground_truth([(image_id, np.ones((10, 10), dtype=bool)) for image_id in image_ids], gt_file)
    predictions = []
    for image_id, n in zip(image_ids, COVERED):
        predictions.append({'image_id': image_id, 'category_id': 1, 'segmentation': rle(covering(n)), 'score': 0.9})
        predictions.append({'image_id': image_id, 'category_id': 1, 'segmentation': rle(covering(10)), 'score': 0.2})
    metrics = evaluate_referring_segmentation(str(gt_file), predictions)
    samples = len(image_ids)
    assert [metrics[f'P@{k}'] for k in (0.5, 0.6, 0.7, 0.8, 0.9)] == [5 / samples, 5 / samples, 3 / samples,
                                                                     3 / samples, 1 / samples]
    assert metrics['overall_iou'] == sum(COVERED) / (100 * samples)
    ious = [float(np.float32(n) / np.float32(100)) for n in COVERED] + [float(np.float32(1e-6) / np.float32(100))]
    assert metrics['mean_iou'] == pytest.approx(np.mean(ious), rel=1e-15)
    assert metrics['AP 0.5'] == pytest.approx(1 - 1 / samples, abs=0.02)


def outputs_with_probability(probability: float) -> dict:
    """One clip, one query whose mask probability is `probability` everywhere `[1, 1, 1, 4, 4]`."""
    logit = torch.logit(torch.tensor(probability))
    return {'pred_logits': torch.zeros(1, 1, 1, 1), 'pred_masks': torch.full((1, 1, 1, 4, 4), logit.item())}


def test_a2d_masks_use_threshold_only_when_asked(caplog):
    """The default (0.5) is the original's fixed A2D threshold; another `--threshold` is applied (and said)."""
    sizes = torch.tensor([[16, 16]])
    default = build_postprocessors(parse_args(['--dataset_file', 'a2d']))['segm']
    assert default.threshold == 0.5
    assert default(outputs_with_probability(0.45), sizes, sizes)[0]['masks'].sum() == 0
    assert default(outputs_with_probability(0.55), sizes, sizes)[0]['masks'].all()
    with caplog.at_level('INFO'):
        lowered = build_postprocessors(parse_args(['--dataset_file', 'jhmdb', '--threshold', '0.4']))['segm']
    assert 'thresholded at 0.4' in caplog.text and 'the original always uses 0.5' in caplog.text
    assert isinstance(lowered, A2DSentencesPostProcess)
    assert lowered(outputs_with_probability(0.45), sizes, sizes)[0]['masks'].all()
