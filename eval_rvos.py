"""Offline J&F (and referring accuracy) of Ref-YouTube-VOS-layout predictions against ground truth in the same
layout: a held-out split of Ref-YouTube-VOS train (`tools/split_ytvos_holdout.py`), Ref-Shapes, converted
Ref-DAVIS17.

    python eval_rvos.py --pred_path ytvos_dirs/r50/valid --gt_path data/ref-youtube-vos-holdout

Predictions: `<pred_path>/<video>/<exp_id>/<frame>.png` (what `inference_ytvos.py` writes under
`<output_dir>/<split>/`; any PNG, a pixel > 0 is foreground). Ground truth: `<gt_path>/<split>/Annotations/
<video>/<frame>.png` (palette PNGs, pixel value = object id) and `<gt_path>/meta_expressions/<split>/
meta_expressions.json` (with `obj_id`). Every frame listed for a video is scored. J, F and J&F are means over
the frames of an expression, then over the expressions; referring accuracy is the share of expressions whose
masks, summed over the frames, cover the named object more than any other object of the annotations. Writes
`per-expression_results-<split>.csv` and `global_results-<split>.csv` into `--pred_path` (or `--csv_dir`).
"""
import argparse
import os
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from util.cli import ArgumentParser, run
from util.files import read_json, require
from util.rvos_metrics import ExpressionResult, format_summary, score_expression, summarize, write_results

LAYOUT_HINT = 'the Ref-YouTube-VOS layout, see data.md'


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description='J&F and referring accuracy of Ref-YouTube-VOS-layout predictions against ground truth with '
                    'masks (a held-out split, Ref-Shapes, converted Ref-DAVIS17). J, F and J&F: means over the frames '
                    'of each expression, then over the expressions. Referring accuracy: the share of expressions '
                    'whose masks, summed over the frames, cover the named object more than any other object.')
    parser.add_argument('--pred_path', required=True, type=Path,
                        help='predictions <video>/<exp_id>/<frame>.png, e.g. <output_dir>/valid of inference_ytvos.py')
    parser.add_argument('--gt_path', required=True, type=Path,
                        help='ground-truth root holding <split>/Annotations and meta_expressions/<split>')
    parser.add_argument('--split', default='valid', help='the split folder of --gt_path to evaluate')
    parser.add_argument('--csv_dir', default=None, type=Path, help='where the csv files go (default: --pred_path)')
    parser.add_argument('--workers', default=min(8, os.cpu_count() or 1), type=int,
                        help='processes scoring videos in parallel')
    return parser


def read_png(path: Path) -> np.ndarray:
    """The pixel values `[H, W]` of a palette or grayscale PNG."""
    if not path.is_file():
        raise FileNotFoundError(f'mask not found: {path}')
    array = np.asarray(Image.open(path))
    if array.ndim != 2:
        raise ValueError(f'{path}: expected a palette or grayscale PNG, got an array of shape {array.shape}')
    return array


def score_video(job: Tuple[Path, Path, str, Dict]) -> List[ExpressionResult]:
    """Every expression of one video: `job` = (annotation folder, prediction folder, video, its meta entry)."""
    annotations, predictions, video, entry = job
    frames = entry['frames']
    labels = np.stack([read_png(annotations / video / f'{frame}.png') for frame in frames])
    results = []
    for exp_id, expression in entry['expressions'].items():
        masks = np.stack([read_png(predictions / video / exp_id / f'{frame}.png') > 0 for frame in frames])
        if masks.shape != labels.shape:
            raise ValueError(f'{predictions / video / exp_id}: masks of shape {masks.shape[1:]}, '
                             f'annotations of shape {labels.shape[1:]}')
        results.append(score_expression(video, exp_id, int(expression['obj_id']), labels, masks,
                                        expression.get('exp', '')))
    return results


def evaluate(pred_path: Path, gt_path: Path, split: str = 'valid', workers: int = 1,
             progress: bool = True) -> Tuple[Dict[str, float], List[ExpressionResult]]:
    """The summary (`util.rvos_metrics.summarize`) and the per-expression results, in meta-file order."""
    annotations = require(gt_path / split / 'Annotations', f'{split} masks', LAYOUT_HINT)
    meta = read_json(gt_path / 'meta_expressions' / split / 'meta_expressions.json', f'{split} expressions',
                     LAYOUT_HINT)['videos']
    require(pred_path, 'prediction folder', 'the <output_dir>/<split> folder of inference_ytvos.py')
    missing = [f'{video}/{exp_id}' for video, entry in meta.items() for exp_id in entry.get('expressions', {})
               if not (pred_path / video / exp_id).is_dir()]
    if missing:
        raise FileNotFoundError(f'{len(missing)} expressions have no prediction folder in {pred_path}, e.g. '
                                f'{missing[0]} (run inference_ytvos.py on this split to completion)')
    for video, entry in meta.items():
        if not entry.get('frames'):
            raise ValueError(f'video {video} lists no frames in the meta file ({LAYOUT_HINT})')
        without = [exp_id for exp_id, expression in entry['expressions'].items() if 'obj_id' not in expression]
        if without:
            raise ValueError(f'expression {without[0]} of video {video} has no obj_id in the meta file: '
                             'it has no ground truth to evaluate against')
    jobs = [(annotations, pred_path, video, entry) for video, entry in sorted(meta.items())]
    bar = tqdm(total=sum(len(entry['expressions']) for entry in meta.values()), desc='expressions',
               disable=not progress, dynamic_ncols=True)
    results = []
    if workers > 1 and len(jobs) > 1:
        with Pool(min(workers, len(jobs))) as pool:
            for video_results in pool.imap(score_video, jobs):
                results += video_results
                bar.update(len(video_results))
    else:
        for job in jobs:
            results += score_video(job)
            bar.update(len(results) - bar.n)
    bar.close()
    return summarize(results), results


def main(args: argparse.Namespace) -> None:
    summary, results = evaluate(args.pred_path, args.gt_path, args.split, args.workers)
    csv_dir = args.csv_dir or args.pred_path
    csv_dir.mkdir(parents=True, exist_ok=True)
    per_expression, global_path = write_results(csv_dir, results, summary, args.split)
    print(f'{args.split}: {format_summary(summary)}')
    print(f'per expression: {per_expression}\nglobal:         {global_path}')


if __name__ == '__main__':
    run(main, get_args_parser().parse_args, user_errors=(ValueError,))
