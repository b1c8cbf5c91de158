"""One process of a small torch.distributed training job (gloo, CPU), for the tests of gradient accumulation
and multi-node launches: it joins the job that torchrun describes (`util.misc.init_distributed_mode`), trains
a small BIFIT in DistributedDataParallel through `engine.train_one_epoch` on its share of fixed batches, and
saves its weights after each experiment as `<out>/<experiment>_rank<r>.pt`.

    torchrun --nproc_per_node=2 -m tests.distributed_worker OUT [--experiments NAME ...]

With `--wait`, a process joins the job, writes its pid to `<out>/rank<r>.pid` and waits (for the test that
kills the launcher).

`reproduce(...)` runs an experiment in this process with every batch of the job, accumulated: it must end
with the same weights.
"""
import argparse
import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from engine import train_one_epoch
from tests.conftest import build_without_dropout, training_batch
from util.misc import init_distributed_mode

# name: (accumulation steps per process, optimisation steps, gradient clipping max norm; 0: none)
EXPERIMENTS = {'one_step': (1, 1, 0.0), 'clipped': (1, 1, 0.05), 'accumulated': (2, 2, 0.0)}
LEARNING_RATE = 0.05


def batch_indices(rank: int, world_size: int, grad_accum_steps: int, steps: int) -> List[int]:
    """The batches process `rank` trains on, in order: micro-step i of step s takes batch
    s * world_size * grad_accum_steps + rank * grad_accum_steps + i."""
    per_step = world_size * grad_accum_steps
    return [s * per_step + rank * grad_accum_steps + i for s in range(steps) for i in range(grad_accum_steps)]


def train(model: nn.Module, criterion: nn.Module, parameters, indices: List[int], grad_accum_steps: int,
          max_norm: float) -> None:
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE)
    train_one_epoch(model, criterion, [training_batch(i) for i in indices], optimizer, torch.device('cpu'), 0,
                    max_norm, grad_accum_steps=grad_accum_steps, print_freq=100)


def trained_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def reproduce(experiment: str, world_size: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(initial, trained) weights of `experiment` run by one process accumulating the batches of all
    `world_size` processes of each step."""
    grad_accum_steps, steps, max_norm = EXPERIMENTS[experiment]
    model, criterion = build_without_dropout()
    initial = trained_weights(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    train(model, criterion, parameters, batch_indices(0, 1, world_size * grad_accum_steps, steps),
          world_size * grad_accum_steps, max_norm)
    return initial, trained_weights(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', type=Path)
    parser.add_argument('--experiments', nargs='+', default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument('--wait', action='store_true', help='join the job, write <out>/rank<r>.pid and wait')
    options = parser.parse_args()
    torch.set_num_threads(1)
    args = argparse.Namespace(device='cpu', dist_url='env://')
    init_distributed_mode(args)
    assert args.distributed, 'run with torchrun'
    if options.wait:
        (options.out / f'rank{args.rank}.pid').write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    for experiment in options.experiments:
        grad_accum_steps, steps, max_norm = EXPERIMENTS[experiment]
        model, criterion = build_without_dropout(seed=args.rank)  # DistributedDataParallel starts from rank 0's weights
        ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        parameters = [p for p in model.parameters() if p.requires_grad]
        train(ddp, criterion, parameters, batch_indices(args.rank, args.world_size, grad_accum_steps, steps),
              grad_accum_steps, max_norm)
        torch.save(trained_weights(model), options.out / f'{experiment}_rank{args.rank}.pt')
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
