"""Reliability under kills, full disks, concurrent runs and odd inputs (issue 11, problems 2, 3, 6, 7): no
process outlives its parent, a dead worker stops the run with its exit code, one run per output folder,
training checkpoints written once and continued from the newest complete one, frames of different sizes,
overlays repaired on resume. Kills are real SIGKILLs of real processes."""
import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

import demo
import inference
import inference_ytvos
import main as train_main
import util.files
from tests.conftest import ROOT, SMALL_MODEL, offline_flags
from tests.test_inference_scripts import demo_args, read_meta, ytvos_args
from util.checkpoint import newest_checkpoint, save_training_checkpoint
from util.cli import UserError
from util.files import link_or_copy, output_lock, remove_stale_temporaries
from util.inference_workers import run_sharded
from util.mask_folders import Expression, is_written, write_masks
from util.video_io import frames_to_clip


def children(pid: int) -> List[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for stat_file in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat_file.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped, does not)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.2)


# Problem 2: one run per output folder, workers that die, workers and ranks that die with their parent.

def test_a_second_run_on_an_output_folder_stops_at_once(tmp_path):
    with output_lock(tmp_path):
        assert (tmp_path / '.lock').read_text().strip() == str(os.getpid())
        with pytest.raises(RuntimeError, match=f'{tmp_path} is in use by another run \\(pid {os.getpid()}\\)'):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path):
        pass


@pytest.mark.e2e
def test_inference_on_a_locked_output_folder_names_the_other_run(synthetic_data, small_checkpoint, tmp_path,
                                                                   monkeypatch):
    output = tmp_path / 'ytvos'
    monkeypatch.setattr(inference, 'predict_video', lambda *a, **k: pytest.fail('no work while locked'))
    with output_lock(output):
        with pytest.raises(RuntimeError, match=f'{output} is in use by another run \\(pid {os.getpid()}\\)'):
            inference_ytvos.main(ytvos_args(synthetic_data, small_checkpoint, output, '--no_zip'))


def test_a_second_training_on_an_output_folder_stops_at_once(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_main, 'build_model', lambda args: pytest.fail('no work while locked'))
    with output_lock(tmp_path / 'run'):
        with pytest.raises(RuntimeError, match=f'{tmp_path / "run"} is in use by another run'):
            train_main.main(training_args(synthetic_data, tmp_path / 'run', 1))


def sleeping_or_killed_worker(device, args, share, progress) -> None:
    """Share 'kill': the worker kills itself by SIGKILL after one unit of work; 'sleep': waits for ever."""
    progress.put(1)
    if share == 'kill':
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_with_its_exit_code():
    args = argparse.Namespace(device='cpu', ngpu=2)
    start = time.time()
    with pytest.raises(RuntimeError, match=r'inference worker 1 \(pid \d+\) died with exit code -9 \(killed by '
                                           r'signal 9\); the other workers were stopped'):
        run_sharded(sleeping_or_killed_worker, args, ['sleep', 'kill'], total=10, desc='test')
    assert time.time() - start < 300, 'no hang'
    assert not [pid for pid in children(os.getpid()) if alive(pid) and b'spawn_main' in
                Path(f'/proc/{pid}/cmdline').read_bytes()], 'the sleeping worker was stopped'


@pytest.mark.slow
@pytest.mark.e2e
def test_killing_the_inference_parent_kills_its_workers_and_the_rerun_finishes(synthetic_data, small_checkpoint,
                                                                               tmp_path):
    output = tmp_path / 'ytvos'
    root = synthetic_data / 'ref-youtube-vos'
    command = [sys.executable, 'inference_ytvos.py', *SMALL_MODEL, *offline_flags(), '--short_side', '96',
               '--ytvos_path', str(root), '--resume', str(small_checkpoint), '--output_dir', str(output),
               '--ngpu', '2', '--no_zip']
    environment = dict(os.environ, OMP_NUM_THREADS='1')
    parent = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def workers() -> List[int]:
        return [pid for pid in children(parent.pid) if alive(pid) and b'spawn_main' in
                Path(f'/proc/{pid}/cmdline').read_bytes()]

    def written() -> int:
        return len([p for p in (output / 'valid').glob('*/*') if p.is_dir() and not p.name.endswith('.partial')])

    wait_until(lambda: written() > 0 or parent.poll() is not None, 600, 'the workers to write masks')
    started = workers()
    assert len(started) == 2, parent.stderr.read().decode()[-2000:]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_until(lambda: not any(alive(pid) for pid in started), 60, 'the workers to die with their parent')
    parent.stderr.close()
    at_the_kill = written()
    time.sleep(2)
    assert written() == at_the_kill, 'nothing written after the kill'

    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    videos = read_meta(root, 'valid')
    expected = sum(len(videos[v]['expressions']) for v in set(videos) - set(read_meta(root, 'test')))
    assert len([p for p in (output / 'valid').glob('*/*') if p.is_dir()]) == expected
    assert not list(output.rglob('*.partial'))


