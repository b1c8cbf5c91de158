"""Train BIFIT (every benchmark), or evaluate it (`--eval`): A2D-Sentences / JHMDB-Sentences metrics, or
the mask IoU of held-out clips that have masks (Ref-Shapes, converted Ref-DAVIS17, MeViS valid_u).

One process:  python main.py --with_box_refine --binary --freeze_text_encoder ...
Several:      torchrun --nproc_per_node=N main.py ...
              python -m torch.distributed.launch --nproc_per_node=N --use_env main.py ...
A recipe:     python main.py --config configs/ytvos_r50.args [more flags that override it]
"""
import argparse
import json
import logging
import random
import time
from functools import partial
from bisect import bisect_right
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

import opts
from datasets import build_dataset, ground_truth_file
from datasets.loaders import build_data_loader, set_epoch
from engine import evaluate_a2d, evaluate_mask_iou, train_one_epoch
from inference import describe_model
from models import build_model, leaves_parameters_unused
from util.checkpoint import (compare_state_dicts, load_checkpoint, load_model_weights, model_state_dict,
                             newest_checkpoint, read_checkpoint, save_training_checkpoint, tensor_bytes)
from util.cli import ArgumentParser, UserError, run
from util.curves import TrainingCurves
from util.files import output_lock, remove_stale_temporaries, require_free_space
from util.logger import setup_logging
from util.misc import get_rank, init_distributed_mode, is_main_process

logger = logging.getLogger('bifit')


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser('BIFIT training and evaluation', parents=[opts.get_args_parser()],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--no_auto_resume', action='store_true',
                        help='(new) do not continue from the newest complete checkpoint of --output_dir '
                             '(checkpoint.pth or checkpointNNNN.pth) when it has one')
    parser.add_argument('--print_freq', default=10, type=int, help='(new) iterations between log lines')
    parser.add_argument('--no_tensorboard', action='store_true',
                        help='(new) do not write TensorBoard curves (event files beside log.txt: loss terms, '
                             'learning rates, gradient norm per step; log.txt values per epoch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return parser


def parameter_groups(model: nn.Module, args) -> List[Dict]:
    """AdamW groups in the original's order: everything else (lr), backbone, text encoder, word-to-vision
    fusion, sampling offsets / reference points (lr * lr_linear_proj_mult).

    A parameter belongs to a named group when its name contains one of the group's keywords, and to the
    first group when it matches none. Frozen parameters are left out; empty groups are kept, parameters
    keep the model's registration order: the original's, so that optimizer states move between the two.
    """
    named = [('--lr_backbone_names', args.lr_backbone_names, args.lr_backbone),
             ('--lr_text_encoder_names', args.lr_text_encoder_names, args.lr_text_encoder),
             ('--lr_text_fusion_names', args.lr_text_fusion_names, args.lr_text_fusion),
             ('--lr_linear_proj_names', args.lr_linear_proj_names, args.lr * args.lr_linear_proj_mult)]
    params: List[List[nn.Parameter]] = [[] for _ in range(len(named) + 1)]
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        matches = [i for i, (_, keywords, _) in enumerate(named, start=1) if any(k in name for k in keywords)]
        if len(matches) > 1:
            options = ' and '.join(named[i - 1][0] for i in matches)
            raise ValueError(f'parameter {name} matches {options}: each parameter may be in one group only')
        params[matches[0] if matches else 0].append(parameter)
    lrs = [args.lr] + [lr for _, _, lr in named]
    return [{'params': p, 'lr': lr} for p, lr in zip(params, lrs)]


def build_optimizer(model: nn.Module, args) -> Tuple[torch.optim.Optimizer, MultiStepLR]:
    """AdamW over `parameter_groups` and the learning rate divided by 10 after each `--lr_drop` epoch."""
    optimizer = torch.optim.AdamW(parameter_groups(model, args), lr=args.lr, weight_decay=args.weight_decay)
    return optimizer, MultiStepLR(optimizer, args.lr_drop)


def check_optimizer_state(saved: Dict, optimizer: torch.optim.Optimizer, source: str) -> None:
    """A clear error when a saved optimizer state does not fit `optimizer`: other group sizes, or moments
    of another shape than the parameters they would land on."""
    saved_sizes = [len(group['params']) for group in saved['param_groups']]
    sizes = [len(group['params']) for group in optimizer.param_groups]
    pairs = [(index, parameter) for saved_group, group in zip(saved['param_groups'], optimizer.param_groups)
             for index, parameter in zip(saved_group['params'], group['params'])]
    moments = {index: state['exp_avg'] for index, state in saved['state'].items() if 'exp_avg' in state}
    misfits = [f'{tuple(moments[index].shape)} vs {tuple(parameter.shape)}' for index, parameter in pairs
               if index in moments and moments[index].shape != parameter.shape]
    if saved_sizes != sizes or misfits:
        raise UserError(
            f"{source}: its optimizer state does not fit this model's parameter groups (parameters per group "
            f"{saved_sizes} vs {sizes}; shape mismatches: {', '.join(misfits[:3]) or 'none'}): was it trained "
            f"with other --lr_*_names, --lr_backbone 0 or --freeze_text_encoder settings, or another model?")


def restore_training_state(checkpoint: Dict, optimizer: torch.optim.Optimizer, lr_scheduler: MultiStepLR,
                           source: str) -> int:
    """Continue a training checkpoint, ours or the original's (the same layout): the optimizer's state and
    the scheduler's milestones and epoch count come from it; returns the next epoch.

    As in the original, the learning rates follow this run's options: `initial_lr` is this run's and
    lr = initial_lr * gamma ** (milestones passed), the scheduler's closed form.
    """
    check_optimizer_state(checkpoint['optimizer'], optimizer, source)
    initial_lrs = [group['initial_lr'] for group in optimizer.param_groups]
    optimizer.load_state_dict(checkpoint['optimizer'])
    lr_scheduler.load_state_dict(checkpoint['lr_scheduler'])
    lr_scheduler.base_lrs = initial_lrs
    decays = bisect_right(sorted(lr_scheduler.milestones.elements()), lr_scheduler.last_epoch)
    for group, initial_lr in zip(optimizer.param_groups, initial_lrs):
        group['initial_lr'] = initial_lr
        group['lr'] = initial_lr * lr_scheduler.gamma ** decays
    lr_scheduler._last_lr = [group['lr'] for group in optimizer.param_groups]
    return checkpoint['epoch'] + 1


def training_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler: MultiStepLR, epoch: int,
                        args) -> Dict:
    """What every epoch writes, in the original's layout: `model`, `optimizer`, `lr_scheduler`, `epoch`, `args`."""
    return {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'lr_scheduler': lr_scheduler.state_dict(), 'epoch': epoch, 'args': args}


