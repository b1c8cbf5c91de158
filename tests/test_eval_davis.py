"""DAVIS-2017 J & F evaluation (util/davis_metrics.py, eval_davis.py) on hand-made masks.

Expected numbers are worked out by hand. Frames of 12x12 or 12x24 pixels have a tolerance radius
of ceil(0.008 * diagonal) = 1, i.e. a boundary pixel matches when the other boundary is on it or
on one of its 4 neighbours. A filled rectangle rows a..b, cols c..d has as boundary the outline of
the rectangle rows a-1..b, cols c-1..d (the pixels whose 2x2 window down-right is mixed).
"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import ROOT, label_map, save_label_png
from util.davis_metrics import (boundary_f_measure, boundary_map, disk_kernel, evaluate_davis, evaluate_sequence,
                                f_from_boundary_counts, frame_scores, per_frame_statistics, region_similarity,
                                tolerance_radius)


def test_boundary_map_of_an_interior_square():
    seg = label_map((4, 5), (1, 2), (1, 2))
    # Outline of rows 0..2, cols 0..2: pixels whose right, lower or lower-right neighbour differs.
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(seg), expected)


def test_boundary_map_last_row_and_column_rules():
    seg = label_map((3, 3), (1, 2), (1, 2))
    # (1, 2): last column, compared with the pixel below only (1 vs 1) -> 0, although its right
    # neighbour beyond the image is 0. (2, 1): last row, compared with the right one only (1 vs 1)
    # -> 0. (2, 0): 0 vs 1 on its right -> 1. (2, 2): bottom-right -> always 0.
    expected = np.array([[1, 1, 1],
                         [1, 0, 0],
                         [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(seg), expected)


def test_tolerance_radius_and_disk():
    assert tolerance_radius(480, 854) == 8  # 0.008 * sqrt(480^2 + 854^2) = 0.008 * 979.65 = 7.84
    assert tolerance_radius(12, 12) == 1  # 0.008 * 16.97 = 0.14
    assert tolerance_radius(12, 24) == 1  # 0.008 * 26.83 = 0.21
    np.testing.assert_array_equal(disk_kernel(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    kernel = disk_kernel(8)
    assert kernel.shape == (17, 17) and kernel[8, 0] == 1 and kernel[0, 0] == 0 and kernel[1, 4] == 0
    assert kernel.sum() == 197  # lattice points with dx^2 + dy^2 <= 64


def test_square_shifted_by_three_columns():
    gt = label_map((12, 12), (2, 5), (2, 5))
    pred = label_map((12, 12), (2, 5), (5, 8))
    # J: overlap is column 5 (4 pixels), union 16 + 16 - 4 = 28.
    assert region_similarity(gt, pred) == pytest.approx(4 / 28)
    # Boundaries: outlines of rows 1..5 x cols 1..5 (gt) and cols 4..8 (pred), 16 pixels each.
    # Pred pixels within 1 of the gt outline: top and bottom rows at cols 4, 5, 6 (3 + 3) and the
    # left side col 4, rows 2..4 (3): 9 / 16. By symmetry the recall is 9 / 16 as well.
    assert boundary_f_measure(gt, pred) == pytest.approx(9 / 16)


def test_void_pixels_are_excluded_from_j_and_from_the_boundaries():
    gt = label_map((12, 12), (2, 5), (2, 5))
    pred = label_map((12, 12), (2, 5), (4, 7))
    void = np.zeros((12, 12), dtype=bool)
    void[:, 6:] = True
    # Without void: overlap cols 4..5 = 8, union 24 -> 1/3. Outlines rows 1..5 x cols 1..5 and
    # cols 3..7: top/bottom rows match at cols 3..6 (gt: cols 2..5), sides match only at the
    # rows next to the top/bottom (2 each) -> P = R = 10/16.
    assert region_similarity(gt, pred) == pytest.approx(1 / 3)
    assert boundary_f_measure(gt, pred) == pytest.approx(10 / 16)
    # With void on cols 6..11: the prediction keeps cols 4..5 (8 pixels), all inside gt -> 8 / 16.
    assert region_similarity(gt, pred, void) == pytest.approx(0.5)
    # Pred outline shrinks to rows 1..5 x cols 3..5 (12 pixels): all match but (3, 3) -> P = 11/12;
    # gt outline (16 pixels): top/bottom cols 2..5 (8) + right side (3) match -> R = 11/16.
    # F = 2PR / (P + R) = 2 * 11 / (12 + 16) = 11/14.
    assert boundary_f_measure(gt, pred, void) == pytest.approx(11 / 14)


def test_absent_object_and_empty_prediction():
    empty = np.zeros((12, 12), dtype=np.uint8)
    square = label_map((12, 12), (2, 5), (2, 5))
    # Both empty: empty union -> J = 1; no boundary on either side -> P = R = 1 -> F = 1.
    assert region_similarity(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    # Prediction where the object is absent: J = 0 / 16; P = 0, R = 1 -> F = 0.
    assert region_similarity(empty, square) == 0.0 and boundary_f_measure(empty, square) == 0.0
    # Empty prediction of a present object: J = 0; P = 1, R = 0 -> F = 0.
    assert region_similarity(square, empty) == 0.0 and boundary_f_measure(square, empty) == 0.0
    assert f_from_boundary_counts(0, 5, 0, 0) == 0.0 and f_from_boundary_counts(5, 0, 0, 0) == 0.0
    assert f_from_boundary_counts(0, 0, 0, 0) == 1.0
    assert f_from_boundary_counts(4, 8, 2, 4) == pytest.approx(0.5)  # P = R = 1/2


def two_squares(frames=2):
    """gt [T, 12, 24]: object 1 on rows 2..5 x cols 2..5, object 2 on rows 2..5 x cols 14..17."""
    gt = label_map((12, 24), (2, 5), (2, 5)) + label_map((12, 24), (2, 5), (14, 17), value=2)
    return np.stack([gt] * frames)


def test_hungarian_assignment_with_more_proposals_than_objects():
    gt = two_squares()
    # Proposal 1 = object 2, proposal 2 = a small square far from both, proposal 3 = object 1
    # shifted right by 3 columns (J = 4/28, F = 9/16 as in test_square_shifted_by_three_columns).
    pred = (label_map((12, 24), (2, 5), (14, 17), value=1) + label_map((12, 24), (8, 10), (9, 11), value=2)
            + label_map((12, 24), (2, 5), (5, 8), value=3))
    pred = np.stack([pred] * 2)
    j, f = evaluate_sequence(gt, np.zeros(gt.shape, dtype=bool), pred, num_objects=2)
    # Like the official toolkit, the matched pairs come ordered by proposal: (1, object 2) first,
    # then (3, object 1); proposal 2 is left out.
    np.testing.assert_allclose(j, [[1, 1], [4 / 28, 4 / 28]])
    np.testing.assert_allclose(f, [[1, 1], [9 / 16, 9 / 16]])


def test_fewer_proposals_than_objects_are_padded_with_empty_masks():
    gt = two_squares()
    gt[1][gt[1] == 1] = 0  # object 1 is absent from frame 1
    pred = np.stack([label_map((12, 24), (2, 5), (14, 17))] * 2)  # proposal 1 = object 2
    void = np.zeros(gt.shape, dtype=bool)
    j, f = evaluate_sequence(gt, void, pred, num_objects=2)
    # (proposal 1, object 2) is exact; object 1 gets the empty padding proposal: J = F = 0 on frame 0
    # where it is present, J = F = 1 on frame 1 where both are empty.
    np.testing.assert_allclose(j, [[1, 1], [0, 1]])
    np.testing.assert_allclose(f, [[1, 1], [0, 1]])
    j, f = evaluate_sequence(gt, void, np.zeros_like(gt), num_objects=2)  # no proposal at all
    np.testing.assert_allclose(j, [[0, 1], [0, 0]])
    np.testing.assert_allclose(f, [[0, 1], [0, 0]])


def test_proposal_limit_and_semi_supervised_object_limit():
    gt = two_squares()
    void = np.zeros(gt.shape, dtype=bool)
    with pytest.raises(ValueError, match='maximum number of proposals'):
        evaluate_sequence(gt, void, np.full(gt.shape, 21, dtype=np.uint8), num_objects=2)
    with pytest.raises(ValueError, match='only 2 objects'):
        evaluate_sequence(gt, void, np.full(gt.shape, 3, dtype=np.uint8), 2, task='semi-supervised')


def test_statistics_and_decay_binning():
    values = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    # 8 frames: cuts round(linspace(1, 8, 5)) - 1 = round([1, 2.75, 4.5, 6.25, 8]) - 1 = [0, 2, 4, 5, 7];
    # first quarter values[0:3] (mean 0.9), last values[5:8] (mean 0.4). Recall: 5 of 8 above 0.5.
    mean, recall, decay = per_frame_statistics(values)
    assert (mean, recall, decay) == pytest.approx((0.65, 0.625, 0.5))
    # The quarters share their end frames: frame 2 belongs to the first quarter -> decay 1/3 - 0.
    assert per_frame_statistics(np.array([0, 0, 1, 0, 0, 0, 0, 0.]))[2] == pytest.approx(1 / 3)
    assert per_frame_statistics(np.array([0.7]))[2] == 0.0


def test_frame_scores_match_a_direct_pairwise_computation():
    rng = np.random.default_rng(0)
    shape = (30, 40)
    gt = ndimage.zoom(rng.integers(0, 4, (6, 8)), 5, order=0).astype(np.uint8)
    pred = ndimage.zoom(rng.integers(0, 5, (10, 8)), (3, 5), order=0).astype(np.uint8)
    void = rng.random(shape) < 0.05
    j, f = frame_scores(gt, pred, void, num_objects=3, num_proposals=4)
    disk = disk_kernel(tolerance_radius(*shape)).astype(bool)
    for k in range(4):
        for i in range(3):
            pred_mask, gt_mask = (pred == k + 1) & ~void, (gt == i + 1) & ~void
            union = np.sum(pred_mask | gt_mask)
            assert j[k, i] == (np.sum(pred_mask & gt_mask) / union if union else 1.0)
            pred_boundary, gt_boundary = boundary_map(pred_mask), boundary_map(gt_mask)
            precision = np.mean(ndimage.binary_dilation(gt_boundary, disk)[pred_boundary])
            recall = np.mean(ndimage.binary_dilation(pred_boundary, disk)[gt_boundary])
            assert f[k, i] == pytest.approx(2 * precision * recall / (precision + recall))


def make_davis(root, annotations):
    """DAVIS-like tree: {sequence: gt [T, H, W]} -> ImageSets/2017/val.txt and annotation PNGs."""
    os.makedirs(os.path.join(root, 'ImageSets', '2017'))
    with open(os.path.join(root, 'ImageSets', '2017', 'val.txt'), 'w') as lines:
        lines.write(''.join(f'{sequence}\n' for sequence in annotations))
    for sequence, gt in annotations.items():
        for t, frame in enumerate(gt):
            for folder in ('Annotations_unsupervised', 'Annotations'):
                save_label_png(frame, os.path.join(root, folder, '480p', sequence, f'{t:05d}.png'))


def make_results(root, results, palette=True):
    for sequence, pred in results.items():
        for t, frame in enumerate(pred):
            save_label_png(frame, os.path.join(root, sequence, f'{t:05d}.png'), palette)


@pytest.fixture
def tiny_davis(tmp_path):
    """Two sequences; returns (davis root, results folder)."""
    # alpha: 3 frames 10x14, one object rows 3..6 x cols 3..7 with a void band on cols 8..9 that the
    # prediction also covers: J = 20/20 on non-void pixels and, void zeroed, identical boundaries.
    alpha_gt = label_map((10, 14), (3, 6), (3, 7)) + label_map((10, 14), (3, 6), (8, 9), value=255)
    alpha_pred = label_map((10, 14), (3, 6), (3, 9))
    # beta: 4 frames, two squares; proposal 1 = object 1, proposal 2 = object 2 shifted by 3 columns
    # on frames 0..2 (J = 1/7, F = 9/16) and exact on frame 3.
    beta_gt = two_squares(frames=4)
    beta_pred = [label_map((12, 24), (2, 5), (2, 5)) + label_map((12, 24), (2, 5), (17, 20), value=2)] * 3
    beta_pred.append(beta_gt[3])
    davis_root, results = str(tmp_path / 'DAVIS'), str(tmp_path / 'results')
    make_davis(davis_root, {'alpha': np.stack([alpha_gt] * 3), 'beta': beta_gt})
    make_results(results, {'alpha': [alpha_pred] * 3})
    make_results(results, {'beta': beta_pred}, palette=False)
    return davis_root, results


@pytest.mark.e2e
def test_cli_end_to_end(tiny_davis):
    davis_root, results = tiny_davis
    with open(os.path.join(results, 'global_results-val.csv'), 'w') as stale:
        stale.write('stale\n')
    run = subprocess.run([sys.executable, 'eval_davis.py', '--results_path', results, '--davis_path', davis_root],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'Global results for val' in run.stdout and 'Total time' in run.stdout
    # beta_2: J = [1/7, 1/7, 1/7, 1] -> mean 10/28 = 0.357, recall 1/4, quarters frames 0..1 and 2..3
    # -> decay 1/7 - 4/7 = -3/7. F = [9/16] * 3 + [1] -> mean 43/64 = 0.672, recall 1, decay
    # 9/16 - 25/32 = -7/32. alpha_1 and beta_1 are perfect (mean 1, recall 1, decay 0).
    # Global: J-Mean (2 + 10/28) / 3 = 0.785714, J-Recall 2.25 / 3 = 0.75, J-Decay -1/7 = -0.142857,
    # F-Mean (2 + 43/64) / 3 = 57/64 = 0.890625, F-Recall 1, F-Decay -7/96 = -0.0729167, J&F 0.838170.
    # Written as the original's eval_davis.py does ('%.5f': 0.890625 and 0.671875, exact in binary, round
    # to even).
    with open(os.path.join(results, 'global_results-val.csv')) as csv_file:
        assert csv_file.read() == ('J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n'
                                   '0.83817,0.78571,0.75000,-0.14286,0.89062,1.00000,-0.07292\n')
    with open(os.path.join(results, 'per-sequence_results-val.csv')) as csv_file:
        assert csv_file.read() == ('Sequence,J-Mean,F-Mean\n'
                                   'alpha_1,1.00000,1.00000\n'
                                   'beta_1,1.00000,1.00000\n'
                                   'beta_2,0.35714,0.67188\n')
    assert '0.83817  0.78571' in run.stdout


@pytest.mark.e2e
def test_mean_over_several_results_folders(tiny_davis, tmp_path):
    """The four annotators' folders in one run: each gets its csv files, and the mean of their global
    rows (taken at full precision) is printed, in percent too, and written to --mean_csv."""
    davis_root, results = tiny_davis
    other = str(tmp_path / 'other')
    shutil.copytree(results, other)
    for name in sorted(os.listdir(os.path.join(other, 'beta'))):
        save_label_png(label_map((12, 24), (2, 5), (2, 5)), os.path.join(other, 'beta', name))
    rows = [evaluate_davis(folder, davis_root, progress=False)[0] for folder in (results, other, other, other)]
    mean_csv = str(tmp_path / 'mean.csv')
    run = subprocess.run([sys.executable, 'eval_davis.py', '--davis_path', davis_root, '--mean_csv', mean_csv,
                          '--results_path', results, other, other, other],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count('Global results for val') == 4
    assert os.path.exists(os.path.join(other, 'global_results-val.csv'))
    mean = {column: np.mean([row[column] for row in rows]) for column in rows[0]}
    assert rows[0]['J&F-Mean'] != rows[1]['J&F-Mean']
    with open(mean_csv) as csv_file:
        assert csv_file.read().splitlines() == ['J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay', ','.join(
            '%.5f' % mean[column] for column in ('J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean',
                                                 'F-Recall', 'F-Decay'))]
    assert (f"J&F {100 * mean['J&F-Mean']:.1f}  J {100 * mean['J-Mean']:.1f}  F {100 * mean['F-Mean']:.1f}"
            in run.stdout)


def test_semi_supervised_uses_inner_frames_and_keeps_void(tiny_davis):
    davis_root, results = tiny_davis
    for name in ('00000.png', '00002.png'):  # the first and last frames are not evaluated
        os.remove(os.path.join(results, 'alpha', name))
    _, per_object = evaluate_davis(results, davis_root, task='semi-supervised', progress=False)
    # alpha, frame 1 only, void counted as background: J = 20 / 28. Outlines rows 2..6 x cols 2..7
    # (gt, 18 pixels) and cols 2..9 (pred, 22 pixels); 17 of each match -> F = 2 * 17 / (18 + 22).
    assert per_object[0]['Sequence'] == 'alpha_1'
    assert per_object[0]['J-Mean'] == pytest.approx(20 / 28)
    assert per_object[0]['F-Mean'] == pytest.approx(34 / 40)


def test_missing_results_are_clear_errors(tiny_davis):
    davis_root, results = tiny_davis
    missing = os.path.join(results, 'beta', '00002.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        evaluate_davis(results, davis_root, progress=False)
    os.rename(os.path.join(results, 'alpha'), os.path.join(results, 'renamed'))
    with pytest.raises(FileNotFoundError, match='sequence alpha'):
        evaluate_davis(results, davis_root, progress=False)


@pytest.mark.e2e
def test_too_many_proposals_is_a_clear_error(tiny_davis):
    davis_root, results = tiny_davis
    save_label_png(np.full((12, 24), 21), os.path.join(results, 'beta', '00001.png'))
    with pytest.raises(ValueError, match='sequence beta: .*proposal id 21'):
        evaluate_davis(results, davis_root, progress=False)
    run = subprocess.run([sys.executable, 'eval_davis.py', '--results_path', results, '--davis_path', davis_root],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and 'maximum number of proposals (20)' in run.stderr
