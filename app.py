"""BIFIT in the browser (Gradio): upload a video or pick the example, write one sentence per line, and get the
overlay video (H.264 mp4) and the masks of each sentence (a zip of PNGs, one per frame and sentence).

    python -m pip install -r requirements.txt -r requirements-app.txt
    python app.py --resume ytvos_r50.pth --backbone resnet50    # the model flags of demo.py
    python app.py                                               # the quick start's model, once trained
    python app.py --resume ckpt.pth --host 0.0.0.0 --port 7860  # reachable from other machines

Without --resume, the app takes the quick start's model (quickstart/train/checkpoint.pth, QUICKSTART_DIR to
change) when scripts/quickstart.sh has trained it. A training checkpoint of this implementation records its
options: those not given on the command line (backbone, sizes, --binary, the text encoder, --short_side) are
taken from it. The model is loaded once; videos are read, segmented and written --clip_len frames at a time,
so memory stays bounded on long videos. Runs on CPU (slowly) or CUDA.
"""
import argparse
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import torch
from PIL import Image

import opts
from inference import load_inference_model, segment_video, video_masks
from util.checkpoint import read_checkpoint
from util.cli import run
from util.files import atomic_write, read_json
from util.logger import setup_logging
from util.video_io import FrameSource, FrameWriter, browser_video_encoder
from util.visualize import sentence_overlays

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # offline: no usage reports, no version checks
try:
    import gradio as gr
except ImportError as missing:
    raise SystemExit(f'app.py needs Gradio ({missing}): python -m pip install -r requirements-app.txt')

ROOT = Path(__file__).resolve().parent
logger = logging.getLogger('bifit')
HOW_TO_GET_A_MODEL = ('pass --resume CHECKPOINT (a released model: README, "Using the released models"), or run '
                      '`bash scripts/quickstart.sh` (a few minutes on CPU), whose model app.py then uses')


def get_parser() -> argparse.ArgumentParser:
    parser = opts.demo_parser('BIFIT web demo: a video and sentences in, overlays and masks out, in the browser')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to serve on (0.0.0.0: reachable from other machines)')
    parser.add_argument('--port', default=7860, type=int, help='port to serve on')
    parser.add_argument('--example_dir', default=str(Path(tempfile.gettempdir()) / 'bifit_app_example'),
                        help='where the example clip is generated at the first launch (a synthetic Ref-Shapes video)')
    return parser


def quickstart_checkpoint() -> Path:
    """The model that scripts/quickstart.sh trains."""
    return ROOT / os.environ.get('QUICKSTART_DIR', 'quickstart') / 'train' / 'checkpoint.pth'


def checkpoint_with_options(args, parser: argparse.ArgumentParser, given: Set[str]) -> Dict:
    """The checkpoint of `--resume` (default: the quick start's), read once; the options it recorded in its
    `args` (training checkpoints do) replace those the command line did not give."""
    if not args.resume:
        if not quickstart_checkpoint().exists():
            raise SystemExit(f'app.py: no checkpoint: {HOW_TO_GET_A_MODEL} ({quickstart_checkpoint()})')
        args.resume = str(quickstart_checkpoint())
        logger.info('no --resume: using the quick start\'s model %s', args.resume)
    checkpoint = read_checkpoint(args.resume)
    saved = checkpoint.get('args') if isinstance(checkpoint, dict) else None
    saved = vars(saved) if isinstance(saved, argparse.Namespace) else saved if isinstance(saved, dict) else {}
    taken = {dest: saved[dest] for dest in opts.checkpoint_options(parser)
             if dest not in given and dest in saved and saved[dest] != getattr(args, dest)}
    if isinstance(taken.get('text_encoder'), str) and (ROOT / taken['text_encoder']).is_dir() \
            and not Path(taken['text_encoder']).is_dir():
        taken['text_encoder'] = str(ROOT / taken['text_encoder'])  # recorded relative to the project
    vars(args).update(taken)
    if taken:
        logger.info('options recorded in %s: %s', args.resume, ', '.join(f'{k}={v}' for k, v in sorted(taken.items())))
    return checkpoint


def example_clip(folder: Path) -> Tuple[str, str]:
    """(video, sentences): a Ref-Shapes clip of tools/make_synthetic_data.py as an H.264 mp4, and one sentence
    per object, generated into `folder` at the first launch."""
    video, sentences = folder / 'shapes.mp4', folder / 'sentences.txt'
    if not (video.exists() and sentences.exists()):
        data = folder / 'data'
        subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_synthetic_data.py'), '--out', str(data),
                        '--benchmarks', 'refshapes', '--refshapes_train', '0', '--refshapes_valid', '1',
                        '--refshapes_frames', '24', '--seed', '7'], check=True, capture_output=True)
        root = data / 'ref-shapes'
        name, entry = next(iter(read_json(root / 'meta_expressions' / 'valid' / 'meta_expressions.json',
                                          'example expressions')['videos'].items()))
        per_object: Dict[str, str] = {}
        for expression in entry['expressions'].values():
            per_object.setdefault(expression['obj_id'], expression['exp'])
        source = FrameSource(root / 'valid' / 'JPEGImages' / name)
        partial = folder / 'shapes.partial.mp4'
        with FrameWriter(partial, fps=8) as writer:
            for frames in source.chunks(len(source)):
                for frame in frames:
                    writer.write(frame)
        os.replace(partial, video)
        with atomic_write(sentences) as f:
            f.write('\n'.join(per_object.values()))
        shutil.rmtree(data)
    return str(video), sentences.read_text()


def png_bytes(mask) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype('uint8') * 255).save(buffer, format='PNG')
    return buffer.getvalue()


