"""Segment the object a sentence describes in your own video, and watch the result.

    python demo.py --video clip.mp4 --text "a person riding a bike on the left" \
        --resume ytvos_r50.pth --output clip_segmented.mp4

--video: a video file or a folder of frames; --output: .mp4, .gif, or a folder of PNGs. Long videos
are processed in clips of --clip_len frames; the query is chosen over the whole video. Runs on CPU
(slowly) or CUDA. The released model's flags (--with_box_refine --binary --freeze_text_encoder) are
the defaults here.
"""
import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

import opts
from inference import load_inference_model, mask_probabilities, predict_clip, select_query
from util.box_ops import box_cxcywh_to_xyxy
from util.logger import setup_logging
from util.video_io import FrameSource, FrameWriter, frames_to_clip
from util.visualize import overlay

logger = logging.getLogger('bifit')


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('BIFIT demo: a video and a sentence in, the overlaid masks out',
                                     parents=[opts.get_args_parser()],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--video', required=True, help='a video file (.mp4, ...) or a folder of frames')
    parser.add_argument('--text', required=True, help='the sentence that describes the object')
    parser.add_argument('--output', default='demo_output.mp4', help='.mp4, .gif, or a folder for PNG frames')
    parser.add_argument('--clip_len', default=36, type=int, help='frames per forward pass (bounds memory)')
    parser.add_argument('--fps', default=None, type=float, help='output frame rate (default: the input\'s, or 10)')
    parser.set_defaults(with_box_refine=True, binary=True, freeze_text_encoder=True, ngpu=1)
    return parser


@torch.no_grad()
def main(args) -> None:
    setup_logging()
    if not args.text.strip():
        raise SystemExit('--text is empty: give the sentence that describes the object to segment')
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the trained BIFIT weights')
    source = FrameSource(args.video)
    device = torch.device(args.device)
    model = load_inference_model(args, device)
    logger.info('%s: %d frames; segmenting "%s" on %s', args.video, len(source), args.text, device)

    start = time.time()
    outputs = []
    for frames in source.chunks(args.clip_len):
        clip = frames_to_clip(frames, args.short_side)
        clip_outputs = predict_clip(model, clip, args.text, device, args.amp)
        outputs.append({k: v.cpu().half() if k == 'pred_masks' else v.cpu() for k, v in clip_outputs.items()})
    outputs = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    query = select_query(outputs['pred_logits'])
    scores = outputs['pred_logits'][:, query].sigmoid().max(-1)[0]
    logger.info('inference: %.1f s (%.2f frames/s); chosen query %d, mean score %.3f', time.time() - start,
                len(source) / (time.time() - start), query, scores.mean())

    fps = args.fps or source.fps or 10.0
    covered = 0
    with FrameWriter(args.output, fps=fps, names=source.names) as writer:
        for frames in source.chunks(args.clip_len):
            h, w = frames[0].height, frames[0].width
            indices = slice(covered, covered + len(frames))
            masks = mask_probabilities(outputs['pred_masks'][indices, query].float(), (h, w)) > args.threshold
            boxes = box_cxcywh_to_xyxy(outputs['pred_boxes'][indices, query]) * torch.tensor([w, h, w, h])
            for frame, mask, box in zip(frames, masks.numpy(), boxes.tolist()):
                writer.write(overlay(frame, mask.astype(np.bool_), box))
            covered += len(frames)
    print(f'overlay written to {Path(args.output).resolve()}')


if __name__ == '__main__':
    main(opts.parse_args(get_parser()))
