"""Offline Ref-YouTube-VOS-layout evaluation (util/rvos_metrics.py, eval_rvos.py) on hand-made masks.

Frames of 12x12 pixels have a boundary tolerance of ceil(0.008 * 16.97) = 1 pixel (a boundary pixel matches
when the other boundary is on it or on one of its 4 neighbours). The filled square rows a..b, cols c..d has as
boundary the outline of rows a-1..b, cols c-1..d (see tests/test_eval_davis.py).
"""
import json
import subprocess
import sys

import numpy as np
import pytest

import eval_rvos
from tests.conftest import ROOT, label_map, save_label_png
from util.davis_metrics import boundary_f_measure, region_similarity
from util.rvos_metrics import (ExpressionResult, covered_object, format_summary, frame_j_and_f, object_coverage,
                               score_expression, summarize)

SIZE = (12, 12)


def scores(gt, pred):
    j, f = frame_j_and_f(np.asarray(gt, bool)[None], np.asarray(pred, bool)[None])
    return j[0], f[0]


def test_hand_worked_frames():
    gt = label_map(SIZE, (2, 5), (2, 5))
    empty = np.zeros(SIZE, np.uint8)
    assert scores(gt, gt) == (1.0, 1.0), 'a perfect mask'
    assert scores(gt, empty) == (0.0, 0.0), 'an empty prediction: no overlap; boundary recall 0'
    assert scores(empty, empty) == (1.0, 1.0), 'both empty: J is 1 by convention, and so is F'
    assert scores(empty, gt) == (0.0, 0.0), 'a mask where there is nothing: boundary precision 0'
    # Shifted down by one row: overlap rows 3..5 = 12 pixels, union 16 + 16 - 12 = 20; every boundary pixel
    # is within one pixel of the other outline (rows 1..5 against rows 2..6), so F = 1.
    assert scores(gt, label_map(SIZE, (3, 6), (2, 5))) == pytest.approx((12 / 20, 1.0))
    # Shifted right by three columns: J = 4 / 28; 9 of the 16 boundary pixels match each way, F = 9 / 16.
    assert scores(gt, label_map(SIZE, (2, 5), (5, 8))) == pytest.approx((4 / 28, 9 / 16))


def test_equal_to_the_davis_measures():
    rng = np.random.default_rng(0)
    gt = np.zeros((4, 48, 64), bool)
    pred = np.zeros((4, 48, 64), bool)
    for t in range(4):
        y, x = rng.integers(5, 30), rng.integers(5, 40)
        gt[t, y:y + 14, x:x + 18] = True
        pred[t, y + rng.integers(-4, 5):y + 12, x + rng.integers(-3, 4):x + 20] = True
    pred[2] = False
    j, f = frame_j_and_f(gt, pred)
    assert j.tolist() == [region_similarity(g, p) for g, p in zip(gt, pred)]
    assert f.tolist() == [boundary_f_measure(g, p) for g, p in zip(gt, pred)]
    assert 0 < j.mean() < 1 and 0 < f.mean() < 1


def test_expression_means_over_frames_then_over_expressions():
    gt = label_map(SIZE, (2, 5), (2, 5))
    labels = np.stack([gt, gt])
    # A perfect frame and an empty one: J = F = 0.5 for this expression.
    half = score_expression('v', '0', 1, labels, np.stack([gt, np.zeros(SIZE, np.uint8)]) > 0)
    assert (half.j, half.f, half.j_and_f) == (0.5, 0.5, 0.5)
    perfect = score_expression('w', '0', 1, labels[:1], labels[:1] > 0)
    summary = summarize([half, perfect])
    assert summary['J'] == summary['F'] == summary['J&F'] == 0.75, 'each expression weighs the same'
    assert summary['referring_accuracy'] == 1.0 and summary['expressions'] == 2
    assert format_summary(summary) == 'J&F 0.750  J 0.750  F 0.750  referring accuracy 1.000 (2 expressions)'
    with pytest.raises(ValueError, match='no expressions'):
        summarize([])


def test_referring_accuracy_sums_the_frames_over_every_object():
    labels = np.stack([label_map(SIZE, (0, 3), (0, 3), 1) + label_map(SIZE, (6, 11), (6, 11), 2)] * 3)
    labels[:, 0, 11] = 3
    pred = np.zeros(labels.shape, bool)
    pred[0, 0:3, 0:4] = True  # 12 pixels of object 1 in the first frame
    pred[1:, 6:8, 6:9] = True  # 6 pixels of object 2 in each of the other two frames
    assert object_coverage(pred, labels, [1, 2, 3]) == {1: 12, 2: 12, 3: 0}
    assert covered_object({1: 12, 2: 12, 3: 0}) is None, 'a tie refers to no object'
    pred[2, 8, 6] = True
    assert covered_object(object_coverage(pred, labels, [1, 2, 3])) == 2
    assert covered_object({1: 0, 2: 0}) is None and covered_object({}) is None
    named_2 = score_expression('v', '1', 2, labels, pred)
    named_1 = score_expression('v', '0', 1, labels, pred)
    assert (named_2.referred, named_2.covered_obj_id) == (True, '2')
    assert (named_1.referred, named_1.covered_obj_id) == (False, '2')
    nothing = score_expression('v', '2', 3, labels, np.zeros(labels.shape, bool))
    assert (nothing.referred, nothing.covered_obj_id, nothing.j) == (False, '', 0.0)
    assert summarize([named_2, named_1, nothing])['referring_accuracy'] == pytest.approx(1 / 3)
    unknown = ExpressionResult('v', '3', '1', 1.0, 1.0)
    assert np.isnan(summarize([unknown])['referring_accuracy'])