def finetuning_state_dict(model: nn.Module, path: str) -> Dict[str, torch.Tensor]:
    """The weights of a pretrained BIFIT (e.g. RefCOCO pretraining) for finetuning: a class head of
    another number of classes is left out, so it keeps this model's initialisation."""
    state_dict = model_state_dict(read_checkpoint(path))
    _, _, mismatched = compare_state_dicts(model, state_dict)
    head = {entry.split(':')[0] for entry in mismatched if entry.startswith('class_embed.')}
    if head:
        logger.info('%s: class head re-initialised for %d classes (%s)', path,
                    model.class_embed[0].out_features, ', '.join(sorted(head)))
        state_dict = {k: v for k, v in state_dict.items() if k not in head}
        state_dict.update({k: v for k, v in model.state_dict().items() if k in head})
    return state_dict


def checkpoint_to_resume(args) -> Tuple[str, Optional[Dict]]:
    """The checkpoint to continue from and its content (None: not read yet): `--resume`, or the newest
    complete checkpoint of this output folder when an earlier run was interrupted."""
    if args.resume:
        if not Path(args.resume).is_file():
            newest, _ = newest_checkpoint(str(Path(args.resume).parent))
            hint = f' (the newest complete checkpoint there is {newest})' if newest else ''
            raise FileNotFoundError(f'--resume {args.resume}: no such checkpoint{hint}')
        return args.resume, None
    if args.no_auto_resume or args.eval or not args.output_dir:
        return '', None
    path, checkpoint = newest_checkpoint(args.output_dir)
    if path is None:
        return '', None
    logger.info('found %s, the newest complete checkpoint of %s: continuing that training (use --no_auto_resume '
                'or another --output_dir to start afresh)', path, args.output_dir)
    return str(path), checkpoint


def checkpoint_size(model: nn.Module) -> int:
    """About the bytes of a training checkpoint of `model`: its state dict and AdamW's two moments per
    trainable parameter."""
    return tensor_bytes(model.state_dict()) + 2 * tensor_bytes([p for p in model.parameters() if p.requires_grad])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def main(args) -> Dict[str, float]:
    """Train, or with `--eval` evaluate; returns the evaluation metrics (empty after training). A training
    holds the lock of its output folder (one training per folder)."""
    init_distributed_mode(args)
    owner = bool(args.output_dir) and is_main_process()
    if owner:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    with output_lock(args.output_dir) if owner and not args.eval else nullcontext():
        return train_or_evaluate(args, owner)


