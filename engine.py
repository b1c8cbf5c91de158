"""Training (one epoch) and evaluation: the A2D-Sentences / JHMDB-Sentences metrics, and the mask IoU of
held-out clips with masks."""
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from inference import finite, select_query
from models.criterion import LOSS_NAMES
from util.cli import UserError
from util.curves import TrainingCurves
from util.logger import MetricLogger
from util.misc import all_gather, barrier, is_main_process, reduce_dict, targets_to
from util.precision import autocast, to_float32
from util.refer_metrics import evaluate_referring_segmentation

logger = logging.getLogger('bifit')


class NonFiniteLossError(RuntimeError):
    pass


def describe_samples(targets: List[Dict]) -> str:
    """A readable identification of the clips of a batch, for error messages."""
    keys = ('video', 'exp_id', 'image_id', 'caption', 'frames_idx')
    parts = []
    for target in targets:
        fields = [f'{k}={target[k].tolist() if torch.is_tensor(target[k]) else target[k]!r}'
                  for k in keys if k in target]
        parts.append('(' + ', '.join(fields) + ')')
    return '; '.join(parts)


def accumulation_groups(batches: Iterable, steps: int) -> Iterator[List]:
    """The batches in consecutive groups of `steps`, one optimisation step each; the last group of an epoch
    holds the batches left over (fewer than `steps` when the number of batches is not a multiple)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == steps:
            yield group
            group = []
    if group:
        yield group


def gradient_sync(model: nn.Module, final_micro_step: bool):
    """DistributedDataParallel averages the gradients over the processes at the final micro-step of an
    optimisation step only (`no_sync` before it); a no-op for a model that is not distributed."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not final_micro_step:
        return model.no_sync()
    return nullcontext()


def train_one_epoch(model: nn.Module, criterion: nn.Module, data_loader: Iterable,
                    optimizer: torch.optim.Optimizer, device: torch.device, epoch: int, max_norm: float = 0,
                    amp: bool = False, skip_nonfinite: bool = False, print_freq: int = 10,
                    grad_accum_steps: int = 1, curves: Optional[TrainingCurves] = None) -> Dict[str, float]:
    """Train for one pass over `data_loader`; returns the epoch averages of the logged values.

    Every `grad_accum_steps` batches make one optimisation step: their gradients are summed, each loss
    divided by the number of batches of the step and by the valid boxes of all of them (`num_boxes`), so
    that N processes accumulating K batches take the step of N x K processes; the gradient is clipped and
    the values are logged per optimisation step. The last step of an epoch takes the batches left over.
    A non-finite loss stops training with an error naming the batch's samples, or with `skip_nonfinite`
    skips that optimisation step (on every process alike). `curves` (main process; the data loader must have
    a length, to number the steps across epochs) receives each step's loss terms, gradient norm and
    learning rates.
    """
    model.train()
    criterion.train()
    metric_logger = MetricLogger()
    weight_dict = criterion.weight_dict
    steps = math.ceil(len(data_loader) / grad_accum_steps) if hasattr(data_loader, '__len__') else None
    groups = accumulation_groups(data_loader, grad_accum_steps)
    for step, group in enumerate(metric_logger.log_every(groups, print_freq, f'Epoch {epoch}', total=steps)):
        num_boxes = criterion.num_boxes([t for _, targets in group for t in targets], device, len(group))
        optimizer.zero_grad(set_to_none=True)
        group_values: Dict[str, float] = {}
        for index, (samples, targets) in enumerate(group):
            with gradient_sync(model, final_micro_step=index == len(group) - 1):
                samples = samples.to(device, non_blocking=True)
                captions = [t['caption'] for t in targets]
                targets = targets_to(targets, device)
                with autocast(device, amp):
                    outputs = model(samples, captions, targets)
                loss_dict = criterion(to_float32(outputs), targets, num_boxes)
                loss = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)

                reduced = reduce_dict(loss_dict)
                reduced_scaled = {k: v * weight_dict[k] for k, v in reduced.items() if k in weight_dict}
                loss_value = sum(reduced_scaled.values()).item()
                if not math.isfinite(loss_value):
                    break
                (loss / len(group)).backward()
            values = {'loss': loss_value, **reduced_scaled, **{f'{k}_unscaled': v for k, v in reduced.items()}}
            for k, v in values.items():
                group_values[k] = group_values.get(k, 0.0) + (v.item() if torch.is_tensor(v) else v) / len(group)
        if not math.isfinite(loss_value):
            if not skip_nonfinite:
                raise NonFiniteLossError(
                    f'loss is {loss_value} at epoch {epoch}: {describe_samples(targets)}; terms: '
                    f'{ {k: round(v.item(), 4) for k, v in reduced.items()} } (use --skip_nonfinite to skip such steps)')
            logger.warning('skipping a step with a non-finite loss (%s): %s', loss_value, describe_samples(targets))
            metric_logger.update(skipped_steps=1)
            optimizer.zero_grad(set_to_none=True)
            continue

        parameters = [p for p in model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float('inf'))
        optimizer.step()

        loss_value = group_values.pop('loss')
        metric_logger.update(loss=loss_value, lr=optimizer.param_groups[0]['lr'], grad_norm=grad_norm, **group_values)
        if curves is not None:
            curves.add_step(epoch * steps + step, {'loss': loss_value, 'grad_norm': grad_norm.item(),
                                                   **{k: group_values[k] for k in LOSS_NAMES}},
                            [g['lr'] for g in optimizer.param_groups])
    metric_logger.synchronize_between_processes()
    logger.info('epoch %d averages: %s', epoch, metric_logger.summary(['loss']))
    return metric_logger.global_averages()


