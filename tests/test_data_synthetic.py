"""The synthetic datasets, the two converters, and the A2D/JHMDB files derived from the raw annotations."""
import csv
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from datasets.a2d import h5_instance_ids, h5_instance_mask
from datasets.jhmdb import read_part_masks
from tests.conftest import generate_synthetic
from tools import make_synthetic_data
from tools.convert_davis_to_ytvos import convert as convert_davis
from util.benchmarks import COCO_GROUND_TRUTH_FILES

WORDS = re.compile(r'[a-z]+')


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.mark.parametrize('split', ['train', 'valid'])
def test_refshapes_expressions_name_exactly_one_object(synthetic_data, split):
    root = synthetic_data / 'ref-shapes'
    meta = read_json(root / split / 'meta.json')['videos']
    expressions = read_json(root / 'meta_expressions' / split / 'meta_expressions.json')['videos']
    assert len(expressions) == {'train': 4, 'valid': 2}[split]
    for video, entry in expressions.items():
        objects = meta[video]['objects']
        assert len(entry['expressions']) >= 4
        for expression in entry['expressions'].values():
            words = set(WORDS.findall(expression['exp']))
            named = [obj_id for obj_id, obj in objects.items() if {obj['color'], obj['shape']} <= words]
            assert named == [expression['obj_id']], expression
            assert len(words & set(make_synthetic_data.COLORS)) == len(words & set(make_synthetic_data.SHAPES)) == 1


def test_refshapes_masks_are_the_rendered_shapes(synthetic_data):
    root = synthetic_data / 'ref-shapes' / 'valid'
    for video, entry in read_json(root / 'meta.json')['videos'].items():
        for frame in sorted(os.listdir(root / 'JPEGImages' / video)):
            image = np.asarray(Image.open(root / 'JPEGImages' / video / frame), dtype=float)
            ids = np.asarray(Image.open(root / 'Annotations' / video / frame.replace('.jpg', '.png')))
            assert set(np.unique(ids)) == {0} | {int(obj_id) for obj_id in entry['objects']}
            for obj_id, obj in entry['objects'].items():
                inside = image[ids == int(obj_id)]
                assert np.abs(inside.mean(0) - make_synthetic_data.COLORS[obj['color']]).max() < 25
                assert frame[:-4] in obj['frames']
            assert np.abs(image[ids == 0].mean(0) - image[ids == 0].mean()).max() < 10   # grey background


def test_generation_is_deterministic_and_protects_other_folders(tmp_path):
    flags = ('--benchmarks', 'refshapes', 'mevis', '--refshapes_train', '2', '--refshapes_valid', '1',
             '--mevis_train', '1', '--mevis_valid_u', '1', '--mevis_valid', '1')
    first, again = generate_synthetic(tmp_path / 'a', *flags), generate_synthetic(tmp_path / 'b', *flags)
    other = generate_synthetic(tmp_path / 'c', *flags, '--seed', '1')
    files = sorted(p.relative_to(first) for p in first.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob('*') if p.is_file())
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    name = Path('ref-shapes/meta_expressions/train/meta_expressions.json')
    assert (first / name).read_bytes() != (other / name).read_bytes()
    generate_synthetic(tmp_path / 'a', *flags)   # its own output: regenerated
    (tmp_path / 'real' / 'ref-shapes').mkdir(parents=True)
    (tmp_path / 'real' / 'ref-shapes' / 'precious.txt').write_text('not synthetic')
    with pytest.raises(FileExistsError, match='not made by this tool'):
        generate_synthetic(tmp_path / 'real', *flags)


def test_ytvos_release_layout(synthetic_data):
    root = synthetic_data / 'ref-youtube-vos'
    train = read_json(root / 'meta_expressions' / 'train' / 'meta_expressions.json')['videos']
    valid = read_json(root / 'meta_expressions' / 'valid' / 'meta_expressions.json')['videos']
    test = read_json(root / 'meta_expressions' / 'test' / 'meta_expressions.json')['videos']
    assert set(test) < set(valid) and set(valid) == {p.name for p in (root / 'valid' / 'JPEGImages').iterdir()}
    assert not (root / 'valid' / 'Annotations').exists()
    assert all('obj_id' not in e for v in valid.values() for e in v['expressions'].values())
    assert all('obj_id' in e for v in train.values() for e in v['expressions'].values())
    for video, entry in train.items():
        assert sorted(p.stem for p in (root / 'train' / 'Annotations' / video).glob('*.png')) == entry['frames']
        assert sorted(p.stem for p in (root / 'train' / 'JPEGImages' / video).glob('*.jpg')) == entry['frames']


