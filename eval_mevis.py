"""Offline J&F of MeViS predictions on valid_u (or train), as the organisers' `tools/eval_mevis.py` computes it.

    python eval_mevis.py --pred_path mevis_dirs/r50/valid_u --mevis_path data/mevis

Predictions: `<pred_path>/<video>/<exp_id>/<frame>.png` (what `inference_mevis.py` writes under
`<output_dir>/<split>/`), read as grayscale; any non-zero pixel is foreground. Ground truth of a sentence in
a frame: the union of the masks of its `anno_id`s in `<mevis_path>/<split>/mask_dict.json` (null entries add
nothing). Every frame listed in `meta_expressions.json` is scored: J (region IoU, 1 when both masks are
empty) and F (the DAVIS boundary measure, tolerance ceil(0.008 * diagonal)); a sentence's J and F are their
plain means over its frames (frames without ground truth included), keyed `<video>_<exp_id>`; J and F are
then averaged over the sentences and J&F = (J + F) / 2.

Missing predictions: a missing video folder scores J = F = 0 for its sentences, as in the organisers' script.
A missing sentence folder or frame also scores J = F = 0, with a warning; the organisers' script crashes the
worker process instead and so leaves that sentence out of the means without a word. A prediction of another
size than its frame stops the evaluation with an error naming it (their script crashes there too). Writes
`per-expression_results-<split>.csv` and `global_results-<split>.csv` into `--pred_path` (or `--csv_dir`).
"""
import argparse
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.mevis import MaskDict, read_videos
from util.benchmarks import MEVIS_SPLITS_WITH_MASKS
from util.cli import ArgumentParser, run
from util.files import require
from util.logger import setup_logging
from util.rvos_metrics import frame_j_and_f, write_table

logger = logging.getLogger('bifit')
RESULT_COLUMNS = ('key', 'video', 'exp_id', 'obj_id', 'J', 'F', 'J&F', 'missing', 'expression')
GLOBAL_COLUMNS = ('J&F', 'J', 'F', 'expressions', 'missing')


@dataclass
class SentenceScore:
    """J and F of one sentence; `missing`: what of its prediction was not found ('' when complete)."""
    video: str
    exp_id: str
    obj_id: str
    j: float
    f: float
    missing: str = ''
    expression: str = ''

    @property
    def key(self) -> str:
        return f'{self.video}_{self.exp_id}'


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="J&F of MeViS predictions against the valid_u (or train) masks, with the organisers' "
                    'semantics: J and F of every listed frame against the union of the referred objects\' masks, '
                    'their means over the frames of each sentence, then over the sentences; J&F = (J + F) / 2. '
                    'A sentence without predictions scores 0 (with a warning for a missing sentence folder or '
                    'frame, which the organisers\' script drops instead).')
    parser.add_argument('--pred_path', required=True, type=Path,
                        help='predictions <video>/<exp_id>/<frame>.png, e.g. <output_dir>/valid_u of '
                             'inference_mevis.py')
    parser.add_argument('--mevis_path', default=Path('data/mevis'), type=Path,
                        help='the MeViS root holding <split>/meta_expressions.json and <split>/mask_dict.json')
    parser.add_argument('--split', default='valid_u', choices=MEVIS_SPLITS_WITH_MASKS,
                        help='the split to evaluate (the splits whose masks are public)')
    parser.add_argument('--csv_dir', default=None, type=Path, help='where the csv files go (default: --pred_path)')
    parser.add_argument('--workers', default=min(8, os.cpu_count() or 1), type=int,
                        help='processes scoring videos in parallel')
    return parser


def read_prediction(path: Path) -> np.ndarray:
    """A predicted mask `[H, W]` (bool): the PNG as grayscale, non-zero pixels foreground."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('L')) > 0
    except OSError as error:
        raise ValueError(f'cannot read the prediction {path} ({error})') from error


def video_anno_ids(entry: Dict) -> List[str]:
    """The anno_ids of every sentence of a video (its entry of the sentence file)."""
    return sorted({anno_id for expression in entry['expressions'].values() for anno_id in expression['anno_id']})


def frame_size(masks: MaskDict) -> Optional[Tuple[int, int]]:
    """(H, W) of a video's frames from the first of its masks; None when it has none."""
    for rles in masks.masks.values():
        for rle in rles:
            if rle is not None:
                return tuple(rle['size'])
    return None