@pytest.fixture
def tiny_benchmark(tmp_path):
    """Ground truth: video a (2 frames, objects 1 and 2, three expressions), video b (1 frame, object 1);
    predictions: a/0 perfect on object 1, a/1 names object 2 but segments object 1, a/2 perfect on object 2,
    b/0 empty."""
    gt, pred = tmp_path / 'gt', tmp_path / 'pred'
    frame_a = label_map(SIZE, (0, 3), (0, 3), 1) + label_map(SIZE, (6, 9), (6, 9), 2)
    for name in ('00000', '00005'):
        save_label_png(frame_a, gt / 'valid' / 'Annotations' / 'a' / f'{name}.png')
        for exp_id, obj_id in (('0', 1), ('1', 1), ('2', 2)):
            save_label_png((frame_a == obj_id) * 255, pred / 'a' / exp_id / f'{name}.png')
    save_label_png(label_map(SIZE, (2, 5), (2, 5)), gt / 'valid' / 'Annotations' / 'b' / '00000.png')
    save_label_png(np.zeros(SIZE), pred / 'b' / '0' / '00000.png')
    meta = {'videos': {
        'a': {'frames': ['00000', '00005'], 'expressions': {
            '0': {'exp': 'the red square', 'obj_id': '1'}, '1': {'exp': 'the green square', 'obj_id': '2'},
            '2': {'exp': 'a green square', 'obj_id': '2'}}},
        'b': {'frames': ['00000'], 'expressions': {'0': {'exp': 'the red square', 'obj_id': '1'}}}}}
    (gt / 'meta_expressions' / 'valid').mkdir(parents=True)
    (gt / 'meta_expressions' / 'valid' / 'meta_expressions.json').write_text(json.dumps(meta))
    return gt, pred


@pytest.mark.parametrize('workers', [1, 2])
def test_evaluate_a_prediction_folder(tiny_benchmark, workers):
    gt, pred = tiny_benchmark
    summary, results = eval_rvos.evaluate(pred, gt, 'valid', workers=workers, progress=False)
    assert [(r.video, r.exp_id, r.j, r.f, r.covered_obj_id, r.referred) for r in results] == [
        ('a', '0', 1.0, 1.0, '1', True), ('a', '1', 0.0, 0.0, '1', False), ('a', '2', 1.0, 1.0, '2', True),
        ('b', '0', 0.0, 0.0, '', False)]
    assert summary == {'J&F': 0.5, 'J': 0.5, 'F': 0.5, 'referring_accuracy': 0.5, 'expressions': 4}


@pytest.mark.e2e
def test_eval_rvos_writes_the_csv_files_and_prints_the_global_line(tiny_benchmark):
    gt, pred = tiny_benchmark
    result = subprocess.run([sys.executable, 'eval_rvos.py', '--pred_path', str(pred), '--gt_path', str(gt)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'valid: J&F 0.500  J 0.500  F 0.500  referring accuracy 0.500 (4 expressions)' in result.stdout
    assert 'expressions: 100%' in result.stderr, 'a progress bar'
    rows = (pred / 'per-expression_results-valid.csv').read_text().splitlines()
    assert rows[0] == 'video,exp_id,obj_id,J,F,J&F,covered_obj_id,referred,expression'
    assert rows[2] == 'a,1,2,0.0000,0.0000,0.0000,1,0,the green square'
    assert (pred / 'global_results-valid.csv').read_text().splitlines() == [
        'J&F,J,F,referring_accuracy,expressions', '0.5000,0.5000,0.5000,0.5000,4']


@pytest.mark.e2e
def test_eval_rvos_errors_name_what_is_missing(tiny_benchmark, tmp_path):
    gt, pred = tiny_benchmark
    (pred / 'a' / '0' / '00005.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'mask not found: .*a/0/00005.png'):
        eval_rvos.evaluate(pred, gt, progress=False)
    (pred / 'b' / '0' / '00000.png').unlink()
    (pred / 'b' / '0').rmdir()
    with pytest.raises(FileNotFoundError, match=r'1 expressions have no prediction folder .* e.g. b/0 \(run inference'):
        eval_rvos.evaluate(pred, gt, progress=False)
    with pytest.raises(FileNotFoundError, match=r'test masks not found: expected .*gt/test/Annotations'):
        eval_rvos.evaluate(pred, gt, 'test', progress=False)
    result = subprocess.run([sys.executable, 'eval_rvos.py', '--pred_path', str(tmp_path / 'none'),
                             '--gt_path', str(gt)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f'error: prediction folder not found: expected {tmp_path / "none"} '
        '(the <output_dir>/<split> folder of inference_ytvos.py)']


def test_predictions_of_another_size_or_without_obj_id_are_refused(tiny_benchmark):
    gt, pred = tiny_benchmark
    save_label_png(np.zeros((6, 6)), pred / 'b' / '0' / '00000.png')
    with pytest.raises(ValueError, match=r'b/0: masks of shape \(6, 6\), annotations of shape \(12, 12\)'):
        eval_rvos.evaluate(pred, gt, progress=False)
    meta_file = gt / 'meta_expressions' / 'valid' / 'meta_expressions.json'
    meta = json.loads(meta_file.read_text())
    del meta['videos']['a']['expressions']['1']['obj_id']
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='expression 1 of video a has no obj_id'):
        eval_rvos.evaluate(pred, gt, progress=False)