def test_mevis_release_layout_and_sentences(synthetic_data):
    """train/ and valid_u/ with masks, valid/ without; each sentence names the count, shape and colour or
    direction of the shapes it refers to, whose RLE masks (null where absent) cover pixels of that colour."""
    root = synthetic_data / 'mevis'
    assert not (root / 'valid' / 'mask_dict.json').exists()
    valid = read_json(root / 'valid' / 'meta_expressions.json')['videos']
    assert valid and all(set(e) == {'exp'} for v in valid.values() for e in v['expressions'].values())
    counts, absent = set(), 0
    for split in ('train', 'valid_u'):
        videos = read_json(root / split / 'meta_expressions.json')['videos']
        masks = read_json(root / split / 'mask_dict.json')
        for video, entry in videos.items():
            frames = [np.asarray(Image.open(root / split / 'JPEGImages' / video / f'{name}.jpg'), dtype=float)
                      for name in entry['frames']]
            for expression in entry['expressions'].values():
                words = WORDS.findall(expression['exp'].lower())
                count = 2 if 'two' in words else 3 if 'three' in words else 1
                assert len(expression['anno_id']) == len(expression['obj_id']) == count, expression
                counts.add(count)
                shape = next(w.rstrip('s') for w in words if w.rstrip('s') in make_synthetic_data.SHAPES)
                color = next((w for w in words if w in make_synthetic_data.COLORS), None)
                for anno_id in expression['anno_id']:
                    assert len(masks[str(anno_id)]) == len(frames)
                    for frame, rle in zip(frames, masks[str(anno_id)]):
                        absent += rle is None
                        if rle is not None and color is not None:
                            inside = frame[mask_util.decode(rle).astype(bool)]
                            assert np.abs(inside.mean(0) - make_synthetic_data.COLORS[color]).max() < 25
                assert shape in make_synthetic_data.SHAPES
    assert counts == {1, 2, 3} and absent > 0


def test_davis_conversion(synthetic_data):
    root = synthetic_data / 'ref-davis'
    semantics = read_json(root / 'DAVIS' / 'davis_semantics.json')
    prefixes = ('the ', 'the moving ', 'a ', 'a moving ')
    for davis_split, split in (('train', 'train'), ('val', 'valid')):
        videos = (root / 'DAVIS' / 'ImageSets' / '2017' / f'{davis_split}.txt').read_text().split()
        expressions = read_json(root / 'meta_expressions' / split / 'meta_expressions.json')['videos']
        meta = read_json(root / split / 'meta.json')['videos']
        assert sorted(expressions) == sorted(meta) == sorted(videos)
        for video in videos:
            obj_ids = sorted(semantics[video], key=int)
            assert {o: m['category'] for o, m in meta[video]['objects'].items()} == semantics[video]
            for exp_id, expression in expressions[video]['expressions'].items():
                index, annotator = divmod(int(exp_id), 4)
                assert expression['obj_id'] == obj_ids[index]
                assert expression['exp'].startswith(prefixes[annotator])
                assert ('(café)' in expression['exp']) == (annotator == 3)
            frames = expressions[video]['frames']
            assert frames == sorted(p.stem for p in (root / 'DAVIS' / 'JPEGImages' / '480p' / video).glob('*.jpg'))
            source = root / 'DAVIS' / 'JPEGImages' / '480p' / video / f'{frames[0]}.jpg'
            assert (root / split / 'JPEGImages' / video / f'{frames[0]}.jpg').read_bytes() == source.read_bytes()
            assert source.exists()   # linked or copied, not moved
    train = read_json(root / 'meta_expressions' / 'train' / 'meta_expressions.json')['videos']
    counts = [len(v['expressions']) for v in train.values()]
    assert counts == [11, 12, 12]   # one sentence of the first video is missing from the last file


def test_davis_conversion_is_idempotent_and_checks_inputs(synthetic_data, tmp_path):
    root = synthetic_data / 'ref-davis'
    before = (root / 'meta_expressions' / 'valid' / 'meta_expressions.json').read_bytes()
    convert_davis(root)
    assert (root / 'meta_expressions' / 'valid' / 'meta_expressions.json').read_bytes() == before
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'DAVIS'))):
        convert_davis(tmp_path)


