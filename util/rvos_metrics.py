"""Referring video object segmentation metrics of one expression, as the Ref-YouTube-VOS and MeViS
organisers compute them: J and F of every frame (the DAVIS measures of `util/davis_metrics.py`), their
means over the frames, then means over the expressions, J&F = (J + F) / 2.

Referring accuracy needs the masks of every object of the video: an expression is referred correctly when
its predicted masks, summed over the frames, cover more pixels of the named object than of any other
object (an empty prediction refers to nothing). Masks are bool arrays `[T, H, W]`; label maps are integer
arrays `[T, H, W]` with 0 background and object id k > 0.
"""
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from util.davis_metrics import frame_scores
from util.files import atomic_write

RESULT_COLUMNS = ('video', 'exp_id', 'obj_id', 'J', 'F', 'J&F', 'covered_obj_id', 'referred', 'expression')
GLOBAL_COLUMNS = ('J&F', 'J', 'F', 'referring_accuracy', 'expressions')


@dataclass
class ExpressionResult:
    """The scores of one expression. `covered_obj_id`: the object its masks cover most ('' when none or
    unknown); `referred`: whether that is the named object (None without every object's masks)."""
    video: str
    exp_id: str
    obj_id: str
    j: float
    f: float
    covered_obj_id: str = ''
    referred: Optional[bool] = None
    expression: str = ''

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2


def frame_j_and_f(gt_masks: np.ndarray, pred_masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """J (1 when both masks are empty) and F of every frame: `[T, H, W]` bool masks -> J `[T]`, F `[T]`."""
    if gt_masks.shape != pred_masks.shape:
        raise ValueError(f'predicted masks of shape {pred_masks.shape}, ground truth of shape {gt_masks.shape}')
    j, f = np.empty(len(gt_masks)), np.empty(len(gt_masks))
    no_void = np.zeros(gt_masks.shape[1:], dtype=bool)
    for t, (gt, pred) in enumerate(zip(gt_masks, pred_masks)):
        frame_j, frame_f = frame_scores(gt.astype(bool), pred.astype(bool), no_void, 1, 1)
        j[t], f[t] = frame_j[0, 0], frame_f[0, 0]
    return j, f


def object_coverage(pred_masks: np.ndarray, labels: np.ndarray, obj_ids: Sequence[int]) -> Dict[int, int]:
    """Pixels of each object of `obj_ids` that the predicted masks cover, summed over the frames."""
    covered = np.bincount(labels[pred_masks.astype(bool)].ravel().astype(np.int64),
                          minlength=max(obj_ids, default=0) + 1)
    return {obj_id: int(covered[obj_id]) for obj_id in obj_ids}


def covered_object(coverage: Dict[int, int]) -> Optional[int]:
    """The object the masks cover most; None when they cover no object or two objects equally."""
    if not coverage:
        return None
    most = max(coverage.values())
    best = [obj_id for obj_id, pixels in coverage.items() if pixels == most]
    return best[0] if most > 0 and len(best) == 1 else None


def score_expression(video: str, exp_id: str, obj_id: int, labels: np.ndarray, pred_masks: np.ndarray,
                     expression: str = '', all_objects: bool = True) -> ExpressionResult:
    """J, F (means over the frames) and referring of one expression naming `obj_id`, from the label maps
    `[T, H, W]` of the video (every object's masks when `all_objects`) and the predicted masks."""
    j, f = frame_j_and_f(labels == obj_id, pred_masks)
    result = ExpressionResult(video, exp_id, str(obj_id), float(j.mean()), float(f.mean()), expression=expression)
    if all_objects:
        obj_ids = [int(k) for k in np.unique(labels) if k > 0]
        covered = covered_object(object_coverage(pred_masks, labels, obj_ids))
        result.covered_obj_id = '' if covered is None else str(covered)
        result.referred = covered == obj_id
    return result


def summarize(results: Sequence[ExpressionResult]) -> Dict[str, float]:
    """Means over the expressions: J&F, J, F, referring accuracy (NaN when no expression has it) and
    the number of expressions."""
    if not results:
        raise ValueError('no expressions to evaluate')
    j = float(np.mean([r.j for r in results]))
    f = float(np.mean([r.f for r in results]))
    referred = [r.referred for r in results if r.referred is not None]
    accuracy = float(np.mean(referred)) if referred else float('nan')
    return {'J&F': (j + f) / 2, 'J': j, 'F': f, 'referring_accuracy': accuracy, 'expressions': len(results)}


def format_summary(summary: Dict[str, float]) -> str:
    """One line: `J&F 0.812  J 0.790  F 0.834  referring accuracy 0.950 (78 expressions)`."""
    accuracy = summary['referring_accuracy']
    accuracy = 'n/a' if np.isnan(accuracy) else f'{accuracy:.3f}'
    return (f"J&F {summary['J&F']:.3f}  J {summary['J']:.3f}  F {summary['F']:.3f}  "
            f"referring accuracy {accuracy} ({summary['expressions']} expressions)")


def _cell(value) -> str:
    if isinstance(value, float):
        return f'{value:.4f}'
    if value is None:
        return ''
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """A csv file at `path`, written atomically: `header`, then `rows` (floats with 4 decimals, booleans 0/1,
    None empty)."""
    with atomic_write(path, newline='') as file:
        writer = csv.writer(file, lineterminator='\n')
        writer.writerow(header)
        writer.writerows([[_cell(value) for value in row] for row in rows])
    return Path(path)


def write_results(folder: Path, results: Sequence[ExpressionResult], summary: Dict[str, float],
                  name: str) -> Tuple[Path, Path]:
    """`<folder>/per-expression_results-<name>.csv` (one row per expression) and
    `<folder>/global_results-<name>.csv` (the summary), each written atomically; numbers with 4 decimals."""
    folder = Path(folder)
    rows: List[Sequence] = [(r.video, r.exp_id, r.obj_id, r.j, r.f, r.j_and_f, r.covered_obj_id, r.referred,
                             r.expression) for r in results]
    return (write_table(folder / f'per-expression_results-{name}.csv', RESULT_COLUMNS, rows),
            write_table(folder / f'global_results-{name}.csv', GLOBAL_COLUMNS, [[summary[c] for c in GLOBAL_COLUMNS]]))