@pytest.mark.slow
@pytest.mark.e2e
def test_killing_the_torchrun_launcher_kills_the_ranks(tmp_path):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               '-m', 'tests.distributed_worker', str(tmp_path), '--wait']
    launcher = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_files = [tmp_path / f'rank{rank}.pid' for rank in range(2)]
    wait_until(lambda: all(p.exists() and p.read_text() for p in pid_files) or launcher.poll() is not None, 300,
               'both ranks to join the job')
    assert launcher.poll() is None, 'the launcher ended early'
    ranks = [int(p.read_text()) for p in pid_files]
    assert all(alive(pid) for pid in ranks)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    wait_until(lambda: not any(alive(pid) for pid in ranks), 30, 'the ranks to die with the launcher')


# Problem 3: checkpoints written once, linked, continued from the newest complete one; disk full said so.

def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    stale = [tmp_path / '.checkpoint.pth.0123abcd.tmp', tmp_path / '.tmp-x1y2.pth']
    kept = [tmp_path / 'checkpoint.pth', tmp_path / 'log.txt', tmp_path / '.lock', tmp_path / 'notes.tmp']
    for path in stale + kept:
        path.write_bytes(b'x')
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_link_or_copy_links_where_it_can_and_copies_elsewhere(tmp_path, monkeypatch):
    source = tmp_path / 'checkpoint.pth'
    source.write_bytes(b'weights')
    link_or_copy(source, tmp_path / 'checkpoint0000.pth')
    assert os.path.samefile(source, tmp_path / 'checkpoint0000.pth'), 'a hard link, no second write'

    def no_links(*args):
        raise OSError('links not supported')
    monkeypatch.setattr(os, 'link', no_links)
    link_or_copy(source, tmp_path / 'checkpoint0001.pth')
    assert (tmp_path / 'checkpoint0001.pth').read_bytes() == b'weights'
    assert not os.path.samefile(source, tmp_path / 'checkpoint0001.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.pth', 'checkpoint0000.pth', 'checkpoint0001.pth']


def test_a_training_checkpoint_is_written_once_with_normal_permissions(tmp_path, monkeypatch):
    writes = []
    real_save = torch.save
    monkeypatch.setattr(torch, 'save', lambda obj, f, **k: writes.append(obj) or real_save(obj, f, **k))
    save_training_checkpoint({'epoch': 3, 'model': {'w': torch.ones(4)}}, str(tmp_path), 3)
    assert len(writes) == 1
    assert os.path.samefile(tmp_path / 'checkpoint.pth', tmp_path / 'checkpoint0003.pth')
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / 'checkpoint.pth').stat().st_mode) == 0o666 & ~umask
    assert torch.load(tmp_path / 'checkpoint0003.pth', weights_only=False)['epoch'] == 3


def test_a_full_disk_is_said_before_the_save(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage._replace(free=2 ** 20))
    checkpoint = {'epoch': 0, 'model': {'w': torch.zeros(2 ** 20)}}  # 4 MB
    with pytest.raises(UserError, match=f'disk full/short: need 5 MB in {tmp_path} \\(1 MB free\\)'):
        save_training_checkpoint(checkpoint, str(tmp_path), 0)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_during_the_save_is_said_so(tmp_path, monkeypatch):
    def full_disk(obj, f, **kwargs):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(UserError, match=f'disk full/short: need 1 MB in {tmp_path}'):
        save_training_checkpoint({'epoch': 0}, str(tmp_path), 0)
    assert list(tmp_path.iterdir()) == [], 'no partial or temporary file'


