"""The inference entry scripts on synthetic data: outputs, layouts, resuming, and clear errors."""
import argparse
import csv
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import demo
import inference
import eval_davis
import inference_davis
import inference_mevis
import inference_ytvos
import main as train_main
from opts import parse_args as parse_with_config
from tests.conftest import SMALL_MODEL, build_small, offline_flags, parse_args, random_clips
from util.cli import UserError
from util.mask_folders import Expression, write_masks
from util.video_io import frames_to_clip, open_image
from util.visualize import OUTLINE_COLORS, captioned, contrasting_color, overlay, side_by_side


def script_args(module, *flags) -> argparse.Namespace:
    return parse_with_config(module.get_parser(), [*SMALL_MODEL, *offline_flags(), '--short_side', '96', *flags])


def ytvos_args(synthetic_data, checkpoint, output, *flags):
    return script_args(inference_ytvos, '--ytvos_path', str(synthetic_data / 'ref-youtube-vos'),
                       '--resume', str(checkpoint), '--output_dir', str(output), '--ngpu', '1', *flags)


def read_meta(root, split):
    return json.loads((root / 'meta_expressions' / split / 'meta_expressions.json').read_text())['videos']


@pytest.mark.e2e
def test_ytvos_inference_writes_masks_and_submission(synthetic_data, small_checkpoint, tmp_path):
    output = tmp_path / 'ytvos'
    inference_ytvos.main(ytvos_args(synthetic_data, small_checkpoint, output, '--visualize'))
    root = synthetic_data / 'ref-youtube-vos'
    valid, test = read_meta(root, 'valid'), read_meta(root, 'test')
    videos = sorted(set(valid) - set(test))
    assert videos and set(test) & set(valid), 'the synthetic valid meta also lists test videos, as the release'
    expected = {f'Annotations/{v}/{e}/{f}.png' for v in videos for e in valid[v]['expressions']
                for f in valid[v]['frames']}
    with zipfile.ZipFile(output / 'submission.zip') as archive:
        assert set(archive.namelist()) == expected
    video = videos[0]
    frame = valid[video]['frames'][0]
    mask = np.array(Image.open(output / 'valid' / video / '0' / f'{frame}.png'))
    source = Image.open(root / 'valid' / 'JPEGImages' / video / f'{frame}.jpg')
    assert mask.shape == (source.height, source.width)
    assert set(np.unique(mask)) <= {0, 255}
    assert (output / 'valid_images' / video / '0' / f'{frame}.png').exists()
    assert not list(output.rglob('*.partial'))


@pytest.mark.e2e
def test_ytvos_inference_resumes_where_it_stopped(synthetic_data, small_checkpoint, tmp_path, monkeypatch):
    output = tmp_path / 'ytvos'
    args = ytvos_args(synthetic_data, small_checkpoint, output, '--no_zip')
    inference_ytvos.main(args)
    written = sorted((output / 'valid').glob('*/*'))
    removed = written[-1]
    shutil.rmtree(removed)
    (removed.parent / (removed.name + '.partial')).mkdir()
    calls = []
    real_predict = inference.predict_video
    monkeypatch.setattr(inference, 'predict_video', lambda *a, **k: calls.append(a[2]) or real_predict(*a, **k))
    inference_ytvos.main(args)
    meta = read_meta(synthetic_data / 'ref-youtube-vos', 'valid')
    assert calls == [[meta[removed.parent.name]['expressions'][removed.name]['exp']]], \
        'only the missing expression is segmented again'
    assert removed.is_dir() and len(list(removed.glob('*.png'))) == len(list(written[0].glob('*.png')))
    assert not list(output.rglob('*.partial'))


class CallCounter:
    """Counts the calls of a module's forward (a forward hook)."""

    def __init__(self, module: nn.Module):
        self.calls = 0
        module.register_forward_hook(self.count)

    def count(self, *_) -> None:
        self.calls += 1


@torch.no_grad()
def test_forward_sentences_equals_forward_per_sentence():
    """The visual part computed once and the sentence-dependent rest run for each sentence: every output,
    the auxiliary layers' included, exactly as `model([clip], [sentence], targets)`."""
    model, _ = build_small()
    model.eval()
    clip, = random_clips(1, 3, [(64, 96)])
    targets = [{'size': torch.tensor([64, 96])}]
    captions = ['the person on the left', 'a dog running', 'the red car behind the tree at the end']
    backbone = CallCounter(model.backbone)
    shared = model.forward_sentences([clip], captions, targets)
    assert backbone.calls == 1, 'the backbone runs once for all the sentences'
    for caption, outputs in zip(captions, shared):
        single = model([clip], [caption], targets)
        assert set(outputs) == set(single)
        for key in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points'):
            assert torch.equal(outputs[key], single[key]), (caption, key)
        for layer, (a, b) in enumerate(zip(outputs['aux_outputs'], single['aux_outputs'])):
            assert all(torch.equal(a[k], b[k]) for k in b), (caption, layer)
    assert not torch.equal(shared[0]['pred_logits'], shared[1]['pred_logits']), 'the sentences matter'


