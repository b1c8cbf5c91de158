"""Ref-YouTube-VOS inference: binary masks for every expression of every validation video, and the
zip to upload to the evaluation server.

    python inference_ytvos.py --with_box_refine --binary --freeze_text_encoder \
        --output_dir=ytvos_dirs/resnet50 --resume=ytvos_r50.pth --backbone resnet50

Writes `<output_dir>/<split>/<video>/<exp_id>/<frame>.png` (0/255) and `<output_dir>/submission.zip`
(the same folders under `Annotations/`). A re-run skips the expressions already written.
"""
import argparse
import logging
import time
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple

import numpy as np
import torch
from PIL import Image

import opts
from inference import load_inference_model, mask_probabilities, predict_clip, select_query
from util.box_ops import box_cxcywh_to_xyxy
from util.files import atomic_folder, atomic_write, read_json
from util.inference_workers import run_sharded, split_evenly
from util.logger import setup_logging
from util.video_io import frames_to_clip, open_image
from util.visualize import overlay

logger = logging.getLogger('bifit')
RELEASE_VALID_VIDEOS = 202


class Expression(NamedTuple):
    video: str
    exp_id: str
    text: str
    frames: List[str]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('Ref-YouTube-VOS inference', parents=[opts.get_args_parser()],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
                raise ValueError(f'empty expression {exp_id} of video {video} in the meta file')
            expressions.append(Expression(video, exp_id, expression['exp'], meta[video]['frames']))
    return expressions


def is_written(output: Path, expression: Expression) -> bool:
    folder = output / expression.video / expression.exp_id
    return folder.is_dir() and all((folder / f'{frame}.png').exists() for frame in expression.frames)


def write_masks(output: Path, expression: Expression, masks: np.ndarray) -> None:
    """Masks `[T, H, W]` (bool) as 0/255 PNGs."""
    with atomic_folder(output / expression.video / expression.exp_id) as folder:
        for frame, mask in zip(expression.frames, masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f'{frame}.png')


def segment(model, args, device, clip: torch.Tensor, text: str, frame_size) -> Dict[str, np.ndarray]:
    """One expression over the whole video: the chosen query's masks `[T, H, W]` (bool), boxes
    `[T, 4]` (x1, y1, x2, y2 pixels) and reference points `[T, 2]` (pixels)."""
    chunk = args.clip_len if args.clip_len > 0 else len(clip)
    outputs = [predict_clip(model, clip[start:start + chunk], text, device, args.amp)
               for start in range(0, len(clip), chunk)]
    outputs = {k: torch.cat([o[k].cpu() for o in outputs]) for k in outputs[0]}
    query = select_query(outputs['pred_logits'])
    h, w = frame_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    return {'masks': (mask_probabilities(outputs['pred_masks'][:, query], frame_size) > args.threshold).numpy(),
            'boxes': (box_cxcywh_to_xyxy(outputs['pred_boxes'][:, query]) * scale).numpy(),
            'points': (outputs['reference_points'][:, query] * scale[:2]).numpy()}


def save_overlays(folder: Path, frames: List[Image.Image], names: List[str], result: Dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name, mask, box, point in zip(frames, names, result['masks'], result['boxes'], result['points']):
        overlay(frame, mask, box, point).save(folder / f'{name}.png')


def segment_videos(device, args, videos: List[List[Expression]], progress) -> None:
    """Segment every expression of `videos` (each a list of one video's expressions)."""
    model = load_inference_model(args, device)
    output = Path(args.output_dir) / args.split
    frames_folder = Path(args.ytvos_path) / args.split / 'JPEGImages'
    for expressions in videos:
        names = expressions[0].frames
        frames = [open_image(frames_folder / expressions[0].video / f'{name}.jpg') for name in names]
        clip = frames_to_clip(frames, args.short_side)
        for expression in expressions:
            result = segment(model, args, device, clip, expression.text, (frames[0].height, frames[0].width))
            write_masks(output, expression, result['masks'])
            if args.visualize:
                folder = Path(args.output_dir) / f'{args.split}_images' / expression.video / expression.exp_id
                save_overlays(folder, frames, names, result)
            progress.put(1)


def write_submission(output_dir: Path, split: str, expressions: List[Expression]) -> Path:
    """`<output_dir>/submission.zip` with `Annotations/<video>/<exp_id>/<frame>.png`, written atomically."""
    path = output_dir / 'submission.zip'
    with atomic_write(path, 'wb') as file, zipfile.ZipFile(file, 'w', compression=zipfile.ZIP_STORED) as archive:
        for e in expressions:
            for frame in e.frames:
                archive.write(output_dir / split / e.video / e.exp_id / f'{frame}.png',
                              f'Annotations/{e.video}/{e.exp_id}/{frame}.png')
    return path


def main(args) -> None:
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the model weights to run')
    setup_logging()
    expressions = expressions_to_segment(args)
    output_dir = Path(args.output_dir)
    output = output_dir / args.split
    pending = [e for e in expressions if not is_written(output, e)]
    logger.info('%d videos, %d expressions; %d already written, %d to do', len({e.video for e in expressions}),
                len(expressions), len(expressions) - len(pending), len(pending))
    start = time.time()
    by_video: Dict[str, List[Expression]] = {}
    for expression in pending:
        by_video.setdefault(expression.video, []).append(expression)
    if pending:
        run_sharded(segment_videos, args, split_evenly(list(by_video.values()), args.ngpu), len(pending), 'expressions')
    logger.info('inference done in %.1f s; masks in %s', time.time() - start, output)
    if not args.no_zip:
        logger.info('submission for the server: %s', write_submission(output_dir, args.split, expressions))


if __name__ == '__main__':
    main(opts.parse_args(get_parser()))
