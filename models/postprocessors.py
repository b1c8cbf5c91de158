"""Turn model outputs into the predictions the benchmarks' evaluations take."""
import logging
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

ORIGINAL_A2D_THRESHOLD = 0.5  # the original's A2D/JHMDB postprocessing ignores --threshold


class A2DSentencesPostProcess(nn.Module):
    """A2D-Sentences / JHMDB-Sentences: every query of the annotated frame becomes a scored mask.

    Score = sigmoid of the query's class logit; mask = logits upsampled x4 (bilinear) to the padded
    input size, thresholded at probability `threshold`, cropped to the clip's own size, resized (nearest)
    to the original frame size and RLE-encoded. The original always thresholds at 0.5, the default.
    """

    def __init__(self, threshold: float = ORIGINAL_A2D_THRESHOLD):
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, outputs: Dict, orig_target_sizes: Tensor, max_target_sizes: Tensor) -> List[Dict]:
        """outputs with `pred_logits [B, 1, Q, K]` and `pred_masks [B, 1, Q, h, w]`; orig_target_sizes and
        max_target_sizes `[B, 2]` (h, w of the original frame and of the input clip) -> per clip
        `scores [Q]`, `masks [Q, 1, H0, W0]` (bool) and `rle_masks` (Q COCO RLEs)."""
        scores = outputs['pred_logits'][:, 0].sigmoid().max(-1)[0]
        masks = outputs['pred_masks'][:, 0]
        masks = F.interpolate(masks, scale_factor=4, mode='bilinear', align_corners=False)
        masks = masks.sigmoid() > self.threshold
        predictions = []
        for clip_scores, clip_masks, (h, w), orig_size in zip(scores, masks, max_target_sizes.tolist(),
                                                              orig_target_sizes.tolist()):
            resized = F.interpolate(clip_masks[:, None, :h, :w].float(), size=orig_size, mode='nearest').bool()
            rles = [mask_util.encode(np.asfortranarray(m[0].cpu().numpy().astype(np.uint8))) for m in resized]
            predictions.append({'scores': clip_scores, 'masks': resized, 'rle_masks': rles})
        return predictions


def build_postprocessors(args) -> Dict[str, nn.Module]:
    """A2D/JHMDB evaluation needs the `segm` postprocessor; the video benchmarks are evaluated by the
    inference scripts, which select their query directly."""
    if args.dataset_file in ('a2d', 'jhmdb'):
        if args.threshold != ORIGINAL_A2D_THRESHOLD:
            logger.info('A2D/JHMDB masks thresholded at %g (--threshold; the original always uses %g)',
                        args.threshold, ORIGINAL_A2D_THRESHOLD)
        return {'segm': A2DSentencesPostProcess(threshold=args.threshold)}
    return {}