@pytest.mark.e2e
def test_shared_visual_inference_writes_the_masks_of_the_per_expression_loop(synthetic_data, small_checkpoint,
                                                                             tmp_path, monkeypatch):
    """segment_expressions (each --clip_len clip of a video encoded once for its 3 sentences) writes the PNGs
    that the loop running the whole network per sentence writes, byte for byte; the backbone runs once per clip."""
    root = synthetic_data / 'ref-youtube-vos'
    video = sorted(set(read_meta(root, 'valid')) - set(read_meta(root, 'test')))[0]
    entry = read_meta(root, 'valid')[video]
    texts = [e['exp'] for e in entry['expressions'].values()] + ['the object in the middle of the frame']
    expressions = [Expression(video, str(k), text, entry['frames']) for k, text in enumerate(texts)]
    args = ytvos_args(synthetic_data, small_checkpoint, tmp_path / 'shared', '--clip_len', '3')
    counters = []
    real_load = inference.load_inference_model

    def load_counting(*a, **k):
        model = real_load(*a, **k)
        counters.append(CallCounter(model.backbone))
        return model
    monkeypatch.setattr(inference, 'load_inference_model', load_counting)
    inference.segment_expressions(args, expressions, root / 'valid' / 'JPEGImages')
    clips = -(-len(entry['frames']) // args.clip_len)
    assert clips > 1 and sum(c.calls for c in counters) == clips, 'one backbone pass per clip for all 3 sentences'

    model = real_load(args, torch.device('cpu'))
    frames = [open_image(root / 'valid' / 'JPEGImages' / video / f'{name}.jpg') for name in entry['frames']]
    clip = frames_to_clip(frames, args.short_side)
    per_expression = tmp_path / 'per_expression'
    for expression in expressions:
        outputs, = inference.predict_video(model, clip, [expression.text], torch.device('cpu'), args)
        write_masks(per_expression, expression, inference.chosen_masks(outputs, (frames[0].height, frames[0].width),
                                                                       args.threshold)['masks'])
    files = sorted(p.relative_to(per_expression) for p in per_expression.rglob('*.png'))
    assert len(files) == len(texts) * len(entry['frames'])
    shared = tmp_path / 'shared' / 'valid'
    assert files == sorted(p.relative_to(shared) for p in shared.rglob('*.png'))
    for path in files:
        assert (per_expression / path).read_bytes() == (shared / path).read_bytes(), path
    masks = [np.array(Image.open(per_expression / path)) for path in files]
    assert any(m.any() for m in masks) and not all(m.all() for m in masks), 'masks with content to compare'


@pytest.mark.e2e
@pytest.mark.slow
def test_ytvos_inference_with_two_worker_processes(synthetic_data, small_checkpoint, tmp_path):
    single, double = tmp_path / 'one', tmp_path / 'two'
    inference_ytvos.main(ytvos_args(synthetic_data, small_checkpoint, single, '--no_zip'))
    inference_ytvos.main(ytvos_args(synthetic_data, small_checkpoint, double, '--no_zip', '--ngpu', '2'))
    files = sorted(p.relative_to(single) for p in single.rglob('*.png'))
    assert files == sorted(p.relative_to(double) for p in double.rglob('*.png'))
    for path in files:
        assert np.array_equal(np.array(Image.open(single / path)), np.array(Image.open(double / path))), path


@pytest.mark.e2e
def test_ytvos_inference_errors(synthetic_data, small_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match='meta file not found: expected .*meta_expressions/valid/meta_expressions.json'):
        inference_ytvos.main(script_args(inference_ytvos, '--ytvos_path', str(tmp_path / 'nowhere'),
                                         '--resume', str(small_checkpoint), '--output_dir', str(tmp_path)))
    root = tmp_path / 'empty-expression'
    shutil.copytree(synthetic_data / 'ref-youtube-vos', root)
    meta_file = root / 'meta_expressions' / 'valid' / 'meta_expressions.json'
    meta = json.loads(meta_file.read_text())
    video = sorted(set(meta['videos']) - set(read_meta(root, 'test')))[0]
    meta['videos'][video]['expressions']['0']['exp'] = '  '
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=f'empty expression 0 of video {video}'):
        inference_ytvos.main(script_args(inference_ytvos, '--ytvos_path', str(root), '--resume',
                                         str(small_checkpoint), '--output_dir', str(tmp_path / 'out')))
    other = tmp_path / 'other.pth'
    torch.save({'model': {'backbone.0.body.conv1.weight': torch.zeros(1)}}, other)
    with pytest.raises(RuntimeError, match='does not fit this model'):
        inference_ytvos.main(ytvos_args(synthetic_data, other, tmp_path / 'out2'))


