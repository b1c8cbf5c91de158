"""DAVIS-2017 evaluation: region similarity J, boundary measure F, proposal matching, statistics.

Reproduces the official davis2017-evaluation toolkit number for number. Masks are handled as label
maps: integer arrays [H, W] or [T, H, W] where 0 is background and i > 0 is object (or proposal) i.
Void pixels (ground-truth value 255) are left out of J and zeroed before the boundaries of F are
taken. In the unsupervised task the proposals are assigned to the objects by the Hungarian
algorithm on (mean J + mean F) / 2; in the semi-supervised task proposal k is object k and only
the frames 1 .. T-2 are evaluated.
"""
import glob
import math
import os
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

TASKS = ('unsupervised', 'semi-supervised')
ANNOTATION_FOLDERS = {'unsupervised': 'Annotations_unsupervised', 'semi-supervised': 'Annotations'}
RESOLUTION = '480p'
VOID_LABEL = 255
MAX_PROPOSALS = 20
BOUNDARY_TOLERANCE = 0.008  # radius of the boundary matching, as a fraction of the image diagonal
GLOBAL_COLUMNS = ('J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay')
PER_OBJECT_COLUMNS = ('Sequence', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay')


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask [H, W] -> bool [H, W].

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour (0
    beyond the image). The last row only compares with the right neighbour, the last column only
    with the lower one, and the bottom-right pixel is never on the boundary.
    """
    seg = mask.astype(bool)
    right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below = np.zeros_like(seg)
    below[:-1] = seg[1:]
    below_right = np.zeros_like(seg)
    below_right[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    boundary[-1] = seg[-1] ^ right[-1]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def tolerance_radius(height: int, width: int) -> int:
    """Radius in pixels within which boundary pixels match: ceil(0.008 * image diagonal)."""
    return math.ceil(BOUNDARY_TOLERANCE * math.sqrt(height * height + width * width))


def disk_kernel(radius: int) -> np.ndarray:
    """uint8 [2r+1, 2r+1], 1 where dx^2 + dy^2 <= r^2."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.uint8)


def f_from_boundary_counts(num_pred: int, num_gt: int, pred_matched: int, gt_matched: int) -> float:
    """F from boundary pixel counts: `num_pred`/`num_gt` boundary pixels of the prediction / ground
    truth, of which `pred_matched`/`gt_matched` lie within the tolerance disk of the other boundary.

    An empty boundary has precision (prediction) or recall (ground truth) 1 and the other one 0;
    two empty boundaries score 1.
    """
    if num_pred == 0 and num_gt == 0:
        precision, recall = 1, 1
    elif num_pred == 0:
        precision, recall = 1, 0
    elif num_gt == 0:
        precision, recall = 0, 1
    else:
        precision, recall = pred_matched / float(num_pred), gt_matched / float(num_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _dilated_boundaries(labels: np.ndarray, num_labels: int, kernel: np.ndarray
                        ) -> Tuple[List[np.ndarray], np.ndarray]:
    """Flat indices of the boundary pixels of labels 1..L of `labels` [H, W], and these boundaries
    dilated by `kernel`, flattened: bool [L, H*W]."""
    flat_points, dilated = [], np.zeros((num_labels, labels.size), dtype=bool)
    for index in range(num_labels):
        boundary = boundary_map(labels == index + 1)
        flat_points.append(np.flatnonzero(boundary))
        if len(flat_points[-1]):
            dilated[index] = cv2.dilate(boundary.view(np.uint8), kernel).view(bool).ravel()
    return flat_points, dilated


def frame_scores(gt_labels: np.ndarray, pred_labels: np.ndarray, void_mask: np.ndarray,
                 num_objects: int, num_proposals: int) -> Tuple[np.ndarray, np.ndarray]:
    """J and F of every (proposal, object) pair on one frame.

    gt_labels [H, W]: object ids 1..num_objects (larger ids count as background);
    pred_labels [H, W]: proposal ids in 0..num_proposals; void_mask [H, W] bool: pixels left out.
    Returns J, F: float64 [num_proposals, num_objects].
    """
    valid = ~void_mask.astype(bool)
    gt = np.where(gt_labels <= num_objects, gt_labels, 0).astype(np.int64) * valid
    pred = pred_labels.astype(np.int64) * valid

    # Void pixels are background in both maps now, so they count in no intersection or union.
    pair_areas = np.bincount((pred * (num_objects + 1) + gt).ravel(),
                             minlength=(num_proposals + 1) * (num_objects + 1))
    pair_areas = pair_areas.reshape(num_proposals + 1, num_objects + 1)
    inter = pair_areas[1:, 1:]
    union = pair_areas[1:].sum(1)[:, None] + pair_areas[:, 1:].sum(0)[None, :] - inter
    j = np.ones((num_proposals, num_objects))
    np.divide(inter, union, out=j, where=union > 0)

    kernel = disk_kernel(tolerance_radius(*gt_labels.shape))
    pred_boundaries, pred_dilated = _dilated_boundaries(pred, num_proposals, kernel)
    gt_boundaries, gt_dilated = _dilated_boundaries(gt, num_objects, kernel)
    f = np.empty((num_proposals, num_objects))
    for k, pred_boundary in enumerate(pred_boundaries):
        pred_matched = gt_dilated[:, pred_boundary].sum(1)  # [num_objects]
        for i, gt_boundary in enumerate(gt_boundaries):
            gt_matched = int(pred_dilated[k, gt_boundary].sum())
            f[k, i] = f_from_boundary_counts(len(pred_boundary), len(gt_boundary),
                                             int(pred_matched[i]), gt_matched)
    return j, f


def region_similarity(gt_mask: np.ndarray, pred_mask: np.ndarray, void_mask: np.ndarray = None) -> float:
    """J (intersection over union on non-void pixels, 1 when the union is empty) of two binary
    masks [H, W]; void_mask [H, W] bool or None."""
    return float(_pair_scores(gt_mask, pred_mask, void_mask)[0])


def boundary_f_measure(gt_mask: np.ndarray, pred_mask: np.ndarray, void_mask: np.ndarray = None) -> float:
    """F (boundary precision/recall with tolerance `tolerance_radius`) of two binary masks [H, W];
    void_mask [H, W] bool or None."""
    return float(_pair_scores(gt_mask, pred_mask, void_mask)[1])


def _pair_scores(gt_mask: np.ndarray, pred_mask: np.ndarray, void_mask) -> Tuple[float, float]:
    if void_mask is None:
        void_mask = np.zeros(gt_mask.shape, dtype=bool)
    j, f = frame_scores(gt_mask.astype(bool), pred_mask.astype(bool), void_mask, 1, 1)
    return j[0, 0], f[0, 0]


def sequence_scores(gt_labels: np.ndarray, pred_labels: np.ndarray, void_mask: np.ndarray,
                    num_objects: int, num_proposals: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of every (proposal, object) pair; inputs [T, H, W] as in `frame_scores`.

    Returns J, F: float64 [num_proposals, num_objects, T].
    """
    num_frames = len(gt_labels)
    j = np.zeros((num_proposals, num_objects, num_frames))
    f = np.zeros((num_proposals, num_objects, num_frames))
    for t in range(num_frames):
        j[:, :, t], f[:, :, t] = frame_scores(gt_labels[t], pred_labels[t], void_mask[t],
                                              num_objects, num_proposals)
    return j, f


def match_proposals(j: np.ndarray, f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment of proposals to objects maximising the summed (mean J + mean F) / 2.

    j, f [K, N, T] with K >= N. Returns the matched pairs' per-frame J, F [N, T], ordered as the
    official toolkit orders them: by proposal index. Row i is therefore object i+1 only when the
    assignment keeps the proposals in object order.
    """
    scores = (np.mean(j, axis=2) + np.mean(f, axis=2)) / 2
    proposal_ids, object_ids = linear_sum_assignment(-scores)
    return j[proposal_ids, object_ids], f[proposal_ids, object_ids]


def per_frame_statistics(values: np.ndarray) -> Tuple[float, float, float]:
    """Mean, Recall (fraction of values > 0.5) and Decay of per-frame values [T].

    Decay = mean of the first quarter - mean of the last quarter, the quarters being cut at
    round(linspace(1, T, 5)) - 1 with both ends inclusive (neighbouring quarters share a frame).
    """
    mean = np.nanmean(values)
    recall = np.nanmean(values > 0.5)
    cuts = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    quarters = [values[cuts[q]:cuts[q + 1] + 1] for q in range(4)]
    decay = np.nanmean(quarters[0]) - np.nanmean(quarters[3])
    return float(mean), float(recall), float(decay)


def evaluate_sequence(gt_labels: np.ndarray, void_mask: np.ndarray, pred_labels: np.ndarray,
                      num_objects: int, task: str = 'unsupervised') -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of each object of one sequence.

    gt_labels [T, H, W] object ids (void already set to 0), void_mask [T, H, W] bool, pred_labels
    [T, H, W] proposal ids. Proposal ids are 1..K with K = max(pred_labels), missing ones being
    empty masks. Returns J, F [num_objects, T] (see `match_proposals` for the row order).
    """
    num_proposals = int(pred_labels.max())
    if task == 'unsupervised' and num_proposals > MAX_PROPOSALS:
        raise ValueError(f'the results contain proposal id {num_proposals}, more than the maximum '
                         f'number of proposals ({MAX_PROPOSALS})')
    if task == 'semi-supervised' and num_proposals > num_objects:
        raise ValueError(f'the results contain object id {num_proposals}, but the sequence has '
                         f'only {num_objects} objects')
    j, f = sequence_scores(gt_labels, pred_labels, void_mask, num_objects, max(num_proposals, num_objects))
    if task == 'unsupervised':
        return match_proposals(j, f)
    same_ids = np.arange(num_objects)
    return j[same_ids, same_ids], f[same_ids, same_ids]


def read_label_frames(paths: Sequence[str]) -> np.ndarray:
    """Pixel values [T, H, W] of single-channel PNGs (palette indices or gray levels)."""
    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'mask not found: {path}')
        frame = np.asarray(Image.open(path))
        if frame.ndim != 2:
            raise ValueError(f'{path}: expected a palette or grayscale PNG, got an array of shape {frame.shape}')
        if frames and frame.shape != frames[0].shape:
            raise ValueError(f'{path}: size {frame.shape} differs from the first frame {frames[0].shape}')
        frames.append(frame)
    return np.stack(frames)


def read_sequence_names(davis_path: str, split: str) -> List[str]:
    """Sequence names listed in ROOT/ImageSets/2017/<split>.txt."""
    list_path = os.path.join(davis_path, 'ImageSets', '2017', f'{split}.txt')
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f'sequence list not found: {list_path}')
    with open(list_path) as lines:
        return [line.strip() for line in lines if line.strip()]


def read_ground_truth(davis_path: str, sequence: str, task: str = 'unsupervised'
                      ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Object ids [T, H, W] (void set to 0), void mask [T, H, W] bool and frame names of a sequence.

    The frames are the sorted annotation PNGs of ROOT/<Annotations folder of the task>/480p/<sequence>.
    """
    folder = os.path.join(davis_path, ANNOTATION_FOLDERS[task], RESOLUTION, sequence)
    paths = sorted(glob.glob(os.path.join(folder, '*.png')))
    if not paths:
        raise FileNotFoundError(f'no annotation PNGs in {folder}')
    labels = read_label_frames(paths)
    void_mask = labels == VOID_LABEL
    labels[void_mask] = 0
    return labels, void_mask, [os.path.splitext(os.path.basename(path))[0] for path in paths]


def read_results(results_path: str, sequence: str, frame_names: Sequence[str]) -> np.ndarray:
    """Proposal ids [T, H, W] from RESULTS/<sequence>/<frame>.png."""
    folder = os.path.join(results_path, sequence)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'results folder of sequence {sequence} not found: {folder}')
    return read_label_frames([os.path.join(folder, f'{name}.png') for name in frame_names])


def evaluate_davis(results_path: str, davis_path: str, split: str = 'val', task: str = 'unsupervised',
                   progress: bool = True) -> Tuple[Dict[str, float], List[Dict]]:
    """Evaluates the results folder RESULTS/<sequence>/<frame>.png against DAVIS-2017 `split`.

    Returns the global row {column of GLOBAL_COLUMNS: value} and one dict per object with the keys
    PER_OBJECT_COLUMNS ('Sequence' is '<sequence>_<i>', i from 1).
    """
    if task not in TASKS:
        raise ValueError(f'task {task!r} not supported, choose one of {TASKS}')
    if not os.path.isdir(results_path):
        raise FileNotFoundError(f'results folder not found: {results_path}')
    per_object = []
    for sequence in tqdm(read_sequence_names(davis_path, split), desc='DAVIS sequences', disable=not progress):
        gt_labels, void_mask, frame_names = read_ground_truth(davis_path, sequence, task)
        num_objects = int(gt_labels[0].max())
        if task == 'semi-supervised':
            if len(frame_names) < 3:
                raise ValueError(f'sequence {sequence}: the semi-supervised task needs at least 3 frames')
            gt_labels, frame_names = gt_labels[1:-1], frame_names[1:-1]
            void_mask = np.zeros_like(gt_labels, dtype=bool)  # the toolkit ignores void here
        pred_labels = read_results(results_path, sequence, frame_names)
        if pred_labels.shape != gt_labels.shape:
            raise ValueError(f'sequence {sequence}: results of shape {pred_labels.shape}, '
                             f'annotations of shape {gt_labels.shape}')
        try:
            j, f = evaluate_sequence(gt_labels, void_mask, pred_labels, num_objects, task)
        except ValueError as error:
            raise ValueError(f'sequence {sequence}: {error}') from error
        for index in range(num_objects):
            row = {'Sequence': f'{sequence}_{index + 1}'}
            row.update(zip(('J-Mean', 'J-Recall', 'J-Decay'), per_frame_statistics(j[index])))
            row.update(zip(('F-Mean', 'F-Recall', 'F-Decay'), per_frame_statistics(f[index])))
            per_object.append(row)
    if not per_object:
        raise ValueError(f'no objects to evaluate in {davis_path} ({split})')
    global_row = {column: float(np.mean([row[column] for row in per_object])) for column in GLOBAL_COLUMNS[1:]}
    global_row = {'J&F-Mean': (global_row['J-Mean'] + global_row['F-Mean']) / 2, **global_row}
    return global_row, per_object
