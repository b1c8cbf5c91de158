"""Scaling training: gradient accumulation (`--grad_accum_steps`) reproduces the step of more processes,
multi-node launches through scripts/launch.sh train as one job, and the SLURM example sets the rendezvous."""
import os
import subprocess
import sys

import pytest
import torch

from engine import train_one_epoch
from tests import distributed_worker as worker
from tests.conftest import ROOT, build_without_dropout, free_port, reference, run_command, training_batch

TOLERANCE = 1e-6
RELATIVE_TOLERANCE = 1e-4


def assert_one_trained_job(saved, initial, reproduced, processes: int) -> None:
    """Every process ended with the same weights, those of one process accumulating all the batches (up to
    float rounding: 1e-4 of the largest change of a weight), which differ from the initial ones."""
    ranks = [torch.load(f'{saved}_rank{r}.pt') for r in range(processes)]
    change = max((reproduced[n] - initial[n]).abs().max().item() for n in initial)
    assert change > 100 * TOLERANCE
    for name, value in reproduced.items():
        for rank, weights in enumerate(ranks):
            assert torch.equal(weights[name], ranks[0][name]), f'{name}: rank {rank} differs from rank 0'
        assert torch.allclose(ranks[0][name], value, atol=RELATIVE_TOLERANCE * change, rtol=0), name


@pytest.mark.slow
@pytest.mark.e2e
def test_accumulation_reproduces_the_step_of_more_processes(tmp_path):
    """1 process accumulating 2 (or 4) batches ends with the weights of 2 processes stepping on 1 (or
    accumulating 2) of them: the loss normalisation over processes and micro-batches, gradient clipping
    of the accumulated gradient, DistributedDataParallel's no_sync."""
    reference('tiny_roberta')
    run_command([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                 '-m', 'tests.distributed_worker', tmp_path], OMP_NUM_THREADS='1')
    for experiment in worker.EXPERIMENTS:
        initial, reproduced = worker.reproduce(experiment, world_size=2)
        assert_one_trained_job(tmp_path / experiment, initial, reproduced, processes=2)


@pytest.mark.slow
@pytest.mark.e2e
def test_two_nodes_train_as_one_job(tmp_path):
    """Two "nodes" of one process each (two torchrun invocations of scripts/launch.sh with NNODES=2,
    NODE_RANK=0/1, rendezvous on the loopback address) train as one job of two processes."""
    reference('tiny_roberta')
    environment = dict(os.environ, NNODES='2', GPUS='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()),
                       OMP_NUM_THREADS='1')
    command = ['bash', '-c', 'source scripts/launch.sh && launch -m tests.distributed_worker "$0" '
                             '--experiments one_step', str(tmp_path)]
    nodes = [subprocess.Popen(command, cwd=ROOT, env=dict(environment, NODE_RANK=str(rank)), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (1, 0)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]
    initial, reproduced = worker.reproduce('one_step', world_size=2)
    assert_one_trained_job(tmp_path / 'one_step', initial, reproduced, processes=2)


def sgd_training(batch_groups, seed=0):
    """The weights after `train_one_epoch` (SGD) on each (batches, grad_accum_steps) in turn."""
    model, criterion = build_without_dropout(seed)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=worker.LEARNING_RATE)
    for batches, grad_accum_steps in batch_groups:
        train_one_epoch(model, criterion, batches, optimizer, torch.device('cpu'), 0, 0.1,
                        grad_accum_steps=grad_accum_steps)
    return worker.trained_weights(model), model, criterion


def test_one_accumulation_step_is_the_original_step():
    """--grad_accum_steps 1 (the default) computes exactly the original's training step: the criterion's own
    normaliser, backward, clipping, step; and the last, incomplete group of an epoch is a step of its own."""
    batches = [training_batch(i) for i in range(3)]
    trained, _, _ = sgd_training([(batches, 1)])
    model, criterion = build_without_dropout()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=worker.LEARNING_RATE)
    model.train()
    for samples, targets in batches:
        losses = criterion(model(samples, [t['caption'] for t in targets], targets), targets)
        optimizer.zero_grad()
        sum(losses[k] * criterion.weight_dict[k] for k in losses).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 0.1)
        optimizer.step()
    assert all(torch.equal(trained[n], p) for n, p in model.named_parameters() if p.requires_grad)

    grouped, _, _ = sgd_training([(batches, 2)])
    split, _, _ = sgd_training([(batches[:2], 2), (batches[2:], 1)])
    assert all(torch.allclose(grouped[n], split[n], atol=TOLERANCE, rtol=0) for n in grouped)
    assert not all(torch.allclose(grouped[n], trained[n], atol=TOLERANCE, rtol=0) for n in grouped)


def test_slurm_script_gives_every_node_its_rank(tmp_path):
    """scripts/slurm_train.sh runs the given script once per node (srun) with NNODES, NODE_RANK, MASTER_ADDR
    (the allocation's first host), MASTER_PORT and GPUS set; srun and scontrol are stand-ins here."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\nprintf "node-a\\nnode-b\\n"\n')
    (bin_dir / 'srun').write_text('#!/usr/bin/env bash\n'
                                  'for node in 0 1; do SLURM_NODEID=$node "${@:4}" || exit 1; done\n')
    script = tmp_path / 'show.sh'
    script.write_text('echo "node $NODE_RANK of $NNODES at $MASTER_ADDR:$MASTER_PORT with $GPUS: $*"\n')
    for path in (bin_dir / 'scontrol', bin_dir / 'srun'):
        path.chmod(0o755)
    environment = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', SLURM_JOB_NUM_NODES='2',
                       SLURM_JOB_NODELIST='node-[a-b]', SLURM_JOB_ID='1234', SLURM_GPUS_ON_NODE='4')
    for name in ('MASTER_ADDR', 'MASTER_PORT', 'GPUS', 'NODE_RANK', 'NNODES'):
        environment.pop(name, None)
    result = subprocess.run(['bash', 'scripts/slurm_train.sh', str(script), 'out_dir', '--lr', '1e-4'], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [f'node {rank} of 2 at node-a:21234 with 4: out_dir --lr 1e-4'
                                               for rank in (0, 1)]
    usage = subprocess.run(['bash', 'scripts/slurm_train.sh'], cwd=ROOT, env=environment, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2 and 'usage: sbatch' in usage.stderr


def test_launch_defaults_keep_one_node():
    """Without the multi-node variables, launch.sh runs torchrun on one node, with PORT and GPUS as before."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'GPUS', 'PORT')}
    command = 'source scripts/launch.sh && torchrun() { echo "$@"; } && launch main.py --epochs 1'
    shown = subprocess.run(['bash', '-c', command], cwd=ROOT, env=dict(environment, PORT='29123', GPUS='4'),
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1', '--master_port=29123',
                     '--nproc_per_node=4', 'main.py', '--epochs', '1']
