"""Running a trained BIFIT: the model of `--resume` ready for inference, one clip and one sentence through
it, the query it chooses and that query's masks at the frame size. Used by the inference scripts, the
demo and the evaluation of held-out clips (`engine.py`)."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from models import build_model
from util.checkpoint import load_checkpoint_file
from util.precision import autocast


def load_inference_model(args, device: torch.device) -> nn.Module:
    """The model of `args` with the weights of `--resume`, in eval mode on `device`."""
    model, _, _ = build_model(args)
    load_checkpoint_file(model, args.resume)
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
