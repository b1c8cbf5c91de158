"""MeViS end to end on a small synthetic copy: train a few steps, segment valid_u, score it with eval_mevis.py,
segment valid into the server zip; and `main.py --eval` on valid_u."""
import zipfile

import pytest
import torch

import eval_mevis
import inference_mevis
import main as train_main
from opts import parse_args as parse_with_config
from tests.conftest import SMALL_MODEL, generate_synthetic, offline_flags

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_train_infer_evaluate_and_submit(tmp_path):
    data = generate_synthetic(tmp_path / 'data', '--benchmarks', 'mevis', '--mevis_train', '1',
                              '--mevis_valid_u', '2', '--mevis_valid', '1', '--mevis_frames', '4') / 'mevis'
    common = [*SMALL_MODEL, *offline_flags(), '--dataset_file', 'mevis', '--mevis_path', str(data)]
    out = tmp_path / 'run'
    torch.manual_seed(0)
    train_main.main(parse_with_config(train_main.get_parser(), [
        *common, '--num_frames', '2', '--max_size', '96', '--epochs', '1', '--batch_size', '1', '--num_workers', '0',
        '--output_dir', str(out)]))
    checkpoint = out / 'checkpoint.pth'
    assert checkpoint.exists()

    for split in ('valid_u', 'valid'):
        inference_mevis.main(parse_with_config(inference_mevis.get_parser(), [
            *common, '--resume', str(checkpoint), '--output_dir', str(out), '--split', split, '--short_side', '96',
            '--ngpu', '1']))
    summary = eval_mevis.main(eval_mevis.get_args_parser().parse_args(
        ['--pred_path', str(out / 'valid_u'), '--mevis_path', str(data), '--workers', '1']))
    assert summary['expressions'] > 0 and summary['missing'] == 0 and 0 <= summary['J&F'] <= 1
    assert (out / 'valid_u' / 'global_results-valid_u.csv').exists()
    with zipfile.ZipFile(out / 'submission.zip') as archive:
        assert archive.namelist() and all(name.startswith('valid_0000/') for name in archive.namelist())

    metrics = train_main.main(parse_with_config(train_main.get_parser(), [
        *common, '--eval', '--resume', str(checkpoint), '--num_frames', '2', '--num_workers', '0',
        '--output_dir', str(out)]))
    assert set(metrics) == {'mean_iou', 'overall_iou'} and 0 <= metrics['mean_iou'] <= 1
