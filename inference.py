"""Running a trained BIFIT: the model of `--resume` ready for inference, one clip and one sentence through
it, the query it chooses and that query's masks at the frame size, and a whole video segmented clip by
clip; the sentences of whole videos segmented into mask folders in worker processes. Used by the inference
scripts, the demo, the web demo and the evaluation of held-out clips (`engine.py`)."""
import logging
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models import build_model
from util.box_ops import box_cxcywh_to_xyxy
from util.checkpoint import load_checkpoint, load_checkpoint_file, model_state_dict, read_checkpoint
from util.cli import UserError
from util.inference_workers import run_sharded, split_evenly
from util.mask_folders import Expression, is_written, save_overlays, write_masks
from util.precision import autocast
from util.video_io import FrameSource, frames_to_clip, open_image

logger = logging.getLogger('bifit')


def describe_model(args) -> str:
    """How the log line of a loaded checkpoint names the model of `args`."""
    return f'BIFIT with a {args.backbone} backbone'


def load_inference_model(args, device: torch.device, checkpoint: Optional[Dict] = None) -> nn.Module:
    """The model of `args` with the weights of `--resume` (or of `checkpoint`, already read from it), in eval
    mode on `device`."""
    model, _, _ = build_model(args)
    if checkpoint is None:
        load_checkpoint_file(model, args.resume, describe_model(args))
    else:
        load_checkpoint(model, checkpoint, args.resume, describe_model(args))
    return model.to(device).eval()


def checked_checkpoint(args) -> Dict:
    """The weights of `--resume`, read once and checked by loading them into a model on the CPU (a missing,
    truncated, broken or misfitting checkpoint stops here, before any worker starts): `model` and `epoch`,
    for `load_inference_model`."""
    checkpoint = read_checkpoint(args.resume)
    load_inference_model(args, torch.device('cpu'), checkpoint)
    return {'model': model_state_dict(checkpoint), 'epoch': checkpoint.get('epoch')}