def check_outputs(outputs: Dict, captions: List[str]) -> None:
    """A UserError naming the sentences of a batch whose outputs are NaN or infinite: no metric is computed
    from them."""
    if not finite(outputs):
        raise UserError(f'the model gave NaN or infinite outputs for {captions}: no metric computed from them '
                        f'(is the checkpoint broken, or --amp overflowing?)')


@torch.no_grad()
def evaluate_a2d(model: nn.Module, data_loader: Iterable, postprocessor: nn.Module, device: torch.device,
                 gt_file: Path, amp: bool = False) -> Dict[str, float]:
    """A2D-Sentences / JHMDB-Sentences: COCO segm mAP (categories ignored), precision@K, overall and
    mean IoU of the annotated frames, gathered from every process; empty on non-main processes."""
    model.eval()
    predictions = []
    metric_logger = MetricLogger()
    for samples, targets in metric_logger.log_every(data_loader, 50, 'Evaluate'):
        samples = samples.to(device, non_blocking=True)
        captions = [t['caption'] for t in targets]
        targets = targets_to(targets, device)
        with autocast(device, amp):
            outputs = model(samples, captions, targets)
        outputs = to_float32(outputs)
        check_outputs(outputs, captions)
        orig_sizes = torch.stack([t['orig_size'] for t in targets])
        sizes = torch.stack([t['size'] for t in targets])
        for processed, target in zip(postprocessor(outputs, orig_sizes, sizes), targets):
            for score, rle in zip(processed['scores'].tolist(), processed['rle_masks']):
                predictions.append({'image_id': target['image_id'], 'category_id': 1,
                                    'segmentation': rle, 'score': score})
    predictions = [p for process_predictions in all_gather(predictions) for p in process_predictions]
    metrics = {}
    if is_main_process():
        metrics = evaluate_referring_segmentation(str(gt_file), predictions)
        logger.info('evaluation: %s', ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
    barrier()
    return metrics


def clip_mask_iou(pred_logits: torch.Tensor, pred_masks: torch.Tensor, target: Dict,
                  threshold: float = 0.5) -> Tuple[float, float, float]:
    """IoU of the best query's masks with the target masks over one clip.

    pred_logits `[T, Q, K]`, pred_masks `[T, Q, h/4, w/4]` (logits of the padded input), target `masks
    [T, H, W]` and `size` (H, W). Returns (mean over frames of the IoU — 1 where prediction and
    target are both empty —, total intersection, total union).
    """
    query = select_query(pred_logits)
    h, w = target['size'].tolist()
    probabilities = F.interpolate(pred_masks[None, :, query], scale_factor=4, mode='bilinear', align_corners=False)
    predicted = probabilities[0, :, :h, :w].sigmoid() > threshold
    truth = target['masks'].bool()
    intersection = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    ious = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return ious.mean().item(), intersection.sum().item(), union.sum().item()


@torch.no_grad()
def evaluate_mask_iou(model: nn.Module, data_loader: Iterable, device: torch.device, threshold: float = 0.5,
                      amp: bool = False) -> Dict[str, float]:
    """Held-out clips with masks (Ref-Shapes, converted Ref-DAVIS17, MeViS valid_u): `mean_iou` (mean over
    clips of the per-clip mean frame IoU of the best query) and `overall_iou` (total intersection / total
    union), gathered from every process."""
    model.eval()
    results = []
    for samples, targets in MetricLogger().log_every(data_loader, 50, 'Evaluate'):
        captions = [t['caption'] for t in targets]
        targets = targets_to(targets, device)
        with autocast(device, amp):
            outputs = to_float32(model(samples.to(device, non_blocking=True), captions, targets))
        check_outputs(outputs, captions)
        for i, target in enumerate(targets):
            results.append(clip_mask_iou(outputs['pred_logits'][i], outputs['pred_masks'][i], target, threshold))
    results = [r for process_results in all_gather(results) for r in process_results]
    if not results:
        return {'mean_iou': 0.0, 'overall_iou': 0.0}
    ious, intersections, unions = zip(*results)
    return {'mean_iou': sum(ious) / len(ious), 'overall_iou': sum(intersections) / max(sum(unions), 1.0)}