def mevis_args(synthetic_data, checkpoint, output, *flags):
    return script_args(inference_mevis, '--mevis_path', str(synthetic_data / 'mevis'), '--resume', str(checkpoint),
                       '--output_dir', str(output), '--ngpu', '1', *flags)


@pytest.mark.e2e
def test_mevis_inference_writes_masks_and_the_server_zip(synthetic_data, small_checkpoint, tmp_path, monkeypatch):
    output = tmp_path / 'mevis'
    root = synthetic_data / 'mevis'
    inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, output, '--split', 'valid_u', '--visualize'))
    valid_u = json.loads((root / 'valid_u' / 'meta_expressions.json').read_text())['videos']
    written = {p.relative_to(output / 'valid_u').as_posix() for p in (output / 'valid_u').rglob('*.png')}
    assert written == {f'{v}/{e}/{f}.png' for v in valid_u for e in valid_u[v]['expressions']
                       for f in valid_u[v]['frames']}
    video = sorted(valid_u)[0]
    mask = np.array(Image.open(output / 'valid_u' / video / '0' / '00000.png'))
    assert mask.shape == Image.open(root / 'valid_u' / 'JPEGImages' / video / '00000.jpg').size[::-1]
    assert set(np.unique(mask)) <= {0, 255} and (output / 'valid_u_images' / video / '0' / '00000.png').exists()
    assert not (output / 'submission.zip').exists(), 'valid_u is evaluated locally: no zip'

    inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, output, '--split', 'valid'))
    valid = json.loads((root / 'valid' / 'meta_expressions.json').read_text())['videos']
    with zipfile.ZipFile(output / 'submission.zip') as archive:
        assert set(archive.namelist()) == {f'{v}/{e}/{f}.png' for v in valid for e in valid[v]['expressions']
                                           for f in valid[v]['frames']}, 'video folders at the root'
    calls = []
    monkeypatch.setattr(inference, 'predict_video', lambda *a, **k: calls.append(a))
    inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, output, '--split', 'valid'))
    assert calls == [], 'a re-run finds every sentence written'


def test_mevis_inference_errors(synthetic_data, small_checkpoint, tmp_path):
    with pytest.raises(SystemExit, match='--split test: MeViS inference segments valid_u or valid'):
        inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, tmp_path, '--split', 'test'))
    with pytest.raises(FileNotFoundError, match='MeViS valid_u frames not found: expected .*nowhere/valid_u/'):
        inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, tmp_path, '--split', 'valid_u',
                                        '--mevis_path', str(tmp_path / 'nowhere')))
    with pytest.raises(SystemExit, match='--mevis_score_threshold 1.5'):
        inference_mevis.main(mevis_args(synthetic_data, small_checkpoint, tmp_path, '--mevis_selection', 'threshold',
                                        '--mevis_score_threshold', '1.5'))


class FixedOutputs(nn.Module):
    """A stand-in model: 4x4 mask logits for 3 queries in frames 0 and 1 (the value of a clip's frame), query q
    covering column q, with scores 0.9 (query 0), 0.3 (query 1) and 0.7 (query 2) averaged over the frames."""

    def forward(self, clips, captions, targets):
        frames = clips[0][:, 0, 0, 0].long()
        t = len(frames)
        logits = torch.logit(torch.tensor([[0.8, 0.2, 0.6], [1.0 - 1e-6, 0.4, 0.8]]))[frames, :, None]
        masks = torch.full((t, 3, 4, 4), -10.0)
        for query in range(3):
            masks[:, query, :, query] = 10.0
        return {'pred_logits': logits[None], 'pred_boxes': torch.full((1, t, 3, 4), 0.5),
                'pred_masks': masks[None], 'reference_points': torch.full((1, t, 3, 2), 0.5)}

    def forward_sentences(self, clips, captions, targets):
        return [self(clips, [caption], targets) for caption in captions]


