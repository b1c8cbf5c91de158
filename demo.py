"""Segment the object a sentence describes in your own video, and watch the result.

    python demo.py --video clip.mp4 --text "a person riding a bike on the left" \
        --resume ytvos_r50.pth --output clip_segmented.mp4

--video: a video file or a folder of frames; --output: .mp4, .gif, or a folder of PNGs. Several sentences
(`--text "the dog" "the man on the left"`) give one captioned panel per sentence, side by side. Long videos
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
from util.logger import setup_logging
from util.video_io import FrameSource, FrameWriter, frames_to_clip
from util.visualize import captioned, overlay, side_by_side

logger = logging.getLogger('bifit')


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('BIFIT demo: a video and a sentence in, the overlaid masks out',
                                     parents=[opts.get_args_parser()],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--video', required=True, help='a video file (.mp4, ...) or a folder of frames')
    parser.add_argument('--text', required=True, nargs='+',
                        help='the sentence that describes the object; (new) with several sentences, the output '
                             'shows one captioned panel per sentence, side by side')
    parser.add_argument('--output', default='demo_output.mp4', help='.mp4, .gif, or a folder for PNG frames')
    parser.add_argument('--clip_len', default=36, type=int, help='frames per forward pass (bounds memory)')
    parser.add_argument('--fps', default=None, type=float, help='output frame rate (default: the input\'s, or 10)')
    parser.set_defaults(with_box_refine=True, binary=True, freeze_text_encoder=True, ngpu=1)
    return parser


def segment_video(model, source: FrameSource, text: str, args, device: torch.device) -> torch.Tensor:
    """The chosen query's mask logits `[T, h/4, w/4]` (float16) for one sentence."""
    start = time.time()
    outputs = []
    for frames in source.chunks(args.clip_len):
        clip = frames_to_clip(frames, args.short_side)
        clip_outputs = predict_clip(model, clip, text, device, args.amp)
        outputs.append({k: v.cpu().half() if k == 'pred_masks' else v.cpu() for k, v in clip_outputs.items()})
    outputs = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    query = select_query(outputs['pred_logits'])
    scores = outputs['pred_logits'][:, query].sigmoid().max(-1)[0]
    logger.info('"%s": %.1f s (%.2f frames/s); chosen query %d, mean score %.3f', text, time.time() - start,
                len(source) / (time.time() - start), query, scores.mean())
    return outputs['pred_masks'][:, query]


@torch.no_grad()
def main(args) -> None:
    setup_logging()
    if not all(text.strip() for text in args.text):
        raise SystemExit('--text is empty: give the sentence that describes the object to segment')
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the trained BIFIT weights')
    source = FrameSource(args.video)
    device = torch.device(args.device)
    model = load_inference_model(args, device)
    logger.info('%s: %d frames; segmenting %s on %s', args.video, len(source),
                ', '.join(f'"{text}"' for text in args.text), device)
    mask_logits = [segment_video(model, source, text, args, device) for text in args.text]

    fps = args.fps or source.fps or 10.0
    covered = 0
    with FrameWriter(args.output, fps=fps, names=source.names) as writer:
        for frames in source.chunks(args.clip_len):
            h, w = frames[0].height, frames[0].width
            indices = slice(covered, covered + len(frames))
            panels = []
            for logits in mask_logits:
                masks = mask_probabilities(logits[indices].float(), (h, w)) > args.threshold
                panels.append([overlay(frame, mask.astype(np.bool_)) for frame, mask in zip(frames, masks.numpy())])
            for k in range(len(frames)):
                if len(mask_logits) == 1:
                    writer.write(panels[0][k])
                else:
                    writer.write(side_by_side([captioned(panel[k], text) for panel, text in zip(panels, args.text)]))
            covered += len(frames)
    print(f'overlay written to {Path(args.output).resolve()}')


if __name__ == '__main__':
    main(opts.parse_args(get_parser()))
