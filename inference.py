"""Running a trained BIFIT: the model of `--resume` ready for inference, one clip and its sentences through it
(the clip's visual part computed once for all of them), the query it chooses and that query's masks at the frame
size, and a whole video segmented clip by clip; the sentences of whole videos segmented into mask folders in
worker processes. Used by the inference scripts, the demo, the web demo and the evaluation of held-out clips
(`engine.py`)."""
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
from util.files import output_lock
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
def predict_clip(model: nn.Module, clip: torch.Tensor, captions: Sequence[str], device: torch.device,
                 amp: bool = False) -> List[Dict[str, torch.Tensor]]:
    """Run the model on one clip `[T, 3, h, w]` for each sentence, the visual part once
    (`forward_sentences`): per sentence `pred_logits [T, Q, K]`, `pred_boxes [T, Q, 4]`,
    `pred_masks [T, Q, h/4, w/4]` (logits) and `reference_points [T, Q, 2]`, in float32 on `device`."""
    if isinstance(captions, str):
        raise TypeError('captions must be a list of strings')
    if not all(caption.strip() for caption in captions):
        raise ValueError('empty expression: BIFIT needs a sentence that describes the object')
    clip = clip.to(device, non_blocking=True)
    size = torch.as_tensor(clip.shape[-2:], device=device)
    with autocast(device, amp):
        outputs = model.forward_sentences([clip], captions, [{'size': size}])
    return [{k: o[k][0].float() for k in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points')}
            for o in outputs]


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


def predict_video(model: nn.Module, clip: torch.Tensor, texts: Sequence[str], device: torch.device,
                  args) -> List[Dict[str, torch.Tensor]]:
    """The outputs of `predict_clip` for each sentence over a whole video `[T, 3, h, w]`, on the CPU, from
    forward passes of `args.clip_len` frames (0: all at once), each clip's visual part computed once for all
    the sentences."""
    chunk = args.clip_len if args.clip_len > 0 else len(clip)
    per_clip = [[{k: v.cpu() for k, v in o.items()} for o in predict_clip(model, clip[start:start + chunk], texts,
                                                                            device, args.amp)]
                for start in range(0, len(clip), chunk)]
    return join_clips(per_clip)


def join_clips(per_clip: List[List[Dict[str, torch.Tensor]]]) -> List[Dict[str, torch.Tensor]]:
    """The outputs of consecutive clips (per clip, one dict per sentence) joined along time, per sentence."""
    return [{k: torch.cat([clip_outputs[s][k] for clip_outputs in per_clip]) for k in per_clip[0][s]}
            for s in range(len(per_clip[0]))]


def masks_at_frame_sizes(mask_logits: torch.Tensor, sizes: Sequence[Tuple[int, int]],
                         threshold: float) -> List[np.ndarray]:
    """Mask logits `[T, h/4, w/4]` -> a bool mask `[H_t, W_t]` per frame at its own size `sizes[t]`
    (probabilities above `threshold`; the frames of one size interpolated together)."""
    masks: List[Optional[np.ndarray]] = [None] * len(sizes)
    for size in set(sizes):
        indices = [t for t, frame_size in enumerate(sizes) if frame_size == size]
        for t, mask in zip(indices, (mask_probabilities(mask_logits[indices].float(), size) > threshold).numpy()):
            masks[t] = mask
    return masks


def chosen_masks(outputs: Dict[str, torch.Tensor], frame_sizes, threshold: float,
                 score_threshold: Optional[float] = None) -> Dict:
    """A sentence's result from its outputs over a whole video (the queries are chosen over all of it):
    `masks`, a bool mask `[H_t, W_t]` per frame at its own size (`frame_sizes`: one (H, W) for every frame,
    or one per frame; the union of the queries of `select_queries`, probabilities above `threshold`), and the
    box `[T, 4]` (x1, y1, x2, y2 pixels) and reference point `[T, 2]` (pixels) of the best query."""
    num_frames = len(outputs['pred_logits'])
    sizes = [tuple(frame_sizes)] * num_frames if np.ndim(frame_sizes) == 1 else [tuple(s) for s in frame_sizes]
    best = select_query(outputs['pred_logits'])
    masks = [np.zeros(size, dtype=bool) for size in sizes]
    for query in select_queries(outputs['pred_logits'], score_threshold):
        masks = [union | mask for union, mask in
                 zip(masks, masks_at_frame_sizes(outputs['pred_masks'][:, query], sizes, threshold))]
    scale = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=torch.float32)
    return {'masks': masks, 'boxes': (box_cxcywh_to_xyxy(outputs['pred_boxes'][:, best]) * scale).numpy(),
            'points': (outputs['reference_points'][:, best] * scale[:, :2]).numpy()}


