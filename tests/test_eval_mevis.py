"""The MeViS evaluation (eval_mevis.py) on hand-worked cases: the organisers' semantics, and where ours differs.

Frames of 12x12 pixels have a boundary tolerance of ceil(0.008 * 16.97) = 1 pixel (a boundary pixel matches
when the other boundary is on it or on one of its 4 neighbours). The filled square rows a..b, cols c..d has as
boundary the outline of rows a-1..b, cols c-1..d (see tests/test_eval_davis.py): the two squares below, rows and
cols 2..5 (anno 1) and 7..10 (anno 2), have 16 boundary pixels each, more than a pixel apart.
"""
import json
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest

import eval_mevis
from tests.conftest import label_map, save_label_png

SIZE = (12, 12)
FIRST = label_map(SIZE, (2, 5), (2, 5)).astype(bool)     # anno 1 in frames 0 and 1, absent from frame 2
SECOND = label_map(SIZE, (7, 10), (7, 10)).astype(bool)  # anno 2 in every frame


def rle(mask: np.ndarray):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': list(encoded['size']), 'counts': encoded['counts'].decode()}


def save(mask: np.ndarray, path, value: int = 255, palette: bool = False) -> None:
    save_label_png(mask.astype(np.uint8) * value, path, palette=palette)


@pytest.fixture
def valid_u(tmp_path):
    """valid_u with videos a (3 frames; sentences on anno 1, on annos 1 + 2, on anno 2), b (1 frame, anno 2),
    c (1 frame, two sentences on anno 4) and d (1 frame, a sentence on anno 3, absent everywhere).

    Predictions: a/0 perfect (frame 1 a palette PNG with index 1, frame 2 empty), a/1 only anno 2 (value 1,
    grayscale), a/2 lacks frame 2; no folder for b; c/0 has no folder, c/1 perfect; d/0 empty."""
    root, pred = tmp_path / 'mevis', tmp_path / 'pred'
    masks = {'1': [rle(FIRST), rle(FIRST), None], '2': [rle(SECOND)] * 3, '3': [None], '4': [rle(FIRST)],
             '5': [rle(SECOND)]}
    meta = {'videos': {
        'a': {'frames': ['00000', '00001', '00002'], 'expressions': {
            '0': {'exp': 'the circle moving left', 'obj_id': [0], 'anno_id': [1]},
            '1': {'exp': 'the two circles', 'obj_id': [0, 1], 'anno_id': [1, 2]},
            '2': {'exp': 'the lower circle', 'obj_id': [1], 'anno_id': [2]}}},
        'b': {'frames': ['00000'], 'expressions': {'0': {'exp': 'a square', 'obj_id': [0], 'anno_id': [5]}}},
        'c': {'frames': ['00000'], 'expressions': {'0': {'exp': 'a dog', 'obj_id': [0], 'anno_id': [4]},
                                                   '1': {'exp': 'the dog', 'obj_id': [0], 'anno_id': [4]}}},
        'd': {'frames': ['00000'], 'expressions': {'0': {'exp': 'a bird flying', 'obj_id': [0], 'anno_id': [3]}}}}}
    (root / 'valid_u').mkdir(parents=True)
    (root / 'valid_u' / 'meta_expressions.json').write_text(json.dumps(meta))
    (root / 'valid_u' / 'mask_dict.json').write_text(json.dumps(masks))
    empty = np.zeros(SIZE, bool)
    save(FIRST, pred / 'a' / '0' / '00000.png')
    save(FIRST, pred / 'a' / '0' / '00001.png', value=1, palette=True)
    save(empty, pred / 'a' / '0' / '00002.png')
    for name in ('00000', '00001', '00002'):
        save(SECOND, pred / 'a' / '1' / f'{name}.png', value=1)
    for name in ('00000', '00001'):
        save(SECOND, pred / 'a' / '2' / f'{name}.png')
    save(FIRST, pred / 'c' / '1' / '00000.png')
    save(empty, pred / 'd' / '0' / '00000.png')
    return root, pred