@pytest.mark.parametrize('score_threshold, columns', [(None, [0]), (0.5, [0, 2]), (0.2, [0, 1, 2]), (0.95, [])])
def test_mevis_query_selection(score_threshold, columns):
    """top-1 (None) or the union of the queries whose score averaged over the frames, one forward pass each
    here, exceeds the threshold."""
    args = argparse.Namespace(clip_len=1, amp=False, threshold=0.5)
    clip = torch.arange(2.0)[:, None, None, None].expand(2, 3, 16, 16)
    outputs, = inference.predict_video(FixedOutputs(), clip, ['two dogs'], torch.device('cpu'), args)
    result = inference.chosen_masks(outputs, (4, 4), args.threshold, score_threshold)
    expected = np.zeros((2, 4, 4), bool)
    expected[:, :, columns] = True
    assert np.array_equal(result['masks'], expected)
    assert result['boxes'].shape == (2, 4) and result['points'].tolist() == [[2.0, 2.0]] * 2


@pytest.mark.e2e
def test_davis_inference_and_evaluation(synthetic_data, small_checkpoint, tmp_path):
    root = synthetic_data / 'ref-davis'
    output = tmp_path / 'davis'
    inference_davis.main(script_args(inference_davis, '--davis_path', str(root), '--resume', str(small_checkpoint),
                                     '--output_dir', str(output), '--ngpu', '1', '--clip_len', '3'))
    meta = read_meta(root, 'valid')
    for annotator in range(4):
        for video, video_meta in meta.items():
            frames = sorted((output / 'valid' / f'anno_{annotator}' / video).glob('*.png'))
            assert [p.name for p in frames] == [f'{i:05d}.png' for i in range(len(video_meta['frames']))]
            labels = Image.open(frames[0])
            assert labels.mode == 'P' and labels.getpalette()[3:6] == [128, 0, 0]
            assert np.array(labels).max() <= len(video_meta['expressions']) // 4
    results = output / 'valid' / 'anno_0'
    eval_davis.main(eval_davis.get_args_parser().parse_args(
        ['--results_path', str(results), '--davis_path', str(root / 'DAVIS')]))
    with open(results / 'global_results-val.csv') as f:
        row = next(csv.DictReader(f))
    assert set(row) == {'J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay'}
    assert 0 <= float(row['J&F-Mean']) <= 1


def test_davis_annotator_labels_compete_with_the_background():
    first = torch.tensor([[[0.9, 0.4, 0.6, 0.05]]])
    second = torch.tensor([[[0.8, 0.45, 0.7, 0.2]]])
    labels = inference_davis.annotator_labels([first, second])
    assert labels.tolist() == [[[1, 0, 2, 0]]]


def demo_args(video, output, *flags):
    return script_args(demo, '--video', str(video), '--output', str(output), *flags)


@pytest.mark.e2e
@pytest.mark.parametrize('output_name', ['overlay.gif', 'overlay.mp4', 'frames'])
def test_demo_on_a_video_file(synthetic_data, small_checkpoint, tmp_path, output_name):
    video = sorted((synthetic_data / 'a2d_sentences' / 'Release' / 'clips320H').glob('*.mp4'))[0]
    output = tmp_path / output_name
    demo.main(demo_args(video, output, '--text', 'the red circle', '--resume', str(small_checkpoint),
                        '--clip_len', '3'))
    if output_name == 'frames':
        frames = sorted(output.glob('*.png'))
        assert len(frames) > 3 and Image.open(frames[0]).size == Image.open(frames[-1]).size
    elif output_name.endswith('.gif'):
        assert Image.open(output).n_frames > 3
    else:
        assert output.stat().st_size > 0


@pytest.mark.e2e
def test_demo_on_a_folder_of_frames_keeps_their_names(synthetic_data, small_checkpoint, tmp_path):
    frames = synthetic_data / 'ref-youtube-vos' / 'train' / 'JPEGImages'
    video = sorted(frames.iterdir())[0]
    demo.main(demo_args(video, tmp_path / 'out', '--text', 'a shape', '--resume', str(small_checkpoint)))
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == sorted(p.stem + '.png' for p in video.iterdir())


