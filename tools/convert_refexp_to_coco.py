"""Convert RefCOCO / RefCOCO+ / RefCOCOg from the refer toolkit's files to the COCO json files the loader reads.

    python tools/convert_refexp_to_coco.py --refer_path data/refer --coco_path data/coco

Reads <refer_path>/refcoco/refs(unc).p, <refer_path>/refcoco+/refs(unc).p, <refer_path>/refcocog/refs(umd).p
and each folder's instances.json; writes <coco_path>/<name>/instances_<name>_<split>.json for every split of
the refs (train, val, and testA/testB or test): one image entry per (ref, sentence) with a new id,
`original_id` (the COCO image id), `file_name`, `height`, `width`, `caption` (the sentence's 'sent'),
`dataset_name`, `sentence_id`; one annotation per image entry (the referred object, `original_id` = its COCO
annotation id).
"""
import argparse
import pickle
import sys
from pathlib import Path
from typing import Dict, Sequence

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util.cli import run  # noqa: E402
from util.files import read_json, require, write_json  # noqa: E402

SPLIT_BY = {'refcoco': 'unc', 'refcoco+': 'unc', 'refcocog': 'umd'}


def convert_dataset(refer_path: Path, coco_path: Path, name: str) -> Dict[str, int]:
    """Write the json files of one dataset; returns the number of sentences per split."""
    with open(require(refer_path / name / f'refs({SPLIT_BY[name]}).p', f'{name} refs'), 'rb') as f:
        refs = pickle.load(f)
    instances = read_json(refer_path / name / 'instances.json', f'{name} instances')
    images = {image['id']: image for image in instances['images']}
    annotations = {annotation['id']: annotation for annotation in instances['annotations']}
    outputs: Dict[str, dict] = {}
    for ref in tqdm(refs, desc=name):
        output = outputs.setdefault(ref['split'], {'images': [], 'annotations': [],
                                                   'categories': instances['categories']})
        image, annotation = images[ref['image_id']], annotations[ref['ann_id']]
        for sentence in ref['sentences']:
            entry_id = len(output['images']) + 1
            output['images'].append({
                'id': entry_id, 'original_id': image['id'], 'file_name': image['file_name'],
                'height': image['height'], 'width': image['width'], 'caption': sentence['sent'],
                'dataset_name': name, 'sentence_id': sentence['sent_id']})
            output['annotations'].append({
                'id': entry_id, 'image_id': entry_id, 'original_id': annotation['id'], 'bbox': annotation['bbox'],
                'segmentation': annotation['segmentation'], 'area': annotation['area'], 'iscrowd': 0,
                'category_id': annotation['category_id']})
    for split, output in outputs.items():
        write_json(output, coco_path / name / f'instances_{name}_{split}.json')
    return {split: len(output['images']) for split, output in outputs.items()}


def convert(refer_path: Path, coco_path: Path, names: Sequence[str] = tuple(SPLIT_BY)) -> None:
    for name in names:
        counts = convert_dataset(Path(refer_path), Path(coco_path), name)
        print(f'{name}: ' + ', '.join(f'{split} {count} sentences' for split, count in sorted(counts.items())))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--refer_path', default='data/refer', type=Path,
                        help="the refer toolkit's data folder (refcoco/, refcoco+/, refcocog/)")
    parser.add_argument('--coco_path', default='data/coco', type=Path)
    parser.add_argument('--datasets', nargs='+', default=list(SPLIT_BY), choices=list(SPLIT_BY))
    args = parser.parse_args(argv)
    convert(args.refer_path, args.coco_path, args.datasets)


if __name__ == '__main__':
    run(main, list)