@torch.no_grad()
def predict_clip(model: nn.Module, clip: torch.Tensor, caption: str, device: torch.device,
                 amp: bool = False) -> Dict[str, torch.Tensor]:
    """Run the model on one clip `[T, 3, h, w]` and one sentence: `pred_logits [T, Q, K]`,
    `pred_boxes [T, Q, 4]`, `pred_masks [T, Q, h/4, w/4]` (logits) and `reference_points [T, Q, 2]`,
    in float32 on `device`."""
    if not caption.strip():
        raise ValueError('empty expression: BIFIT needs a sentence that describes the object')
    clip = clip.to(device, non_blocking=True)
    size = torch.as_tensor(clip.shape[-2:], device=device)
    with autocast(device, amp):
        outputs = model([clip], [caption], [{'size': size}])
    return {k: outputs[k][0].float() for k in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points')}


def finite(outputs: Dict[str, torch.Tensor]) -> bool:
    """Whether the class logits and masks of `outputs` are all finite (a NaN would silently give empty masks)."""
    return all(bool(torch.isfinite(outputs[k]).all()) for k in ('pred_logits', 'pred_masks'))


def select_query(pred_logits: torch.Tensor) -> int:
    """The query with the highest score averaged over frames (score: max sigmoid over classes);
    pred_logits `[T, Q, K]`."""
    return int(pred_logits.sigmoid().mean(0).max(-1)[0].argmax())


def select_queries(pred_logits: torch.Tensor, score_threshold: Optional[float] = None) -> List[int]:
    """The queries whose score averaged over frames exceeds `score_threshold` (none: an empty mask), or with
    None the single query of `select_query`; pred_logits `[T, Q, K]`."""
    if score_threshold is None:
        return [select_query(pred_logits)]
    scores = pred_logits.sigmoid().mean(0).max(-1)[0]
    return (scores > score_threshold).nonzero().flatten().tolist()


def mask_probabilities(mask_logits: torch.Tensor, size) -> torch.Tensor:
    """Mask logits `[T, h/4, w/4]` -> probabilities `[T, H, W]` at the frame size (bilinear)."""
    return F.interpolate(mask_logits[None], size=tuple(size), mode='bilinear', align_corners=False)[0].sigmoid()


def predict_video(model: nn.Module, clip: torch.Tensor, text: str, device: torch.device,
                  args) -> Dict[str, torch.Tensor]:
    """The outputs of `predict_clip` for one sentence over a whole video `[T, 3, h, w]`, on the CPU, from
    forward passes of `args.clip_len` frames (0: all at once)."""
    chunk = args.clip_len if args.clip_len > 0 else len(clip)
    outputs = [predict_clip(model, clip[start:start + chunk], text, device, args.amp)
               for start in range(0, len(clip), chunk)]
    return {k: torch.cat([o[k].cpu() for o in outputs]) for k in outputs[0]}


def chosen_masks(outputs: Dict[str, torch.Tensor], frame_size, threshold: float,
                 score_threshold: Optional[float] = None) -> Dict[str, np.ndarray]:
    """A sentence's result from its outputs over a whole video (the queries are chosen over all of it):
    `masks [T, H, W]` (bool; the union of the queries of `select_queries`, probabilities above `threshold`),
    and the box `[T, 4]` (x1, y1, x2, y2 pixels) and reference point `[T, 2]` (pixels) of the best query."""
    best = select_query(outputs['pred_logits'])
    masks = np.zeros((len(outputs['pred_logits']), *frame_size), dtype=bool)
    for query in select_queries(outputs['pred_logits'], score_threshold):
        masks |= (mask_probabilities(outputs['pred_masks'][:, query], frame_size) > threshold).numpy()
    h, w = frame_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    return {'masks': masks, 'boxes': (box_cxcywh_to_xyxy(outputs['pred_boxes'][:, best]) * scale).numpy(),
            'points': (outputs['reference_points'][:, best] * scale[:2]).numpy()}


def segment_videos(device: torch.device, args, videos: List[List[Expression]], progress, frames_root: Path,
                   score_threshold: Optional[float] = None, checkpoint: Optional[Dict] = None) -> None:
    """A worker of `segment_expressions`: every expression of `videos` (each a list of one video's
    expressions, frames in `<frames_root>/<video>/<frame>.jpg`) into `<output_dir>/<split>/`, and with
    `args.visualize` its overlays into `<output_dir>/<split>_images/`, with the weights of `checkpoint` (read
    from `--resume`). An expression whose outputs are not finite gets a warning and no masks."""
    model = load_inference_model(args, device, checkpoint)
    output = Path(args.output_dir) / args.split
    for expressions in videos:
        names = expressions[0].frames
        frames = [open_image(frames_root / expressions[0].video / f'{name}.jpg') for name in names]
        clip = frames_to_clip(frames, args.short_side)
        for expression in expressions:
            outputs = predict_video(model, clip, expression.text, device, args)
            if not finite(outputs):
                logger.warning('NON-FINITE OUTPUTS for video %s, expression %s ("%s"): no masks written',
                               expression.video, expression.exp_id, expression.text)
                progress.put(1)
                continue
            result = chosen_masks(outputs, (frames[0].height, frames[0].width), args.threshold, score_threshold)
            write_masks(output, expression, result['masks'])
            if args.visualize:
                folder = Path(args.output_dir) / f'{args.split}_images' / expression.video / expression.exp_id
                save_overlays(folder, frames, names, result)
            progress.put(1)


def check_frames(expressions: Sequence[Expression], frames_root: Path) -> None:
    """A UserError naming the first frame of `expressions` missing from `<frames_root>/<video>/<frame>.jpg`."""
    for expression in expressions:
        folder = frames_root / expression.video
        if not folder.is_dir():
            raise UserError(f'frames of video {expression.video} not found: expected the folder {folder} of '
                            f'<frame>.jpg files (see data.md)')
        for name in expression.frames:
            if not (folder / f'{name}.jpg').is_file():
                raise UserError(f'frame {name} of video {expression.video} not found: expected '
                                f'{folder / name}.jpg, as the meta file lists it (see data.md)')


def segment_expressions(args, expressions: Sequence[Expression], frames_root: Path,
                        score_threshold: Optional[float] = None) -> None:
    """Masks of every expression not written yet into `<output_dir>/<split>/<video>/<exp_id>/<frame>.png`, the
    videos shared among `--ngpu` worker processes (see `chosen_masks` for `score_threshold`)."""
    output = Path(args.output_dir) / args.split
    pending = [e for e in expressions if not is_written(output, e)]
    logger.info('%d videos, %d expressions; %d already written, %d to do', len({e.video for e in expressions}),
                len(expressions), len(expressions) - len(pending), len(pending))
    start = time.time()
    by_video: Dict[str, List[Expression]] = {}
    for expression in pending:
        by_video.setdefault(expression.video, []).append(expression)
    if pending:
        check_frames(pending, Path(frames_root))
        worker = partial(segment_videos, frames_root=Path(frames_root), score_threshold=score_threshold,
                         checkpoint=checked_checkpoint(args))
        run_sharded(worker, args, split_evenly(list(by_video.values()), args.ngpu), len(pending), 'expressions')
    missing = [e for e in pending if not is_written(output, e)]
    if missing:
        raise UserError(f'{len(missing)} of {len(pending)} expressions gave NaN or infinite outputs and have no masks '
                        f'(e.g. video {missing[0].video}, expression {missing[0].exp_id}): is the checkpoint '
                        f'broken, or --amp overflowing?')
    logger.info('inference done in %.1f s; masks in %s', time.time() - start, output)


@torch.no_grad()
def segment_video(model: nn.Module, source: FrameSource, text: str, device: torch.device, clip_len: int,
                  short_side: int, amp: bool = False, progress: Callable[[int], None] = None) -> torch.Tensor:
    """The mask logits `[T, h/4, w/4]` (float16, on the CPU) of the query chosen over the whole video for
    `text`, the video read and run in clips of `clip_len` frames (memory: the frames of one clip, and
    2 bytes per query and mask pixel of the whole video); `progress(frames done)` after each clip."""
    start = time.time()
    outputs = []
    done = 0
    for frames in source.chunks(clip_len):
        clip_outputs = predict_clip(model, frames_to_clip(frames, short_side), text, device, amp)
        outputs.append({k: v.cpu().half() if k == 'pred_masks' else v.cpu() for k, v in clip_outputs.items()})
        done += len(frames)
        if progress is not None:
            progress(done)
    outputs = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    if not finite(outputs):
        raise UserError(f'{source.path}, "{text}": the model gave NaN or infinite outputs: is the checkpoint '
                        f'broken, or --amp overflowing?')
    query = select_query(outputs['pred_logits'])
    scores = outputs['pred_logits'][:, query].sigmoid().max(-1)[0]
    seconds = time.time() - start
    logger.info('"%s": %.1f s (%.2f frames/s); chosen query %d, mean score %.3f', text, seconds,
                len(source) / seconds, query, scores.mean())
    return outputs['pred_masks'][:, query]


def video_masks(source: FrameSource, mask_logits: Sequence[torch.Tensor], clip_len: int,
                threshold: float) -> Iterator[Tuple[List[Image.Image], np.ndarray]]:
    """The frames of `source`, `clip_len` at a time, with the masks of each sentence at the frame size:
    `[S, t, H, W]` bool for the S mask logits `[T, h/4, w/4]` of `segment_video`."""
    covered = 0
    for frames in source.chunks(clip_len):
        size = (frames[0].height, frames[0].width)
        indices = slice(covered, covered + len(frames))
        masks = [mask_probabilities(logits[indices].float(), size) > threshold for logits in mask_logits]
        yield frames, torch.stack(masks).numpy()
        covered += len(frames)
