"""Ref-YouTube-VOS, and every dataset in its layout: Ref-DAVIS17 after conversion, Ref-Shapes.

    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png     palette PNG, pixel value = object id
    <root>/<split>/meta.json                            videos -> <video> -> objects -> <obj_id> -> category
    <root>/meta_expressions/<split>/meta_expressions.json
                                   videos -> <video> -> frames [...], expressions -> <exp_id> -> exp, obj_id

One item per (video, expression, start frame in range(0, n, num_frames)). Training clips are drawn around the
start frame (`sampling.sample_train_frames`); evaluation clips are the `num_frames` consecutive frames from it.
"""
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from util.files import read_json, require
from .categories import DAVIS_CONVERT_HINT, YTVOS_CATEGORY_IDS, davis_category_ids
from .clip_dataset import ClipDataset
from .sampling import expression_clip
from .targets import clip_target
from .transforms_video import make_video_transforms

SERVER_HINT = ('the Ref-YouTube-VOS validation split has no masks: it is evaluated by the challenge server '
               'on the output of inference_ytvos.py')


class YTVOSDataset(ClipDataset):
    """Items: frames `[T, 3, H, W]` and the target of the referred object in every frame (T' = T), with the
    `video` and `exp_id` it comes from."""

    def __init__(self, root: Path, split: str, transforms, num_frames: int, max_skip: int,
                 category_ids: Dict[str, int], train: bool, hint: str = 'see data.md'):
        super().__init__(transforms, train)
        root = Path(root)
        self.image_dir = require(root / split / 'JPEGImages', f'{split} frames', hint)
        self.mask_dir = require(root / split / 'Annotations', f'{split} masks', hint)
        self.objects = read_json(root / split / 'meta.json', f'{split} object metadata', hint)['videos']
        self.expressions = read_json(root / 'meta_expressions' / split / 'meta_expressions.json',
                                     f'{split} expressions', hint)['videos']
        self.num_frames, self.max_skip, self.category_ids = num_frames, max_skip, category_ids
        self.samples: List[Tuple[str, str, int]] = []
        for video, entry in self.expressions.items():
            entry['frames'] = sorted(entry['frames'])
            for exp_id, expression in entry['expressions'].items():
                if 'obj_id' not in expression:
                    raise ValueError(f'expression {exp_id} of video {video} has no obj_id in '
                                     f'meta_expressions/{split}/meta_expressions.json: {SERVER_HINT}')
                self.samples += [(video, exp_id, start) for start in range(0, len(entry['frames']), num_frames)]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, idx: int):
        video, exp_id, start = self.samples[idx]
        names = self.expressions[video]['frames']
        expression = self.expressions[video]['expressions'][exp_id]
        obj_id = expression['obj_id']
        frames_idx = expression_clip(start, len(names), self.num_frames, self.max_skip, self.train)
        frames = [Image.open(self.image_dir / video / f'{names[i]}.jpg').convert('RGB') for i in frames_idx]
        masks = np.stack([np.asarray(Image.open(self.mask_dir / video / f'{names[i]}.png')) for i in frames_idx])
        category = self.objects[video]['objects'][obj_id]['category']
        if category not in self.category_ids:
            raise KeyError(f'video {video}, object {obj_id}: unknown category {category!r}')
        target = clip_target(torch.from_numpy(masks == int(obj_id)), self.category_ids[category], frames_idx,
                             expression['exp'])
        target.update(video=video, exp_id=exp_id)
        return frames, target


def build(image_set: str, args, dataset_file: str = 'ytvos') -> YTVOSDataset:
    """Ref-YouTube-VOS (`args.ytvos_path`) or converted Ref-DAVIS17 (`args.davis_path`): 'train' reads
    train/, 'val' reads valid/ (which must have masks and obj_id)."""
    split = 'train' if image_set == 'train' else 'valid'
    if dataset_file == 'davis':
        root, hint = Path(args.davis_path), DAVIS_CONVERT_HINT
        category_ids = davis_category_ids(root)
    else:
        root, hint = Path(args.ytvos_path), 'see data.md'
        category_ids = YTVOS_CATEGORY_IDS
        if split == 'valid' and not (root / 'valid' / 'Annotations').is_dir():
            raise FileNotFoundError(f'{root / "valid" / "Annotations"} not found: {SERVER_HINT}')
    transforms = make_video_transforms(image_set, args.max_size, args.photometric)
    return YTVOSDataset(root, split, transforms, args.num_frames,
                        args.max_skip, category_ids, train=image_set == 'train', hint=hint)
