"""Training curves: TensorBoard event files of every step and epoch (util/curves.py, written by train_one_epoch
and main.py), and tools/plot_log.py, which draws one or more runs' log.txt (and their event files) in a PNG."""
import json

import numpy as np
import torch
import pytest
from PIL import Image

from engine import train_one_epoch
from tests.conftest import build_without_dropout, training_batch
from tools import plot_log
from util.curves import PARAMETER_GROUPS, TrainingCurves

pytestmark = pytest.mark.e2e


def write_run(folder, epochs, steps_per_epoch, evaluation=False, events=True):
    """A run's log.txt (and event files) as main.py writes them, with decreasing losses."""
    folder.mkdir(parents=True)
    curves = TrainingCurves(str(folder)) if events else None
    lines = []
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            if curves:
                curves.add_step(step, {'loss': 10.0 / (1 + step), 'grad_norm': 1.0}, [1e-4, 1e-5, 1e-5, 1e-4, 1e-4])
        stats = {'train_loss': 10.0 / (1 + epoch), 'train_lr': 1e-4, 'train_grad_norm': 1.0, 'epoch': epoch,
                 'n_parameters': 123}
        if evaluation:
            stats['mAP'] = 0.1 * epoch
        lines.append(json.dumps(stats))
        if curves:
            curves.add_epoch(epoch, stats)
    if curves:
        curves.close()
    (folder / 'log.txt').write_text('\n'.join(lines) + '\n')
    return folder / 'log.txt'


def test_event_files_hold_every_step_and_epoch(tmp_path):
    write_run(tmp_path / 'run', epochs=2, steps_per_epoch=3, evaluation=True)
    series = plot_log.read_steps(tmp_path / 'run')
    assert series['train/loss'][0] == list(range(6))
    assert series['train/loss'][1] == pytest.approx([10.0 / (1 + s) for s in range(6)])
    assert {f'lr/{name}' for name in PARAMETER_GROUPS} <= set(series)
    assert series['lr/backbone'][1] == pytest.approx([1e-5] * 6)
    assert series['epoch/train_loss'] == ([0, 1], pytest.approx([10.0, 5.0]))
    assert series['eval/mAP'] == ([0, 1], pytest.approx([0.0, 0.1]))
    assert 'epoch/n_parameters' not in series and 'epoch/epoch' not in series


def test_plot_log_draws_several_runs(tmp_path, capsys):
    first = write_run(tmp_path / '8gpus', epochs=3, steps_per_epoch=4, evaluation=True)
    second = write_run(tmp_path / '2gpus_x4', epochs=2, steps_per_epoch=4, events=False)
    out = plot_log.main([str(first), str(second), '--out', str(tmp_path / 'curves.png')])
    assert 'curves of 2 run(s)' in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert('RGB'))
    assert image.shape[0] > 300 and image.shape[1] > 900 and image.std() > 10
    titles = [title for title, _, _ in plot_log.panels({
        '8gpus': (plot_log.read_log(first), plot_log.read_steps(first.parent)),
        '2gpus_x4': (plot_log.read_log(second), {})})]
    assert titles == ['training loss', 'training loss (epoch average)', 'learning rate', 'gradient norm', 'mAP']
    assert plot_log.main([str(second)]) == second.parent / 'curves.png'


def test_plot_log_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='training log not found: expected .*missing/log.txt'):
        plot_log.main([str(tmp_path / 'missing' / 'log.txt')])
    broken = tmp_path / 'broken' / 'log.txt'
    broken.parent.mkdir()
    broken.write_text('epoch 0 loss 3\n')
    with pytest.raises(SystemExit, match='log.txt:1 is not a JSON line'):
        plot_log.main([str(broken)])


def test_training_writes_a_curve_point_per_optimisation_step(tmp_path):
    """train_one_epoch gives the curves one point per optimisation step (accumulated batches count once),
    numbered across epochs, with the learning rate of each parameter group."""
    model, criterion = build_without_dropout()
    optimizer = torch.optim.SGD([{'params': [p for p in model.parameters() if p.requires_grad]}], lr=0.01)
    curves = TrainingCurves(str(tmp_path))
    batches = [training_batch(i) for i in (0, 2, 4)]  # clips of one size: no new shape to warm up
    train_one_epoch(model, criterion, batches, optimizer, torch.device('cpu'), 1, 0.1,
                    grad_accum_steps=2, curves=curves)
    curves.close()
    series = plot_log.read_steps(tmp_path)
    assert series['train/loss'][0] == [2, 3] and series['lr/other'][1] == pytest.approx([0.01, 0.01])
    assert {'train/grad_norm', 'train/loss_mask', 'train/loss_dice', 'train/loss_ce'} <= set(series)


def test_running_mean_smooths_per_step_curves():
    assert plot_log.running_mean([1, 3, 5, 7], 2) == pytest.approx([1, 2, 4, 6])
    assert plot_log.running_mean([2.0], 5) == pytest.approx([2.0])
