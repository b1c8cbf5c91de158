"""Ref-YouTube-VOS inference: binary masks for every expression of every validation video, and the
zip to upload to the evaluation server.

    python inference_ytvos.py --with_box_refine --binary --freeze_text_encoder \
        --output_dir=ytvos_dirs/resnet50 --resume=ytvos_r50.pth --backbone resnet50

Writes `<output_dir>/<split>/<video>/<exp_id>/<frame>.png` (0/255) and `<output_dir>/submission.zip`
(the same folders under `Annotations/`). A re-run skips the expressions already written.
"""
import argparse
import logging
from functools import partial
from pathlib import Path
from typing import Dict, List

import opts
from inference import segment_expressions
from util.cli import UserError, run
from util.files import read_json
from util.logger import setup_logging
from util.mask_folders import Expression, write_submission

logger = logging.getLogger('bifit')
RELEASE_VALID_VIDEOS = 202


def get_parser() -> argparse.ArgumentParser:
    parser = opts.inference_parser('Ref-YouTube-VOS inference')
    parser.add_argument('--clip_len', default=0, type=int,
                        help='(new) frames per forward pass, for bounded memory on long videos; the query is '
                             'still chosen over the whole video (0: the whole video at once, as the original)')
    parser.add_argument('--no_zip', action='store_true',
                        help='(new) do not write submission.zip (e.g. for a held-out split scored by eval_rvos.py)')
    return parser


def read_meta(path: Path) -> Dict:
    return read_json(path, 'meta file', 'the Ref-YouTube-VOS layout '
                     '<ytvos_path>/meta_expressions/<split>/meta_expressions.json, see data.md')['videos']


def expressions_to_segment(args) -> List[Expression]:
    """The expressions of the split: for `valid`, the validation videos of the valid meta file minus
    the test videos (the released valid meta also lists the test videos). A submission for the server
    (no `--no_zip`) of another number of videos than the release's gets a warning."""
    root = Path(args.ytvos_path)
    meta = read_meta(root / 'meta_expressions' / args.split / 'meta_expressions.json')
    videos = set(meta)
    if args.split == 'valid':
        test_meta = root / 'meta_expressions' / 'test' / 'meta_expressions.json'
        videos -= set(read_meta(test_meta)) if test_meta.is_file() else set()
        if len(videos) != RELEASE_VALID_VIDEOS and not args.no_zip:
            logger.warning('%d validation videos (the released Ref-YouTube-VOS has %d): the server will '
                           'only score a complete submission', len(videos), RELEASE_VALID_VIDEOS)
    expressions = []
    for video in sorted(videos):
        for exp_id, expression in meta[video]['expressions'].items():
            if not expression['exp'].strip():
                raise UserError(f'empty expression {exp_id} of video {video} in the meta file')
            expressions.append(Expression(video, exp_id, expression['exp'], meta[video]['frames']))
    return expressions


def main(args) -> None:
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the model weights to run')
    setup_logging()
    expressions = expressions_to_segment(args)
    segment_expressions(args, expressions, Path(args.ytvos_path) / args.split / 'JPEGImages')
    if not args.no_zip:
        path = write_submission(Path(args.output_dir) / 'submission.zip', Path(args.output_dir) / args.split,
                                expressions, root='Annotations/')
        logger.info('submission for the server: %s', path)


if __name__ == '__main__':
    run(main, partial(opts.parse_args, get_parser()))
