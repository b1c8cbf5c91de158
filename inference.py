"""Running a trained BIFIT: the model of `--resume` ready for inference, one clip and one sentence through
it, the query it chooses and that query's masks at the frame size, and a whole video segmented clip by
clip. Used by the inference scripts, the demo, the web demo and the evaluation of held-out clips
(`engine.py`)."""
import logging
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models import build_model
from util.checkpoint import load_checkpoint, load_checkpoint_file
from util.precision import autocast
from util.video_io import FrameSource, frames_to_clip

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


def select_query(pred_logits: torch.Tensor) -> int:
    """The query with the highest score averaged over frames (score: max sigmoid over classes);
    pred_logits `[T, Q, K]`."""
    return int(pred_logits.sigmoid().mean(0).max(-1)[0].argmax())


def mask_probabilities(mask_logits: torch.Tensor, size) -> torch.Tensor:
    """Mask logits `[T, h/4, w/4]` -> probabilities `[T, H, W]` at the frame size (bilinear)."""
    return F.interpolate(mask_logits[None], size=tuple(size), mode='bilinear', align_corners=False)[0].sigmoid()


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