# a/0: J = F = 1 in every frame (frame 2: both empty). a/1: frames 0 and 1 J = 16 / 32, boundary precision 1 and
# recall 16 / 32 so F = 2/3; frame 2 (only anno 2 there) J = F = 1. a/2, b/0, c/0: 0. c/1, d/0 (both empty): 1.
EXPECTED = [('a', '0', 1.0, 1.0, ''), ('a', '1', 2 / 3, 7 / 9, ''), ('a', '2', 0.0, 0.0, '1 frames, e.g. 00002.png'),
            ('b', '0', 0.0, 0.0, 'video folder'), ('c', '0', 0.0, 0.0, 'sentence folder'),
            ('c', '1', 1.0, 1.0, ''), ('d', '0', 1.0, 1.0, '')]


@pytest.mark.parametrize('workers', [1, 2])
def test_hand_worked_scores(valid_u, workers, caplog):
    root, pred = valid_u
    summary, scores = eval_mevis.evaluate(pred, root, 'valid_u', workers=workers, progress=False)
    assert [(s.video, s.exp_id, s.missing) for s in scores] == [e[:2] + e[4:] for e in EXPECTED]
    assert [v for s in scores for v in (s.j, s.f)] == pytest.approx([v for e in EXPECTED for v in e[2:4]])
    assert [s.key for s in scores][:2] == ['a_0', 'a_1']
    assert summary['J'] == pytest.approx(11 / 21) and summary['F'] == pytest.approx(34 / 63)
    assert summary['J&F'] == pytest.approx(67 / 126)
    assert (summary['expressions'], summary['missing']) == (7, 3)
    assert '3 of 7 sentences have no (complete) prediction and score J = F = 0, e.g. a/2' in caplog.text


def test_writes_the_csv_files_and_prints_the_global_line(valid_u, tmp_path, capsys):
    root, pred = valid_u
    args = eval_mevis.get_args_parser().parse_args(['--pred_path', str(pred), '--mevis_path', str(root),
                                                    '--csv_dir', str(tmp_path / 'csv'), '--workers', '1'])
    eval_mevis.main(args)
    assert 'valid_u: J&F 0.532  J 0.524  F 0.540 (7 expressions, 3 without predictions)' in capsys.readouterr().out
    rows = (tmp_path / 'csv' / 'per-expression_results-valid_u.csv').read_text().splitlines()
    assert rows[0] == 'key,video,exp_id,obj_id,J,F,J&F,missing,expression'
    assert rows[2] == 'a_1,a,1,0 1,0.6667,0.7778,0.7222,,the two circles'
    assert rows[5] == 'c_0,c,0,0,0.0000,0.0000,0.0000,sentence folder,a dog'
    assert (tmp_path / 'csv' / 'global_results-valid_u.csv').read_text().splitlines() == [
        'J&F,J,F,expressions,missing', '0.5317,0.5238,0.5397,7,3']


def test_a_prediction_of_another_size_is_an_error(valid_u):
    root, pred = valid_u
    save(np.zeros((12, 13), bool), pred / 'a' / '0' / '00001.png')
    with pytest.raises(ValueError, match=re.escape(f'{pred / "a" / "0" / "00001"}.png is 13x12 (width x height), '
                                                   'the frames of video a 12x12')):
        eval_mevis.evaluate(pred, root, progress=False)


def test_missing_inputs_are_named(valid_u, tmp_path):
    root, pred = valid_u
    with pytest.raises(FileNotFoundError, match=re.escape(f'prediction folder not found: expected {tmp_path / "x"}')):
        eval_mevis.evaluate(tmp_path / 'x', root, progress=False)
    (root / 'valid_u' / 'mask_dict.json').unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f'MeViS valid_u masks not found: expected '
                                                          f'{root / "valid_u" / "mask_dict.json"}')):
        eval_mevis.evaluate(pred, root, progress=False)