def train_or_evaluate(args, owner: bool) -> Dict[str, float]:
    """`main` once the process group is joined; `owner`: this process writes the output folder."""
    setup_logging(args.output_dir)
    if owner and not args.eval:
        for path in remove_stale_temporaries(args.output_dir):
            logger.info('removed %s, left by an interrupted save', path)
    resume, checkpoint = checkpoint_to_resume(args)
    args.resume = resume
    logger.info('options: %s', json.dumps(vars(args), sort_keys=True))
    device = torch.device(args.device)
    seed_everything(args.seed + get_rank())

    model, criterion, postprocessors = build_model(args)
    model.to(device)
    model_without_ddp = model
    if args.distributed:
        device_ids = [device.index] if device.type == 'cuda' else None
        # Gradients as views of DDP's buckets: no copy into the buckets.
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                    find_unused_parameters=leaves_parameters_unused(model),
                                                    gradient_as_bucket_view=True)
        model_without_ddp = model.module
    n_parameters = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    logger.info('trainable parameters: %d', n_parameters)

    optimizer, lr_scheduler = build_optimizer(model_without_ddp, args)

    if args.pretrained_weights and not resume:
        load_model_weights(model_without_ddp, finetuning_state_dict(model_without_ddp, args.pretrained_weights),
                           source=args.pretrained_weights)
        logger.info('finetuning from %s', args.pretrained_weights)
    if resume:
        checkpoint = checkpoint if checkpoint is not None else read_checkpoint(resume)
        load_checkpoint(model_without_ddp, checkpoint, resume, describe_model(args))
        if not args.eval and all(k in checkpoint for k in ('optimizer', 'lr_scheduler', 'epoch')):
            args.start_epoch = restore_training_state(checkpoint, optimizer, lr_scheduler, resume)
            logger.info('resumed %s at epoch %d', resume, args.start_epoch)

    gt_file = ground_truth_file(args)
    evaluate = gt_file is not None
    if evaluate:
        data_loader_val = build_data_loader(build_dataset('val', args), args, train=False)
    if args.eval:
        if evaluate:
            return evaluate_a2d(model, data_loader_val, postprocessors['segm'], device, gt_file, amp=args.amp)
        if args.dataset_file in ('ytvos', 'davis', 'mevis'):
            metrics = evaluate_mask_iou(model, build_data_loader(build_dataset('val', args), args, train=False),
                                        device, args.threshold, amp=args.amp)
            logger.info('held-out mask IoU: %s', ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
            return metrics
        raise SystemExit(f'--eval is not available for --dataset_file {args.dataset_file}')

    data_loader_train = build_data_loader(build_dataset('train', args), args, train=True)
    output_dir = Path(args.output_dir)
    curves = None
    if owner and not args.no_tensorboard:
        curves = TrainingCurves(args.output_dir)
    logger.info('training from epoch %d to %d; effective batch %d (%d processes x %d clips x %d accumulation steps)',
                args.start_epoch, args.epochs, args.world_size * args.batch_size * args.grad_accum_steps,
                args.world_size, args.batch_size, args.grad_accum_steps)
    if owner:
        require_free_space(args.output_dir, checkpoint_size(model_without_ddp))
    start_time = time.time()
    for epoch in range(args.start_epoch, args.epochs):
        set_epoch(data_loader_train, epoch)
        train_stats = train_one_epoch(model, criterion, data_loader_train, optimizer, device, epoch,
                                      args.clip_max_norm, amp=args.amp, skip_nonfinite=args.skip_nonfinite,
                                      print_freq=args.print_freq, grad_accum_steps=args.grad_accum_steps,
                                      curves=curves)
        lr_scheduler.step()
        if owner:
            save_training_checkpoint(training_checkpoint(model_without_ddp, optimizer, lr_scheduler, epoch, args),
                                     args.output_dir, epoch)
        log_stats = {**{f'train_{k}': v for k, v in train_stats.items()}, 'epoch': epoch,
                     'n_parameters': n_parameters}
        if evaluate:
            log_stats.update(evaluate_a2d(model, data_loader_val, postprocessors['segm'], device, gt_file,
                                          amp=args.amp))
        if owner:
            with (output_dir / 'log.txt').open('a') as f:
                f.write(json.dumps(log_stats) + '\n')
        if curves is not None:
            curves.add_epoch(epoch, log_stats)
    if curves is not None:
        curves.close()
    logger.info('training time %.1f min', (time.time() - start_time) / 60)
    return {}


if __name__ == '__main__':
    run(main, partial(opts.parse_args, get_parser()))