@pytest.mark.e2e
def test_demo_with_two_sentences_shows_two_captioned_panels(synthetic_data, small_checkpoint, tmp_path):
    video = sorted((synthetic_data / 'ref-shapes' / 'valid' / 'JPEGImages').iterdir())[0]
    demo.main(demo_args(video, tmp_path / 'out', '--text', 'the red circle', 'a square in blue',
                        '--resume', str(small_checkpoint)))
    frame = Image.open(sorted(video.iterdir())[0])
    panels = Image.open(sorted((tmp_path / 'out').iterdir())[0])
    assert panels.width == 2 * frame.width + 4 and panels.height > frame.height, 'two panels, captions below'


def test_overlay_keeps_the_object_colour_visible_inside_a_contrasting_outline():
    pixels = np.full((60, 80, 3), 180, np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True
    pixels[mask] = (235, 205, 40)  # a yellow square
    drawn = np.asarray(overlay(Image.fromarray(pixels), mask)).astype(int)
    rgb = contrasting_color(pixels[mask])
    assert rgb in OUTLINE_COLORS and np.abs(np.subtract(rgb, (235, 205, 40))).sum() > 300
    assert (drawn[mask.nonzero()[0].min(), 40] == rgb).all(), 'an opaque outline on the mask border'
    inside = drawn[24:36, 34:46].reshape(-1, 3)
    yellow = (inside == (235, 205, 40)).all(1)
    assert 0.2 < yellow.mean() < 0.8, 'stripes: part of the object keeps its own colour'
    assert (drawn[:10] == 180).all() and (drawn[:, :20] == 180).all(), 'nothing drawn away from the mask'
    assert (np.asarray(overlay(Image.fromarray(pixels))) == pixels).all()
    assert contrasting_color(np.zeros((0, 3))) == OUTLINE_COLORS[0]


def test_captions_and_panels():
    image = Image.new('RGB', (64, 48), (0, 0, 255))
    with_caption = captioned(image, 'the green triangle moving down')
    assert with_caption.width == 64 and with_caption.height > 48
    assert np.asarray(with_caption)[:48].tolist() == np.asarray(image).tolist()
    assert np.asarray(with_caption)[48:].min() < 100, 'dark text is drawn below the image'
    row = side_by_side([image, with_caption], gap=4)
    assert row.size == (132, with_caption.height)


@pytest.mark.e2e
def test_demo_bad_inputs(small_checkpoint, tmp_path):
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video')
    with pytest.raises(RuntimeError, match='cannot be decoded'):
        demo.main(demo_args(broken, tmp_path / 'o.gif', '--text', 'a dog', '--resume', str(small_checkpoint)))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        demo.main(demo_args(tmp_path / 'missing.mp4', tmp_path / 'o.gif', '--text', 'a dog',
                            '--resume', str(small_checkpoint)))
    with pytest.raises(SystemExit, match='--text is empty'):
        demo.main(demo_args(broken, tmp_path / 'o.gif', '--text', ' ', '--resume', str(small_checkpoint)))


@pytest.mark.e2e
@pytest.mark.parametrize('dataset_file', ['a2d', 'jhmdb'])
def test_a2d_and_jhmdb_evaluation(synthetic_data, small_checkpoint, tmp_path, dataset_file):
    args = script_args(train_main, '--dataset_file', dataset_file, '--eval', '--resume', str(small_checkpoint),
                       '--a2d_path', str(synthetic_data / 'a2d_sentences'),
                       '--jhmdb_path', str(synthetic_data / 'jhmdb_sentences'), '--num_frames', '3',
                       '--batch_size', '2', '--num_workers', '0', '--output_dir', str(tmp_path))
    metrics = train_main.main(args)
    assert set(metrics) == {'mAP 0.5:0.95', 'AP 0.5', 'AP 0.75', 'AP 0.5:0.95 S', 'AP 0.5:0.95 M', 'AP 0.5:0.95 L',
                            'P@0.5', 'P@0.6', 'P@0.7', 'P@0.8', 'P@0.9', 'overall_iou', 'mean_iou'}
    assert 0 <= metrics['overall_iou'] <= 1 and 0 <= metrics['P@0.5'] <= 1


def test_parse_args_reads_recipes_and_lets_the_command_line_override(tmp_path):
    recipe = tmp_path / 'recipe.args'
    recipe.write_text('# a comment\n--dataset_file a2d --batch_size 2\n--lr_drop 3 5\n')
    args = parse_with_config(train_main.get_parser(), ['--config', str(recipe), '--batch_size', '4'])
    assert (args.dataset_file, args.batch_size, args.lr_drop) == ('a2d', 4, [3, 5])
    assert parse_args([]).lr_drop == [6, 8]