def test_training_checks_the_free_space_before_the_first_epoch(synthetic_data, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(util.files.shutil, 'disk_usage', lambda path: usage._replace(free=0))
    monkeypatch.setattr(train_main, 'train_one_epoch', lambda *a, **k: pytest.fail('trained on a full disk'))
    with pytest.raises(UserError, match=f'disk full/short: need \\d+ MB in {tmp_path / "run"} \\(0 MB free\\)'):
        train_main.main(training_args(synthetic_data, tmp_path / 'run', 1))


def test_the_newest_complete_checkpoint_is_found(tmp_path):
    assert newest_checkpoint(str(tmp_path)) == (None, None)
    torch.save({'epoch': 1}, tmp_path / 'checkpoint.pth')
    torch.save({'epoch': 0}, tmp_path / 'checkpoint0000.pth')
    torch.save({'epoch': 1}, tmp_path / 'checkpoint0001.pth')
    assert newest_checkpoint(str(tmp_path)) == (tmp_path / 'checkpoint.pth', {'epoch': 1})
    torch.save({'epoch': 2}, tmp_path / 'checkpoint0002.pth')  # the save order of earlier versions, killed between
    (tmp_path / 'checkpoint0003.pth').write_bytes(b'truncated')
    assert newest_checkpoint(str(tmp_path)) == (tmp_path / 'checkpoint0002.pth', {'epoch': 2})
    (tmp_path / 'checkpoint.pth').unlink()
    assert newest_checkpoint(str(tmp_path))[0] == tmp_path / 'checkpoint0002.pth'


def test_a_missing_resume_checkpoint_is_a_clear_error(tmp_path):
    torch.save({'epoch': 0}, tmp_path / 'checkpoint0000.pth')
    args = argparse.Namespace(resume=str(tmp_path / 'checkpoint.pth'), output_dir=str(tmp_path), eval=False,
                              no_auto_resume=False)
    with pytest.raises(FileNotFoundError, match=f'--resume {tmp_path}/checkpoint.pth: no such checkpoint \\(the '
                                                f'newest complete checkpoint there is {tmp_path}/checkpoint0000.pth'):
        train_main.checkpoint_to_resume(args)


def training_flags(synthetic, output: Path, epochs: int) -> List[str]:
    return [*SMALL_MODEL, *offline_flags(), '--dataset_file', 'ytvos', '--ytvos_path',
            str(synthetic / 'ref-youtube-vos'), '--num_frames', '2', '--max_size', '96', '--num_workers', '0',
            '--epochs', str(epochs), '--output_dir', str(output), '--no_tensorboard']


def training_args(synthetic, output: Path, epochs: int) -> argparse.Namespace:
    return train_main.get_parser().parse_args(training_flags(synthetic, output, epochs))


@pytest.mark.slow
@pytest.mark.e2e
def test_a_training_killed_between_epochs_resumes_without_redoing_one(synthetic_data, tmp_path):
    output = tmp_path / 'run'
    command = [sys.executable, 'main.py', *training_flags(synthetic_data, output, 3)]
    environment = dict(os.environ, OMP_NUM_THREADS='1')
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_until(lambda: (output / 'checkpoint0000.pth').exists() or process.poll() is not None, 900, 'epoch 0')
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((output / 'log.txt').read_text().splitlines()[-1])['epoch'] == 0 or \
        (output / 'checkpoint0001.pth').exists()
    done = newest_checkpoint(str(output))[1]['epoch']
    # What a kill in the middle of a save leaves, and what the earlier save order left (no checkpoint.pth).
    (output / '.checkpoint.pth.0123abcd.tmp').write_bytes(b'half a checkpoint')
    (output / 'checkpoint.pth').unlink()
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f'found {output}/checkpoint{done:04}.pth, the newest complete checkpoint' in log
    assert f'training from epoch {done + 1} to 3' in log
    assert not list(output.glob('.*.tmp'))
    epochs = [json.loads(line)['epoch'] for line in (output / 'log.txt').read_text().splitlines()]
    assert epochs == list(range(3)), 'every epoch trained once'
    assert torch.load(output / 'checkpoint.pth', weights_only=False)['epoch'] == 2


# Problem 6: frames of different sizes in one video.

def test_frames_of_different_sizes_make_one_clip_at_the_first_frames_size():
    frames = [Image.new('RGB', (96, 64)), Image.new('RGB', (64, 96)), Image.new('RGB', (48, 32))]
    assert frames_to_clip(frames, 32).shape == (3, 3, 32, 48)


def test_each_mask_and_box_is_at_its_own_frames_size():
    t = 2
    logits = torch.full((t, 1, 1), 5.0)
    masks = torch.full((t, 1, 8, 8), -5.0)
    masks[:, :, :, :4] = 5.0  # the left half
    outputs = {'pred_logits': logits, 'pred_masks': masks, 'pred_boxes': torch.full((t, 1, 4), 0.5),
               'reference_points': torch.full((t, 1, 2), 0.5)}
    result = inference.chosen_masks(outputs, [(16, 32), (40, 20)], 0.5)
    assert [m.shape for m in result['masks']] == [(16, 32), (40, 20)]
    assert result['masks'][1][:, :10].all() and not result['masks'][1][:, 10:].any()
    assert result['points'].tolist() == [[16.0, 8.0], [10.0, 20.0]]
    assert result['boxes'][1].tolist() == [5.0, 10.0, 15.0, 30.0]


def resize_one_frame(frames_folder: Path) -> Path:
    """Make the second frame of `frames_folder` of another size (and aspect ratio) than the others."""
    second = sorted(frames_folder.iterdir())[1]
    image = Image.open(second)
    image.resize((image.width // 2 + 10, image.height + 16)).save(second)
    return second


@pytest.mark.slow
@pytest.mark.e2e
def test_ytvos_inference_writes_each_mask_at_its_frames_size(synthetic_data, small_checkpoint, tmp_path):
    root = tmp_path / 'ref-youtube-vos'
    shutil.copytree(synthetic_data / 'ref-youtube-vos', root)
    video = sorted(set(read_meta(root, 'valid')) - set(read_meta(root, 'test')))[0]
    second = resize_one_frame(root / 'valid' / 'JPEGImages' / video)
    output = tmp_path / 'out'
    inference_ytvos.main(ytvos_args(tmp_path, small_checkpoint, output, '--no_zip', '--visualize'))
    for folder in (output / 'valid' / video).iterdir():
        for mask_file in folder.iterdir():
            source = Image.open(root / 'valid' / 'JPEGImages' / video / f'{mask_file.stem}.jpg')
            assert Image.open(mask_file).size == source.size, mask_file
    overlay_file = output / 'valid_images' / video / '0' / f'{second.stem}.png'
    assert Image.open(overlay_file).size == Image.open(second).size


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_on_frames_of_different_sizes(synthetic_data, small_checkpoint, tmp_path):
    video = tmp_path / 'frames'
    shutil.copytree(sorted((synthetic_data / 'ref-youtube-vos' / 'train' / 'JPEGImages').iterdir())[0], video)
    second = resize_one_frame(video)
    demo.main(demo_args(video, tmp_path / 'out', '--text', 'a shape', '--resume', str(small_checkpoint),
                        '--clip_len', '2'))
    for frame in video.iterdir():
        assert Image.open(tmp_path / 'out' / f'{frame.stem}.png').size == Image.open(frame).size
    demo.main(demo_args(video, tmp_path / 'out.gif', '--text', 'a shape', '--resume', str(small_checkpoint)))
    gif = Image.open(tmp_path / 'out.gif')
    assert gif.n_frames == len(list(video.iterdir())) and gif.size == Image.open(sorted(video.iterdir())[0]).size
    assert second.exists()


# Problem 7: overlays written atomically and checked on resume.

@pytest.mark.slow
@pytest.mark.e2e
def test_missing_or_corrupt_overlays_are_redone_on_resume(synthetic_data, small_checkpoint, tmp_path, monkeypatch):
    output = tmp_path / 'ytvos'
    args = ytvos_args(synthetic_data, small_checkpoint, output, '--no_zip', '--visualize')
    inference_ytvos.main(args)
    overlays = sorted((output / 'valid_images').glob('*/*'))
    assert not list(output.rglob('.*.tmp'))
    truncated = sorted(overlays[0].iterdir())[0]
    truncated.write_bytes(b'')  # what a kill left before overlays were written atomically
    removed = sorted(overlays[-1].iterdir())[-1]
    removed.unlink()
    calls = []
    real_predict = inference.predict_video
    monkeypatch.setattr(inference, 'predict_video', lambda *a, **k: calls.extend(a[2]) or real_predict(*a, **k))
    inference_ytvos.main(args)
    assert len(calls) == 2, 'exactly the two expressions whose overlays were broken are redone'
    Image.open(truncated).load()
    assert removed.exists()


def test_is_written_checks_the_overlays_only_when_asked(tmp_path):
    expression = Expression('v', '0', 'a dog', ['00000', '00001'])
    write_masks(tmp_path / 'masks', expression, [np.zeros((4, 4), bool)] * 2)
    overlays = tmp_path / 'images'
    assert is_written(tmp_path / 'masks', expression)
    assert not is_written(tmp_path / 'masks', expression, overlays)
    (overlays / 'v' / '0').mkdir(parents=True)
    for frame in expression.frames:
        Image.new('RGB', (4, 4)).save(overlays / 'v' / '0' / f'{frame}.png')
    assert is_written(tmp_path / 'masks', expression, overlays)
    (overlays / 'v' / '0' / '00001.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    assert not is_written(tmp_path / 'masks', expression, overlays)
