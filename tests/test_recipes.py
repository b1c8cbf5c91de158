"""The release's recipes (`configs/`) through their launch scripts (`scripts/`), pointed at synthetic data
and the CPU: pretraining -> Ref-YTVOS finetuning and submission, A2D training, joint training, Ref-DAVIS17
inference and J&F, JHMDB evaluation.

Only what cannot run here changes: data paths, the offline text encoder and backbone weights, small frames,
3-frame clips and one epoch per recipe so that the chain takes minutes on 2 cores.
"""
import os
import socket
import subprocess
import zipfile

from tests.conftest import ROOT, TINY_ROBERTA, generate_synthetic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(command, log):
    env = dict(os.environ, GPUS='1', PORT=str(free_port()), OMP_NUM_THREADS='2')
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f'{" ".join(map(str, command))} failed:\n{(result.stdout + result.stderr)[-4000:]}'
    return result.stdout + result.stderr


def test_recipes_run_on_synthetic_data(tmp_path):
    data = generate_synthetic(tmp_path / 'data', '--videos', '1', '--frames', '5',
                              '--benchmarks', 'ytvos', 'davis', 'a2d', 'jhmdb', 'refcoco')
    out = tmp_path / 'runs'
    overrides = ['--text_encoder', str(TINY_ROBERTA), '--backbone_pretrained', 'none', '--device', 'cpu',
                 '--max_size', '96', '--short_side', '96', '--num_workers', '0', '--epochs', '1', '--num_frames', '3',
                 '--coco_path', str(data / 'coco'), '--ytvos_path', str(data / 'ref-youtube-vos'),
                 '--a2d_path', str(data / 'a2d_sentences'), '--jhmdb_path', str(data / 'jhmdb_sentences'),
                 '--davis_path', str(data / 'ref-davis')]

    run(['bash', 'scripts/dist_pretrain.sh', out / 'pretrain', *overrides], tmp_path / 'pretrain.log')
    pretrained = out / 'pretrain' / 'checkpoint.pth'
    assert pretrained.exists()

    log = run(['bash', 'scripts/dist_train_test_ytvos.sh', out / 'ytvos', pretrained, *overrides], tmp_path / 'ytvos.log')
    assert 'finetuning from' in log
    with zipfile.ZipFile(out / 'ytvos' / 'submission.zip') as archive:
        assert archive.namelist() and all(n.startswith('Annotations/') for n in archive.namelist())

    log = run(['bash', 'scripts/dist_train_a2d.sh', out / 'a2d', pretrained, *overrides], tmp_path / 'a2d.log')
    assert 'evaluation: mAP 0.5:0.95' in log

    run(['bash', 'scripts/dist_joint_train_ytvos.sh', out / 'joint', *overrides], tmp_path / 'joint.log')
    assert (out / 'joint' / 'submission.zip').exists()

    log = run(['bash', 'scripts/dist_test_davis.sh', out / 'davis', out / 'ytvos' / 'checkpoint.pth', *overrides],
              tmp_path / 'davis.log')
    assert log.count('Global results') == 4 and 'Mean of the global results of 4 folders' in log
    assert all((out / 'davis' / 'valid' / f'anno_{a}' / 'global_results-val.csv').exists() for a in range(4))
    assert (out / 'davis' / 'valid' / 'global_results-val-mean.csv').exists()

    log = run(['python', 'main.py', '--config', 'configs/jhmdb_r50.args', '--resume', out / 'a2d' / 'checkpoint.pth',
               '--output_dir', out / 'jhmdb', *overrides], tmp_path / 'jhmdb.log')
    assert 'evaluation: mAP 0.5:0.95' in log and 'overall_iou' in log
