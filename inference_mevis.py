"""MeViS inference: binary masks for every sentence of every video of valid_u or valid, and for valid the zip
to upload to the MeViS evaluation server.

    python inference_mevis.py --config configs/mevis_r50.args --resume mevis_dirs/r50/checkpoint.pth \
        --output_dir mevis_dirs/r50 --split valid_u     # then: python eval_mevis.py --pred_path mevis_dirs/r50/valid_u
    python inference_mevis.py --config configs/mevis_r50.args --resume mevis_dirs/r50/checkpoint.pth \
        --output_dir mevis_dirs/r50 --split valid       # + mevis_dirs/r50/submission.zip

Writes `<output_dir>/<split>/<video>/<exp_id>/<frame>.png` (0/255) and, for valid,
`<output_dir>/submission.zip` with the video folders at its root (no `Annotations/` folder), as the server
expects. A re-run skips the sentences already written. A MeViS sentence may refer to several objects:
`--mevis_selection top1` keeps the best query, as for Ref-YouTube-VOS; `threshold` takes the union of the
queries whose score exceeds `--mevis_score_threshold`.
"""
import argparse
import logging
from functools import partial
from pathlib import Path
from typing import List

import opts
from datasets.mevis import LAYOUT_HINT, read_videos
from inference import segment_expressions
from util.benchmarks import MEVIS_SERVER_SPLIT, MEVIS_SERVER_VIDEOS
from util.cli import run
from util.files import require
from util.logger import setup_logging
from util.mask_folders import Expression, write_submission

logger = logging.getLogger('bifit')
SPLITS = ('valid_u', MEVIS_SERVER_SPLIT)


def get_parser() -> argparse.ArgumentParser:
    parser = opts.inference_parser('MeViS inference')
    parser.add_argument('--clip_len', default=0, type=int,
                        help='(new) frames per forward pass, for bounded memory on long videos; the queries are '
                             'still chosen over the whole video (0: the whole video at once)')
    parser.add_argument('--mevis_selection', default='top1', choices=('top1', 'threshold'),
                        help="(new) the queries whose masks make a sentence's mask: 'top1' the query with the best "
                             "score averaged over the frames (as for Ref-YouTube-VOS), 'threshold' the union of "
                             'every query whose averaged score exceeds --mevis_score_threshold (none: an empty '
                             'mask), for sentences that refer to several objects')
    parser.add_argument('--mevis_score_threshold', default=0.5, type=float,
                        help='(new) the score a query needs with --mevis_selection threshold')
    return parser


def expressions_to_segment(args) -> List[Expression]:
    """Every sentence of the split (normalised as the organisers' loader does), videos in name order."""
    videos = read_videos(Path(args.mevis_path), args.split)
    return [Expression(video, exp_id, expression['exp'], videos[video]['frames'])
            for video in sorted(videos) for exp_id, expression in videos[video]['expressions'].items()]


def main(args) -> None:
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the model weights to run')
    if args.split not in SPLITS:
        raise SystemExit(f'--split {args.split}: MeViS inference segments {" or ".join(SPLITS)}')
    if not 0 <= args.mevis_score_threshold < 1:
        raise SystemExit(f'--mevis_score_threshold {args.mevis_score_threshold}: a score in [0, 1)')
    setup_logging()
    frames_root = require(Path(args.mevis_path) / args.split / 'JPEGImages', f'MeViS {args.split} frames',
                          LAYOUT_HINT)
    expressions = expressions_to_segment(args)
    score_threshold = args.mevis_score_threshold if args.mevis_selection == 'threshold' else None
    segment_expressions(args, expressions, frames_root, score_threshold)
    if args.split == MEVIS_SERVER_SPLIT:
        videos = len({e.video for e in expressions})
        if videos != MEVIS_SERVER_VIDEOS:
            logger.warning('%d %s videos (the released MeViS has %d): the server will only score a complete '
                           'submission', videos, MEVIS_SERVER_SPLIT, MEVIS_SERVER_VIDEOS)
        path = write_submission(Path(args.output_dir) / 'submission.zip', Path(args.output_dir) / args.split,
                                expressions)
        logger.info('submission for the MeViS server: %s', path)


if __name__ == '__main__':
    run(main, partial(opts.parse_args, get_parser()))
