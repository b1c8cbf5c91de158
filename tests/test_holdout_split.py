"""tools/split_ytvos_holdout.py: a deterministic split of a Ref-YouTube-VOS train set into train and a held-out
validation split with masks, linked rather than copied, that the loaders and eval_rvos.py read."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval_rvos
from datasets import build_dataset
from tests.conftest import ROOT, generate_synthetic, parse_args
from tools.split_ytvos_holdout import choose_holdout, split_holdout


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = generate_synthetic(tmp_path_factory.mktemp('holdout'), '--benchmarks', 'refshapes',
                              '--refshapes_train', '6', '--refshapes_valid', '1')
    return root / 'ref-shapes'


def read_videos(root, split):
    return json.loads((root / 'meta_expressions' / split / 'meta_expressions.json').read_text())['videos']


def test_the_draw_depends_on_the_seed_only():
    videos = [f'v{k}' for k in range(50)]
    held_out = choose_holdout(videos, 10, seed=3)
    assert held_out == choose_holdout(list(reversed(videos)), 10, seed=3) == sorted(held_out)
    assert held_out != choose_holdout(videos, 10, seed=4)
    for count in (0, 50):
        with pytest.raises(ValueError, match=f'--valid_videos {count}: choose between 1 and 49'):
            choose_holdout(videos, count, seed=0)


def test_split_with_links(shapes, tmp_path):
    out = tmp_path / 'split'
    counts = split_holdout(shapes, out, valid_videos=2, seed=0)
    source = read_videos(shapes, 'train')
    train, valid = read_videos(out, 'train'), read_videos(out, 'valid')
    assert len(valid) == 2 and set(train) | set(valid) == set(source) and not set(train) & set(valid)
    assert all(valid[v] == source[v] for v in valid), 'whole videos with all their expressions'
    assert counts == {'train': (4, sum(len(source[v]['expressions']) for v in train)),
                      'valid': (2, sum(len(source[v]['expressions']) for v in valid))}
    objects = json.loads((shapes / 'train' / 'meta.json').read_text())['videos']
    assert json.loads((out / 'valid' / 'meta.json').read_text())['videos'] == {v: objects[v] for v in valid}
    video = sorted(valid)[0]
    for folder in ('JPEGImages', 'Annotations'):
        link = out / 'valid' / folder / video
        assert link.is_symlink() and link.resolve() == (shapes / 'train' / folder / video).resolve()

    again = tmp_path / 'again'
    split_holdout(shapes, again, valid_videos=2, seed=0, link='hardlink')
    assert read_videos(again, 'valid') == valid, 'the same seed holds out the same videos'
    frame = valid[video]['frames'][0]
    linked = again / 'valid' / 'Annotations' / video / f'{frame}.png'
    assert not linked.parent.is_symlink()
    assert os.stat(linked).st_ino == os.stat(shapes / 'train' / 'Annotations' / video / f'{frame}.png').st_ino

    split_holdout(shapes, out, valid_videos=3, seed=0, link='copy')
    assert len(read_videos(out, 'valid')) == 3, 'a split written by the tool is rewritten'
    assert not (out / 'valid' / 'JPEGImages' / sorted(read_videos(out, 'valid'))[0]).is_symlink()
    assert (shapes / 'train' / 'JPEGImages' / video).is_dir(), 'rewriting never touches the source'


def test_the_split_is_a_dataset_that_eval_rvos_scores(shapes, tmp_path):
    out = tmp_path / 'split'
    split_holdout(shapes, out, valid_videos=2, seed=1)
    args = parse_args(['--ytvos_path', str(out), '--num_frames', '2'])
    assert len(build_dataset('val', args)) > 0 and len(build_dataset('train', args)) > 0
    predictions = tmp_path / 'pred'
    for video, entry in read_videos(out, 'valid').items():
        for exp_id, expression in entry['expressions'].items():
            (predictions / video / exp_id).mkdir(parents=True)
            for frame in entry['frames']:
                labels = np.asarray(Image.open(out / 'valid' / 'Annotations' / video / f'{frame}.png'))
                mask = (labels == int(expression['obj_id'])).astype(np.uint8) * 255
                Image.fromarray(mask).save(predictions / video / exp_id / f'{frame}.png')
    summary, _ = eval_rvos.evaluate(predictions, out, progress=False)
    assert summary['J&F'] == summary['referring_accuracy'] == 1.0


@pytest.mark.e2e
def test_clear_errors(shapes, tmp_path):
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='was not written by this tool'):
        split_holdout(shapes, foreign, valid_videos=2)
    assert (foreign / 'keep.txt').read_text() == 'mine'
    with pytest.raises(FileNotFoundError, match=r'train JPEGImages not found: expected .*missing/train/JPEGImages'):
        split_holdout(tmp_path / 'missing', tmp_path / 'out', valid_videos=2)
    result = subprocess.run([sys.executable, 'tools/split_ytvos_holdout.py', '--ytvos_path', str(shapes),
                             '--out', str(tmp_path / 'out'), '--valid_videos', '9'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        'error: --valid_videos 9: choose between 1 and 5 (the train set has 6 videos)']