def segment_video_expressions(model: nn.Module, device: torch.device, args, expressions: Sequence[Expression],
                              frames_root: Path, score_threshold: Optional[float] = None) -> None:
    """The masks of `expressions` (all of one video, frames in `<frames_root>/<video>/<frame>.jpg`) into
    `<output_dir>/<split>/`, and with `args.visualize` their overlays into `<output_dir>/<split>_images/`;
    each `--clip_len` clip's visual part is computed once for all of them."""
    output = Path(args.output_dir) / args.split
    names = expressions[0].frames
    frames = [open_image(frames_root / expressions[0].video / f'{name}.jpg') for name in names]
    clip = frames_to_clip(frames, args.short_side)
    sizes = [(frame.height, frame.width) for frame in frames]
    all_outputs = predict_video(model, clip, [expression.text for expression in expressions], device, args)
    for expression, outputs in zip(expressions, all_outputs):
        if not finite(outputs):
            logger.warning('NON-FINITE OUTPUTS for video %s, expression %s ("%s"): no masks written',
                           expression.video, expression.exp_id, expression.text)
            continue
        result = chosen_masks(outputs, sizes, args.threshold, score_threshold)
        write_masks(output, expression, result['masks'])
        if args.visualize:
            save_overlays(overlay_folder(args), expression, frames, result)


def segment_videos(device: torch.device, args, videos: List[List[Expression]], progress, frames_root: Path,
                   score_threshold: Optional[float] = None, checkpoint: Optional[Dict] = None) -> None:
    """A worker of `segment_expressions`: every expression of `videos` (each a list of one video's
    expressions) through `segment_video_expressions`, with the weights of `checkpoint` (read from
    `--resume`)."""
    model = load_inference_model(args, device, checkpoint)
    for expressions in videos:
        segment_video_expressions(model, device, args, expressions, frames_root, score_threshold)
        progress.put(len(expressions))


def overlay_folder(args) -> Optional[Path]:
    """Where `--visualize` puts the overlays of the mask folders: `<output_dir>/<split>_images/` (None
    without `--visualize`)."""
    return Path(args.output_dir) / f'{args.split}_images' if args.visualize else None


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
    with output_lock(args.output_dir):
        pending = [e for e in expressions if not is_written(output, e, overlay_folder(args))]
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
            raise UserError(f'{len(missing)} of {len(pending)} expressions gave NaN or infinite outputs and have no '
                            f'masks (e.g. video {missing[0].video}, expression {missing[0].exp_id}): is the '
                            f'checkpoint broken, or --amp overflowing?')
    logger.info('inference done in %.1f s; masks in %s', time.time() - start, output)


@torch.no_grad()
def segment_video(model: nn.Module, source: FrameSource, texts: Sequence[str], device: torch.device, clip_len: int,
                  short_side: int, amp: bool = False, progress: Callable[[int], None] = None) -> List[torch.Tensor]:
    """For each sentence, the mask logits `[T, h/4, w/4]` (float16, on the CPU) of the query chosen over the
    whole video, the video read and run in clips of `clip_len` frames, each clip's visual part computed once
    for all the sentences (memory: the frames of one clip, and 2 bytes per sentence, query and mask pixel of
    the whole video); `progress(frames done)` after each clip."""
    start = time.time()
    per_clip = []
    done = 0
    for frames in source.chunks(clip_len):
        clip_outputs = predict_clip(model, frames_to_clip(frames, short_side, source.frame_size), texts, device, amp)
        per_clip.append([{k: v.cpu().half() if k == 'pred_masks' else v.cpu() for k, v in o.items()}
                         for o in clip_outputs])
        done += len(frames)
        if progress is not None:
            progress(done)
    seconds = time.time() - start
    logger.info('%d sentence(s): %.1f s (%.2f frames/s)', len(texts), seconds, len(source) / seconds)
    mask_logits = []
    for text, outputs in zip(texts, join_clips(per_clip)):
        if not finite(outputs):
            raise UserError(f'{source.path}, "{text}": the model gave NaN or infinite outputs: is the checkpoint '
                            f'broken, or --amp overflowing?')
        query = select_query(outputs['pred_logits'])
        scores = outputs['pred_logits'][:, query].sigmoid().max(-1)[0]
        logger.info('"%s": chosen query %d, mean score %.3f', text, query, scores.mean())
        mask_logits.append(outputs['pred_masks'][:, query])
    return mask_logits


def video_masks(source: FrameSource, mask_logits: Sequence[torch.Tensor], clip_len: int,
                threshold: float) -> Iterator[Tuple[List[Image.Image], List[np.ndarray]]]:
    """The frames of `source`, `clip_len` at a time, with the masks of each sentence at each frame's own size:
    per frame `[S, H, W]` bool for the S mask logits `[T, h/4, w/4]` of `segment_video`."""
    covered = 0
    for frames in source.chunks(clip_len):
        sizes = [(frame.height, frame.width) for frame in frames]
        indices = slice(covered, covered + len(frames))
        masks = [masks_at_frame_sizes(logits[indices], sizes, threshold) for logits in mask_logits]
        yield frames, [np.stack(frame_masks) for frame_masks in zip(*masks)]
        covered += len(frames)