class Segmenter:
    """The model, loaded once, and what one click runs: every sentence over the whole video, then the overlay
    video and the masks written chunk by chunk into a fresh folder of `work_dir` (the previous result's
    folder is removed: Gradio has copied it into its cache by then)."""

    def __init__(self, model: torch.nn.Module, args, device: torch.device, work_dir: Path):
        self.model, self.args, self.device, self.work_dir = model, args, device, work_dir
        self.requests = 0

    def segment(self, video: Optional[str], sentences: Optional[str],
                progress=gr.Progress()) -> Tuple[str, str, str]:
        texts = [line.strip() for line in (sentences or '').splitlines() if line.strip()]
        if not video:
            raise gr.Error('No video: upload one (mp4, webm, mov, ...) or pick the example.')
        if not texts:
            raise gr.Error('No sentence: write one that names the object to segment, e.g. "the dog on the left" '
                           '(one per line for several objects).')
        try:
            source = FrameSource(video)
        except (RuntimeError, FileNotFoundError) as error:
            raise gr.Error(f'{Path(video).name} cannot be read as a video ({error}); upload an mp4, webm or mov '
                           'file.', print_exception=False)
        start, total = time.time(), len(source) * (len(texts) + 1)

        def report(done: int) -> None:
            progress((done * len(texts), total), desc=f'segmenting {len(texts)} sentence(s)', unit='frames')
        mask_logits = segment_video(self.model, source, texts, self.device, self.args.clip_len, self.args.short_side,
                                    self.args.amp, report)
        out = self.next_folder()
        found = [False] * len(texts)
        folders = [f'{k + 1:02d}_' + ''.join(c if c.isalnum() else '_' for c in text)[:40] for k, text in enumerate(texts)]
        names = iter(source.names)
        written = 0
        with FrameWriter(out / 'overlay.mp4', fps=source.fps or 10.0) as writer, \
                atomic_write(out / 'masks.zip', 'wb') as archive_file, \
                zipfile.ZipFile(archive_file, 'w', zipfile.ZIP_STORED) as archive:
            for frames, masks in video_masks(source, mask_logits, self.args.clip_len, self.args.threshold):
                for frame, frame_masks in zip(frames, masks):
                    writer.write(sentence_overlays(frame, frame_masks, texts))
                    name = next(names)
                    for k, mask in enumerate(frame_masks):
                        archive.writestr(f'{folders[k]}/{name}.png', png_bytes(mask))
                        found[k] = found[k] or bool(mask.any())
                written += len(frames)
                progress((total - len(source) + written, total), desc='writing the overlay video', unit='frames')
        for text, any_mask in zip(texts, found):
            if not any_mask:
                gr.Warning(f'"{text}": nothing found (the mask is empty in every frame).')
        seconds = time.time() - start
        status = (f'{len(source)} frames, {len(texts)} sentence(s): {seconds:.1f} s on {self.device} '
                  f'({len(source) * len(texts) / seconds:.1f} frames/s)')
        logger.info('%s: %s', Path(video).name, status)
        return str(out / 'overlay.mp4'), str(out / 'masks.zip'), status

    def next_folder(self) -> Path:
        shutil.rmtree(self.work_dir / f'{self.requests:05d}', ignore_errors=True)
        self.requests += 1
        folder = self.work_dir / f'{self.requests:05d}'
        folder.mkdir(parents=True)
        return folder


def build_ui(segmenter: Segmenter, example: Optional[Tuple[str, str]], model_line: str) -> gr.Blocks:
    with gr.Blocks(title='BIFIT', analytics_enabled=False, delete_cache=(3600, 3600)) as ui:
        gr.Markdown('# BIFIT: referring video object segmentation\n'
                    'Upload a video, write a sentence that names an object (one per line for several), and '
                    f'press *Segment*. {model_line}')
        with gr.Row():
            with gr.Column():
                video = gr.Video(label='Video', sources=['upload'], elem_id='video')
                sentences = gr.Textbox(label='Sentences, one per line', lines=3, elem_id='sentences',
                                       placeholder='the person on the left\nthe red car')
                button = gr.Button('Segment', variant='primary', elem_id='segment')
                if example:
                    gr.Examples([list(example)], inputs=[video, sentences], label='Example: a synthetic clip')
            with gr.Column():
                overlay = gr.Video(label='Overlay', interactive=False, elem_id='overlay')
                masks = gr.File(label='Masks: a PNG per frame and sentence (zip)', elem_id='masks')
                status = gr.Markdown(elem_id='status')
        button.click(segmenter.segment, inputs=[video, sentences], outputs=[overlay, masks, status])
    return ui


def main(argv: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = opts.parse_args(parser, argv)
    setup_logging()
    logging.getLogger('httpx').setLevel(logging.WARNING)  # Gradio's own requests to the page it serves
    if browser_video_encoder() is None:
        raise SystemExit('app.py writes browser-playable H.264 videos with PyAV: '
                         'python -m pip install -r requirements-app.txt')
    device = torch.device(args.device)
    try:
        checkpoint = checkpoint_with_options(args, parser, opts.given_options(parser, argv))
        model = load_inference_model(args, device, checkpoint)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise SystemExit(f'app.py: {error}')
    example = example_clip(Path(args.example_dir))
    work_dir = Path(tempfile.mkdtemp(prefix='bifit_app_'))
    segmenter = Segmenter(model, args, device, work_dir)
    model_line = f'Model: `{args.resume}` ({args.backbone} backbone) on {device}.'
    try:
        build_ui(segmenter, example, model_line).queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, allowed_paths=[args.example_dir])
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == '__main__':
    run(main, list)
