"""The original's generalised IoU (util/box_ops.py): its epsilons, worked out by hand, and its use in the
matcher's cost and the GIoU loss."""
import pytest
import torch
import torchvision

import models.criterion
import models.matcher
from models.criterion import SetCriterion
from models.matcher import HungarianMatcher
from util import box_ops

EPS = 1e-6


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_overlapping_boxes():
    """[0, 0, 2, 2] and [1, 1, 3, 3]: intersection 1, union 7, enclosing 9."""
    giou = box_ops.generalized_box_iou(boxes([0, 0, 2, 2]), boxes([1, 1, 3, 3]))
    expected = (1 + EPS) / (7 + EPS) - ((9 - 7) + EPS) / (9 + EPS)
    assert giou.shape == (1, 1)
    assert giou.item() == pytest.approx(expected, rel=1e-15)
    assert giou.item() != pytest.approx(1 / 7 - 2 / 9, rel=1e-9), 'the epsilons change the value'


def test_identical_disjoint_and_empty_boxes():
    """Identical boxes of area 0.25 give 1 - 1e-6 / 0.250001, not 1; disjoint boxes [0, 0, 1, 1] and
    [2, 0, 3, 1] (union 2, enclosing 3) give 1e-6 / 2.000001 - 1.000001 / 3.000001; two empty boxes give 0
    (torchvision's formula divides 0 by 0)."""
    first = boxes([0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], [0, 0, 0, 0])
    second = boxes([0.25, 0.25, 0.75, 0.75], [2, 0, 3, 1], [0, 0, 0, 0])
    giou = box_ops.generalized_box_iou(first, second).diagonal()
    expected = [1 - EPS / (0.25 + EPS), EPS / (2 + EPS) - (1 + EPS) / (3 + EPS), 0.0]
    assert giou.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert torchvision.ops.generalized_box_iou(first, second).diagonal()[0] == 1
    assert torchvision.ops.generalized_box_iou(first, second).diagonal()[2].isnan()


def test_pairwise_shape_and_order():
    first = boxes([0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 6, 7])
    second = boxes([1, 1, 3, 3], [0, 0, 1, 1])
    giou = box_ops.generalized_box_iou(first, second)
    assert giou.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert giou[i, j] == box_ops.generalized_box_iou(first[i:i + 1], second[j:j + 1])[0, 0]


def test_matcher_and_loss_use_the_original_giou():
    """One home: the matcher and the criterion call util.box_ops; a predicted box equal to its target
    (area 0.08) costs the loss 1e-6 / 0.080001 per frame, not 0."""
    assert models.matcher.generalized_box_iou is box_ops.generalized_box_iou
    assert models.criterion.generalized_box_iou is box_ops.generalized_box_iou
    criterion = SetCriterion(1, HungarianMatcher(), weight_dict={})
    box = [0.5, 0.5, 0.2, 0.4]
    outputs = {'pred_boxes': torch.tensor([[[box, [0.1, 0.1, 0.1, 0.1]]] * 3], dtype=torch.float64)}
    targets = [{'boxes': torch.tensor([box] * 3, dtype=torch.float64)}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    losses = criterion.loss_boxes(outputs, targets, indices, torch.tensor(1.0, dtype=torch.float64))
    assert losses['loss_bbox'].item() == 0
    assert losses['loss_giou'].item() == pytest.approx(3 * EPS / (0.08 + EPS), rel=1e-9)
