"""Datasets of every benchmark, as clips `(frames [T, 3, H, W], target)`. Where to look:

- `ytvos.py` (Ref-YouTube-VOS, converted Ref-DAVIS17, Ref-Shapes), `mevis.py`, `a2d.py`, `jhmdb.py`,
  `refexp.py` (RefCOCO/+/g pseudo-clips): the benchmarks' layouts and items;
- `sampling.py`: which frames make a clip; `targets.py`: the target of the referred object;
- `transforms_video.py`: augmentation and normalisation; `loaders.py`: collate and DataLoaders;
- `categories.py`, `coco_gt.py`, `clip_dataset.py`: shared pieces (files, json and the benchmark facts come
  from `util/files.py` and `util/benchmarks.py`).
"""
from pathlib import Path
from typing import Optional

from torch.utils.data import ConcatDataset, Dataset

from util.benchmarks import COCO_GROUND_TRUTH_FILES, REFEXP_DATASETS
from . import a2d, jhmdb, mevis, refexp, ytvos
from .loaders import build_data_loader, collate_fn, set_epoch

__all__ = ['build_dataset', 'build_data_loader', 'collate_fn', 'ground_truth_file', 'set_epoch']


def build_dataset(image_set: str, args) -> Dataset:
    """`image_set` 'train' or 'val' of `args.dataset_file`. 'all' concatenates RefCOCO, RefCOCO+ and RefCOCOg;
    'joint' trains on those and Ref-YouTube-VOS (its 'val' is the RefCOCO/+/g one)."""
    if image_set not in ('train', 'val'):
        raise ValueError(f"unknown image_set {image_set!r}: expected 'train' or 'val'")
    name = args.dataset_file
    if name in ('ytvos', 'davis'):
        return ytvos.build(image_set, args, name)
    if name == 'mevis':
        return mevis.build(image_set, args)
    if name == 'a2d':
        return a2d.build(image_set, args)
    if name == 'jhmdb':
        return jhmdb.build(image_set, args)
    if name in REFEXP_DATASETS:
        return refexp.build(name, image_set, args)
    if name in ('all', 'joint'):
        parts = [refexp.build(refexp_name, image_set, args) for refexp_name in REFEXP_DATASETS]
        if name == 'joint' and image_set == 'train':
            parts.append(ytvos.build('train', args))
        return ConcatDataset(parts)
    raise ValueError(f'unknown dataset_file {name!r}')


def ground_truth_file(args) -> Optional[Path]:
    """The COCO-format ground truth that the evaluation of `args.dataset_file` scores against (A2D-Sentences
    and JHMDB-Sentences; their 'val' dataset writes it when missing), or None for the other benchmarks."""
    roots = {'a2d': args.a2d_path, 'jhmdb': args.jhmdb_path}
    if args.dataset_file not in COCO_GROUND_TRUTH_FILES:
        return None
    return Path(roots[args.dataset_file]) / COCO_GROUND_TRUTH_FILES[args.dataset_file]