def score_video(job: Tuple[Path, MaskDict, str, Dict]) -> List[SentenceScore]:
    """Every sentence of one video: `job` = (prediction folder, the masks of the video's anno_ids, video,
    its entry of the sentence file). Ground truth and predictions are compared at the size of the video's
    masks (of its first prediction when it has none)."""
    predictions, masks, video, entry = job
    frames = entry['frames']
    size = frame_size(masks)
    scores = []
    for exp_id, expression in entry['expressions'].items():
        score = SentenceScore(video, exp_id, ' '.join(map(str, expression.get('obj_id', []))), 0.0, 0.0,
                              expression=expression['exp'])
        scores.append(score)
        folder = predictions / video / exp_id
        if not (predictions / video).is_dir():
            score.missing = 'video folder'
        elif not folder.is_dir():
            score.missing = 'sentence folder'
        else:
            absent = [f'{frame}.png' for frame in frames if not (folder / f'{frame}.png').is_file()]
            score.missing = f'{len(absent)} frames, e.g. {absent[0]}' if absent else ''
        if score.missing:
            continue
        pred = [read_prediction(folder / f'{frame}.png') for frame in frames]
        expected = size or pred[0].shape
        for frame, mask in zip(frames, pred):
            if mask.shape != expected:
                raise ValueError(f'{folder / frame}.png is {mask.shape[1]}x{mask.shape[0]} (width x height), the '
                                 f'frames of video {video} {expected[1]}x{expected[0]}')
        gt = np.stack([masks.union(expression['anno_id'], index, expected) for index in range(len(frames))])
        j, f = frame_j_and_f(gt, np.stack(pred))
        score.j, score.f = float(j.mean()), float(f.mean())
    return scores


def summarize(scores: Sequence[SentenceScore]) -> Dict[str, float]:
    """Means over the sentences: J&F, J, F; the number of sentences and of those without (complete)
    predictions."""
    if not scores:
        raise ValueError('no sentences to evaluate')
    j = float(np.mean([s.j for s in scores]))
    f = float(np.mean([s.f for s in scores]))
    return {'J&F': (j + f) / 2, 'J': j, 'F': f, 'expressions': len(scores),
            'missing': sum(bool(s.missing) for s in scores)}


def format_summary(summary: Dict[str, float]) -> str:
    """One line: `J&F 0.412  J 0.380  F 0.444 (907 expressions, 0 without predictions)`."""
    return (f"J&F {summary['J&F']:.3f}  J {summary['J']:.3f}  F {summary['F']:.3f} "
            f"({summary['expressions']} expressions, {summary['missing']} without predictions)")


def evaluate(pred_path: Path, mevis_path: Path, split: str = 'valid_u', workers: int = 1,
             progress: bool = True) -> Tuple[Dict[str, float], List[SentenceScore]]:
    """The summary and the per-sentence scores (videos in name order, sentences in file order); warns about
    sentences without (complete) predictions."""
    require(pred_path, 'prediction folder', 'the <output_dir>/<split> folder of inference_mevis.py')
    videos = read_videos(mevis_path, split)
    masks = MaskDict.read(mevis_path, split)
    masks.check(videos)
    jobs = [(pred_path, masks.subset(video_anno_ids(entry)), video, entry) for video, entry in sorted(videos.items())]
    bar = tqdm(total=sum(len(entry['expressions']) for entry in videos.values()), desc='expressions',
               disable=not progress, dynamic_ncols=True)
    scores: List[SentenceScore] = []
    parallel = workers > 1 and len(jobs) > 1
    with Pool(min(workers, len(jobs))) if parallel else nullcontext() as pool:
        for video_scores in (pool.imap if parallel else map)(score_video, jobs):
            scores += video_scores
            bar.update(len(video_scores))
    bar.close()
    missing = [s for s in scores if s.missing]
    if missing:
        logger.warning('%d of %d sentences have no (complete) prediction and score J = F = 0, e.g. %s/%s: '
                       'missing %s', len(missing), len(scores), missing[0].video, missing[0].exp_id,
                       missing[0].missing)
    return summarize(scores), scores


def write_results(folder: Path, scores: Sequence[SentenceScore], summary: Dict[str, float],
                  split: str) -> Tuple[Path, Path]:
    """`<folder>/per-expression_results-<split>.csv` (one row per sentence) and
    `<folder>/global_results-<split>.csv`, written atomically."""
    rows = [(s.key, s.video, s.exp_id, s.obj_id, s.j, s.f, (s.j + s.f) / 2, s.missing, s.expression) for s in scores]
    return (write_table(Path(folder) / f'per-expression_results-{split}.csv', RESULT_COLUMNS, rows),
            write_table(Path(folder) / f'global_results-{split}.csv', GLOBAL_COLUMNS,
                        [[summary[c] for c in GLOBAL_COLUMNS]]))


def main(args: argparse.Namespace) -> Dict[str, float]:
    setup_logging()
    summary, scores = evaluate(args.pred_path, args.mevis_path, args.split, args.workers)
    per_expression, global_path = write_results(args.csv_dir or args.pred_path, scores, summary, args.split)
    print(f'{args.split}: {format_summary(summary)}')
    print(f'per expression: {per_expression}\nglobal:         {global_path}')
    return summary


if __name__ == '__main__':
    run(main, get_args_parser().parse_args, user_errors=(ValueError,))
