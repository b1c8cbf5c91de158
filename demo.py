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
from functools import partial
from pathlib import Path

import torch

import opts
from inference import load_inference_model, segment_video, video_masks
from util.cli import check_writable, run
from util.logger import setup_logging
from util.video_io import FrameSource, FrameWriter
from util.visualize import sentence_overlays

logger = logging.getLogger('bifit')


def get_parser() -> argparse.ArgumentParser:
    parser = opts.demo_parser('BIFIT demo: a video and a sentence in, the overlaid masks out')
    parser.add_argument('--video', required=True, help='a video file (.mp4, ...) or a folder of frames')
    parser.add_argument('--text', required=True, nargs='+',
                        help='the sentence that describes the object; (new) with several sentences, the output '
                             'shows one captioned panel per sentence, side by side')
    parser.add_argument('--output', default='demo_output.mp4',
                        help='.mp4 (H.264 when PyAV is installed, see requirements-app.txt), .gif, or a folder for '
                             'PNG frames')
    parser.add_argument('--fps', default=None, type=float, help='output frame rate (default: the input\'s, or 10)')
    return parser


@torch.no_grad()
def main(args) -> None:
    setup_logging()
    if not all(text.strip() for text in args.text):
        raise SystemExit('--text is empty: give the sentence that describes the object to segment')
    if not args.resume:
        raise SystemExit('--resume CHECKPOINT is required: the trained BIFIT weights')
    check_writable(args.output, '--output')
    source = FrameSource(args.video)
    device = torch.device(args.device)
    model = load_inference_model(args, device)
    logger.info('%s: %d frames; segmenting %s on %s', args.video, len(source),
                ', '.join(f'"{text}"' for text in args.text), device)
    mask_logits = segment_video(model, source, args.text, device, args.clip_len, args.short_side, args.amp)

    with FrameWriter(args.output, fps=args.fps or source.fps or 10.0, names=source.names) as writer:
        for frames, masks in video_masks(source, mask_logits, args.clip_len, args.threshold):
            for frame, frame_masks in zip(frames, masks):
                writer.write(sentence_overlays(frame, frame_masks, args.text))
    print(f'overlay written to {Path(args.output).resolve()}')


if __name__ == '__main__':
    run(main, partial(opts.parse_args, get_parser()))