def test_refexp_conversion(synthetic_data):
    refer, coco = synthetic_data / 'coco' / 'refer', synthetic_data / 'coco'
    for name, split_by, splits in (('refcoco', 'unc', {'train', 'val', 'testA', 'testB'}),
                                   ('refcoco+', 'unc', {'train', 'val', 'testA'}),
                                   ('refcocog', 'umd', {'train', 'val', 'test'})):
        with open(refer / name / f'refs({split_by}).p', 'rb') as f:
            refs = pickle.load(f)
        instances = read_json(refer / name / 'instances.json')
        annotations = {a['id']: a for a in instances['annotations']}
        images = {i['id']: i for i in instances['images']}
        assert {p.name for p in (coco / name).iterdir()} == {f'instances_{name}_{s}.json' for s in splits}
        for split in splits:
            data = read_json(coco / name / f'instances_{name}_{split}.json')
            sentences = {s['sent_id']: (ref, s) for ref in refs if ref['split'] == split for s in ref['sentences']}
            assert len(data['images']) == len(data['annotations']) == len(sentences)
            assert len({i['id'] for i in data['images']}) == len(data['images'])
            assert data['categories'] == instances['categories']
            for image, annotation in zip(data['images'], data['annotations']):
                ref, sentence = sentences[image['sentence_id']]
                assert annotation['image_id'] == image['id'] and image['caption'] == sentence['sent']
                assert image['original_id'] == ref['image_id'] and image['dataset_name'] == name
                assert image['file_name'] == images[ref['image_id']]['file_name']
                assert annotation['original_id'] == ref['ann_id']
                assert annotation['segmentation'] == annotations[ref['ann_id']]['segmentation']
                assert annotation['iscrowd'] == 0 and annotation['category_id'] == ref['category_id']


def test_a2d_derived_samples(synthetic_data):
    root = synthetic_data / 'a2d_sentences'
    with open(root / 'Release' / 'videoset.csv') as f:
        usage = {row[0]: int(row[-1]) for row in csv.reader(f)}
    missed = (root / 'text_annotations' / 'a2d_missed_videos.txt').read_text().split()
    with open(root / 'text_annotations' / 'a2d_annotation.txt') as f:
        sentences = list(csv.DictReader(f))
    masks = root / 'text_annotations' / 'a2d_annotation_with_instances'
    absent = 0
    for subset, use in (('train', 0), ('test', 1)):
        samples = read_json(root / f'a2d_sentences_single_frame_{subset}_annotations.json')
        expected = []
        for row in sentences:
            if usage[row['video_id']] != use or row['video_id'] in missed or not row['instance_id'].isdigit():
                continue
            for h5 in sorted((masks / row['video_id']).glob('*.h5')):
                ids = h5_instance_ids(h5)
                absent += int(row['instance_id']) not in ids
                if int(row['instance_id']) in ids:
                    expected.append([row['query'].lower(), row['video_id'], int(h5.stem), int(row['instance_id'])])
        assert samples == expected and samples
    assert absent > 0 and missed and any(row['instance_id'] == '0 (1)' for row in sentences)
    assert all(v not in missed for s in ('train', 'test')
               for _, v, _, _ in read_json(root / f'a2d_sentences_single_frame_{s}_annotations.json'))


def test_a2d_coco_ground_truth(synthetic_data):
    root = synthetic_data / 'a2d_sentences'
    gt = read_json(root / COCO_GROUND_TRUTH_FILES['a2d'])
    samples = read_json(root / 'a2d_sentences_single_frame_test_annotations.json')
    assert [i['id'] for i in gt['images']] == [f'v_{v}_f_{f}_i_{i}' for _, v, f, i in samples]
    for (_, video, frame, instance), annotation in zip(samples, gt['annotations']):
        mask = h5_instance_mask(root / 'text_annotations' / 'a2d_annotation_with_instances' / video / f'{frame:05d}.h5',
                                instance)
        assert mask.shape == (64, 96) and mask.any()
        assert np.array_equal(mask_util.decode(annotation['segmentation']), mask)
        assert annotation['category_id'] == 1 and annotation['iscrowd'] == 0 and annotation['area'] == mask.sum()


def test_jhmdb_derived_metadata(synthetic_data):
    root = synthetic_data / 'jhmdb_sentences'
    samples = read_json(root / 'jhmdb_sentences_samples_metadata.json')
    gt = read_json(root / COCO_GROUND_TRUTH_FILES['jhmdb'])
    with open(root / 'jhmdb_annotation.txt') as f:
        assert [s[0] for s in samples] == [row[0] for row in list(csv.reader(f))[1:]]
    totals = []
    for (video, frame_path, masks_path, total, _), annotation in zip(samples, gt['annotations']):
        frames = len(list((root / frame_path).parent.glob('*.png')))
        masks = read_part_masks(root / masks_path)
        assert total == min(frames, len(masks)) and int(Path(frame_path).stem) == (total + 1) // 2
        assert np.array_equal(mask_util.decode(annotation['segmentation']), masks[int(Path(frame_path).stem) - 1])
        assert annotation['image_id'] == f'v_{video}_f_{int(Path(frame_path).stem)}'
        totals.append(frames - total)
    assert 1 in totals, 'one video should have fewer masks than frames'
