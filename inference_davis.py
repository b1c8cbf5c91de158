"""Ref-DAVIS17 inference: for each of the 4 annotators, every object's expression segments the video
and the objects compete by argmax against a constant background; palette PNGs for `eval_davis.py`.

    ./scripts/dist_test_davis.sh davis_dirs/resnet50 ytvos_r50.pth --backbone resnet50
    python inference_davis.py --with_box_refine --binary --freeze_text_encoder \
        --output_dir davis_dirs/resnet50 --resume ytvos_r50.pth --ngpu 1

Writes `<output_dir>/valid/anno_<a>/<video>/<frame:05d>.png`; a re-run skips finished videos.
"""
import argparse
import logging
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

import opts
from inference import (checked_checkpoint, finite, load_inference_model, mask_probabilities, predict_clip,
                       select_query)
from util.cli import UserError, run
from util.files import atomic_folder, output_lock, read_json
from util.inference_workers import run_sharded, split_evenly
from util.logger import setup_logging
from util.video_io import frames_to_clip, open_image
from util.visualize import label_image

logger = logging.getLogger('bifit')
NUM_ANNOTATORS = 4
CLIP_LEN = 24
BACKGROUND_SCORE = 0.1


def get_parser() -> argparse.ArgumentParser:
    parser = opts.inference_parser('Ref-DAVIS17 inference')
    parser.add_argument('--clip_len', default=CLIP_LEN, type=int,
                        help='frames per clip; each clip chooses its own query (the protocol: 24)')
    return parser


def read_videos(args) -> Dict:
    path = Path(args.davis_path) / 'meta_expressions' / args.split / 'meta_expressions.json'
    videos = read_json(path, 'meta file', 'run tools/convert_davis_to_ytvos.py first, see data.md')['videos']
    for video, meta in videos.items():
        if len(meta['expressions']) % NUM_ANNOTATORS:
            raise UserError(f'{path}: video {video} has {len(meta["expressions"])} expressions, not 4 per object '
                             f'(exp_id = object * 4 + annotator)')
        for exp_id, expression in meta['expressions'].items():
            if not expression['exp'].strip():
                raise UserError(f'{path}: empty expression {exp_id} of video {video}')
    return videos


def expression_logits(model, args, device, clip: torch.Tensor, texts: List[str]) -> List[Optional[torch.Tensor]]:
    """Per expression, the mask logits `[T, h/4, w/4]` (on the CPU) of clips of `--clip_len` frames, each with
    its own best query, or None when its outputs are not finite; each clip's visual part computed once for all
    the expressions."""
    logits = [[] for _ in texts]
    for start in range(0, len(clip), args.clip_len):
        for per_expression, outputs in zip(logits, predict_clip(model, clip[start:start + args.clip_len], texts,
                                                                device, args.amp)):
            per_expression.append(outputs['pred_masks'][:, select_query(outputs['pred_logits'])].cpu()
                                  if finite(outputs) else None)
    return [None if any(part is None for part in parts) else torch.cat(parts) for parts in logits]


def annotator_labels(objects: List[torch.Tensor]) -> np.ndarray:
    """Objects' probabilities `[T, H, W]` (below 0.5 set to 0) against a constant 0.1 background:
    label map `[T, H, W]` (0 background, k object k)."""
    scores = torch.stack(objects)
    scores[scores < 0.5] = 0.0
    background = torch.full_like(scores[:1], BACKGROUND_SCORE)
    return torch.cat([background, scores]).argmax(0).numpy().astype(np.uint8)


def video_done(output: Path, video: str, num_frames: int) -> bool:
    return all(len(list((output / f'anno_{a}' / video).glob('*.png'))) == num_frames for a in range(NUM_ANNOTATORS))


def segment_video(model, args, device, video: str, meta: Dict, output: Path) -> None:
    frames_folder = Path(args.davis_path) / args.split / 'JPEGImages' / video
    frames = [open_image(frames_folder / f'{name}.jpg') for name in meta['frames']]
    clip = frames_to_clip(frames, args.short_side)
    frame_size = (frames[0].height, frames[0].width)
    logits = expression_logits(model, args, device, clip, [e['exp'] for e in meta['expressions'].values()])
    if any(expression is None for expression in logits):
        bad = list(meta['expressions'].values())[[expression is None for expression in logits].index(True)]['exp']
        logger.warning('NON-FINITE OUTPUTS for video %s, expression "%s": no masks written', video, bad)
        return
    num_objects = len(logits) // NUM_ANNOTATORS
    for annotator in range(NUM_ANNOTATORS):
        objects = [mask_probabilities(logits[obj * NUM_ANNOTATORS + annotator], frame_size)
                   for obj in range(num_objects)]
        labels = annotator_labels(objects)
        with atomic_folder(output / f'anno_{annotator}' / video) as folder:
            for index, frame_labels in enumerate(labels):
                label_image(frame_labels).save(folder / f'{index:05d}.png')


def segment_videos(device, args, videos: List, progress, checkpoint: Optional[Dict] = None) -> None:
    """Segment `videos` (pairs of name and meta) for every annotator, with the weights of `checkpoint`."""
    model = load_inference_model(args, device, checkpoint)
    output = Path(args.output_dir) / args.split
    for video, meta in videos:
        segment_video(model, args, device, video, meta, output)
        progress.put(1)


def main(args) -> None:
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the model weights to run')
    setup_logging()
    videos = read_videos(args)
    output = Path(args.output_dir) / args.split
    with output_lock(args.output_dir):
        pending = {v: m for v, m in sorted(videos.items()) if not video_done(output, v, len(m['frames']))}
        logger.info('%d videos; %d already written, %d to do', len(videos), len(videos) - len(pending),
                    len(pending))
        start = time.time()
        if pending:
            worker = partial(segment_videos, checkpoint=checked_checkpoint(args))
            run_sharded(worker, args, split_evenly(list(pending.items()), args.ngpu), len(pending), 'videos')
            failed = [v for v, m in pending.items() if not video_done(output, v, len(m['frames']))]
            if failed:
                raise UserError(f'{len(failed)} of {len(pending)} videos gave NaN or infinite outputs and have no '
                                f'masks (e.g. {failed[0]}): is the checkpoint broken, or --amp overflowing?')
    logger.info('inference done in %.1f s; results in %s/anno_0..3 (evaluate with eval_davis.py '
                '--results_path %s/anno_<a>)', time.time() - start, output, output)


if __name__ == '__main__':
    run(main, partial(opts.parse_args, get_parser()))
