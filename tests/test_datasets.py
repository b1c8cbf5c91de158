"""The loaders of every benchmark read their synthetic datasets; collate, DataLoaders and errors."""
import argparse
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler

from datasets import build_data_loader, build_dataset, collate_fn, set_epoch
from datasets.categories import YTVOS_CATEGORY_IDS
from datasets.clip_dataset import ClipDataset
from datasets.mevis import read_videos
from datasets.targets import clip_target, mask_boxes
from datasets.transforms_video import make_video_transforms
from opts import get_args_parser
from tools import make_synthetic_data
from util.benchmarks import COCO_GROUND_TRUTH_FILES, num_classes
from util.box_ops import box_cxcywh_to_xyxy
from util.video_io import IMAGENET_MEAN, IMAGENET_STD

KEYS = {'frames_idx', 'caption', 'orig_size', 'size', 'labels', 'boxes', 'masks', 'valid'}


def data_args(root: Path, dataset_file: str, *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    return parser.parse_args([
        '--dataset_file', dataset_file, '--ytvos_path', str(root / 'ref-youtube-vos'),
        '--davis_path', str(root / 'ref-davis'), '--a2d_path', str(root / 'a2d_sentences'),
        '--jhmdb_path', str(root / 'jhmdb_sentences'), '--coco_path', str(root / 'coco'),
        '--mevis_path', str(root / 'mevis'), '--num_frames', '5', '--num_workers', '0', *flags])


def denormalize(frames: torch.Tensor) -> torch.Tensor:
    """`[T, 3, H, W]` normalised -> `[T, H, W, 3]` in 0..255."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((frames * std + mean) * 255).permute(0, 2, 3, 1)


def check_item(frames, target, num_frames: int, num_labelled: int, box_tolerance: float,
               train: bool = False) -> None:
    """The contract of an item (see datasets/clip_dataset.py) and boxes that follow the masks: equal to the
    masks' extent up to `box_tolerance` pixels, or containing it for training items (a crop clips the boxes,
    not the masks' extent, as in the original)."""
    t, c, h, w = frames.shape
    assert (t, c) == (num_frames, 3) and frames.dtype == torch.float32
    assert KEYS <= set(target)
    assert target['size'].tolist() == [h, w]
    assert target['frames_idx'].shape == (t,) and target['frames_idx'].tolist() == sorted(target['frames_idx'].tolist())
    assert target['masks'].shape == (num_labelled, h, w) and set(target['masks'].unique().tolist()) <= {0, 1}
    assert target['boxes'].shape == (num_labelled, 4) and target['labels'].shape == (num_labelled,)
    assert target['valid'].shape == (num_labelled,)
    assert ((target['boxes'] >= 0) & (target['boxes'] <= 1)).all()
    assert target['caption'] == ' '.join(target['caption'].lower().split())
    valid = target['valid'].bool()
    assert target['boxes'][~valid].abs().sum() == 0
    assert target['masks'][valid].flatten(1).any(1).all()
    boxes = box_cxcywh_to_xyxy(target['boxes'][valid]) * torch.tensor([w, h, w, h])
    extent = mask_boxes(target['masks'][valid].bool())
    if train:
        assert (boxes[:, :2] <= extent[:, :2] + box_tolerance).all()
        assert (boxes[:, 2:] >= extent[:, 2:] - box_tolerance).all()
    else:
        assert torch.allclose(boxes, extent, atol=box_tolerance)


def brightest_frame(frames: torch.Tensor) -> int:
    return int(denormalize(frames).mean((1, 2, 3)).argmax())


def test_ytvos_train(synthetic_data):
    random.seed(0)
    dataset = build_dataset('train', data_args(synthetic_data, 'ytvos'))
    meta = json.loads((synthetic_data / 'ref-youtube-vos' / 'train' / 'meta.json').read_text())['videos']
    expressions = json.loads((synthetic_data / 'ref-youtube-vos' / 'meta_expressions' / 'train' /
                              'meta_expressions.json').read_text())['videos']
    assert len(dataset) == sum(len(v['expressions']) * -(-len(v['frames']) // 5) for v in expressions.values())
    absent = 0
    for idx, (video, exp_id, start) in enumerate(dataset.samples):
        frames, target = dataset.load(idx)          # before augmentation
        obj_id = dataset.expressions[video]['expressions'][exp_id]['obj_id']
        names = dataset.expressions[video]['frames']
        assert (target['video'], target['exp_id']) == (video, exp_id)
        assert start in target['frames_idx'].tolist() and len(frames) == 5
        assert target['labels'].tolist() == [YTVOS_CATEGORY_IDS[meta[video]['objects'][obj_id]['category']]] * 5
        assert target['valid'].tolist() == [int(names[i] in meta[video]['objects'][obj_id]['frames'])
                                            for i in target['frames_idx']]
        raw = dataset.expressions[video]['expressions'][exp_id]['exp']     # '  The RED  circle '
        assert raw != target['caption'] == ' '.join(raw.lower().split())
        absent += int((target['valid'] == 0).sum())
        if len(names) < 5:
            assert set(target['frames_idx'].tolist()) == set(range(len(names)))
    assert absent > 0, 'the synthetic data should have objects missing from some frames'
    for idx in range(0, len(dataset), 3):
        frames, target = dataset[idx]
        check_item(frames, target, 5, 5, box_tolerance=14, train=True)
        assert target['valid'].any()


def test_ytvos_val_needs_masks(synthetic_data, tmp_path):
    with pytest.raises(FileNotFoundError, match='inference_ytvos.py'):
        build_dataset('val', data_args(synthetic_data, 'ytvos'))
    root = tmp_path / 'ytvos'
    shutil.copytree(synthetic_data / 'ref-youtube-vos', root)
    (root / 'valid' / 'Annotations').mkdir()
    (root / 'valid' / 'meta.json').write_text('{"videos": {}}')
    with pytest.raises(ValueError, match='no obj_id.*inference_ytvos.py'):
        build_dataset('val', data_args(tmp_path, 'ytvos', '--ytvos_path', str(root)))


def test_refshapes_held_out_split(synthetic_data):
    """The ytvos loader reads the held-out split: consecutive windows covering each video, deterministic, and
    masks on the pixels of the named shape's colour."""
    args = data_args(synthetic_data, 'ytvos', '--ytvos_path', str(synthetic_data / 'ref-shapes'), '--num_frames', '3')
    dataset = build_dataset('val', args)
    meta = json.loads((synthetic_data / 'ref-shapes' / 'valid' / 'meta.json').read_text())['videos']
    covered = {}
    for idx, (video, exp_id, _) in enumerate(dataset.samples):
        window = dataset.load(idx)[1]['frames_idx'].tolist()
        assert window == list(range(window[0], window[0] + 3))
        covered.setdefault((video, exp_id), set()).update(window)
    assert all(frames == set(range(8)) for frames in covered.values())
    for idx in range(0, len(dataset), 4):
        frames, target = dataset[idx]
        check_item(frames, target, 3, 3, box_tolerance=6)
        assert target['valid'].all()
        video, exp_id, _ = dataset.samples[idx]
        obj = meta[video]['objects'][dataset.expressions[video]['expressions'][exp_id]['obj_id']]
        inside = denormalize(frames)[target['masks'].bool()]
        color = torch.tensor(make_synthetic_data.COLORS[obj['color']], dtype=torch.float)
        assert (inside.mean(0) - color).abs().max() < 30
    first, again = dataset[1], dataset[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]['masks'], again[1]['masks'])


def test_davis_loader(synthetic_data):
    dataset = build_dataset('train', data_args(synthetic_data, 'davis'))
    categories = sorted({obj['category'] for split in ('train', 'valid') for video in json.loads(
        (synthetic_data / 'ref-davis' / split / 'meta.json').read_text())['videos'].values()
        for obj in video['objects'].values()})
    video, exp_id, _ = dataset.samples[0]
    obj_id = dataset.expressions[video]['expressions'][exp_id]['obj_id']
    _, target = dataset.load(0)
    assert target['labels'][0] == categories.index(dataset.objects[video]['objects'][obj_id]['category'])
    frames, target = dataset[0]
    check_item(frames, target, 5, 5, box_tolerance=14, train=True)
    frames, target = build_dataset('val', data_args(synthetic_data, 'davis'))[0]
    check_item(frames, target, 5, 5, box_tolerance=6)


def decode(masks, anno_id: str, frame: int, size=(96, 128)) -> np.ndarray:
    rle = masks[anno_id][frame]
    return np.zeros(size, bool) if rle is None else mask_util.decode(rle).astype(bool)


def test_mevis_train_targets_are_the_union_of_the_referred_objects(synthetic_data):
    random.seed(0)
    root = synthetic_data / 'mevis' / 'train'
    raw = json.loads((root / 'meta_expressions.json').read_text())['videos']
    masks = json.loads((root / 'mask_dict.json').read_text())
    dataset = build_dataset('train', data_args(synthetic_data, 'mevis'))
    assert len(dataset) == sum(len(v['expressions']) * -(-len(v['frames']) // 5) for v in raw.values())
    referred, absent, unions, normalised = set(), 0, 0, 0
    for idx, (video, exp_id, start) in enumerate(dataset.samples):
        frames, target = dataset.load(idx)          # before augmentation
        expression = raw[video]['expressions'][exp_id]
        anno_ids = [str(a) for a in expression['anno_id']]
        referred.add(len(anno_ids))
        assert (target['video'], target['exp_id']) == (video, exp_id) and start in target['frames_idx'].tolist()
        assert len(frames) == 5 and target['labels'].tolist() == [0] * 5
        for k, i in enumerate(target['frames_idx'].tolist()):
            objects = [decode(masks, a, i) for a in anno_ids]
            union = np.logical_or.reduce(objects)
            assert np.array_equal(target['masks'][k].numpy(), union)
            assert target['valid'][k] == union.any()
            absent += sum(masks[a][i] is None for a in anno_ids)
            unions += sum(o.any() for o in objects) >= 2 and union.sum() == sum(o.sum() for o in objects)
        assert target['caption'] == ' '.join(expression['exp'].lower().split())
        normalised += target['caption'] != expression['exp']
    assert referred == {1, 2, 3}, 'sentences referring to one, two and three objects'
    assert absent > 0 and unions > 0 and normalised > 0
    for idx in range(0, len(dataset), 4):
        frames, target = dataset[idx]
        check_item(frames, target, 5, 5, box_tolerance=14, train=True)   # boxes contain the union's extent
        assert target['valid'].any()
    assert num_classes('mevis', binary=False) == 1


def test_mevis_val_reads_valid_u_in_windows(synthetic_data):
    dataset = build_dataset('val', data_args(synthetic_data, 'mevis', '--num_frames', '3'))
    raw = json.loads((synthetic_data / 'mevis' / 'valid_u' / 'meta_expressions.json').read_text())['videos']
    assert {video for video, _, _ in dataset.samples} == set(raw)
    for idx in range(0, len(dataset), 3):
        window = dataset.load(idx)[1]['frames_idx'].tolist()
        assert window == list(range(window[0], window[0] + 3))
        check_item(*dataset[idx], 3, 3, box_tolerance=6)


@pytest.fixture
def hand_made_mevis(tmp_path):
    """valid_u/ of one video, 2 frames of 8x10: a sentence with raw ids and spacing naming anno 7 (frame 0)
    and anno 8 (frame 1), and a sentence referring to nothing."""
    root = tmp_path / 'mevis'
    (root / 'valid_u' / 'JPEGImages' / 'v').mkdir(parents=True)
    for name in ('00000', '00001'):
        Image.new('RGB', (10, 8)).save(root / 'valid_u' / 'JPEGImages' / 'v' / f'{name}.jpg')
    first, second = np.zeros((8, 10), np.uint8), np.zeros((8, 10), np.uint8)
    first[1:3, 1:4], second[4:7, 5:9] = 1, 1
    rle = [mask_util.encode(np.asfortranarray(m)) for m in (first, second)]
    masks = {'7': [{'size': r['size'], 'counts': r['counts'].decode()} for r in rle[:1]] + [None],
             '8': [None, {'size': rle[1]['size'], 'counts': rle[1]['counts'].decode()}]}
    meta = {'videos': {'v': {'frames': ['00000', '00001'], 'expressions': {
        '0': {'exp': '  Two  DOGS\trunning ', 'obj_id': ['1', 2], 'anno_id': [7, '8']},
        '1': {'exp': 'a cat', 'obj_id': [], 'anno_id': []}}}}}
    (root / 'valid_u' / 'meta_expressions.json').write_text(json.dumps(meta))
    (root / 'valid_u' / 'mask_dict.json').write_text(json.dumps(masks))
    return root, first.astype(bool), second.astype(bool)


def test_mevis_reads_ids_and_sentences_as_the_organisers_loader(hand_made_mevis, tmp_path):
    root, first, second = hand_made_mevis
    expressions = read_videos(root, 'valid_u')['v']['expressions']
    assert expressions['0'] == {'exp': 'two dogs running', 'obj_id': [1, 2], 'anno_id': ['7', '8']}
    dataset = build_dataset('val', data_args(tmp_path, 'mevis', '--num_frames', '2'))
    _, target = dataset.load(0)
    assert target['caption'] == 'two dogs running' and target['valid'].tolist() == [1, 1]
    assert np.array_equal(target['masks'].numpy(), np.stack([first, second]))
    _, nothing = dataset.load(1)
    assert nothing['valid'].tolist() == [0, 0] and not nothing['masks'].any()


@pytest.mark.parametrize('change, message', [
    (lambda meta, masks: meta['videos']['v']['expressions']['0']['anno_id'].append(9), 'no masks of anno_id 9'),
    (lambda meta, masks: masks['8'].append(None), 'anno_id 8 has 3 masks, video v 2 frames'),
    (lambda meta, masks: masks['7'][0].update(size=[4, 5]), 'anno_id 7 in frame 0 is 4x5, its frame 8x10'),
    (lambda meta, masks: meta['videos']['v']['expressions']['1'].pop('anno_id'),
     'expression 1 of video v has no anno_id'),
])
def test_mevis_inconsistent_files_are_named(hand_made_mevis, tmp_path, change, message):
    root = hand_made_mevis[0]
    meta = json.loads((root / 'valid_u' / 'meta_expressions.json').read_text())
    masks = json.loads((root / 'valid_u' / 'mask_dict.json').read_text())
    change(meta, masks)
    (root / 'valid_u' / 'meta_expressions.json').write_text(json.dumps(meta))
    (root / 'valid_u' / 'mask_dict.json').write_text(json.dumps(masks))
    with pytest.raises(ValueError, match=re.escape(message)):
        dataset = build_dataset('val', data_args(tmp_path, 'mevis', '--num_frames', '2'))
        dataset.load(0)


def test_a2d_val_labels_the_annotated_frame(synthetic_data):
    dataset = build_dataset('val', data_args(synthetic_data, 'a2d'))
    gt = json.loads((synthetic_data / 'a2d_sentences' / COCO_GROUND_TRUTH_FILES['a2d']).read_text())
    gt_images = {image['id']: image for image in gt['images']}
    edge = 0
    for idx, (query, video, frame, instance) in enumerate(dataset.samples):
        frames, target = dataset[idx]
        check_item(frames, target, 5, 1, box_tolerance=6)
        position = int(target['valid_indices'])
        assert target['frames_idx'][position] == frame - 1
        assert brightest_frame(frames) == position
        assert target['image_id'] == f'v_{video}_f_{frame}_i_{instance}' and target['image_id'] in gt_images
        assert target['orig_size'].tolist() == [gt_images[target['image_id']]['height'],
                                                gt_images[target['image_id']]['width']]
        assert target['labels'].tolist() == [0] and target['valid'].tolist() == [1]
        assert target['caption'] == query.lower()
        edge += int(target['frames_idx'][0] == target['frames_idx'][1])
    assert edge > 0, 'some annotated frames should be at the start of their video (repeated frames)'


def test_a2d_train(synthetic_data):
    random.seed(0)
    dataset = build_dataset('train', data_args(synthetic_data, 'a2d', '--num_frames', '4'))
    for idx, (_, _, frame, _) in enumerate(dataset.samples):
        frames, target = dataset[idx]
        check_item(frames, target, 4, 1, box_tolerance=14, train=True)
        assert target['frames_idx'][int(target['valid_indices'])] == frame - 1
        assert target['valid'].tolist() == [1]


def test_jhmdb(synthetic_data):
    with pytest.raises(ValueError, match='evaluation-only'):
        build_dataset('train', data_args(synthetic_data, 'jhmdb'))
    dataset = build_dataset('val', data_args(synthetic_data, 'jhmdb'))
    assert len(dataset) == 3
    for idx, (video, frame_path, _, total, _) in enumerate(dataset.samples):
        frames, target = dataset[idx]
        check_item(frames, target, 5, 1, box_tolerance=6)
        position, chosen = int(target['valid_indices']), int(Path(frame_path).stem)
        assert brightest_frame(frames) == position and target['frames_idx'][position] == chosen - 1
        assert target['frames_idx'].max() <= total - 1
        assert target['image_id'] == f'v_{video}_f_{chosen}'


def test_refcoco_pseudo_clips(synthetic_data):
    torch.manual_seed(0)
    dataset = build_dataset('train', data_args(synthetic_data, 'refcoco', '--num_frames', '3'))
    frames, target = dataset.load(0)
    info = dataset.coco.imgs[dataset.ids[0]]
    image = np.asarray(frames[0])
    assert np.array_equal(image, np.asarray(dataset.read_image(info['file_name'])))
    assert np.array_equal(target['masks'][0].numpy(), dataset.coco.annToMask(dataset.coco.imgToAnns[info['id']][0]) > 0)
    assert not torch.equal(target['masks'][0], target['masks'][1])        # the copies are warped
    color = next(name for name in make_synthetic_data.COLORS if name in target['caption'])
    assert np.abs(image[target['masks'][0].numpy()].mean(0) - make_synthetic_data.COLORS[color]).max() < 30
    assert target['labels'].tolist() == [dataset.coco.imgToAnns[info['id']][0]['category_id']] * 3
    for idx in range(0, len(dataset), 5):
        frames, target = dataset[idx]
        check_item(frames, target, 3, 3, box_tolerance=14, train=True)
    frames, target = build_dataset('val', data_args(synthetic_data, 'refcoco'))[0]
    check_item(frames, target, 1, 1, box_tolerance=6)


def test_concatenated_datasets(synthetic_data):
    sizes = {name: len(build_dataset('train', data_args(synthetic_data, name)))
             for name in ('refcoco', 'refcoco+', 'refcocog', 'ytvos')}
    assert len(build_dataset('train', data_args(synthetic_data, 'all'))) == sum(sizes.values()) - sizes['ytvos']
    assert len(build_dataset('train', data_args(synthetic_data, 'joint'))) == sum(sizes.values())


def test_collate_pads_to_multiples_of_32(synthetic_data):
    dataset = build_dataset('val', data_args(synthetic_data, 'refcoco'))
    items = [dataset[0], (torch.randn(1, 3, 50, 70), dataset[1][1])]
    samples, targets = collate_fn(items)
    assert samples.tensors.shape == (2, 1, 3, 384, 544) and samples.mask.shape == (2, 1, 384, 544)
    assert not samples.mask[0, :, :360, :540].any() and samples.mask[0].sum() == 384 * 544 - 360 * 540
    assert not samples.mask[1, :, :50, :70].any() and samples.mask[1].sum() == 384 * 544 - 50 * 70
    assert torch.equal(samples.tensors[1, :, :, :50, :70], items[1][0])
    assert samples.tensors[1, :, :, 50:].abs().sum() == 0 and samples.tensors[1, :, :, :, 70:].abs().sum() == 0
    assert targets == [items[0][1], items[1][1]]


def test_data_loaders(synthetic_data):
    args = data_args(synthetic_data, 'refcoco', '--batch_size', '2')
    dataset = build_dataset('val', args)
    train_loader = build_data_loader(dataset, args, train=True)
    val_loader = build_data_loader(dataset, args, train=False)
    assert len(train_loader) == len(dataset) // 2 and len(val_loader) == (len(dataset) + 1) // 2
    samples, targets = next(iter(train_loader))
    assert samples.tensors.shape[:2] == (2, 1) and len(targets) == 2
    captions = [t['caption'] for _, targets in val_loader for t in targets]
    assert captions == [dataset[i][1]['caption'] for i in range(len(dataset))]


def test_distributed_sampling(synthetic_data, tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        args = data_args(synthetic_data, 'refcoco', '--batch_size', '1')
        loader = build_data_loader(build_dataset('train', args), args, train=True)
        sampler = loader.batch_sampler.sampler
        assert isinstance(sampler, DistributedSampler) and sampler.shuffle
        orders = []
        for epoch in (0, 1, 0):
            set_epoch(loader, epoch)
            orders.append(list(sampler))
        assert orders[0] == orders[2] != orders[1]
    finally:
        dist.destroy_process_group()


class HalfEmpty(ClipDataset):
    """Even items show an object in both frames; odd ones (all with `all_empty`) have empty masks."""

    def __init__(self, train: bool, all_empty: bool = False):
        super().__init__(make_video_transforms('val', max_size=64), train)
        self.all_empty = all_empty

    def __len__(self):
        return 6

    def load(self, idx):
        masks = torch.zeros(2, 40, 40, dtype=torch.bool)
        masks[:, 10:20, 10:20] = idx % 2 == 0 and not self.all_empty
        return [Image.new('RGB', (40, 40))] * 2, clip_target(masks, 0, [0, 1], 'x')


def test_training_items_without_object_are_redrawn():
    random.seed(0)
    assert all(HalfEmpty(train=True)[1][1]['valid'].all() for _ in range(5))
    assert not HalfEmpty(train=False)[1][1]['valid'].any()
    with pytest.raises(RuntimeError, match='no valid frame'):
        HalfEmpty(train=True, all_empty=True)[0]


@pytest.mark.parametrize('dataset_file, missing, expected', [
    ('ytvos', 'ref-youtube-vos/train/Annotations', 'ref-youtube-vos/train/Annotations'),
    ('ytvos', 'ref-youtube-vos/meta_expressions/train/meta_expressions.json',
     'meta_expressions/train/meta_expressions.json'),
    ('davis', 'ref-davis/train/meta.json', 'convert_davis_to_ytvos.py'),
    ('a2d', 'a2d_sentences/Release/clips320H', 'a2d_sentences/Release/clips320H'),
    ('jhmdb', 'jhmdb_sentences/jhmdb_annotation.txt', 'jhmdb_sentences/jhmdb_annotation.txt'),
    ('refcoco', 'coco/refcoco/instances_refcoco_train.json', 'convert_refexp_to_coco.py'),
    ('mevis', 'mevis/train/mask_dict.json', 'mevis/train/mask_dict.json'),
    ('mevis', 'mevis/train/meta_expressions.json', 'mevis/train/meta_expressions.json'),
    ('mevis', 'mevis/train/JPEGImages', 'mevis/train/JPEGImages'),
])
def test_missing_inputs_name_the_expected_path(synthetic_data, tmp_path, dataset_file, missing, expected):
    benchmark = missing.split('/')[0]
    shutil.copytree(synthetic_data / benchmark, tmp_path / benchmark)
    path = tmp_path / missing
    path.rename(path.with_name(path.name.lower() + '_misnamed'))
    if dataset_file == 'jhmdb':
        for derived in ('jhmdb_sentences_samples_metadata.json', COCO_GROUND_TRUTH_FILES['jhmdb']):
            (tmp_path / benchmark / derived).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(expected)):
        build_dataset('train' if dataset_file != 'jhmdb' else 'val', data_args(tmp_path, dataset_file))


def test_a2d_missing_or_broken_video(synthetic_data, tmp_path):
    shutil.copytree(synthetic_data / 'a2d_sentences', tmp_path / 'a2d_sentences')
    dataset = build_dataset('val', data_args(tmp_path, 'a2d'))
    video_file = tmp_path / 'a2d_sentences' / 'Release' / 'clips320H' / f'{dataset.samples[0][1]}.mp4'
    video_file.write_bytes(b'not a video')
    with pytest.raises(RuntimeError, match=re.escape(str(video_file))):
        dataset[0]
    video_file.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(video_file))):
        dataset[0]
