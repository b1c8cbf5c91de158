"""MeViS (motion expressions; a sentence may refer to several objects), in the layout of the release:

    <root>/<split>/JPEGImages/<video>/<frame>.jpg            split: train, valid_u, valid
    <root>/<split>/meta_expressions.json    videos -> <video> -> frames [...],
                                            expressions -> <exp_id> -> exp, obj_id [...], anno_id [...]
    <root>/<split>/mask_dict.json           train and valid_u: <anno_id> -> one COCO RLE per frame of the video
                                            (in the order of `frames`), null where the object is absent

Read as the organisers' loaders read it: `obj_id` as ints, `anno_id` as strings, sentences lower-cased with
whitespace collapsed. The target of a sentence in a frame is the union of the masks of its `anno_id`s. The
mask file (hundreds of MB for train) is read once per dataset and its RLEs are decoded per item.

Items as for Ref-YouTube-VOS: one per (video, expression, start frame in range(0, n, num_frames)), training
clips drawn around the start frame, evaluation clips the `num_frames` consecutive frames from it; one class
(label 0). A sentence that refers to no object (MeViS v2's no-target sentences) makes no training items.
"""
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from util.benchmarks import MEVIS_EXPRESSIONS_FILE, MEVIS_MASKS_FILE
from util.cli import UserError
from util.files import read_json, require
from .clip_dataset import ClipDataset
from .sampling import expression_clip
from .targets import clean_caption, clip_target
from .transforms_video import make_video_transforms

logger = logging.getLogger('bifit')
LAYOUT_HINT = 'the MeViS layout <mevis_path>/<split>/..., see data.md'


def read_videos(root: Path, split: str) -> Dict[str, Dict]:
    """`videos` of `<root>/<split>/meta_expressions.json`, normalised: every expression's `exp` lower-cased
    with whitespace collapsed, `obj_id` a list of ints and `anno_id` a list of strings (where present)."""
    path = Path(root) / split / MEVIS_EXPRESSIONS_FILE
    videos = read_json(path, f'MeViS {split} sentences', LAYOUT_HINT)['videos']
    for video, entry in videos.items():
        if not entry.get('frames'):
            raise UserError(f'{path}: video {video} lists no frames')
        for exp_id, expression in entry['expressions'].items():
            expression['exp'] = clean_caption(expression['exp'])
            if not expression['exp']:
                raise UserError(f'{path}: empty sentence {exp_id} of video {video}')
            if 'obj_id' in expression:
                expression['obj_id'] = [int(x) for x in expression['obj_id']]
            if 'anno_id' in expression:
                expression['anno_id'] = [str(x) for x in expression['anno_id']]
    return videos


class MaskDict:
    """The masks of a split (`mask_dict.json`: `masks[anno_id][frame_index]` a COCO RLE or None), read once;
    `union` decodes the RLEs it needs. `path` names the file in error messages."""

    def __init__(self, masks: Dict[str, List], path: Path):
        self.masks, self.path = masks, Path(path)

    @classmethod
    def read(cls, root: Path, split: str) -> 'MaskDict':
        path = Path(root) / split / MEVIS_MASKS_FILE
        return cls(read_json(path, f'MeViS {split} masks', LAYOUT_HINT), path)

    def subset(self, anno_ids: Sequence[str]) -> 'MaskDict':
        """The masks of `anno_ids` only (e.g. one video's, for a worker process)."""
        return MaskDict({anno_id: self.masks[anno_id] for anno_id in anno_ids}, self.path)

    def check(self, videos: Dict[str, Dict]) -> None:
        """Every expression of `videos` has `anno_id`, each with one entry per frame of its video."""
        for video, entry in videos.items():
            for exp_id, expression in entry['expressions'].items():
                if 'anno_id' not in expression:
                    raise ValueError(f'expression {exp_id} of video {video} has no anno_id in the sentence file '
                                     f'beside {self.path}: it has no masks')
                for anno_id in expression['anno_id']:
                    if anno_id not in self.masks:
                        raise ValueError(f'{self.path}: no masks of anno_id {anno_id} (expression {exp_id} of video '
                                         f'{video})')
                    if len(self.masks[anno_id]) != len(entry['frames']):
                        raise ValueError(f'{self.path}: anno_id {anno_id} has {len(self.masks[anno_id])} masks, '
                                         f'video {video} {len(entry["frames"])} frames')

    def union(self, anno_ids: Sequence[str], frame_index: int, size: Tuple[int, int]) -> np.ndarray:
        """The union `[H, W]` (bool) of the masks of `anno_ids` in frame `frame_index` of their video (absent
        objects add nothing); `size` (H, W) of the frame."""
        union = np.zeros(size, dtype=bool)
        for anno_id in anno_ids:
            rle = self.masks[anno_id][frame_index]
            if rle is None:
                continue
            if tuple(rle['size']) != tuple(size):
                raise ValueError(f'{self.path}: the mask of anno_id {anno_id} in frame {frame_index} is '
                                 f'{rle["size"][0]}x{rle["size"][1]}, its frame {size[0]}x{size[1]}')
            union |= mask_util.decode(rle).astype(bool)
        return union


class MeViSDataset(ClipDataset):
    """Items: frames `[T, 3, H, W]` and the target of the union of the referred objects in every frame
    (T' = T), with the `video` and `exp_id` it comes from."""

    def __init__(self, root: Path, split: str, transforms, num_frames: int, max_skip: int, train: bool):
        super().__init__(transforms, train)
        root = Path(root)
        self.image_dir = require(root / split / 'JPEGImages', f'MeViS {split} frames', LAYOUT_HINT)
        self.videos = read_videos(root, split)
        self.masks = MaskDict.read(root, split)
        self.masks.check(self.videos)
        self.num_frames, self.max_skip = num_frames, max_skip
        self.samples: List[Tuple[str, str, int]] = []
        no_target = 0
        for video, entry in self.videos.items():
            for exp_id, expression in entry['expressions'].items():
                if train and not expression['anno_id']:
                    no_target += 1
                    continue
                self.samples += [(video, exp_id, start) for start in range(0, len(entry['frames']), num_frames)]
        if no_target:
            logger.info('MeViS %s: %d sentences refer to no object and make no training items', split, no_target)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, idx: int):
        video, exp_id, start = self.samples[idx]
        names = self.videos[video]['frames']
        expression = self.videos[video]['expressions'][exp_id]
        frames_idx = expression_clip(start, len(names), self.num_frames, self.max_skip, self.train)
        frames = [Image.open(self.image_dir / video / f'{names[i]}.jpg').convert('RGB') for i in frames_idx]
        size = (frames[0].height, frames[0].width)
        masks = np.stack([self.masks.union(expression['anno_id'], i, size) for i in frames_idx])
        target = clip_target(torch.from_numpy(masks), 0, frames_idx, expression['exp'])
        target.update(video=video, exp_id=exp_id)
        return frames, target


def build(image_set: str, args) -> MeViSDataset:
    """MeViS at `args.mevis_path`: 'train' reads train/, 'val' reads valid_u/ (the split with public masks)."""
    split = 'train' if image_set == 'train' else 'valid_u'
    transforms = make_video_transforms(image_set, args.max_size, args.photometric)
    return MeViSDataset(Path(args.mevis_path), split, transforms, args.num_frames, args.max_skip,
                        train=image_set == 'train')
