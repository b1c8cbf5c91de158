"""RefCOCO / RefCOCO+ / RefCOCOg as pseudo-clips: an image and randomly warped copies of it.

    <coco_path>/train2014/COCO_train2014_<id:012d>.jpg
    <coco_path>/<name>/instances_<name>_{train,val}.json    COCO format; one image entry per sentence, with its
                                                           `caption`, and one annotation (the referred object)

(`tools/convert_refexp_to_coco.py` writes the json files from the refer toolkit's data.)
"""
import io
from pathlib import Path
from typing import Dict, Optional

import torch
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms import v2

from util.files import require
from .clip_dataset import ClipDataset
from .targets import clip_target
from .transforms_video import make_video_transforms

CONVERT_HINT = 'write it with python tools/convert_refexp_to_coco.py, see data.md'


class RefExpPseudoClips(ClipDataset):
    """Items: `num_frames` frames `[T, 3, H, W]` (the image, then copies under a random affine warp: rotation,
    translation, scale, shear, each its own) and the referred object's target in every frame (T' = T).

    Labels are COCO category ids. `cache_mode` keeps the encoded images in memory once read.
    """

    def __init__(self, image_dir: Path, ann_file: Path, transforms, num_frames: int, train: bool,
                 cache_mode: bool = False):
        super().__init__(transforms, train)
        self.image_dir = require(image_dir, 'COCO train2014 images')
        self.coco = COCO(str(require(ann_file, 'referring expressions', CONVERT_HINT)))
        self.ids = sorted(self.coco.imgs)
        self.num_frames = num_frames
        self.warp = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5)
        self.cache: Optional[Dict[str, bytes]] = {} if cache_mode else None

    def __len__(self) -> int:
        return len(self.ids)

    def read_image(self, file_name: str) -> Image.Image:
        path = self.image_dir / file_name
        if self.cache is None:
            return Image.open(path).convert('RGB')
        if file_name not in self.cache:
            self.cache[file_name] = path.read_bytes()
        return Image.open(io.BytesIO(self.cache[file_name])).convert('RGB')

    def load(self, idx: int):
        info = self.coco.imgs[self.ids[idx]]
        annotations = self.coco.imgToAnns[info['id']]
        if len(annotations) != 1:
            raise ValueError(f'image entry {info["id"]} has {len(annotations)} annotations; expected the referred '
                             'object alone')
        image = self.read_image(info['file_name'])
        mask = tv_tensors.Mask(torch.from_numpy(self.coco.annToMask(annotations[0]))[None])
        frames, masks = [image], [mask]
        for _ in range(self.num_frames - 1):
            frame, warped = self.warp(image, mask)
            frames.append(frame)
            masks.append(warped)
        target = clip_target(torch.cat(masks).as_subclass(torch.Tensor), annotations[0]['category_id'],
                             list(range(self.num_frames)), info['caption'])
        return frames, target


def build(name: str, image_set: str, args) -> RefExpPseudoClips:
    """Training items are clips of `args.num_frames` frames; evaluation items are the images alone."""
    root = Path(args.coco_path)
    return RefExpPseudoClips(root / 'train2014', root / name / f'instances_{name}_{image_set}.json',
                             make_video_transforms(image_set, args.max_size, args.photometric),
                             args.num_frames if image_set == 'train' else 1, train=image_set == 'train',
                             cache_mode=args.cache_mode)
